"""The APSE losses as modules over a balanced batch: N-pair, EP, WEP and GEP, averaged over tuples.

Each is called as ``loss(embeddings, labels, polarity_confidence=None, emotion_confidence=None)``
(the call signature every loss in :mod:`apse.losses` shares) and returns a scalar: the batch is split
into N-pair tuples with :func:`~apse.losses.functional.split_into_tuples`, the per-tuple function of
:mod:`apse.losses.functional` is applied to each, and the results are averaged.

``level`` says what the labels are (:data:`apse.emotions.LEVELS`): emotions (the default; a tuple
holds one pair per emotion of the batch) or polarities (Twitter I: a tuple holds one pair per
polarity, and the N-pair loss is then ``log(1 + exp(s_12 - s_11))`` per anchor). The classes'
polarities, which EP, WEP and GEP read, come from the level.
"""
from __future__ import annotations

import torch

from apse.emotions import class_polarities, classes_of
from apse.losses.base import EmbeddingLoss
from apse.losses.functional import check_beta, ep_loss, gep_loss, npair_loss, split_into_tuples, wep_loss

__all__ = ["NPairLoss", "EPLoss", "WEPLoss", "GEPLoss"]


class _TupleLoss(EmbeddingLoss):
    """Base: split a balanced batch into N-pair tuples, apply a per-tuple loss, average over tuples."""

    def __init__(self, level: str = "emotion"):
        super().__init__()
        self.level, self.class_names = level, classes_of(level)
        self.register_buffer("class_polarity", class_polarities(level), persistent=False)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                polarity_confidence: torch.Tensor | None = None,
                emotion_confidence: torch.Tensor | None = None) -> torch.Tensor:
        if embeddings.ndim != 2 or embeddings.shape[0] != len(labels):
            raise ValueError(f"embeddings must be (B, D) with B = len(labels), got {tuple(embeddings.shape)} "
                             f"and {len(labels)} labels")
        self._check_confidences(polarity_confidence, emotion_confidence)
        idx = split_into_tuples(labels, self.class_names).to(embeddings.device)
        classes = torch.as_tensor(labels, device=embeddings.device).long()[idx[0, :, 0]]  # row c's label
        if int(classes.max()) >= len(self.class_names):
            raise ValueError(f"labels at the {self.level} level lie in 0..{len(self.class_names) - 1}, "
                             f"got {int(classes.max())}")
        polarity = self.class_polarity.to(embeddings.device)[classes]
        losses = []
        for t in range(idx.shape[0]):  # T is small (2 for 8 x 4); pairs inside a tuple are vectorised
            a_idx, p_idx = idx[t, :, 0], idx[t, :, 1]
            losses.append(self._tuple_loss(embeddings[a_idx], embeddings[p_idx], polarity, a_idx, p_idx,
                                           polarity_confidence, emotion_confidence))
        return torch.stack(losses).mean()

    def _check_confidences(self, pc, ec) -> None:
        if self.needs_confidences and (pc is None or ec is None):
            raise ValueError(f"{type(self).__name__} needs polarity_confidence (B, 2) and emotion_confidence "
                             "(B, 8) from the attention heads; got None (use a model with attention='hierarchical')")

    def _tuple_loss(self, anchors, positives, polarity, a_idx, p_idx, pc, ec):  # pragma: no cover
        raise NotImplementedError


class NPairLoss(_TupleLoss):
    """N-pair loss (Sohn 2016; ICCV Eq. 3, TMM Eq. 4) averaged over the tuples of a balanced batch.

    Each tuple is one image pair per class (emotion, or polarity with ``level="polarity"``); every
    other class's positive is a negative, with no regard for polarity. The papers' main embedding
    baseline.
    """

    def _tuple_loss(self, anchors, positives, polarity, a_idx, p_idx, pc, ec):
        return npair_loss(anchors, positives)


class EPLoss(_TupleLoss):
    """Emotion-pair loss L_inter + L_intra (ICCV Eq. 4-6, TMM Eq. 5-7) averaged over tuples.

    The inter term pushes the mean similarity to opposite-polarity negatives below the mean to
    same-polarity ones; the intra term is an N-pair loss restricted to same-polarity negatives.
    """

    apse_family = True

    def _tuple_loss(self, anchors, positives, polarity, a_idx, p_idx, pc, ec):
        return ep_loss(anchors, positives, polarity)


class WEPLoss(_TupleLoss):
    """Weighted EP loss (ICCV Eq. 7-9) averaged over tuples; needs the attention confidences.

    Each negative similarity s_ij is scaled by v_ij = v^p_ij v^e_ij built from the (detached)
    polarity and emotion confidences of the anchor and the negative: harder pairs weigh more.
    """

    needs_confidences = True
    apse_family = True

    def _tuple_loss(self, anchors, positives, polarity, a_idx, p_idx, pc, ec):
        return wep_loss(anchors, positives, polarity, pc[a_idx], pc[p_idx], ec[a_idx], ec[p_idx])


class GEPLoss(_TupleLoss):
    """Generated EP loss (TMM Eq. 8-13) averaged over tuples.

    Negatives farther from the anchor than its positive are replaced by points moved towards the
    anchor, to distance beta d_ij + (1 - beta) d_ii; ``beta=None`` (default) uses the adaptive
    beta_ij = exp(-w_ij) from the emotion confidences (then they are required), a float fixes it.
    """

    needs_confidences = True   # the default, adaptive beta; an instance with a fixed beta does not
    apse_family = True

    def __init__(self, beta: float | None = None, level: str = "emotion"):
        super().__init__(level)
        self.beta = check_beta(beta)
        self.needs_confidences = self.beta is None

    def _check_confidences(self, pc, ec) -> None:
        if self.beta is None and ec is None:
            raise ValueError("GEPLoss with adaptive beta needs emotion_confidence (B, 8) from the attention "
                             "head; got None (pass beta=<float> for a fixed beta)")

    def _tuple_loss(self, anchors, positives, polarity, a_idx, p_idx, pc, ec):
        if self.beta is None:
            return gep_loss(anchors, positives, polarity, ec[a_idx], ec[p_idx], beta=None)
        return gep_loss(anchors, positives, polarity, None, None, beta=self.beta)

    def extra_repr(self) -> str:
        return f"beta={'adaptive' if self.beta is None else self.beta}"
