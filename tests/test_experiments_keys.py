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


REGIME_FOLDERS = [f for f in FOLDERS if ex.split_regime_dir(f)[1] != "frozen"]


def test_there_are_cached_runs_of_the_regimes_to_check():
    assert {"core-finetune", "core-probe"} <= set(REGIME_FOLDERS)


@pytest.mark.parametrize("folder", REGIME_FOLDERS)
def test_the_finetune_files_config_keys_the_cached_runs_of_its_regime(folder):
    """The two ways to the fine-tuning regime give the same configs, and so the cached keys: ``apse train
    --config configs/fi-subset-finetune-cpu.yaml`` (its file: the base file plus its delta) as the base of
    the runs, and ``--regime`` on the base file (test above)."""
    name, regime = ex.split_regime_dir(folder)
    files = [RUN_FILE.match(p.name) for p in sorted((RESULTS / folder / "runs").glob("*.json"))]
    seeds = sorted({int(m["seed"]) for m in files})
    specs = ex.expand(ex.get_experiment(name), load_config(ex.FINETUNE_CONFIG), folds=ex.K_FOLDS, seeds=seeds,
                      overrides={"device": "cpu", **ex.regime_overrides(regime)})
    expanded = {s.filename for s in specs}
    stale = [m.string for m in files if m.string not in expanded]
    assert not stale, f"{folder}: {len(stale)} cached run(s) whose key no definition produces, e.g. {stale[:3]}"


def test_the_finetune_file_is_the_base_file_in_the_finetune_regime():
    finetune = load_config(ex.FINETUNE_CONFIG)
    assert finetune == load_config(ex.DEFAULT_BASE).replace(**ex.regime_overrides("finetune"))
    assert ex.run_key(finetune.to_dict(), 0, 0) == "4921320647ae"          # the key it had as a full file
    assert ex.run_key(load_config(ex.DEFAULT_BASE).to_dict(), 0, 0) == "31dda4dfc1df"


@pytest.mark.parametrize("edit", ["finetune", "base"])
def test_an_edit_of_either_file_reaches_apse_train_and_the_finetune_regime(tmp_path, monkeypatch, edit):
    """Issue #24: the finetune YAML repeated most base keys and ``regime_overrides`` read only some: an
    edit to another key reached ``apse train --config`` but not ``--regime finetune``. Every key edited
    in a copy of the finetune file (or of the base file) now reaches both."""
    import shutil

    import yaml

    from apse.experiments import regimes

    base, finetune = tmp_path / ex.DEFAULT_BASE.name, tmp_path / ex.FINETUNE_CONFIG.name
    shutil.copy(ex.DEFAULT_BASE, base)
    shutil.copy(ex.FINETUNE_CONFIG, finetune)
    monkeypatch.setattr(regimes, "FINETUNE_CONFIG", finetune)
    edits = {"weight_decay": 0.002, "lam": 0.7, "lr": 0.03, "momentum": 0.8, "split_seed": 3}
    path = finetune if edit == "finetune" else base
    data = yaml.safe_load(path.read_text())
    if edit == "base":  # keys the finetune file sets stay its own: edit those the base file alone holds
        edits = {k: v for k, v in edits.items() if k not in yaml.safe_load(finetune.read_text())}
    path.write_text(yaml.safe_dump({**data, **edits}, sort_keys=False))

    seen = []

    def execute(spec, ctx):
        seen.append(spec.config)
        return {"test_metrics": {m: 0.5 for m in ex.METRICS}, "val_metrics": {m: 0.4 for m in ex.METRICS},
                "chosen_epoch": 1}

    train = load_config(finetune)                                   # python -m apse train --config ...
    ex.run_experiment("core", folds=1, only=["apse-gep"], results_dir=tmp_path / "results", base=base,
                      execute=execute, log=lambda m: None, regime="finetune")   # --regime finetune
    assert edits, "the finetune file repeats every base key edited here: it is no delta on the base file"
    assert len(seen) == 1
    for key, value in edits.items():
        assert (key, getattr(train, key)) == (key, value)
        assert (key, getattr(seen[0], key)) == (key, value), f"{key} edited in the {edit} file"
