"""Tests for apse.metrics: hand-computed values on tiny rankings, and a naive loop vs the vectorised code.

The metrics are the papers' eight (METRIC_NAMES) and, beside them at the emotion level, MAP@R and RP
(Musgrave, Belongie and Lim, "A Metric Learning Reality Check", ECCV 2020): ALL_NAMES.

Labels are emotion indices in the papers' order: 0-3 positive (amusement, contentment, awe,
excitement), 4-7 negative (fear, anger, disgust, sadness).
"""
import math
import warnings

import numpy as np
import pytest
import torch

from apse import metrics
from apse.emotions import polarity_labels
from apse.metrics import (
    LOWER_IS_BETTER,
    METRIC_NAMES,
    evaluate_embeddings,
    metric_names,
    pairwise_distances,
    per_query_metrics,
    rank_order,
    ranked_relevance,
    retrieval_metrics,
)


#: every metric at the emotion level: the papers' eight, then MAP@R and RP, then Opp@5
ALL_NAMES = metric_names("emotion")
REALITY_CHECK = ("MAP@R", "RP")


def ranking_distances(orders, g):
    """Distance rows that rank the gallery in the given orders (order[r] = gallery index at rank r+1)."""
    d = torch.empty(len(orders), g, dtype=torch.float64)
    for i, order in enumerate(orders):
        for r, j in enumerate(order):
            d[i, j] = float(r + 1)
    return d


def L2(k):
    return 1.0 / math.log2(k)


# ---------------------------------------------------------------- hand-computed values


def test_hand_computed_two_queries_six_items():
    gallery = [0, 4, 0, 1, 5, 0]
    # query A (label 0) ranks the gallery in index order: labels 0 4 0 1 5 0
    # query B (label 4) ranks it as indices 4 1 3 0 5 2: labels 5 4 1 0 0 0
    d = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                      [0.5, 0.2, 0.9, 0.3, 0.1, 0.7]])
    per = per_query_metrics(d, [0, 4], gallery)
    m = retrieval_metrics(d, [0, 4], gallery)
    assert set(m) == set(ALL_NAMES) and all(isinstance(v, float) for v in m.values())
    assert tuple(m) == ALL_NAMES == METRIC_NAMES + REALITY_CHECK + ("Opp@5",)  # the papers' first

    # A: emotion rel = 1 0 1 0 0 1, n = 3, G = 6
    #    AP = (1/1 + 2/3 + 3/6)/3 = 0.722222
    #    polarity rel = 1 0 1 1 0 1, n = 4: AP2 = (1 + 2/3 + 3/4 + 4/6)/4 = 0.770833
    #    NN = 1; FT = hits@3/3 = 2/3; ST = hits@6/3 = 1
    #    DCG = (1 + 1/log2 3 + 1/log2 6) / (1 + 1/log2 2 + 1/log2 3) = 0.766947
    #    F1, K = min(32, 6) = 6: P = 3/6, R = 1 -> 2PR/(P+R) = 2/3
    #    R = n = 3, top 3 = 1 0 1: MAP@R = (1/3)(1/1 + 2/3) = 5/9; RP = hits@3/3 = 2/3
    #    top 5 polarity = 1 0 1 1 0: Opp@5 = 2/5
    # B: emotion rel = 0 1 0 0 0 0, n = 1
    #    AP = (1/2)/1 = 0.5; polarity rel = 1 1 0 0 0 0, n = 2: AP2 = 1
    #    NN = 0; FT = hits@1/1 = 0; ST = hits@2/1 = 1; DCG = (1/log2 2)/1 = 1
    #    F1: P = 1/6, R = 1 -> 2/7 = 0.285714
    #    R = 1, top 1 = 0: MAP@R = 0, RP = 0; top 5 polarity = 1 1 0 0 0: Opp@5 = 3/5
    # ANMRR: GTM = max(3, 1) = 3
    #    A: K = min(12, 6) = 6, ranks 1 3 6 (none > 6), AVR = 10/3,
    #       NMRR = (10/3 - 0.5 - 1.5) / (7.5 - 0.5 - 1.5) = (4/3)/5.5 = 0.242424
    #    B: K = min(4, 6) = 4, rank 2, AVR = 2, NMRR = (2 - 0.5 - 0.5)/(5 - 0.5 - 0.5) = 0.25
    expected_a = dict(mAP8=0.722222, mAP2=0.770833, NN=1, FT=2 / 3, ST=1,
                      DCG=(1 + L2(3) + L2(6)) / (2 + L2(3)), F1=2 / 3, ANMRR=(4 / 3) / 5.5,
                      **{"MAP@R": 5 / 9, "RP": 2 / 3, "Opp@5": 2 / 5})
    expected_b = dict(mAP8=0.5, mAP2=1, NN=0, FT=0, ST=1, DCG=1, F1=2 / 7, ANMRR=0.25, **{"MAP@R": 0, "RP": 0, "Opp@5": 3 / 5})
    assert expected_a["DCG"] == pytest.approx(0.766947, abs=1e-6)
    for name in ALL_NAMES:
        assert per[name][0].item() == pytest.approx(expected_a[name], abs=1e-6), name
        assert per[name][1].item() == pytest.approx(expected_b[name], abs=1e-6), name
        assert m[name] == pytest.approx((expected_a[name] + expected_b[name]) / 2, abs=1e-6), name

    # F1 cutoff is a parameter: K = 2 -> A: hits 1, P = 1/2, R = 1/3, F1 = 2*(1/6)/(5/6) = 0.4;
    # B: hits 1, P = 1/2, R = 1, F1 = 2/3
    per2 = per_query_metrics(d, [0, 4], gallery, f1_k=2)
    assert per2["F1"].tolist() == pytest.approx([0.4, 2 / 3])


