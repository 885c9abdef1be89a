"""Running an experiment: the run cache, one run's record, and the loop over an experiment.

Each run (variant x fold x seed, a :class:`~apse.experiments.specs.RunSpec` of
:func:`~apse.experiments.specs.experiment_specs`) is cached as
``results/<experiment>/runs/<variant>-f<fold>-s<seed>-<key>.json``, where ``key``
(:func:`apse.runs.run_key`) hashes what of the run's :class:`~apse.config.TrainConfig` decides its
numbers (fold and seed included) plus :data:`~apse.runs.RUNNER_VERSION`. A re-run skips the runs
already on disk (also when another experiment produced the identical run); ``force`` re-runs them.
The keys of the cached files must never change: tests check them against results/.
"""
from __future__ import annotations

import csv
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from apse.data import open_data
from apse.evaluation import attention_report
from apse.experiments.extras import EXTRAS
from apse.experiments.regimes import DEFAULT_BASE, DEFAULT_RESULTS, regime_dir
from apse.experiments.specs import RunSpec, data_key, experiment_specs, select_variants
from apse.experiments.summary import summarise_experiment, table_info, write_summary
from apse.experiments.tables import K_FOLDS, get_experiment
from apse.io import read_json, write_json
from apse.provenance import code_hash, machine, portable_config
from apse.runs import RUNNER_VERSION
from apse.training import Trainer

__all__ = ["execute_run", "run_experiment", "load_records"]


class _Context:
    """What every run of an invocation shares: the dataset object (scanned once), found from
    ``data`` (what :func:`apse.data.open_data` opens: None = the FI subset, a folder, a label file, a
    data set name or a pooled ``a+b``) or given already opened."""

    def __init__(self, data: str | None, dataset=None):
        self._data_arg = data
        self._dataset = dataset

    @property
    def dataset(self):
        if self._dataset is None:
            self._dataset = open_data(self._data_arg)
        return self._dataset


def _round(metrics: dict | None, digits: int = 6) -> dict | None:
    if metrics is None:
        return None
    return {k: (round(float(v), digits) if isinstance(v, (int, float)) and v is not None else v)
            for k, v in metrics.items()}


def execute_run(spec: RunSpec, ctx: _Context) -> dict[str, Any]:
    """Train (or, for the floor, only build) one run and return its small JSON record."""
    t0, c0 = time.time(), time.process_time()
    cfg = spec.config
    trainer = Trainer(cfg, ctx.dataset, None, progress=False)
    try:
        results = trainer.evaluate_untrained() if spec.variant.untrained else trainer.fit()
        attention = None
        if trainer.model.attention != "none":
            attention = {part: _round(attention_report(trainer.model, ds))
                         for part, ds in (("val", trainer.val_set), ("test", trainer.test_set)) if len(ds)}
    finally:
        trainer.close()
    select = cfg.select_on
    by_source = results.get("test_metrics_by_source")
    history = results.get("history") or []
    probe = results.get("probe")
    return {
        "test_metrics": _round(results["test_metrics"]),
        **({"test_metrics_by_source": {s: _round(m) for s, m in by_source.items()}} if by_source else {}),
        "val_metrics": _round(results.get("val_metrics")),
        "chosen_epoch": results.get("chosen_epoch"),
        "attention_heads": attention,
        "val_curve": [None if not h.get("val") else round(float(h["val"][select]), 4) for h in history],
        "loss_curve": [round(float(h["loss"]), 4) for h in history],
        # the probe stage (fine-tuning regime): the new layers' validation score before the backbone moved
        "probe_val": (round(float(probe["val"][select]), 4) if probe and probe.get("val") else None),
        "probe_s": round(float(probe["seconds"]), 2) if probe else None,
        "split": results.get("data", {}).get("split"),
        "train_time_s": round(float(results.get("train_time_s") or 0.0), 2),
        "feature_extraction_s": results.get("feature_extraction_s"),
        "weights_source": results.get("weights_source"),
        "wall_time_s": round(time.time() - t0, 2),
        "cpu_time_s": round(time.process_time() - c0, 2),
    }


# ----------------------------------------------------------------------------------------------------
# caching and the experiment loop
# ----------------------------------------------------------------------------------------------------
def _find_cached(results_dir: Path, spec: RunSpec, regime: str) -> Path | None:
    # the run's own file first (in its regime's folder), so a cached run is not rewritten as a copy
    own = results_dir / regime_dir(spec.experiment, regime) / "runs" / spec.filename
    if own.is_file():
        return own
    # the same run may have been done by another experiment (e.g. APSE + GEP in every table), if
    # it recorded every metric this experiment needs (one registered later is not in older runs)
    needs = get_experiment(spec.experiment).metrics
    for path in sorted(results_dir.glob(f"*/runs/*-f{spec.fold}-s{spec.seed}-{spec.key}.json")):
        if not needs or set(needs) <= set(read_json(path).get("test_metrics") or {}):
            return path
    return None


