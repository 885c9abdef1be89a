"""Tests of apse.losses: every vectorised loss against a naive double loop written from the spec's
equations (../shared/spec/apse-method.md, "Losses, for one N-pair tuple"), values and gradients."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from apse import losses as L
from apse.losses import baselines as LB
from apse.losses import functional as LF
from apse.emotions import POLARITIES, polarity_labels

SEEDS = [0, 1, 2]
PAPER_POLARITY = [0, 0, 0, 0, 1, 1, 1, 1]
# (N, polarity): the papers' tuple, a tuple where class 4 has no same-polarity partner (P_4 empty),
# and an unbalanced one
CASES = [(8, PAPER_POLARITY), (5, [0, 0, 0, 0, 1]), (6, [1, 0, 1, 1, 0, 1])]


# --------------------------------------------------------------------------------------------------
# naive reference implementations, one pair at a time, straight from the spec
# --------------------------------------------------------------------------------------------------
def naive_npair(a, p):
    n = len(a)
    total = 0.0
    for i in range(n):
        s = 0.0
        for j in range(n):
            if j != i:
                s = s + torch.exp(a[i] @ p[j] - a[i] @ p[i])
        total = total + torch.log(1 + s)
    return total / n


def _sim(a, p, i, j, v=None, negs=None):
    """s_ij of the spec: f_i . f_j+ (or the generated negative), times v_ij for j != i."""
    target = p[j] if (negs is None or i == j) else negs[i][j]
    s = a[i] @ target
    return s * v[i][j] if (v is not None and i != j) else s


def naive_inter(a, p, pol, v=None, negs=None):
    n = len(a)
    total = 0.0
    for i in range(n):
        P = [j for j in range(n) if j != i and pol[j] == pol[i]]
        Q = [j for j in range(n) if pol[j] != pol[i]]
        if not P or not Q:  # documented rule: no inter term for such an anchor
            continue
        mean_q = sum(_sim(a, p, i, j, v, negs) for j in Q) / len(Q)
        mean_p = sum(_sim(a, p, i, j, v, negs) for j in P) / len(P)
        total = total + torch.log(1 + torch.exp(mean_q - mean_p))
    return total / n


def naive_intra(a, p, pol, v=None, negs=None):
    n = len(a)
    total = 0.0
    for i in range(n):
        s = torch.zeros((), dtype=a.dtype)
        for j in range(n):
            if j != i and pol[j] == pol[i]:
                s = s + torch.exp(_sim(a, p, i, j, v, negs) - a[i] @ p[i])
        total = total + torch.log(1 + s)  # empty P_i: log(1 + 0) = 0
    return total / n


def naive_wep_weights(pol, cpa, cpp, cea, cep):
    n = len(pol)
    v = torch.ones(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            vp = 1.0 if pol[i] == pol[j] else math.exp(cpa[i, pol[j]]) * math.exp(cpp[j, pol[i]])
            ve = math.exp(cea[i, j]) * math.exp(cep[j, i])
            v[i, j] = vp * ve
    return v


def naive_negatives(a, p, cea, cep, beta=None):
    n = len(a)
    out = []
    for i in range(n):
        row = []
        d_ii = torch.linalg.norm(a[i] - p[i])
        for j in range(n):
            d_ij = torch.linalg.norm(a[i] - p[j])
            if i != j and d_ij > d_ii:
                b = beta if beta is not None else math.exp(-math.exp(float(cea[i, j])) * math.exp(float(cep[j, i])))
                row.append(a[i] + (b * d_ij + (1 - b) * d_ii) * (p[j] - a[i]) / d_ij)
            else:
                row.append(p[j])
        out.append(row)
    return out


# --------------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------------
def make_tuple(n, seed, d=16, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1).requires_grad_()
    p = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1).requires_grad_()
    cpa = torch.softmax(torch.randn(n, 2, generator=g, dtype=dtype), 1)
    cpp = torch.softmax(torch.randn(n, 2, generator=g, dtype=dtype), 1)
    cea = torch.softmax(torch.randn(n, n, generator=g, dtype=dtype), 1)
    cep = torch.softmax(torch.randn(n, n, generator=g, dtype=dtype), 1)
    return a, p, cpa, cpp, cea, cep


def assert_same_value_and_grad(fast, naive, inputs):
    assert torch.allclose(fast, naive, atol=1e-10, rtol=1e-9), (float(fast), float(naive))
    g_fast = torch.autograd.grad(fast, inputs, retain_graph=True)
    g_naive = torch.autograd.grad(naive, inputs, retain_graph=True)
    for gf, gn in zip(g_fast, g_naive):
        assert torch.allclose(gf, gn, atol=1e-10, rtol=1e-8), (gf - gn).abs().max()


# --------------------------------------------------------------------------------------------------
# functional losses vs naive loops
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n,pol", CASES)
def test_npair_matches_naive_and_cross_entropy(seed, n, pol):
    a, p, *_ = make_tuple(n, seed)
    fast = L.npair_loss(a, p)
    assert_same_value_and_grad(fast, naive_npair(a, p), (a, p))
    assert torch.allclose(fast, F.cross_entropy(a @ p.T, torch.arange(n)), atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n,pol", CASES)
def test_inter_intra_ep_match_naive(seed, n, pol):
    a, p, *_ = make_tuple(n, seed)
    polarity = torch.tensor(pol)
    inter, intra = naive_inter(a, p, pol), naive_intra(a, p, pol)
    assert_same_value_and_grad(L.inter_polarity_loss(a, p, polarity), inter, (a, p))
    assert_same_value_and_grad(L.intra_polarity_loss(a, p, polarity), intra, (a, p))
    assert_same_value_and_grad(L.ep_loss(a, p, polarity), inter + intra, (a, p))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n,pol", CASES)
def test_wep_weights_and_loss_match_naive(seed, n, pol):
    a, p, cpa, cpp, cea, cep = make_tuple(n, seed)
    polarity = torch.tensor(pol)
    v = L.wep_weights(polarity, cpa, cpp, cea, cep)
    v_naive = naive_wep_weights(pol, cpa, cpp, cea, cep)
    assert torch.allclose(v, v_naive, atol=1e-12)
    assert torch.equal(v.diagonal(), torch.ones(n, dtype=v.dtype))
    naive = naive_inter(a, p, pol, v_naive) + naive_intra(a, p, pol, v_naive)
    assert_same_value_and_grad(L.wep_loss(a, p, polarity, cpa, cpp, cea, cep), naive, (a, p))


def test_wep_weights_are_detached_and_same_polarity_pairs_skip_vp():
    a, p, cpa, cpp, cea, cep = make_tuple(8, 0)
    cpa.requires_grad_()
    cea.requires_grad_()
    polarity = torch.tensor(PAPER_POLARITY)
    v = L.wep_weights(polarity, cpa, cpp, cea, cep)
    assert not v.requires_grad
    loss = L.wep_loss(a, p, polarity, cpa, cpp, cea, cep)
    assert torch.autograd.grad(loss, cpa, allow_unused=True)[0] is None
    # same polarity: v = v^e only
    assert math.isclose(float(v[0, 1]), math.exp(cea[0, 1].item() + cep[1, 0].item()), rel_tol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_wep_with_unit_weights_is_ep(seed):
    a, p, cpa, cpp, cea, cep = make_tuple(8, seed)
    polarity = torch.tensor(PAPER_POLARITY)
    sim = a @ p.T
    ones = torch.ones(8, 8, dtype=sim.dtype)
    # the internal formula with weights forced to ones ...
    for forced, plain in zip(LF._ep_terms(sim, polarity, ones), LF._ep_terms(sim, polarity, None)):
        assert torch.allclose(forced, plain, atol=1e-14)
    # ... and through the public API: zero confidences give v = exp(0) exp(0) = 1 everywhere
    zeros2, zeros8 = torch.zeros(8, 2, dtype=sim.dtype), torch.zeros(8, 8, dtype=sim.dtype)
    assert torch.equal(L.wep_weights(polarity, zeros2, zeros2, zeros8, zeros8), ones)
    wep = L.wep_loss(a, p, polarity, zeros2, zeros2, zeros8, zeros8)
    assert_same_value_and_grad(wep, L.ep_loss(a, p, polarity), (a, p))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", [None, 0.3])
@pytest.mark.parametrize("n,pol", CASES)
def test_generate_negatives_and_gep_match_naive(seed, beta, n, pol):
    a, p, cpa, cpp, cea, cep = make_tuple(n, seed)
    fast = L.generate_negatives(a, p, cea, cep, beta=beta)
    naive = naive_negatives(a, p, cea, cep, beta)
    assert fast.shape == (n, n, a.shape[1])
    assert torch.allclose(fast, torch.stack([torch.stack(r) for r in naive]), atol=1e-12)
    assert torch.equal(fast.diagonal(dim1=0, dim2=1).T, p)  # [i, i] = positives[i]
    polarity = torch.tensor(pol)
    gep = L.gep_loss(a, p, polarity, cea, cep, beta=beta)
    gep_naive = naive_inter(a, p, pol, negs=naive) + naive_intra(a, p, pol, negs=naive)
    assert_same_value_and_grad(gep, gep_naive, (a, p))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", [None, 0.0, 0.25, 0.8])
def test_generated_negatives_lie_on_the_segment(seed, beta):
    a, p, cpa, cpp, cea, cep = make_tuple(8, seed, d=4)
    a, p = a.detach(), p.detach()
    out = L.generate_negatives(a, p, cea, cep, beta=beta)
    d = torch.cdist(a, p)
    harder_seen = 0
    for i in range(8):
        for j in range(8):
            if i == j or not d[i, j] > d[i, i]:
                assert torch.allclose(out[i, j], p[j], atol=1e-14)
                continue
            harder_seen += 1
            b = beta if beta is not None else math.exp(-math.exp(float(cea[i, j]) + float(cep[j, i])))
            offset = out[i, j] - a[i]
            direction = (p[j] - a[i]) / d[i, j]
            radius = b * d[i, j] + (1 - b) * d[i, i]
            assert torch.allclose(offset.norm(), radius, atol=1e-12)          # distance from f_i
            assert torch.allclose(offset, radius * direction, atol=1e-12)     # on the ray to f_j+
            assert d[i, i] - 1e-12 <= offset.norm() <= d[i, j] + 1e-12        # inside the segment
    assert harder_seen > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_gep_with_beta_one_is_ep(seed):
    a, p, *_ = make_tuple(8, seed)
    polarity = torch.tensor(PAPER_POLARITY)
    assert_same_value_and_grad(L.gep_loss(a, p, polarity, beta=1.0), L.ep_loss(a, p, polarity), (a, p))


def test_generate_negatives_guards_zero_distance():
    # the anchor sits on every positive: d_ij = 0 must not give NaN values or gradients
    a = torch.tensor([[1.0, 0.0]] * 3, requires_grad=True)
    p = torch.tensor([[1.0, 0.0]] * 3, requires_grad=True)
    ce = torch.full((3, 3), 1 / 3)
    loss = L.gep_loss(a, p, torch.tensor([0, 0, 1]), ce, ce)
    ga, gp = torch.autograd.grad(loss, (a, p))
    assert torch.isfinite(loss) and torch.isfinite(ga).all() and torch.isfinite(gp).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_finite_float32_results(dtype):
    a64, p64, cpa, cpp, cea, cep = make_tuple(8, 0)
    # norm 5: similarities up to 25, whose exp overflows float16 if computed in half
    a = (5 * a64.detach()).to(dtype).requires_grad_()
    p = (5 * p64.detach()).to(dtype).requires_grad_()
    polarity = torch.tensor(PAPER_POLARITY)
    cpa, cpp, cea, cep = (c.to(dtype) for c in (cpa, cpp, cea, cep))
    calls = {
        "npair": lambda a, p: L.npair_loss(a, p),
        "inter": lambda a, p: L.inter_polarity_loss(a, p, polarity),
        "intra": lambda a, p: L.intra_polarity_loss(a, p, polarity),
        "ep": lambda a, p: L.ep_loss(a, p, polarity),
        "wep": lambda a, p: L.wep_loss(a, p, polarity, cpa, cpp, cea, cep),
        "gep": lambda a, p: L.gep_loss(a, p, polarity, cea, cep),
    }
    for name, fn in calls.items():
        value = fn(a, p)
        assert value.dtype == torch.float32 and torch.isfinite(value), name
        ref = fn(a.detach().float(), p.detach().float())
        assert torch.allclose(value, ref, rtol=1e-5), name
        ga, gp = torch.autograd.grad(value, (a, p))
        assert ga.dtype == dtype and torch.isfinite(ga.float()).all() and torch.isfinite(gp.float()).all(), name
    neg = L.generate_negatives(a, p, cea, cep)
    assert neg.dtype == dtype and torch.isfinite(neg.float()).all()
    assert L.wep_weights(polarity, cpa, cpp, cea, cep).dtype == torch.float32


def test_attention_loss_is_cross_entropy_of_probabilities():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 8, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 3, 7, 2, 2, 5])
    assert torch.allclose(L.attention_loss(torch.softmax(logits, 1), labels), F.cross_entropy(logits, labels))
    # a zero confidence on the true class stays finite (clamped), half inputs are fine
    conf = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float16)
    value = L.attention_loss(conf, torch.tensor([1, 0]))
    assert torch.isfinite(value) and value.dtype == torch.float32
    assert math.isclose(float(value), (-math.log(1e-8) + math.log(2)) / 2, rel_tol=1e-5)
    with pytest.raises(ValueError):
        L.attention_loss(torch.rand(4, 2), torch.tensor([0, 1]))


def test_apse_objective():
    assert float(L.apse_objective(torch.tensor(2.0), torch.tensor(4.0))) == 3.0
    assert float(L.apse_objective(torch.tensor(2.0), torch.tensor(4.0), lam=0.25)) == 3.5


def test_bad_inputs_raise_clear_errors():
    a, p, cpa, cpp, cea, cep = make_tuple(8, 0)
    with pytest.raises(ValueError, match="anchors and positives"):
        L.npair_loss(a, p[:7])
    with pytest.raises(ValueError, match="polarity"):
        L.ep_loss(a, p, torch.tensor([0, 1, 2, 0, 1, 0, 1, 0]))
    with pytest.raises(ValueError, match="ce_anchor"):
        L.wep_loss(a, p, torch.tensor(PAPER_POLARITY), cpa, cpp, cea[:, :2], cep)
    with pytest.raises(ValueError, match="beta"):
        L.generate_negatives(a, p, cea, cep, beta=1.5)


# --------------------------------------------------------------------------------------------------
# batches -> tuples
# --------------------------------------------------------------------------------------------------
def balanced_labels(k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(8).repeat(k)
    return labels[torch.randperm(len(labels), generator=g)]


@pytest.mark.parametrize("k", [2, 4, 6])
def test_split_into_tuples_on_shuffled_balanced_batch(k):
    labels = balanced_labels(k, seed=k)
    idx = L.split_into_tuples(labels)
    assert idx.shape == (k // 2, 8, 2) and idx.dtype == torch.long
    assert sorted(idx.flatten().tolist()) == list(range(8 * k))  # disjoint, covers the batch
    for e in range(8):
        positions = [b for b in range(len(labels)) if labels[b] == e]  # batch order
        for t in range(k // 2):
            assert idx[t, e].tolist() == positions[2 * t: 2 * t + 2]
    assert (labels[idx] == torch.arange(8)[None, :, None]).all()


@pytest.mark.parametrize("labels", [
    torch.arange(8).repeat(4)[:-1],               # one emotion short
    torch.arange(8).repeat(3),                    # odd K
    torch.arange(8),                              # K = 1
    torch.zeros(4, dtype=torch.long),             # one class
    torch.tensor([], dtype=torch.long),           # empty
])
def test_split_into_tuples_rejects_unbalanced_batches(labels):
    with pytest.raises(ValueError, match=r"2 or more classes x .*even.*8 x 4.*got"):
        L.split_into_tuples(labels)


def test_split_into_tuples_rejects_negative_labels():
    with pytest.raises(ValueError, match=">= 0"):
        L.split_into_tuples(torch.tensor([0, 0, -1, -1]))


def test_split_into_tuples_takes_any_number_of_classes():
    """Seven emotions (a batch sampler with P < 8), or Twitter I's two polarities x 16: the rows are
    the classes present, in label order, and pair t of each class is images 2t, 2t + 1 of it."""
    labels = torch.tensor([6, 0, 2, 6, 0, 2, 2, 0, 6, 2, 6, 0])  # 0, 2, 6 four times each
    idx = L.split_into_tuples(labels)
    assert idx.shape == (2, 3, 2)
    assert idx[:, 0].tolist() == [[1, 4], [7, 11]]              # label 0 in batch order: 1 4 7 11
    assert (labels[idx] == torch.tensor([0, 2, 6])[None, :, None]).all()
    g = torch.Generator().manual_seed(1)
    pol = torch.arange(2).repeat(16)[torch.randperm(32, generator=g)]
    assert L.split_into_tuples(pol, POLARITIES).shape == (8, 2, 2)
    with pytest.raises(ValueError, match="positive=3, negative=2"):
        L.split_into_tuples(torch.tensor([0, 0, 0, 1, 1]), POLARITIES)


def test_npair_loss_on_polarity_labels_matches_a_naive_loop():
    """Twitter I's tuples hold one pair per polarity, so each anchor has one negative:
    log(1 + exp(s_12 - s_11)) per anchor, averaged over anchors and tuples."""
    torch.manual_seed(0)
    emb = F.normalize(torch.randn(8, 6), dim=1)
    labels = torch.tensor([1, 0, 0, 1, 1, 0, 1, 0])
    # class 0 in batch order: 1 2 5 7; class 1: 0 3 4 6. Pairs (anchor, positive): class 0
    # (1, 2), (5, 7); class 1 (0, 3), (4, 6). Tuple t = pair t of both.
    tuples = [((1, 2), (0, 3)), ((5, 7), (4, 6))]
    naive = []
    for t in tuples:
        for i, (a, _) in enumerate(t):
            s_ii = float(emb[a] @ emb[t[i][1]])
            s_ij = float(emb[a] @ emb[t[1 - i][1]])
            naive.append(math.log(1 + math.exp(s_ij - s_ii)))
    loss = L.NPairLoss(level="polarity")(emb, labels)
    assert float(loss) == pytest.approx(sum(naive) / len(naive), abs=1e-6)
    # the emotions' default reads these labels as amusement and contentment: the same N-pair loss
    assert float(L.NPairLoss()(emb, labels)) == pytest.approx(float(loss), abs=1e-7)


def test_tuple_losses_read_the_classes_polarities_from_the_level():
    """At the polarity level a tuple's two classes have opposite polarities: EP's intra term (same
    polarity negatives) is empty and its inter term has no same-polarity mean, so EP is 0 there;
    read as emotions 0 and 1 (both positive), the same labels make EP the N-pair loss's intra twin."""
    torch.manual_seed(1)
    emb = F.normalize(torch.randn(8, 5), dim=1)
    labels = torch.tensor([0, 1] * 4)
    assert float(L.EPLoss(level="polarity")(emb, labels)) == pytest.approx(0.0, abs=1e-7)
    as_emotions = float(L.EPLoss()(emb, labels))
    assert as_emotions == pytest.approx(float(L.NPairLoss()(emb, labels)), abs=1e-6)
    with pytest.raises(ValueError, match="polarity level lie in 0..1"):
        L.NPairLoss(level="polarity")(emb, torch.tensor([0, 2] * 4))
    with pytest.raises(ValueError, match="unknown label level"):
        L.NPairLoss(level="sentiment")


