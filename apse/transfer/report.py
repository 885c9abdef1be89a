"""The Twitter I results read back: run records, summaries (CSV, Markdown, DataFrames), paired differences.

:func:`write_summary` turns the run records into ``summary.csv`` (machine-readable),
``summary.md`` (for people) and ``retrievals.json`` (the figure's entries,
:mod:`apse.transfer.figure`); the readers below serve the book's chapter 15.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from apse.io import read_json, write_json
from apse.metrics import LOWER_IS_BETTER, POLARITY_METRIC_NAMES
from apse.transfer.finetune import FineTune
from apse.transfer.rows import (ACCURACY_LABELS, DEFAULT_RESULTS, FIGURE_ROWS, POLARITY_NOTE,
                                ROW_NAMES, ROWS, RUNNER_VERSION)

__all__ = ["load_runs", "summarise_runs", "write_summary", "summary_table", "load_meta",
           "paired_difference", "load_retrievals"]


def load_runs(results_dir: str | os.PathLike = DEFAULT_RESULTS, *,
              settings: FineTune | None = FineTune()) -> list[dict]:
    """The run records in ``results_dir/runs`` of the current rows; trained rows only with the
    fine-tuning `settings` (default: :class:`FineTune`'s; None: any)."""
    folder = Path(results_dir) / "runs"
    records = [r for r in map(read_json, sorted(folder.glob("*.json"))) if r is not None]
    wanted = asdict(settings) if settings is not None else None
    trained = {r.name for r in ROWS if r.trained}
    return [r for r in records
            if r.get("row") in ROW_NAMES and r.get("runner_version") == RUNNER_VERSION
            and (r["row"] not in trained or wanted is None or r.get("fine_tune") == wanted)]


def _stats(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


def summarise_runs(records: Sequence[dict]) -> list[dict]:
    """One row per (subset, row), in :data:`ROWS` order: mean and std over folds of every metric and
    accuracy, the folds, the chosen epochs."""
    out = []
    subsets = sorted({r["subset"] for r in records}, key=lambda s: (s != "5", s))
    for subset in subsets:
        for row in ROWS:
            runs = sorted((r for r in records if r["subset"] == subset and r["row"] == row.name),
                          key=lambda r: r["fold"])
            if not runs:
                continue
            item: dict[str, Any] = {"subset": subset, "subset_label": runs[0]["subset_label"],
                                    "row": row.name, "label": row.label, "group": row.group,
                                    "folds": [r["fold"] for r in runs], "mean": {}, "std": {},
                                    "chosen_epochs": [r.get("chosen_epoch") for r in runs]}
            for m in POLARITY_METRIC_NAMES:
                item["mean"][m], item["std"][m] = _stats([r["metrics"][m] for r in runs])
            for a in sorted({k for r in runs for k in r.get("accuracy", {})}):
                vals = [r["accuracy"][a] for r in runs if a in r.get("accuracy", {})]
                item["mean"][f"acc:{a}"], item["std"][f"acc:{a}"] = _stats(vals)
            out.append(item)
    return out


def write_summary(results_dir: str | os.PathLike, records: Sequence[dict]) -> None:
    """``summary.csv`` (machine-readable), ``summary.md`` (for people) and ``retrievals.json``."""
    results_dir = Path(results_dir)
    rows = summarise_runs(records)
    results_dir.mkdir(parents=True, exist_ok=True)
    acc_keys = sorted({k for r in rows for k in r["mean"] if k.startswith("acc:")})
    columns = (*POLARITY_METRIC_NAMES, *acc_keys)
    with open(results_dir / "summary.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["subset", "subset_label", "row", "label", "group", "folds"]
                   + [f"{m}_{s}" for m in columns for s in ("mean", "std")])
        for r in rows:
            w.writerow([r["subset"], r["subset_label"], r["row"], r["label"], r["group"],
                        " ".join(map(str, r["folds"]))]
                       + [f"{r[s][m]:.6f}" if m in r[s] else "" for m in columns
                          for s in ("mean", "std")])
    lines = ["# Beyond FI: polarity retrieval on Twitter I", "",
             f"- Metrics at the {POLARITY_NOTE}.",
             "- Protocol: 5 stratified folds; for each held-out fold, every held-out image queries "
             "the other held-out images (leave-one-out); mean ± std over the folds. Trained rows "
             "train the head on the other 4 folds (frozen ImageNet EfficientNet-Lite0, cached "
             "224 px features), the epoch chosen on 10 % of them.",
             "- Labels: results on this folder are \"Twitter I (1,093-image subset)\" and "
             "\"Twitter I-5 (706-image subset)\"; they are not the literature's Twitter I numbers.",
             "- Produced by `python -m apse.transfer twitter1` (apse/transfer/twitter1.py).", ""]
    for subset in sorted({r["subset"] for r in rows}, key=lambda s: (s != "5", s)):
        part = [r for r in rows if r["subset"] == subset]
        lines += [f"## {part[0]['subset_label']}, polarity level", "",
                  "| row | " + " | ".join(POLARITY_METRIC_NAMES) + " | accuracy |",
                  "|---|" + "---|" * (len(POLARITY_METRIC_NAMES) + 1)]
        for r in part:
            accs = ", ".join(f"{k[4:]} {r['mean'][k]:.3f}" for k in r["mean"]
                             if k.startswith("acc:"))
            lines.append(f"| {r['label']} | " + " | ".join(
                f"{r['mean'][m]:.3f} ± {r['std'][m]:.3f}" for m in POLARITY_METRIC_NAMES)
                + f" | {accs or '—'} |")
        lines.append("")
    (results_dir / "summary.md").write_text("\n".join(lines) + "\n")
    figure = [{"row": r["row"], "label": r["label"], "subset": r["subset"],
               "subset_label": r["subset_label"], "fold": r["fold"], "queries": r["top5"]}
              for r in records if r.get("top5")]
    figure.sort(key=lambda e: (e["subset"] != "5", FIGURE_ROWS.index(e["row"])
                               if e["row"] in FIGURE_ROWS else 99))
    note = ("top-5 leave-one-out retrievals of a few held-out queries (fold 0); paths are relative "
            "to the Twitter I folder")
    write_json(results_dir / "retrievals.json", {"note": note, "rows": figure})


def summary_table(results_dir: str | os.PathLike = DEFAULT_RESULTS, subset: str = "5", *,
                  what: str = "retrieval", digits: int = 3, settings: FineTune | None = FineTune()):
    """A pandas DataFrame of one subset's summary, "mean ± std" over folds, rows labelled.

    ``what="retrieval"``: the seven polarity-level metrics; ``"accuracy"``: the polarity
    classifiers' accuracies (and NN, the leave-one-out 1-NN accuracy of the embedding)."""
    import pandas as pd  # lazy: pandas is the book's (requirements.txt), not a dependency of apse

    rows = [r for r in summarise_runs(load_runs(results_dir, settings=settings))
            if r["subset"] == subset]
    if not rows:
        raise FileNotFoundError(f"no Twitter I runs for subset {subset!r} in {results_dir}; run "
                                "python -m apse.transfer twitter1")
    fmt = lambda r, k: (f"{r['mean'][k]:.{digits}f} ± {r['std'][k]:.{digits}f}"  # noqa: E731
                        if k in r["mean"] else "")
    if what == "retrieval":
        data = {m: [fmt(r, m) for r in rows] for m in POLARITY_METRIC_NAMES}
    elif what == "accuracy":
        keys = [k for k in ACCURACY_LABELS if any(f"acc:{k}" in r["mean"] for r in rows)]
        data = {"1-NN (= NN)": [fmt(r, "NN") for r in rows]}
        data.update({ACCURACY_LABELS[k]: [fmt(r, f"acc:{k}") for r in rows] for k in keys})
    else:
        raise ValueError(f"what must be 'retrieval' or 'accuracy', got {what!r}")
    index = pd.MultiIndex.from_tuples([(r["group"], r["label"]) for r in rows], names=["", "row"])
    return pd.DataFrame(data, index=index)


def load_meta(results_dir: str | os.PathLike = DEFAULT_RESULTS) -> dict[str, Any]:
    """``meta.json``: the invocations (command, runs, wall and CPU time) and the FI models used."""
    path = Path(results_dir) / "meta.json"
    meta = read_json(path)
    return {"invocations": [], "fi_models": {}} if meta is None else meta


def paired_difference(records: Sequence[dict], subset: str, a: str, b: str,
                      metric: str = "mAP2") -> dict[str, float] | None:
    """Row `a` minus row `b` fold by fold on one subset: ``{"mean", "se", "wins", "n_folds"}``
    (standard error of the mean difference over folds; wins = folds where `a` is better), or None
    when the two rows share no fold. ANMRR is lower-is-better: a win is a smaller value."""

    def of(row):
        return {r["fold"]: {**r["metrics"], **{f"acc:{k}": v for k, v in r["accuracy"].items()}}
                for r in records if r["subset"] == subset and r["row"] == row}

    ra, rb = of(a), of(b)
    folds = sorted(f for f in set(ra) & set(rb) if metric in ra[f] and metric in rb[f])
    if not folds:
        return None
    d = [ra[f][metric] - rb[f][metric] for f in folds]
    mean, std = _stats(d)
    better = (lambda x: x < 0) if metric in LOWER_IS_BETTER else (lambda x: x > 0)
    return {"mean": mean, "se": std / math.sqrt(len(d)), "wins": sum(better(x) for x in d),
            "n_folds": len(d)}


def load_retrievals(results_dir: str | os.PathLike = DEFAULT_RESULTS) -> list[dict]:
    """The figure's entries from ``retrievals.json``: ``[{"row", "label", "queries": [...]}]``."""
    path = Path(results_dir) / "retrievals.json"
    data = read_json(path)
    return [] if data is None else data["rows"]

