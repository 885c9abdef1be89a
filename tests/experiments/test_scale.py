"""The "Is it the data?" reports (apse.experiments.scale) on hand-built run records."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from apse.config import load_config
from apse.experiments import expand, get_experiment
from apse.experiments.regimes import DEFAULT_BASE
from apse.experiments.scale import curve_frame, gap_summary, gap_trend, pooling_table, t_interval, tuning_table
from apse.io import write_json

SIZES = {0.125: 48, 0.25: 96, 0.5: 192, 0.75: 288, 1.0: 384}


def write_records(root: Path, name: str, metrics_of) -> None:
    """One record per run of experiment ``name`` (as the runner writes them), metrics from a rule."""
    for spec in expand(get_experiment(name), load_config(DEFAULT_BASE)):
        variant = spec.variant
        record = {"experiment": name, "variant": variant.name, "fold": spec.fold, "seed": spec.seed,
                  "key": spec.key, "config": spec.config.to_dict(),
                  "split": {"train": SIZES.get(spec.config.train_fraction, 384), "val": 20, "test": 100},
                  **metrics_of(variant, spec.fold)}
        write_json(root / name / "runs" / spec.filename, record)


def curve_metrics(variant, fold):
    row, _, _ = variant.name.rpartition("-p")
    n = SIZES[variant.param]
    base = 0.3 + 0.01 * fold
    # APSE's gap to N-pair grows by exactly 0.02 per doubling of n; EP sits 0.01 above N-pair
    value = {"npair": base, "ep-so": base + 0.01, "apse-gep": base - 0.1 + 0.02 * math.log2(n / 48)}[row]
    test = {"mAP8": value, "mAP2": value + 0.3, "MAP@R": value / 2}
    if "+" in (get_experiment(variant_experiment[0]).data or ""):
        # pooled: FI queries gain 0.005, FlickrLDL queries lose 0.01
        return {"test_metrics": test, "test_metrics_by_source": {
            "fi-subset": {k: v + 0.005 for k, v in test.items()},
            "flickrldl": {k: v - 0.01 for k, v in test.items()}}}
    return {"test_metrics": test}


variant_experiment = ["curve-fi"]


@pytest.fixture()
def curves(tmp_path):
    for name in ("curve-fi", "curve-flickrldl", "curve-pooled"):
        variant_experiment[0] = name
        write_records(tmp_path, name, curve_metrics)
    return curve_frame(tmp_path)


def test_curve_frame_gaps_and_trend(curves):
    assert set(curves["queries"]) == {"FI subset", "FlickrLDL (861-image part)"}
    assert len(curves) == 3 * 5 * 5 * 4  # rows x fractions x folds x (FI, FlickrLDL, pooled twice)
    gaps = gap_summary(curves)
    at = gaps[(gaps["metric"] == "mAP8") & (gaps["fraction"] == 1.0)]
    assert np.allclose(at["gap"], -0.1 + 0.02 * 3)  # 384 = 48 x 2^3
    assert (at["folds won"] == "0 / 5").all()
    trend = gap_trend(curves)
    assert np.allclose(trend["slope per doubling"], 0.02)
    assert (trend["folds with a rising gap"] == "5 / 5").all()


def test_pooling_table_is_paired_per_source(curves):
    table = pooling_table(curves)
    fi = table.loc[("FI subset", "N-pair, SO (floor)")]
    flickr = table.loc[("FlickrLDL (861-image part)", "APSE + GEP")]
    assert fi["mAP8: pooled - alone"].startswith("+0.005") and fi["mAP8: pooled wins"] == "5 / 5"
    assert flickr["mAP8: pooled - alone"].startswith("-0.010") and flickr["mAP8: pooled wins"] == "0 / 5"


def test_tuning_chooses_on_validation_only(tmp_path):
    def metrics(variant, fold):
        t = variant.param
        # validation prefers trial 5; the held-out folds would prefer trial 9: the choice must be 5
        val = 0.5 if t == 5 else 0.3
        test = 0.9 if t == 9 else 0.4 + 0.001 * t + (0.02 if variant.name.startswith("apse") else 0.0)
        return {"val_metrics": {"mAP8": val}, "test_metrics": {"mAP8": test, "mAP2": test + fold * 0.01}}

    write_records(tmp_path, "tuning", metrics)
    table = tuning_table(tmp_path)
    assert (table["chosen trial"] == 5).all() and (table["trials"] == 12).all()
    assert table.loc["APSE + GEP", "mAP8 (chosen)"] == "0.425 ± 0.000"
    assert table.loc["N-pair, SO (floor)", "mAP8 (book's)"] == "0.401 ± 0.000"
    from apse.experiments.scale import tuned_pairs
    pairs = tuned_pairs(table, tmp_path)
    assert pairs.iloc[-1]["mAP8: a - b"].startswith("+0.020") and pairs.iloc[-1]["mAP8: a wins"] == "5 / 5"


def test_t_interval_matches_the_formula():
    mean, low, high = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4) x s / sqrt(n)
    assert mean == 3.0 and low == pytest.approx(3 - half) and high == pytest.approx(3 + half)
    assert math.isnan(t_interval([1.0])[1])


def test_learning_curve_figure_has_a_panel_per_metric_and_source(curves):
    import matplotlib
    matplotlib.use("Agg")
    from apse.experiments.scale import plot_learning_curves

    fig = plot_learning_curves(curves)
    assert len(fig.axes) == 6
    assert fig.axes[0].get_title() == "FI subset queries"
    assert fig.axes[-1].get_xscale() == "log"
    # solid (alone) and dashed (pooled) lines for each of the three rows in a metric panel
    assert len(fig.axes[0].get_lines()) == 6


def test_regime_ends_agree_with_the_answers_forest_frame():
    # the full-size fine-tuned FI point of the curves is chapter 13's fine-tuned comparison: the
    # same runs (same keys), so the same gap, computed by two routes
    from apse.experiments.scale import regime_ends
    from apse.experiments.verdict import forest_frame

    ends = regime_ends()
    assert set(ends.regime) == {"frozen", "fine-tuned"}
    full = ends[(ends.regime == "fine-tuned") & (ends.queries == "FI subset") & (ends.metric == "mAP8")
                & (ends.fraction == 1.0)].iloc[0]
    line = forest_frame("core", ("finetune",), ("mAP8",), rows=("apse-gep",)).iloc[0]
    assert full.gap == pytest.approx(line["mean"], abs=1e-9)
    # only the fractions that ran fine-tuned, each source against itself
    assert set(ends.fraction) == {0.125, 1.0} and (ends.queries == ends["training data"]).all()


def test_flickrldl_floors_pair_softmax_with_both_rows_per_regime(tmp_path):
    from apse.experiments.scale import flickrldl_floors

    def metrics(variant, fold):
        npair = 0.5 + 0.01 * fold
        value = {"npair": npair, "softmax": npair + 0.03,
                 # APSE + GEP beats softmax on fold 0 only
                 "apse-gep": npair + 0.03 + (0.02 if fold == 0 else -0.06)}.get(variant.name, 0.4)
        return {"test_metrics": {"mAP8": value, "mAP2": value + 0.3}}

    write_records(tmp_path, "flickrldl", metrics)
    facts = flickrldl_floors(tmp_path)
    assert facts["fl_softmax_frozen_mAP8"] == "+0.030 ± 0.000"
    assert facts["fl_softmax_frozen_mAP8_won"] == "5 of 5"
    # differences +0.02, -0.06 x 4: mean -0.044, sample std 0.0358, standard error 0.016
    assert facts["fl_gep_softmax_frozen_mAP8"] == "-0.044 ± 0.016"
    assert facts["fl_gep_softmax_frozen_mAP8_won"] == "1 of 5"
    assert not any("finetune" in k for k in facts)  # no fine-tuned runs: that regime is left out
    # the same differences as numbers, which the chapter asserts on
    from apse.experiments.scale import flickrldl_floor_differences

    d = flickrldl_floor_differences(tmp_path)["fl_gep_softmax_frozen"]["mAP8"]
    assert d["mean"] == pytest.approx(-0.044, abs=1e-9) and (d["wins"], d["n_folds"]) == (1, 5)
    assert d["se"] == pytest.approx(0.016, abs=1e-9)
