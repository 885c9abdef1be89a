"""apse.plotting.plot_pair_gradients and plot_temperature_masks draw the values they are given."""
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from apse.attention import spatial_softmax  # noqa: E402
from apse.emotions import EMOTION_COLORS, EMOTIONS, polarity_labels  # noqa: E402
from apse.losses import ep_loss, wep_loss  # noqa: E402
from apse.plotting import plot_pair_gradients, plot_temperature_masks  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_pair_gradients_draw_one_bar_per_loss_and_negative():
    pushes = {"EP": [0.1, -0.2, 0.3], "WEP": torch.tensor([0.4, 0.0, -0.6])}
    labels = ["awe", "fear", "not an emotion"]
    ax = plot_pair_gradients(pushes, labels, title="one anchor")
    assert len(ax.containers) == 2
    for container, values in zip(ax.containers, ([0.1, -0.2, 0.3], [0.4, 0.0, -0.6])):
        # a bar's height is its value, signed (matplotlib draws a negative bar downwards from 0)
        assert [p.get_height() for p in container] == pytest.approx(values)
        assert [p.get_y() for p in container] == pytest.approx([0.0] * 3)
    ep_x = [p.get_x() + p.get_width() / 2 for p in ax.containers[0]]
    wep_x = [p.get_x() + p.get_width() / 2 for p in ax.containers[1]]
    # grouped: the two losses' bars of a negative sit side by side around its tick, EP first
    assert list(ax.get_xticks()) == [0, 1, 2]
    assert all(a < k < b for a, k, b in zip(ep_x, range(3), wep_x))
    assert [t.get_text() for t in ax.get_xticklabels()] == labels
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["EP", "WEP"]
    ticks = ax.get_xticklabels()
    assert to_rgba(ticks[0].get_color()) == to_rgba(EMOTION_COLORS["awe"])
    assert to_rgba(ticks[1].get_color()) == to_rgba(EMOTION_COLORS["fear"])
    assert ax.get_title() == "one anchor"


def test_pair_gradients_draw_autograd_values_of_the_losses():
    # the chapter 6 use: the gradient of EP and WEP with respect to one anchor's similarities
    polarity = polarity_labels(torch.arange(8))
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(8, 8, generator=g, dtype=torch.float64)
    eye = torch.eye(8, dtype=torch.float64)
    cp = torch.softmax(torch.randn(8, 2, generator=g, dtype=torch.float64), 1)
    ce = torch.softmax(torch.randn(8, 8, generator=g, dtype=torch.float64), 1)
    grads = {}
    for name, loss in (("EP", lambda s: ep_loss(s, eye, polarity)),
                       ("WEP", lambda s: wep_loss(s, eye, polarity, cp, cp, ce, ce))):
        s = sim.clone().requires_grad_()
        grads[name] = torch.autograd.grad(loss(s), s)[0][0, 1:]
    ax = plot_pair_gradients(grads, list(EMOTIONS[1:]))
    for container, name in zip(ax.containers, grads):
        assert [p.get_height() for p in container] == pytest.approx(grads[name].tolist())
    assert not np.allclose(grads["EP"], grads["WEP"])


def test_pair_gradients_reject_a_length_mismatch():
    with pytest.raises(ValueError, match="2 values for 3 labels"):
        plot_pair_gradients({"EP": [1.0, 2.0]}, ["a", "b", "c"])
    with pytest.raises(ValueError, match="at least one loss"):
        plot_pair_gradients({}, ["a"])


def test_temperature_masks_draw_the_softmax_at_each_temperature():
    a = torch.arange(12, dtype=torch.float64).view(3, 4) * 10.0  # spread of 110 units
    temperatures = [1.0, 100.0, "std"]
    fig, masks = plot_temperature_masks(a, temperatures)
    # the panels first (made together), then one colour bar for each
    axes = fig.axes[: len(temperatures) + 1]
    assert len(fig.axes) == 2 * (len(temperatures) + 1)
    np.testing.assert_allclose(axes[0].images[0].get_array(), a.numpy())
    for ax, t, z in zip(axes[1:], temperatures, masks):
        expected = spatial_softmax(a[None], t)[0]
        torch.testing.assert_close(z, expected)
        np.testing.assert_allclose(ax.images[0].get_array(), expected.numpy())
        n = 1.0 / expected.pow(2).sum().item()
        shown = float(ax.get_title().split("\n")[1].split()[0])
        assert ax.get_title() == f"Z at T = {t}\n{shown:g} positions"
        # the effective number of positions, to two significant digits
        assert shown == pytest.approx(round(n, 1 - math.floor(math.log10(n))))
        assert shown == pytest.approx(n, rel=0.05)
    # T = 1 on a map that spans 110 units: one-hot; T = 100: close to uniform over 12 positions
    assert masks[0].max().item() == pytest.approx(1.0, abs=1e-4)
    assert 1.0 / masks[1].pow(2).sum().item() > 10
    assert axes[0].get_title() == "aggregation map A"


def test_temperature_masks_use_given_axes_and_check_them():
    fig, axes = plt.subplots(1, 3)
    out, masks = plot_temperature_masks(torch.zeros(2, 2), [1.0, "std"], axes=axes)
    assert out is fig and len(masks) == 2
    for z in masks:  # a constant map gives a uniform mask at any temperature
        torch.testing.assert_close(z, torch.full((2, 2), 0.25, dtype=torch.float64))
    with pytest.raises(ValueError, match="need 3 axes"):
        plot_temperature_masks(torch.zeros(2, 2), [1.0, "std"], axes=axes[:2])
    with pytest.raises(ValueError, match=r"\(h, w\)"):
        plot_temperature_masks(torch.zeros(1, 2, 2), [1.0])
    assert math.isfinite(masks[0].sum().item())
