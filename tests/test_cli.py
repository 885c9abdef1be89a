"""The command line: `python -m apse train | evaluate | index | search`, and its one-line user errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from apse.__main__ import main
from apse.metrics import higher_is_better, metric_names
from conftest import make_dataset

REPO = Path(__file__).resolve().parents[1]
METRICS = set(metric_names())


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "apse", *args], capture_output=True, text=True, env=env,
                          cwd=cwd or REPO, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One two-epoch training run through the CLI, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("cli")
    data = make_dataset(tmp / "data", per_class=8, size=48)
    config = tmp / "tiny.yaml"
    config.write_text(
        "backbone: efficientnet_lite0\npretrained: false\nimage_size: 32\nresize: 36\nhigh_stage: conv4\n"
        "epochs: 2\nsplit: 50/25/25\nnum_workers: 0\n"
    )
    out = tmp / "run"
    proc = run_cli("train", "--config", str(config), "--data", str(data), "--out", str(out), "--quiet",
                   "lr=0.01", f"feature_cache={tmp / 'cache'}")
    assert proc.returncode == 0, proc.stderr
    return {"tmp": tmp, "data": data, "out": out, "stdout": proc.stdout}


def test_train_writes_model_and_results(trained):
    out = trained["out"]
    assert (out / "model.pt").is_file() and (out / "results.json").is_file()
    results = json.loads((out / "results.json").read_text())
    assert [h["epoch"] for h in results["history"]] == [1, 2]
    assert results["config"]["lr"] == 0.01 and results["config"]["backbone"] == "efficientnet_lite0"
    assert set(results["test_metrics"]) == METRICS
    assert "chosen epoch" in trained["stdout"] and "test: mAP8" in trained["stdout"]
    saved = torch.load(out / "model.pt", weights_only=True)  # no pickled code
    assert saved["config"]["epochs"] == 2 and saved["epoch"] == results["chosen_epoch"]


def test_evaluate_leave_one_out_and_split(trained, capsys):
    tmp, data, ckpt = trained["tmp"], trained["data"], str(trained["out"] / "model.pt")
    assert main(["evaluate", "--checkpoint", ckpt, "--queries", str(data), "--gallery", str(data),
                 "--json", str(tmp / "loo.json"), "--quiet", "--device", "cpu"]) == 0
    loo = json.loads((tmp / "loo.json").read_text())
    assert set(loo["metrics"]) == METRICS and loo["protocol"] == "leave-one-out"
    assert loo["num_queries"] == loo["num_gallery"] == 64
    out = capsys.readouterr().out
    assert "leave-one-out: 64 queries" in out
    # the metric registry says which metrics are lower-is-better (ANMRR and Opp@5), not the CLI
    marked = {line.split()[0] for line in out.splitlines() if line.endswith("(lower is better)")}
    assert marked == {m for m in loo["metrics"] if not higher_is_better(m)} >= {"ANMRR", "Opp@5"}

    queries = make_dataset(tmp / "queries", per_class=2, size=48, seed=3)
    assert main(["evaluate", "--checkpoint", ckpt, "--queries", str(queries), "--gallery", str(data),
                 "--json", str(tmp / "split.json"), "--quiet"]) == 0
    split = json.loads((tmp / "split.json").read_text())
    assert split["protocol"] == "queries vs gallery" and split["num_queries"] == 16
    assert all(-1e-9 <= v <= 1.0 + 1e-9 for v in split["metrics"].values())
    # the colour/stripe classes are easy: two epochs already retrieve far above chance (~0.15)
    assert split["metrics"]["mAP8"] > 0.5


def test_index_and_search(trained, tmp_path):
    data, ckpt = trained["data"], str(trained["out"] / "model.pt")
    index = tmp_path / "gallery.index"
    assert main(["index", "--checkpoint", ckpt, "--gallery", str(data), "--out", str(index), "--quiet"]) == 0
    raw = torch.load(index, weights_only=True)
    assert len(raw["paths"]) == 64 and raw["embeddings"].shape[0] == 64

    query = data / "awe" / "awe3.jpg"
    proc = run_cli("search", "--index", str(index), "--image", str(query), "-k", "5")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split() == ["rank", "distance", "emotion", "polarity", "path"]
    assert len(lines) == 6
    first = lines[1].split()
    assert first[0] == "1" and float(first[1]) < 1e-3 and first[-1].endswith("awe3.jpg")  # itself
    assert first[2] == "awe" and first[3] == "positive"


@pytest.mark.parametrize("make_args, message", [
    (lambda t: ["train", "--data", str(t / "nope"), "--out", str(t / "o")], "does not exist"),
    (lambda t: ["train", "--data", str(t), "--out", str(t / "o"), "bogus=1"], "unknown config key 'bogus'"),
    (lambda t: ["train", "--data", str(t), "--out", str(t / "o"), "lr=abc"], "lr expects a number"),
    (lambda t: ["train", "--config", str(t / "missing.yaml"), "--data", str(t), "--out", str(t / "o")],
     "config file not found"),
    (lambda t: ["evaluate", "--checkpoint", str(t / "none.pt"), "--queries", str(t), "--gallery", str(t)],
     "checkpoint not found"),
    (lambda t: ["search", "--index", str(t / "none.index"), "--image", "x.jpg"], "index file not found"),
])
def test_user_errors_are_one_line_exit_2(tmp_path, capsys, make_args, message):
    assert main(make_args(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_unknown_emotion_folder_is_a_user_error(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=1, size=16)
    (data / "happiness").mkdir()
    Image.new("RGB", (16, 16)).save(data / "happiness" / "x.jpg")
    proc = run_cli("train", "--data", str(data), "--out", str(tmp_path / "o"), "backbone=efficientnet_lite0",
                   "pretrained=false")
    assert proc.returncode == 2
    assert "happiness" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_help_has_examples(capsys):
    for command in ([], ["train"], ["evaluate"], ["index"], ["search"]):
        with pytest.raises(SystemExit) as info:
            main(command + ["--help"])
        assert info.value.code == 0
        text = capsys.readouterr().out
        assert "example" in text and "python -m apse" in text
