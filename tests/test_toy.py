"""The toy world shared by the loss chapters (book ch. 4-7): split, circle measures, training loop."""
import math

import pytest
import torch

from apse.emotions import NUM_EMOTIONS
from apse.losses import EPLoss, GEPLoss, NPairLoss, WEPLoss
from apse.toy import circle_order, make_toy_data, polarity_boundaries, toy_split, train_toy


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # the toy network is tiny: on a busy 2-core machine extra threads only add contention
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_toy_split_shapes_disjoint_and_deterministic():
    X_tr, y_tr, X_te, y_te = toy_split(seed=3, n_train=10, dim=5)
    assert X_tr.shape == (80, 5) and X_te.shape == (80, 5)
    assert torch.equal(torch.bincount(y_tr, minlength=8), torch.full((8,), 10))
    assert torch.equal(torch.bincount(y_te, minlength=8), torch.full((8,), 10))
    # disjoint: no held-out point equals a training point (continuous Gaussian draws)
    assert torch.cdist(X_te, X_tr).min() > 0
    # the split is the documented one: first n_train of each emotion train, the rest held out
    X, y = make_toy_data(n_per_class=20, dim=5, spread=0.9, seed=3)
    assert torch.equal(X_tr[:10], X[:10]) and torch.equal(X_te[:10], X[10:20])
    assert torch.equal(torch.cat([X_tr, X_te]).sort(0).values, X.sort(0).values)
    # deterministic for a seed; another seed or another spread gives other points
    for a, b in zip(toy_split(seed=3, n_train=10, dim=5), (X_tr, y_tr, X_te, y_te)):
        assert torch.equal(a, b)
    assert not torch.equal(toy_split(seed=4, n_train=10, dim=5)[0], X_tr)
    assert not torch.equal(toy_split(seed=3, n_train=10, dim=5, spread=2.0)[0], X_tr)


def test_toy_split_rejects_too_few_points():
    with pytest.raises(ValueError, match="n_train"):
        toy_split(n_train=3)


