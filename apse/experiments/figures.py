"""The ``figures`` experiment: attention maps, top-5 retrievals (N-pair vs APSE) and failure cases as PNGs.

:func:`make_figures` trains N-pair and APSE (GEP) on the training folds of one held-out fold, draws
each figure with one small function below, and writes ``results/figures/`` (``figures.json``,
``summary.md`` and the PNGs; ``results/figures-<regime>/`` in another training regime, whose configs
are the runner's). Thumbnails and quantised PNGs keep the files small.
"""
from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from apse import plotting
from apse.data import build_transforms, load_rgb
from apse.emotions import emotion_name, polarity_of
from apse.evaluation import attention_report, embed_dataset
from apse.experiments.regimes import DEFAULT_BASE, DEFAULT_RESULTS, regime_dir
from apse.experiments.runner import _Context, _round
from apse.experiments.specs import experiment_specs
from apse.experiments.summary import DATASET_LABEL, backbone_label
from apse.experiments.tables import K_FOLDS, Experiment, get_experiment
from apse.io import write_json
from apse.metrics import nearest, pairwise_distances
from apse.training import Trainer

__all__ = ["make_figures"]


def _save_small_png(fig, path: Path, dpi: int = 64) -> None:
    """Save a figure as a small PNG: rendered at a low dpi, then quantised to a 256-colour palette."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    buf.seek(0)
    Image.open(buf).convert("RGB").quantize(colors=256).save(path, optimize=True)


def _thumb(path: str, size: int = 80):
    """A small square thumbnail of an image file (what the figures show; keeps the PNGs small)."""
    return ImageOps.fit(load_rgb(path), (size, size))


def _top_k(query_emb, gallery_emb, k: int):
    return nearest(pairwise_distances(query_emb, gallery_emb), k)


def _train(experiment: Experiment, base, regime: str, overrides: dict | None, dataset, fold: int, seed: int,
           log: Callable[[str], None]) -> dict[str, dict]:
    """Train each variant of ``experiment`` on the training folds of ``fold``, with the config the runner
    gives that run in ``regime`` (:func:`~apse.experiments.specs.experiment_specs`); per variant its
    trainer, config, gallery and held-out embeddings, test metrics and chosen epoch."""
    trained = {}
    for spec in experiment_specs(experiment, base=base, regime=regime, overrides=overrides, folds=fold + 1,
                                 seeds=(seed,)):
        if spec.fold != fold:
            continue
        variant, cfg = spec.variant, spec.config
        log(f"[figures] training {variant.name} on the training folds of fold {fold} ...")
        trainer = Trainer(cfg, dataset, None, progress=False)
        results = trainer.fit()
        gallery, _ = embed_dataset(trainer.model, trainer.gallery_set, progress=False)
        queries, _ = embed_dataset(trainer.model, trainer.test_set, progress=False)
        trained[variant.name] = dict(spec=spec, trainer=trainer, config=cfg, gallery=gallery, queries=queries,
                                     test_metrics=results["test_metrics"], chosen_epoch=results["chosen_epoch"])
        log(f"    test mAP8 {results['test_metrics']['mAP8']:.4f}  mAP2 {results['test_metrics']['mAP2']:.4f}")
    return trained


def _pick_queries(q_labels: Sequence[int], n_queries: int, seed: int) -> list[int]:
    """``n_queries`` held-out positions drawn at random (seeded), half of each polarity."""
    rng = np.random.default_rng(seed)
    picks = []
    for pol in (0, 1):
        pool = [j for j, y in enumerate(q_labels) if polarity_of(y) == pol]
        picks += sorted(rng.choice(pool, size=n_queries // 2, replace=False).tolist())
    return picks


def _attention_maps(plt, model, config, paths: Sequence[str], labels: Sequence[int], fold: int, path: Path) -> None:
    """Image, polarity (low) and emotion (high) attention map of APSE for each query (TMM Fig. 7)."""
    tf = build_transforms(False, image_size=config.image_size, resize=config.resize,
                          mean=tuple(model.backbone.mean), std=tuple(model.backbone.std))
    images = torch.stack([tf(load_rgb(p)) for p in paths])
    with torch.no_grad():
        out = model(images)
    fig, axes = plt.subplots(len(paths), 3, figsize=(3 * 1.6, len(paths) * 1.7), squeeze=False)
    for row, label in enumerate(labels):
        img = images[row]
        mean, std = tuple(model.backbone.mean), tuple(model.backbone.std)
        axes[row, 0].imshow(plotting.to_image(img, mean, std))
        plotting._blank(axes[row, 0])
        p = out.polarity_confidence[row]
        e = out.emotion_confidence[row]
        axes[row, 0].set_title(f"{emotion_name(label)}", fontsize=7)
        plotting.overlay_attention(img, out.polarity_map[row], ax=axes[row, 1], mean=mean, std=std,
                                   title=f"polarity map (p+ {float(p[0]):.2f})")
        plotting.overlay_attention(img, out.emotion_map[row], ax=axes[row, 2], mean=mean, std=std,
                                   title=f"emotion map ({emotion_name(int(e.argmax()))} {float(e.max()):.2f})")
        for ax in axes[row, 1:]:
            ax.title.set_fontsize(6)
    fig.suptitle(f"APSE attention, {DATASET_LABEL}, held-out fold {fold}", fontsize=8)
    fig.tight_layout()
    _save_small_png(fig, path, dpi=72)
    plt.close(fig)


def _retrievals(plt, runs: dict[str, dict], samples, gallery_idx, test_idx, picks, q_labels, thumb, fold: int,
                path: Path) -> dict[str, list[int]]:
    """The same queries' top 5 under N-pair then APSE (TMM Fig. 8); returns the same-emotion hits."""
    rows_q, rows_ql, rows_res, rows_rl, names = [], [], [], [], []
    hits: dict[str, list[int]] = {"N-pair": [], "APSE": []}
    tops = {name: _top_k(run["queries"][picks], run["gallery"], 5) for name, run in runs.items()}
    for row, j in enumerate(picks):        # each query twice: N-pair's top 5, then APSE's
        for name in ("N-pair", "APSE"):
            res = [gallery_idx[int(t)] for t in tops[name][row]]
            rows_q.append(thumb(test_idx[j]))
            rows_ql.append(q_labels[j])
            rows_res.append([thumb(r) for r in res])
            rows_rl.append([samples[r][1] for r in res])
            names.append(name)
            hits[name].append(sum(samples[r][1] == q_labels[j] for r in res))
    fig = plotting.plot_retrievals(rows_q, rows_ql, rows_res, rows_rl, row_names=names, size=1.1)
    fig.suptitle(f"Top-5 on {DATASET_LABEL}, held-out fold {fold}: N-pair vs APSE, same queries", fontsize=8)
    fig.subplots_adjust(top=0.93)
    _save_small_png(fig, path)
    plt.close(fig)
    return hits