def test_ties_are_broken_by_gallery_order():
    # all distances equal: the ranking is the gallery order itself
    d = torch.zeros(1, 4)
    # gallery labels 1 0 0 1, query label 0: rel = 0 1 1 0, n = 2
    #   AP = (1/2 + 2/3)/2 = 0.583333, NN = 0, FT = hits@2/2 = 0.5
    m = retrieval_metrics(d, [0], [1, 0, 0, 1])
    assert m["mAP8"] == pytest.approx(7 / 12) and m["NN"] == 0 and m["FT"] == 0.5
    # same multiset of labels, other order 0 1 1 0: rel = 1 0 0 1
    #   AP = (1 + 2/4)/2 = 0.75, NN = 1, FT = 0.5
    m = retrieval_metrics(d, [0], [0, 1, 1, 0])
    assert m["mAP8"] == pytest.approx(0.75) and m["NN"] == 1 and m["FT"] == 0.5
    # a partial tie on a longer row: items 2..9 at distance 1 (labels alternate), item 0 and 1 after
    labels = [0, 0] + [3, 0] * 4
    d = torch.tensor([[2.0, 2.0] + [1.0] * 8])
    # ranking: indices 2..9 then 0, 1 -> labels 3 0 3 0 3 0 3 0 0 0 : relevant ranks 2 4 6 8 9 10
    ranks = [2, 4, 6, 8, 9, 10]
    ap = sum((i + 1) / r for i, r in enumerate(ranks)) / len(ranks)
    assert retrieval_metrics(d, [0], labels)["mAP8"] == pytest.approx(ap)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exclude_self_leave_one_out(dtype):
    # four items on a line at x = 0, 1, 3, 10 with labels 0 0 4 0; every item queries the others
    x = torch.tensor([[0.0], [1.0], [3.0], [10.0]], dtype=dtype)
    labels = [0, 0, 4, 0]
    d = pairwise_distances(x, x)
    d.fill_diagonal_(-1.0)  # the self column is removed by position, whatever its distance
    with pytest.warns(RuntimeWarning, match="1 of 4 queries"):
        m, per = retrieval_metrics(d, labels, labels, exclude_self=True, return_per_query=True)
    # q0: others by distance 1 (d1, lab 0), 2 (d3, lab 4), 3 (d10, lab 0): rel 1 0 1, n = 2, G = 3
    #     AP = (1 + 2/3)/2 = 5/6, NN = 1, FT = 1/2, ST = hits@min(4, 3)/2 = 1
    # q1: others 0 (d1), 2 (d2), 3 (d9): rel 1 0 1 -> same as q0
    # q2 (fear): no other fear image and no other negative image -> n = 0, left out (NaN)
    # q3: others 2 (d7), 1 (d9), 0 (d10): rel 0 1 1: AP = (1/2 + 2/3)/2 = 7/12, NN = 0, FT = 1/2, ST = 1
    assert torch.isnan(per["mAP8"][2]) and torch.isnan(per["mAP2"][2]) and torch.isnan(per["ANMRR"][2])
    assert m["mAP8"] == pytest.approx((5 / 6 + 5 / 6 + 7 / 12) / 3)  # 0.75
    assert m["mAP2"] == pytest.approx(0.75)  # polarity relevance is the same as emotion here
    assert m["NN"] == pytest.approx(2 / 3)
    assert m["FT"] == pytest.approx(0.5) and m["ST"] == pytest.approx(1.0)
    # DCG: q0, q1 = (1 + 1/log2 3)/(1 + 1); q3 = (1/log2 2 + 1/log2 3)/2 -> all 0.815465
    assert m["DCG"] == pytest.approx((1 + L2(3)) / 2)
    # F1, K = min(32, 3) = 3: hits 2, n 2 -> P = 2/3, R = 1, F1 = 0.8
    assert m["F1"] == pytest.approx(0.8)
    # ANMRR: GTM = 2, K = min(8, 4) = 4 > G: nothing replaced
    #   q0, q1: AVR = (1 + 3)/2 = 2, NMRR = (2 - 0.5 - 1)/(5 - 0.5 - 1) = 1/7
    #   q3: AVR = 2.5, NMRR = 1/3.5 = 2/7  -> ANMRR = (1/7 + 1/7 + 2/7)/3 = 4/21
    assert m["ANMRR"] == pytest.approx(4 / 21)
    # MAP@R (R = n = 2): q0, q1: top 2 = 1 0 -> (1/2)(1) = 1/2; q3: top 2 = 0 1 -> (1/2)(1/2) = 1/4
    # RP = hits@2/2 = 1/2 for all three (= FT); q2 has R = 0: NaN, left out
    assert torch.isnan(per["MAP@R"][2]) and torch.isnan(per["RP"][2])
    assert m["MAP@R"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 4) / 3) and m["RP"] == pytest.approx(0.5)

    # without exclude_self each query finds itself first (its distance -1 is the smallest)
    m_in = retrieval_metrics(d, labels, labels)
    assert m_in["NN"] == 1.0


def test_exclude_self_needs_square_problem():
    with pytest.raises(ValueError, match="exclude_self"):
        retrieval_metrics(torch.rand(3, 5), [0, 1, 2], [0, 1, 2, 3, 4], exclude_self=True)
    with pytest.raises(ValueError, match="exclude_self"):
        retrieval_metrics(torch.rand(3, 3), [0, 1, 2], [0, 1, 1], exclude_self=True)


def test_anmrr_k_rule_with_different_ng():
    # G = 11: four amusement (0), one fear (4), six awe (2)
    gallery = [0, 0, 2, 2, 2, 2, 2, 4, 0, 0, 2]
    # query A (label 0, NG = 4) ranks in index order: amusement at ranks 1 2 9 10
    # query B (label 4, NG = 1) puts the fear image (index 7) at rank 6
    d = ranking_distances([list(range(11)), [0, 1, 2, 3, 4, 7, 5, 6, 8, 9, 10]], 11)
    per = per_query_metrics(d, [0, 4], gallery)
    # GTM = 4.
    # A: K = min(4*4, 2*4) = 8 (the GTM bound); ranks 9, 10 > 8 -> 1.25*8 = 10
    #    AVR = (1 + 2 + 10 + 10)/4 = 5.75; NMRR = (5.75 - 0.5 - 2)/(10 - 0.5 - 2) = 3.25/7.5
    # B: K = min(4*1, 8) = 4 (the NG bound); rank 6 > 4 -> 5; AVR = 5, NMRR = (5 - 1)/(5 - 1) = 1
    assert per["ANMRR"].tolist() == pytest.approx([3.25 / 7.5, 1.0])
    m = retrieval_metrics(d, [0, 4], gallery)
    assert m["ANMRR"] == pytest.approx((3.25 / 7.5 + 1.0) / 2)  # 0.716667
    assert LOWER_IS_BETTER == {"ANMRR", "Opp@5"}


