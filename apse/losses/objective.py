"""The total training objective, ``L = lam L_emb + (1 - lam) L_att`` (ICCV Eq. 10), as one module.

:class:`APSEObjective` wraps an embedding loss and adds the attention loss (ICCV Eq. 2, summed over
the model's attention heads: polarity labels for a polarity head, emotion labels for an emotion head)
when it is used; without it the objective is ``L_emb`` alone (``lam`` is then ignored rather than
silently scaling the learning rate). The trainer (:class:`apse.training.TrainStep`) and the toy model
of the early chapters (:func:`apse.toy.train_toy`) both compute their loss with it; ``TrainStep``
is a model and its objective as one module, the unit the trainer optimises (and DistributedDataParallel
wraps, so that a loss's own weights are synchronised too).

The labels' ``level`` (:data:`apse.emotions.LEVELS`) decides which heads are supervised: emotion
labels supervise both (a polarity head through the emotions' polarities); polarity labels (Twitter I)
supervise the polarity head only, and an emotion head, which has no labels there, is left out of
``L_att`` (the transfer experiments freeze it). With no supervised head the objective is ``L_emb``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from apse.emotions import classes_of, polarity_labels
from apse.losses.functional import apse_objective, attention_loss

__all__ = ["APSEObjective"]


class APSEObjective(nn.Module):
    """``forward(embeddings, labels, polarity_confidence, emotion_confidence, attention_terms)
    -> (total, L_emb, L_att)``; L_emb and L_att are detached (for logging), total is not.

    ``attention_terms``: ``[(level, confidences)]`` with level ``"polarity"`` or ``"emotion"`` (what
    :meth:`apse.model.APSEOutput.attention_terms` returns). The embedding loss is a submodule, so
    its own weights (a softmax head, centres) are this module's parameters.
    """

    def __init__(self, embedding_loss: nn.Module, use_attention_loss: bool, lam: float = 0.5,
                 level: str = "emotion"):
        super().__init__()
        self.embedding_loss = embedding_loss
        self.use_attention_loss, self.lam = bool(use_attention_loss), float(lam)
        classes_of(level)  # checks the level
        self.level = level

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                polarity_confidence: torch.Tensor | None = None, emotion_confidence: torch.Tensor | None = None,
                attention_terms: Sequence[tuple[str, torch.Tensor]] = ()):
        l_emb = self.embedding_loss(embeddings, labels, polarity_confidence, emotion_confidence)
        terms = [(level, conf) for level, conf in attention_terms if self._supervised(level)]
        if not self.use_attention_loss or not terms:
            return l_emb, l_emb.detach(), torch.zeros((), device=l_emb.device)
        l_att = sum(attention_loss(conf, self._labels_at(level, labels)) for level, conf in terms)
        return apse_objective(l_emb, l_att, self.lam), l_emb.detach(), l_att.detach()

    def _supervised(self, head_level: str) -> bool:
        """Whether the labels supervise a head of ``head_level``: a head at the labels' level, or a
        polarity head under emotion labels (each emotion has one polarity)."""
        return head_level == self.level or head_level == "polarity"

    def _labels_at(self, head_level: str, labels: torch.Tensor) -> torch.Tensor:
        if head_level == self.level:
            return labels
        return polarity_labels(labels)  # a polarity head under emotion labels

    def extra_repr(self) -> str:
        level = "" if self.level == "emotion" else f", level={self.level!r}"
        return f"use_attention_loss={self.use_attention_loss}, lam={self.lam}{level}"
