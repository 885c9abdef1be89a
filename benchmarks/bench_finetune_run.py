"""What a fine-tuned run costs against its train-step limit, with the decode cache on and off (issue #22).

Not a test: a benchmark that prints figures (no asserts). On the FI subset (apse.data.locate_dataset) it
builds the run `python -m apse.experiments core --regime finetune` makes for the papers' method
(variant apse-gep, fold 0 of 5, seed 0: configs/fi-subset-cpu.yaml changed by
apse.experiments.experiment_specs(..., regime="finetune"), i.e. by configs/fi-subset-finetune-cpu.yaml),
then times

(a) the train-step limit: the run's own train step (APSENet at the regime's image size, channels_last,
    frozen BatchNorm, GEP + attention loss, SGD) on its batches of 8 emotions x 4, median of
    ``--steps`` steps after ``--warmup``, data excluded, as bench_training.py times a step; images/s,
    then the seconds ``epochs`` x (the training split's images) need at that rate;
(b) the whole run (apse.training.Trainer, as the experiment runner drives it: probe, epochs with
    validation, test), once with the decode cache (apse.data.decoded) and once without
    (APSE_DECODE_CACHE=0: every image decoded by the DataLoader's workers, every epoch), and, with
    ``--eval-batches 16,...``, once more with the cache for each ``batch_size_eval`` given (a setting
    outside a run's key: a bare forward pass of this CPU ran batches of 16 faster per image than of 64,
    but in a whole run it saved little: the third row below).

The table: limit s, run s, their ratio, decode s (the cache's one pass; without it, the decoding is
inside the workers, so the figure is an estimate: per-image decode + transform time x the images the
run reads), eval s (validation and test embedding, the probe's validation included), eval img (the
images embedded through the whole network; the probe's validation embeds cached maps), probe s (the
probe stage: 20 epochs of the new layers on cached features, and its validation), the CPU seconds of
the process plus its DataLoader workers, and the test mAP8 (the runs differ in their random crops).
The probe's feature cache is made before timing, so neither run pays the one-off extraction.

    python benchmarks/bench_finetune_run.py                 # 5 epochs, ~9 minutes at 1 thread
    python benchmarks/bench_finetune_run.py --epochs 1      # short

Printed here (OMP_NUM_THREADS=1, 1 torch thread, a 2-core CPU shared with other jobs, so every
figure is noisy by 10% or so; torch 2.14.1), `python benchmarks/bench_finetune_run.py --eval-batches 16`:

    train step: 17.7 img/s -> limit 5 x 451 images = 127.2 s

    decode cache    limit s   run s  ratio  decode s  eval s eval img  probe s   cpu s test mAP8
    on                127.2   230.1   1.81       3.2    70.3     3458     38.8   219.7    0.4782
    off               127.2   292.6   2.30      35.9   107.7     3458     44.9   281.2    0.4689
    on, eval 16       127.2   250.6   1.97       3.2    64.8     3458     35.9   227.6    0.4782

The cache takes a run from 2.3x to 1.8x its train-step limit. What was left is evaluation: the
451-image gallery embedded again at every validation and once more for the test, and the probe's
validation through the whole network. Two changes that cannot move a number followed: the test
reuses the gallery embeddings of the validation that chose its epoch (same weights, same images),
and the probe's validation embeds the cached maps it trained on (the backbone is unchanged during
the probe). Before and after, `--only on`, one after the other on the same machine:

    before (39e5a31~1)  limit  96.1 s  run 188.4 s  eval 55.5 s  3458 eval img  probe 27.7 s
    after  (39e5a31)    limit 110.3 s  run 171.4 s  eval 36.7 s  2526 eval img  probe 19.5 s
    test mAP8 0.4814310 in both (bit for bit)

The run is 17 s (9%) shorter and embeds 27% fewer images; the limits differ with the machine's load
(23.5 and 20.4 img/s), so the ratio is 1.8x-1.95x at the faster limit and 1.55x at the slower one:
still not 1.3x. What is left is the protocol itself: five validations, each embedding the 451
training images through a network that changes every epoch (~0.35x the limit), and the probe's 20
epochs on cached maps (~0.2x). Reaching 1.3x would need fewer validations or a smaller validation
gallery, a change of protocol (and of every fine-tuned result), not of speed. Same test mAP8 with
batch_size_eval 16 and 64: evaluation batching does not change the numbers (nor, on the same seed,
the crops).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from apse.io import write_json
from apse import evaluation, training
from apse.data import EmotionImageFolder, FeatureDataset, build_transforms, load_rgb, locate_dataset
from apse.experiments.specs import experiment_specs


def run_config(epochs: int | None, fold: int, batch_size_eval: int | None = None):
    overrides = {} if epochs is None else {"epochs": int(epochs)}
    if batch_size_eval is not None:  # as `--set batch_size_eval=N` would (not part of a run's key)
        overrides["batch_size_eval"] = int(batch_size_eval)
    specs = experiment_specs("core", regime="finetune", overrides=overrides, folds=fold + 1)
    return next(s.config for s in specs if s.variant.name == "apse-gep" and s.fold == fold)


def cpu_seconds() -> float:
    """This process's CPU time plus that of its finished children (the DataLoader workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def train_step_rate(cfg, dataset, warmup: int, steps: int) -> tuple[float, int]:
    """(images/s of the run's train step, training images of the split)."""
    from apse.training import Trainer
    from apse.training_data import cached_features, with_transform

    os.environ.pop("APSE_DECODE_CACHE", None)
    trainer = Trainer(cfg, dataset, None, progress=False, log=lambda line: None)
    try:
        trainer.setup()
        # the probe's feature cache, made now so that neither timed run pays for it
        cached_features(cfg, trainer.model, with_transform(trainer.run.base, trainer.run.eval_transform), device=trainer.device,
                        dist_info=trainer.dist, log=print, progress=False)
        trainer.step_module.train()
        times = []
        while len(times) < warmup + steps:
            trainer.loader_generator.manual_seed(len(times))
            trainer.batch_sampler.set_epoch(len(times))
            for inputs, labels in trainer.train_loader:
                inputs, labels = trainer.to_device(inputs), labels.to(trainer.device)
                t0 = time.perf_counter()
                total, _, _ = trainer.ddp_module(inputs, labels)
                trainer.optimizer.zero_grad(set_to_none=True)
                total.backward()
                trainer.optimizer.step()
                times.append(time.perf_counter() - t0)
                if len(times) == warmup + steps:
                    break
        return len(labels) / float(np.median(times[warmup:])), len(trainer.split["train"])
    finally:
        trainer.close()


