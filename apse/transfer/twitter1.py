"""The Twitter I experiment: every row x subset x held-out fold, run once and cached as a small JSON.

:func:`run_twitter1` writes ``results/twitter1/``: one record per row x subset x fold in ``runs/``
(named by :func:`run_key`, which hashes everything the run depends on, so a cached record is found
again and a changed setting runs anew), then the summary files (:mod:`apse.transfer.report`) and
``meta.json`` (invocations, FI models). Rows: :mod:`apse.transfer.rows`.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from apse.data import stratified_kfold
from apse.emotions import POLARITIES
from apse.io import read_json, write_json
from apse.metrics import nearest, pairwise_distances
from apse.data.polarity import load_twitter1, twitter1_label
from apse.rng import seed_everything
from apse.runs import short_hash
from apse.checkpoints import build_model, load_model
from apse.transfer._shared import labels_tensor, print_log, retrieval_scores
from apse.transfer.fi_models import (DEFAULT_BASE, FI_VARIANTS, dataset_features, fi_checkpoint,
                                     state_hash)
from apse.transfer.finetune import FineTune, fine_tune
from apse.transfer.protocol import evaluate_fold, gap_features, linear_probe
from apse.transfer.report import write_summary
from apse.transfer.rows import (DEFAULT_RESULTS, FIGURE_QUERIES_PER_POLARITY, FIGURE_ROWS,
                                POLARITY_NOTE, ROW_NAMES, ROWS, RUNNER_VERSION, Row)

__all__ = ["run_twitter1", "run_key", "run_file_name"]


def _untrained_head(config) -> nn.Module:
    seed_everything(0)
    return build_model(config.replace(attention="none", fusion="single"), pretrained=False).eval()


def _figure_queries(labels: torch.Tensor, held: Sequence[int], per_polarity: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    picks = []
    for p in range(len(POLARITIES)):
        pos = [j for j, i in enumerate(held) if int(labels[i]) == p]
        picks += sorted(rng.choice(pos, size=min(per_polarity, len(pos)), replace=False).tolist())
    return picks


def run_key(row: Row, subset: str, fold: int, *, folds: int, split_seed: int, n_images: int,
            settings: FineTune, fi_model: str | None, features: str) -> str:
    """The cache key of one run: a hash of the row, the subset, the fold and its protocol, the
    fine-tuning settings (trained rows), the FI model's folder name, the features and
    :data:`~apse.transfer.rows.RUNNER_VERSION`. Changing what it hashes re-runs every cached run."""
    return short_hash({"row": asdict(row), "subset": subset, "fold": fold, "folds": folds,
                       "split_seed": split_seed, "images": n_images,
                       "settings": asdict(settings) if row.trained else None,
                       "fi_model": fi_model, "features": features, "runner": RUNNER_VERSION})


def run_file_name(row: Row, subset: str, fold: int, key: str) -> str:
    """The run record's file name in ``results_dir/runs``."""
    return f"{row.name}-s{subset}-f{fold}-{key}.json"


