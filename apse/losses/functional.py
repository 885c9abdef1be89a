"""The APSE losses as pure functions of one N-pair tuple: N-pair, EP, WEP, GEP, attention loss.

Spec: ``../shared/spec/apse-method.md``, section "Losses, for one N-pair tuple". A tuple holds, for
each class i = 0..N-1, an anchor ``f_i`` (row i of ``anchors``) and a positive ``f_i+`` (row i of
``positives``); ``f_j+`` is a negative for every anchor i != j, and ``s_ij = f_i . f_j+``.
``polarity[i]`` is 0 (positive) or 1 (negative); ``P_i`` = same-polarity classes other than i,
``Q_i`` = opposite-polarity classes.

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

:func:`split_into_tuples` turns a balanced batch into those tuples (:mod:`apse.losses.tuples` uses it).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from apse.emotions import EMOTIONS

__all__ = [
    "npair_loss", "inter_polarity_loss", "intra_polarity_loss", "ep_loss", "wep_weights", "wep_loss",
    "generate_negatives", "gep_loss", "check_beta", "attention_loss", "split_into_tuples", "apse_objective",
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


def check_beta(beta: float | None) -> float | None:
    """GEP's beta as a float, or None (the adaptive beta_ij = exp(-w_ij)); ValueError unless it lies in
    [0, 1]. The one check of beta: the per-tuple loss, :class:`~apse.losses.GEPLoss` and the loss
    section of a config (:class:`~apse.losses.LossConfig`) all call it."""
    if beta is None:
        return None
    value = float(beta)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"beta must lie in [0, 1] or be null (adaptive), got {beta}")
    return value


def _gep_beta(ce_anchor, ce_pos, beta, n, device, dtype) -> torch.Tensor:
    """beta_ij as an (N, N) detached tensor: fixed, or exp(-w_ij) with w_ij = exp(ce_a[i,j]) exp(ce_p[j,i])."""
    if beta is not None:
        return torch.full((n, n), check_beta(beta), device=device, dtype=dtype)
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
def split_into_tuples(labels: torch.Tensor, class_names: Sequence[str] = EMOTIONS) -> torch.Tensor:
    """Batch indices (T, C, 2) of the N-pair tuples in a balanced batch of C classes.

    The batch must hold C >= 2 classes (its distinct labels), each exactly K times with K even: the
    BalancedBatchSampler's 8 emotions x 4 images give T = 2 tuples of C = 8, its 2 polarities x 16
    (Twitter I) T = 8 tuples of C = 2. Tuple t takes the (2t)-th and (2t+1)-th image of each class,
    in batch order, as anchor ``[t, c, 0]`` and positive ``[t, c, 1]``; rows are in label order
    (the labels of row c are ``labels[idx[0, c, 0]]``). ``class_names`` (label -> name) only words
    the error.
    """
    labels = torch.as_tensor(labels)
    if labels.ndim != 1:
        raise ValueError(f"split_into_tuples expects a 1-D tensor of class labels, got shape {tuple(labels.shape)}")
    labels = labels.long()
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"class labels must be >= 0, got {labels.tolist()[:16]}")
    classes, counts = torch.unique(labels.cpu(), return_counts=True)  # sorted: rows in label order
    k = int(counts[0]) if len(counts) else 0
    if len(classes) < 2 or k < 2 or k % 2 or not bool((counts == k).all()):
        name = lambda c: class_names[c] if c < len(class_names) else str(c)  # noqa: E731
        got = ", ".join(f"{name(int(c))}={int(n)}" for c, n in zip(classes, counts)) or "an empty batch"
        raise ValueError(
            "split_into_tuples needs a balanced batch: 2 or more classes x the same even number K >= 2 of "
            f"images each (e.g. the BalancedBatchSampler's 8 x 4); got counts {got}"
        )
    # a stable sort by label lists each class's images in batch order: (C, K)
    order = torch.sort(labels, stable=True).indices.view(len(classes), k)
    return order.view(len(classes), k // 2, 2).permute(1, 0, 2).contiguous()