def _sorted_by_label_rankings(q_labels, g_labels, worst_first=False):
    """Rank same emotion first, then same polarity, then the rest (or the reverse)."""
    orders = []
    for ql in q_labels:
        def key(j):
            gl = g_labels[j]
            return 0 if gl == ql else (1 if (gl >= 4) == (ql >= 4) else 2)
        order = sorted(range(len(g_labels)), key=key, reverse=worst_first)
        orders.append(order)
    return ranking_distances(orders, len(g_labels))


def test_perfect_ranking():
    g = [0, 1, 2, 3, 4, 5, 6, 7] * 3 + [0, 4]
    q = [0, 3, 4, 7, 5]
    m = retrieval_metrics(_sorted_by_label_rankings(q, g), q, g)
    for name in ("mAP8", "mAP2", "NN", "FT", "ST", "DCG", "MAP@R", "RP"):
        assert m[name] == pytest.approx(1.0), name
    assert m["ANMRR"] == pytest.approx(0.0, abs=1e-12)
    # F1 at K = min(32, 26) = 26: hits = n, so F1 = 2n/(26 + n): n = 4, 3, 4, 3, 3
    assert m["F1"] == pytest.approx(np.mean([2 * n / (26 + n) for n in (4, 3, 4, 3, 3)]))


def test_reversed_ranking_extremes():
    # one query, 20 items, the 2 relevant ones (label 0) last, the others negative (label 4)
    g = [4] * 18 + [0, 0]
    d = torch.arange(20, dtype=torch.float32).unsqueeze(0)
    m = retrieval_metrics(d, [0], g)
    assert m["NN"] == 0 and m["FT"] == 0 and m["ST"] == 0 and m["MAP@R"] == 0 and m["RP"] == 0
    assert m["mAP8"] == pytest.approx((1 / 19 + 2 / 20) / 2)  # 0.076316
    assert m["mAP2"] == pytest.approx(m["mAP8"])
    assert m["DCG"] == pytest.approx((L2(19) + L2(20)) / 2)  # 0.233393
    assert m["F1"] == pytest.approx(2 * 2 / (20 + 2))  # K = 20 catches both: P = 0.1, R = 1
    # GTM = 2, K = min(8, 4) = 4, ranks 19 and 20 > 4 -> both 5: AVR = 5 and NMRR = 3.5/3.5 = 1 exactly
    assert m["ANMRR"] == pytest.approx(1.0)

    # shorter gallery: relevant at ranks 4, 5 of 5. K = 4: rank 4 stays, rank 5 -> 5
    # AVR = 4.5, NMRR = (4.5 - 1.5)/(5 - 1.5) = 6/7 = 0.857143 (near 1, not 1: rank 4 is inside K)
    m = retrieval_metrics(torch.arange(5.0).unsqueeze(0), [0], [4, 4, 4, 0, 0])
    assert m["ANMRR"] == pytest.approx(6 / 7)
    assert m["NN"] == 0

    # several queries, worst-first ordering: NN = FT = 0 for every query
    g = [0, 1, 2, 3, 4, 5, 6, 7] * 3
    q = [0, 2, 5, 7]
    m = retrieval_metrics(_sorted_by_label_rankings(q, g, worst_first=True), q, g)
    assert m["NN"] == 0 and m["FT"] == 0
    # same emotion at ranks 22..24 of 24; GTM = 3, K = min(12, 6) = 6, all ranks -> 7.5: NMRR = 1
    assert m["ANMRR"] == pytest.approx(1.0)


# ---------------------------------------------------------------- naive reference vs vectorised


def naive_metrics(dist, q_labels, g_labels, exclude_self, f1_k):
    """Straight per-query transcription of the spec with Python lists (stable sort = sorted())."""
    dist = dist.tolist()
    pol = lambda e: int(e >= 4)  # noqa: E731
    n_by_query = []
    rankings = []
    for i, ql in enumerate(q_labels):
        items = [j for j in range(len(g_labels)) if not (exclude_self and j == i)]
        items = sorted(items, key=lambda j: dist[i][j])  # stable: ties keep gallery order
        rankings.append(items)
        n_by_query.append(sum(g_labels[j] == ql for j in items))
    gtm = max(n_by_query)
    out = {name: [] for name in ALL_NAMES}
    for i, ql in enumerate(q_labels):
        items = rankings[i]
        G = len(items)
        rel = [int(g_labels[j] == ql) for j in items]
        relp = [int(pol(g_labels[j]) == pol(ql)) for j in items]

        def ap(r):
            n, hits, s = sum(r), 0, 0.0
            if n == 0:
                return float("nan")
            for k, x in enumerate(r, start=1):
                if x:
                    hits += 1
                    s += hits / k
            return s / n

        out["mAP2"].append(ap(relp))
        top = relp[:5]
        out["Opp@5"].append(1 - sum(top) / len(top) if sum(relp) else float("nan"))
        n = sum(rel)
        if n == 0:
            for name in ALL_NAMES:
                if name not in ("mAP2", "Opp@5"):
                    out[name].append(float("nan"))
            continue
        out["mAP8"].append(ap(rel))
        out["NN"].append(float(rel[0]))
        out["FT"].append(sum(rel[:n]) / n)
        out["ST"].append(sum(rel[:min(2 * n, G)]) / n)
        dcg = rel[0] + sum(rel[k - 1] / math.log2(k) for k in range(2, G + 1))
        ideal = 1 + sum(1 / math.log2(k) for k in range(2, n + 1))
        out["DCG"].append(dcg / ideal)
        K = min(f1_k, G)
        hits = sum(rel[:K])
        P, R = hits / K, hits / n
        out["F1"].append(0.0 if hits == 0 else 2 * P * R / (P + R))
        Ka = min(4 * n, 2 * gtm)
        ranks = [k if k <= Ka else 1.25 * Ka for k in range(1, G + 1) if rel[k - 1]]
        avr = sum(ranks) / n
        out["ANMRR"].append((avr - 0.5 - n / 2) / (1.25 * Ka - 0.5 - n / 2))
        out["MAP@R"].append(naive_map_at_r(rel))
        out["RP"].append(naive_r_precision(rel))
    return out


