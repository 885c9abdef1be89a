"""Tables of cached experiment runs as pandas DataFrames, for chapter 13 and the README; nothing here trains.

The runner (:mod:`apse.experiments.runner`) trains and caches runs and writes each experiment's
summary; this module reads the same run records back and answers what a reader asks of them.

* :func:`load_summary` -- an experiment's summary rebuilt from its run records (what summary.md and
  summary.csv say): :attr:`Summary.frame` (the rows as a DataFrame), :attr:`Summary.settings`,
  :attr:`Summary.notes`; :func:`summary_frame` for the frame alone.
* :func:`paper_comparison` -- a summary frame's rows beside the paper's, one line each.
* :func:`agreement` / :func:`agreement_table` -- how many pairs of variants are ordered as in the
  paper (:func:`apse.experiments.ordering_report`), over the distinct runs.
* :func:`by_fold` -- ``{variant: {(fold, seed): value}}`` of one metric, from the records.
* :func:`regime_table` -- mean ± std per variant and regime, side by side, with readable labels.
* :func:`paired_table` -- paired differences (mean, standard error over folds, folds won) of chosen
  pairs of (variant, regime), the statistic that decides whether a difference is real
  (:func:`apse.experiments.paired_difference`).
* :func:`heads_table` -- what the attention heads learned (accuracy and mean top confidence on the
  held-out images), per variant and regime.
* :func:`validation_sweep` -- a hyper-parameter sweep's validation curves (one results folder per
  setting), the only numbers a choice of setting may use.
* :func:`markdown_table` -- the first table of a markdown file as a DataFrame.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from apse.experiments.regimes import DEFAULT_BASE, DEFAULT_RESULTS, regime_dir, split_regime_dir
from apse.experiments.runner import load_records
from apse.experiments.specs import experiment_specs
from apse.experiments.stats import metric_difference, ordering_report
from apse.experiments.summary import (OURS_LABEL, floor_line, note_lines, settings_lines, summarise_experiment,
                                      summary_table, table_info)
from apse.experiments.tables import K_FOLDS, Experiment, get_experiment
from apse.io import read_json
from apse.metrics import metric_names
from apse.paper_results import PAPER_LABEL, PAPER_METRICS

__all__ = ["Summary", "load_summary", "summary_frame", "paper_comparison", "agreement", "agreement_table",
           "last_command", "REGIME_LABELS", "by_fold", "regime_table", "paired_table", "heads_table",
           "validation_sweep", "markdown_table"]


@dataclass(frozen=True)
class Summary:
    """An experiment's summary in one regime, rebuilt from its cached run records: the rows of
    :func:`~apse.experiments.summarise_experiment`, the settings (``info``) and the records."""

    experiment: Experiment
    regime: str
    rows: list
    info: dict
    records: list

    @property
    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame with the columns of summary.csv (full precision)."""
        return summary_table(self.experiment, self.rows, self.info)

    @property
    def settings(self) -> list[str]:
        """summary.md's lines on how the runs were made (dataset, backbone, folds, ..., command)."""
        return settings_lines(self.info)

    @property
    def notes(self) -> list[str]:
        """summary.md's lines below the table: the Floor line, then the notes on rows."""
        floor = floor_line(self.rows, self.info)
        return ([floor] if floor else []) + note_lines(self.rows)

    def distinct_rows(self) -> list[dict]:
        """The rows, less those whose runs repeat an earlier row's (the run cache shares identical
        runs, e.g. "AT + N-pair, SO (= N-pair, SO)"), so that no run is counted twice."""
        keys: dict[str, set] = {}
        for r in self.records:
            keys.setdefault(r["variant"], set()).add(r["key"])
        out, seen = [], set()
        for row in self.rows:
            runs = frozenset(keys.get(row["variant"], ()))
            if runs not in seen:
                seen.add(runs)
                out.append(row)
        return out


def load_summary(name: str, regime: str | None = None, *, results_dir: str | os.PathLike = DEFAULT_RESULTS,
                 base: str | os.PathLike = DEFAULT_BASE) -> Summary:
    """The summary of experiment ``name`` in ``regime`` from its cached runs, as the runner wrote it
    after its last invocation: the variants, folds and seeds that have runs (an invocation with
    ``--only`` lists just those), the times and commands of its ``meta.json``. ``regime`` None: ``name``
    is a results folder (``"core-finetune"``: experiment core, regime finetune)."""
    if regime is None:
        name, regime = split_regime_dir(name)
    results_dir = Path(results_dir)
    records = load_records(name, results_dir, regime=regime, base=base)
    present = {r["variant"] for r in records}
    experiment = get_experiment(name)
    experiment = dataclasses.replace(experiment, variants=tuple(v for v in experiment.variants if v.name in present))
    seeds = sorted({int(r["seed"]) for r in records}) or [0]
    folds = max((int(r["fold"]) for r in records), default=0) + 1
    ran = {(r["variant"], int(r["fold"]), int(r["seed"])) for r in records}
    specs = [s for s in experiment_specs(experiment, base=base, regime=regime, folds=folds, seeds=seeds)
             if (s.variant.name, s.fold, s.seed) in ran] if records else []
    meta = read_json(results_dir / regime_dir(name, regime) / "meta.json") or {}
    info = table_info(experiment, specs, seeds, folds, K_FOLDS, meta, records)
    return Summary(experiment, regime, summarise_experiment(experiment, records), info, records)