def test_configured_loss_at_the_polarity_level():
    section = L.LossConfig(loss="softmax")
    head = L.build_configured_loss(section, 16, level="polarity")
    assert head.head.out_features == 2
    assert L.build_configured_loss(L.LossConfig(loss="npair"), 16, level="polarity").level == "polarity"
    assert L.build_configured_loss(L.LossConfig(loss="npair"), 16).level == "emotion"


def test_split_into_tuples_error_lists_counts():
    labels = torch.tensor([0] * 5 + [1] * 3 + [e for e in range(2, 8) for _ in range(4)])
    with pytest.raises(ValueError, match="amusement=5, contentment=3, awe=4"):
        L.split_into_tuples(labels)


# --------------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------------
def batch(seed=0, b_per_class=4, d=32):
    g = torch.Generator().manual_seed(seed)
    labels = balanced_labels(b_per_class, seed)
    raw = torch.randn(len(labels), d, generator=g, requires_grad=True)
    pc = torch.softmax(torch.randn(len(labels), 2, generator=g), 1)
    ec = torch.softmax(torch.randn(len(labels), 8, generator=g), 1)
    return raw, labels, pc, ec


@pytest.mark.parametrize("name", L.LOSS_NAMES)
def test_every_module_gives_a_finite_scalar_with_gradients(name):
    raw, labels, pc, ec = batch()
    loss_fn = L.build_loss(name, embedding_dim=raw.shape[1])
    assert isinstance(loss_fn.needs_confidences, bool)
    value = loss_fn(F.normalize(raw, dim=1), labels, pc, ec)
    assert value.ndim == 0 and torch.isfinite(value)
    params = [q for q in loss_fn.parameters() if q.requires_grad]
    grads = torch.autograd.grad(value, [raw, *params])
    assert grads[0].abs().sum() > 0, "no gradient reached the embeddings"
    for q, g in zip(params, grads[1:]):
        assert torch.isfinite(g).all() and g.abs().sum() > 0, f"{name}: parameter {tuple(q.shape)} gets no gradient"
    if name in ("softmax", "center", "arcface", "sphereface", "softtriple", "yang"):
        assert params, f"{name} should own trainable weights"


