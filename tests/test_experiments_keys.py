"""Run keys stay byte-identical: every cached run in results/*/runs is a run of its experiment's current
definitions (frozen, finetune and probe regimes, via ``expand``), so a change of a key payload fails here."""
from __future__ import annotations

import re

import pytest

from apse import experiments as ex
from apse.config import load_config

RESULTS = ex.DEFAULT_RESULTS
RUN_FILE = re.compile(r"^(?P<variant>.+)-f(?P<fold>\d+)-s(?P<seed>\d+)-(?P<key>[0-9a-f]{12})\.json$")
FOLDERS = sorted(d.name for d in RESULTS.glob("*") if (d / "runs").is_dir()
                 and ex.split_regime_dir(d.name)[0] in ex.EXPERIMENTS and any((d / "runs").glob("*.json")))


def test_there_are_cached_runs_to_check():
    assert {"table1", "ablation", "core", "core-finetune"} <= set(FOLDERS)


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_cached_run_key_is_an_expanded_key(folder):
    name, regime = ex.split_regime_dir(folder)
    files = [RUN_FILE.match(p.name) for p in sorted((RESULTS / folder / "runs").glob("*.json"))]
    assert all(files), folder
    seeds = sorted({int(m["seed"]) for m in files})
    specs = ex.expand(ex.get_experiment(name), load_config(ex.DEFAULT_BASE), folds=ex.K_FOLDS, seeds=seeds,
                      overrides={"device": "cpu", **ex.regime_overrides(regime)})
    expanded = {s.filename for s in specs}
    stale = [m.string for m in files if m.string not in expanded]
    assert not stale, f"{folder}: {len(stale)} cached run(s) whose key no definition produces, e.g. {stale[:3]}"


def test_run_key_payload_is_frozen():
    """A known payload hashes to a known key (RUNNER_VERSION, _ADDED_FIELDS and _NOT_IN_KEY included)."""
    assert ex.RUNNER_VERSION == 1
    config = {"lr": 0.2, "epochs": 20, "device": "cpu", "attention_mask_scale": "sum", "backbone_lr": None}
    assert ex.run_key(config, 0, 0) == ex.run_key({"lr": 0.2, "epochs": 20}, 0, 0)
    assert ex.run_key({"lr": 0.2, "epochs": 20}, 1, 2, untrained=True) == "6ea19bbf146b"  # the 1.45k-line module's
