"""DistributedDataParallel through torchrun: two CPU processes with Gloo train a couple of steps.

Checks that the ranks get disjoint shares of each epoch's balanced batches, that DDP keeps their weights
identical, and that only rank 0 writes files. About 20-40 s on 2 cores (two interpreters start).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apse.emotions import EMOTIONS

REPO = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import torch
    from apse.config import TrainConfig
    from apse import training

    config, data, tmp = TrainConfig(**json.loads(sys.argv[1])), sys.argv[2], Path(sys.argv[3])
    rank = int(os.environ["RANK"])
    # Each rank is given its own output folder: a rank other than 0 must leave its folder unwritten.
    trainer = training.Trainer(config, data, tmp / f"out{rank}", progress=False)
    trainer.setup()
    epoch_batches = {}
    for epoch in (1, 2):
        trainer.batch_sampler.set_epoch(epoch)
        epoch_batches[epoch] = [[trainer.split["train"][i] for i in b] for b in trainer.batch_sampler]
    results = trainer.fit()
    state = trainer.model.state_dict()
    report = {"rank": rank, "world": trainer.dist.world_size, "batches": epoch_batches,
              "checksum": [float(v.double().sum()) for v in state.values()],
              "steps": [h["steps"] for h in results["history"]], "test": results["test_metrics"]}
    (tmp / f"rank{rank}.json").write_text(json.dumps(report))
    trainer.close()
""")


def make_dataset(root: Path, per_class: int, size: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for e, name in enumerate(EMOTIONS):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.normal(30 * e, 40, (size, size, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name / f"{i}.jpg")
    return root


@pytest.mark.slow
def test_two_process_gloo_training(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=12)
    (tmp_path / "worker.py").write_text(WORKER)
    # 12 per emotion, 70/10/20 -> 9 training images per emotion: two 8x4 batches an epoch, one per rank
    config = dict(backbone="efficientnet_lite0", pretrained=False, image_size=32, resize=36, high_stage="conv4",
                  epochs=2, split="70/10/20", num_workers=0, lr=0.01, device="cpu")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(tmp_path / "worker.py"), json.dumps(config), str(data), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["steps"] == r1["steps"] == [1, 1]  # each rank: half of the epoch's two batches
    for epoch in ("1", "2"):
        mine, theirs = r0["batches"][epoch], r1["batches"][epoch]
        assert len(mine) == len(theirs) == 1
        assert not set(mine[0]) & set(theirs[0])  # disjoint shards (no image in both)
    assert r0["batches"]["1"] != r0["batches"]["2"]  # a new epoch, new batches
    assert r0["checksum"] == r1["checksum"]  # DDP kept the replicas identical
    assert r0["test"] == r1["test"]

    written = sorted(p.name for p in (tmp_path / "out0").iterdir())
    assert written == ["checkpoint.pt", "model.pt", "results.json"]
    assert not (tmp_path / "out1").exists()  # rank 1 wrote nothing
    results = json.loads((tmp_path / "out0" / "results.json").read_text())
    assert results["world_size"] == 2