def test_softmax_loss_head_is_trained_and_matches_cross_entropy():
    raw, labels, *_ = batch()
    loss_fn = L.SoftmaxLoss(embedding_dim=32)
    emb = F.normalize(raw, dim=1)
    value = loss_fn(emb, labels)
    assert torch.allclose(value, F.cross_entropy(loss_fn.head(emb), labels))
    value.backward()
    assert loss_fn.head.weight.grad is not None and loss_fn.head.weight.grad.abs().sum() > 0


def test_tuple_modules_average_the_functional_loss_over_tuples():
    raw, labels, pc, ec = batch(seed=3)
    emb = F.normalize(raw, dim=1)
    idx = L.split_into_tuples(labels)
    pol = polarity_labels(torch.arange(8))
    a, p = idx[..., 0], idx[..., 1]
    expected = {
        "npair": [L.npair_loss(emb[a[t]], emb[p[t]]) for t in range(2)],
        "ep": [L.ep_loss(emb[a[t]], emb[p[t]], pol) for t in range(2)],
        "wep": [L.wep_loss(emb[a[t]], emb[p[t]], pol, pc[a[t]], pc[p[t]], ec[a[t]], ec[p[t]]) for t in range(2)],
        "gep": [L.gep_loss(emb[a[t]], emb[p[t]], pol, ec[a[t]], ec[p[t]]) for t in range(2)],
    }
    for name, values in expected.items():
        assert torch.allclose(L.build_loss(name)(emb, labels, pc, ec), torch.stack(values).mean()), name
    fixed = L.GEPLoss(beta=0.4)
    assert not fixed.needs_confidences
    assert torch.allclose(fixed(emb, labels),
                          torch.stack([L.gep_loss(emb[a[t]], emb[p[t]], pol, beta=0.4) for t in range(2)]).mean())