def _points_at(angles_deg, per_class=5, noise=2.0, seed=0):
    """`per_class` unit vectors per emotion around the given angles (emotion k at angles_deg[k])."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(NUM_EMOTIONS).repeat_interleave(per_class)
    a = torch.tensor(angles_deg, dtype=torch.float64)[y] + noise * (torch.rand(len(y), generator=g, dtype=torch.float64) - 0.5)
    a = torch.deg2rad(a)
    return torch.stack([a.cos(), a.sin()], dim=1), y


def _octagon(order):
    """Angles (degrees) putting emotion order[v] on vertex v of an octagon, vertices at -170 + 45 v
    (away from the +-180 degree cut, so the expected order starts at vertex 0)."""
    angles = [0.0] * NUM_EMOTIONS
    for v, k in enumerate(order):
        angles[k] = -170.0 + 45 * v
    return angles


def test_circle_order_and_boundaries_grouped():
    # emotion k at 10 + 45 k degrees: 10, 55, 100, 145, 190 = -170, -125, -80, -35; polarities grouped
    emb, y = _points_at([10 + 45 * k for k in range(8)])
    assert circle_order(emb, y) == [4, 5, 6, 7, 0, 1, 2, 3]      # angles increase from -180 degrees
    assert polarity_boundaries(emb, y) == 2
    # a rotation does not change the number of boundaries
    order = [2, 3, 4, 5, 6, 7, 0, 1]                              # ++----++ : still two arcs
    emb, y = _points_at(_octagon(order))
    assert circle_order(emb, y) == order
    assert polarity_boundaries(emb, y) == 2


def test_circle_order_and_boundaries_alternating_and_hand_picked():
    # vertex v of the octagon gets emotion order[v]: positives and negatives alternate
    order = [0, 4, 1, 5, 2, 6, 3, 7]
    emb, y = _points_at(_octagon(order))
    assert circle_order(emb, y) == order
    assert polarity_boundaries(emb, y) == 8
    # ++-+--+- : boundaries between positions 1|2, 2|3, 3|4, 5|6, 6|7, 7|0 -> 6
    order = [0, 1, 4, 2, 5, 6, 3, 7]
    emb, y = _points_at(_octagon(order))
    assert circle_order(emb, y) == order
    assert polarity_boundaries(emb, y) == 6


def test_circle_measures_reject_bad_input():
    emb, y = _points_at([45 * k for k in range(8)])
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        circle_order(torch.randn(len(y), 3), y)
    with pytest.raises(ValueError, match="missing"):
        polarity_boundaries(emb[y != 5], y[y != 5])


def _heads(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith(("polarity_head", "emotion_head"))}


@pytest.fixture(scope="module")
def small_split():
    return toy_split(seed=0, n_train=8)


def test_attention_keyword_trains_or_freezes_the_heads(small_split):
    X, y = small_split[0], small_split[1]
    init = _heads(train_toy(EPLoss(), X, y, steps=0, seed=1).model)
    heads_on = _heads(train_toy(EPLoss(), X, y, steps=15, seed=1, attention=True).model)
    heads_off = _heads(train_toy(EPLoss(), X, y, steps=15, seed=1, attention=False).model)
    assert all(not torch.equal(heads_on[n], init[n]) for n in init)
    assert all(torch.equal(heads_off[n], init[n]) for n in init)
    # the default is a training run's rule (issue #24: one rule): on for the APSE family, EP included,
    # off for a baseline
    assert (train_toy(EPLoss(), X, y, steps=15, seed=1).losses
            == train_toy(EPLoss(), X, y, steps=15, seed=1, attention=True).losses)
    npair_default = _heads(train_toy(NPairLoss(), X, y, steps=15, seed=1).model)
    assert all(torch.equal(npair_default[n], init[n]) for n in init)
    fixed = train_toy(GEPLoss(beta=0.5), X, y, steps=3, seed=1)
    assert fixed.losses == train_toy(GEPLoss(beta=0.5), X, y, steps=3, seed=1, attention=True).losses
    # a loss that needs confidences still gets them with attention=False, but no gradient reaches the heads
    wep_off = _heads(train_toy(WEPLoss(), X, y, steps=5, seed=1, attention=False).model)
    assert all(torch.equal(wep_off[n], init[n]) for n in init)
    # default for WEP = attention on
    wep_default = train_toy(WEPLoss(), X, y, steps=5, seed=1)
    wep_on = train_toy(WEPLoss(), X, y, steps=5, seed=1, attention=True)
    assert wep_default.losses == wep_on.losses


def test_attention_adds_the_weighted_attention_loss(small_split):
    X, y = small_split[0], small_split[1]
    plain = train_toy(EPLoss(), X, y, steps=1, seed=2, attention=False).losses[0]
    mixed = train_toy(EPLoss(), X, y, steps=1, seed=2, attention=True, lam=0.5).losses[0]
    # at step 0 both see the same embeddings; near-uniform heads give L_att ~ log 2 + log 8
    assert math.isclose(mixed, 0.5 * plain + 0.5 * (math.log(2) + math.log(8)), abs_tol=0.1)
    with pytest.raises(ValueError, match="attention"):
        train_toy(EPLoss(), X, y, steps=1, attention="yes")


def test_npair_training_lowers_the_loss(small_split):
    X, y = small_split[0], small_split[1]
    run = train_toy(NPairLoss(), X, y, steps=60, seed=0)
    assert len(run.losses) == 60
    first, last = run.losses[0], sum(run.losses[-10:]) / 10
    # untrained: near log 8 = 2.08; trained: near the 2-D floor, the regular octagon's loss ~ 1.315
    assert first > 1.9 and last < first - 0.5, (first, last)
    assert last < 1.4, last
    assert not run.model.training
