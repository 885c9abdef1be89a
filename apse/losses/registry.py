"""The loss registry: every embedding loss by name, with what the trainer needs to know to build it.

:data:`LOSSES` maps a name to a :class:`LossEntry`; :func:`build_loss` builds one by name, and
:func:`register_loss` adds one (a class with the shared call signature ``loss(embeddings, labels,
polarity_confidence=None, emotion_confidence=None)``). Configuration checks, the trainer and the
command line read the names from here. ``"apse"`` is the method's own name, an alias of ``"gep"``
(the GEP loss; with the attention loss beside it, which the APSE family switches on by default).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from apse.losses.baselines import (ArcFaceLoss, BinomialDevianceLoss, CenterLoss, ContrastiveLoss, FastAPLoss,
                                   SoftmaxLoss, SoftTripleLoss, SphereFaceLoss, TripletLoss, YangLoss)
from apse.losses.tuples import EPLoss, GEPLoss, NPairLoss, WEPLoss

__all__ = ["LossEntry", "LOSSES", "ALIASES", "register_loss", "build_loss", "build_configured_loss", "loss_entry",
           "canonical_loss", "LOSS_NAMES"]


@dataclass(frozen=True)
class LossEntry:
    """A registered loss.

    ``takes_embedding_dim``: the constructor takes ``embedding_dim`` (losses that own weights).
    ``apse_family``: the attention loss is on by default beside it (``attention_loss=None``).
    ``config_keys``: config fields passed to the constructor as keywords (GEP's ``beta``).
    """

    name: str
    cls: Callable[..., nn.Module]
    takes_embedding_dim: bool = False
    apse_family: bool = False
    config_keys: tuple[str, ...] = ()


#: name -> :class:`LossEntry`, in the order the book introduces them.
LOSSES: dict[str, LossEntry] = {}
#: Other names of registered losses: ``"apse"`` is the papers' method, GEP (+ the attention loss).
ALIASES: dict[str, str] = {"apse": "gep"}


def register_loss(name: str, cls: Callable[..., nn.Module] | None = None, *, takes_embedding_dim: bool = False,
                  apse_family: bool = False, config_keys: tuple[str, ...] = ()):
    """Add a loss to :data:`LOSSES`; usable as a class decorator ``@register_loss("mine")`` or called."""
    def add(loss_cls):
        if name in LOSSES or name in ALIASES:
            raise ValueError(f"a loss named {name!r} is registered already")
        LOSSES[name] = LossEntry(name, loss_cls, takes_embedding_dim, apse_family, tuple(config_keys))
        return loss_cls

    return add if cls is None else add(cls)


def canonical_loss(name: str) -> str:
    """The registered spelling of ``name``, a loss or an alias (any case, spaces around tolerated):
    ``"GEP"`` -> ``"gep"``, ``"APSE"`` -> ``"apse"`` (an alias stays itself: it names the method);
    ValueError naming the valid ones otherwise. The one name rule of the losses: the config and
    :func:`loss_entry` and :func:`build_loss` all read names through it."""
    key = str(name).strip().lower()
    if key not in LOSSES and key not in ALIASES:
        raise ValueError(f"unknown loss {name!r}; valid names are: {', '.join((*ALIASES, *LOSSES))}")
    return key


def loss_entry(name: str) -> LossEntry:
    """The entry of ``name`` (an alias resolves to its loss); ValueError naming the valid ones."""
    key = canonical_loss(name)
    return LOSSES[ALIASES.get(key, key)]


def build_loss(name: str, embedding_dim: int = 512, **kwargs) -> nn.Module:
    """Build a registered loss module by name (one of :data:`LOSSES`, not an alias: ``"apse"`` names
    the method, GEP + attention loss, whose loss module is ``"gep"``); kwargs go to its constructor.

    ``embedding_dim`` is passed to the losses that own weights (softmax, center, arcface,
    sphereface, softtriple, yang) and ignored by the others.
    """
    try:
        key = canonical_loss(name)
    except ValueError:
        key = None
    if key not in LOSSES:  # an alias is refused too: it names a method (apse = GEP + attention loss)
        raise ValueError(f"unknown loss {name!r}; valid names are: {', '.join(LOSSES)}")
    entry = LOSSES[key]
    return entry.cls(embedding_dim=embedding_dim, **kwargs) if entry.takes_embedding_dim else entry.cls(**kwargs)


def build_configured_loss(config) -> nn.Module:
    """The loss a training config names (``config.loss``, an alias resolved), built with its
    ``embedding_dim``, the config fields its entry takes (GEP: ``beta``) and ``loss_options``
    (which win over those fields)."""
    entry = loss_entry(config.loss)
    kwargs = {**{key: getattr(config, key) for key in entry.config_keys}, **config.loss_options}
    return build_loss(entry.name, embedding_dim=config.embedding_dim, **kwargs)


register_loss("npair", NPairLoss)
register_loss("ep", EPLoss, apse_family=True)
register_loss("wep", WEPLoss, apse_family=True)
register_loss("gep", GEPLoss, apse_family=True, config_keys=("beta",))
register_loss("softmax", SoftmaxLoss, takes_embedding_dim=True)
register_loss("contrastive", ContrastiveLoss)
register_loss("triplet", TripletLoss)
register_loss("center", CenterLoss, takes_embedding_dim=True)
register_loss("binomial", BinomialDevianceLoss)
register_loss("arcface", ArcFaceLoss, takes_embedding_dim=True)
register_loss("sphereface", SphereFaceLoss, takes_embedding_dim=True)
register_loss("fastap", FastAPLoss)
register_loss("softtriple", SoftTripleLoss, takes_embedding_dim=True)
register_loss("yang", YangLoss, takes_embedding_dim=True)

#: The built-in losses' names (those registered by apse itself).
LOSS_NAMES: tuple[str, ...] = tuple(LOSSES)
