"""Embedding and attention losses of APSE, and the baselines the papers compare against.

Functional core (one N-pair tuple at a time, see ``../shared/spec/apse-method.md``, section
"Losses, for one N-pair tuple"). A tuple holds, for each class i = 0..N-1, an anchor ``f_i`` (row i
of ``anchors``) and a positive ``f_i+`` (row i of ``positives``); ``f_j+`` is a negative for every
anchor i != j, and ``s_ij = f_i . f_j+``. ``polarity[i]`` is 0 (positive) or 1 (negative);
``P_i`` = same-polarity classes other than i, ``Q_i`` = opposite-polarity classes.

Conventions shared by every function here:

* Everything is vectorised over pairs with masks; ``logsumexp`` / ``softplus`` keep it stable.
* Precision: half-precision inputs (float16 / bfloat16) are computed in float32 and the loss is
  returned in float32 (a half ``exp`` overflows beyond 11); float32 / float64 inputs are computed
  and returned in their own dtype. Gradients flow back to the half inputs as usual.
* Classes without a same-polarity partner in the tuple (possible only when N != 8): their mean
  over ``P_i`` does not exist, so such an anchor contributes 0 to ``L_inter`` (the 1/N factor is
  kept), exactly as its empty sum over ``P_i`` contributes ``log(1 + 0) = 0`` to ``L_intra``.
  The same holds for an anchor without any opposite-polarity class (empty ``Q_i``).
* WEP weights and GEP's ``w`` / ``beta`` are detached: they rescale the loss, they are not trained
  through (ICCV Sec. 3.2, TMM Sec. III-B).

Modules (``NPairLoss``, ``EPLoss``, ``WEPLoss``, ``GEPLoss`` and the baselines) are all called as
``loss(embeddings, labels, polarity_confidence=None, emotion_confidence=None)`` and return a scalar.
The APSE ones split a balanced batch into tuples with :func:`split_into_tuples` and average over
tuples; the baselines take any batch. :func:`build_loss` builds any of them by name.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from apse.emotions import EMOTIONS, NUM_EMOTIONS, polarity_labels

__all__ = [
    "npair_loss", "inter_polarity_loss", "intra_polarity_loss", "ep_loss", "wep_weights", "wep_loss",
    "generate_negatives", "gep_loss", "attention_loss", "split_into_tuples", "apse_objective",
    "NPairLoss", "EPLoss", "WEPLoss", "GEPLoss", "SoftmaxLoss", "ContrastiveLoss", "TripletLoss",
    "CenterLoss", "BinomialDevianceLoss", "ArcFaceLoss", "SphereFaceLoss", "FastAPLoss",
    "SoftTripleLoss", "YangLoss", "build_loss", "LOSS_NAMES",
]

_EPS = 1e-12  # guards a squared distance before its square root (so d >= 1e-6)


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _work_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision tensors (their exp overflows), else the tensor's own float dtype."""
    if x.dtype in (torch.float16, torch.bfloat16) or not x.is_floating_point():
        return torch.float32
    return x.dtype


def _check_pair(anchors: torch.Tensor, positives: torch.Tensor) -> None:
    if anchors.ndim != 2 or anchors.shape != positives.shape:
        raise ValueError(
            "anchors and positives must both be (N, D) with row i = class i, "
            f"got {tuple(anchors.shape)} and {tuple(positives.shape)}"
        )


def _check_polarity(polarity: torch.Tensor, n: int) -> torch.Tensor:
    polarity = torch.as_tensor(polarity)
    if polarity.shape != (n,) or (polarity.numel() and not bool(((polarity == 0) | (polarity == 1)).all())):
        raise ValueError(f"polarity must be an ({n},) tensor of 0 (positive) / 1 (negative), got {polarity!r}")
    return polarity.long()


