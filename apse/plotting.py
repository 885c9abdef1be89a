"""Figures the book draws more than once: image grids, embeddings, retrievals, attention, heat maps
(the network diagrams drawn from a model are in :mod:`apse.diagrams`).

Everything takes matplotlib axes (or makes a figure) and returns the figure, so notebooks stay short.
Frames of retrieved images use the papers' convention (ICCV Fig. 1): green = same emotion as the
query, blue = same polarity but another emotion, red = opposite polarity.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from apse.attention import spatial_softmax
from apse.emotions import EMOTION_COLORS, EMOTIONS, POLARITIES, emotion_name, polarity_of

TIER_COLORS = {"same emotion": "#2ca02c", "same polarity": "#1f77b4", "opposite polarity": "#d62728"}


def retrieval_tier(query_label: int, label: int) -> str:
    """Which of the papers' three ranking tiers `label` falls in for a query of `query_label`."""
    if int(label) == int(query_label):
        return "same emotion"
    return "same polarity" if polarity_of(label) == polarity_of(query_label) else "opposite polarity"


def to_image(x, mean=None, std=None) -> np.ndarray:
    """An (H, W, 3) float array in [0, 1] from a path, PIL image, or (3, H, W) tensor (un-normalised
    with `mean`/`std` when given)."""
    if isinstance(x, (str, Path)):
        x = Image.open(x)
    if isinstance(x, Image.Image):
        return np.asarray(x.convert("RGB"), dtype=np.float32) / 255.0
    t = torch.as_tensor(x).detach().float().cpu()
    if t.ndim != 3:
        raise ValueError(f"expected an image tensor of shape (3, H, W), got {tuple(t.shape)}")
    if mean is not None and std is not None:
        t = t * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return t.clamp(0, 1).permute(1, 2, 0).numpy()


def _frame(ax, color, width=4):
    for spine in ax.spines.values():
        spine.set_visible(True)  # apse.notebook.setup() hides the top/right spines by default
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


def _blank(ax):
    ax.set_xticks([])
    ax.set_yticks([])


