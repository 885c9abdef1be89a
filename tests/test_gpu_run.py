"""benchmarks/gpu_run.sh, the prepared GPU session: its plan, its data preparation, and every phase
run for one step on the CPU (so that the minutes on a lent GPU are not spent debugging)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import make_dataset

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_run.sh"


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=timeout)


def test_dry_run_prints_a_plan_within_nine_minutes():
    proc = _run("--dry-run")
    assert proc.returncode == 0, proc.stderr
    caps = {name: float(s) for name, s in re.findall(r"^\s+(\S+)\s+<=\s+(\d+) s", proc.stdout, re.M)}
    assert {"device", "throughput-resnet50", "throughput-lite0", "finetune", "total"} <= set(caps)
    assert sum(v for k, v in caps.items() if k != "total") == pytest.approx(caps["total"])
    assert caps["total"] <= 9 * 60 - 60      # a minute left for the machine's start and the transfers
    assert "npair-so, ep-so, apse-gep" in proc.stdout


def test_prepare_data_writes_every_image_at_256(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from gpu_run import prepare_data

    src = make_dataset(tmp_path / "src", per_class=2, size=40)
    n = prepare_data(src, tmp_path / "dst")
    files = sorted(p.relative_to(tmp_path / "dst") for p in (tmp_path / "dst").rglob("*.jpg"))
    assert n == 16 and files == sorted(p.relative_to(src) for p in src.rglob("*.jpg"))
    with Image.open(tmp_path / "dst" / files[0]) as im:
        assert im.size == (256, 256)


@pytest.mark.slow
def test_smoke_runs_every_phase_on_a_cpu(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=10, size=48)
    out = tmp_path / "gpu"
    proc = _run("--smoke", "--folds", "1", "--data", str(data), "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    device = json.loads((out / "device.json").read_text())
    assert set(device["phases_s"]) == {"device", "throughput-resnet50", "throughput-efficientnet_lite0",
                                       "finetune"}
    for name in ("resnet50", "lite0"):
        bench = json.loads((out / f"throughput-{name}.json").read_text())
        assert bench["images_per_s"] > 0 and bench["timed_steps"] == 1
    runs = json.loads((out / "finetune.json").read_text())["runs"]
    assert [r["variant"] for r in runs] == ["npair-so", "ep-so", "apse-gep"]
    for r in runs:
        assert r["fold"] == 0 and r["config"]["cache_features"] is False     # images, end to end
        assert r["config"]["backbone"] == "efficientnet_lite0" and r["config"]["lr"] == 1e-3
        assert 0 < r["test_metrics"]["mAP8"] <= 1 and 0 < r["test_metrics"]["mAP2"] <= 1