def naive_map_at_r(rel):
    """Musgrave et al. 2020, Sec. 3.2: MAP@R = 1/R sum_{k=1..R} P@k rel_k, R = number of relevant items."""
    R = sum(rel)
    if R == 0:
        return float("nan")
    total = 0.0
    for k in range(1, R + 1):
        if rel[k - 1]:
            precision_at_k = sum(rel[:k]) / k
            total += precision_at_k
    return total / R  # 1/R, not 1/(hits in the top R)


def naive_r_precision(rel):
    """R-precision: the fraction of the top R that is relevant, R = number of relevant items."""
    R = sum(rel)
    return float("nan") if R == 0 else sum(rel[:R]) / R


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])  # two ranking code paths
def test_vectorised_matches_naive(seed, exclude_self, dtype):
    rng = np.random.default_rng(seed)
    n_q = int(rng.integers(5, 30))
    n_g = n_q if exclude_self else int(rng.integers(3, 60))
    # integer distances create many ties, so the stable order matters
    dist = rng.integers(-2, 4, size=(n_q, n_g)).astype(dtype)
    if exclude_self:
        dist = (dist + dist.T) / 2
    dist[(dist == 0) & (rng.random(dist.shape) < 0.5)] = -0.0  # -0.0 and +0.0 tie
    dist[dist == 3] = np.inf
    # few labels on a small gallery so some queries have no relevant item
    g_labels = rng.integers(0, 8, size=n_g).tolist()
    q_labels = g_labels if exclude_self else rng.integers(0, 8, size=n_q).tolist()
    f1_k = int(rng.integers(1, 10))
    ref = naive_metrics(torch.tensor(dist), q_labels, g_labels, exclude_self, f1_k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means, per = retrieval_metrics(dist, np.array(q_labels), np.array(g_labels), exclude_self=exclude_self,
                                       f1_k=f1_k, chunk_size=3, return_per_query=True)
        means_one_chunk = retrieval_metrics(torch.tensor(dist), torch.tensor(q_labels),
                                            torch.tensor(g_labels), exclude_self=exclude_self, f1_k=f1_k)
    assert tuple(means) == tuple(per) == ALL_NAMES
    for name in ALL_NAMES:
        expected = np.array(ref[name], dtype=np.float64)
        np.testing.assert_allclose(per[name].numpy(), expected, rtol=1e-9, atol=1e-12, err_msg=name)
        assert means[name] == pytest.approx(float(np.nanmean(expected)), abs=1e-12), name
        assert means_one_chunk[name] == pytest.approx(means[name], abs=1e-12), name


def test_float32_and_float64_rankings_agree():
    # same values in both dtypes (exactly representable), with ties, negatives, -0.0 and infinities
    rng = np.random.default_rng(5)
    vals = np.array([-np.inf, -3.5, -1.0, -0.0, 0.0, 0.25, 1.0, 7.0, np.inf])
    d = vals[rng.integers(0, len(vals), size=(50, 300))]
    q = rng.integers(0, 8, 50)
    g = rng.integers(0, 8, 300)
    a = per_query_metrics(d.astype(np.float32), q, g, chunk_size=7)
    b = per_query_metrics(d.astype(np.float64), q, g, chunk_size=50)
    for name in ALL_NAMES:
        torch.testing.assert_close(a[name], b[name], equal_nan=True, msg=name)


def test_queries_without_relevant_items():
    d = torch.rand(3, 4)
    with pytest.warns(RuntimeWarning, match="1 of 3 queries"):
        m = retrieval_metrics(d, [0, 1, 7], [0, 1, 1, 4])  # no sadness (7) in the gallery
    assert all(math.isfinite(v) for v in m.values())
    with pytest.raises(ValueError, match="no query"):
        retrieval_metrics(d, [5, 6, 7], [0, 1, 1, 4])


def test_bad_inputs():
    with pytest.raises(ValueError, match="2-D"):
        retrieval_metrics(torch.rand(4), [0], [0, 1, 2, 3])
    with pytest.raises(ValueError, match="query_labels"):
        retrieval_metrics(torch.rand(2, 3), [0], [0, 1, 2])
    with pytest.raises(ValueError, match="0..7"):
        retrieval_metrics(torch.rand(1, 3), [0], [0, 1, 8])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(torch.tensor([[0.0, float("nan")]]), [0], [0, 1])
    with pytest.raises(ValueError, match="dimension"):
        pairwise_distances(torch.rand(2, 3), torch.rand(2, 4))


# ---------------------------------------------------------------- distances and the embed helper


def test_pairwise_distances_matches_cdist():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(37, 16, generator=gen, dtype=torch.float64)
    g = torch.randn(53, 16, generator=gen, dtype=torch.float64)
    ref = torch.cdist(q, g)
    torch.testing.assert_close(pairwise_distances(q, g), ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(pairwise_distances(q, g, chunk_size=5), ref, rtol=1e-10, atol=1e-10)
    # float32 numpy input, unit vectors as in the papers
    qn = torch.nn.functional.normalize(q.float(), dim=1)
    gn = torch.nn.functional.normalize(g.float(), dim=1)
    out = pairwise_distances(qn.numpy(), gn.numpy())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.cdist(qn, gn), rtol=1e-4, atol=1e-3)
    # identical rows: cancellation may go slightly negative before the sqrt; the clamp keeps it >= 0
    self_d = pairwise_distances(qn, qn)
    assert torch.isfinite(self_d).all() and (self_d >= 0).all()
    assert self_d.diagonal().abs().max() < 1e-3


def test_evaluate_embeddings():
    gen = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 8, (40,), generator=gen)
    emb = torch.nn.functional.normalize(torch.randn(40, 8, generator=gen) + 2 * torch.eye(8)[labels], dim=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loo = evaluate_embeddings(emb, labels)
        ref = retrieval_metrics(pairwise_distances(emb, emb), labels, labels, exclude_self=True)
        assert loo == ref
        split = evaluate_embeddings(emb[:10], labels[:10], emb[10:], labels[10:], f1_k=5)
        ref = retrieval_metrics(torch.cdist(emb[:10], emb[10:]), labels[:10], labels[10:], f1_k=5)
    for name in ALL_NAMES:
        assert split[name] == pytest.approx(ref[name], abs=1e-6)
    with pytest.raises(ValueError, match="gallery_labels"):
        evaluate_embeddings(emb, labels, emb)


# ---------------------------------------------------------------- the readable functions, one per metric


def test_each_readable_metric_on_a_hand_computed_ranking():
    gallery = [0, 4, 0, 1, 0, 5]
    # query A (amusement, 0): distances 0.3 0.1 0.3 0.2 0.9 0.5 -> ranking by distance, the tie at 0.3
    #   broken by gallery order (index 0 before 2): indices 1 3 0 2 5 4, labels 4 1 0 0 5 0
    # query B (sadness, 7): the same distances; no sadness image in the gallery
    d = torch.tensor([[0.3, 0.1, 0.3, 0.2, 0.9, 0.5]] * 2)
    assert rank_order(d).tolist() == [[1, 3, 0, 2, 5, 4]] * 2
    rel = ranked_relevance(d, [0, 7], gallery)
    assert rel.dtype == torch.bool and rel.tolist() == [[0, 0, 1, 1, 0, 1], [0] * 6]
    # same polarity: A (positive) 4- 1+ 0+ 0+ 5- 0+ -> 0 1 1 1 0 1; B (negative) -> 1 0 0 0 1 0
    rel_pol = ranked_relevance(d, polarity_labels(torch.tensor([0, 7])),
                               polarity_labels(torch.tensor(gallery)), level="polarity")
    assert rel_pol.tolist() == [[0, 1, 1, 1, 0, 1], [1, 0, 0, 0, 1, 0]]

    # A: rel = 0 0 1 1 0 1, n = 3, G = 6, relevant ranks 3 4 6
    #   AP (mAP8) = (1/3 + 2/4 + 3/6) / 3 = 0.444444
    #   NN = rel_1 = 0; FT = hits@3 / 3 = 1/3; ST = hits@min(6, 6) / 3 = 1
    #   DCG = (1/log2 3 + 1/log2 4 + 1/log2 6) / (1 + 1/log2 2 + 1/log2 3) = 1.517783 / 2.630930 = 0.576900
    #   F1, k = 4: hits@4 = 2, P = 2/4, R = 2/3, 2PR/(P+R) = (2/3)/(7/6) = 4/7; k = 32 -> K = 6:
    #     hits 3, P = 1/2, R = 1, F1 = 2/3
    #   ANMRR: GTM = 3 (B has n = 0), K = min(12, 6) = 6, no rank beyond K: AVR = 13/3,
    #     NMRR = (13/3 - 0.5 - 1.5) / (7.5 - 0.5 - 1.5) = (7/3) / 5.5 = 0.424242
    #     with gtm = 1 given: K = min(12, 2) = 2, all three ranks > 2 count 2.5: AVR = 2.5, NMRR = 1
    #   R = n = 3, top 3 = 0 0 1: MAP@R = (1/3)(P@3) = (1/3)(1/3) = 1/9; RP = hits@3/3 = 1/3
    # polarity, mAP2: A: rel = 0 1 1 1 0 1, n = 4: (1/2 + 2/3 + 3/4 + 4/6) / 4 = 0.645833
    #                 B: rel = 1 0 0 0 1 0, n = 2: (1/1 + 2/5) / 2 = 0.7
    # B has no same-emotion item: every metric with emotion relevance is NaN for it
    nan = float("nan")
    expected = {
        "map8": (metrics.map8(rel), [4 / 9, nan]),
        "map2": (metrics.map2(rel_pol), [0.645833, 0.7]),
        "nn": (metrics.nn(rel), [0.0, nan]),
        "ft": (metrics.ft(rel), [1 / 3, nan]),
        "st": (metrics.st(rel), [1.0, nan]),
        "dcg": (metrics.dcg(rel), [0.576900, nan]),
        "f1": (metrics.f1(rel, k=4), [4 / 7, nan]),
        "f1 k=32": (metrics.f1(rel), [2 / 3, nan]),
        "anmrr": (metrics.anmrr(rel), [(7 / 3) / 5.5, nan]),
        "anmrr gtm=1": (metrics.anmrr(rel, gtm=1), [1.0, nan]),
        "map_at_r": (metrics.map_at_r(rel), [1 / 9, nan]),
        "r_precision": (metrics.r_precision(rel), [1 / 3, nan]),
    }
    assert metrics.dcg(rel)[0].item() == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(6)) / (2 + 1 / math.log2(3)))
    for name, (got, want) in expected.items():
        assert got.dtype == torch.float64, name
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6, err_msg=name)
    # the library's entry point gives the same per-query values
    per = per_query_metrics(d, [0, 7], gallery, f1_k=4)
    for key, name in [("mAP8", "map8"), ("mAP2", "map2"), ("NN", "nn"), ("FT", "ft"), ("ST", "st"),
                      ("DCG", "dcg"), ("F1", "f1"), ("ANMRR", "anmrr"), ("MAP@R", "map_at_r"),
                      ("RP", "r_precision")]:
        np.testing.assert_allclose(per[key].numpy(), expected[name][1], atol=1e-6, err_msg=key)
    with pytest.raises(ValueError, match="cutoff"):
        metrics.f1(rel, k=0)


