"""Score retrieval rankings with the APSE papers' metrics: mAP8, mAP2, NN, FT, ST, DCG, F1 and ANMRR.

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

**How the code is laid out** (top to bottom):

1. Ranking: :func:`rank_order` (stable sort of each row) and :func:`ranked_relevance`, the boolean
   matrix ``rel[i, k - 1] = rel_k`` of query ``i``, computed once and shared by every metric.
2. One function per metric over that matrix, named as in the spec: :func:`map8`, :func:`map2`,
   :func:`nn`, :func:`ft`, :func:`st`, :func:`dcg`, :func:`f1`, :func:`anmrr` (``nn`` is not
   ``torch.nn``: call it as ``metrics.nn``). Each returns per-query values (NaN where the query has
   no relevant item); the metric is their mean. This is the reference path.
   Each is registered in :data:`METRICS` (:func:`register_metric`: name, function, higher-is-better,
   which relevance it reads), the one list of metric names the rest of apse reads; a new metric is
   one registered function.
3. :func:`per_query_metrics` / :func:`retrieval_metrics` validate the inputs and score the queries a
   chunk at a time. For float32 (and narrower) distances they take the fast path: one packed integer
   sort (:func:`_packed_ranked_labels`, the same ranking as 1) and the papers' eight metrics of 2 fused
   over one cumulative sum of hits (:func:`_fast_metrics`, equal to 1e-12); both are tested against
   1-2. Metrics registered beyond the eight are computed by their own functions on either path.
   float64 distances, and problems whose labels and gallery indices do not fit the packed key,
   take the reference path.

**Levels** (``level=``) say what the labels are. ``"emotion"`` (default): emotion indices 0..7 and
the eight metrics above. ``"polarity"``: for data labelled with polarities only (0 = positive,
1 = negative; e.g. Twitter I): relevance = same polarity for *every* metric, and the result has
:data:`POLARITY_METRIC_NAMES` (mAP2, NN, FT, ST, DCG, F1, ANMRR; no mAP8, which needs emotions);
emotion labels are never invented from polarities.

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
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import torch

from apse.emotions import NUM_EMOTIONS

__all__ = [
    "Metric", "METRICS", "register_metric", "metric_names", "higher_is_better",
    "METRIC_NAMES", "POLARITY_METRIC_NAMES", "LEVELS", "LOWER_IS_BETTER",
    "pairwise_distances", "rank_order", "ranked_relevance",
    "average_precision", "map8", "map2", "nn", "ft", "st", "dcg", "f1", "anmrr",
    "per_query_metrics", "retrieval_metrics", "evaluate_embeddings",
]

LEVELS: tuple[str, ...] = ("emotion", "polarity")
_RELEVANCE = ("label", "polarity")


@dataclass(frozen=True)
class Metric:
    """A retrieval metric, as the registry :data:`METRICS` holds it.

    ``per_query(rel, **options)`` maps the ranked relevance matrix (Q, G) bool of
    :func:`ranked_relevance` to float64 per-query values (NaN where undefined); the metric is their
    mean. ``relevance``: ``"label"`` (same emotion; same polarity at the polarity level) or
    ``"polarity"`` (same polarity at both levels, as mAP2). ``needs_emotions``: only defined on
    emotion labels (mAP8). ``options`` maps a keyword of ``per_query`` to the scoring option that
    feeds it: ``"f1_k"`` (the F1 cutoff) or ``"gtm"`` (ANMRR's largest n over the whole query set).
    """

    name: str
    per_query: Callable[..., torch.Tensor]
    higher_is_better: bool = True
    relevance: str = "label"
    needs_emotions: bool = False
    options: Mapping[str, str] = field(default_factory=dict)


#: The metric registry, name -> :class:`Metric`, in report order: the papers' eight first. Every list
#: of metric names in apse (config validation, experiment tables, the CLI) is read from here.
METRICS: dict[str, Metric] = {}


def register_metric(name: str, per_query: Callable[..., torch.Tensor] | None = None, *,
                    higher_is_better: bool = True, relevance: str = "label", needs_emotions: bool = False,
                    options: Mapping[str, str] | None = None):
    """Add a metric to :data:`METRICS`; usable as ``@register_metric("P@10")`` or called directly.

    The new metric is then computed by :func:`retrieval_metrics` (on the reference path, beside the
    fused built-ins), can be selected on (``select_on``) and appears in experiment tables.
    """
    if relevance not in _RELEVANCE:
        raise ValueError(f"relevance must be one of {_RELEVANCE}, got {relevance!r}")
    unknown = set((options or {}).values()) - {"f1_k", "gtm"}
    if unknown:
        raise ValueError(f"unknown metric option(s) {sorted(unknown)}; metrics can take f1_k and gtm")

    def add(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if name in METRICS:
            raise ValueError(f"a metric named {name!r} is registered already")
        METRICS[name] = Metric(name, fn, higher_is_better, relevance, needs_emotions, dict(options or {}))
        return fn

    return add if per_query is None else add(per_query)


def metric_names(level: str = "emotion") -> tuple[str, ...]:
    """The registered metrics computed at ``level`` (``"polarity"`` drops those that need emotions)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    return tuple(n for n, m in METRICS.items() if level == "emotion" or not m.needs_emotions)


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric ``name`` is better (ANMRR: lower is better)."""
    try:
        return METRICS[name].higher_is_better
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; the metrics are: {', '.join(METRICS)}") from None


# Roughly 60-80 bytes of temporaries per (query, gallery) cell while a chunk is scored (int64 sort
# keys, a few float64 rows); 4M cells keep a chunk at about 300 MB whatever the gallery size.
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


# The fast path packs (distance, gallery index, label) into one int64 sort key: 32 bits of distance
# above ``_FREE_BITS`` bits for the index and the label, so the bits those two need decide whether
# a problem can take it (8 emotions: 3 label bits, galleries up to 2**29 items).
_FREE_BITS = 32


def _packed_bits(n_gallery: int, max_label: int) -> tuple[int, int]:
    """(index bits, label bits) that a gallery of ``n_gallery`` items with labels 0..max_label needs."""
    return (n_gallery - 1).bit_length(), int(max_label).bit_length()


def _packing_fits(n_gallery: int, max_label: int) -> bool:
    return sum(_packed_bits(n_gallery, max_label)) <= _FREE_BITS


def _packed_ranked_labels(dist, g_lab, self_cols):
    """Fast path of :func:`_ranked_labels` for float32 (and narrower) distances: one int64 sort.

    Each key packs, from the top bit down, the distance's bits (mapped to an order-preserving signed
    integer), the gallery index (so ties keep gallery order and every key is unique) and the label.
    numpy sorts those keys without an index array, several times faster than an indexed stable sort,
    and the labels come back in rank order without a gather. Any number of classes works as long as
    index and label bits fit in :data:`_FREE_BITS`; otherwise a ``ValueError`` (callers fall back to
    :func:`_rank_order`).
    """
    c, g = dist.shape
    max_label = int(g_lab.max())
    index_bits, label_bits = _packed_bits(g, max_label)
    if index_bits + label_bits > _FREE_BITS:
        raise ValueError(
            f"cannot pack {g} gallery indices ({index_bits} bits) and labels up to {max_label} "
            f"({label_bits} bits) beside a 32-bit distance in 64 bits; use the stable-sort ranking"
        )
    bits = (dist.float() + 0.0).numpy().view(np.int32)  # + 0.0 turns -0.0 into +0.0 (they tie)
    # IEEE floats order like sign-magnitude integers: flip the magnitude bits of negatives
    np.bitwise_xor(bits, (bits >> 31) & 0x7FFFFFFF, out=bits)
    key = bits.astype(np.int64)
    key <<= 32  # the distance decides first; index and label only below it
    key |= ((np.arange(g, dtype=np.int64) << label_bits) | g_lab.numpy().astype(np.int64))[None, :]
    if self_cols is not None:
        # larger than any real key (distances are not NaN): the self item sorts last, then is cut
        key[np.arange(c), self_cols.numpy()] = np.iinfo(np.int64).max
    key.sort(axis=1)  # keys are unique, so any sort algorithm gives the stable order
    if self_cols is not None:
        key = key[:, : g - 1]
    key &= (1 << label_bits) - 1  # keep the label bits: the labels in rank order
    # uint8 where it holds the labels: comparing 1-byte labels is several times faster than int64
    return torch.from_numpy(key).to(torch.uint8 if label_bits <= 8 else torch.int64)


def _ranked_labels(dist, g_lab, self_cols):
    """Gallery labels in rank order for each row of ``dist`` (c, G): (c, G'), G' = G - 1 with
    ``self_cols``; by the stable sort of :func:`rank_order` (the reference for the packed sort)."""
    return g_lab[_rank_order(dist, self_cols)]


def _fast_path_applies(dist: torch.Tensor, g_lab: torch.Tensor) -> bool:
    # float64 distances would lose order in the 32 bits of the key; big labels or galleries may not fit
    return dist.dtype != torch.float64 and _packing_fits(dist.shape[1], int(g_lab.max()))


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


# ---------------------------------------------------------------- one function per metric
# Each takes ``rel`` (Q, G) bool from ranked_relevance and returns float64 (Q,), NaN for queries
# without a relevant item (n = 0: the metric is 0/0 there). float64 holds every count exactly.


def _ranks(g: int) -> torch.Tensor:
    return torch.arange(1, g + 1, dtype=torch.float64)  # 1-based ranks k = 1..G


def _dcg_discount(g: int) -> torch.Tensor:
    ranks = _ranks(g)
    discount = torch.ones_like(ranks)  # rank 1 is not discounted (log2 1 = 0)
    discount[1:] = 1.0 / torch.log2(ranks[1:])
    return discount


def _undefined_without_relevant(values: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    return values.masked_fill(n == 0, float("nan"))


def _hits_within(rel: torch.Tensor, cutoff: torch.Tensor) -> torch.Tensor:
    """hits@cutoff per query, for one cutoff per query (Q,)."""
    in_top = torch.arange(1, rel.shape[1] + 1) <= cutoff.unsqueeze(1)
    return (rel & in_top).sum(dim=1).to(torch.float64)


def average_precision(rel: torch.Tensor) -> torch.Tensor:
    """AP = 1/n sum_{k: rel_k = 1} hits@k / k over the full ranked list."""
    relf = rel.to(torch.float64)
    hits = relf.cumsum(dim=1)  # hits@k
    n = hits[:, -1]
    precision_at_k = hits / _ranks(rel.shape[1])
    return _undefined_without_relevant((precision_at_k * relf).sum(dim=1) / n, n)


def map8(rel: torch.Tensor) -> torch.Tensor:
    """Per-query AP with relevance = same emotion; mAP8 is its mean."""
    return average_precision(rel)


def map2(rel: torch.Tensor) -> torch.Tensor:
    """Per-query AP with relevance = same polarity; mAP2 is its mean."""
    return average_precision(rel)


def nn(rel: torch.Tensor) -> torch.Tensor:
    """Nearest neighbour: NN = rel_1."""
    return _undefined_without_relevant(rel[:, 0].to(torch.float64), rel.sum(dim=1))


def ft(rel: torch.Tensor) -> torch.Tensor:
    """First tier: FT = hits@n / n."""
    n = rel.sum(dim=1)
    return _undefined_without_relevant(_hits_within(rel, n) / n, n)


def st(rel: torch.Tensor) -> torch.Tensor:
    """Second tier: ST = hits@min(2n, G) / n."""
    n = rel.sum(dim=1)
    return _undefined_without_relevant(_hits_within(rel, torch.clamp(2 * n, max=rel.shape[1])) / n, n)


def dcg(rel: torch.Tensor) -> torch.Tensor:
    """DCG = (rel_1 + sum_{k>=2} rel_k / log2 k) / (1 + sum_{k=2..n} 1 / log2 k)."""
    discount = _dcg_discount(rel.shape[1])
    n = rel.sum(dim=1)
    ideal = discount.cumsum(0)[n.clamp(min=1) - 1]  # the n relevant items at ranks 1..n
    return _undefined_without_relevant((rel.to(torch.float64) @ discount) / ideal, n)


def f1(rel: torch.Tensor, k: int = 32) -> torch.Tensor:
    """F1 at cutoff K = min(k, G): P = hits@K / K, R = hits@K / n, F1 = 2PR / (P + R), 0 without hits."""
    if int(k) < 1:
        raise ValueError(f"the F1 cutoff must be a positive integer, got {k}")
    cutoff = min(int(k), rel.shape[1])
    hits = rel[:, :cutoff].sum(dim=1).to(torch.float64)
    n = rel.sum(dim=1)
    # 2PR / (P + R) simplifies to 2 hits / (K + n), which is also 0 without hits (no 0/0)
    return _undefined_without_relevant(2.0 * hits / (cutoff + n), n)


def anmrr(rel: torch.Tensor, gtm: int | None = None) -> torch.Tensor:
    """Per-query NMRR (MPEG-7); ANMRR is its mean, and lower is better.

    ``gtm`` is the largest n over the *whole* query set (default: over the rows of ``rel``); pass it
    when scoring the queries a chunk at a time, or the window K would change with the chunking.
    """
    n = rel.sum(dim=1)
    gtm = int(n.max()) if gtm is None else int(gtm)
    k = torch.minimum(4 * n, torch.full_like(n, 2 * gtm)).to(torch.float64)  # K = min(4 NG, 2 GTM)
    ranks = _ranks(rel.shape[1])
    # each relevant item's rank, or 1.25 K when it is ranked beyond K (however far down it is)
    penalised = torch.where(ranks > k.unsqueeze(1), 1.25 * k.unsqueeze(1), ranks)
    avr = (penalised * rel).sum(dim=1) / n
    ng = n.to(torch.float64)
    nmrr = (avr - 0.5 - ng / 2) / (1.25 * k - 0.5 - ng / 2)
    return _undefined_without_relevant(nmrr, n)


# The papers' eight, in the order of their tables.
register_metric("mAP8", map8, needs_emotions=True)
register_metric("mAP2", map2, relevance="polarity")
register_metric("NN", nn)
register_metric("FT", ft)
register_metric("ST", st)
register_metric("DCG", dcg)
register_metric("F1", f1, options={"k": "f1_k"})
register_metric("ANMRR", anmrr, higher_is_better=False, options={"gtm": "gtm"})

#: The papers' eight metrics, and the seven of them defined at the polarity level (no mAP8).
METRIC_NAMES: tuple[str, ...] = metric_names("emotion")
POLARITY_METRIC_NAMES: tuple[str, ...] = metric_names("polarity")
LOWER_IS_BETTER: frozenset[str] = frozenset(n for n in METRIC_NAMES if not higher_is_better(n))


# ---------------------------------------------------------------- all metrics, chunk by chunk


def _relevance_of_ranked(ranked, q_lab, emotions: bool):
    """(same label, same polarity) in rank order; at the polarity level both are the same matrix."""
    rel = ranked == q_lab.to(ranked.dtype).unsqueeze(1)
    if not emotions:
        return rel, rel
    half = NUM_EMOTIONS // 2  # polarity_labels without its range check and int64 copy: 4..7 negative
    return rel, (ranked >= half) == (q_lab >= half).unsqueeze(1)


def _readable_metrics(ranked, q_lab, gtm: int, f1_k: int, emotions: bool,
                      names: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """Per-query values of the registered metrics ``names`` (default: all at this level) for one chunk
    of ranked labels, each by its own function over the relevance matrix (the reference path)."""
    rel, rel_pol = _relevance_of_ranked(ranked, q_lab, emotions)
    context = {"f1_k": f1_k, "gtm": gtm}
    out = {}
    for name in names if names is not None else metric_names("emotion" if emotions else "polarity"):
        m = METRICS[name]
        kwargs = {arg: context[option] for arg, option in m.options.items()}
        out[name] = m.per_query(rel_pol if m.relevance == "polarity" else rel, **kwargs)
    return out


def _fast_metrics(ranked, q_lab, gtm: int, f1_k: int, emotions: bool) -> dict[str, torch.Tensor]:
    """:func:`_readable_metrics` fused (equal to 1e-12, tested): one float64 copy of the relevance
    and one cumulative sum of hits serve every metric, which read them at their cutoffs."""
    rel, rel_pol = _relevance_of_ranked(ranked, q_lab, emotions)
    del ranked
    c, g = rel.shape
    rows, ranks = torch.arange(c), _ranks(g)

    def average_precision_and_hits(r: torch.Tensor):
        relf = r.to(torch.float64)
        hits = relf.cumsum(dim=1)
        n = hits[:, -1].clone()
        return ((hits * relf) @ (1.0 / ranks)) / n, relf, hits, n

    out = {"mAP2": average_precision_and_hits(rel_pol)[0]} if emotions else {}
    ap, relf, hits, n = average_precision_and_hits(rel)
    out["mAP8" if emotions else "mAP2"] = ap
    del rel, rel_pol
    safe = n.long().clamp(min=1)
    out["NN"] = relf[:, 0].clone()
    out["FT"] = hits[rows, safe - 1] / n
    out["ST"] = hits[rows, torch.clamp(2 * safe, max=g) - 1] / n
    discount = _dcg_discount(g)
    out["DCG"] = (relf @ discount) / discount.cumsum(0)[safe - 1]
    k_f1 = min(f1_k, g)
    out["F1"] = 2.0 * hits[:, k_f1 - 1] / (k_f1 + n)
    # ANMRR: sum_{k <= K} k rel_k + 1.25 K (n - hits@K); only the first max(K) columns are needed
    k_anmrr = torch.minimum(4 * n, torch.full_like(n, 2.0 * gtm))
    k_idx = torch.clamp(k_anmrr.long(), min=1, max=g) - 1
    cols = int(k_idx.max()) + 1
    rank_sum = (relf[:, :cols] * ranks[:cols]).cumsum(dim=1)[rows, k_idx]
    avr = (rank_sum + 1.25 * k_anmrr * (n - hits[rows, k_idx])) / n
    out["ANMRR"] = (avr - 0.5 - n / 2) / (1.25 * k_anmrr - 0.5 - n / 2)
    own_n = {"mAP2"} if emotions else set()  # mAP2 at the emotion level is NaN by its own n
    return {name: v if name in own_n else _undefined_without_relevant(v, n) for name, v in out.items()}


def per_query_metrics(distances, query_labels, gallery_labels, *, exclude_self: bool = False,
                      f1_k: int = 32, chunk_size: int | None = None, progress: bool = False,
                      level: str = "emotion") -> dict[str, torch.Tensor]:
    """Per-query values of every metric: dict name -> float64 tensor (Q,), NaN where undefined.

    Same arguments as :func:`retrieval_metrics`; "mAP8" is each query's AP (for AP distributions),
    "ANMRR" its NMRR. Entries are NaN for queries without a relevant item (see the module docstring).
    At ``level="polarity"`` the keys are :data:`POLARITY_METRIC_NAMES`.
    """
    from tqdm.auto import tqdm

    dist = _as_distances(distances)
    n_q, n_g = dist.shape
    names = metric_names(level)
    q_lab = _as_labels(query_labels, "query_labels", n_q, level)
    g_lab = _as_labels(gallery_labels, "gallery_labels", n_g, level)
    self_cols = _self_columns(n_q, n_g) if exclude_self else None
    if exclude_self and not torch.equal(q_lab, g_lab):
        raise ValueError("exclude_self=True needs query_labels == gallery_labels (same items, same order)")
    f1_k = int(f1_k)
    if f1_k < 1:
        raise ValueError(f"f1_k must be a positive integer, got {f1_k}")
    if chunk_size is None:
        chunk_size = max(1, _CELLS_PER_CHUNK // n_g)
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")

    # n per query without ranking: ANMRR's GTM is a max over *all* queries, needed before chunk 1
    n_rel = torch.bincount(g_lab, minlength=int(q_lab.max()) + 1)[q_lab] - int(exclude_self)
    if int((n_rel > 0).sum()) == 0:
        raise ValueError(f"no query has a relevant (same-{level}) gallery item; metrics are "
                         "undefined")
    gtm = int(n_rel.max())
    emotions = level == "emotion"

    parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    starts = range(0, n_q, chunk_size)
    for s in tqdm(starts, desc="metrics", disable=not progress, leave=False):
        e = min(s + chunk_size, n_q)
        _check_no_nan(dist[s:e])  # per chunk, to keep memory flat
        chunk, own = dist[s:e], None if self_cols is None else self_cols[s:e]
        if _fast_path_applies(chunk, g_lab):
            ranked = _packed_ranked_labels(chunk, g_lab, own)
            values = _fast_metrics(ranked, q_lab[s:e], gtm, f1_k, emotions)
        else:
            ranked, values = _ranked_labels(chunk, g_lab, own), {}
        rest = tuple(n for n in names if n not in values)  # all, or those registered beyond the papers'
        if rest:
            values.update(_readable_metrics(ranked, q_lab[s:e], gtm, f1_k, emotions, rest))
        for name in names:
            parts[name].append(values[name])
    return {name: torch.cat(parts[name]) for name in names}


def retrieval_metrics(distances, query_labels, gallery_labels, *, exclude_self: bool = False,
                      f1_k: int = 32, chunk_size: int | None = None, return_per_query: bool = False,
                      progress: bool = False, level: str = "emotion"):
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


def evaluate_embeddings(query_emb, query_labels, gallery_emb=None, gallery_labels=None,
                        exclude_self: bool = False, **kw):
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
