"""The book's answer in one picture: each key row against the N-pair floor, fold by fold.

Chapter 13 opens with :func:`plot_forest` of :func:`forest_frame`. For every key row of an
experiment (``core`` by default) and each training regime, the difference to the trained linear
N-pair floor is taken on the same held-out folds (seeds averaged within a fold first), with

* the folds the row wins;
* two 95% intervals of the mean difference: the Student-t interval, which treats the folds as
  independent samples, and the corrected resampled t interval of Nadeau and Bengio (2003), which
  widens it because the folds' training sets overlap (any two of the five share two thirds of their
  images), so their differences are correlated: the variance of the mean is taken as
  ``(1/k + n_test/n_train) s^2`` instead of ``s^2 / k``;
* the papers' own difference between the same two rows (full FI, ResNet-50), where they print one.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import pandas as pd

from apse.experiments.regimes import DEFAULT_RESULTS
from apse.experiments.runner import load_records
from apse.experiments.stats import fold_differences, mean_std, unsigned_zero
from apse.experiments.tables import get_experiment
from apse.metrics import higher_is_better
from apse.paper_results import row_values

__all__ = ["KEY_ROWS", "FLOOR", "corrected_interval", "forest_frame", "plot_forest",
           "verdict_numbers", "user_view"]

#: The key rows of Table 1 and the ablation that chapter 13 answers with, in the papers' order.
KEY_ROWS = ("softmax", "ep-so", "at-ep-mo", "at-ep-ha-clb-mo", "apse-wep", "apse-gep", "yang")
#: The trained linear floor every row is compared with (the papers' own N-pair row).
FLOOR = "npair"


def corrected_interval(diffs: Sequence[float], test_train_ratio: float,
                       level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)`` of per-fold differences with the corrected resampled t interval.

    Nadeau and Bengio (2003, Machine Learning 52): when the k training sets overlap, the variance of
    the mean difference is ``(1/k + n_test/n_train) s^2`` rather than ``s^2/k``; with
    ``test_train_ratio = 0`` this is the plain Student-t interval. k - 1 degrees of freedom.
    """
    from scipy.stats import t

    diffs = [float(d) for d in diffs]
    k = len(diffs)
    if k < 2:
        raise ValueError(f"an interval needs at least two folds, got {k}")
    mean, std = mean_std(diffs)
    half = float(t.ppf(0.5 + level / 2, k - 1)) * math.sqrt((1 / k + test_train_ratio)) * std
    return mean, mean - half, mean + half


def _paper_difference(experiment, row: str, floor: str, metric: str) -> float:
    variants = {v.name: v for v in experiment.variants}
    a, b = variants[row].paper, variants[floor].paper
    if a is None or b is None:
        return math.nan
    va, vb = row_values(*a), row_values(*b)
    if metric not in va or metric not in vb:
        return math.nan
    return va[metric] - vb[metric]


