"""Tables of cached experiment runs as pandas DataFrames (for chapter 13 and the README).

The runner (:mod:`apse.experiments`) trains and caches runs and writes each experiment's markdown
summary; this module reads the same run records back and answers the comparisons a reader asks: one
variant in two training regimes, one variant against another, fold by fold. Nothing here trains.

* :func:`by_fold` -- ``{variant: {(fold, seed): value}}`` of one metric, from the records.
* :func:`regime_table` -- mean ± std per variant and regime, side by side, with readable labels.
* :func:`paired_table` -- paired differences (mean, standard error over folds, folds won) of chosen
  pairs of (variant, regime), the statistic that decides whether a difference is real
  (:func:`apse.experiments.paired_difference`).
* :func:`heads_table` -- what the attention heads learned (accuracy and mean top confidence on the
  held-out images), per variant and regime.
* :func:`validation_sweep` -- a hyper-parameter sweep's validation curves (one results folder per
  setting), the only numbers a choice of setting may use.
* :func:`markdown_table` -- the table of a report the runner wrote as markdown (``lr.md``,
  ``attention.md``), as a DataFrame, for a notebook to show (a stopgap until those reports are
  DataFrames themselves).
"""
from __future__ import annotations

import os
import json
from pathlib import Path
from typing import Sequence

import pandas as pd

from apse.experiments import (DEFAULT_RESULTS, get_experiment, load_records, paired_difference,
                              LOWER_IS_BETTER)

__all__ = ["REGIME_LABELS", "by_fold", "regime_table", "paired_table", "heads_table", "validation_sweep",
           "markdown_table"]

#: How a table names each training regime.
REGIME_LABELS = {"frozen": "frozen, 224 px", "probe": "frozen, 160 px (the probe)",
                 "finetune": "fine-tuned, 160 px"}


def _metrics_by_fold(name: str, regime: str, results_dir: str | os.PathLike,
                     split: str = "test") -> dict[str, dict]:
    """``{variant: {(fold, seed): metrics dict}}`` of the cached runs of ``name`` in ``regime``: the
    records read once, for every metric a table needs."""
    field = "test_metrics" if split == "test" else "val_metrics"
    out: dict[str, dict] = {}
    for r in load_records(name, results_dir, regime=regime):
        out.setdefault(r["variant"], {})[(int(r["fold"]), int(r["seed"]))] = r.get(field) or {}
    return out


def _select(runs: dict[str, dict], metric: str) -> dict[str, dict]:
    """One metric of :func:`_metrics_by_fold`'s runs, leaving out runs without it."""
    out: dict[str, dict] = {}
    for variant, by_key in runs.items():
        for key, metrics in by_key.items():
            if metrics.get(metric) is not None:
                out.setdefault(variant, {})[key] = float(metrics[metric])
    return out


def by_fold(name: str, regime: str = "frozen", metric: str = "mAP8", *,
            results_dir: str | os.PathLike = DEFAULT_RESULTS, split: str = "test") -> dict[str, dict]:
    """``{variant: {(fold, seed): value}}`` of ``metric`` over the cached runs of experiment ``name``
    in ``regime`` (``split="val"``: the validation score at the chosen epoch instead)."""
    return _select(_metrics_by_fold(name, regime, results_dir, split), metric)


def _labels(name: str) -> dict[str, str]:
    return {v.name: v.label for v in get_experiment(name).variants}


#: Joins a mean and its spread: non-breaking spaces, so that a narrow table column never wraps a
#: number away from its ± (the rendered book's tables are narrow).
PM = "\u00a0±\u00a0"


def _mean_std_text(values: Sequence[float], digits: int) -> str:
    s = pd.Series(list(values), dtype=float)
    if len(s) == 0:
        return "—"
    if len(s) == 1:
        return f"{s.iloc[0]:.{digits}f} (1 run)"
    return f"{s.mean():.{digits}f}{PM}{s.std(ddof=1):.{digits}f}"


