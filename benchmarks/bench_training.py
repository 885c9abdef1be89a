"""Training throughput of APSE (images/s, data loading included) on FI-sized synthetic JPEGs.

Not a test: a benchmark that prints figures and writes them to JSON. It writes `--images` synthetic
JPEGs (smooth random colour fields with shapes, FI-like sizes around 500 x 375) in FI's folder layout,
then trains the configured APSENet with the papers' batch (8 emotions x 4), GEP + attention loss and
SGD, timing `--steps` steps after `--warmup` steps. On CUDA it uses bf16 autocast (AMP) and
channels_last, the settings the trainer uses. It also times the data pipeline alone, so a figure
below the loader's own rate shows the GPU is the bottleneck, and one near it shows the loader is.

    python benchmarks/bench_training.py                      # the paper's ResNet-50 at 224 px
    python benchmarks/bench_training.py --backbone efficientnet_lite0 --size 64 --images 256 --steps 3 --warmup 1 --workers 0

Written for a GPU machine; it runs on a CPU too (slowly), which is how it is checked here.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from apse.data import BalancedBatchSampler, EmotionImageFolder, build_transforms
from apse.io import write_json
from apse.emotions import EMOTIONS, polarity_labels
from apse.losses import GEPLoss, attention_loss
from apse.model import APSENet


def write_synthetic_jpegs(root: Path, n_images: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for k in range(n_images):
        emotion = EMOTIONS[k % len(EMOTIONS)]
        folder = root / emotion
        folder.mkdir(parents=True, exist_ok=True)
        w, h = (500, 375) if rng.random() < 0.6 else (375, 500)
        # A smooth colour field (cheap to make, compresses like a photo rather than like noise).
        small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
        draw = ImageDraw.Draw(img)
        for _ in range(4):
            x, y = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
            draw.ellipse((x, y, x + 60, y + 60), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        img.save(folder / f"{emotion}{k}.jpg", quality=90)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--size", type=int, default=224, help="crop size (the paper: 224 from 256)")
    p.add_argument("--images", type=int, default=4096, help="synthetic JPEGs to write (FI has 23,308)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--device", default="auto")
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--out", default=None, help="JSON file for the figures (e.g. results/gpu/throughput-resnet50.json)")
    args = p.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    amp = cuda and not args.no_amp
    torch.backends.cudnn.benchmark = cuda
    steps_needed = args.warmup + args.steps

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_synthetic_jpegs(root, args.images)
        print(f"wrote {args.images} synthetic JPEGs in {time.perf_counter() - t0:.1f} s")

        model = APSENet(backbone=args.backbone, pretrained=False).to(device)
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        tf = build_transforms(train=True, image_size=args.size, resize=round(args.size * 256 / 224),
                              mean=model.backbone.mean, std=model.backbone.std)
        data = EmotionImageFolder(root, transform=tf)
        sampler = BalancedBatchSampler(data.targets, 8, 4, batches_per_epoch=steps_needed)
        loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, num_workers=args.workers,
                                             pin_memory=cuda, persistent_workers=args.workers > 0)

        # The loader alone: the ceiling any model can reach with this many workers.
        t0, n = time.perf_counter(), 0
        for images, _ in loader:
            n += len(images)
        loader_rate = n / (time.perf_counter() - t0)
        print(f"data loading alone: {loader_rate:.1f} images/s ({args.workers} workers)")

        loss_fn = GEPLoss()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
        model.train()
        times = []
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t_last = time.perf_counter()
        for step, (images, labels) in enumerate(loader):
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if cuda:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(images)
            emb = out.embedding.float()
            pc, ec = out.polarity_confidence.float(), out.emotion_confidence.float()
            loss = 0.5 * loss_fn(emb, labels, pc, ec) + 0.5 * (
                attention_loss(pc, polarity_labels(labels)) + attention_loss(ec, labels))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if cuda:
                torch.cuda.synchronize()
            now = time.perf_counter()
            if step >= args.warmup:
                times.append(now - t_last)
            t_last = now
        if not times:
            raise SystemExit("no timed steps: raise --steps or lower --warmup")

    step_s = float(np.median(times))
    result = {
        "backbone": args.backbone, "image_size": args.size, "batch": 32, "amp_bf16": amp,
        "channels_last": cuda, "workers": args.workers, "timed_steps": len(times),
        "median_step_s": round(step_s, 4), "images_per_s": round(32 / step_s, 1),
        "images_per_s_mean": round(32 * len(times) / sum(times), 1),
        "loader_images_per_s": round(loader_rate, 1),
        "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "fi_epoch_minutes_estimate": round(0.8 * 23308 / (32 / step_s) / 60, 2),
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "torch": torch.__version__, "command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result, indent=2)
    return result


if __name__ == "__main__":
    main()
