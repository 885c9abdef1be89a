"""One prepared GPU session: throughput of the papers' network, then Lite0 fine-tuned end to end.

A GPU may be lent for a few minutes only, with no internet. This script turns those minutes into
results rather than debugging: every phase has a time cap, the caps add up to less than
``--budget-s`` (default 480 s, under 9 minutes with start-up), and whatever finished is written
before the next phase starts. It is started by ``benchmarks/gpu_run.sh`` (which checks the device
and the packages first); ``--dry-run`` prints the plan and its time caps without touching a GPU, and
``--smoke`` runs every phase for one step on a CPU (what the test suite does).

Phases, each writing JSON under ``--out`` (``results/gpu`` by default):

1. ``device.json``: GPU name, memory, torch / CUDA versions, the phases' wall times (rewritten after
   every phase).
2. ``throughput-resnet50.json``, ``throughput-lite0.json``: training steps of APSENet (GEP +
   attention loss, SGD, batch 8 emotions x 4) at 224 px on FI-sized synthetic JPEGs, data loading
   included, bf16 autocast and channels_last on CUDA; images/s, peak memory, and the minutes an epoch
   of FI (80% of 23,308 images) would take (``benchmarks/bench_training.py``).
3. ``finetune.json``: the pretrained EfficientNet-Lite0 fine-tuned end to end on the FI subset with
   the papers' recipe (images, random 224 crops of a 256 x 256 resize + flips, SGD lr 1e-3, momentum
   0.9, weight decay 5e-4, batches of 8 x 4, the epoch chosen on validation mAP8) for the key rows of
   the ablation: N-pair SO, EP SO and APSE-GEP, held-out fold after held-out fold of the 5-fold
   protocol of ``apse.experiments`` (the same partition as the book's tables), until the time cap.
   Each record has the same fields as an experiment run record (``apse.experiments.execute_run``).

The FI subset (66 MB) is larger than what travels to a lent machine (64 MiB), and the trainer resizes
every image to 256 x 256 first anyway: ``--prepare-data SRC DST`` writes that resize once (about
9 MB), which is what to carry.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

#: Time caps of the phases in seconds (the fine-tuning phase gets what is left of the budget).
CAPS = {"device": 10, "throughput-resnet50": 75, "throughput-lite0": 60}
#: The key ablation rows, in the order they are run for each held-out fold.
FINETUNE_VARIANTS = {
    "npair-so": ("N-pair, SO", {"loss": "npair", "attention": "none", "fusion": "single"}),
    "ep-so": ("EP, SO", {"loss": "ep", "attention": "none", "fusion": "single"}),
    "apse-gep": ("AT + GEP + HA + CLB, MO (APSE, TMM)", {"loss": "apse", "attention": "hierarchical",
                                                         "fusion": "clb"}),
}
#: The papers' recipe (configs/fi-resnet50.yaml) on Lite0; the schedule is shortened from 100 epochs
#: of ~580 FI batches to what the budget allows on ~15 FI-subset batches an epoch.
FINETUNE_OVERRIDES = {"backbone": "efficientnet_lite0", "pretrained": True, "epochs": 30, "lr_step": 20,
                      "cache_features": False, "folds": 5, "fold": 0, "protocol": "split"}
SMOKE_OVERRIDES = {"epochs": 1, "batches_per_epoch": 1, "num_workers": 0, "batch_size_eval": 16,
                   "image_size": 64, "resize": 72}


def prepare_data(src: Path, dst: Path, size: int = 256) -> int:
    """Write every image of the emotion folder ``src`` resized to ``size x size`` under ``dst``."""
    from apse.data import EmotionImageFolder, load_rgb

    folder = EmotionImageFolder(src)
    for path, _ in folder.samples:
        out = dst / Path(path).relative_to(folder.root)
        out.parent.mkdir(parents=True, exist_ok=True)
        load_rgb(path).resize((size, size)).save(out.with_suffix(".jpg"), quality=95)
    return len(folder)


class Session:
    """The phases' bookkeeping: elapsed time, the budget left, and device.json rewritten as it goes."""

    def __init__(self, out: Path, budget_s: float):
        self.out, self.budget_s, self.t0 = out, budget_s, time.time()
        self.phases: dict[str, float] = {}
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.budget_s - (time.time() - self.t0)

    def write(self, name: str, data) -> None:
        (self.out / name).write_text(json.dumps(data, indent=2) + "\n")

    def done(self, phase: str, started: float) -> None:
        self.phases[phase] = round(time.time() - started, 1)
        self.write("device.json", {**device_info(), "phases_s": self.phases,
                                   "budget_s": self.budget_s, "command": " ".join(sys.argv)})
        print(f"[{time.time() - self.t0:6.0f} s] {phase} done in {self.phases[phase]:.0f} s", flush=True)


def device_info() -> dict:
    cuda = torch.cuda.is_available()
    props = torch.cuda.get_device_properties(0) if cuda else None
    return {"device": props.name if cuda else f"cpu ({platform.processor() or platform.machine()})",
            "gpu_memory_gb": round(props.total_memory / 2**30, 1) if cuda else None,
            "torch": torch.__version__, "cuda": torch.version.cuda, "cpu_count": os.cpu_count(),
            "python": platform.python_version()}


