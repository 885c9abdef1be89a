"""The loss section of a training config, beside the losses that consume it.

:class:`LossConfig` names the embedding loss and the attention loss beside it (the total objective
``L = lam L_emb + (1 - lam) L_att``, ICCV Eq. 10); it checks its own fields (:meth:`check_loss`: the
loss through the loss registry, ``beta`` through :func:`~apse.losses.functional.check_beta`, the one
check of it) and :func:`build_configured_loss` builds its loss from it alone (and the embedding size,
the model section's). :class:`apse.config.TrainConfig` composes it with the other sections.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from apse.checks import ConfigError, registered
from apse.emotions import classes_of
from apse.losses.base import EmbeddingLoss, automatic_attention_loss, constructor_keywords
from apse.losses.functional import check_beta
from apse.losses.registry import LOSSES, canonical_loss, loss_entry

__all__ = ["LossConfig", "build_configured_loss", "loss_names"]


def loss_names() -> tuple[str, ...]:
    """Values of ``loss``: the method's name ``"apse"`` (GEP + attention loss) and every registered loss."""
    return (*LOSSES.aliases(), *LOSSES)


@dataclass
class LossConfig:
    """The objective: the embedding loss by name, and the attention loss beside it (see
    :mod:`apse.config` for the switches)."""

    loss: str = "apse"                         # a registered loss (apse.losses); "apse" = GEP + attention loss
    lam: float = 0.5                           # L = lam * L_emb + (1 - lam) * L_att
    attention_loss: Optional[bool] = None      # None = automatic (see apse.config's docstring)
    beta: Optional[float] = None               # GEP beta; None = adaptive beta_ij = exp(-w_ij)
    loss_options: dict = field(default_factory=dict)   # further build_loss keyword arguments

    def check_loss(self) -> None:
        """Check the loss fields (ConfigError with one sentence); the loss name is stored as the
        registry spells it (``"GEP"`` -> ``"gep"``; the method's name ``"apse"`` stays itself)."""
        self.loss = registered("loss", self.loss, canonical_loss, loss_names())
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"lam must lie in [0, 1], got {self.lam}")
        try:
            check_beta(self.beta)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def resolved_attention_loss(self, model_has_heads: bool) -> bool:
        """Whether the attention loss is used, for a model with or without attention heads (automatic:
        :func:`~apse.losses.automatic_attention_loss`, read from the loss class)."""
        if self.attention_loss is None:
            return automatic_attention_loss(loss_entry(self.loss).cls, model_has_heads)
        if self.attention_loss and not model_has_heads:
            raise ConfigError("attention_loss=true needs a model with attention heads "
                              "(attention=hierarchical or emotion), but attention=none")
        return bool(self.attention_loss)

    def embedding_loss_name(self) -> str:
        """Name for :func:`apse.losses.build_loss` (``"apse"`` is GEP)."""
        return loss_entry(self.loss).name


def build_configured_loss(config: LossConfig, embedding_dim: int, level: str = "emotion") -> EmbeddingLoss:
    """The loss a loss section names (an alias resolved), for embeddings of ``embedding_dim`` and
    labels at ``level`` (:data:`apse.emotions.LEVELS`, the data's): built with the values its
    constructor names (``embedding_dim``; the tuple losses: ``level``; a class head: ``num_classes``,
    the level's; GEP: ``beta``; a value left at None keeps the constructor's default) and
    ``loss_options`` (which win over those values)."""
    cls = loss_entry(config.loss).cls
    values = {"embedding_dim": embedding_dim, "beta": config.beta}  # the section's one constructor keyword
    if level != "emotion":  # the constructors' defaults are the emotions'
        values.update(level=level, num_classes=len(classes_of(level)))
    return cls(**{**constructor_keywords(cls, values), **config.loss_options})