def test_confidence_losses_require_confidences():
    raw, labels, pc, ec = batch()
    emb = F.normalize(raw, dim=1)
    assert L.WEPLoss().needs_confidences and L.GEPLoss().needs_confidences
    assert not L.EPLoss().needs_confidences and not L.NPairLoss().needs_confidences
    with pytest.raises(ValueError, match="WEPLoss needs polarity_confidence"):
        L.WEPLoss()(emb, labels)
    with pytest.raises(ValueError, match="GEPLoss .*emotion_confidence"):
        L.GEPLoss()(emb, labels, pc, None)
    with pytest.raises(ValueError, match="balanced batch"):
        L.EPLoss()(emb[:30], labels[:30])


def test_contrastive_matches_naive_pair_loop():
    raw, labels, *_ = batch(seed=5, b_per_class=2, d=8)
    emb = F.normalize(raw.double(), dim=1)
    margin = 0.9
    terms = []
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            d = torch.linalg.norm(emb[i] - emb[j])
            terms.append(d ** 2 if labels[i] == labels[j] else torch.clamp(margin - d, min=0) ** 2)
    naive = torch.stack(terms).mean()
    fast = L.ContrastiveLoss(margin=margin)(emb, labels)
    assert_same_value_and_grad(fast, naive, (raw,))


