"""Summaries rebuilt from run records (apse.experiments.load_summary) equal the files the runner wrote; the
registry; the attention and lr reports as DataFrames; agreement with the papers' orderings."""
from __future__ import annotations

import pytest

from apse import experiments as ex
from apse.experiments.reports import markdown_table
from apse.metrics import LOWER_IS_BETTER, METRIC_NAMES, metric_names

RESULTS = ex.DEFAULT_RESULTS


def _stub(spec, ctx):
    base = 0.3 + 0.01 * (sum(map(ord, spec.variant.name)) % 20)
    metrics = {m: base + 0.013 * spec.fold + 0.001 * spec.seed for m in ex.METRICS}
    val = {m: base + 0.011 * (spec.fold % 2) for m in ex.METRICS}
    heads = {"val": {"polarity_accuracy": 0.6, "emotion_accuracy": 0.3},
             "test": {"polarity_accuracy": 0.61, "polarity_top_confidence": 0.5 + 0.01 * spec.fold,
                      "emotion_accuracy": 0.2, "emotion_top_confidence": 0.13}}
    return {"test_metrics": metrics, "val_metrics": val, "chosen_epoch": 3 + spec.fold, "attention_heads": heads,
            "split": {"train": 453, "val": 28, "test": 121}, "wall_time_s": 1.5, "cpu_time_s": 1.0}


def _same_files(a, b, names=("summary.csv", "summary.md")):
    for name in names:
        assert (a / name).read_text() == (b / name).read_text(), name


@pytest.mark.parametrize("name, kwargs", [("beta", dict(folds=3, seeds=[0, 1])),
                                          ("core", dict(folds=2, regime="finetune", only=["npair", "apse-gep"])),
                                          ("ablation", dict(folds=2))])
def test_load_summary_rebuilds_what_the_runner_wrote(tmp_path, name, kwargs):
    ex.run_experiment(name, results_dir=tmp_path, execute=_stub, log=lambda m: None, command=f"cmd {name}",
                      **kwargs)
    folder = ex.regime_dir(name, kwargs.get("regime", "frozen"))
    summary = ex.load_summary(folder, results_dir=tmp_path)
    ex.write_summary(tmp_path / "again", summary.experiment, summary.rows, summary.info)
    _same_files(tmp_path / folder, tmp_path / "again")
    md = (tmp_path / folder / "summary.md").read_text().splitlines()
    assert summary.settings and all(line in md for line in summary.settings + summary.notes)
    assert summary.settings[-1] == f"- Command: `cmd {name}`"
    frame = ex.summary_frame(folder, results_dir=tmp_path)
    assert list(frame.columns) == list(ex.SUMMARY_COLUMNS)
    assert list(frame["variant"]) == [r["variant"] for r in summary.rows]


def test_summaries_in_results_are_rebuilt_from_their_runs(tmp_path):
    folders = [d.name for d in sorted(RESULTS.glob("*")) if (d / "summary.csv").is_file() and (d / "runs").is_dir()
               and ex.split_regime_dir(d.name)[0] in ex.EXPERIMENTS]
    assert "table1" in folders and "core-finetune" in folders
    for folder in folders:
        s = ex.load_summary(folder)
        ex.write_summary(tmp_path / folder, s.experiment, s.rows, s.info)
        _same_files(RESULTS / folder, tmp_path / folder)


def test_attention_and_lr_reports_are_their_dataframes(tmp_path):
    ex.run_experiment("attention", folds=2, results_dir=tmp_path, execute=_stub, log=lambda m: None)
    s = ex.load_summary("attention", results_dir=tmp_path)
    assert ex.attention_table(s.rows, s.info).equals(markdown_table(tmp_path / "attention" / "attention.md"))
    diffs, choice = ex.attention_choice(s.rows, s.info)
    text = (tmp_path / "attention" / "attention.md").read_text().splitlines()
    assert choice in text and all(d in text for d in diffs) and len(diffs) == len(s.rows) - 1
    ex.run_experiment("lr", folds=2, results_dir=tmp_path, execute=_stub, log=lambda m: None)
    s = ex.load_summary("lr", results_dir=tmp_path)
    assert ex.lr_table(s.rows, s.info).equals(markdown_table(tmp_path / "lr" / "lr.md"))
    assert ex.lr_intro(s.info) in (tmp_path / "lr" / "lr.md").read_text()


def test_agreement_counts_distinct_runs_once(tmp_path):
    ex.run_experiment("ablation", folds=2, results_dir=tmp_path, execute=_stub, log=lambda m: None)
    s = ex.load_summary("ablation", results_dir=tmp_path)
    distinct = [r["variant"] for r in s.distinct_rows()]
    assert "npair-so" in distinct and "at-npair-so" not in distinct and "at-ep-so" not in distinct
    rep = ex.ordering_report(s.distinct_rows(), "mAP8")
    row = ex.agreement(s, "mAP8")
    assert row["experiment"] == "ablation" and row["variants"] == rep["n"]
    assert row["pairs ordered as in the paper"] + row["pairs reversed"] <= rep["n"] * (rep["n"] - 1) // 2
    assert row["pairs reversed"] == len(rep["swapped"]) >= row["reversed beyond ± std"]
    table = ex.agreement_table(["ablation", "beta"], results_dir=tmp_path)
    assert list(table["experiment"]) == ["ablation", "ablation"]          # beta has no runs here


def test_registry_and_regime_folders():
    assert set(ex.ORDER) == set(ex.EXPERIMENTS) and ex.ORDER == ex.run_order()
    assert list(ex.EXPERIMENTS)[:3] == ["table1", "ablation", "beta"]     # the CLI lists them in this order
    with pytest.raises(ValueError, match="registered already"):
        ex.register_experiment("table1", order=0)(lambda: None)
    for regime in ex.REGIMES:
        assert ex.split_regime_dir(ex.regime_dir("core", regime)) == ("core", regime)
    # no copied option lists: the tables show the papers' metrics, read from the metric registry
    assert ex.METRICS == METRIC_NAMES == metric_names()[:len(METRIC_NAMES)] and ex.LOWER_IS_BETTER == LOWER_IS_BETTER