def regime_table(name: str, regimes: Sequence[str] = ("frozen", "finetune"),
                 metrics: Sequence[str] = ("mAP8", "mAP2"), *, variants: Sequence[str] | None = None,
                 results_dir: str | os.PathLike = DEFAULT_RESULTS, digits: int = 3,
                 runs: bool = True, long: bool = False) -> pd.DataFrame:
    """One row per variant of experiment ``name`` (readable label), a column per (regime, metric):
    mean ± sample std over its cached runs (held-out folds x seeds), and (``runs``) run counts.
    ``long``: one row per (variant, regime) instead and a column per metric, which fits a narrow
    page; variants with no run in any of the regimes are left out."""
    labels = _labels(name)
    loaded = {r: _metrics_by_fold(name, r, results_dir) for r in regimes}
    data = {(r, m): _select(loaded[r], m) for r in regimes for m in metrics}
    names = list(variants) if variants is not None else list(labels)
    rows = []
    for v in names:
        row = {"variant": labels.get(v, v)}
        for r in regimes:
            for m in metrics:
                row[(REGIME_LABELS.get(r, r), m)] = _mean_std_text(data[(r, m)].get(v, {}).values(), digits)
            if runs:
                row[(REGIME_LABELS.get(r, r), "runs")] = len(data[(r, metrics[0])].get(v, {}))
        rows.append(row)
    df = pd.DataFrame(rows).set_index("variant")
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    if not long:
        return df
    out = []
    for variant, row in df.iterrows():
        for r in regimes:
            label = REGIME_LABELS.get(r, r)
            cells = {m: row[(label, m)] for m in metrics}
            if all(v == "—" for v in cells.values()):
                continue
            out.append({"variant": variant, "regime": label, **cells,
                        **({"runs": row[(label, "runs")]} if runs else {})})
    return pd.DataFrame(out).set_index(["variant", "regime"])


def paired_table(name: str, pairs: Sequence[tuple[tuple[str, str], tuple[str, str]]],
                 metrics: Sequence[str] = ("mAP8", "mAP2"), *,
                 results_dir: str | os.PathLike = DEFAULT_RESULTS, digits: int = 3,
                 other: str | None = None) -> pd.DataFrame:
    """Paired differences ``a - b`` for each pair ``((variant_a, regime_a), (variant_b, regime_b))`` of
    experiment ``name`` (``b`` may come from experiment ``other``, e.g. a floor): per metric the mean
    difference ± its standard error over folds and "folds won / folds" (for ANMRR, lower is better,
    so a win is a negative difference). Pairs with fewer than two common folds show "—"."""
    labels = {**(_labels(other) if other else {}), **_labels(name)}
    loaded: dict[tuple[str, str], dict] = {}  # (experiment, regime) -> its runs, read once

    def values(exp: str, variant: str, regime: str, metric: str) -> dict:
        if (exp, regime) not in loaded:
            loaded[exp, regime] = _metrics_by_fold(exp, regime, results_dir)
        return _select({variant: loaded[exp, regime].get(variant, {})}, metric).get(variant, {})

    rows = []
    for (va, ra), (vb, rb) in pairs:
        row = {"a": f"{labels.get(va, va)} ({REGIME_LABELS.get(ra, ra)})",
               "b": f"{labels.get(vb, vb)} ({REGIME_LABELS.get(rb, rb)})"}
        for m in metrics:
            a = values(name, va, ra, m)
            b = values(other or name, vb, rb, m)
            if m in LOWER_IS_BETTER:  # a win is a lower value: compare b - a, report a - b
                d = paired_difference(b, a)
                d = d and {**d, "mean": -d["mean"]}
            else:
                d = paired_difference(a, b)
            row[f"{m}: a - b"] = "—" if d is None else f"{d['mean']:+.{digits}f}{PM}{d['se']:.{digits}f}"
            row[f"{m}: a wins"] = "—" if d is None else f"{d['wins']} / {d['n_folds']}"
        rows.append(row)
    return pd.DataFrame(rows).set_index(["a", "b"])


