"""One registry type for everything apse looks up by name: backbones, losses, fusions, metrics, experiments.

A :class:`Registry` maps names to entries in registration order. An entry is added where it is
defined, with ``@REGISTRY.register("name")`` (as timm's ``@register_model``) or by calling
``REGISTRY.register("name", entry)``; it may answer to other names too (``aliases``). Every registry
reads a name the same way (:func:`normalise`: any case, spaces around, ``-`` and ``_`` ignored, so
``"EfficientNet-Lite0"``, ``"GEP"`` and ``"N-pair"`` are found), refuses a second entry under a name
that reads the same, and answers an unknown name with one error, :class:`UnknownName`, that lists
the valid names. Before, five hand-written registries each had their own rule (aliases and any case
for backbones, lower case for losses, exact spelling for the rest) and their own error text.

A registry is a read-only :class:`~collections.abc.Mapping` over its entries' names: iterating it,
``len``, ``keys``/``values``/``items`` see the registered names (not their aliases), in order;
``registry[name]``, ``get`` and ``name in registry`` take any spelling or alias of a name.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator, Mapping
from typing import Callable, Iterable, TypeVar

__all__ = ["Registry", "UnknownName", "normalise", "accepted_keywords"]

T = TypeVar("T")


class UnknownName(KeyError, ValueError):
    """No entry answers to this name. A ValueError (what apse's name checks catch) and a KeyError (what
    a mapping raises, so ``get`` and ``in`` work), whose message lists the valid names."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


def normalise(name: object) -> str:
    """The form two names are compared in: lower case, spaces around dropped, ``-`` and ``_`` ignored."""
    return str(name).strip().lower().replace("-", "").replace("_", "")


@functools.lru_cache(maxsize=None)
def _named_parameters(fn: Callable) -> frozenset[str]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(n for n, p in inspect.signature(fn).parameters.items() if p.kind in kinds)


def accepted_keywords(fn: Callable, values: Mapping) -> dict:
    """The entries of ``values`` that ``fn`` (a registered class or factory) names as parameters, not
    those a ``**kwargs`` would swallow: a builder passes a registered entry only the options it takes,
    read from its signature rather than from a list written beside it."""
    named = _named_parameters(fn)
    return {k: v for k, v in values.items() if k in named}


class Registry(Mapping[str, T]):
    """Entries of one kind by name (``kind`` words its messages: ``"loss"``, ``"backbone"``, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}   # alias -> the name it stands for
        self._read: dict[str, str] = {}      # normalised name or alias -> its registered spelling

    # ------------------------------------------------------------------ adding and removing
    def register(self, name: str, entry=None, *, aliases: Iterable[str] = (),
                 wrap: Callable[..., T] | None = None):
        """Add ``entry`` under ``name`` (and ``aliases``) and return it; without ``entry``, a decorator
        that adds what it decorates. ``wrap``: store ``wrap(entry)`` instead (a registry of factories
        with options stores both in one record) and still return ``entry``. ValueError if one of the
        names reads as one already registered."""
        aliases = tuple(aliases)

        def add(obj):
            spellings = (name, *aliases)
            keys = [normalise(s) for s in spellings]
            for spelling, key in zip(spellings, keys):
                if key in self._read or keys.count(key) > 1:
                    raise ValueError(f"a {self.kind} named {spelling!r} is registered already")
            self._entries[name] = obj if wrap is None else wrap(obj)
            for spelling in spellings:
                self._read[normalise(spelling)] = spelling
            self._aliases.update({alias: name for alias in aliases})
            return obj

        return add if entry is None else add(entry)

    def pop(self, name: str, *default):
        """Remove the entry ``name`` answers to, with its aliases, and return it (or ``default``)."""
        try:
            key = self.canonical(name)
        except UnknownName:
            if default:
                return default[0]
            raise
        for alias in [a for a, target in self._aliases.items() if target == key]:
            del self._aliases[alias], self._read[normalise(alias)]
        del self._read[normalise(key)]
        return self._entries.pop(key)

    # ------------------------------------------------------------------ reading names
    def spelling(self, name: object) -> str:
        """The registered spelling of ``name``, a name or an alias (an alias stays an alias);
        :class:`UnknownName` listing the valid names otherwise."""
        try:
            return self._read[normalise(name)]
        except KeyError:
            raise UnknownName(self.unknown_message(name)) from None

    def canonical(self, name: object) -> str:
        """The name of the entry ``name`` answers to (an alias resolved: ``"lite0"`` ->
        ``"efficientnet_lite0"``); :class:`UnknownName` listing the valid names otherwise."""
        spelling = self.spelling(name)
        return self._aliases.get(spelling, spelling)

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order (aliases not included)."""
        return tuple(self._entries)

    def aliases(self) -> dict[str, str]:
        """Every alias and the name it stands for."""
        return dict(self._aliases)

    def unknown_message(self, name: object) -> str:
        """The one error text of an unknown name: it and the valid names (then the aliases)."""
        also = f" (aliases: {', '.join(self._aliases)})" if self._aliases else ""
        return f"unknown {self.kind} {name!r}; valid names are: {', '.join(self._entries)}{also}"

    # ------------------------------------------------------------------ the mapping
    def __getitem__(self, name: object) -> T:
        return self._entries[self.canonical(name)]

    def __contains__(self, name: object) -> bool:
        return normalise(name) in self._read

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