def test_ranked_relevance_leave_one_out_and_levels():
    # three items on a line at 0, 1, 3 with labels 0 4 0; each queries the other two
    d = pairwise_distances(torch.tensor([[0.0], [1.0], [3.0]]), torch.tensor([[0.0], [1.0], [3.0]]))
    # item 0: 1 (d 1), 2 (d 3); item 1: 0 (d 1), 2 (d 2); item 2: 1 (d 2), 0 (d 3)
    assert rank_order(d, exclude_self=True).tolist() == [[1, 2], [0, 2], [1, 0]]
    rel = ranked_relevance(d, [0, 4, 0], [0, 4, 0], exclude_self=True)
    assert rel.tolist() == [[0, 1], [0, 0], [0, 1]]
    # polarity labels: 0 1 0 is the same ranking with polarity relevance
    pol = ranked_relevance(d, [0, 1, 0], [0, 1, 0], level="polarity", exclude_self=True)
    assert pol.tolist() == rel.tolist()
    with pytest.raises(ValueError, match=r"polarity indices in 0\.\.1"):
        ranked_relevance(d, [0, 4, 0], [0, 4, 0], level="polarity")
    with pytest.raises(ValueError, match="exclude_self"):
        rank_order(torch.rand(2, 3), exclude_self=True)
    with pytest.raises(ValueError, match="NaN"):
        rank_order(torch.tensor([[0.0, float("nan")]]))