#: The columns of :func:`heads_table`: (record field, readable name).
HEAD_FIELDS = (("polarity_accuracy", "polarity head: accuracy"),
               ("polarity_top_confidence", "polarity head: top confidence (uniform 0.5)"),
               ("emotion_accuracy", "emotion head: accuracy"),
               ("emotion_top_confidence", "emotion head: top confidence (uniform 0.125)"))


def heads_table(pairs: Sequence[tuple[str, str, str]], *, results_dir: str | os.PathLike = DEFAULT_RESULTS,
                part: str = "test", digits: int = 3) -> pd.DataFrame:
    """For each ``(experiment, variant, regime)``: the means over its runs that recorded the heads
    (``attention_heads``, on the held-out images by default) of the polarity and emotion heads'
    accuracy and mean top softmax confidence. A top confidence at 1/K means the head's output is
    uniform, and then WEP's weights and GEP's adaptive beta are constants."""
    rows = []
    for name, variant, regime in pairs:
        recs = [r for r in load_records(name, results_dir, regime=regime)
                if r["variant"] == variant and (r.get("attention_heads") or {}).get(part)]
        row = {"variant": _labels(name).get(variant, variant), "regime": REGIME_LABELS.get(regime, regime),
               "runs": len(recs)}
        for key, label in HEAD_FIELDS:
            vals = [r["attention_heads"][part][key] for r in recs if r["attention_heads"][part].get(key) is not None]
            row[label] = round(sum(vals) / len(vals), digits) if vals else None
        rows.append(row)
    return pd.DataFrame(rows).set_index(["variant", "regime"])


def validation_sweep(folder: str | os.PathLike, *, metric_digits: int = 3) -> pd.DataFrame:
    """The runs of a sweep: ``folder/<setting>/<experiment folder>/runs/*.json``, one row per run with
    its setting, variant, fold, the probe's validation score (fine-tuning regime), the validation
    curve of the end-to-end epochs and the best of it. Held-out metrics are deliberately left out."""
    rows = []
    for path in sorted(Path(folder).glob("*/*/runs/*.json")):
        r = json.loads(path.read_text())
        curve = [v for v in (r.get("val_curve") or []) if v is not None]
        rows.append({"setting": path.parts[-4], "variant": r.get("label") or r["variant"],
                     "fold": int(r["fold"]),
                     "probe val": r.get("probe_val"),
                     "val per epoch": " ".join(f"{v:.{metric_digits}f}" for v in curve),
                     "best val": round(max(curve), metric_digits) if curve else None,
                     "chosen epoch": r.get("chosen_epoch")})
    if not rows:
        return pd.DataFrame(columns=["setting", "variant", "fold", "probe val", "val per epoch", "best val",
                                     "chosen epoch"]).set_index(["setting", "variant", "fold"])
    return pd.DataFrame(rows).set_index(["setting", "variant", "fold"]).sort_index()


def markdown_table(source: str | os.PathLike) -> pd.DataFrame:
    """The first pipe table of a markdown file (or text) as a DataFrame of strings, indexed by its
    first column: the header row, the ``|---|`` separator, then the rows up to the first other line."""
    is_text = isinstance(source, str) and ("\n" in source or source.lstrip().startswith("|"))
    text = source if is_text else Path(source).read_text()
    rows, started = [], False
    for line in text.splitlines():
        if line.startswith("|"):
            started = True
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):  # the separator row
                rows.append(cells)
        elif started:
            break
    if not rows:
        raise ValueError(f"no markdown table in {source if len(str(source)) < 200 else 'the text'}")
    header, body = rows[0], rows[1:]
    return pd.DataFrame(body, columns=header).set_index(header[0])
