"""Each experiment's summary: its rows (mean ± std per variant), as a DataFrame, summary.csv and summary.md.

:func:`summarise_experiment` turns run records into one row dict per variant; :func:`summary_table`
is those rows as a DataFrame with the columns of ``summary.csv``, which :func:`write_summary` writes and
a notebook shows; :func:`settings_lines` and :func:`note_lines` are the lines of ``summary.md`` that say
how the runs were made. :func:`write_index` gathers every summary into ``results/README.md``.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from apse.experiments.regimes import DEFAULT_RESULTS
from apse.experiments.specs import RunSpec
from apse.experiments.stats import key_means, mean_std, ordering_report
from apse.experiments.tables import ORDER, Experiment, get_experiment
from apse.io import read_json
from apse.metrics import METRIC_NAMES
from apse.data.pooled import dataset_label
from apse.paper_results import PAPER_LABEL, PAPER_METRICS, TABLES

__all__ = ["METRICS", "DATASET_LABEL", "BACKBONE_LABEL", "OURS_LABEL", "SUMMARY_COLUMNS", "summarise_experiment",
           "table_info", "summary_table", "write_summary", "settings_lines", "note_lines", "write_index"]

#: The metrics of every table, in column order: the papers' (:data:`apse.metrics.METRIC_NAMES`).
#: MAP@R and RP (registered beside them) are in every new run record and read from there.
METRICS = METRIC_NAMES
DATASET_LABEL = "FI subset (602 images)"
BACKBONE_LABEL = "EfficientNet-Lite0, ImageNet-pretrained, frozen (cached features)"
OURS_LABEL = "ours (FI subset)"
#: The columns of summary.csv and of :func:`summary_table`.
SUMMARY_COLUMNS = (("experiment", "variant", "label", "n_runs", "folds", "seeds", "epochs", "mean_chosen_epoch")
                   + tuple(f"{m}_mean" for m in METRICS) + tuple(f"{m}_std" for m in METRICS)
                   + ("paper_table", "paper_method") + tuple(f"paper_{m}" for m in PAPER_METRICS)
                   + ("run_time_s",))
_SIX_DIGITS = {f"{m}_{s}" for m in METRICS for s in ("mean", "std")}  # written with 6 decimals


def summarise_experiment(experiment: Experiment, records: Sequence[dict]) -> list[dict]:
    """One row per variant (in the experiment's order): mean and std over its runs of every metric,
    plus the paper's numbers where the variant has a paper row."""
    rows = []
    for variant in experiment.variants:
        runs = [r for r in records if r.get("variant") == variant.name and r.get("test_metrics")]
        row: dict[str, Any] = {"variant": variant.name, "label": variant.label, "n_runs": len(runs),
                               "folds": sorted({r["fold"] for r in runs}), "seeds": sorted({r["seed"] for r in runs}),
                               "param": variant.param, "note": variant.note, "mean": {}, "std": {}}
        for m in METRICS:
            vals = [float(r["test_metrics"][m]) for r in runs if r["test_metrics"].get(m) is not None]
            if vals:
                row["mean"][m], row["std"][m] = mean_std(vals)
        # validation (what selection may look at) and the attention heads on val / held-out
        row["val_runs"] = {f"{r['fold']}-{r['seed']}": dict(r.get("val_metrics") or {}) for r in runs}
        row["val_mean"] = key_means(row["val_runs"].values())
        row["attention"] = key_means({f"{part}_{k}": v for part, d in (r.get("attention_heads") or {}).items()
                                       for k, v in (d or {}).items()} for r in runs)
        epochs = [r.get("chosen_epoch") for r in runs if r.get("chosen_epoch") is not None]
        row["chosen_epochs"] = epochs
        row["run_time_s"] = round(sum(float(r.get("wall_time_s") or 0.0) for r in runs), 1)
        row["cpu_time_s"] = round(sum(float(r.get("cpu_time_s") or 0.0) for r in runs), 1)
        row["paper_ref"] = list(variant.paper) if variant.paper else None
        row["floor"] = variant.floor
        row["paper"] = _paper_values(variant.paper)
        rows.append(row)
    return rows


def _paper_values(ref: tuple[str, str] | None) -> dict[str, float] | None:
    if not ref:
        return None
    table, method = ref
    for row in TABLES[table]["rows"]:
        if row["method"] == method:
            return dict(row["values"])
    raise KeyError(f"paper row {method!r} not in {table}")


def _fmt(x: float | None, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def backbone_label(specs: Sequence[RunSpec]) -> str:
    """The settings line's backbone: BACKBONE_LABEL for Lite0, else the backbones' names (per row)."""
    names = list(dict.fromkeys(s.config.backbone for s in specs))
    if not all(s.config.cache_features for s in specs):
        return (f"{', '.join(names)}, ImageNet-pretrained, fine-tuned end to end on images "
                "(regime finetune: configs/fi-subset-finetune-cpu.yaml)")
    if not names or names == ["efficientnet_lite0"]:
        return BACKBONE_LABEL
    if len(names) == 1:
        return names[0]
    return f"per row: {', '.join(names)}; ImageNet-pretrained, frozen (cached features)"


def image_size_label(specs: Sequence[RunSpec]) -> str | None:
    """The settings line's image size: one crop and resize, or each row's."""
    sizes = list(dict.fromkeys((s.config.image_size, s.config.resize) for s in specs))
    if not sizes:
        return None
    text = ", ".join(f"{size} px (resize {resize}" + ")" for size, resize in sizes)
    return (text if len(sizes) > 1 else text[:-1] + ", centre crop)") + \
        (" per row, centre crop" if len(sizes) > 1 else "")


def table_info(experiment: Experiment, specs: Sequence[RunSpec], seeds, folds: int, k: int, meta: dict,
               records: Sequence[dict]) -> dict[str, Any]:
    """What summary.md says about how the runs were made: dataset, backbone, folds, seeds, optimiser,
    times (from the experiment's ``meta.json`` invocations) and commands."""
    cfg = specs[0].config if specs else None
    epochs = sorted({s.config.epochs for s in specs})
    wall = [inv["wall_time_s"] for inv in meta.get("invocations", [])]
    run_time = sum(float(r.get("wall_time_s") or 0.0) for r in records)
    cpu_time = sum(float(r.get("cpu_time_s") or 0.0) for r in records)
    splits = [r.get("split") for r in records if r.get("split")]
    other = experiment.data not in (None, "fi-subset")
    sizes = [sum(sp.values()) for sp in splits]
    return {
        "dataset": (f"{dataset_label(experiment.data)} ({max(sizes)} images)" if other and sizes
                    else dataset_label(experiment.data) if other else DATASET_LABEL),
        "ours": f"ours ({dataset_label(experiment.data)})" if other else OURS_LABEL,
        "backbone": backbone_label(specs),
        "image_size": image_size_label(specs),
        "folds": f"{folds} of a {k}-fold stratified partition (split_seed {cfg.split_seed if cfg else 0})",
        "seeds": list(seeds),
        "epochs": epochs,
        "optimiser": None if cfg is None else (f"{cfg.optimizer}, lr {cfg.lr:g}, momentum {cfg.momentum:g}, "
                                               f"weight decay {cfg.weight_decay:g}, lr x{cfg.lr_gamma:g} every "
                                               f"{cfg.lr_step} epochs, batches of {cfg.classes_per_batch} x "
                                               f"{cfg.samples_per_class}, select on val {cfg.select_on}"),
        "split_sizes": splits[0] if splits else None,
        "select_on": None if cfg is None else cfg.select_on,
        "wall_time_last_s": wall[-1] if wall else None,
        "wall_time_all_invocations_s": round(sum(wall), 1) if wall else None,
        "invocations": len(wall),
        "run_time_sum_s": round(run_time, 1),
        "cpu_time_sum_s": round(cpu_time, 1),
        "threads": (meta.get("invocations") or [{}])[-1].get("threads"),
        "commands": [inv.get("command") for inv in meta.get("invocations", []) if inv.get("command")],
    }


def summary_table(experiment: Experiment, rows: Sequence[dict], info: dict[str, Any]) -> pd.DataFrame:
    """The rows of :func:`summarise_experiment` as a DataFrame, one line per variant, the columns of
    summary.csv (:data:`SUMMARY_COLUMNS`): means and stds at full precision, missing values NaN."""
    lines = []
    for r in rows:
        ref = r.get("paper_ref") or [None, None]
        paper = r.get("paper") or {}
        ep = r.get("chosen_epochs") or []
        lines.append([experiment.name, r["variant"], r["label"], r["n_runs"], " ".join(map(str, r["folds"])),
                      " ".join(map(str, r["seeds"])), " ".join(map(str, info.get("epochs") or [])),
                      round(sum(ep) / len(ep), 1) if ep else None]
                     + [r["mean"].get(m) for m in METRICS] + [r["std"].get(m) for m in METRICS]
                     + [ref[0], ref[1]] + [paper.get(m) for m in PAPER_METRICS] + [r.get("run_time_s")])
    return pd.DataFrame(lines, columns=list(SUMMARY_COLUMNS))


def _csv_cell(column: str, value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN: an empty cell
        return ""
    return _fmt(float(value), 6) if column in _SIX_DIGITS else value


def settings_lines(info: dict[str, Any]) -> list[str]:
    """The lines of summary.md that say how the runs were made (:func:`table_info`): dataset and
    protocol, backbone, folds and seeds, optimisation, wall time, and the last command."""
    wall = info.get("wall_time_last_s")
    lines = [
        f"- Dataset: **{info['dataset']}**. Protocol: each held-out fold queries the training folds (minus the "
        f"validation part carved from them); the epoch is chosen on that validation part only; the held-out "
        f"fold is evaluated once."
        + (f" Split sizes (train / val / held-out) of a run: {info['split_sizes'].get('train')} / "
           f"{info['split_sizes'].get('val')} / {info['split_sizes'].get('test')}." if info.get("split_sizes") else ""),
        f"- Backbone: **{info['backbone']}**; image size {info['image_size']}.",
        f"- Folds: {info['folds']}; seeds: {', '.join(map(str, info['seeds']))}; epochs: "
        f"{', '.join(map(str, info['epochs']))} (every run of this experiment).",
        f"- Optimisation: {info['optimiser']}.",
        f"- Wall time: {_fmt(info.get('wall_time_all_invocations_s'), 0)} s in total over {info.get('invocations')} "
        f"invocation(s) (meta.json; the last: {_fmt(wall, 0)} s); {_fmt(info.get('run_time_sum_s'), 0)} s summed "
        f"over the runs in this table ({_fmt(info.get('cpu_time_sum_s'), 0)} s CPU time, torch threads "
        f"{info.get('threads')}; runs shared with other experiments count here too).",
    ]
    if info.get("commands"):
        lines.append(f"- Command: `{info['commands'][-1]}`")
    return lines


#: How to read summary.md's numbers (its line after the settings of the runs).
NUMBERS_LINE = ("- Numbers: mean ± std (sample std) over the runs (folds x seeds); ANMRR lower is better. "
                f"Rows marked **{PAPER_LABEL}** are the papers' numbers (full FI, ResNet-50 fine-tuned end to end; "
                f"no F1 printed), beside ours (**{OURS_LABEL}**): the settings differ, so compare orderings, "
                "not values.")


def floor_line(rows: Sequence[dict], info: dict[str, Any]) -> str | None:
    """summary.md's "Floor:" line: the best trained linear floor and the rows above it on mAP8 and mAP2
    (None without a floor row)."""
    floor_rows = [r for r in rows if r.get("floor") and r["mean"]]
    if floor_rows:
        best = {m: max(r["mean"][m] for r in floor_rows if m in r["mean"]) for m in ("mAP8", "mAP2")}
        beat = [r["label"] for r in rows if not r.get("floor") and r["mean"]
                and all(r["mean"].get(m, -1) > best[m] for m in best)]
        # the floor's features are frozen, or those of the backbone fine-tuned with it (regime finetune)
        pooled = ("GAP(conv5) features, fine-tuned with it" if "fine-tuned" in str(info.get("backbone", ""))
                  else "frozen GAP(conv5) features")
        return (f"Floor: the best trained linear 512-d head on {pooled} (rows marked "
                f"'linear floor'): mAP8 {best['mAP8']:.4f}, mAP2 {best['mAP2']:.4f}. Rows above it on both "
                f"(means; see the std before calling a difference real): "
                + (", ".join(beat) if beat else "none") + ".")
    return None


def note_lines(rows: Sequence[dict]) -> list[str]:
    """summary.md's notes on rows: ``- label: note.`` for each row with a note."""
    return [f"- {r['label']}: {r['note']}." for r in rows if r.get("note")]


def write_summary(out_dir: Path, experiment: Experiment, rows: Sequence[dict], info: dict[str, Any]) -> None:
    """Write ``summary.csv`` (:func:`summary_table`) and ``summary.md`` (ours beside the paper's)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = summary_table(experiment, rows, info)
    with open(out_dir / "summary.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(frame.columns)
        for values in frame.itertuples(index=False):
            w.writerow([_csv_cell(c, v) for c, v in zip(frame.columns, values)])

    lines = [f"# {experiment.title}", ""]
    if experiment.description:
        lines += [experiment.description, ""]
    lines += settings_lines(info)
    # another data set than FI has no paper rows: its summary does not speak of them
    numbers = NUMBERS_LINE if info.get("ours", OURS_LABEL) == OURS_LABEL else NUMBERS_LINE.split(" Rows marked")[0]
    lines.insert(len(lines) - (2 if info.get("commands") else 1), numbers)
    select = info.get("select_on", "mAP8")
    lines += ["", f"| variant | source | runs | val {select} | " + " | ".join(METRICS) + " |",
              "|---|---|---|---|" + "---|" * len(METRICS)]
    for r, f in zip(rows, frame.to_dict("records")):
        cells = [(f"{f[m + '_mean']:.4f} ± {f[m + '_std']:.4f}" if pd.notna(f[m + "_mean"]) else "—")
                 for m in METRICS]
        val = _fmt(r.get("val_mean", {}).get(select)) if r.get("val_mean", {}).get(select) is not None else "—"
        lines.append(f"| {f['label']} | {info.get('ours', OURS_LABEL)} | {f['n_runs']} | {val} | "
                     + " | ".join(cells) + " |")
        if pd.notna(f["paper_method"]):
            pcells = [_fmt(f[f"paper_{m}"]) if pd.notna(f.get(f"paper_{m}")) else "—" for m in METRICS]
            lines.append(f"|  | {PAPER_LABEL} |  |  | " + " | ".join(pcells) + " |")
    floor = floor_line(rows, info)
    if floor:
        lines += ["", floor]
    lines += ["", f"The val {select} column is the mean over the runs of the validation score at the chosen epoch "
                  "(the validation parts carved from the training folds): the only number a choice between rows "
                  "may use. The metric columns are the held-out folds."]
    notes = note_lines(rows)
    if notes:
        lines += [""] + notes
    refs = {tuple(r["paper_ref"]) for r in rows if r.get("paper_ref")}
    tables = sorted({t for t, _ in refs} | set(experiment.paper_tables))
    if tables:
        lines += ["", "Paper sources:"]
        for t in tables:
            tab = TABLES[t]
            lines.append(f"- {tab['title']}: {tab['source']} {tab['note']}")
    for metric in ("mAP8", "mAP2"):
        rep = ordering_report(rows, metric)
        if rep["n"] >= 3:
            tau = rep["kendall_tau"]
            lines += ["", f"Ordering by {metric} ({rep['n']} variants with a paper row): Kendall tau ours vs paper "
                          f"= {_fmt(tau, 2)}.",
                      f"- ours: {' > '.join(rep['ours_order'])}",
                      f"- paper: {' > '.join(rep['paper_order'])}"]
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")


def write_index(results_dir: str | os.PathLike = DEFAULT_RESULTS) -> Path:
    """``results/README.md``: every experiment's command, time, and mAP8 / mAP2 beside the paper's."""
    results_dir = Path(results_dir)
    lines = ["# Results: the papers' experiments re-run on the FI subset", "",
             f"Dataset **{DATASET_LABEL}**, backbone **{BACKBONE_LABEL}**. Produced by `python -m apse.experiments "
             "NAME` (see `apse/experiments/`); each folder holds `summary.md` (all 8 metrics, mean ± std, the "
             "settings), `summary.csv`, `meta.json` (invocations, wall and CPU time) and `runs/` (one small JSON per "
             "run: variant x held-out fold x seed). Paper numbers: `apse/paper_results.py`, marked "
             f"\"{PAPER_LABEL}\". The settings differ from the papers' (3% of FI, frozen small backbone, 20 epochs), "
             "so compare orderings, not values.", ""]
    total_wall = total_cpu = 0.0
    for name in ORDER:
        d = results_dir / name
        meta = read_json(d / "meta.json") or {}
        invs = meta.get("invocations", [])
        wall = sum(float(i.get("wall_time_s") or 0) for i in invs)
        cpu = sum(float(i.get("cpu_time_s") or 0) for i in invs)
        if name == "figures":
            fj = read_json(d / "figures.json")
            if fj:
                wall = cpu = float(fj.get("wall_time_s") or 0)
                lines += ["## figures", "", f"`{fj.get('command')}`: {wall:.0f} s. PNGs: "
                          + ", ".join(f"[{Path(v).name}]({name}/{Path(v).name})" for v in fj["files"].values())
                          + ".", ""]
                total_wall += wall
                total_cpu += cpu
            continue
        if not (d / "summary.csv").is_file():
            continue
        total_wall += wall
        total_cpu += cpu
        with open(d / "summary.csv") as fh:
            rows = list(csv.DictReader(fh))
        title = get_experiment(name).title
        cmds = [i.get("command") for i in invs if i.get("command")]
        lines += [f"## [{name}]({name}/summary.md): {title}", "",
                  f"Command: `{cmds[-1] if cmds else 'python -m apse.experiments ' + name}`; "
                  f"{rows[0]['n_runs'] if rows else '?'} run(s) per row (folds: {rows[0]['folds'] if rows else '?'}), "
                  f"epochs {rows[0]['epochs'] if rows else '?'}; wall time {wall:.0f} s, CPU time {cpu:.0f} s "
                  f"(all invocations).", "",
                  f"| variant | mAP8 ours | mAP2 ours | mAP8 {PAPER_LABEL} | mAP2 {PAPER_LABEL} |",
                  "|---|---|---|---|---|"]
        for r in rows:
            ours = [f"{float(r[m + '_mean']):.4f} ± {float(r[m + '_std']):.4f}" if r.get(m + "_mean") else "—"
                    for m in ("mAP8", "mAP2")]
            paper = [f"{float(r['paper_' + m]):.4f}" if r.get("paper_" + m) else "—" for m in ("mAP8", "mAP2")]
            lines.append(f"| {r['label']} | {ours[0]} | {ours[1]} | {paper[0]} | {paper[1]} |")
        lines.append("")
    lines += [f"Total: {total_wall / 60:.1f} min wall, {total_cpu / 60:.1f} min CPU over the experiments above."]
    path = results_dir / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path