def summary_frame(name: str, regime: str | None = None, *,
                  results_dir: str | os.PathLike = DEFAULT_RESULTS) -> pd.DataFrame:
    """:attr:`Summary.frame` of :func:`load_summary`: one line per variant, the columns of summary.csv."""
    return load_summary(name, regime, results_dir=results_dir).frame


def paper_comparison(frame: pd.DataFrame, metrics: Sequence[str] | None = None, digits: int = 3) -> pd.DataFrame:
    """Per variant of a summary frame, one line "ours (FI subset), n runs" (mean ± std over the runs)
    and, where it has a paper row, one line "paper (FI, ResNet-50)"; indexed by (variant, source).
    ``metrics``: default, ours that the papers print (all but F1), in our order."""
    if metrics is None:
        metrics = tuple(m for m in metric_names() if m in PAPER_METRICS)
    lines = []
    for _, r in frame.iterrows():
        lines.append({"variant": r["label"], "source": f"{OURS_LABEL}, {int(r['n_runs'])} runs",
                      **{m: (f"{r[f'{m}_mean']:.{digits}f} ± {r[f'{m}_std']:.{digits}f}"
                             if pd.notna(r.get(f"{m}_mean")) else "—") for m in metrics}})
        if pd.notna(r.get("paper_method")) and str(r.get("paper_method")):
            lines.append({"variant": "", "source": PAPER_LABEL,
                          **{m: f"{r[f'paper_{m}']:.{digits}f}" if pd.notna(r.get(f"paper_{m}")) else "—"
                             for m in metrics}})
    return pd.DataFrame(lines).set_index(["variant", "source"])


def agreement(name: str | Summary, metric: str = "mAP8", *,
              results_dir: str | os.PathLike = DEFAULT_RESULTS) -> dict[str, Any]:
    """How our ordering of an experiment's distinct runs (``name``: a results folder, or a loaded
    summary) on ``metric`` agrees with the paper's: the pairs of variants ordered as in the paper,
    those reversed, and those reversed by more than the two rows' stds added."""
    summary = name if isinstance(name, Summary) else load_summary(name, results_dir=results_dir)
    rep = ordering_report(summary.distinct_rows(), metric)
    return {"experiment": name if isinstance(name, str) else regime_dir(summary.experiment.name, summary.regime),
            "metric": metric, "variants": rep["n"], "pairs ordered as in the paper": rep["agree"],
            "pairs reversed": len(rep["swapped"]), "reversed beyond ± std": len(rep["swapped_beyond_std"])}


def agreement_table(names: Sequence[str], metrics: Sequence[str] = ("mAP8", "mAP2"), *, min_variants: int = 3,
                    results_dir: str | os.PathLike = DEFAULT_RESULTS) -> pd.DataFrame:
    """:func:`agreement` of each results folder in ``names`` on each metric, one row each, leaving out
    those with fewer than ``min_variants`` variants beside a paper row (no ordering to compare)."""
    rows = []
    for name in names:
        summary = load_summary(name, results_dir=results_dir)
        rows += [{**agreement(summary, m), "experiment": name} for m in metrics]
    return pd.DataFrame([r for r in rows if r["variants"] >= min_variants])


def last_command(folder: str, results_dir: str | os.PathLike = DEFAULT_RESULTS) -> str | None:
    """The command of the last invocation that ran the experiment in ``results/<folder>`` (its meta.json)."""
    meta = read_json(Path(results_dir) / folder / "meta.json") or {}
    commands = [inv.get("command") for inv in meta.get("invocations", []) if inv.get("command")]
    return commands[-1] if commands else None


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
            d = metric_difference(a, b, m)
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
    first column: the header row, the ``|---|`` separator, then the rows up to the first other line.
    (The runner's own reports are DataFrames at the source: :func:`apse.experiments.attention_table`,
    :func:`apse.experiments.lr_table`; this reads any other.)"""
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
