"""Ranking: distances between embeddings, the stable rank order of a gallery, and relevance in rank order.

The gallery is ranked by increasing distance, ties broken by gallery order (a stable sort); inputs
are checked here once (shapes, label ranges, NaN) for every metric.
"""
from __future__ import annotations

import torch

from apse.emotions import NUM_EMOTIONS
from apse.metrics.definitions import metric_names

__all__ = ["pairwise_distances", "rank_order", "nearest", "ranked_relevance"]


def _as_float_matrix(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, dim), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.float()
    return t


def pairwise_distances(q, g, *, chunk_size: int | None = None) -> torch.Tensor:
    """Euclidean distances ``D[i, j] = ||q_i - g_j||_2`` between rows of ``q`` (Q, d) and ``g`` (G, d).

    Computed as ``sqrt(max(||q||^2 + ||g||^2 - 2 q g^T, 0))`` (one matrix product; the clamp guards
    against tiny negative values from cancellation before the square root), ``chunk_size`` query rows
    at a time (default: all at once) so the temporaries of a large problem stay small. Numpy arrays
    and tensors are accepted; the result is a tensor in the inputs' common floating dtype.
    """
    q = _as_float_matrix(q, "q")
    g = _as_float_matrix(g, "g")
    if q.shape[1] != g.shape[1]:
        raise ValueError(
            f"q and g must have the same embedding dimension, got {q.shape[1]} and {g.shape[1]}"
        )
    dtype = torch.promote_types(q.dtype, g.dtype)
    q, g = q.to(dtype), g.to(dtype)
    g_sq = (g * g).sum(dim=1)
    out = torch.empty(q.shape[0], g.shape[0], dtype=dtype, device=q.device)
    step = max(q.shape[0], 1) if chunk_size is None else int(chunk_size)
    if step < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    for start in range(0, q.shape[0], step):
        qc = q[start:start + step]
        block = out[start:start + step]
        # block = ||g||^2 - 2 q g^T + ||q||^2, written in place to avoid extra (chunk, G) buffers
        torch.addmm(g_sq.unsqueeze(0), qc, g.T, beta=1.0, alpha=-2.0, out=block)
        block.add_((qc * qc).sum(dim=1, keepdim=True)).clamp_(min=0).sqrt_()
    return out



def _as_labels(labels, name: str, length: int, level: str = "emotion") -> torch.Tensor:
    what, top = ("emotion", NUM_EMOTIONS) if level == "emotion" else ("polarity", 2)
    t = torch.as_tensor(labels)
    if t.dim() != 1 or t.shape[0] != length:
        raise ValueError(f"{name} must be a 1-D array of {length} {what} indices, "
                         f"got shape {tuple(t.shape)}")
    if t.is_floating_point():
        if not torch.equal(t, t.round()):
            raise ValueError(f"{name} must hold integer {what} indices 0..{top - 1}")
    t = t.long()
    if t.numel() and (t.min() < 0 or t.max() >= top):
        order = " (papers' order)" if level == "emotion" else " (0 = positive, 1 = negative)"
        raise ValueError(f"{name} must hold {what} indices in 0..{top - 1}{order}")
    return t.cpu()


def _as_distances(distances) -> torch.Tensor:
    dist = torch.as_tensor(distances)
    if dist.dim() != 2:
        raise ValueError(f"distances must be a 2-D (queries, gallery) array, got shape {tuple(dist.shape)}")
    n_q, n_g = dist.shape
    if n_q == 0 or n_g == 0:
        raise ValueError(f"distances must have at least one query and one gallery item, got shape {(n_q, n_g)}")
    if not dist.is_floating_point():
        dist = dist.double()  # exact for the integers a distance matrix could hold, order kept
    return dist.detach().cpu()


def _check_no_nan(dist: torch.Tensor) -> None:
    if torch.isnan(dist).any():
        raise ValueError("distances contain NaN; expected real numbers (+-inf are allowed)")


