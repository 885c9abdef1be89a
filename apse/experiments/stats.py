"""The statistics of experiment tables: mean ± std (:func:`apse.evaluation.mean_std`, the package's
one), paired differences over folds, orderings against a paper.

Pure functions over plain numbers and the summary rows of :func:`apse.experiments.summarise_experiment`
(``{"variant", "mean": {metric: value}, "std": {...}, "paper": {...}}``); nothing here reads a file.
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable, Sequence

from apse.evaluation import mean_std
from apse.metrics import LOWER_IS_BETTER

__all__ = ["mean_std", "key_means", "kendall_tau", "fold_differences", "paired_difference", "metric_difference",
           "ordering_report", "unsigned_zero"]


def key_means(dicts: Iterable[dict]) -> dict[str, float]:
    """Per key, the mean of its non-None values over ``dicts`` (keys with no value are left out)."""
    values: dict[str, list[float]] = {}
    for d in dicts:
        for k, v in d.items():
            if v is not None:
                values.setdefault(k, []).append(float(v))
    return {k: sum(v) / len(v) for k, v in values.items()}


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Kendall's tau of two orderings of the same items (pairs tied in either are left out)."""
    n = len(a)
    if n < 2:
        return None
    s = 0
    pairs = 0
    for i in range(n):
        for j in range(i + 1, n):
            x, y = a[i] - a[j], b[i] - b[j]
            if x == 0 or y == 0:
                continue
            pairs += 1
            s += 1 if (x > 0) == (y > 0) else -1
    return s / pairs if pairs else None


def fold_differences(a: dict, b: dict) -> dict[int, float]:
    """``{fold: mean of a - b over the seeds both ran on that fold}``, folds in order; ``a`` and ``b``
    map ``(fold, seed)`` (or ``"fold-seed"``) to a value (None values left out)."""
    def key(k):
        return tuple(int(x) for x in k.split("-")) if isinstance(k, str) else tuple(k)

    a = {key(k): v for k, v in a.items() if v is not None}
    b = {key(k): v for k, v in b.items() if v is not None}
    per_fold: dict[int, list[float]] = {}
    for k in sorted(set(a) & set(b)):
        per_fold.setdefault(k[0], []).append(float(a[k]) - float(b[k]))
    return {fold: sum(d) / len(d) for fold, d in per_fold.items()}


def paired_difference(a: dict, b: dict) -> dict[str, Any] | None:
    """Paired comparison of two variants run on the same folds and seeds: ``a`` and ``b`` map
    ``(fold, seed)`` (or ``"fold-seed"``) to a metric value. Seeds are averaged within a fold first (runs
    of one fold share their held-out images, so they are not independent), then the per-fold
    differences a - b give the mean, its standard error over folds, and how many folds a wins.

    Returns ``{"mean", "se", "n_folds", "wins"}``, or None with fewer than two common folds. Paired
    differences are far more sensitive than comparing each row's mean ± std: most of the spread between
    runs comes from which images are held out, and that part is shared by both variants.
    """
    diffs = list(fold_differences(a, b).values())
    if len(diffs) < 2:
        return None
    mean, std = mean_std(diffs)
    return {"mean": mean, "se": std / math.sqrt(len(diffs)), "n_folds": len(diffs),
            "wins": sum(d > 0 for d in diffs)}


def metric_difference(a: dict, b: dict, metric: str) -> dict[str, Any] | None:
    """:func:`paired_difference` of ``a - b`` on ``metric``, with a win meaning the better value: for a
    lower-is-better metric (ANMRR, Opp@5) ``wins`` counts the folds where ``a`` is lower, and
    ``mean`` is still ``a - b``."""
    if metric not in LOWER_IS_BETTER:
        return paired_difference(a, b)
    d = paired_difference(b, a)
    return d and {**d, "mean": -d["mean"]}


def unsigned_zero(text: str) -> str:
    """``text`` with every signed number that rounded to zero ("-0.000", "+0.00") written without its
    sign: a difference too small to show has no direction."""
    return re.sub(r"(?<![\d.])[+-](0\.0+)(?![\d.])", r"\1", text)


def ordering_report(rows: Sequence[dict], metric: str = "mAP8") -> dict[str, Any]:
    """Compare our ordering of the variants with the paper's on ``metric``: Kendall tau, the pairs of
    variants ordered as in the paper (``agree``, a count) and those ordered differently (``swapped``:
    (better in the paper, worse in the paper)), and of those the ones whose means differ by more than
    the two rows' stds added (``swapped_beyond_std``; rows without a std count as not beyond)."""
    both = [r for r in rows if r.get("paper") and metric in r["paper"] and metric in r["mean"]]
    ours = [r["mean"][metric] for r in both]
    paper = [r["paper"][metric] for r in both]
    sign = -1 if metric in LOWER_IS_BETTER else 1
    swapped, beyond, agree = [], [], 0
    for i in range(len(both)):
        for j in range(i + 1, len(both)):
            d_ours, d_paper = sign * (ours[i] - ours[j]), sign * (paper[i] - paper[j])
            if d_ours * d_paper > 0:
                agree += 1
            elif d_ours * d_paper < 0:
                better_paper, worse_paper = (both[i], both[j]) if d_paper > 0 else (both[j], both[i])
                swapped.append((better_paper["variant"], worse_paper["variant"]))
                stds = [r.get("std", {}).get(metric) for r in (both[i], both[j])]
                if None not in stds and abs(d_ours) > stds[0] + stds[1]:
                    beyond.append(swapped[-1])
    return {"metric": metric, "n": len(both), "kendall_tau": kendall_tau(ours, paper), "swapped": swapped,
            "agree": agree, "swapped_beyond_std": beyond,
            "ours_order": [r["variant"] for r in sorted(both, key=lambda r: -sign * r["mean"][metric])],
            "paper_order": [r["variant"] for r in sorted(both, key=lambda r: -sign * r["paper"][metric])]}
