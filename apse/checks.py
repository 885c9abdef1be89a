"""What the owners of the config's sections share: :class:`ConfigError` and the checks of a choice.

Each section of :class:`apse.config.TrainConfig` is checked by the module that consumes it (the
model's by :mod:`apse.model`, the loss's by :mod:`apse.losses`), with the names its own registry
reads; this module sits below all of them, so that none imports :mod:`apse.config` (which composes
the sections and sits above them) to raise its error.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

__all__ = ["ConfigError", "choice", "registered", "NULLS"]

#: The spellings of "no value" in YAML and on the command line.
NULLS = frozenset({"none", "null", "~", ""})


class ConfigError(ValueError):
    """A configuration key or value is invalid (raised with a one-sentence message)."""


def choice(name: str, value: Any, choices: Iterable[str]) -> None:
    """ConfigError unless ``value`` is one of ``choices`` (a fixed list: spelled exactly)."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def registered(name: str, value: Any, lookup: Callable[[str], str], choices: Iterable[str]) -> str:
    """``value`` as its registry's ``lookup`` spells it (``"lite0"`` -> ``"efficientnet_lite0"``,
    ``"GEP"`` -> ``"gep"``, ``"CLB"`` -> ``"clb"``): a config takes exactly the names its registry
    takes, and stores one spelling of each; ConfigError listing ``choices`` otherwise."""
    try:
        return lookup(value)
    except ValueError:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}") from None