def _self_columns(n_q: int, n_g: int) -> torch.Tensor:
    """Column of each query's own item for leave-one-out (queries are the gallery, same order)."""
    if n_q != n_g:
        raise ValueError(
            f"exclude_self=True needs the queries to be the gallery (square distances), got {n_q} x {n_g}"
        )
    if n_g < 2:
        raise ValueError("exclude_self=True needs at least 2 items")
    return torch.arange(n_q)


# ---------------------------------------------------------------- ranking


def _rank_order(dist: torch.Tensor, self_cols: torch.Tensor | None) -> torch.Tensor:
    """:func:`rank_order` on checked input; ``self_cols`` = each row's own column, or None."""
    c, g = dist.shape
    order = torch.sort(dist, dim=1, stable=True).indices  # stable: ties keep gallery order
    if self_cols is None:
        return order
    # exactly one self column per row, so dropping it leaves a rectangular (c, G-1) ranking
    return order[order != self_cols.unsqueeze(1)].view(c, g - 1)


def rank_order(distances, *, exclude_self: bool = False) -> torch.Tensor:
    """Gallery indices from nearest to farthest for each query: long tensor (Q, G), or (Q, G - 1)
    with ``exclude_self`` (query ``i``'s own column ``i`` left out; needs Q == G).

    Ties in distance are broken by gallery order (a stable sort), as the spec requires; -0.0 ties
    with +0.0.
    """
    dist = _as_distances(distances)
    _check_no_nan(dist)
    self_cols = _self_columns(*dist.shape) if exclude_self else None
    return _rank_order(dist, self_cols)


def nearest(distances, k: int, *, exclude_self: bool = False) -> torch.Tensor:
    """The ``k`` nearest gallery indices of each query, nearest first: the first ``k`` columns of
    :func:`rank_order` (the same tie rule; fewer when the gallery is smaller), for what shows a
    ranking's top (the figures, the explorer's search, Twitter I's retrievals)."""
    return rank_order(distances, exclude_self=exclude_self)[:, :k]


# The fast path packs (distance, gallery index, label) into one int64 sort key: 32 bits of distance
# above ``_FREE_BITS`` bits for the index and the label, so the bits those two need decide whether
# a problem can take it (8 emotions: 3 label bits, galleries up to 2**29 items).


def _ranked_labels(dist, g_lab, self_cols):
    """Gallery labels in rank order for each row of ``dist`` (c, G): (c, G'), G' = G - 1 with
    ``self_cols``; by the stable sort of :func:`rank_order` (the reference for the packed sort)."""
    return g_lab[_rank_order(dist, self_cols)]


def _relevance_of_ranked(ranked, q_lab, emotions: bool):
    """(same label, same polarity) in rank order; at the polarity level both are the same matrix."""
    rel = ranked == q_lab.to(ranked.dtype).unsqueeze(1)
    if not emotions:
        return rel, rel
    half = NUM_EMOTIONS // 2  # polarity_labels without its range check and int64 copy: 4..7 negative
    return rel, (ranked >= half) == (q_lab >= half).unsqueeze(1)


def ranked_relevance(distances, query_labels, gallery_labels, *, level: str = "emotion",
                     exclude_self: bool = False) -> torch.Tensor:
    """Relevance in rank order: bool tensor ``rel`` (Q, G) with ``rel[i, k - 1] = rel_k`` of query i.

    Relevant = same label. ``level`` says what the labels are, as in :func:`retrieval_metrics`:
    emotion indices 0..7 (``"emotion"``) or polarities 0/1 (``"polarity"``). For mAP2 on emotion
    labels, pass their polarities: ``ranked_relevance(d, polarity_labels(q), polarity_labels(g),
    level="polarity")``. ``exclude_self`` as in :func:`rank_order` (the result is then (Q, G - 1)).
    """
    dist = _as_distances(distances)
    _check_no_nan(dist)
    metric_names(level)  # checks the level
    q_lab = _as_labels(query_labels, "query_labels", dist.shape[0], level)
    g_lab = _as_labels(gallery_labels, "gallery_labels", dist.shape[1], level)
    self_cols = _self_columns(*dist.shape) if exclude_self else None
    return _relevance_of_ranked(_ranked_labels(dist, g_lab, self_cols), q_lab, emotions=False)[0]