def forest_frame(name: str = "core", regimes: Sequence[str] = ("frozen", "finetune"),
                 metrics: Sequence[str] = ("mAP8", "mAP2"), rows: Sequence[str] = KEY_ROWS,
                 floor: str = FLOOR, *, results_dir: str | os.PathLike = DEFAULT_RESULTS,
                 level: float = 0.95) -> pd.DataFrame:
    """One line per (row, regime, metric): the paired difference ``row - floor`` over the folds.

    Columns: ``row``, ``label``, ``regime``, ``metric``, ``mean``, ``low`` / ``high`` (Student t),
    ``low_corrected`` / ``high_corrected`` (Nadeau-Bengio), ``wins``, ``folds``, ``seeds`` (runs per
    fold), ``paper`` (the papers' difference, NaN where they print none). For a lower-is-better
    metric the difference is still ``row - floor`` and a win is a negative one.
    """
    experiment = get_experiment(name)
    labels = {v.name: v.label for v in experiment.variants}
    missing = [r for r in (*rows, floor) if r not in labels]
    if missing:
        raise ValueError(f"experiment {name!r} has no variant(s) {missing}; "
                         f"it has: {', '.join(labels)}")
    out = []
    for regime in regimes:
        records = load_records(name, results_dir, regime=regime)
        by_variant: dict[str, dict] = {}
        ratios = []
        for r in records:
            by_variant.setdefault(r["variant"], {})[(int(r["fold"]), int(r["seed"]))] = r
            split = r.get("split") or {}
            if split.get("train") and split.get("test"):
                ratios.append(split["test"] / split["train"])
        ratio = sum(ratios) / len(ratios) if ratios else 0.0
        base = by_variant.get(floor, {})
        for row in rows:
            runs = by_variant.get(row, {})
            for metric in metrics:
                def values(rs):
                    return {k: rec["test_metrics"].get(metric) for k, rec in rs.items()}

                diffs = fold_differences(values(runs), values(base))
                line = {"row": row, "label": labels[row], "regime": regime, "metric": metric,
                        "folds": len(diffs),
                        "seeds": round(len(set(runs) & set(base)) / max(len(diffs), 1), 2),
                        "paper": _paper_difference(experiment, row, floor, metric)}
                if len(diffs) >= 2:
                    d = list(diffs.values())
                    mean, low, high = corrected_interval(d, 0.0, level)
                    _, low_c, high_c = corrected_interval(d, ratio, level)
                    sign = 1 if higher_is_better(metric) else -1
                    line.update(mean=mean, low=low, high=high, low_corrected=low_c,
                                high_corrected=high_c, wins=sum(sign * x > 0 for x in d))
                else:
                    line.update(mean=math.nan, low=math.nan, high=math.nan,
                                low_corrected=math.nan, high_corrected=math.nan, wins=0)
                out.append(line)
    columns = ["row", "label", "regime", "metric", "mean", "low", "high", "low_corrected",
               "high_corrected", "wins", "folds", "seeds", "paper"]
    return pd.DataFrame(out, columns=columns)


#: How the figure names a regime, and the marker it draws it with.
_REGIME_STYLE = {"frozen": ("frozen backbone", "o", "#1f77b4"),
                 "probe": ("probe (160 px)", "^", "#2ca02c"),
                 "finetune": ("fine-tuned end to end", "s", "#ff7f0e")}