def run_experiment(name: str, *, folds: int | None = None, seeds: Sequence[int] = (0,), force: bool = False,
                   results_dir: str | os.PathLike = DEFAULT_RESULTS, base: str | os.PathLike = DEFAULT_BASE,
                   data: str | None = None, overrides: dict | None = None, k: int = K_FOLDS,
                   execute: Callable[[RunSpec, Any], dict] | None = None, log: Callable[[str], None] = print,
                   command: str | None = None, regime: str = "frozen",
                   only: Sequence[str] | None = None,
                   only_folds: Sequence[int] | None = None) -> dict[str, Any]:
    """Run (or load from cache) every run of experiment ``name``, then write its summary files.

    ``only`` / ``only_folds``: just these variants / held-out folds (e.g. to share one experiment's
    runs between two processes); the summary then lists just those runs.

    Returns ``{"experiment", "runs": [records], "summary": rows, "ran": n, "cached": n, "wall_time_s"}``.
    ``execute`` defaults to :func:`execute_run` (tests pass a stub).
    """
    t_start, c_start = time.time(), time.process_time()
    experiment = select_variants(get_experiment(name), only)
    results_dir = Path(results_dir)
    specs = experiment_specs(experiment, base=base, regime=regime, overrides=overrides, folds=folds, seeds=seeds,
                             k=k)
    if only_folds is not None:
        if not set(only_folds) <= set(range(k)):
            raise ValueError(f"only_folds must lie in 0..{k - 1}, got {sorted(only_folds)}")
        specs = [s for s in specs if s.fold in set(only_folds)]
    execute = execute or execute_run
    ctx = _Context(data if data is not None else experiment.data)
    records, ran, cached = [], 0, 0
    out_dir = results_dir / regime_dir(name, regime)
    for i, spec in enumerate(specs, 1):
        path = out_dir / "runs" / spec.filename
        found = None if force else _find_cached(results_dir, spec, regime)
        record = read_json(found) if found else None
        if record is not None and record.get("key") == spec.key and record.get("test_metrics"):
            if found != path:  # produced by another experiment: keep a copy here, say where it came from
                record = {**record, "experiment": name, "variant": spec.variant.name,
                          "reused_from": str(found.relative_to(results_dir))}
                write_json(path, record)
            cached += 1
            records.append(record)
            continue
        log(f"[{name} {i}/{len(specs)}] {spec.variant.name} fold {spec.fold} seed {spec.seed} ...")
        t0 = time.time()
        result = execute(spec, ctx)
        record = {"experiment": name, "variant": spec.variant.name, "label": spec.variant.label,
                  **data_key(experiment.data),
                  "fold": spec.fold, "seed": spec.seed, "key": spec.key, "untrained": spec.variant.untrained,
                  "config": portable_config(spec.config.to_dict()), **result,
                  "code_hash": code_hash(), "runner_version": RUNNER_VERSION, "machine": machine(),
                  "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        record.setdefault("wall_time_s", round(time.time() - t0, 2))
        write_json(path, record)
        ran += 1
        records.append(record)
        tm = record.get("test_metrics") or {}
        log(f"    mAP8 {tm.get('mAP8', float('nan')):.4f}  mAP2 {tm.get('mAP2', float('nan')):.4f}  "
            f"epoch {record.get('chosen_epoch')}  {record['wall_time_s']:.1f}s")
    wall = time.time() - t_start
    meta_path = out_dir / "meta.json"
    meta = read_json(meta_path) or {"invocations": []}
    meta["invocations"].append({"command": command, "ran": ran, "cached": cached, "wall_time_s": round(wall, 1),
                                "cpu_time_s": round(time.process_time() - c_start, 1),
                                "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(),
                                "threads": _threads()})
    write_json(meta_path, meta)
    rows = summarise_experiment(experiment, records)
    info = table_info(experiment, specs, seeds, folds if folds is not None else experiment.folds, k, meta, records)
    write_summary(out_dir, experiment, rows, info)
    extra = EXTRAS.get(name)
    if extra is not None:
        extra(out_dir, experiment, rows, info)
    log(f"[{name}] {ran} run(s) trained, {cached} from cache, {wall:.0f}s; summary in {out_dir}")
    return {"experiment": name, "runs": records, "summary": rows, "ran": ran, "cached": cached, "wall_time_s": wall}


def load_records(name: str, results_dir: str | os.PathLike = DEFAULT_RESULTS, *, folds: int | None = None,
                 seeds: Sequence[int] | None = None, base: str | os.PathLike = DEFAULT_BASE,
                 regime: str = "frozen") -> list[dict]:
    """The cached run records of experiment ``name`` (in ``regime``) for the current definitions (files
    of other keys, e.g. from an older configuration, are ignored). ``seeds`` default: those in its
    summary.csv."""
    results_dir = Path(results_dir)
    folder = regime_dir(name, regime)
    if seeds is None:
        seeds = [0]
        summary = results_dir / folder / "summary.csv"
        if summary.is_file():
            with open(summary) as fh:
                found = {int(x) for row in csv.DictReader(fh) for x in (row.get("seeds") or "").split()}
            seeds = sorted(found) or [0]
    specs = experiment_specs(name, base=base, regime=regime, folds=folds, seeds=seeds)
    records = []
    for spec in specs:
        record = read_json(results_dir / folder / "runs" / spec.filename)
        if record is not None and record.get("key") == spec.key:
            records.append(record)
    return records


def _threads() -> int | None:
    try:
        return torch.get_num_threads()
    except Exception:  # pragma: no cover
        return None
