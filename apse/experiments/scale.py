"""Is it the data? Learning curves, pooling and an equal tuning budget, read from the cached runs.

The chapter "Is it the data?" asks whether APSE loses mAP8 to the N-pair floor because 451 training
images are too few. This module turns the run records of the experiments ``curve-fi``,
``curve-flickrldl``, ``curve-pooled`` and ``tuning`` (:mod:`apse.experiments.tables`) into the
chapter's figure and tables; nothing here trains.

Statistics, as everywhere in the book: runs of one held-out fold share their test images, so seeds
are averaged within a fold first; means and 95% intervals are over the 5 folds (Student t, 4
degrees of freedom). The folds' training sets overlap (each pair shares 3 of 5 folds), so the
intervals are narrower than independent data sets would give: read them as "how much the choice of
held-out images moves the number", not as a population interval.

* :func:`split_counts` -- images per emotion in every fold's train / val / test part.
* :func:`curve_frame` -- one row per run and query source: data set, row, fraction, training
  images, fold, seed, metrics.
* :func:`curve_summary` -- mean and 95% interval per (query source, training data, row, size).
* :func:`gap_summary` -- APSE + GEP minus N-pair, paired per fold, at each size.
* :func:`gap_trend` -- the gap's slope per doubling of the training images, fitted per fold.
* :func:`pooling_table` -- for each source, the pooled run minus the run on that source alone.
* :func:`plot_learning_curves` -- the chapter's figure.
* :func:`tuning_table` -- the equal tuning budget: each row's trial chosen on validation, tested.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import pandas as pd

from apse.data.pooled import dataset_label
from apse.experiments.regimes import DEFAULT_RESULTS
from apse.experiments.runner import load_records
from apse.experiments.stats import mean_std, paired_difference, unsigned_zero
from apse.experiments.tables import CURVE_DATA, get_experiment

__all__ = ["ROW_LABELS", "split_counts", "curve_frame", "curve_summary", "gap_summary", "gap_trend", "pooling_table",
           "plot_learning_curves", "tuning_table", "tuned_pairs", "headline", "t_interval", "regime_ends",
           "flickrldl_floor_differences", "flickrldl_floors"]

#: The curves' rows, as the chapter names them.
ROW_LABELS = {"npair": "N-pair, SO (floor)", "ep-so": "EP, SO", "apse-gep": "APSE + GEP"}


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its Student-t interval (NaN bounds for one)."""
    from scipy.stats import t

    values = [float(v) for v in values]
    mean, std = mean_std(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(t.ppf(0.5 + level / 2, len(values) - 1)) * std / math.sqrt(len(values))
    return mean, mean - half, mean + half


def curve_frame(results_dir: str | os.PathLike = DEFAULT_RESULTS, regime: str = "frozen") -> pd.DataFrame:
    """Every cached curve run of ``regime``, one row per (run, query source). A pooled run gives one
    row per source (its held-out images of that source against its training images of that
    source); ``n_train`` is the run's training images (both sources for a pooled run)."""
    rows = []
    for name, data in CURVE_DATA.items():
        for r in load_records(name, results_dir, seeds=None, regime=regime):
            row_name, _, _ = r["variant"].rpartition("-p")
            fraction = r["config"].get("train_fraction", 1.0)
            by_source = r.get("test_metrics_by_source") or {data: r["test_metrics"]}
            for source, metrics in by_source.items():
                rows.append({"experiment": name, "training data": dataset_label(data),
                             "queries": dataset_label(source), "pooled": "+" in data,
                             "row": row_name, "fraction": float(fraction),
                             "n_train": int(r["split"]["train"]), "fold": int(r["fold"]),
                             "seed": int(r["seed"]), **{m: metrics.get(m) for m in ("mAP8", "mAP2", "MAP@R")}})
    return pd.DataFrame(rows)


def split_counts(dataset, config, folds: int = 5) -> pd.DataFrame:
    """Images per emotion in the train / val / test part of every held-out fold of ``dataset`` under
    ``config``'s protocol (its ``split`` shares, ``train_fraction``): one row per (fold, part)."""
    from apse.emotions import EMOTIONS
    from apse.training_data import split_indices

    labels = [int(y) for _, y in dataset.samples]
    sources = getattr(dataset, "sources", None)
    rows = []
    for fold in range(folds):
        parts = split_indices(config.replace(folds=folds, fold=fold, protocol="split"), labels, sources)
        for part, idx in parts.items():
            counts = np.bincount([labels[i] for i in idx], minlength=len(EMOTIONS))
            rows.append({"fold": fold, "part": part, **dict(zip(EMOTIONS, counts.tolist())),
                         "images": int(counts.sum())})
    return pd.DataFrame(rows).set_index(["fold", "part"])


def _fold_means(frame: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """Seeds averaged within each fold: one value per (keys, fold)."""
    return frame.groupby(keys + ["fold"], as_index=False)[metric].mean()


def curve_summary(frame: pd.DataFrame, metrics: Sequence[str] = ("mAP8", "mAP2")) -> pd.DataFrame:
    """Mean and 95% interval over folds of each metric, per (queries, training data, row, fraction);
    ``n_train`` is the mean training-set size at that point, ``runs`` the runs (folds x seeds)."""
    keys = ["queries", "training data", "row", "fraction"]
    out = frame.groupby(keys).agg(n_train=("n_train", "mean"), runs=("fold", "size")).reset_index()
    for m in metrics:
        folds = _fold_means(frame.dropna(subset=[m]), keys, m)
        stats = folds.groupby(keys)[m].apply(lambda s: t_interval(list(s)))
        out = out.merge(pd.DataFrame({f"{m}": stats.map(lambda x: x[0]), f"{m} low": stats.map(lambda x: x[1]),
                                      f"{m} high": stats.map(lambda x: x[2])}).reset_index(), on=keys)
    return out


def _gaps(frame: pd.DataFrame, metric: str, a: str = "apse-gep", b: str = "npair") -> pd.DataFrame:
    """Per (queries, training data, fraction, fold): row a minus row b (seeds averaged in a fold)."""
    keys = ["queries", "training data", "fraction"]
    folds = _fold_means(frame.dropna(subset=[metric]), keys + ["row"], metric)
    wide = folds.pivot_table(index=keys + ["fold"], columns="row", values=metric).reset_index()
    wide = wide.dropna(subset=[a, b])
    wide["gap"] = wide[a] - wide[b]
    n = frame.groupby(keys)["n_train"].mean().rename("n_train").reset_index()
    return wide.merge(n, on=keys)[keys + ["fold", "n_train", "gap"]]


def gap_summary(frame: pd.DataFrame, metrics: Sequence[str] = ("mAP8", "mAP2")) -> pd.DataFrame:
    """APSE + GEP minus N-pair at each point of each curve: mean, 95% interval over folds, folds won."""
    parts = []
    for m in metrics:
        g = _gaps(frame, m)
        rows = []
        for key, grp in g.groupby(["queries", "training data", "fraction"]):
            mean, low, high = t_interval(grp["gap"])
            rows.append({"queries": key[0], "training data": key[1], "fraction": key[2],
                         "n_train": float(grp["n_train"].iloc[0]), "metric": m, "gap": mean, "low": low,
                         "high": high, "folds won": f"{int((grp['gap'] > 0).sum())} / {len(grp)}"})
        parts.append(pd.DataFrame(rows))
    return pd.concat(parts, ignore_index=True)


def regime_ends(results_dir: str | os.PathLike = DEFAULT_RESULTS,
                metrics: Sequence[str] = ("mAP8", "mAP2")) -> pd.DataFrame:
    """APSE + GEP minus N-pair at the curve points that ran fine-tuned (the smallest and the full
    size, each source alone), frozen and fine-tuned side by side: :func:`gap_summary` of each
    regime, restricted to the fractions of the fine-tuned runs."""
    tuned = curve_frame(results_dir, "finetune")
    if tuned.empty:
        return pd.DataFrame()
    frozen = curve_frame(results_dir)
    points = set(zip(tuned["training data"], tuned["fraction"]))
    frozen = frozen[[p in points for p in zip(frozen["training data"], frozen["fraction"])]]
    parts = [gap_summary(f, metrics).assign(regime=name)
             for name, f in (("frozen", frozen), ("fine-tuned", tuned)) if not f.empty]
    out = pd.concat(parts, ignore_index=True)
    out = out[out["queries"] == out["training data"]]
    return out.sort_values(["queries", "metric", "n_train", "regime"], ascending=[True, True, True, False])


def gap_trend(frame: pd.DataFrame, metric: str = "mAP8") -> pd.DataFrame:
    """How the APSE - N-pair gap moves with the data: per curve, a least-squares line of the gap
    against log2(training images) fitted *per fold* (the fold's points share their held-out images),
    then the slopes' mean and 95% interval over folds: the change of the gap per doubling of the
    training set, inside the sizes measured (an extrapolation to FI's 23,308 images it is not)."""
    g = _gaps(frame, metric)
    rows = []
    for (queries, data), grp in g.groupby(["queries", "training data"]):
        slopes = []
        for _, fold in grp.groupby("fold"):
            if fold["n_train"].nunique() >= 2:
                slopes.append(float(np.polyfit(np.log2(fold["n_train"]), fold["gap"], 1)[0]))
        mean, low, high = t_interval(slopes)
        rows.append({"queries": queries, "training data": data, "metric": metric,
                     "sizes": int(grp["n_train"].nunique()), "slope per doubling": mean, "low": low,
                     "high": high, "folds with a rising gap": f"{sum(s > 0 for s in slopes)} / {len(slopes)}"})
    return pd.DataFrame(rows)


def pooling_table(frame: pd.DataFrame, metrics: Sequence[str] = ("mAP8", "mAP2"),
                  fraction: float = 1.0, digits: int = 3) -> pd.DataFrame:
    """For each source and row: the pooled run minus the run on that source alone, at ``fraction``,
    paired per fold (same held-out images, same gallery: only the training data differs)."""
    at = frame[frame["fraction"] == fraction]
    rows = []
    for (queries, row), grp in at.groupby(["queries", "row"]):
        alone, pooled = grp[~grp["pooled"]], grp[grp["pooled"]]
        if alone.empty or pooled.empty:
            continue
        out = {"queries": queries, "row": ROW_LABELS.get(row, row)}
        for m in metrics:
            d = paired_difference(_by_run(pooled, m), _by_run(alone, m))
            out[f"{m}: pooled - alone"] = "—" if d is None else f"{d['mean']:+.{digits}f} ± {d['se']:.{digits}f}"
            out[f"{m}: pooled wins"] = "—" if d is None else f"{d['wins']} / {d['n_folds']}"
        rows.append(out)
    return pd.DataFrame(rows).set_index(["queries", "row"])


def _by_run(frame: pd.DataFrame, metric: str) -> dict[tuple[int, int], float]:
    return {(int(f), int(s)): float(v) for f, s, v in zip(frame["fold"], frame["seed"], frame[metric])}


def plot_learning_curves(frame: pd.DataFrame, *, metrics: Sequence[str] = ("mAP8", "mAP2")):
    """The chapter's figure: a column per query source; a row per metric (mean and 95% interval over
    folds against the number of training images, log axis; solid = trained on that source alone,
    dashed = pooled), and a last row with the APSE - N-pair gap of each metric."""
    import matplotlib.pyplot as plt

    summary, gaps = curve_summary(frame, metrics), gap_summary(frame, metrics)
    sources = list(dict.fromkeys(summary["queries"]))
    fig, axes = plt.subplots(len(metrics) + 1, len(sources), figsize=(4.2 * len(sources), 2.6 * (len(metrics) + 1)),
                             sharex="col", squeeze=False)
    colours = {"npair": "#2f6db5", "ep-so": "#2b9a8c", "apse-gep": "#d62f5b"}
    gap_colours = dict(zip(metrics, ("#d62f5b", "#f4a300")))
    for j, source in enumerate(sources):
        s = summary[summary["queries"] == source]
        for i, m in enumerate(metrics):
            ax = axes[i][j]
            for (data, row), grp in s.groupby(["training data", "row"]):
                grp = grp.sort_values("n_train")
                style = "--" if "+" in data else "-"
                ax.plot(grp["n_train"], grp[m], style, marker="o", ms=3, color=colours.get(row),
                        label=f"{ROW_LABELS.get(row, row)}{' (pooled)' if '+' in data else ''}")
                ax.fill_between(grp["n_train"], grp[f"{m} low"], grp[f"{m} high"], color=colours.get(row),
                                alpha=0.12, lw=0)
            ax.set_ylabel(m)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(f"{source} queries", fontsize=10)
        ax = axes[len(metrics)][j]
        g = gaps[gaps["queries"] == source]
        for (data, m), grp in g.groupby(["training data", "metric"]):
            grp = grp.sort_values("n_train")
            style = "--" if "+" in data else "-"
            ax.plot(grp["n_train"], grp["gap"], style, marker="o", ms=3, color=gap_colours[m],
                    label=f"{m}{' (pooled)' if '+' in data else ''}")
            ax.fill_between(grp["n_train"], grp["low"], grp["high"], color=gap_colours[m], alpha=0.12, lw=0)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylabel("APSE − N-pair")
        ax.set_xlabel("training images (log scale)")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    axes[len(metrics)][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def tuning_table(results_dir: str | os.PathLike = DEFAULT_RESULTS, select_on: str = "mAP8",
                 digits: int = 3) -> pd.DataFrame:
    """The equal tuning budget: for each row, its trial with the best *validation* ``select_on``
    (mean over the 5 folds' validation parts; the held-out folds are not read to choose), that
    trial's settings, and its held-out mAP8 and mAP2 beside those of the book's own setting
    (trial 1). A test of the chosen trial is the only held-out number that counts."""
    experiment = get_experiment("tuning")
    labels = {v.name: v for v in experiment.variants}
    records = load_records("tuning", results_dir, seeds=None)
    by_variant: dict[str, list[dict]] = {}
    for r in records:
        by_variant.setdefault(r["variant"], []).append(r)
    rows = []
    for base in dict.fromkeys(name.rsplit("-t", 1)[0] for name in labels):
        trials = {n: rs for n, rs in by_variant.items() if n.rsplit("-t", 1)[0] == base}
        if not trials:
            continue
        val = {n: float(np.mean([r["val_metrics"][select_on] for r in rs])) for n, rs in trials.items()}
        chosen = max(val, key=val.get)
        default = f"{base}-t01"

        def test(name: str, metric: str) -> str:
            values = [r["test_metrics"][metric] for r in trials.get(name, [])]
            if not values:
                return "—"
            mean, std = mean_std(values)
            return f"{mean:.{digits}f} ± {std:.{digits}f}"

        overrides = labels[chosen].overrides
        settings = ", ".join(f"{k} {overrides.get(k) if overrides.get(k) is not None else 'adaptive'}"
                             for k in ("lr", "weight_decay", "lam", "beta") if k in overrides) or "the book's"
        rows.append({"row": ROW_LABELS.get(base, base), "trials": len(trials),
                     "chosen trial": int(labels[chosen].param), "its settings": settings,
                     f"val {select_on}": f"{val[chosen]:.{digits}f}",
                     "mAP8 (chosen)": test(chosen, "mAP8"), "mAP2 (chosen)": test(chosen, "mAP2"),
                     "mAP8 (book's)": test(default, "mAP8"), "mAP2 (book's)": test(default, "mAP2"),
                     "_chosen": chosen})
    return pd.DataFrame(rows).set_index("row")


def tuned_pairs(table: pd.DataFrame, results_dir: str | os.PathLike = DEFAULT_RESULTS,
                metrics: Sequence[str] = ("mAP8", "mAP2"), digits: int = 3) -> pd.DataFrame:
    """Each tuned row minus the tuned N-pair floor, paired per fold (mean ± SE, folds won)."""
    records = load_records("tuning", results_dir, seeds=None)
    values = {}
    for r in records:
        for m in metrics:
            values.setdefault((r["variant"], m), {})[(int(r["fold"]), int(r["seed"]))] = r["test_metrics"][m]
    floor = table["_chosen"].iloc[0]
    rows = []
    for label, chosen in table["_chosen"].iloc[1:].items():
        row = {"a": f"{label} (tuned)", "b": f"{table.index[0]} (tuned)"}
        for m in metrics:
            d = paired_difference(values[(chosen, m)], values[(floor, m)])
            row[f"{m}: a - b"] = "—" if d is None else f"{d['mean']:+.{digits}f} ± {d['se']:.{digits}f}"
            row[f"{m}: a wins"] = "—" if d is None else f"{d['wins']} / {d['n_folds']}"
        rows.append(row)
    return pd.DataFrame(rows).set_index(["a", "b"])


def _trend_word(low: float, high: float) -> str:
    """How the APSE - N-pair gap moves with more data, from its slope's 95% interval."""
    if low > 0:
        return "moves towards APSE"
    if high < 0:
        return "moves away from APSE"
    return "does not move measurably"


def flickrldl_floor_differences(results_dir: str | os.PathLike = DEFAULT_RESULTS) -> dict[str, dict[str, dict]]:
    """The second linear floor on FlickrLDL's key rows, per regime that ran both heads, as numbers
    (:func:`apse.experiments.pages.pair_differences`, mAP8 and mAP2): softmax minus N-pair
    (``fl_softmax_{regime}``) and APSE + GEP minus softmax (``fl_gep_softmax_{regime}``). A regime
    without both runs is left out."""
    from apse.experiments.pages import pair_differences

    out: dict[str, dict[str, dict]] = {}
    for regime in ("frozen", "finetune"):
        pairs = {f"fl_softmax_{regime}": (("softmax", regime), ("npair", regime)),
                 f"fl_gep_softmax_{regime}": (("apse-gep", regime), ("softmax", regime))}
        try:
            out.update(pair_differences("flickrldl", pairs, results_dir=results_dir))
        except (ValueError, KeyError, FileNotFoundError):
            continue  # this regime lacks one of the rows
    return out


def flickrldl_floors(results_dir: str | os.PathLike = DEFAULT_RESULTS) -> dict[str, str]:
    """:func:`flickrldl_floor_differences` as text for the chapter's glue and the README
    (``fl_softmax_{regime}_{metric}`` and ``..._won``: mean ± standard error over the folds, "k of
    n" folds where the first row is better)."""
    from apse.experiments.pages import pair_text

    return pair_text(flickrldl_floor_differences(results_dir))


def headline(frame: pd.DataFrame, tuned: pd.DataFrame | None = None,
             results_dir: str | os.PathLike = DEFAULT_RESULTS) -> dict[str, str]:
    """The numbers the chapter's conclusion quotes, as text (for myst-nb's ``glue``), with every
    word that depends on a number chosen from it: per source alone, the mAP8 gap APSE + GEP minus
    N-pair at the smallest and the full size, its slope per doubling and interval, the trend word;
    the pooled gap for each source's queries; tuned APSE minus tuned N-pair (when ``tuned``)."""
    facts: dict[str, str] = {}
    gaps = gap_summary(frame, ("mAP8",))
    trend = gap_trend(frame, "mAP8")
    for key, source in (("fi", "FI subset"), ("fl", "FlickrLDL (861-image part)")):
        alone = gaps[(gaps["queries"] == source) & (gaps["training data"] == source)].sort_values("n_train")
        if alone.empty:
            continue
        small, full = alone.iloc[0], alone.iloc[-1]
        facts[f"{key}_n_small"], facts[f"{key}_n_full"] = f"{small.n_train:.0f}", f"{full.n_train:.0f}"
        facts[f"{key}_gap_small"], facts[f"{key}_gap_full"] = f"{small.gap:+.3f}", f"{full.gap:+.3f}"
        facts[f"{key}_won_full"] = full["folds won"]
        t = trend[(trend["queries"] == source) & (trend["training data"] == source)].iloc[0]
        facts[f"{key}_slope"] = f"{t['slope per doubling']:+.3f}"
        facts[f"{key}_slope_ci"] = f"{t['low']:+.3f} to {t['high']:+.3f}"
        facts[f"{key}_trend"] = _trend_word(t["low"], t["high"])
        pooled = gaps[(gaps["queries"] == source) & (gaps["training data"].str.contains(r"\+"))]
        if not pooled.empty:
            top = pooled.sort_values("n_train").iloc[-1]
            facts[f"{key}_pooled_n"], facts[f"{key}_pooled_gap"] = f"{top.n_train:.0f}", f"{top.gap:+.3f}"
            facts[f"{key}_pooled_won"] = top["folds won"]
    if tuned is not None and len(tuned) > 1:
        pairs = tuned_pairs(tuned, results_dir, ("mAP8", "mAP2"))
        last = pairs.iloc[-1]
        facts["tuned_gap"], facts["tuned_won"] = last["mAP8: a - b"].split(" ")[0], last["mAP8: a wins"]
        facts["tuned_gap2"], facts["tuned_won2"] = last["mAP2: a - b"].split(" ")[0], last["mAP2: a wins"]
    # a value that rounds to zero has no sign
    return {k: unsigned_zero(v) for k, v in facts.items()}


#: The README's block for this chapter's evidence (written by ``python -m apse.experiments.findings``).
README_BEGIN, README_END = "<!-- scale:begin -->", "<!-- scale:end -->"


def readme_markdown(results_dir: str | os.PathLike = DEFAULT_RESULTS) -> str:
    """The README's paragraph on data scale, from the same records and words as the chapter."""
    import textwrap

    frame = curve_frame(results_dir)
    if frame.empty:
        return "No learning-curve runs in results/ yet (python -m apse.experiments curve-fi ...).\n"
    try:
        tuned = tuning_table(results_dir)
    except (KeyError, ValueError):
        tuned = None
    f = headline(frame, tuned if tuned is not None and len(tuned) else None, results_dir)
    parts = [f"**Is it the data?** (chapter 13c, 5 folds; frozen unless said.) On the FI subset alone the "
             f"mAP8 gap APSE + GEP minus N-pair is {f['fi_gap_small']} at {f['fi_n_small']} training "
             f"images and {f['fi_gap_full']} at {f['fi_n_full']} ({f['fi_won_full']} folds won); per "
             f"doubling of the training set it {f['fi_trend']} ({f['fi_slope']}, 95% interval "
             f"{f['fi_slope_ci']})."]
    if "fl_gap_full" in f:
        parts.append(f"On FlickrLDL (861-image part) alone it is {f['fl_gap_small']} at {f['fl_n_small']} "
                     f"and {f['fl_gap_full']} at {f['fl_n_full']} ({f['fl_won_full']}); it "
                     f"{f['fl_trend']} ({f['fl_slope']} per doubling, {f['fl_slope_ci']}).")
    if "fi_pooled_gap" in f:
        parts.append(f"Pooled ({f['fi_pooled_n']} training images), it is {f['fi_pooled_gap']} for FI "
                     f"queries ({f['fi_pooled_won']})"
                     + (f" and {f['fl_pooled_gap']} for FlickrLDL queries ({f['fl_pooled_won']})."
                        if "fl_pooled_gap" in f else "."))
    if "tuned_gap" in f:
        parts.append(f"With an equal tuning budget (12 trials each, chosen on validation), tuned APSE + GEP "
                     f"minus tuned N-pair is {f['tuned_gap']} mAP8 ({f['tuned_won']} folds) and "
                     f"{f['tuned_gap2']} mAP2 ({f['tuned_won2']}).")
    floors = flickrldl_floors(results_dir)
    if floors:
        said = {"frozen": "frozen", "finetune": "fine-tuned"}
        regimes = [r for r in ("frozen", "finetune") if f"fl_softmax_{r}_mAP8" in floors]
        parts.append("On FlickrLDL's key rows the second linear floor, softmax, minus N-pair is "
                     + " and ".join(f"{floors[f'fl_softmax_{r}_mAP8']} mAP8 {said[r]} "
                                    f"({floors[f'fl_softmax_{r}_mAP8_won']} folds)" for r in regimes)
                     + "; APSE + GEP minus softmax is "
                     + " and ".join(f"{floors[f'fl_gep_softmax_{r}_mAP8']} mAP8 {said[r]} "
                                    f"({floors[f'fl_gep_softmax_{r}_mAP8_won']})" for r in regimes)
                     + ".")
    ends = regime_ends(results_dir)
    if len(ends):
        ft = ends[(ends.regime == "fine-tuned") & (ends.metric == "mAP8")].sort_values("n_train")
        points = "; ".join(f"{src.split(' (')[0]} {', '.join(f'{g:+.3f} at {n:.0f}' for g, n in zip(p.gap, p.n_train))}"
                           for src, p in ft.groupby("queries"))
        parts.append(f"Fine-tuned end to end at both ends of the single-source curves (seed 0), the mAP8 "
                     f"gap is {points}.")
    return textwrap.fill(unsigned_zero(" ".join(parts)), width=105) + "\n"
