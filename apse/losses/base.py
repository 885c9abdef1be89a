"""The base class of every embedding loss, whose class attributes say what the loss needs.

As pytorch-metric-learning's ``BaseMetricLossFunction``, an :class:`EmbeddingLoss` carries its own
capabilities, so that adding a loss is one class (and one ``register_loss`` line) rather than flags
written into the registry beside it:

- ``needs_confidences``: ``forward`` needs the attention heads' polarity and emotion confidences
  (WEP; GEP with the adaptive beta sets it per instance). The trainer refuses such a loss on a model
  without heads, and passes the confidences only to the losses that read them.
- ``apse_family``: one of the papers' polarity-aware losses (EP, WEP, GEP), beside which the
  attention loss is on by default (:func:`automatic_attention_loss`).

What a loss is built from is read from its constructor's signature (:func:`constructor_keywords`):
a loss that owns weights (a class head, centres) takes ``embedding_dim``, GEP takes ``beta``.
"""
from __future__ import annotations

import torch
from torch import nn

from apse.registry import accepted_keywords

__all__ = ["EmbeddingLoss", "automatic_attention_loss", "constructor_keywords"]


class EmbeddingLoss(nn.Module):
    """``loss(embeddings, labels, polarity_confidence=None, emotion_confidence=None) -> scalar``, the
    call signature every loss of :mod:`apse.losses` shares; the capability flags are class attributes
    (see the module docstring)."""

    needs_confidences: bool = False
    apse_family: bool = False

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                polarity_confidence: torch.Tensor | None = None,
                emotion_confidence: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def automatic_attention_loss(loss: type[EmbeddingLoss] | EmbeddingLoss, model_has_heads: bool) -> bool:
    """Whether the attention loss is on when a run leaves it automatic (``attention_loss=None``): beside
    a loss of the APSE family, for a model with attention heads; off otherwise. The papers' method
    trains its heads with the attention loss whenever it uses a polarity-aware loss (EP, WEP, GEP,
    whether or not the loss reads their confidences); their baselines have no heads."""
    return bool(model_has_heads and loss.apse_family)


def constructor_keywords(cls: type, values: dict) -> dict:
    """The entries of ``values`` that ``cls``'s constructor names as parameters
    (:func:`apse.registry.accepted_keywords`), those set to None left out: None means "the
    constructor's default", as timm's ``create_model`` drops None keywords (the config's ``beta=None``
    is GEP's adaptive beta, and leaves the binomial deviance's own ``beta`` at its default)."""
    return {k: v for k, v in accepted_keywords(cls, values).items() if v is not None}
