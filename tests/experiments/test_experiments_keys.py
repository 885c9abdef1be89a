"""Run keys stay byte-identical: every cached run in results/*/runs is a run of its experiment's current
definitions (frozen, finetune and probe regimes, via ``experiment_specs``), its key recomputed from the
config its record stores is its file's, and the FI models' keys are those results/twitter1 recorded; so
a change of a key payload (:mod:`apse.runs`) fails here."""
from __future__ import annotations

import json
import re

import pytest

from apse import experiments as ex
from apse.config import load_config
from apse.experiments.specs import data_key
from apse.runs import ADDED_FIELDS, NOT_IN_RESULT, result_fields, run_key

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
    specs = ex.experiment_specs(name, regime=regime, folds=ex.K_FOLDS, seeds=seeds)
    expanded = {s.filename for s in specs}
    stale = [m.string for m in files if m.string not in expanded]
    assert not stale, f"{folder}: {len(stale)} cached run(s) whose key no definition produces, e.g. {stale[:3]}"


RECORDS = sorted(p for p in RESULTS.glob("*/runs/*.json") if RUN_FILE.match(p.name))


def test_there_are_run_records_to_recompute():
    assert len(RECORDS) > 1000


@pytest.mark.parametrize("folder", sorted({p.parent.parent.name for p in RECORDS}))
def test_every_run_files_key_is_recomputed_from_its_stored_config(folder):
    """Whatever the definitions say today: the key :func:`apse.runs.run_key` computes from the config,
    fold, seed and data set a record stores names the file it is in (and is the record's own key)."""
    wrong = []
    for path in (p for p in RECORDS if p.parent.parent.name == folder):
        record = json.loads(path.read_text())
        key = run_key(record["config"], record["fold"], record["seed"], record["untrained"],
                      data_key(record.get("data")))
        if not key == RUN_FILE.match(path.name)["key"] == record["key"]:
            wrong.append(path.name)
    assert not wrong, f"{folder}: {len(wrong)} record(s) whose stored config gives another key: {wrong[:3]}"


def test_result_fields_leave_out_what_cannot_change_a_result_and_later_fields_at_their_old_value():
    config = {"lr": 0.1, **{k: "x" for k in NOT_IN_RESULT}, **dict(ADDED_FIELDS)}
    assert result_fields(config) == {"lr": 0.1}
    first, second = ADDED_FIELDS[0][0], ADDED_FIELDS[1][0]
    assert result_fields({**config, second: 7}) == {"lr": 0.1, second: 7}      # another value counts
    as_of_first = result_fields(config, as_of=first)
    assert as_of_first == {"lr": 0.1, first: ADDED_FIELDS[0][1]}               # it knew the first field
    assert list(result_fields({"b": 1, "a": 2}, leave_out=())) == ["a", "b"]
    assert result_fields(config, leave_out=(), as_of=ADDED_FIELDS[-1][0]) == config
    with pytest.raises(ValueError, match="as_of"):
        result_fields(config, as_of="lr")


def test_run_key_payload_is_frozen():
    """A known payload hashes to a known key (RUNNER_VERSION, ADDED_FIELDS and NOT_IN_RESULT included)."""
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
    specs = ex.experiment_specs(name, base=ex.FINETUNE_CONFIG, regime=regime, folds=ex.K_FOLDS, seeds=seeds)
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


def _fi_subset():
    from apse.data import EmotionImageFolder, locate_dataset

    try:
        return EmotionImageFolder(locate_dataset(None))
    except FileNotFoundError:
        pytest.skip("the FI subset is not in this checkout")


def test_the_fi_models_keys_are_those_the_twitter1_runs_recorded():
    """results/twitter1's run keys hash the FI model's folder name; the fields added to the config
    after those models were trained (probe_epochs, probe_lr, train_fraction) had renamed them, so a
    re-run would have trained the FI models and every trained Twitter I row again."""
    from apse.transfer import fi_models

    recorded = {json.loads(p.read_text())["fi_model"] for p in (RESULTS / "twitter1" / "runs").glob("*.json")}
    recorded.discard(None)
    if not recorded:
        pytest.skip("no results/twitter1/runs in this checkout")
    samples = _fi_subset().samples
    now = {f"{v}-{fi_models.fi_model_key(fi_models.fi_model_config(v), samples)}" for v in fi_models.FI_VARIANTS}
    assert now == recorded


def test_the_notebooks_model_key_is_the_one_chapter_8_prints(monkeypatch):
    """The cpu mode's fine-tuned APSE model is cached under the key chapter 8 prints (its rule keeps
    the device and the worker counts; a config field added later, at its old value, leaves it)."""
    from apse import notebook

    _fi_subset()
    monkeypatch.setenv("APSE_MODE", "cpu")
    settings = notebook.setup(quiet=True)
    key = notebook.trained_model_key(settings.finetune_config(), settings.dataset())
    assert key == "91603cbafcd9ba22"
    assert key in (ex.REPO_ROOT / "book" / "08_attention.ipynb").read_text()