def test_nearest_is_the_top_of_the_ranking_ties_in_gallery_order():
    """One top-k for the figures, the explorer's search and Twitter I's retrievals: ties keep gallery
    order (as the diagonal-at-infinity sort of the leave-one-out copies did), self left out on request."""
    from apse.metrics import nearest

    d = torch.tensor([[2.0, 1.0, 1.0, 0.5], [1.0, 0.0, 1.0, 3.0]])
    assert nearest(d, 3).tolist() == [[3, 1, 2], [1, 0, 2]]
    assert nearest(d, 10).tolist() == rank_order(d).tolist()            # k above the gallery: all of it
    emb = torch.tensor([[0.0], [1.0], [1.0], [3.0], [-1.0]])
    dist = pairwise_distances(emb, emb)
    by_inf = dist.double().fill_diagonal_(float("inf"))
    expected = torch.sort(by_inf, dim=1, stable=True).indices[:, :3]
    assert nearest(dist, 3, exclude_self=True).tolist() == expected.tolist()
    assert nearest(dist, 3, exclude_self=True)[1].tolist() == [2, 0, 3]   # 2 (tie with self) first


# ---------------------------------------------------------------- the fast path against the readable one


def _tied_float32_distances(rng, n_q, n_g, square):
    """Small integers (many exact ties), -0.0 beside +0.0, and +-inf."""
    d = rng.integers(-2, 4, size=(n_q, n_g)).astype(np.float32)
    if square:
        d = (d + d.T) / 2
    d[(d == 0) & (rng.random(d.shape) < 0.5)] = -0.0
    d[d == 3] = np.inf
    d[d == -2] = -np.inf
    return torch.from_numpy(d)


@pytest.mark.parametrize("n_classes", [3, 8, 20])
@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_packed_sort_ranks_exactly_as_the_stable_sort(n_classes, exclude_self, seed):
    rng = np.random.default_rng(seed)
    n_q = int(rng.integers(5, 40))
    n_g = n_q if exclude_self else int(rng.integers(2, 300))
    d = _tied_float32_distances(rng, n_q, n_g, exclude_self)
    g_lab = torch.from_numpy(rng.integers(0, n_classes, n_g))
    q_lab = g_lab if exclude_self else torch.from_numpy(rng.integers(0, n_classes, n_q))
    own = torch.arange(n_q) if exclude_self else None
    assert metrics.fast._fast_path_applies(d, g_lab)
    fast = metrics.fast._packed_ranked_labels(d, g_lab, own)
    reference = metrics.ranking._ranked_labels(d, g_lab, own)
    assert fast.shape == (n_q, n_g - int(exclude_self))
    assert torch.equal(fast.long(), reference.long())  # the same ranking, ties included
    # and the fused metrics equal the one-function-per-metric ones on it; "emotions" (mAP8 and mAP2
    # from the polarity of emotion codes) needs the 8 emotions, the other class counts score same-label
    emotions = n_classes == 8
    gtm = int((torch.bincount(g_lab, minlength=n_classes)[q_lab] - int(exclude_self)).max())
    f1_k = int(rng.integers(1, 40))
    got = metrics.fast._fast_metrics(fast, q_lab, gtm, f1_k, emotions)
    want = metrics.scoring._readable_metrics(reference, q_lab, gtm, f1_k, emotions)
    # the fast path fuses the papers' metrics; MAP@R and RP (emotion level) come from their own functions
    assert set(got) == set(METRIC_NAMES if emotions else metrics.POLARITY_METRIC_NAMES)
    assert set(want) == set(metric_names("emotion" if emotions else "polarity"))
    assert set(want) - set(got) == (set(REALITY_CHECK) | {"Opp@5"} if emotions else {"Opp@5"})
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=1e-12, equal_nan=True, msg=name)