def _opposite_in_top3(run: dict, q_labels, g_labels) -> list[int]:
    """Per held-out query, how many of its top 3 have the opposite polarity."""
    top3 = _top_k(run["queries"], run["gallery"], 3)
    return [sum(polarity_of(g_labels[int(t)]) != polarity_of(q_labels[j]) for t in top3[j])
            for j in range(len(q_labels))]


def _failure_cases(plt, run: dict, opp: Sequence[int], q_labels, g_labels, gallery_idx, test_idx, thumb,
                   path: Path) -> list[int]:
    """The 3 held-out queries with the most opposite-polarity images in APSE's top 3 (TMM Fig. 9)."""
    top3 = _top_k(run["queries"], run["gallery"], 3)
    worst = sorted(range(len(test_idx)), key=lambda j: (-opp[j], j))[:3]
    fig = plotting.plot_retrievals([thumb(test_idx[j]) for j in worst], [q_labels[j] for j in worst],
                                   [[thumb(gallery_idx[int(t)]) for t in top3[j]] for j in worst],
                                   [[g_labels[int(t)] for t in top3[j]] for j in worst], size=1.3)
    fig.suptitle(f"APSE failure cases: most opposite-polarity images in the top 3 ({DATASET_LABEL})", fontsize=8)
    fig.subplots_adjust(top=0.85)
    _save_small_png(fig, path)
    plt.close(fig)
    return worst


