"""Retrieval metrics of the APSE papers: mAP8, mAP2, NN, FT, ST, DCG, F1 and ANMRR.

Definitions follow ``shared/spec/apse-method.md``, section "Metrics" (TMM 2020 Sec. V-A, which cites
the Princeton Shape Benchmark for NN/FT/ST/DCG/E-measure and MPEG-7 for ANMRR). For one query:

* the gallery is ranked by increasing distance; ties are broken by gallery order (stable sort);
* ``rel_k`` = 1 if the item at rank ``k`` (1-based) is relevant. Relevant = same emotion for every
  metric except mAP2, where it is same polarity (:func:`apse.emotions.polarity_labels`);
* ``n`` = number of relevant gallery items, ``G`` = gallery size, ``hits@m = sum_{k<=m} rel_k``.

Then

* ``AP  = 1/n * sum_{k: rel_k=1} hits@k / k``  (full ranked list); mAP8 / mAP2 = mean AP;
* ``NN  = rel_1``;
* ``FT  = hits@n / n``;  ``ST = hits@min(2n, G) / n``;
* ``DCG = (rel_1 + sum_{k>=2} rel_k / log2 k) / (1 + sum_{k=2..n} 1 / log2 k)`` (normalised by the
  ideal ranking, so a perfect ranking scores 1);
* ``F1`` at cutoff ``K = min(f1_k, G)`` (default 32, the PSB E-measure cutoff; the papers give none):
  ``P = hits@K / K``, ``R = hits@K / n``, ``F1 = 2PR / (P + R) = 2 hits@K / (K + n)``, 0 without hits;
* ``ANMRR`` (MPEG-7): ``NG = n``, ``GTM = max NG over all queries``, ``K = min(4 NG, 2 GTM)``;
  each relevant item's rank ``r`` is replaced by ``1.25 K`` when ``r > K``; ``AVR = mean`` of those
  ranks; ``NMRR = (AVR - 0.5 - NG/2) / (1.25 K - 0.5 - NG/2)`` (0 = perfect, 1 = no relevant item in
  the top K); ANMRR = mean NMRR. Lower is better. GTM depends on the whole query set, so a per-query
  NMRR is only meaningful together with the set it was computed in.

Every metric is the mean over queries.

**Levels** (``level=``). ``"emotion"`` (default): labels are emotion indices 0..7 and the eight
metrics above. ``"polarity"``: for data labelled with polarities only (0 = positive, 1 = negative;
e.g. Twitter I): relevance = same polarity for *every* metric, and the result has
:data:`POLARITY_METRIC_NAMES` (mAP2, NN, FT, ST, DCG, F1, ANMRR; no mAP8, which needs emotions).
Internally polarity ``p`` is ranked as the emotion code ``4 p`` (the first emotion of that
polarity), so "same code" and "same polarity" coincide and the emotion-level formulas give the polarity-level
metrics unchanged; emotion labels are never invented from polarities.

Choices the spec leaves to the implementation:

* **Leave-one-out** (``exclude_self=True``): queries and gallery are the same items in the same
  order; query ``i``'s own column ``i`` is removed from its ranking, so its gallery has ``G - 1``
  items, ``G - 1`` is the ``G`` of the formulas above, and it never counts as relevant.
* **Queries without any relevant item** (``n = 0``; e.g. the only image of its emotion in a
  leave-one-out fold) have no defined AP/FT/ST/DCG/F1/NMRR. They are left out of the mean of every
  metric that uses emotion relevance (mAP8, NN, FT, ST, DCG, F1, ANMRR), with a ``RuntimeWarning``
  saying how many; mAP2 uses its own ``n`` (same polarity) and leaves out only queries without any
  item of the same polarity. Per-query values of left-out queries are NaN. If no query at all has a
  relevant item, a ``ValueError`` is raised. NN is left out for them too, so that mAP8, NN, FT, ST,
  DCG, F1 and ANMRR all average over the same queries.
* Distances are ranked exactly as given (float16/bfloat16 are widened to float32, integers to
  float64, both without changing the order or the ties; -0.0 ties with +0.0; +-inf are allowed,
  NaN is an error); per-query sums are accumulated in float64, so counts stay exact.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from apse.emotions import NUM_EMOTIONS, polarity_labels

__all__ = [
    "METRIC_NAMES",
    "POLARITY_METRIC_NAMES",
    "LEVELS",
    "metric_names",
    "LOWER_IS_BETTER",
    "pairwise_distances",
    "per_query_metrics",
    "retrieval_metrics",
    "evaluate_embeddings",
]

METRIC_NAMES: tuple[str, ...] = ("mAP8", "mAP2", "NN", "FT", "ST", "DCG", "F1", "ANMRR")
LOWER_IS_BETTER: frozenset[str] = frozenset({"ANMRR"})
#: The metrics at the polarity level (relevance = same polarity for all of them).
POLARITY_METRIC_NAMES: tuple[str, ...] = tuple(m for m in METRIC_NAMES if m != "mAP8")
LEVELS: tuple[str, ...] = ("emotion", "polarity")


def metric_names(level: str = "emotion") -> tuple[str, ...]:
    """The metrics computed at `level`: :data:`METRIC_NAMES` or :data:`POLARITY_METRIC_NAMES`."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    return METRIC_NAMES if level == "emotion" else POLARITY_METRIC_NAMES