def _check_conf(name: str, conf: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor:
    if conf is None or tuple(conf.shape) != shape:
        got = None if conf is None else tuple(conf.shape)
        raise ValueError(f"{name} must be a {shape} tensor of confidences, got {got}")
    return conf


def _similarity(anchors: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """s_ij = f_i . f_j+ as an (N, N) matrix in the working dtype."""
    _check_pair(anchors, positives)
    dt = _work_dtype(anchors)
    return anchors.to(dt) @ positives.to(dt).T


def _polarity_masks(polarity: torch.Tensor, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (N, N) masks of P_i (same polarity, j != i) and Q_i (opposite polarity)."""
    polarity = _check_polarity(polarity, n).to(device)
    same = polarity[:, None] == polarity[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=device)
    return same & ~eye, ~same


def _ep_terms(sim: torch.Tensor, polarity: torch.Tensor,
              weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_inter, L_intra) of ICCV Eq. 4-5 / TMM Eq. 5-6 from a similarity matrix.

    ``sim[i, j]`` is the similarity of anchor i to the candidate standing for class j (``sim[i, i]``
    to its own positive). ``weights`` (N, N), when given, multiplies every off-diagonal similarity as
    in WEP (ICCV Eq. 9: ``s_ij -> v_ij s_ij`` for j != i, ``v_ii = 1``); ``None`` means all ones,
    i.e. plain EP. Anchors with an empty P_i or Q_i contribute 0 to L_inter (module docstring).
    This is the one place the EP formula lives: EP, WEP and GEP differ only in what they pass here.
    """
    n = sim.shape[0]
    p_mask, q_mask = _polarity_masks(polarity, n, sim.device)
    eye = torch.eye(n, dtype=torch.bool, device=sim.device)
    if weights is not None:
        sim = torch.where(eye, sim, weights.to(sim.dtype) * sim)
    diag = sim.diagonal()
    n_p = p_mask.sum(1)
    n_q = q_mask.sum(1)
    zero = sim.new_zeros(())
    # inter: softplus(mean_Q s_ij - mean_P s_ij), the positive excluded from mean_P (TMM Sec. III-B2)
    mean_q = torch.where(q_mask, sim, zero).sum(1) / n_q.clamp(min=1)
    mean_p = torch.where(p_mask, sim, zero).sum(1) / n_p.clamp(min=1)
    valid = (n_p > 0) & (n_q > 0)
    inter = torch.where(valid, F.softplus(mean_q - mean_p), zero).sum() / n
    # intra: log(1 + sum_{j in P_i} exp(s_ij - s_ii)) = logsumexp over [0, s_ij - s_ii for j in P_i]
    logits = torch.where(p_mask, sim - diag[:, None], torch.full_like(sim, -math.inf))
    logits = torch.cat([sim.new_zeros(n, 1), logits], dim=1)
    intra = torch.logsumexp(logits, dim=1).sum() / n
    return inter, intra


# --------------------------------------------------------------------------------------------------
# functional losses, one N-pair tuple
# --------------------------------------------------------------------------------------------------
def npair_loss(anchors: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """N-pair loss (ICCV Eq. 3 / TMM Eq. 4): 1/N sum_i log(1 + sum_{j != i} exp(s_ij - s_ii)).

    Identical to ``F.cross_entropy(anchors @ positives.T, arange(N))``, which is how it is computed
    (``logsumexp_j s_ij - s_ii``).
    """
    sim = _similarity(anchors, positives)
    return (torch.logsumexp(sim, dim=1) - sim.diagonal()).mean()


def inter_polarity_loss(anchors: torch.Tensor, positives: torch.Tensor, polarity: torch.Tensor) -> torch.Tensor:
    """Inter-polarity loss (ICCV Eq. 4 / TMM Eq. 5): 1/N sum_i softplus(mean_{Q_i} s_ij - mean_{P_i} s_ij)."""
    return _ep_terms(_similarity(anchors, positives), polarity)[0]


def intra_polarity_loss(anchors: torch.Tensor, positives: torch.Tensor, polarity: torch.Tensor) -> torch.Tensor:
    """Intra-polarity loss (ICCV Eq. 5 / TMM Eq. 6): 1/N sum_i log(1 + sum_{j in P_i} exp(s_ij - s_ii))."""
    return _ep_terms(_similarity(anchors, positives), polarity)[1]


def ep_loss(anchors: torch.Tensor, positives: torch.Tensor, polarity: torch.Tensor) -> torch.Tensor:
    """Emotion-pair loss (ICCV Eq. 6 / TMM Eq. 7): L_ep = L_inter + L_intra."""
    inter, intra = _ep_terms(_similarity(anchors, positives), polarity)
    return inter + intra


def wep_weights(polarity: torch.Tensor, cp_anchor: torch.Tensor, cp_pos: torch.Tensor,
                ce_anchor: torch.Tensor, ce_pos: torch.Tensor) -> torch.Tensor:
    """WEP pair weights v_ij (ICCV Eq. 7-8), an (N, N) tensor detached from the graph.

    ``v^p_ij = exp(cp_anchor[i, pol(j)]) exp(cp_pos[j, pol(i)])`` when pol(i) != pol(j), else 1;
    ``v^e_ij = exp(ce_anchor[i, j]) exp(ce_pos[j, i])``; ``v_ij = v^p_ij v^e_ij`` and ``v_ii = 1``.
    ``cp_*`` are (N, 2) polarity confidences, ``ce_*`` (N, N) emotion confidences (column j =
    emotion j) of the anchor / positive image behind each row.
    """
    n = len(polarity)
    polarity = _check_polarity(polarity, n)
    for name, conf, shape in (("cp_anchor", cp_anchor, (n, 2)), ("cp_pos", cp_pos, (n, 2)),
                              ("ce_anchor", ce_anchor, (n, n)), ("ce_pos", ce_pos, (n, n))):
        _check_conf(name, conf, shape)
    dt = _work_dtype(ce_anchor)
    polarity = polarity.to(cp_anchor.device)
    cpa, cpp = cp_anchor.detach().to(dt), cp_pos.detach().to(dt)
    cea, cep = ce_anchor.detach().to(dt), ce_pos.detach().to(dt)
    # cpa[:, pol][i, j] = cp_anchor[i, pol(j)];  cpp[:, pol].T[i, j] = cp_pos[j, pol(i)]
    log_vp = cpa[:, polarity] + cpp[:, polarity].T
    same = polarity[:, None] == polarity[None, :]
    log_vp = torch.where(same, torch.zeros_like(log_vp), log_vp)
    log_ve = cea + cep.T  # [i, j] = ce_anchor[i, j] + ce_pos[j, i]
    v = torch.exp(log_vp + log_ve)
    v.fill_diagonal_(1.0)
    return v


def wep_loss(anchors: torch.Tensor, positives: torch.Tensor, polarity: torch.Tensor,
             cp_anchor: torch.Tensor, cp_pos: torch.Tensor,
             ce_anchor: torch.Tensor, ce_pos: torch.Tensor) -> torch.Tensor:
    """Weighted EP loss (ICCV Eq. 9): L_ep with every s_ij (j != i) replaced by v_ij s_ij.

    The weights come from :func:`wep_weights` and are detached; note that the log of the product in
    Eq. 9 is the sum of the inter and intra terms, so this is ``L_inter(v s) + L_intra(v s)``.
    """
    sim = _similarity(anchors, positives)
    v = wep_weights(polarity, cp_anchor, cp_pos, ce_anchor, ce_pos)
    inter, intra = _ep_terms(sim, polarity, v)
    return inter + intra


def _gep_beta(ce_anchor, ce_pos, beta, n, device, dtype) -> torch.Tensor:
    """beta_ij as an (N, N) detached tensor: fixed, or exp(-w_ij) with w_ij = exp(ce_a[i,j]) exp(ce_p[j,i])."""
    if beta is not None:
        beta = float(beta)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"a fixed GEP beta must lie in [0, 1], got {beta}")
        return torch.full((n, n), beta, device=device, dtype=dtype)
    _check_conf("ce_anchor", ce_anchor, (n, n))
    _check_conf("ce_pos", ce_pos, (n, n))
    w = torch.exp(ce_anchor.detach().to(device, dtype) + ce_pos.detach().to(device, dtype).T)  # TMM Eq. 11
    return torch.exp(-w)                                                                      # TMM Eq. 12


def _generate_negatives(anchors, positives, ce_anchor, ce_pos, beta) -> torch.Tensor:
    """generate_negatives in the working dtype (float32 for half inputs)."""
    _check_pair(anchors, positives)
    n = anchors.shape[0]
    dt = _work_dtype(anchors)
    a, p = anchors.to(dt), positives.to(dt)
    diff = p[None, :, :] - a[:, None, :]                           # [i, j] = f_j+ - f_i
    # eps keeps 1/d finite: torch.where still back-propagates through its unused branch
    d = diff.pow(2).sum(-1).clamp(min=_EPS).sqrt()                 # [i, j] = d_ij
    d_ii = d.diagonal()
    b = _gep_beta(ce_anchor, ce_pos, beta, n, a.device, dt)
    radius = b * d + (1.0 - b) * d_ii[:, None]                     # beta d_ij + (1 - beta) d_ii
    generated = a[:, None, :] + (radius / d)[..., None] * diff     # TMM Eq. 10
    harder = (d > d_ii[:, None]).detach()
    harder.fill_diagonal_(False)                                   # [i, i] stays the positive
    return torch.where(harder[..., None], generated, p[None, :, :].expand(n, n, -1))


def generate_negatives(anchors: torch.Tensor, positives: torch.Tensor, ce_anchor: torch.Tensor | None = None,
                       ce_pos: torch.Tensor | None = None, beta: float | None = None) -> torch.Tensor:
    """GEP's generated negatives (TMM Eq. 8-12), an (N, N, D) tensor.

    ``out[i, j]`` is the negative of class j generated for anchor i: when ``d_ij > d_ii`` it is
    ``f_i + (beta_ij d_ij + (1 - beta_ij) d_ii) (f_j+ - f_i) / d_ij`` (a point on the segment from
    f_i to f_j+, pulled in towards the anchor's positive radius), else ``f_j+`` itself;
    ``out[i, i] = positives[i]``. ``beta=None`` uses the adaptive ``beta_ij = exp(-w_ij)``,
    ``w_ij = exp(ce_anchor[i, j]) exp(ce_pos[j, i])`` (detached); a float in [0, 1] fixes it
    (TMM Table III), and then the confidences may be None. The points keep their gradient to
    f_i, f_i+ and f_j+. Returned in the anchors' dtype (computed in float32 for half inputs).
    """
    return _generate_negatives(anchors, positives, ce_anchor, ce_pos, beta).to(anchors.dtype)


def gep_loss(anchors: torch.Tensor, positives: torch.Tensor, polarity: torch.Tensor,
             ce_anchor: torch.Tensor | None = None, ce_pos: torch.Tensor | None = None,
             beta: float | None = None) -> torch.Tensor:
    """Generated EP loss (TMM Eq. 13): L_ep computed with each f_j+ replaced by f_j^(i-).

    ``s_ij = f_i . f_j^(i-)`` (the generated points are not re-normalised; the spec uses the dot
    product as is), ``s_ii = f_i . f_i+``. With ``beta=1`` every generated point is f_j+ and this
    equals :func:`ep_loss`.
    """
    negatives = _generate_negatives(anchors, positives, ce_anchor, ce_pos, beta)
    a = anchors.to(negatives.dtype)
    sim = torch.einsum("id,ijd->ij", a, negatives)
    inter, intra = _ep_terms(sim, polarity)
    return inter + intra


def attention_loss(confidences: torch.Tensor, labels: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Attention loss (ICCV Eq. 2): cross-entropy of softmax confidences (B, K) against labels (B,).

    The confidences are already probabilities, so this is ``-mean_b log(max(c[b, y_b], eps))``
    (the clamp keeps a zero confidence finite). The total L_att sums it over the polarity level
    (conv3, K = 2) and the emotion level (conv5, K = 8).
    """
    if confidences.ndim != 2 or labels.shape != confidences.shape[:1]:
        raise ValueError(
            f"attention_loss expects confidences (B, K) and labels (B,), got {tuple(confidences.shape)} "
            f"and {tuple(labels.shape)}"
        )
    dt = _work_dtype(confidences)
    log_p = confidences.to(dt).clamp(min=eps).log()
    return F.nll_loss(log_p, labels.long().to(confidences.device))


def apse_objective(embedding_loss: torch.Tensor, attention_loss: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """Total APSE loss (ICCV Eq. 10): lam * L_emb + (1 - lam) * L_att, lam = 0.5 in the papers."""
    return lam * embedding_loss + (1.0 - lam) * attention_loss


# --------------------------------------------------------------------------------------------------
# batches -> tuples
# --------------------------------------------------------------------------------------------------
def split_into_tuples(labels: torch.Tensor) -> torch.Tensor:
    """Batch indices (T, 8, 2) of the N-pair tuples in a balanced batch.

    The batch must hold all 8 emotions, each exactly K times with K even (the BalancedBatchSampler's
    8 x 4 gives T = 2). Tuple t takes the (2t)-th and (2t+1)-th image of each emotion, in batch
    order, as anchor ``[t, e, 0]`` and positive ``[t, e, 1]``; rows are in emotion order 0..7.
    """
    labels = torch.as_tensor(labels)
    if labels.ndim != 1:
        raise ValueError(f"split_into_tuples expects a 1-D tensor of emotion labels, got shape {tuple(labels.shape)}")
    labels = labels.long()
    in_range = labels.numel() > 0 and bool(((labels >= 0) & (labels < NUM_EMOTIONS)).all())
    counts = torch.bincount(labels.clamp(0, NUM_EMOTIONS - 1).cpu(), minlength=NUM_EMOTIONS) if in_range else None
    k = int(counts[0]) if counts is not None else 0
    if counts is None or k < 2 or k % 2 or not bool((counts == k).all()):
        if counts is None:
            got = f"labels {labels.tolist()[:16]}{'...' if labels.numel() > 16 else ''} (not all in 0..7)"
        else:
            got = "counts " + ", ".join(f"{name}={int(c)}" for name, c in zip(EMOTIONS, counts))
        raise ValueError(
            "split_into_tuples needs a balanced batch: all 8 emotions x the same even number K >= 2 of "
            f"images each (e.g. the BalancedBatchSampler's 8 x 4); got {got}"
        )
    # a stable sort by label lists each emotion's images in batch order: (8, K)
    order = torch.sort(labels, stable=True).indices.view(NUM_EMOTIONS, k)
    return order.view(NUM_EMOTIONS, k // 2, 2).permute(1, 0, 2).contiguous()


# --------------------------------------------------------------------------------------------------
# APSE modules
# --------------------------------------------------------------------------------------------------
class _TupleLoss(nn.Module):
    """Base: split a balanced batch into N-pair tuples, apply a per-tuple loss, average over tuples."""

    needs_confidences = False

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                polarity_confidence: torch.Tensor | None = None,
                emotion_confidence: torch.Tensor | None = None) -> torch.Tensor:
        if embeddings.ndim != 2 or embeddings.shape[0] != len(labels):
            raise ValueError(f"embeddings must be (B, D) with B = len(labels), got {tuple(embeddings.shape)} "
                             f"and {len(labels)} labels")
        self._check_confidences(polarity_confidence, emotion_confidence)
        idx = split_into_tuples(labels).to(embeddings.device)
        polarity = polarity_labels(torch.arange(NUM_EMOTIONS, device=embeddings.device))
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

    Each tuple is one image pair per emotion; every other emotion's positive is a negative, with no
    regard for polarity. The papers' main embedding baseline.
    """

    def _tuple_loss(self, anchors, positives, polarity, a_idx, p_idx, pc, ec):
        return npair_loss(anchors, positives)


class EPLoss(_TupleLoss):
    """Emotion-pair loss L_inter + L_intra (ICCV Eq. 4-6, TMM Eq. 5-7) averaged over tuples.

    The inter term pushes the mean similarity to opposite-polarity negatives below the mean to
    same-polarity ones; the intra term is an N-pair loss restricted to same-polarity negatives.
    """

    def _tuple_loss(self, anchors, positives, polarity, a_idx, p_idx, pc, ec):
        return ep_loss(anchors, positives, polarity)


class WEPLoss(_TupleLoss):
    """Weighted EP loss (ICCV Eq. 7-9) averaged over tuples; needs the attention confidences.

    Each negative similarity s_ij is scaled by v_ij = v^p_ij v^e_ij built from the (detached)
    polarity and emotion confidences of the anchor and the negative: harder pairs weigh more.
    """

    needs_confidences = True

    def _tuple_loss(self, anchors, positives, polarity, a_idx, p_idx, pc, ec):
        return wep_loss(anchors, positives, polarity, pc[a_idx], pc[p_idx], ec[a_idx], ec[p_idx])


class GEPLoss(_TupleLoss):
    """Generated EP loss (TMM Eq. 8-13) averaged over tuples.

    Negatives farther from the anchor than its positive are replaced by points moved towards the
    anchor, to distance beta d_ij + (1 - beta) d_ii; ``beta=None`` (default) uses the adaptive
    beta_ij = exp(-w_ij) from the emotion confidences (then they are required), a float fixes it.
    """

    def __init__(self, beta: float | None = None):
        super().__init__()
        if beta is not None and not 0.0 <= float(beta) <= 1.0:
            raise ValueError(f"GEPLoss beta must be None (adaptive) or a float in [0, 1], got {beta}")
        self.beta = None if beta is None else float(beta)
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


# --------------------------------------------------------------------------------------------------
# baselines (any batch)
# --------------------------------------------------------------------------------------------------
def _pairwise_distance(x: torch.Tensor) -> torch.Tensor:
    """Euclidean (B, B) distances, eps-guarded so the gradient stays finite at d = 0."""
    sq = (x[:, None, :] - x[None, :, :]).pow(2).sum(-1)
    return sq.clamp(min=_EPS).sqrt()


class _BatchLoss(nn.Module):
    needs_confidences = False

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


# --------------------------------------------------------------------------------------------------
# factory
# --------------------------------------------------------------------------------------------------
_REGISTRY: dict[str, tuple[type, bool]] = {  # name -> (class, takes embedding_dim)
    "npair": (NPairLoss, False), "ep": (EPLoss, False), "wep": (WEPLoss, False), "gep": (GEPLoss, False),
    "softmax": (SoftmaxLoss, True), "contrastive": (ContrastiveLoss, False), "triplet": (TripletLoss, False),
    "center": (CenterLoss, True), "binomial": (BinomialDevianceLoss, False), "arcface": (ArcFaceLoss, True),
    "sphereface": (SphereFaceLoss, True), "fastap": (FastAPLoss, False), "softtriple": (SoftTripleLoss, True),
    "yang": (YangLoss, True),
}
LOSS_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def build_loss(name: str, embedding_dim: int = 512, **kwargs) -> nn.Module:
    """Build a loss module by name (one of :data:`LOSS_NAMES`); extra kwargs go to its constructor.

    ``embedding_dim`` is passed to the losses that own weights (softmax, center, arcface,
    sphereface, softtriple, yang) and ignored by the others.
    """
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown loss {name!r}; valid names are: {', '.join(LOSS_NAMES)}")
    cls, takes_dim = _REGISTRY[key]
    return cls(embedding_dim=embedding_dim, **kwargs) if takes_dim else cls(**kwargs)