def _heads(model, trainer) -> dict[str, Any]:
    """How far the attention heads trained on every held-out image: their accuracy and mean top
    confidence (:func:`apse.evaluation.attention_report`, what the run records hold), and the spread
    of the polarity confidence and of the heads' logits (a head that never left uniform has none)."""
    report = attention_report(model, trainer.test_set)
    feats, _ = trainer.test_set.dataset.get_batch(trainer.test_set.indices)
    with torch.no_grad():
        pc = model.forward_features(feats).polarity_confidence
        low_logits = model.low_head(feats[model.low_stage]).logits
        high_logits = model.high_head(feats[model.high_stage]).logits
    return {
        "polarity_confidence_range": [round(float(pc[:, 0].min()), 4), round(float(pc[:, 0].max()), 4)],
        "polarity_max_confidence_mean": round(report["polarity_top_confidence"], 4),
        "polarity_argmax_accuracy": round(report["polarity_accuracy"], 4),
        "polarity_logit_std": round(float(low_logits.std()), 5),
        "emotion_max_confidence_mean": round(report["emotion_top_confidence"], 4),
        "emotion_argmax_accuracy": round(report["emotion_accuracy"], 4),
        "emotion_logit_std": round(float(high_logits.std()), 5),
        "uniform_confidences": {"polarity": 0.5, "emotion": 0.125},
    }


def _summary_lines(title: str, s: dict, npair_run: dict, apse_run: dict, n_queries: int, n_test: int,
                   files: dict[str, Path]) -> list[str]:
    """summary.md of the figures: settings, the two models' scores, hits, failures, the heads."""
    heads, hits, opp = s["apse_attention_heads_on_held_out"], s["top5_same_emotion_hits"], \
        s["opposite_polarity_in_top3_all_queries"]
    fold, seed, cfg = s["fold"], s["seed"], apse_run["config"]
    return [f"# {title}", "",
            f"- Dataset: **{DATASET_LABEL}**; backbone: **{s['backbone']}**; image size "
            f"{cfg.image_size} px; held-out fold {fold} of {K_FOLDS}; seed {seed}; epochs "
            f"{cfg.epochs} (epoch chosen on the validation part: N-pair {npair_run['chosen_epoch']}, "
            f"APSE {apse_run['chosen_epoch']}).",
            f"- Held-out fold {fold} test mAP8 / mAP2: N-pair {npair_run['test_metrics']['mAP8']:.4f} / "
            f"{npair_run['test_metrics']['mAP2']:.4f}; APSE {apse_run['test_metrics']['mAP8']:.4f} / "
            f"{apse_run['test_metrics']['mAP2']:.4f}.",
            f"- Queries drawn at random (seed {seed}), {n_queries // 2} per polarity; same queries for both "
            f"models. Same-emotion hits in the top 5: N-pair {hits['N-pair']}, APSE {hits['APSE']}.",
            f"- Mean number of opposite-polarity images in the top 3 over all held-out queries: N-pair "
            f"{opp['N-pair']}, APSE {opp['APSE']}.",
            f"- APSE's attention heads on the {n_test} held-out images (uniform would be 0.5 / 0.125): "
            f"polarity confidence p+ in [{heads['polarity_confidence_range'][0]}, "
            f"{heads['polarity_confidence_range'][1]}] "
            f"(logit std {heads['polarity_logit_std']}, argmax accuracy {heads['polarity_argmax_accuracy']}); "
            f"emotion max confidence {heads['emotion_max_confidence_mean']} on average (argmax accuracy "
            f"{heads['emotion_argmax_accuracy']}). Near-uniform confidences make the WEP weights and GEP's "
            "adaptive beta nearly constant; the maps are min-max normalised, so they still show a shape.",
            f"- Wall time: {s['wall_time_s']:.0f} s" + (f"; command: `{s['command']}`" if s["command"] else "") + ".",
            "", "Files: " + ", ".join(f"`{p.name}`" for p in files.values()) + ".",
            "The PNGs show small thumbnails of FI images (research use only; see data/README.md)."]