def run_twitter1(*, subsets: Sequence[str] = ("5", "all"), folds: int = 5,
                 rows: Sequence[str] | None = None, force: bool = False,
                 results_dir: str | os.PathLike = DEFAULT_RESULTS, data: str | None = None,
                 fi_data: str | None = None, models_dir: str | None = None,
                 settings: FineTune = FineTune(), split_seed: int = 0,
                 base: str | os.PathLike = DEFAULT_BASE, log: Callable[[str], None] = print_log,
                 command: str | None = None) -> list[dict]:
    """Every row x subset x held-out fold of the Twitter I experiment (cached in
    ``results_dir/runs``; ``force`` re-runs), then the summary files. Returns the records."""
    t_start, c_start = time.time(), time.process_time()
    results_dir = Path(results_dir)
    chosen = [r for r in ROWS if rows is None or r.name in rows]
    unknown = set(rows or ()) - set(ROW_NAMES)
    if unknown:
        raise ValueError(f"unknown row(s) {sorted(unknown)}; valid: {', '.join(ROW_NAMES)}")
    full = load_twitter1(data, "all")
    rel_all = full.relative_paths()
    index_of = {r: i for i, r in enumerate(rel_all)}
    labels = labels_tensor(full.labels_at("polarity"))
    checkpoints = {v: fi_checkpoint(v, fi_data=fi_data, models_dir=models_dir, base=base, log=log)
                   for v in sorted({r.source for r in chosen if r.source in FI_VARIANTS})
                   or ["apse-gep"]}
    models = {v: load_model(path) for v, path in checkpoints.items()}
    ref_model, ref_config = models.get("apse-gep") or next(iter(models.values()))
    features = dataset_features(full, ref_model, ref_config, log=log)
    feature_name = f"{ref_config.backbone}-{ref_config.image_size}px-flips"
    for v, (m, c) in models.items():  # every FI model must share the cached (frozen) backbone
        same = state_hash(m.backbone) == state_hash(ref_model.backbone)
        if not same or c.image_size != ref_config.image_size:
            raise ValueError(f"FI model {v!r} has another backbone than the cached features'")
    records = []
    ran = cached = 0
    for subset in subsets:
        sub = load_twitter1(data, subset, check="none")
        sub_idx = [index_of[r] for r in sub.relative_paths()]
        sub_label = twitter1_label(subset, len(sub_idx))
        splits = stratified_kfold(labels[sub_idx].numpy(), k=folds, seed=split_seed)
        for row in chosen:
            for f in range(folds):
                train_idx = [sub_idx[i] for i in splits[f][0]]
                held = [sub_idx[i] for i in splits[f][1]]
                fi_model = (checkpoints[row.source].parent.name if row.source in FI_VARIANTS
                            else None)
                key = run_key(row, subset, f, folds=folds, split_seed=split_seed,
                              n_images=len(sub_idx), settings=settings, fi_model=fi_model,
                              features=feature_name)
                path = results_dir / "runs" / run_file_name(row, subset, f, key)
                found = None if force else read_json(path)
                if found is not None:
                    records.append(found)
                    cached += 1
                    continue
                log(f"[twitter1] {sub_label}: {row.name} fold {f} ...")
                t0, c0 = time.time(), time.process_time()
                record = _run_row(row, models, features, labels, train_idx, held, settings, f,
                                  rel_all, ref_config)
                record.update({
                    "row": row.name, "label": row.label, "group": row.group, "subset": subset,
                    "subset_label": sub_label, "n_images": len(sub_idx), "fold": f, "folds": folds,
                    "split_seed": split_seed, "key": key, "level": "polarity",
                    "note": POLARITY_NOTE, "fine_tune": asdict(settings) if row.trained else None,
                    "fi_model": fi_model,
                    "n_test": len(held), "wall_time_s": round(time.time() - t0, 2),
                    "cpu_time_s": round(time.process_time() - c0, 2),
                    "runner_version": RUNNER_VERSION,
                    "created": time.strftime("%Y-%m-%d %H:%M:%S")})
                write_json(path, record)
                records.append(record)
                ran += 1
                m = record["metrics"]
                log(f"    mAP2 {m['mAP2']:.4f}  NN {m['NN']:.4f}  FT {m['FT']:.4f}  "
                    f"epoch {record.get('chosen_epoch')}  {record['wall_time_s']:.1f}s")
    write_summary(results_dir, records)
    meta_path = results_dir / "meta.json"
    meta = read_json(meta_path)
    meta = {"invocations": []} if meta is None else meta
    meta["invocations"].append({"command": command, "ran": ran, "cached": cached,
                                "wall_time_s": round(time.time() - t_start, 1),
                                "cpu_time_s": round(time.process_time() - c_start, 1),
                                "threads": torch.get_num_threads(), "host": platform.node(),
                                "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    meta["fi_models"] = {v: {"dir": p.parent.name, "config": _fi_summary(p)}
                         for v, p in checkpoints.items()}
    write_json(meta_path, meta)
    log(f"[twitter1] {ran} run(s), {cached} cached; summary in {results_dir}")
    return records


def _fi_summary(checkpoint: Path) -> dict[str, Any]:
    r = read_json(checkpoint.parent / "results.json")
    if r is None:
        return {}
    c = r.get("config", {})
    return {"loss": c.get("loss"), "attention": c.get("attention"), "fusion": c.get("fusion"),
            "epochs": c.get("epochs"), "chosen_epoch": r.get("chosen_epoch"),
            "images": r.get("data", {}).get("images"), "split": r.get("data", {}).get("split"),
            "val_mAP8": (r.get("val_metrics") or {}).get("mAP8")}


def _run_row(row: Row, models, features, labels, train_idx, held, settings, fold, rel_all, config):
    rec: dict[str, Any] = {"chosen_epoch": None}
    y_held = labels[held]
    acc: dict[str, float] = {}
    if row.source == "chance":
        g = torch.Generator().manual_seed(1000 + fold)
        emb = torch.nn.functional.normalize(torch.randn(len(held), 512, generator=g), dim=1)
        metrics = retrieval_scores(emb, y_held, level="polarity")
        majority = int(torch.bincount(labels[train_idx], minlength=2).argmax())
        acc["majority"] = float((y_held == majority).double().mean())
    else:
        if row.source == "imagenet":
            net = _untrained_head(config)
        else:
            net = models[row.source][0]
        fi_config = models[row.source][1] if row.source in models else config
        if row.trained:
            net, info = fine_tune(net, fi_config, features, labels, train_idx, level="polarity",
                                  settings=settings)
            rec.update(info)
        metrics, acc, emb = evaluate_fold(net, features, labels, held, level="polarity")
        if row.source == "imagenet" and not row.trained:
            pred = linear_probe(gap_features(features, train_idx), labels[train_idx],
                                gap_features(features, held))
            acc["linear_probe"] = float((pred == y_held).double().mean())
    rec["metrics"] = {k: round(float(v), 6) for k, v in metrics.items()}
    rec["accuracy"] = {k: round(v, 6) for k, v in acc.items()}
    if fold == 0 and row.name in FIGURE_ROWS:
        picks = _figure_queries(labels, held, FIGURE_QUERIES_PER_POLARITY)
        top = nearest(pairwise_distances(emb, emb), 5, exclude_self=True)  # leave-one-out
        rec["top5"] = [{"query": rel_all[held[j]], "label": POLARITIES[int(labels[held[j]])],
                        "results": [[rel_all[held[int(t)]], POLARITIES[int(labels[held[int(t)]])]]
                                    for t in top[j]]} for j in picks]
    return rec