def decode_estimate(cfg, dataset, reads: int, sample: int = 48) -> float:
    """Seconds the per-item pipeline spends decoding + transforming ``reads`` images (serial rate)."""
    tf = build_transforms(True, image_size=cfg.image_size, resize=cfg.resize)
    paths = [p for p, _ in dataset.samples[:: max(1, len(dataset.samples) // sample)]][:sample]
    t0 = time.perf_counter()
    for p in paths:
        tf(load_rgb(p))
    return (time.perf_counter() - t0) / len(paths) * reads


def whole_run(cfg, dataset, cache: bool) -> dict:
    from apse.training import Trainer

    if cache:
        os.environ.pop("APSE_DECODE_CACHE", None)
    else:
        os.environ["APSE_DECODE_CACHE"] = "0"
    eval_s, eval_images = [0.0], [0]
    t0, c0 = time.time(), cpu_seconds()
    trainer = Trainer(cfg, dataset, None, progress=False)  # as the experiment runner builds it
    for name in ("validate", "test"):
        method = getattr(trainer, name)

        def timed(*args, method=method, **kwargs):
            t = time.time()
            try:
                return method(*args, **kwargs)
            finally:
                eval_s[0] += time.time() - t
        setattr(trainer, name, timed)
    real_embed = evaluation.embed_dataset

    def counted(model, data, *args, **kwargs):
        # images through the whole network (the probe's validation embeds cached maps: not counted)
        if not isinstance(getattr(data, "dataset", data), FeatureDataset):
            eval_images[0] += len(data)
        return real_embed(model, data, *args, **kwargs)
    evaluation.embed_dataset = training.embed_dataset = counted
    try:
        results = trainer.fit()
    finally:
        evaluation.embed_dataset = training.embed_dataset = real_embed
        trainer.close()
        os.environ.pop("APSE_DECODE_CACHE", None)
    run_s, cpu_s = time.time() - t0, cpu_seconds() - c0
    train_reads = sum(int(h["steps"]) for h in results["history"]) * cfg.classes_per_batch * cfg.samples_per_class
    decoded = trainer.train_set.dataset
    if cache:
        decode_s, decode_note = float(decoded.decode_seconds), "once"
    else:
        decode_s, decode_note = decode_estimate(cfg, dataset, train_reads + eval_images[0]), "est., in workers"
    return {"cache": cache, "run_s": run_s, "cpu_s": cpu_s, "eval_s": eval_s[0], "eval_images": eval_images[0],
            "decode_s": decode_s, "decode_note": decode_note, "train_images_read": train_reads,
            "probe_s": (results.get("probe") or {}).get("seconds"), "train_time_s": results["train_time_s"],
            "test_mAP8": (results.get("test_metrics") or {}).get("mAP8")}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=None, help="end-to-end epochs (default: the regime's, 5)")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the experiments' default: 1)")
    p.add_argument("--steps", type=int, default=12, help="timed train steps for the limit")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--only", choices=("on", "off"), default=None, help="time one of the two runs")
    p.add_argument("--eval-batches", default="",
                   help="comma-separated batch_size_eval values for extra runs with the cache on ('' for none)")
    p.add_argument("--data", default=None, help="dataset folder (default: the FI subset, located)")
    p.add_argument("--out", default=None, help="JSON file for the figures")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    cfg = run_config(args.epochs, args.fold)
    dataset = EmotionImageFolder(locate_dataset(args.data) if args.data is None else Path(args.data))
    print(f"fine-tuned run: {cfg.backbone} at {cfg.image_size} px (resize {cfg.resize}), {cfg.epochs} epochs, "
          f"probe {cfg.probe_epochs}, fold {cfg.fold} of {cfg.folds}, {len(dataset.samples)} images, "
          f"{args.threads} thread(s), num_workers {cfg.num_workers}, batch_size_eval {cfg.batch_size_eval}", flush=True)

    rate, n_train = train_step_rate(cfg, dataset, args.warmup, args.steps)
    limit_s = cfg.epochs * n_train / rate
    print(f"train step: {rate:.1f} img/s -> limit {cfg.epochs} x {n_train} images = {limit_s:.1f} s", flush=True)

    rows = [(cache, None) for cache in (True, False) if not args.only or args.only == ("on" if cache else "off")]
    rows += [(True, int(b)) for b in args.eval_batches.split(",") if b.strip() and args.only != "off"]
    runs = []
    for cache, batch in rows:
        label = ("on" if cache else "off") + ("" if batch is None else f", eval {batch}")
        print(f"whole run, decode cache {label}:", flush=True)
        run_cfg = cfg if batch is None else run_config(args.epochs, args.fold, batch)
        runs.append({"label": label, "batch_size_eval": run_cfg.batch_size_eval,
                     **whole_run(run_cfg, dataset, cache)})
        print(f"    {runs[-1]['run_s']:.1f} s", flush=True)

    print()
    print(f"{'decode cache':<14} {'limit s':>8} {'run s':>7} {'ratio':>6} {'decode s':>9} {'eval s':>7} "
          f"{'eval img':>8} {'probe s':>8} {'cpu s':>7} {'test mAP8':>9}")
    for r in runs:
        print(f"{r['label']:<14} {limit_s:>8.1f} {r['run_s']:>7.1f} {r['run_s'] / limit_s:>6.2f} "
              f"{r['decode_s']:>9.1f} {r['eval_s']:>7.1f} {r['eval_images']:>8d} {r['probe_s'] or 0:>8.1f} "
              f"{r['cpu_s']:>7.1f} {r['test_mAP8']:>9.4f}")
    print("decode s: the cache's one pass (on); an estimate of the workers' decoding, every epoch (off). "
          "eval s includes the probe's validation; probe s includes its validation too.")
    result = {"images_per_s": round(rate, 2), "train_images": n_train, "epochs": cfg.epochs,
              "limit_s": round(limit_s, 2), "threads": args.threads, "runs": runs,
              "torch": torch.__version__, "command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:]))}
    if args.out:
        write_json(args.out, result, indent=2)
    return result


if __name__ == "__main__":
    main()