# Roughly 60-80 bytes of temporaries per (query, gallery) cell in `_chunk_metrics` (int64 sort keys,
# a few float64 rows); 4M cells keep a chunk at about 300 MB whatever the gallery size.
_CELLS_PER_CHUNK = 4_000_000


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
    return t


def _ranked_labels(dist, g_lab, self_cols):
    """Gallery labels in ranked order for each row of ``dist`` (c, G): uint8 tensor (c, G'), where
    G' = G - 1 when ``self_cols`` (the column of each row's own item) is given, else G.

    Ranking = stable ascending sort of the distances (ties keep gallery order). For float32 (and
    narrower) distances the sort key packs, into one int64, the distance's bits (mapped to an
    order-preserving signed integer), the gallery index (tie-break) and the label (3 bits), and
    numpy sorts those keys without an index array: several times faster than an indexed stable sort,
    and the labels come back without a gather. float64 distances use ``torch.sort(stable=True)``.
    """
    c, g = dist.shape
    if dist.dtype == torch.float64:
        order = torch.sort(dist, dim=1, stable=True).indices
        if self_cols is not None:
            # exactly one self column per row, so dropping it leaves a rectangular (c, G-1) ranking
            order = order[order != self_cols.unsqueeze(1)].view(c, g - 1)
        return torch.take(g_lab.to(torch.uint8), order)
    bits = (dist.float() + 0.0).numpy().view(np.int32)  # + 0.0 turns -0.0 into +0.0 (they tie)
    # IEEE floats order like sign-magnitude integers: flip the magnitude bits of negatives
    np.bitwise_xor(bits, (bits >> 31) & 0x7FFFFFFF, out=bits)
    key = bits.astype(np.int64)
    key <<= 32
    key |= ((np.arange(g, dtype=np.int64) << 3) | g_lab.numpy().astype(np.int64))[None, :]
    if self_cols is not None:
        # larger than any real key (distances are not NaN): the self item sorts last, then is cut
        key[np.arange(c), self_cols.numpy()] = np.iinfo(np.int64).max
    key.sort(axis=1)  # keys are unique, so any sort algorithm gives the stable order
    if self_cols is not None:
        key = key[:, : g - 1]
    return torch.from_numpy((key & 7).astype(np.uint8))


