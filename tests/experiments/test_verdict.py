"""The answer's forest plot: paired differences to the floor and their two intervals."""
import math

import pytest

from apse.experiments.reports import by_fold
from apse.experiments.stats import fold_differences, paired_difference
from apse.experiments.verdict import corrected_interval, forest_frame, plot_forest, verdict_numbers


def test_corrected_interval_by_hand():
    d = [0.1, 0.2, 0.3, 0.0, 0.4]
    mean, low, high = corrected_interval(d, 0.0)
    # mean 0.2, sample std sqrt(0.025), t(0.975, 4) = 2.7764
    half = 2.7764451 * math.sqrt(0.025) / math.sqrt(5)
    assert mean == pytest.approx(0.2)
    assert (low, high) == pytest.approx((0.2 - half, 0.2 + half), abs=1e-6)
    # Nadeau-Bengio: variance (1/k + n2/n1) s^2 instead of s^2 / k
    _, low_c, high_c = corrected_interval(d, 0.25)
    half_c = 2.7764451 * math.sqrt((0.2 + 0.25) * 0.025)
    assert (low_c, high_c) == pytest.approx((0.2 - half_c, 0.2 + half_c), abs=1e-6)
    assert high_c - low_c > high - low
    with pytest.raises(ValueError, match="two folds"):
        corrected_interval([0.1], 0.2)


def test_fold_differences_average_seeds_within_a_fold():
    a = {(0, 0): 1.0, (0, 1): 3.0, (1, 0): 2.0, (2, 0): 5.0}
    b = {(0, 0): 0.0, (0, 1): 1.0, (1, 0): 2.5}
    assert fold_differences(a, b) == {0: 1.5, 1: -0.5}


@pytest.fixture(scope="module")
def frame():
    return forest_frame("core", ("frozen",), ("mAP8", "ANMRR"), rows=("apse-gep", "ep-so"))


def test_forest_frame_matches_the_paired_table(frame):
    line = frame[(frame.row == "apse-gep") & (frame.metric == "mAP8")].iloc[0]
    runs = by_fold("core", "frozen", "mAP8")
    d = paired_difference(runs["apse-gep"], runs["npair"])
    assert line["mean"] == pytest.approx(d["mean"])
    assert line["wins"] == d["wins"] and line["folds"] == d["n_folds"]
    # the corrected interval contains the plain one, both around the mean
    assert line["low_corrected"] < line["low"] < line["mean"] < line["high"] < line["high_corrected"]
    # the papers' APSE + GEP (TMM Table I) minus their N-pair
    assert line["paper"] == pytest.approx(0.7433 - 0.5217, abs=1e-4)


def test_a_lower_is_better_win_is_a_negative_difference(frame):
    line = frame[(frame.row == "ep-so") & (frame.metric == "ANMRR")].iloc[0]
    runs = by_fold("core", "frozen", "ANMRR")
    diffs = fold_differences(runs["ep-so"], runs["npair"]).values()
    assert line["wins"] == sum(x < 0 for x in diffs)


def test_unknown_rows_are_named():
    with pytest.raises(ValueError, match="no variant"):
        forest_frame("core", ("frozen",), rows=("apse-xyz",))


def test_plot_and_glue_values(frame):
    fig = plot_forest(frame)
    assert len(fig.axes) == 2
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 2 and all(t.endswith("/5") for t in texts)
    numbers = verdict_numbers(frame)
    assert numbers["mAP8_frozen_won"].endswith("of 5")
    assert numbers["mAP8_frozen_paper"] == "+0.222"


def test_metric_difference_counts_a_lower_value_as_a_win_for_lower_is_better_metrics():
    from apse.experiments.stats import metric_difference

    a = {(0, 0): 0.2, (1, 0): 0.5, (2, 0): 0.1}
    b = {(0, 0): 0.3, (1, 0): 0.4, (2, 0): 0.3}
    higher = metric_difference(a, b, "mAP8")
    lower = metric_difference(a, b, "ANMRR")
    assert higher["mean"] == pytest.approx(lower["mean"]) == pytest.approx(-0.2 / 3)
    assert (higher["wins"], lower["wins"]) == (1, 2)
    assert higher["se"] == pytest.approx(lower["se"])


def test_unsigned_zero_only_drops_the_sign_of_a_rounded_zero():
    from apse.experiments.stats import unsigned_zero

    assert unsigned_zero("-0.000 ± 0.003, +0.00 and -0.0001") == "0.000 ± 0.003, 0.00 and -0.0001"
    assert unsigned_zero("-0.049 to +0.013 (10-0.000)") == "-0.049 to +0.013 (10-0.000)"