def image_grid(images: Sequence, titles: Sequence[str] | None = None, frame_colors: Sequence[str] | None = None,
               ncols: int = 8, size: float = 1.7, mean=None, std=None, suptitle: str | None = None):
    """Show images in a grid with optional titles and coloured frames."""
    n = len(images)
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * 1.1), squeeze=False)
    for k, ax in enumerate(axes.flat):
        _blank(ax)
        if k >= n:
            ax.axis("off")
            continue
        ax.imshow(to_image(images[k], mean, std))
        if titles is not None:
            ax.set_title(titles[k], fontsize=8)
        if frame_colors is not None:
            _frame(ax, frame_colors[k])
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_retrievals(queries: Sequence, query_labels: Sequence[int], results: Sequence[Sequence],
                    result_labels: Sequence[Sequence[int]], row_names: Sequence[str] | None = None,
                    size: float = 1.6, mean=None, std=None):
    """One row per query: the query, then its top-k results framed by ranking tier (papers' Fig. 6/8)."""
    k = max(len(r) for r in results)
    fig, axes = plt.subplots(len(queries), k + 1, figsize=(size * (k + 1), size * len(queries) * 1.15), squeeze=False)
    for row, (q, ql, res, rl) in enumerate(zip(queries, query_labels, results, result_labels)):
        ax = axes[row, 0]
        ax.imshow(to_image(q, mean, std))
        _blank(ax)
        _frame(ax, "black")
        title = f"query: {emotion_name(ql)}"
        ax.set_title(title if row_names is None else f"{row_names[row]}\n{title}", fontsize=8)
        for col in range(k):
            ax = axes[row, col + 1]
            _blank(ax)
            if col >= len(res):
                ax.axis("off")
                continue
            ax.imshow(to_image(res[col], mean, std))
            _frame(ax, TIER_COLORS[retrieval_tier(ql, rl[col])])
            ax.set_title(f"{col + 1}. {emotion_name(rl[col])}", fontsize=8)
    handles = [plt.Line2D([], [], color=c, lw=4, label=t) for t, c in TIER_COLORS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def plot_circle_embedding(embeddings, labels, ax=None, title: str | None = None, jitter: float = 0.04):
    """Scatter 2-D unit embeddings on the circle, coloured by emotion, marker by polarity.

    Points are pushed slightly off the circle at random so that overlapping points stay visible.
    """
    e = torch.as_tensor(embeddings).detach().float().cpu()
    y = torch.as_tensor(labels).cpu()
    if e.ndim != 2 or e.shape[1] != 2:
        raise ValueError(f"expected (N, 2) embeddings, got {tuple(e.shape)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.2))
    g = torch.Generator().manual_seed(0)
    r = 1 + jitter * torch.randn(len(e), 1, generator=g)
    pts = (e * r).numpy()
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(t), np.sin(t), color="0.85", lw=1, zorder=0)
    for k, name in enumerate(EMOTIONS):
        m = (y == k).numpy()
        ax.scatter(pts[m, 0], pts[m, 1], s=14, color=EMOTION_COLORS[name], alpha=0.8,
                   marker="o" if polarity_of(k) == 0 else "^", label=name)
    ax.set_aspect("equal")
    ax.set_xlim(-1.3, 1.3)
    ax.set_ylim(-1.3, 1.3)
    _blank(ax)
    ax.spines[:].set_visible(False)  # the drawn circle is the frame; a box around it only adds clutter
    if title:
        ax.set_title(title)
    return ax


def emotion_legend(fig_or_ax, ncol: int = 4, fontsize: float = 8, **kw):
    """A legend of the eight emotion colours (o = positive, ^ = negative)."""
    handles = [plt.Line2D([], [], ls="", marker="o" if polarity_of(k) == 0 else "^",
                          color=EMOTION_COLORS[n], label=n)
               for k, n in enumerate(EMOTIONS)]
    return fig_or_ax.legend(handles=handles, ncol=ncol, fontsize=fontsize, frameon=False, **kw)


def overlay_attention(image, attention_map, ax=None, alpha: float = 0.5, cmap: str = "jet", title: str | None = None,
                      mean=None, std=None):
    """Draw an (h, w) attention map, upsampled bilinearly to the image, over the image."""
    img = to_image(image, mean, std)
    m = torch.as_tensor(attention_map).detach().float().cpu()
    if m.ndim != 2:
        raise ValueError(f"expected an (h, w) attention map, got {tuple(m.shape)}")
    up = torch.nn.functional.interpolate(m[None, None], size=img.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    up = (up - up.min()) / (up.max() - up.min() + 1e-8)
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(img)
    ax.imshow(up.numpy(), cmap=cmap, alpha=alpha)
    _blank(ax)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def heatmap(matrix, row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None, ax=None,
            title: str | None = None, fmt: str = ".2f", cmap: str = "viridis", annotate: bool = True,
            vmin: float | None = None, vmax: float | None = None):
    """An annotated heat map (seaborn) of a small matrix, e.g. the WEP weights V^p, V^e.

    `vmin`/`vmax` fix the colour scale (default: the matrix's own range); give several panels the
    same values so that equal colours mean equal numbers across them.
    """
    import seaborn as sns

    m = torch.as_tensor(matrix).detach().float().cpu().numpy()
    if ax is None:
        _, ax = plt.subplots(figsize=(0.55 * m.shape[1] + 1.5, 0.5 * m.shape[0] + 1))
    sns.heatmap(m, annot=annotate, fmt=fmt, cmap=cmap, ax=ax, cbar=True, annot_kws={"fontsize": 7},
                vmin=vmin, vmax=vmax,
                xticklabels=col_labels if col_labels is not None else "auto",
                yticklabels=row_labels if row_labels is not None else "auto")
    if title:
        ax.set_title(title)
    return ax


def plot_pair_gradients(pushes, labels: Sequence[str], ax=None, title: str | None = None,
                        colors: Sequence[str] | None = None):
    """Grouped bars of the gradient that one anchor's loss sends to each of its negatives.

    ``pushes`` maps a loss name to one value per negative, ``d loss / d s_ij`` (positive: gradient
    descent lowers s_ij, it pushes the negative away from the anchor; negative: it pulls it in);
    ``labels`` names the negatives, in the same order (an emotion name is coloured as in
    :data:`apse.emotions.EMOTION_COLORS`). One group per negative, one bar per loss in the order of
    ``pushes``; bar ``k`` of each group is in ``ax.containers[k]``. Returns the axes.
    """
    values = {name: torch.as_tensor(v).detach().double().cpu().flatten().tolist()
              for name, v in pushes.items()}
    if not values:
        raise ValueError("plot_pair_gradients needs at least one loss")
    for name, v in values.items():
        if len(v) != len(labels):
            raise ValueError(f"{name!r} has {len(v)} values for {len(labels)} labels")
    if ax is None:
        _, ax = plt.subplots(figsize=(0.7 * len(labels) + 1.5, 3))
    colors = list(colors) if colors is not None else ["0.6"] + [f"C{k}" for k in range(len(values))]
    width = 0.8 / len(values)
    x = np.arange(len(labels))
    for k, (name, v) in enumerate(values.items()):
        ax.bar(x + (k - (len(values) - 1) / 2) * width, v, width, label=name, color=colors[k])
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    for tick, label in zip(ax.get_xticklabels(), labels):
        if label in EMOTION_COLORS:
            tick.set_color(EMOTION_COLORS[label])
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_temperature_masks(aggregation, temperatures: Sequence, axes=None, cmap: str = "viridis"):
    """The aggregation map ``A`` (h, w) and its spatial mask ``Z = softmax(A / T)`` at each
    temperature, side by side (:func:`apse.attention.spatial_softmax`; ``"std"`` standardises A).

    Each mask has its own colour scale (a one-hot mask peaks at 1, a uniform one at 1 / hw), and
    its title gives ``T`` and the effective number of positions, ``1 / sum Z^2``, to two significant
    digits. Returns
    ``(fig, masks)``, ``masks`` the list of (h, w) masks drawn, in the order of ``temperatures``.
    """
    a = torch.as_tensor(aggregation).detach().double().cpu()
    if a.ndim != 2:
        raise ValueError(f"expected an (h, w) aggregation map, got {tuple(a.shape)}")
    if axes is None:
        fig, axes = plt.subplots(1, len(temperatures) + 1, figsize=(2.3 * (len(temperatures) + 1), 2.5))
    axes = list(np.ravel(axes))
    if len(axes) != len(temperatures) + 1:
        raise ValueError(f"need {len(temperatures) + 1} axes (A and one per temperature), got {len(axes)}")
    fig = axes[0].figure
    panels = [(a, "aggregation map A")]
    masks = []
    for t in temperatures:
        z = spatial_softmax(a[None], t)[0]
        masks.append(z)
        n = 1.0 / z.pow(2).sum().item()
        n = round(n, 1 - math.floor(math.log10(n)))  # 2 significant digits: the float noise stays out
        panels.append((z, f"Z at T = {t}\n{n:g} positions"))
    for ax, (m, title) in zip(axes, panels):
        im = ax.imshow(m.numpy(), cmap=cmap)
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(title, fontsize=9)
        _blank(ax)
    return fig, masks


def plot_history(history: Sequence[dict], keys: Sequence[str] = ("loss",), ax=None, title: str | None = None):
    """Line plot of per-epoch values from a training history (a list of dicts with an 'epoch' key)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    for key in keys:
        pts = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, label=key)
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def polarity_legend_handles():
    return [plt.Line2D([], [], ls="", marker="o" if k == 0 else "^", color="0.3", label=p) for k, p in enumerate(POLARITIES)]


def figure_to_jpeg(fig, quality: int = 80, dpi: float | None = None) -> bytes:
    """Encode a figure as JPEG bytes (white background). Grids of photographs compress several times
    better as JPEG than as PNG, which keeps notebooks with committed outputs small."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi, facecolor="white")
    buf.seek(0)
    out = io.BytesIO()
    with Image.open(buf) as im:
        im.convert("RGB").save(out, format="JPEG", quality=int(quality), optimize=True)
    return out.getvalue()


def show_jpeg(fig, quality: int = 80, dpi: float | None = None) -> None:
    """Display a figure in the notebook as a JPEG (see :func:`figure_to_jpeg`) and close it."""
    from IPython.display import Image as IPyImage, display

    data = figure_to_jpeg(fig, quality=quality, dpi=dpi)
    plt.close(fig)
    display(IPyImage(data=data, format="jpeg"))
