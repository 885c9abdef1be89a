"""apse.diagrams.draw_network / draw_clb: the diagrams carry the shapes of the model they are given."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from apse.config import TrainConfig  # noqa: E402
from apse.model import APSENet  # noqa: E402
from apse.diagrams import draw_clb, draw_network, network_shapes  # noqa: E402

SIZE = 64  # a small input: conv3 is 8 x 8, conv5 2 x 2 (strides 8 and 32)


def texts(fig):
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    return APSENet("efficientnet_lite0", pretrained=False)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return APSENet("resnet50", pretrained=False)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_shapes_come_from_a_forward_pass(lite):
    info = network_shapes(lite, image_size=SIZE)
    feats = lite.backbone(torch.zeros(1, 3, SIZE, SIZE))
    assert info["low"]["shape"] == tuple(feats["conv3"].shape[1:]) == (40, 8, 8)
    assert info["high"]["shape"] == tuple(feats["conv5"].shape[1:]) == (1280, 2, 2)
    assert info["low"]["classes"] == 2 and info["high"]["classes"] == 8
    assert info["fusion"] == {"kind": "clb", "low_dim": 40, "high_dim": 256, "bilinear": 10240}
    assert info["embedding"] == 512
    assert info["confidences"] == {"polarity": 2, "emotion": 8}
    assert "shape" not in info["stages"]["conv2"] and info["stages"]["conv4"]["channels"] == 112


def test_network_labels_carry_the_model_shapes(lite):
    fig = draw_network(lite, image_size=SIZE)
    drawn = texts(fig)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert "conv3\n40 × 8 × 8\nstride 8" in drawn
    assert "conv5\n1280 × 2 × 2\nstride 32" in drawn
    assert "polarity attention, K = 2" in drawn and "emotion attention, K = 8" in drawn
    assert "1×1 conv 40 → 2" in drawn and "1×1 conv 1280 → 8" in drawn
    assert "40 × 256 = 10,240 → 512" in drawn
    assert "512-d" in drawn and f"one {SIZE}-px image" in drawn
    assert "conv2\n24 channels\nstride 4" in drawn   # unused stages: channels and stride only


def test_changing_the_backbone_changes_the_drawn_channels(lite, resnet):
    small, large = texts(draw_network(lite, image_size=SIZE)), texts(draw_network(resnet, image_size=SIZE))
    assert "512 × 8 × 8" in large and "2048 × 2 × 2" in large and "1×1 conv 2048 → 8" in large
    assert "128 × 256 = 32,768 → 512" in large
    assert "2048" not in small and "1280" not in large
    assert "backbone: resnet50" in large and "backbone: efficientnet_lite0" in small


def test_image_size_and_embedding_dim_follow_the_model():
    fig = draw_network({"backbone": "efficientnet_lite0", "embedding_dim": 128}, image_size=96)
    drawn = texts(fig)
    assert "conv3\n40 × 12 × 12" in drawn and "conv5\n1280 × 3 × 3" in drawn
    assert "→ 128" in drawn and "128-d" in drawn


def test_switches_change_the_drawing():
    so = texts(draw_network({"backbone": "efficientnet_lite0", "attention": "none", "fusion": "single"},
                            image_size=SIZE))
    assert "attention, K" not in so and "attention loss" not in so
    assert "GAP of conv5 only\n1280 → 512" in so
    concat = texts(draw_network({"backbone": "efficientnet_lite0", "fusion": "concat"}, image_size=SIZE))
    assert "concatenated: 1320 → 512" in concat and "CLB" not in concat


def test_a_config_is_drawn_like_its_model():
    cfg = TrainConfig(backbone="efficientnet_lite0", low_stage="conv4")
    drawn = texts(draw_network(cfg, image_size=SIZE))
    assert "conv4\n112 × 4 × 4\nstride 16" in drawn and "1×1 conv 112 → 2" in drawn
    assert "conv3\n40 channels\nstride 8" in drawn   # now unused


def test_model_mode_is_restored(lite):
    lite.train()
    draw_network(lite, image_size=SIZE)
    assert lite.training
    lite.eval()


def test_clb_diagram(lite, resnet):
    drawn = texts(draw_clb(lite, image_size=SIZE))
    assert "F_a1 (conv3)\n40 × 8 × 8" in drawn and "F_a2 (conv5)\n1280 × 2 × 2" in drawn
    assert "kept at 40 channels" in drawn and "1×1 conv to 256 channels" in drawn
    assert "x_u y_uᵀ\n40 × 256" in drawn and "10,240 values" in drawn
    assert "L = 2 × 2 = 4 positions" in drawn and "512-d" in drawn
    big = texts(draw_clb(resnet, image_size=SIZE))
    assert "1×1 conv to 128 channels" in big and "x_u y_uᵀ\n128 × 256" in big
    assert "32,768 values" in big


def test_clb_diagram_needs_clb():
    with pytest.raises(ValueError, match="fusion='clb'"):
        draw_clb({"backbone": "efficientnet_lite0", "fusion": "concat"}, image_size=SIZE)


def test_rejects_other_inputs():
    with pytest.raises(TypeError, match="APSENet"):
        draw_network("resnet50")
