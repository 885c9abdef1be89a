"""The metrics, one function per metric over the ranked relevance matrix, and their registry.

Definitions: :mod:`apse.metrics` (the package docstring) and ``shared/spec/apse-method.md``, section
"Metrics". Each function takes ``rel`` (Q, G) bool (:func:`apse.metrics.ranked_relevance`) and returns
float64 per-query values, NaN for queries without a relevant item; the metric is their mean.
:data:`METRICS` registers each under its name (:func:`register_metric`): the one list of metric names
the rest of apse reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from apse.registry import Registry

__all__ = ["Metric", "METRICS", "register_metric", "metric_names", "higher_is_better", "METRIC_NAMES",
           "POLARITY_METRIC_NAMES", "LEVELS", "LOWER_IS_BETTER", "average_precision", "map8", "map2", "nn", "ft",
           "st", "dcg", "f1", "anmrr", "map_at_r", "r_precision",
           "opposite_at_5"]

LEVELS: tuple[str, ...] = ("emotion", "polarity")
_RELEVANCE = ("label", "polarity")


@dataclass(frozen=True)
class Metric:
    """A retrieval metric, as the registry :data:`METRICS` holds it.

    ``per_query(rel, **options)`` maps the ranked relevance matrix (Q, G) bool of
    :func:`ranked_relevance` to float64 per-query values (NaN where undefined); the metric is their
    mean. ``relevance``: ``"label"`` (same emotion; same polarity at the polarity level) or
    ``"polarity"`` (same polarity at both levels, as mAP2). ``needs_emotions``: computed at the emotion
    level only (mAP8, which needs emotions; MAP@R and RP, registered for same-emotion relevance).
    ``options`` maps a keyword of ``per_query`` to the scoring option that feeds it: ``"f1_k"`` (the
    F1 cutoff) or ``"gtm"`` (ANMRR's largest n over the whole query set).
    """

    name: str
    per_query: Callable[..., torch.Tensor]
    higher_is_better: bool = True
    relevance: str = "label"
    needs_emotions: bool = False
    options: Mapping[str, str] = field(default_factory=dict)


#: The metric registry, name -> :class:`Metric`, in report order: the papers' eight first, then MAP@R
#: and RP (Musgrave et al. 2020). Every list of metric names in apse (config validation, experiment
#: tables, the CLI) is read from here.
METRICS: Registry[Metric] = Registry("metric")


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
    return METRICS.register(name, per_query, wrap=lambda fn: Metric(name, fn, higher_is_better, relevance,
                                                                    needs_emotions, dict(options or {})))


def metric_names(level: str = "emotion") -> tuple[str, ...]:
    """The registered metrics computed at ``level`` (``"polarity"`` drops those that need emotions)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    return tuple(n for n, m in METRICS.items() if level == "emotion" or not m.needs_emotions)


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric ``name`` is better (ANMRR: lower is better)."""
    return METRICS[name].higher_is_better


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


# Beyond the papers: the two metrics "A Metric Learning Reality Check" (Musgrave, Belongie and Lim,
# ECCV 2020, Sec. 3.2) recommends, with R = n, the number of relevant gallery items of the query.


def map_at_r(rel: torch.Tensor) -> torch.Tensor:
    """MAP@R = 1/R sum_{k=1..R} P@k rel_k, with R = n and P@k = hits@k / k (Musgrave et al. 2020).

    AP truncated at rank R, but divided by R, not by the number of hits in the top R: a query whose
    top R holds h < R relevant items scores at most h / R (its R-precision), even when those h come
    first. 1 only for a perfect top R; MAP@R <= RP, with equality when the hits in the top R are
    ranks 1..h.
    """
    n = rel.sum(dim=1)
    r_max = int(n.max()) if n.numel() else 0  # no rank beyond the largest R counts
    relf = rel[:, :r_max].to(torch.float64)
    ranks = _ranks(r_max)
    within_r = ranks <= n.unsqueeze(1)  # k <= R of each query
    precision_at_k = relf.cumsum(dim=1) / ranks
    return _undefined_without_relevant((precision_at_k * relf * within_r).sum(dim=1) / n, n)


def r_precision(rel: torch.Tensor) -> torch.Tensor:
    """R-precision: RP = hits@R / R with R = n (Musgrave et al. 2020).

    This is the first tier of the Princeton Shape Benchmark by definition, ``RP == FT`` on every
    ranking (:func:`ft`); it is registered under its own name as well because the metric-learning
    literature reports it under that name, beside MAP@R.
    """
    return ft(rel)


# The papers' eight, in the order of their tables.


register_metric("mAP8", map8, needs_emotions=True)
register_metric("mAP2", map2, relevance="polarity")
register_metric("NN", nn)
register_metric("FT", ft)
register_metric("ST", st)
register_metric("DCG", dcg)
register_metric("F1", f1, options={"k": "f1_k"})
register_metric("ANMRR", anmrr, higher_is_better=False, options={"gtm": "gtm"})

#: The papers' eight metrics, and the seven of them defined at the polarity level (no mAP8): the
#: fused metrics of the fast path, and the first columns of every table. Metrics registered beyond
#: them (MAP@R and RP below, or a user's) follow in registry order (:func:`metric_names`).
METRIC_NAMES: tuple[str, ...] = metric_names("emotion")
POLARITY_METRIC_NAMES: tuple[str, ...] = metric_names("polarity")

# Beside the papers' metrics (Musgrave et al. 2020), at the emotion level: relevance = same emotion.
register_metric("MAP@R", map_at_r, needs_emotions=True)
register_metric("RP", r_precision, needs_emotions=True)


def opposite_at_5(rel: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Opp@5: the share of the first ``k`` results whose polarity is the opposite of the query's.

    What a user of an affective search sees first: a sad query answered by amused images. ``rel``
    is same-polarity relevance; the share is over min(k, G) results (NaN when the gallery holds no
    item of the query's polarity). Lower is better; about a half for a random ranking of a gallery
    balanced between the polarities.
    """
    top = rel[:, :k].to(torch.float64)
    if top.shape[1] == 0:
        return torch.full((rel.shape[0],), float("nan"), dtype=torch.float64)
    # undefined, as mAP2, for a query whose polarity has no item in the gallery
    return _undefined_without_relevant(1.0 - top.mean(dim=1), rel.sum(dim=1))


# What a user sees (chapter 13): opposite polarity in the top five, at both levels.
register_metric("Opp@5", opposite_at_5, higher_is_better=False, relevance="polarity")

LOWER_IS_BETTER: frozenset[str] = frozenset(n for n in metric_names() if not higher_is_better(n))