def throughput(session: Session, backbone: str, smoke: bool) -> None:
    import bench_training

    args = (["--images", "64", "--steps", "1", "--warmup", "0", "--size", "64", "--workers", "0"]
            if smoke else ["--images", "2048", "--steps", "30", "--warmup", "8", "--size", "224",
                           "--workers", str(min(12, os.cpu_count() or 1))])
    started = time.time()
    result = bench_training.main(["--backbone", backbone, *args])
    session.write(f"throughput-{backbone.replace('efficientnet_', '')}.json", result)
    session.done(f"throughput-{backbone}", started)


def finetune(session: Session, data: Path, smoke: bool, max_folds: int) -> None:
    from apse.config import load_config
    from apse.data import EmotionImageFolder
    from apse.experiments import Experiment, Variant, execute_run, expand
    from apse.experiments.runner import _Context
    from apse.notebook import SMOKE_IMAGES_PER_EMOTION

    started = time.time()
    base = load_config(REPO_ROOT / "configs" / "fi-resnet50.yaml").replace(
        **FINETUNE_OVERRIDES, num_workers=min(8, os.cpu_count() or 1))
    if smoke:
        base = base.replace(**SMOKE_OVERRIDES)
    experiment = Experiment("gpu-finetune", "Lite0 fine-tuned end to end, papers' recipe",
                            tuple(Variant(k, label, ov) for k, (label, ov) in FINETUNE_VARIANTS.items()),
                            overrides={})
    specs = expand(experiment, base, folds=max_folds)
    specs.sort(key=lambda s: (s.fold, list(FINETUNE_VARIANTS).index(s.variant.name)))
    dataset = EmotionImageFolder(data)
    if smoke:
        dataset = dataset.first_per_emotion(SMOKE_IMAGES_PER_EMOTION)
    ctx = _Context(str(data), dataset=dataset)
    records, longest = [], 0.0
    for spec in specs:
        if records and session.left() < 1.2 * longest + 10:
            print(f"stopping before {spec.variant.name} fold {spec.fold}: {session.left():.0f} s left, "
                  f"a run takes up to {longest:.0f} s", flush=True)
            break
        t = time.time()
        record = execute_run(spec, ctx)
        longest = max(longest, time.time() - t)
        records.append({"variant": spec.variant.name, "label": spec.variant.label, "fold": spec.fold,
                        "seed": spec.seed, "key": spec.key, "config": spec.config.to_dict(), **record})
        session.write("finetune.json", {"protocol": "5-fold (apse.experiments partition), held-out fold "
                                                    "queries the training images",
                                        "dataset": "FI subset (602 images)", "runs": records})
        m = record["test_metrics"]
        print(f"  {spec.variant.name:9s} fold {spec.fold}: mAP8 {m['mAP8']:.3f} mAP2 {m['mAP2']:.3f} "
              f"(epoch {record['chosen_epoch']}, {time.time() - t:.0f} s)", flush=True)
    session.done("finetune", started)


def plan(budget_s: float, max_folds: int) -> str:
    rows = [f"  {name:22s} <= {cap:4d} s" for name, cap in CAPS.items()]
    rest = budget_s - sum(CAPS.values())
    rows.append(f"  {'finetune':22s} <= {rest:4.0f} s: {', '.join(FINETUNE_VARIANTS)} x held-out folds "
                f"0..{max_folds - 1}, {FINETUNE_OVERRIDES['epochs']} epochs each, until the cap")
    return "\n".join(["plan (time caps; the total is the budget):", *rows,
                      f"  {'total':22s} <= {budget_s:4.0f} s (+ machine start and file transfer)"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None, help="FI-style folder (default: locate_dataset)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "gpu")
    p.add_argument("--budget-s", type=float, default=480.0)
    p.add_argument("--folds", type=int, default=5, help="held-out folds to run at most")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--smoke", action="store_true", help="every phase for one step (CPU check)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--prepare-data", nargs=2, type=Path, metavar=("SRC", "DST"),
                   help="write SRC's images resized to 256 x 256 under DST and exit")
    args = p.parse_args(argv)
    if args.prepare_data:
        n = prepare_data(*args.prepare_data)
        print(f"wrote {n} images under {args.prepare_data[1]}")
        return 0
    print(plan(args.budget_s, args.folds))
    if args.dry_run:
        return 0
    from apse.data import locate_dataset

    data = locate_dataset(args.data)
    session = Session(args.out, args.budget_s)
    started = time.time()
    info = device_info()
    print(json.dumps(info), flush=True)
    if not torch.cuda.is_available() and not args.smoke:
        print("no CUDA device: run with --smoke on a CPU, or on a GPU machine", file=sys.stderr)
        return 2
    session.done("device", started)
    if not args.skip_throughput:
        for backbone in ("resnet50", "efficientnet_lite0"):
            throughput(session, backbone, args.smoke)
    finetune(session, data, args.smoke, args.folds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