def test_ties_are_broken_identically_by_both_paths():
    # all distances equal: both rankings are the gallery order itself (minus the query's own item)
    labels = torch.tensor([5, 1, 1, 7, 0, 1])
    d = torch.zeros(6, 6)
    for own in (None, torch.arange(6)):
        fast = metrics.fast._packed_ranked_labels(d, labels, own).long()
        reference = metrics.ranking._ranked_labels(d, labels, own)
        assert torch.equal(fast, reference)
    assert metrics.fast._packed_ranked_labels(d, labels, None).tolist() == [labels.tolist()] * 6
    assert metrics.ranking._ranked_labels(d, labels, torch.arange(6))[3].tolist() == [5, 1, 1, 0, 1]
    # -0.0 ties with +0.0, and a tie between two infinities keeps gallery order too
    d = torch.tensor([[0.0, -0.0, float("inf"), -1.0, float("inf")]])
    lab = torch.tensor([0, 1, 2, 3, 4])
    assert metrics.fast._packed_ranked_labels(d, lab, None).tolist() == [[3, 0, 1, 2, 4]]
    assert metrics.ranking._ranked_labels(d, lab, None).tolist() == [[3, 0, 1, 2, 4]]


def test_packed_key_bit_width_limit():
    # 32 of the key's 64 bits hold the distance; gallery index and label share the other 32
    assert metrics.fast._packed_bits(2**29, 7) == (29, 3)  # 8 emotions: galleries up to 2**29 items
    assert metrics.fast._packing_fits(2**29, 7) and not metrics.fast._packing_fits(2**29 + 1, 7)
    assert not metrics.fast._packing_fits(2**29, 8)  # a 9th class needs a 4th label bit
    assert metrics.fast._packing_fits(2**31, 1)  # polarities: 1 label bit
    assert metrics.fast._packing_fits(1, 2**32 - 1) and not metrics.fast._packing_fits(2, 2**32 - 1)
    # labels too large to pack beside 5 gallery indices (3 bits): the fast path refuses, clearly
    d = torch.tensor([[0.5, 0.1, 0.5, 0.3, 0.2]])
    big = torch.tensor([2**30, 0, 2**30 - 1, 5, 2**30])
    assert not metrics.fast._fast_path_applies(d, big)
    with pytest.raises(ValueError, match="cannot pack 5 gallery indices"):
        metrics.fast._packed_ranked_labels(d, big, None)
    # ... and the reference ranking still serves them
    assert metrics.ranking._ranked_labels(d, big, None).tolist() == [[0, 2**30, 5, 2**30, 2**30 - 1]]
    # float64 distances always take the reference path (their order needs more than 32 bits)
    assert not metrics.fast._fast_path_applies(d.double(), torch.tensor([0, 1, 2, 3, 4]))


# ---------------------------------------------------------------- MAP@R and R-precision (Musgrave et al. 2020)


def test_map_at_r_and_r_precision_hand_computed():
    # rel = 1 0 1 1 0, R = 3: top 3 = 1 0 1 -> MAP@R = (1/3)(1/1 + 0 + 2/3) = 5/9, RP = 2/3
    # rel = 0 1 1 0 1, R = 3: top 3 = 0 1 1 -> MAP@R = (1/3)(0 + 1/2 + 2/3) = 7/18, RP = 2/3
    # rel = 1 0 0 1, R = 2: top 2 = 1 0 -> MAP@R = (1/2)(1/1) = 1/2 (not 1: 1/R, not 1/hits), RP = 1/2
    # rel = 0 0 1 1, R = 2: no hit in the top 2 -> MAP@R = RP = 0 (AP would be (1/3 + 2/4)/2)
    # rel = 1 1 0 0, R = 2: perfect top 2 -> MAP@R = RP = 1
    # rel = 0 0 0 0: R = 0 -> NaN
    rows = [[1, 0, 1, 1, 0], [0, 1, 1, 0, 1], [1, 0, 0, 1, 0], [0, 0, 1, 1, 0], [1, 1, 0, 0, 0], [0] * 5]
    rel = torch.tensor(rows, dtype=torch.bool)
    nan = float("nan")
    np.testing.assert_allclose(metrics.map_at_r(rel).numpy(), [5 / 9, 7 / 18, 1 / 2, 0, 1, nan], atol=1e-15)
    np.testing.assert_allclose(metrics.r_precision(rel).numpy(), [2 / 3, 2 / 3, 1 / 2, 0, 1, nan], atol=1e-15)
    assert metrics.map_at_r(rel).dtype == metrics.r_precision(rel).dtype == torch.float64
    # through the entry point, on both ranking paths: the gallery ranked in index order, labels 0 / 4
    d = torch.arange(5.0).unsqueeze(0)
    for dtype in (torch.float32, torch.float64):
        m = retrieval_metrics(d.to(dtype), [0], [0, 4, 0, 0, 4])
        assert m["MAP@R"] == pytest.approx(5 / 9, abs=1e-15) and m["RP"] == pytest.approx(2 / 3, abs=1e-15)
    # both are higher-is-better, registered at the emotion level after the papers' eight
    assert metrics.higher_is_better("MAP@R") and metrics.higher_is_better("RP")
    assert "MAP@R" not in LOWER_IS_BETTER and "RP" not in LOWER_IS_BETTER
    assert metric_names() == METRIC_NAMES + REALITY_CHECK + ("Opp@5",)
    assert not set(REALITY_CHECK) & set(metric_names("polarity"))  # same-emotion relevance only
    assert not set(REALITY_CHECK) & set(retrieval_metrics(d, [0], [0, 1, 0, 0, 1], level="polarity"))


def _random_problem(rng, exclude_self, dtype):
    """Integer distances (many ties, -0.0 beside +0.0, +-inf), and at least one query without any
    relevant gallery item: a label missing from the gallery, or held by one item under leave-one-out."""
    n_q = int(rng.integers(6, 40))
    n_g = n_q if exclude_self else int(rng.integers(3, 80))
    dist = rng.integers(-2, 4, size=(n_q, n_g)).astype(dtype)
    if exclude_self:
        dist = (dist + dist.T) / 2
    dist[(dist == 0) & (rng.random(dist.shape) < 0.5)] = -0.0
    dist[dist == 3] = np.inf
    dist[dist == -2] = -np.inf
    g_labels = rng.integers(0, 7, size=n_g)  # no sadness (7) in the gallery ...
    if exclude_self:
        g_labels[int(rng.integers(0, n_g))] = 7  # ... but one sadness item, alone in its emotion
        q_labels = g_labels
    else:
        q_labels = rng.integers(0, 8, size=n_q)
        q_labels[0] = 7  # ... and a sadness query with nothing to find
    return dist, q_labels.tolist(), g_labels.tolist()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])  # the packed fast path and the reference path