def test_triplet_semi_hard_mining_on_a_1d_example():
    # positions on a line; label 0: {0.0, 0.3}, label 1: {0.1 (hard), 0.4 (semi-hard)}, label 2: {1.0}
    x = torch.tensor([[0.0], [0.3], [0.1], [0.4], [1.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2])
    dist = torch.cdist(x, x)
    a, p, n = LB._semi_hard_negatives(dist, y)
    chosen = {(int(i), int(j)): int(k) for i, j, k in zip(a, p, n)}
    # anchor 0.0 / positive 0.3: 0.1 is closer than the positive, 0.4 is the closest farther one
    assert chosen == {(0, 1): 3, (1, 0): 4, (2, 3): 4, (3, 2): 0}
    # hinge per pair: 0.3-0.4+0.2=0.1, 0, 0, 0.3-0.4+0.2=0.1 -> mean 0.05
    value = L.TripletLoss(margin=0.2)(x, y)
    assert math.isclose(float(value), 0.05, abs_tol=1e-9)
    # no negative farther than the positive: fall back to the hardest (closest) negative
    x2 = torch.tensor([[0.0], [1.0], [0.2], [0.5]], dtype=torch.float64)
    a, p, n = LB._semi_hard_negatives(torch.cdist(x2, x2), torch.tensor([0, 0, 1, 1]))
    assert {(int(i), int(j)): int(k) for i, j, k in zip(a, p, n)}[(0, 1)] == 2


def test_binomial_deviance_matches_formula():
    raw, labels, *_ = batch(seed=7, b_per_class=2, d=8)
    emb = F.normalize(raw.double(), dim=1)
    pos, neg = [], []
    for i in range(len(labels)):
        for j in range(len(labels)):
            if i == j:
                continue
            s = emb[i] @ emb[j]
            if labels[i] == labels[j]:
                pos.append(torch.log(1 + torch.exp(-2.0 * (s - 0.5))))
            else:
                neg.append(torch.log(1 + torch.exp(2.0 * 25.0 * (s - 0.5))))
    naive = torch.stack(pos).mean() + torch.stack(neg).mean()
    assert_same_value_and_grad(L.BinomialDevianceLoss()(emb, labels), naive, (raw,))


def test_yang_loss_is_zero_retrieval_part_when_hierarchy_holds():
    # embeddings that already satisfy both margins: only the classification part is left
    centres = torch.tensor([[1.0 * e, 5.0 * (e >= 4)] for e in range(8)])  # emotions 1 apart, polarities 5 apart
    labels = torch.arange(8).repeat(2)
    emb = centres[labels] + 0.01 * torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    loss_fn = L.YangLoss(embedding_dim=2)
    assert torch.allclose(loss_fn(emb, labels), F.cross_entropy(loss_fn.head(emb), labels))
    # a batch where an emotion's images are far apart has a positive retrieval term
    emb_bad = torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
    assert loss_fn(emb_bad, labels) > F.cross_entropy(loss_fn.head(emb_bad), labels)


def test_build_loss_covers_all_names_and_rejects_unknown():
    expected = {"npair", "ep", "wep", "gep", "softmax", "contrastive", "triplet", "center", "binomial",
                "arcface", "sphereface", "fastap", "softtriple", "yang"}
    assert set(L.LOSS_NAMES) == expected
    for name in expected:
        assert isinstance(L.build_loss(name), torch.nn.Module)
    assert L.build_loss("triplet", margin=0.3).margin == 0.3
    assert L.build_loss("gep", beta=0.5).beta == 0.5
    assert L.build_loss("softmax", embedding_dim=64).head.in_features == 64
    with pytest.raises(ValueError, match="valid names are: npair, ep, wep, gep"):
        L.build_loss("lifted")


def test_objective_supervises_the_heads_the_labels_reach():
    """Emotion labels supervise a polarity head through the emotions' polarities and an emotion
    head directly; polarity labels (Twitter I) supervise the polarity head only; with no head
    they reach, the objective is L_emb alone (lam does not scale it)."""
    torch.manual_seed(2)
    emb = F.normalize(torch.randn(8, 5), dim=1)
    pc = torch.softmax(torch.randn(8, 2), 1)
    ec = torch.softmax(torch.randn(8, 8), 1)
    emotions = torch.tensor([0, 5, 0, 5, 3, 6, 3, 6])
    npair = L.NPairLoss()
    total, l_emb, l_att = L.APSEObjective(npair, True, 0.3)(
        emb, emotions, pc, ec, [("polarity", pc), ("emotion", ec)])
    want_att = (LF.attention_loss(pc, polarity_labels(emotions)) + LF.attention_loss(ec, emotions))
    assert float(l_att) == pytest.approx(float(want_att), abs=1e-6)
    assert float(total) == pytest.approx(0.3 * float(l_emb) + 0.7 * float(want_att), abs=1e-6)
    polarities = torch.tensor([0, 1] * 4)
    objective = L.APSEObjective(L.NPairLoss(level="polarity"), True, 0.3, level="polarity")
    total, l_emb, l_att = objective(emb, polarities, pc, ec, [("polarity", pc), ("emotion", ec)])
    assert float(l_att) == pytest.approx(float(LF.attention_loss(pc, polarities)), abs=1e-6)
    total, l_emb, l_att = objective(emb, polarities, None, ec, [("emotion", ec)])
    assert float(total) == float(l_emb) and float(l_att) == 0.0
