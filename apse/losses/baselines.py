"""The baseline losses the papers compare against, over any batch (TMM Table I and Sec. V-B).

Softmax, contrastive, triplet (semi-hard), center, binomial deviance, Yang et al.'s joint loss,
and ArcFace / SphereFace / FastAP / SoftTriple through pytorch-metric-learning. All share the call
signature ``loss(embeddings, labels, polarity_confidence=None, emotion_confidence=None)`` and ignore
the confidences; those that own weights (a class head, centres) take ``embedding_dim``: optimise
their parameters with the model's.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from apse.emotions import NUM_EMOTIONS, polarity_labels
from apse.losses.base import EmbeddingLoss
from apse.losses.functional import _EPS, _work_dtype

__all__ = ["SoftmaxLoss", "ContrastiveLoss", "TripletLoss", "CenterLoss", "BinomialDevianceLoss",
           "ArcFaceLoss", "SphereFaceLoss", "FastAPLoss", "SoftTripleLoss", "YangLoss"]


def _pairwise_distance(x: torch.Tensor) -> torch.Tensor:
    """Euclidean (B, B) distances, eps-guarded so the gradient stays finite at d = 0."""
    sq = (x[:, None, :] - x[None, :, :]).pow(2).sum(-1)
    return sq.clamp(min=_EPS).sqrt()


class _BatchLoss(EmbeddingLoss):
    """Base of the baselines: any batch, no confidences."""

    @staticmethod
    def _prepare(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if embeddings.ndim != 2 or embeddings.shape[0] != len(labels):
            raise ValueError(f"embeddings must be (B, D) with B = len(labels), got {tuple(embeddings.shape)} "
                             f"and {len(labels)} labels")
        return embeddings.to(_work_dtype(embeddings)), torch.as_tensor(labels, device=embeddings.device).long()


class SoftmaxLoss(_BatchLoss):
    """Softmax classification loss on the embedding (the papers' "S" baselines, ICCV/TMM Table I).

    Owns a linear head ``embedding_dim -> num_classes``: pass this module's parameters to the
    optimiser too. Loss = cross-entropy of ``head(f)`` against the emotion labels.
    """

    def __init__(self, embedding_dim: int = 512, num_classes: int = NUM_EMOTIONS):
        super().__init__()
        self.head = nn.Linear(embedding_dim, num_classes)

    def forward(self, embeddings, labels, polarity_confidence=None, emotion_confidence=None):
        x, y = self._prepare(embeddings, labels)
        logits = self.head(x.to(self.head.weight.dtype))
        return F.cross_entropy(logits.to(_work_dtype(logits)), y)


class ContrastiveLoss(_BatchLoss):
    """Contrastive loss (Hadsell et al. 2006; the papers' [10]/[67]) over all pairs of the batch.

    For every unordered pair (i < j) with Euclidean distance d: ``d^2`` if same emotion, else
    ``max(0, margin - d)^2``; the loss is the mean over all pairs. Margin 0.4 as in ICCV Sec. 4.4.
    """

    def __init__(self, margin: float = 0.4):
        super().__init__()
        self.margin = float(margin)

    def forward(self, embeddings, labels, polarity_confidence=None, emotion_confidence=None):
        x, y = self._prepare(embeddings, labels)
        b = x.shape[0]
        if b < 2:
            return x.sum() * 0.0
        d = _pairwise_distance(x)
        same = y[:, None] == y[None, :]
        upper = torch.triu(torch.ones(b, b, dtype=torch.bool, device=x.device), diagonal=1)
        per_pair = torch.where(same, d.pow(2), F.relu(self.margin - d).pow(2))
        return per_pair[upper].mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


def _semi_hard_negatives(dist: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Batch semi-hard mining (FaceNet, Schroff et al. 2015, Sec. 3.2).

    Returns index tensors (anchor, positive, negative), one entry per anchor-positive pair (a != p,
    same label): the negative is the closest one farther from the anchor than the positive
    (``d_an > d_ap``); when no negative is that far, the hardest (closest) negative. Anchors without
    any negative are dropped.
    """
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=dist.device)
    neg = ~same
    a_idx, p_idx = torch.nonzero(same & ~eye & neg.any(1, keepdim=True), as_tuple=True)
    d = dist.detach()
    d_ap = d[a_idx, p_idx]
    d_an = d[a_idx]                                               # (P, B)
    inf = torch.full_like(d_an, math.inf)
    semi = torch.where(neg[a_idx] & (d_an > d_ap[:, None]), d_an, inf)
    hardest = torch.where(neg[a_idx], d_an, inf)
    semi_val, semi_idx = semi.min(1)
    hard_idx = hardest.argmin(1)
    n_idx = torch.where(torch.isfinite(semi_val), semi_idx, hard_idx)
    return a_idx, p_idx, n_idx


class TripletLoss(_BatchLoss):
    """Triplet loss with batch semi-hard mining (FaceNet; the papers' [43]/[68]), margin 0.2.

    For each anchor-positive pair of the batch, the negative is the closest one with d_an > d_ap
    (semi-hard), else the hardest negative (TF-Addons' ``triplet_semihard_loss`` takes the farthest
    one there instead; we keep the violating, informative one). Loss = mean over the pairs of
    ``max(0, d_ap - d_an + margin)`` with Euclidean (not squared) distances.
    """

    def __init__(self, margin: float = 0.2):
        super().__init__()
        self.margin = float(margin)

    def forward(self, embeddings, labels, polarity_confidence=None, emotion_confidence=None):
        x, y = self._prepare(embeddings, labels)
        d = _pairwise_distance(x)
        a, p, n = _semi_hard_negatives(d, y)
        if a.numel() == 0:
            return x.sum() * 0.0
        return F.relu(d[a, p] - d[a, n] + self.margin).mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


class CenterLoss(_BatchLoss):
    """Softmax + center loss (Wen et al. 2016; TMM [84]): CE(head(f), y) + lam/2 mean ||f - c_y||^2.

    pytorch-metric-learning has no center loss, so it is written here. The class centres are
    parameters updated by the optimiser with everything else (not Wen's separate alpha rule), so
    pass this module's parameters to the optimiser. ``center_weight`` lam = 0.1 by default: with
    l2-normalised embeddings ||f - c||^2 <= 4, so Wen's 0.003 (for unnormalised features) would
    make the term vanish.
    """

    def __init__(self, embedding_dim: int = 512, num_classes: int = NUM_EMOTIONS, center_weight: float = 0.1):
        super().__init__()
        self.head = nn.Linear(embedding_dim, num_classes)
        self.centers = nn.Parameter(torch.randn(num_classes, embedding_dim) / math.sqrt(embedding_dim))
        self.center_weight = float(center_weight)

    def forward(self, embeddings, labels, polarity_confidence=None, emotion_confidence=None):
        x, y = self._prepare(embeddings, labels)
        x = x.to(self.head.weight.dtype)
        ce = F.cross_entropy(self.head(x), y)
        pull = 0.5 * (x - self.centers[y]).pow(2).sum(1).mean()
        return ce + self.center_weight * pull


class BinomialDevianceLoss(_BatchLoss):
    """Binomial deviance loss (Yi et al. 2014, "Deep metric learning for person re-id"; TMM [85]).

    On cosine similarities s_ij of all pairs i != j: ``log(1 + exp(-alpha (s_ij - beta) m_ij))`` with
    m = 1 for same-emotion pairs and m = -cost for others, alpha = 2, beta = 0.5, cost = 25; the
    positive and negative terms are each averaged over their pairs (Yi's 1/n1, 1/n2 weights) and
    summed. Written here because pytorch-metric-learning 2.x has no binomial deviance.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 0.5, neg_cost: float = 25.0):
        super().__init__()
        self.alpha, self.beta, self.neg_cost = float(alpha), float(beta), float(neg_cost)

    def forward(self, embeddings, labels, polarity_confidence=None, emotion_confidence=None):
        x, y = self._prepare(embeddings, labels)
        x = F.normalize(x, dim=1)
        s = x @ x.T
        same = y[:, None] == y[None, :]
        eye = torch.eye(len(y), dtype=torch.bool, device=x.device)
        pos, neg = same & ~eye, ~same
        pos_term = F.softplus(-self.alpha * (s - self.beta))
        neg_term = F.softplus(self.alpha * self.neg_cost * (s - self.beta))
        loss = x.sum() * 0.0
        if pos.any():
            loss = loss + pos_term[pos].mean()
        if neg.any():
            loss = loss + neg_term[neg].mean()
        return loss


class _PMLLoss(_BatchLoss):
    """Thin wrapper so a pytorch-metric-learning loss takes our call signature (and its weights, if
    any, are this module's parameters)."""

    pml_name = ""

    def __init__(self, **kwargs):
        super().__init__()
        try:
            from pytorch_metric_learning import losses as pml_losses
        except ImportError as err:  # pragma: no cover - optional dependency
            raise ImportError(f"{type(self).__name__} needs pytorch-metric-learning: "
                              "pip install 'apse[baselines]'") from err
        self.loss = getattr(pml_losses, self.pml_name)(**kwargs)

    def forward(self, embeddings, labels, polarity_confidence=None, emotion_confidence=None):
        x, y = self._prepare(embeddings, labels)
        params = list(self.loss.parameters())
        if params:
            x = x.to(params[0].dtype)
        return self.loss(x, y)


class ArcFaceLoss(_PMLLoss):
    """ArcFace additive angular margin loss (Deng et al. 2019; TMM [86]) via pytorch-metric-learning.

    Owns the class weight matrix (optimise this module's parameters); pml defaults margin = 28.6
    degrees (0.5 rad), scale = 64.
    """

    pml_name = "ArcFaceLoss"

    def __init__(self, embedding_dim: int = 512, num_classes: int = NUM_EMOTIONS, **kwargs):
        super().__init__(num_classes=num_classes, embedding_size=embedding_dim, **kwargs)


class SphereFaceLoss(_PMLLoss):
    """SphereFace multiplicative angular margin loss (Liu et al. 2017; TMM [87]) via pml.

    Owns the class weight matrix; pml defaults margin m = 4, scale = 1.
    """

    pml_name = "SphereFaceLoss"

    def __init__(self, embedding_dim: int = 512, num_classes: int = NUM_EMOTIONS, **kwargs):
        super().__init__(num_classes=num_classes, embedding_size=embedding_dim, **kwargs)


class FastAPLoss(_PMLLoss):
    """FastAP (Cakir et al. 2019; TMM [88]) via pml: a histogram approximation of average precision
    over the batch's distance ranking, optimised directly (pml default 10 bins)."""

    pml_name = "FastAPLoss"

    def __init__(self, num_bins: int = 10, **kwargs):
        super().__init__(num_bins=num_bins, **kwargs)


class SoftTripleLoss(_PMLLoss):
    """SoftTriple (Qian et al. 2019; TMM [89]) via pml: a softmax over several learned centres per
    class; owns the centres (optimise this module's parameters). pml defaults: 10 centres per class,
    la = 20, gamma = 0.1, margin = 0.01."""

    pml_name = "SoftTripleLoss"

    def __init__(self, embedding_dim: int = 512, num_classes: int = NUM_EMOTIONS, **kwargs):
        super().__init__(num_classes=num_classes, embedding_size=embedding_dim, **kwargs)


class YangLoss(_BatchLoss):
    """Yang et al.'s joint classification + retrieval objective (AAAI 2018; ICCV [57], TMM [90]).

    The papers describe it as a multi-task framework that optimises an emotion classification loss
    and a retrieval loss at once, the latter a "sentiment constraint" adapted from the triplet
    constraint to the emotion hierarchy. Our approximation: ``softmax CE (own linear head) + weight *
    (L_emotion + L_polarity)`` where, over all valid triples of the batch (Euclidean distances),
    ``L_emotion`` hinges ``d(a, p) + m_e < d(a, r)`` (p same emotion, r same polarity but another
    emotion) and ``L_polarity`` hinges ``d(a, r) + m_p < d(a, n)`` (n opposite polarity); each is
    averaged over its violating triples (0 when none). Margins 0.2 (the papers' triplet margin) and
    weight 1 are our choices; Yang et al.'s "sentiment vector" (Gram features) belongs to their
    network, not to the loss, and is not reproduced.
    """

    def __init__(self, embedding_dim: int = 512, num_classes: int = NUM_EMOTIONS,
                 margin_emotion: float = 0.2, margin_polarity: float = 0.2, weight: float = 1.0):
        super().__init__()
        self.head = nn.Linear(embedding_dim, num_classes)
        self.margin_emotion, self.margin_polarity = float(margin_emotion), float(margin_polarity)
        self.weight = float(weight)

    @staticmethod
    def _avg_nonzero(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        active = mask & (values > 0)
        if not active.any():
            return (values * 0.0).sum()
        return values[active].mean()

    def forward(self, embeddings, labels, polarity_confidence=None, emotion_confidence=None):
        x, y = self._prepare(embeddings, labels)
        logits = self.head(x.to(self.head.weight.dtype))
        ce = F.cross_entropy(logits.to(_work_dtype(logits)), y)
        d = _pairwise_distance(x)
        pol = polarity_labels(y)
        same_e = y[:, None] == y[None, :]
        same_p = pol[:, None] == pol[None, :]
        eye = torch.eye(len(y), dtype=torch.bool, device=x.device)
        pos = same_e & ~eye                        # [a, p]
        rel = same_p & ~same_e                     # [a, r]
        neg = ~same_p                              # [a, n]
        emo = F.relu(d[:, :, None] - d[:, None, :] + self.margin_emotion)     # [a, p, r]
        emo_mask = pos[:, :, None] & rel[:, None, :]
        pol_ = F.relu(d[:, :, None] - d[:, None, :] + self.margin_polarity)   # [a, r, n]
        pol_mask = rel[:, :, None] & neg[:, None, :]
        retrieval = self._avg_nonzero(emo, emo_mask) + self._avg_nonzero(pol_, pol_mask)
        return ce + self.weight * retrieval
