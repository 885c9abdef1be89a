"""apse.diagrams.draw_tiers / draw_ranking: the cells drawn follow the tiers of the labels given."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from apse.diagrams import draw_ranking, draw_tiers, tier_order  # noqa: E402
from apse.emotions import EMOTION_COLORS, EMOTIONS  # noqa: E402
from apse.plotting import TIER_COLORS  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def patches(fig, prefix):
    """{gid: patch} for the patches of ``fig`` whose gid starts with ``prefix``."""
    return {p.get_gid(): p for ax in fig.axes for p in ax.patches
            if (p.get_gid() or "").startswith(prefix)}


def test_tier_order_lists_the_emotion_then_its_polarity_then_the_other():
    assert tier_order("awe") == [
        ("awe", "same emotion"), ("amusement", "same polarity"), ("contentment", "same polarity"),
        ("excitement", "same polarity"), ("fear", "opposite polarity"),
        ("anger", "opposite polarity"), ("disgust", "opposite polarity"),
        ("sadness", "opposite polarity")]
    order = tier_order(EMOTIONS.index("disgust"))
    assert [e for e, _ in order[:4]] == ["disgust", "fear", "anger", "sadness"]
    assert {t for _, t in order[4:]} == {"opposite polarity"}
    with pytest.raises(ValueError):
        tier_order(8)


@pytest.mark.parametrize("query", ["awe", "sadness"])
def test_tiers_draw_eight_emotion_cells_in_rank_order_and_three_tier_bars(query):
    fig = draw_tiers(query)
    cells = patches(fig, "emotion:")
    assert len(cells) == 8
    # left to right as tier_order lists them, each in its emotion's colour
    by_x = sorted(cells.values(), key=lambda p: p.get_x())
    assert [p.get_gid() for p in by_x] == [f"emotion:{e}" for e, _ in tier_order(query)]
    for e in EMOTIONS:
        assert cells[f"emotion:{e}"].get_facecolor() == to_rgba(EMOTION_COLORS[e])
    bars = patches(fig, "tier:")
    assert set(bars) == {f"tier:{t}" for t in TIER_COLORS}
    for tier, color in TIER_COLORS.items():
        bar = bars[f"tier:{tier}"]
        assert bar.get_facecolor() == to_rgba(color)
        # each bar spans exactly the cells of its tier
        mine = [cells[f"emotion:{e}"] for e, t in tier_order(query) if t == tier]
        assert bar.get_x() == pytest.approx(min(p.get_x() for p in mine))
        assert bar.get_x() + bar.get_width() == pytest.approx(
            max(p.get_x() + p.get_width() for p in mine))
    assert patches(fig, "query")["query"].get_facecolor() == to_rgba(EMOTION_COLORS[query])


def test_ranking_draws_one_cell_per_result_coloured_by_its_tier():
    queries = ["amusement", 4]                                # by name or by index (fear)
    ranked = [["amusement", "awe", "fear", "amusement"], [4, 7, 0]]
    fig = draw_ranking(queries, ranked, notes=["AP 1.00", "AP 1.00"])
    cells = patches(fig, "rank:")
    assert len(cells) == 4 + 3
    green, blue, red = (to_rgba(TIER_COLORS[t]) for t in TIER_COLORS)
    expected = {"rank:0:1": green, "rank:0:2": blue, "rank:0:3": red, "rank:0:4": green,
                "rank:1:1": green, "rank:1:2": blue, "rank:1:3": red}
    assert {gid: p.get_facecolor() for gid, p in cells.items()} == expected
    # rank k is the k-th cell from the left; the first query is the top row
    assert [cells[f"rank:0:{k}"].get_x() for k in range(1, 5)] == sorted(
        cells[f"rank:0:{k}"].get_x() for k in range(1, 5))
    assert cells["rank:0:1"].get_y() > cells["rank:1:1"].get_y()
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "amusement query" in texts and "fear query" in texts and "AP 1.00" in texts
    assert texts.count("sadn") == 1                       # each cell names its emotion


def test_ranking_refuses_a_ranking_per_query_mismatch():
    with pytest.raises(ValueError, match="2 queries but 1 rankings"):
        draw_ranking([0, 1], [[0, 1]])