def plot_forest(frame: pd.DataFrame, axes=None, *, short_labels: dict[str, str] | None = None):
    """A forest plot of :func:`forest_frame`: one panel per metric, one line per row and regime.

    Each line is the mean difference to the floor with its corrected 95% interval (thin) and the
    plain t interval (thick); the number at the right is the folds won; a red diamond marks the
    papers' difference. Returns the figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    metrics = list(dict.fromkeys(frame["metric"]))
    regimes = list(dict.fromkeys(frame["regime"]))
    rows = list(dict.fromkeys(frame["row"]))
    labels = dict(zip(frame["row"], frame["label"]))
    labels.update(short_labels or {})
    if axes is None:
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics) + 1.6, 0.5 * len(rows) + 1.3),
                                 sharey=True)
    axes = list(axes) if hasattr(axes, "__len__") else [axes]
    fig = axes[0].figure
    step = 0.8 / max(len(regimes), 1)
    for ax, metric in zip(axes, metrics):
        part = frame[frame["metric"] == metric]
        for j, regime in enumerate(regimes):
            _, marker, color = _REGIME_STYLE.get(regime, (regime, "o", "0.3"))
            for i, row in enumerate(rows):
                sel = part[(part["row"] == row) & (part["regime"] == regime)]
                if sel.empty or math.isnan(sel["mean"].iloc[0]):
                    continue
                r = sel.iloc[0]
                y = i + (j - (len(regimes) - 1) / 2) * step
                ax.plot([r["low_corrected"], r["high_corrected"]], [y, y], color=color, lw=1)
                ax.plot([r["low"], r["high"]], [y, y], color=color, lw=3, alpha=0.6)
                ax.plot([r["mean"]], [y], marker, color=color, ms=5)
                ax.annotate(f"{int(r['wins'])}/{int(r['folds'])}", (1.0, y),
                            xycoords=("axes fraction", "data"), xytext=(3, 0),
                            textcoords="offset points", va="center", fontsize=8, color=color)
        papers = part.drop_duplicates("row").set_index("row")["paper"]
        for i, row in enumerate(rows):
            if row in papers and not math.isnan(papers[row]):
                ax.plot([papers[row]], [i], "D", color="#d62728", ms=5, mfc="none")
        ax.axvline(0, color="0.3", lw=0.8)
        ax.set_title(f"{metric}: row - N-pair floor", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([labels[r] for r in rows], fontsize=9)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.tick_params(axis="x", labelsize=9)
    handles = [Line2D([], [], marker=_REGIME_STYLE.get(g, (g, "o", "0.3"))[1],
                      color=_REGIME_STYLE.get(g, (g, "o", "0.3"))[2],
                      label=_REGIME_STYLE.get(g, (g,))[0]) for g in regimes]
    handles.append(Line2D([], [], marker="D", ls="", color="#d62728", mfc="none",
                          label="papers' difference (full FI, ResNet-50)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 0.96, 1))
    return fig


def verdict_numbers(frame: pd.DataFrame, row: str = "apse-gep", digits: int = 3) -> dict[str, str]:
    """The values the answer's paragraph quotes, as text (for myst-nb's ``glue``): for ``row`` in
    each regime and metric, ``{metric}_{regime}`` (signed mean), ``..._ci`` (corrected interval),
    ``..._won`` ("k of n") and ``..._paper`` (the papers' difference)."""
    out = {}
    for _, r in frame[frame["row"] == row].iterrows():
        key = f"{r['metric']}_{r['regime']}"
        out[key] = f"{r['mean']:+.{digits}f}"
        out[f"{key}_ci"] = f"{r['low_corrected']:+.{digits}f} to {r['high_corrected']:+.{digits}f}"
        out[f"{key}_won"] = f"{int(r['wins'])} of {int(r['folds'])}"
        out[f"{key}_paper"] = "—" if math.isnan(r["paper"]) else f"{r['paper']:+.{digits}f}"
    return {k: unsigned_zero(v) for k, v in out.items()}


def user_view(name: str = "user-view", regimes: Sequence[str] = ("frozen", "finetune"),
              rows: Sequence[str] = (FLOOR, *KEY_ROWS), metric: str = "Opp@5", *,
              results_dir: str | os.PathLike = DEFAULT_RESULTS, digits: int = 2) -> pd.DataFrame:
    """What a user sees first: per row and regime, ``metric`` (Opp@5, the share of a query's top
    five results with the opposite polarity) as the mean over the folds' runs, with the lowest and
    highest fold, and the number of runs. Rows or regimes without runs are left out."""
    labels = {v.name: v.label for v in get_experiment(name).variants}
    out = []
    for regime in regimes:
        by_row: dict[str, list[float]] = {}
        for r in load_records(name, results_dir, regime=regime):
            value = (r.get("test_metrics") or {}).get(metric)
            if value is not None:
                by_row.setdefault(r["variant"], []).append(float(value))
        for row in rows:
            values = by_row.get(row)
            if not values:
                continue
            mean, _ = mean_std(values)
            out.append({"model": labels.get(row, row), "regime": regime,
                        metric: round(mean, digits),
                        "folds: lowest to highest": f"{min(values):.{digits}f} to "
                                                    f"{max(values):.{digits}f}",
                        "runs": len(values)})
    if not out:
        return pd.DataFrame(columns=["model", "regime", metric, "folds: lowest to highest", "runs"])
    frame = pd.DataFrame(out)
    order = [g for g in regimes if g in set(frame["regime"])]
    wide = frame.pivot(index="model", columns="regime").reindex(
        [labels.get(r, r) for r in rows if labels.get(r, r) in set(frame["model"])])
    return wide.reindex(columns=order, level="regime")