def _chunk_metrics(dist, q_lab, q_pol, g_lab, self_cols, gtm, f1_k, inv_ranks, disc, ideal):
    """Per-query metrics for one chunk of queries (rows of ``dist``); see the module docstring."""
    ranked = _ranked_labels(dist, g_lab, self_cols)  # (c, G') labels in rank order
    c, g = ranked.shape
    rows = torch.arange(c)
    out = {}

    def average_precision(rel: torch.Tensor):
        """AP = 1/n sum_k rel_k hits@k / k, as one matrix-vector product; also hits@k and n."""
        relf = rel.to(torch.float64)  # float64 holds the integer counts exactly
        hits = relf.cumsum(dim=1)
        n = hits[:, -1].clone()
        return ((hits * relf) @ inv_ranks) / n, relf, hits, n

    out["mAP2"] = average_precision((ranked >> 2) == q_pol.to(torch.uint8).unsqueeze(1))[0]
    out["mAP8"], relf, hits, n = average_precision(ranked == q_lab.to(torch.uint8).unsqueeze(1))
    del ranked
    safe = n.long().clamp(min=1)
    out["NN"] = relf[:, 0].clone()
    out["FT"] = hits[rows, safe - 1] / n
    out["ST"] = hits[rows, torch.clamp(2 * safe, max=g) - 1] / n
    out["DCG"] = (relf @ disc) / ideal[safe - 1]
    k_f1 = min(f1_k, g)
    out["F1"] = 2.0 * hits[:, k_f1 - 1] / (k_f1 + n)  # = 2PR/(P+R) with P = hits/K, R = hits/n
    # ANMRR: sum of ranks with every rank r > K counted as 1.25 K
    #   = sum_{k <= K} k rel_k + 1.25 K (n - hits@K); only the first max(K) columns are needed.
    k_anmrr = torch.minimum(4 * n, torch.full_like(n, 2.0 * gtm))
    k_idx = torch.clamp(k_anmrr.long(), min=1, max=g) - 1
    cols = int(k_idx.max()) + 1
    ranks = torch.arange(1, cols + 1, dtype=torch.float64)
    rank_sum = (relf[:, :cols] * ranks).cumsum(dim=1)[rows, k_idx]
    avr = (rank_sum + 1.25 * k_anmrr * (n - hits[rows, k_idx])) / n
    out["ANMRR"] = (avr - 0.5 - n / 2) / (1.25 * k_anmrr - 0.5 - n / 2)

    missing = n == 0
    for name in METRIC_NAMES:
        if name != "mAP2":
            out[name] = out[name].masked_fill(missing, float("nan"))
    return out


