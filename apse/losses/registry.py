"""The loss registry: every embedding loss by name; :func:`build_loss` builds one.

:data:`LOSSES` (an :class:`apse.registry.Registry`) maps a name to a :class:`LossEntry`;
:func:`register_loss` adds an :class:`~apse.losses.base.EmbeddingLoss` subclass (as a class
decorator ``@register_loss("mine")`` or called). What the trainer needs to know of a loss is on its
class (``needs_confidences``, ``apse_family``), and what it is built from is its constructor's
signature, so adding a loss is its class and one line here. Configuration checks, the trainer and the
command line read the names from here. ``"apse"`` is the method's own name, an alias of ``"gep"``
(the GEP loss; with the attention loss beside it, which the APSE family switches on by default).
"""
from __future__ import annotations

from dataclasses import dataclass

from apse.losses.base import EmbeddingLoss, constructor_keywords
from apse.losses.baselines import (ArcFaceLoss, BinomialDevianceLoss, CenterLoss, ContrastiveLoss, FastAPLoss,
                                   SoftmaxLoss, SoftTripleLoss, SphereFaceLoss, TripletLoss, YangLoss)
from apse.losses.tuples import EPLoss, GEPLoss, NPairLoss, WEPLoss
from apse.registry import Registry

__all__ = ["LossEntry", "LOSSES", "ALIASES", "register_loss", "build_loss", "loss_entry", "canonical_loss",
           "LOSS_NAMES"]


@dataclass(frozen=True)
class LossEntry:
    """A registered loss: its name and its class (whose attributes say what it needs)."""

    name: str
    cls: type[EmbeddingLoss]

    @property
    def apse_family(self) -> bool:
        """The attention loss is on by default beside it (``attention_loss=None``)."""
        return self.cls.apse_family


#: name -> :class:`LossEntry`, in the order the book introduces them; ``"apse"`` is an alias of ``"gep"``.
LOSSES: Registry[LossEntry] = Registry("loss")


def register_loss(name: str, cls: type[EmbeddingLoss] | None = None, *, aliases: tuple[str, ...] = ()):
    """Add a loss class to :data:`LOSSES`; usable as a class decorator ``@register_loss("mine")`` or called."""
    def entry(loss_cls: type) -> LossEntry:
        if not (isinstance(loss_cls, type) and issubclass(loss_cls, EmbeddingLoss)):
            raise TypeError(f"a registered loss is an apse.losses.EmbeddingLoss subclass, got {loss_cls!r}")
        return LossEntry(name, loss_cls)

    return LOSSES.register(name, cls, aliases=aliases, wrap=entry)


def canonical_loss(name: str) -> str:
    """The registered spelling of ``name``, a loss or an alias (read as every registry reads names):
    ``"GEP"`` -> ``"gep"``, ``"APSE"`` -> ``"apse"`` (an alias stays itself: it names the method);
    ValueError naming the valid ones otherwise. The one name rule of the losses: the config and
    :func:`loss_entry` and :func:`build_loss` all read names through it."""
    return LOSSES.spelling(name)


def loss_entry(name: str) -> LossEntry:
    """The entry of ``name`` (an alias resolves to its loss); ValueError naming the valid ones."""
    return LOSSES[name]


def build_loss(name: str, embedding_dim: int = 512, **kwargs) -> EmbeddingLoss:
    """Build a registered loss module by name (one of :data:`LOSSES`, not an alias: ``"apse"`` names
    the method, GEP + attention loss, whose loss module is ``"gep"``); kwargs go to its constructor.

    ``embedding_dim`` is passed to the losses whose constructor takes it (those that own weights:
    softmax, center, arcface, sphereface, softtriple, yang) and ignored by the others.
    """
    key = canonical_loss(name)
    if key not in LOSSES.names():  # an alias is refused: it names a method (apse = GEP + attention loss)
        raise ValueError(f"unknown loss {name!r}; valid names are: {', '.join(LOSSES)}")
    cls = LOSSES[key].cls
    return cls(**constructor_keywords(cls, {"embedding_dim": embedding_dim}), **kwargs)


register_loss("npair", NPairLoss)
register_loss("ep", EPLoss)
register_loss("wep", WEPLoss)
register_loss("gep", GEPLoss, aliases=("apse",))
register_loss("softmax", SoftmaxLoss)
register_loss("contrastive", ContrastiveLoss)
register_loss("triplet", TripletLoss)
register_loss("center", CenterLoss)
register_loss("binomial", BinomialDevianceLoss)
register_loss("arcface", ArcFaceLoss)
register_loss("sphereface", SphereFaceLoss)
register_loss("fastap", FastAPLoss)
register_loss("softtriple", SoftTripleLoss)
register_loss("yang", YangLoss)

#: Other names of registered losses: ``"apse"`` is the papers' method, GEP (+ the attention loss).
ALIASES: dict[str, str] = LOSSES.aliases()
#: The built-in losses' names (those registered by apse itself).
LOSS_NAMES: tuple[str, ...] = LOSSES.names()