def make_figures(*, results_dir: str | os.PathLike = DEFAULT_RESULTS, base: str | os.PathLike = DEFAULT_BASE,
                 data: str | None = None, overrides: dict | None = None, fold: int = 0, seed: int = 0,
                 n_queries: int = 4, command: str | None = None, log: Callable[[str], None] = print,
                 regime: str = "frozen") -> dict:
    """Train N-pair and APSE (GEP) on the training folds of ``fold`` in training ``regime`` (as the
    runner trains them; a regime other than "frozen" writes ``results/figures-<regime>/``) and draw, for
    held-out queries:

    * ``attention_maps.png``: image, polarity-specific (low) and emotion-specific (high) attention map
      of APSE (TMM Fig. 7) for ``n_queries`` held-out images;
    * ``retrievals_npair_vs_apse.png``: the same ``n_queries`` queries, top-5 of N-pair then of APSE
      (TMM Fig. 8); frames: green = same emotion, blue = same polarity, red = opposite polarity;
    * ``failure_cases.png``: the held-out queries whose APSE top-3 holds the most opposite-polarity
      images (TMM Fig. 9).

    The queries are drawn at random (seeded), two of each polarity, not picked for looking good.
    """
    # lazy: choosing the Agg backend when apse.experiments is imported would take over a notebook's
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    t_start = time.time()
    results_dir = Path(results_dir)
    out_dir = results_dir / regime_dir("figures", regime)
    out_dir.mkdir(parents=True, exist_ok=True)
    experiment = get_experiment("figures")
    dataset = _Context(data).dataset
    trained = _train(experiment, base, regime, overrides, dataset, fold, seed, log)
    apse_run, npair_run = trained["apse-gep"], trained["npair"]
    trainer = apse_run["trainer"]
    samples = dataset.samples
    gallery_idx, test_idx = trainer.split["train"], trainer.split["test"]
    q_labels = [samples[i][1] for i in test_idx]
    g_labels = [samples[i][1] for i in gallery_idx]
    picks = _pick_queries(q_labels, n_queries, seed)
    thumbs: dict[int, Any] = {}

    def thumb(dataset_index: int):
        if dataset_index not in thumbs:
            thumbs[dataset_index] = _thumb(samples[dataset_index][0])
        return thumbs[dataset_index]

    model = trainer.model.eval()
    files = {name: out_dir / f for name, f in (("attention_maps", "attention_maps.png"),
                                                ("retrievals", "retrievals_npair_vs_apse.png"),
                                                ("failure_cases", "failure_cases.png"))}
    _attention_maps(plt, model, apse_run["config"], [samples[test_idx[j]][0] for j in picks],
                    [q_labels[j] for j in picks], fold, files["attention_maps"])
    hits = _retrievals(plt, {"N-pair": npair_run, "APSE": apse_run}, samples, gallery_idx, test_idx, picks,
                       q_labels, thumb, fold, files["retrievals"])
    opp = _opposite_in_top3(apse_run, q_labels, g_labels)
    worst = _failure_cases(plt, apse_run, opp, q_labels, g_labels, gallery_idx, test_idx, thumb,
                           files["failure_cases"])
    heads = _heads(model, trainer)

    wall = time.time() - t_start

    def rel(i: int) -> str:
        return os.path.relpath(samples[i][0], dataset.root) if hasattr(dataset, "root") else samples[i][0]

    summary = {
        "dataset": DATASET_LABEL, "backbone": backbone_label([run["spec"] for run in trained.values()]),
        "fold": fold, "seed": seed,
        "epochs": apse_run["config"].epochs, "image_size": apse_run["config"].image_size,
        "test_metrics": {k: _round(v["test_metrics"], 4) for k, v in trained.items()},
        "chosen_epoch": {k: v["chosen_epoch"] for k, v in trained.items()},
        "queries": [rel(test_idx[j]) for j in picks],
        "top5_same_emotion_hits": hits,
        "failure_queries": [rel(test_idx[j]) for j in worst],
        "failure_opposite_in_top3": [opp[j] for j in worst],
        "opposite_polarity_in_top3_all_queries": {"APSE": round(float(np.mean(opp)), 4)},
        "apse_attention_heads_on_held_out": heads,
        "files": {k: str(v.relative_to(results_dir)) for k, v in files.items()},
        "wall_time_s": round(wall, 1), "command": command,
    }
    summary["opposite_polarity_in_top3_all_queries"]["N-pair"] = round(float(np.mean(
        _opposite_in_top3(npair_run, q_labels, g_labels))), 4)
    write_json(out_dir / "figures.json", summary)
    lines = _summary_lines(experiment.title, {**summary, "wall_time_s": wall}, npair_run, apse_run, n_queries,
                           len(test_idx), files)
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    log(f"[figures] done in {wall:.0f}s: {', '.join(str(p) for p in files.values())}")
    return summary