def per_query_metrics(
    distances,
    query_labels,
    gallery_labels,
    *,
    exclude_self: bool = False,
    f1_k: int = 32,
    chunk_size: int | None = None,
    progress: bool = False,
    level: str = "emotion",
) -> dict[str, torch.Tensor]:
    """Per-query values of every metric: dict name -> float64 tensor (Q,), NaN where undefined.

    Same arguments as :func:`retrieval_metrics`; "mAP8" is each query's AP (for AP distributions),
    "ANMRR" its NMRR. Entries are NaN for queries without a relevant item (see the module docstring).
    At ``level="polarity"`` the keys are :data:`POLARITY_METRIC_NAMES`.
    """
    from tqdm.auto import tqdm

    dist = torch.as_tensor(distances)
    if dist.dim() != 2:
        raise ValueError(f"distances must be a 2-D (queries, gallery) array, got shape {tuple(dist.shape)}")
    n_q, n_g = dist.shape
    if n_q == 0 or n_g == 0:
        raise ValueError(f"distances must have at least one query and one gallery item, got shape {(n_q, n_g)}")
    if n_g >= 2**29:
        raise ValueError(f"galleries of at most 2**29 items are supported, got {n_g}")
    if not dist.is_floating_point():
        dist = dist.double()
    dist = dist.detach().cpu()
    names = metric_names(level)
    q_lab = _as_labels(query_labels, "query_labels", n_q, level).cpu()
    g_lab = _as_labels(gallery_labels, "gallery_labels", n_g, level).cpu()
    if level == "polarity":  # polarity p ranked as emotion code 4p: same code <=> same polarity
        q_lab, g_lab = q_lab * 4, g_lab * 4
    if exclude_self:
        if n_q != n_g:
            raise ValueError(
                f"exclude_self=True needs the queries to be the gallery (square distances), got {n_q} x {n_g}"
            )
        if n_g < 2:
            raise ValueError("exclude_self=True needs at least 2 items")
        if not torch.equal(q_lab, g_lab):
            raise ValueError("exclude_self=True needs query_labels == gallery_labels (same items, same order)")
    f1_k = int(f1_k)
    if f1_k < 1:
        raise ValueError(f"f1_k must be a positive integer, got {f1_k}")
    if chunk_size is None:
        chunk_size = max(1, _CELLS_PER_CHUNK // n_g)
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")

    # n per query without ranking (needed up front: ANMRR's GTM is a max over all queries)
    n_rel = torch.bincount(g_lab, minlength=NUM_EMOTIONS)[q_lab] - int(exclude_self)
    if int((n_rel > 0).sum()) == 0:
        raise ValueError(f"no query has a relevant (same-{level}) gallery item; metrics are "
                         "undefined")
    gtm = int(n_rel.max())
    g_eff = n_g - int(exclude_self)
    ranks = torch.arange(1, g_eff + 1, dtype=torch.float64)
    inv_ranks = 1.0 / ranks
    disc = torch.ones(g_eff, dtype=torch.float64)  # DCG discount: 1 at rank 1, 1/log2 k after
    disc[1:] = 1.0 / torch.log2(ranks[1:])
    ideal = disc.cumsum(0)  # ideal DCG for n relevant items = ideal[n - 1]
    q_pol = polarity_labels(q_lab)

    parts: dict[str, list[torch.Tensor]] = {name: [] for name in METRIC_NAMES}
    starts = range(0, n_q, chunk_size)
    for s in tqdm(starts, desc="metrics", disable=not progress, leave=False):
        e = min(s + chunk_size, n_q)
        if torch.isnan(dist[s:e]).any():  # checked per chunk to keep memory flat
            raise ValueError("distances contain NaN; expected real numbers (+-inf are allowed)")
        self_cols = torch.arange(s, e) if exclude_self else None
        res = _chunk_metrics(dist[s:e], q_lab[s:e], q_pol[s:e], g_lab, self_cols, gtm, f1_k, inv_ranks, disc, ideal)
        for name in METRIC_NAMES:
            parts[name].append(res[name])
    return {name: torch.cat(parts[name]) for name in names}


def retrieval_metrics(
    distances,
    query_labels,
    gallery_labels,
    *,
    exclude_self: bool = False,
    f1_k: int = 32,
    chunk_size: int | None = None,
    return_per_query: bool = False,
    progress: bool = False,
    level: str = "emotion",
):
    """The papers' eight retrieval metrics, each a mean over queries (formulas in the module docstring).

    Args:
        distances: (Q, G) distances (numpy or torch); smaller = more similar. Ties are broken by
            gallery order.
        query_labels, gallery_labels: emotion indices 0..7 in the papers' order (Q,) and (G,).
        exclude_self: leave-one-out; queries and gallery are the same items in the same order, and
            query i's own column is removed from its ranking (needs Q == G).
        f1_k: F1 cutoff, K = min(f1_k, G).
        chunk_size: queries ranked at a time (default keeps temporaries near 300 MB).
        return_per_query: also return :func:`per_query_metrics`' dict.
        progress: show a tqdm bar over chunks.
        level: ``"emotion"`` (labels 0..7, eight metrics) or ``"polarity"`` (labels 0 = positive,
            1 = negative; relevance = same polarity; :data:`POLARITY_METRIC_NAMES`, no mAP8).

    Returns:
        dict with keys :data:`METRIC_NAMES` -> python float (ANMRR lower is better, the rest higher),
        or ``(that dict, per-query dict)`` when ``return_per_query``. Queries without a relevant item
        are left out of the means, with a ``RuntimeWarning``.
    """
    per_query = per_query_metrics(
        distances, query_labels, gallery_labels,
        exclude_self=exclude_self, f1_k=f1_k, chunk_size=chunk_size, progress=progress, level=level,
    )
    names = metric_names(level)
    first = "mAP8" if level == "emotion" else "mAP2"
    n_missing = int(torch.isnan(per_query[first]).sum())
    if n_missing:
        left_out = [m for m in names if m != "mAP2"] if level == "emotion" else list(names)
        warnings.warn(
            f"{n_missing} of {per_query[first].numel()} queries have no same-{level} item in their "
            f"gallery; they are left out of the means of {', '.join(left_out[:-1])} and {left_out[-1]}",
            RuntimeWarning,
            stacklevel=2,
        )
    means = {name: float(torch.nanmean(per_query[name])) for name in names}
    return (means, per_query) if return_per_query else means


def evaluate_embeddings(
    query_emb,
    query_labels,
    gallery_emb=None,
    gallery_labels=None,
    exclude_self: bool = False,
    **kw,
):
    """Embed-then-evaluate: :func:`pairwise_distances` then :func:`retrieval_metrics`.

    With ``gallery_emb=None`` every query searches all the other queries (leave-one-out,
    ``exclude_self=True``), as in the papers' IAPSa/ArtPhoto/Abstract protocol. Extra keywords go to
    :func:`retrieval_metrics`.
    """
    if gallery_emb is None:
        if gallery_labels is not None:
            raise ValueError("gallery_labels given without gallery_emb; pass both, or neither for leave-one-out")
        gallery_emb, gallery_labels, exclude_self = query_emb, query_labels, True
    elif gallery_labels is None:
        raise ValueError("gallery_emb given without gallery_labels; pass both")
    distances = pairwise_distances(query_emb, gallery_emb)
    return retrieval_metrics(distances, query_labels, gallery_labels, exclude_self=exclude_self, **kw)
