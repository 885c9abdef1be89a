"""apse.experiments.reports: the DataFrames chapter 13 shows, from run records written by the runner (stub runs)."""
import pytest

import apse.experiments as ex
from apse.experiments.reports import by_fold, paired_table, regime_table


def _fake_runs(tmp_path, regime, value):
    """Every core run with test mAP8 = value(variant, fold) and ANMRR = 1 - mAP8."""
    def execute(spec, ctx):
        v = value(spec.variant.name, spec.fold)
        metrics = {m: 0.5 for m in ex.METRICS}
        metrics.update(mAP8=v, ANMRR=1 - v)
        return {"test_metrics": metrics, "val_metrics": metrics, "chosen_epoch": 1}

    ex.run_experiment("core", folds=3, results_dir=tmp_path, execute=execute, log=lambda m: None,
                      regime=regime, only=["npair", "apse-gep"])


def test_regime_and_paired_tables_compute_from_the_records(tmp_path):
    _fake_runs(tmp_path, "frozen", lambda v, f: 0.5 + 0.01 * f + (0.02 if v == "apse-gep" else 0.0))
    # fine-tuned: APSE gains 0.1 on folds 0 and 1 and loses 0.05 on fold 2
    _fake_runs(tmp_path, "finetune", lambda v, f: 0.5 + 0.01 * f + (0.0 if v == "npair" else
                                                                      (0.12 if f < 2 else -0.03)))
    assert by_fold("core", "frozen", results_dir=tmp_path)["npair"] == \
        pytest.approx({(0, 0): 0.5, (1, 0): 0.51, (2, 0): 0.52})

    table = regime_table("core", ("frozen", "finetune"), ("mAP8",), variants=["npair", "apse-gep"],
                         results_dir=tmp_path)
    assert table.loc["N-pair loss (linear floor)", ("frozen, 224 px", "mAP8")] == "0.510\u00a0±\u00a00.010"
    assert table.loc["APSE + GEP (TMM)", ("fine-tuned, 160 px", "runs")] == 3

    pairs = [(("apse-gep", "finetune"), ("npair", "finetune")),
             (("apse-gep", "finetune"), ("apse-gep", "frozen"))]
    paired = paired_table("core", pairs, ("mAP8", "ANMRR"), results_dir=tmp_path)
    first, second = paired.iloc[0], paired.iloc[1]
    # differences 0.12, 0.12, -0.03: mean 0.07, sample std 0.0866, se 0.05; 2 of 3 folds won
    assert first["mAP8: a - b"] == "+0.070\u00a0±\u00a00.050" and first["mAP8: a wins"] == "2 / 3"
    # ANMRR = 1 - mAP8: lower is better, so APSE still wins the same folds with a negative difference
    assert first["ANMRR: a - b"] == "-0.070\u00a0±\u00a00.050" and first["ANMRR: a wins"] == "2 / 3"
    # against its frozen self: 0.10, 0.10, -0.05 -> +0.050
    assert second["mAP8: a - b"] == "+0.050\u00a0±\u00a00.050" and second["mAP8: a wins"] == "2 / 3"
    long = regime_table("core", ("frozen", "finetune", "probe"), ("mAP8",), results_dir=tmp_path,
                        long=True)
    assert list(long.index) == [(v, r) for v in ("N-pair loss (linear floor)", "APSE + GEP (TMM)")
                                for r in ("frozen, 224 px", "fine-tuned, 160 px")]   # no probe runs
    assert long.loc[("APSE + GEP (TMM)", "frozen, 224 px"), "runs"] == 3
    # a pair with no runs in one regime reads "—"
    empty = paired_table("core", [(("npair", "probe"), ("npair", "frozen"))], ("mAP8",),
                         results_dir=tmp_path)
    assert empty.iloc[0]["mAP8: a - b"] == "—"


def test_heads_table_and_validation_sweep(tmp_path):
    from apse.experiments.reports import heads_table, validation_sweep

    def execute(spec, ctx):
        conf = 0.5 + 0.1 * spec.fold
        heads = {"test": {"polarity_accuracy": 0.6, "polarity_top_confidence": conf,
                          "emotion_accuracy": 0.4, "emotion_top_confidence": 0.2}}
        m = {k: 0.5 for k in ex.METRICS}
        return {"test_metrics": m, "val_metrics": m, "chosen_epoch": 2, "attention_heads": heads,
                "val_curve": [0.3, 0.41234, 0.35], "probe_val": 0.33}

    sweep = tmp_path / "sweep"
    ex.run_experiment("core", folds=2, results_dir=sweep / "lr0.1", execute=execute, log=lambda m: None,
                      regime="finetune", only=["apse-gep"])
    heads = heads_table([("core", "apse-gep", "finetune"), ("core", "apse-gep", "frozen")],
                        results_dir=sweep / "lr0.1")
    first = heads.iloc[0]
    assert first["runs"] == 2 and first["polarity head: top confidence (uniform 0.5)"] == pytest.approx(0.55)
    assert heads.iloc[1]["runs"] == 0                      # no frozen runs there
    table = validation_sweep(sweep)
    assert len(table) == 2 and list(table["best val"]) == [0.412, 0.412]
    assert table.index[0] == ("lr0.1", "APSE + GEP (TMM)", 0) and table.iloc[0]["probe val"] == 0.33
    assert "test" not in " ".join(table.columns)           # held-out numbers are not part of a sweep


def test_markdown_table_reads_the_first_pipe_table(tmp_path):
    from apse.experiments.reports import markdown_table

    text = ("# title\n\nsome line\n\n| loss | lr | mAP8 |\n|---|---|---|\n| softmax | 0.05 | 0.5487 |\n"
            "| ep | 0.2 | 0.5 ± 0.1 |\n\n| other | table |\n|---|---|\n| x | y |\n")
    path = tmp_path / "lr.md"
    path.write_text(text)
    df = markdown_table(path)
    assert list(df.columns) == ["lr", "mAP8"] and list(df.index) == ["softmax", "ep"]
    assert df.loc["ep", "mAP8"] == "0.5 ± 0.1"
    assert markdown_table(text).equals(df)
    with pytest.raises(ValueError, match="no markdown table"):
        markdown_table("just text\nno table")
