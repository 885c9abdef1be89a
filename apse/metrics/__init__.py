"""Score retrieval rankings with the APSE papers' metrics: mAP8, mAP2, NN, FT, ST, DCG, F1 and ANMRR;
and beside them MAP@R and RP (R-precision), as "A Metric Learning Reality Check" recommends.

Definitions follow ``shared/spec/apse-method.md``, section "Metrics" (TMM 2020 Sec. V-A, which cites
the Princeton Shape Benchmark for NN/FT/ST/DCG/E-measure and MPEG-7 for ANMRR); MAP@R and RP follow
Musgrave, Belongie and Lim, "A Metric Learning Reality Check" (ECCV 2020), Sec. 3.2. For one query:

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
  NMRR is only meaningful together with the set it was computed in;
* ``MAP@R = 1/R * sum_{k=1..R} P@k * rel_k`` with ``R = n`` and ``P@k = hits@k / k`` (Musgrave et
  al.): AP over the top R, divided by R, not by the hits in the top R, so ``MAP@R <= RP``;
* ``RP  = hits@R / R`` with ``R = n``: R-precision, which *is* FT (the reality-check paper's
  R-precision is the Princeton Shape Benchmark's first tier); it is registered under its own name
  too, beside MAP@R, so that the numbers read as the metric-learning literature reports them.

Every metric is the mean over queries.

**How the code is laid out** (one module per job):

1. :mod:`~apse.metrics.ranking`: :func:`pairwise_distances`, :func:`rank_order` (stable sort of each
   row) and :func:`ranked_relevance`, the boolean matrix ``rel[i, k - 1] = rel_k`` of query ``i``,
   computed once and shared by every metric.
2. :mod:`~apse.metrics.definitions`: one function per metric over that matrix, named as in the spec:
   :func:`map8`, :func:`map2`, :func:`nn`, :func:`ft`, :func:`st`, :func:`dcg`, :func:`f1`,
   :func:`anmrr`, then :func:`map_at_r` and :func:`r_precision` (``nn`` is not ``torch.nn``: call it
   as ``metrics.nn``). Each returns per-query values
   (NaN where the query has no relevant item); the metric is their mean. This is the reference path.
   Each is registered in :data:`METRICS` (:func:`register_metric`: name, function, higher-is-better,
   which relevance it reads), the one list of metric names the rest of apse reads; a new metric is
   one registered function.
3. :mod:`~apse.metrics.scoring`: :func:`per_query_metrics` / :func:`retrieval_metrics` validate the
   inputs and score the queries a chunk at a time. For float32 (and narrower) distances they take the
   fast path of :mod:`~apse.metrics.fast`: one packed integer sort (the same ranking as 1) and the
   papers' eight metrics of 2 fused over one cumulative sum of hits (equal to 1e-12); both are tested
   against 1-2. Metrics registered beyond the eight (MAP@R, RP, a user's) are computed by their own
   functions on either path. float64 distances, and problems whose labels and gallery indices do not fit the packed key,
   take the reference path.

**Levels** (``level=``) say what the labels are. ``"emotion"`` (default): emotion indices 0..7 and
all ten metrics above: :data:`METRIC_NAMES` (the papers' eight), then MAP@R and RP
(:func:`metric_names` lists them all). ``"polarity"``: for data labelled with polarities only
(0 = positive, 1 = negative; e.g. Twitter I): relevance = same polarity for *every* metric, and the
result has :data:`POLARITY_METRIC_NAMES` (mAP2, NN, FT, ST, DCG, F1, ANMRR; no mAP8, which needs
emotions; no MAP@R and RP, registered for same-emotion relevance only, so the polarity tables keep
the papers' seven); emotion labels are never invented from polarities.

Choices the spec leaves to the implementation:

* **Leave-one-out** (``exclude_self=True``): queries and gallery are the same items in the same
  order; query ``i``'s own column ``i`` is removed from its ranking, so its gallery has ``G - 1``
  items, ``G - 1`` is the ``G`` of the formulas above, and it never counts as relevant.
* **Queries without any relevant item** (``n = 0``; e.g. the only image of its emotion in a
  leave-one-out fold) have no defined AP/FT/ST/DCG/F1/NMRR/MAP@R/RP. They are left out of the mean
  of every metric that uses emotion relevance (all but mAP2), with a ``RuntimeWarning``
  saying how many; mAP2 uses its own ``n`` (same polarity) and leaves out only queries without any
  item of the same polarity. Per-query values of left-out queries are NaN. If no query at all has a
  relevant item, a ``ValueError`` is raised. NN is left out for them too, so that mAP8, NN, FT, ST,
  DCG, F1, ANMRR, MAP@R and RP all average over the same queries.
* Distances are ranked exactly as given (float16/bfloat16 are widened to float32, integers to
  float64, both without changing the order or the ties; -0.0 ties with +0.0; +-inf are allowed,
  NaN is an error); per-query sums are accumulated in float64, so counts stay exact.
"""
from apse.metrics.definitions import (LEVELS, LOWER_IS_BETTER, METRIC_NAMES, METRICS, POLARITY_METRIC_NAMES, Metric,
                                     anmrr, average_precision, dcg, f1, ft, higher_is_better, map2, map8,
                                     map_at_r, metric_names, nn, opposite_at_5, r_precision, register_metric,
                                     st)
from apse.metrics.ranking import nearest, pairwise_distances, rank_order, ranked_relevance
from apse.metrics.scoring import evaluate_embeddings, per_query_metrics, retrieval_metrics

__all__ = [
    "Metric", "METRICS", "register_metric", "metric_names", "higher_is_better",
    "METRIC_NAMES", "POLARITY_METRIC_NAMES", "LEVELS", "LOWER_IS_BETTER",
    "pairwise_distances", "rank_order", "nearest", "ranked_relevance",
    "average_precision", "map8", "map2", "nn", "ft", "st", "dcg", "f1", "anmrr", "map_at_r", "r_precision",
    "opposite_at_5",
    "per_query_metrics", "retrieval_metrics", "evaluate_embeddings",
]