def test_map_at_r_and_r_precision_match_a_naive_loop(seed, exclude_self, dtype):
    rng = np.random.default_rng(100 + seed)
    dist, q_labels, g_labels = _random_problem(rng, exclude_self, dtype)
    d = dist.tolist()
    want = {"MAP@R": [], "RP": []}
    for i, ql in enumerate(q_labels):  # rank with Python's stable sorted(): ties keep gallery order
        items = sorted((j for j in range(len(g_labels)) if not (exclude_self and j == i)), key=lambda j: d[i][j])
        rel = [int(g_labels[j] == ql) for j in items]
        want["MAP@R"].append(naive_map_at_r(rel))
        want["RP"].append(naive_r_precision(rel))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means, per = retrieval_metrics(dist, np.array(q_labels), np.array(g_labels), exclude_self=exclude_self,
                                       chunk_size=int(rng.integers(1, 8)), return_per_query=True)
    for name in REALITY_CHECK:
        expected = np.array(want[name])
        assert np.isnan(expected).any(), "the problem must hold a query without a relevant item"
        np.testing.assert_allclose(per[name].numpy(), expected, rtol=1e-12, atol=1e-12, err_msg=name)
        assert means[name] == pytest.approx(float(np.nanmean(expected)), abs=1e-12), name
    # NaN for exactly the queries every emotion-relevance metric leaves out
    assert torch.equal(torch.isnan(per["MAP@R"]), torch.isnan(per["mAP8"]))


@pytest.mark.parametrize("seed", range(4))
def test_r_precision_is_first_tier_and_bounds_map_at_r(seed):
    rng = np.random.default_rng(200 + seed)
    for exclude_self, dtype in [(False, np.float32), (False, np.float64), (True, np.float32), (True, np.float64)]:
        # float32: FT fused on the fast path, RP by its own function; float64: both by their functions
        dist, q_labels, g_labels = _random_problem(rng, exclude_self, dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            per = per_query_metrics(dist, q_labels, g_labels, exclude_self=exclude_self)
        # RP is the Princeton Shape Benchmark's first tier, by definition: equal, NaN where FT is
        torch.testing.assert_close(per["RP"], per["FT"], rtol=0, atol=0, equal_nan=True)
        ok = ~torch.isnan(per["RP"])
        mapr, rp = per["MAP@R"][ok], per["RP"][ok]
        # each P@k <= 1, so MAP@R <= RP; 0 exactly when the top R holds no hit; both within [0, 1]
        assert ((mapr >= 0) & (mapr <= rp + 1e-15) & (rp <= 1)).all()
        assert torch.equal(mapr == 0, rp == 0)
    # equality when the h hits of the top R are ranks 1..h; strictly below otherwise
    rel = torch.tensor([[1, 1, 0, 0, 1, 1], [1, 0, 1, 0, 1, 1], [0, 1, 1, 0, 1, 1]], dtype=torch.bool)
    mapr, rp = metrics.map_at_r(rel), metrics.r_precision(rel)
    assert mapr[0] == rp[0] == 0.5 and (mapr[1:] < rp[1:]).all()
    np.testing.assert_allclose(mapr.numpy(), [0.5, (1 + 2 / 3) / 4, (1 / 2 + 2 / 3) / 4], atol=1e-15)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_map_at_r_and_r_precision_fast_path_equals_the_reference_path(exclude_self):
    # float32 distances take the packed sort; the same values as float64 take the stable sort
    rng = np.random.default_rng(7)
    n = 120
    emb = rng.normal(size=(n, 5)).astype(np.float32)
    d32 = pairwise_distances(torch.from_numpy(emb), torch.from_numpy(emb))
    d32[torch.from_numpy(rng.random((n, n)) < 0.2)] = 1.0  # exact ties as well
    d32 = torch.minimum(d32, d32.T) if exclude_self else d32
    labels = torch.from_numpy(rng.integers(0, 8, n))
    q = labels if exclude_self else torch.from_numpy(rng.integers(0, 8, n))
    assert metrics.fast._fast_path_applies(d32, labels) and not metrics.fast._fast_path_applies(d32.double(), labels)
    fast = per_query_metrics(d32, q, labels, exclude_self=exclude_self, chunk_size=17)
    reference = per_query_metrics(d32.double(), q, labels, exclude_self=exclude_self, chunk_size=120)
    for name in ALL_NAMES:
        torch.testing.assert_close(fast[name], reference[name], rtol=0, atol=1e-9, equal_nan=True, msg=name)
    assert 0 < float(fast["MAP@R"].mean()) < float(fast["RP"].mean()) < 1


# ---------------------------------------------------------------- Opp@5: what a user sees first


def test_opposite_at_5_against_a_naive_loop():
    rng = np.random.default_rng(3)
    for n_g in (8, 40):
        d = torch.from_numpy(rng.random((25, n_g)))
        q = rng.integers(0, 8, 25)
        g = rng.permutation(np.concatenate([np.arange(8), rng.integers(0, 8, n_g - 8)]))
        got = retrieval_metrics(d, q, g)["Opp@5"]
        naive = []
        for i in range(25):
            order = sorted(range(n_g), key=lambda j: (float(d[i, j]), j))[:5]
            naive.append(sum((q[i] >= 4) != (g[j] >= 4) for j in order) / len(order))
        assert got == pytest.approx(float(np.mean(naive)), abs=1e-12)
    # lower is better, at both levels; by hand: positive query, top 5 = + - - + +  -> 2/5
    assert "Opp@5" in LOWER_IS_BETTER and "Opp@5" in metric_names("polarity")
    m = retrieval_metrics(torch.arange(6.0).unsqueeze(0), [0], [0, 5, 6, 2, 3, 7])
    assert m["Opp@5"] == pytest.approx(2 / 5)
