"""Diagrams: the three-tier ranking, rankings coloured by tier, and the network drawn from a model.

The ranking diagrams (:func:`draw_tiers`, :func:`draw_ranking`) use the book's colours, not new
ones: each emotion in :data:`apse.emotions.EMOTION_COLORS`, each tier in
:data:`apse.plotting.TIER_COLORS` (green = same emotion, blue = same polarity, red = opposite
polarity), with :func:`apse.plotting.retrieval_tier` deciding the tier. What the network diagrams
show is read from an actual :class:`apse.model.APSENet` (a model, a config or a dict of its keyword
arguments, built with random weights when only shapes matter), not typed in.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.colors import to_rgb
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

from apse.emotions import EMOTION_COLORS, EMOTIONS, emotion_index, emotion_name
from apse.model import APSENet, ModelConfig
from apse.plotting import TIER_COLORS, retrieval_tier

__all__ = ["tier_order", "draw_tiers", "draw_ranking", "network_shapes", "draw_network", "draw_clb"]

_TIERS = tuple(TIER_COLORS)  # ("same emotion", "same polarity", "opposite polarity")


def _label(emotion) -> int:
    return emotion_index(emotion) if isinstance(emotion, str) else int(emotion)


def _ink(color) -> str:
    """Black or white, whichever reads better on ``color``."""
    r, g, b = to_rgb(color)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


def tier_order(query) -> list[tuple[str, str]]:
    """The eight emotions as a perfect ranking for a query of emotion ``query`` (name or index)
    would list them: ``(emotion, tier)`` for the query's own emotion, then the three others of its
    polarity, then the four of the opposite polarity (each group in the papers' order)."""
    q = _label(query)
    emotion_name(q)  # validates the index
    return sorted(((e, retrieval_tier(q, k)) for k, e in enumerate(EMOTIONS)),
                  key=lambda et: _TIERS.index(et[1]))


def draw_tiers(query="awe", ax=None, title: str | None = None):
    """The three-tier ranking for one query emotion: the eight emotions in the order a perfect
    retrieval lists them (:func:`tier_order`), one cell per emotion in its colour, and under them one
    bar per tier in the tier's colour (same emotion, same polarity, opposite polarity).

    Each emotion cell has the gid ``"emotion:<name>"``, each tier bar ``"tier:<tier>"``. Returns the
    figure.
    """
    order = tier_order(query)
    q = emotion_name(_label(query))
    if ax is None:
        fig, ax = plt.subplots(figsize=(9.6, 1.8))
    else:
        fig = ax.figure
    x0, w, gap = 1.7, 1.5, 0.12
    ax.add_patch(Rectangle((0, 0.9), 1.2, 0.8, fc=EMOTION_COLORS[q], ec="0.2", lw=1.5,
                           gid="query"))
    ax.text(0.6, 1.3, f"query\n{q}", ha="center", va="center", fontsize=8, color=_ink(EMOTION_COLORS[q]))
    xs = {}
    for k, (e, tier) in enumerate(order):
        x = x0 + k * (w + gap) + _TIERS.index(tier) * 0.35
        xs.setdefault(tier, []).append(x)
        ax.add_patch(Rectangle((x, 0.9), w, 0.8, fc=EMOTION_COLORS[e], ec="white", lw=1,
                               gid=f"emotion:{e}"))
        ax.text(x + w / 2, 1.3, e, ha="center", va="center", fontsize=7,
                color=_ink(EMOTION_COLORS[e]))
    for n, tier in enumerate(_TIERS):
        left, right = min(xs[tier]), max(xs[tier]) + w
        ax.add_patch(Rectangle((left, 0.55), right - left, 0.22, fc=TIER_COLORS[tier], ec="none",
                               gid=f"tier:{tier}"))
        ax.text((left + right) / 2, 0.45, f"{n + 1}. {tier}", ha="center", va="top", fontsize=8,
                color=TIER_COLORS[tier])
    end = max(xs[_TIERS[-1]]) + w
    ax.add_patch(FancyArrowPatch((x0, 1.95), (end, 1.95), arrowstyle="-|>", mutation_scale=10,
                                 color="0.4", lw=1, shrinkA=0, shrinkB=0))
    ax.text(x0, 2.05, "rank 1 (nearest)", ha="left", va="bottom", fontsize=7.5, color="0.3")
    ax.text(end, 2.05, "last (farthest)", ha="right", va="bottom", fontsize=7.5, color="0.3")
    ax.set_xlim(-0.1, end + 0.1)
    ax.set_ylim(-0.05, 2.45)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def draw_ranking(query_labels, ranked_labels, ax=None, row_names=None, notes=None,
                 title: str | None = None, legend: bool = True):
    """Rankings as strips of cells coloured by tier: one row per query, cell ``k`` for its rank-``k``
    result, green / blue / red for same emotion / same polarity / opposite polarity
    (:data:`apse.plotting.TIER_COLORS`), the result's emotion written in it (first four letters).

    ``query_labels``: one emotion (index or name) per query; ``ranked_labels``: per query, the
    emotions of its results from rank 1 down (rows may differ in length). ``row_names`` label the
    rows (default ``"<emotion> query"``); ``notes``, one string per row, are written at its right
    end (e.g. the row's metric values). Each cell has the gid ``"rank:<row>:<k>"``. Returns the
    figure.
    """
    queries = [_label(q) for q in query_labels]
    rows = [[_label(e) for e in r] for r in ranked_labels]
    if len(rows) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(rows)} rankings")
    width = max((len(r) for r in rows), default=0)
    if ax is None:
        fig, ax = plt.subplots(figsize=(min(0.55 * width + 4.5, 11), 0.5 * len(rows) + 0.9))
    else:
        fig = ax.figure
    for i, (q, r) in enumerate(zip(queries, rows)):
        y = len(rows) - 1 - i
        for k, e in enumerate(r):
            color = TIER_COLORS[retrieval_tier(q, e)]
            ax.add_patch(Rectangle((k, y + 0.08), 0.94, 0.84, fc=color, ec="none",
                                   gid=f"rank:{i}:{k + 1}"))
            ax.text(k + 0.47, y + 0.5, EMOTIONS[e][:4], ha="center", va="center", fontsize=7,
                    color=_ink(color))
        name = row_names[i] if row_names is not None else f"{EMOTIONS[q]} query"
        ax.text(-0.2, y + 0.5, name, ha="right", va="center", fontsize=8)
        if notes is not None:
            ax.text(width + 0.2, y + 0.5, notes[i], ha="left", va="center", fontsize=8,
                    family="monospace")
    for k in range(width):
        ax.text(k + 0.47, len(rows) + 0.05, str(k + 1), ha="center", va="bottom", fontsize=7,
                color="0.35")
    ax.set_xlim(-0.1, width + 0.1)
    ax.set_ylim(0, len(rows) + 0.45)
    ax.axis("off")
    if legend:
        handles = [Rectangle((0, 0), 1, 1, fc=c, ec="none", label=t) for t, c in TIER_COLORS.items()]
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3,
                  fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def _as_apsenet(model_or_config):
    """An :class:`apse.model.APSENet` from a model, a model section (:class:`apse.model.ModelConfig`,
    e.g. a :class:`apse.config.TrainConfig`) or a dict of APSENet keyword arguments (the latter two
    built with random weights: only shapes matter)."""
    if isinstance(model_or_config, APSENet):
        return model_or_config
    if isinstance(model_or_config, ModelConfig):
        return APSENet.from_config(model_or_config, pretrained=False)
    if isinstance(model_or_config, dict):
        return APSENet(**{"pretrained": False, **model_or_config})
    raise TypeError(f"expected an APSENet, a TrainConfig or a dict of APSENet arguments, got "
                    f"{type(model_or_config).__name__}")


def _shape(t) -> str:
    return " × ".join(str(int(v)) for v in t)


@torch.no_grad()
def network_shapes(model_or_config, image_size: int = 224) -> dict:
    """The shapes (one image, no batch dimension) of everything :func:`draw_network` draws, read
    from a forward pass of a blank ``image_size`` image through the model.

    Keys: ``image``, ``stages`` (every backbone stage: ``channels``, ``stride`` and, for the stages
    the model computes, ``shape``), ``low`` / ``high`` (the stage name, its ``shape``, and for an
    attention head ``classes``, ``class_maps``, ``attention_map`` and ``attended``), ``fusion``
    (``kind`` and, for CLB, ``low_dim``, ``high_dim``, ``bilinear``), ``embedding`` and
    ``confidences`` ({level: K}).
    """
    model = _as_apsenet(model_or_config)
    try:
        device = next(model.parameters()).device
    except StopIteration:  # pragma: no cover - an APSENet always has parameters
        device = torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, 3, image_size, image_size, device=device)
        feats = model.backbone(x)
        out = model.forward_features(feats)
        levels = {}
        for name, stage, head in (("low", model.low_stage, model.low_head),
                                  ("high", model.high_stage, model.high_head)):
            if stage not in feats:
                continue
            level = {"stage": stage, "shape": tuple(feats[stage].shape[1:])}
            if head is not None:
                res = head(feats[stage])
                level.update(classes=int(res.confidences.shape[1]),
                             class_maps=tuple(res.class_maps.shape[1:]),
                             attention_map=tuple(res.attention_map.shape[1:]),
                             attended=tuple(res.features.shape[1:]))
            levels[name] = level
    finally:
        model.train(was_training)
    bb = model.backbone
    stages = {s: {"channels": int(bb.channels[s]), "stride": int(bb.strides[s])} for s in bb.channels}
    for s, f in feats.items():
        stages[s]["shape"] = tuple(f.shape[1:])
    fusion = {"kind": model.fusion}
    if model.fusion == "clb":
        fusion.update(low_dim=int(model.fuse.low_dim), high_dim=int(model.fuse.high_dim),
                      bilinear=int(model.fuse.low_dim * model.fuse.high_dim))
    else:
        fusion["in_dim"] = int(model.fuse.in_features)
    confidences = {level: int(c.shape[1]) for level, c in out.attention_terms()}
    if model.low_head is not None and model.low_attention == "emotion":
        confidences = {"low emotion": int(out.low_emotion_confidence.shape[1]),
                       "emotion": int(out.emotion_confidence.shape[1])}
    return {"image": (3, image_size, image_size), "backbone": getattr(bb, "name", type(bb).__name__),
            "stages": stages, **levels, "fusion": fusion,
            "embedding": int(out.embedding.shape[1]), "confidences": confidences}


_DIAGRAM_COLORS = {"input": "#f2f2f2", "stage": "#dbe8f6", "unused": "#f7f7f7", "polarity": "#fde2c8",
                   "emotion": "#e6dcf3", "fusion": "#d9efd9", "embedding": "#fff3bf", "loss": "#f8d7da"}


def _diagram_box(ax, x, y, w, h, text, color, fontsize=8, ls="-", ec="0.35"):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.08",
                                fc=color, ec=ec, lw=1, ls=ls))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, linespacing=1.25)


def _diagram_arrow(ax, start, end, text=None, color="0.35", fontsize=7, offset=(0, 0.12), ls="-"):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, color=color, lw=1,
                                 shrinkA=0, shrinkB=0, linestyle=ls))
    if text:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text,
                ha="center", va="bottom", fontsize=fontsize, color="0.25")


def _diagram_path(ax, points, color="0.35", ls=":"):
    """A polyline whose last segment is an arrow."""
    for a, b in zip(points[:-2], points[1:-1]):
        ax.plot([a[0], b[0]], [a[1], b[1]], color=color, lw=1, ls=ls)
    ax.add_patch(FancyArrowPatch(points[-2], points[-1], arrowstyle="-|>", mutation_scale=10, color=color,
                                 lw=1, shrinkA=0, shrinkB=0, linestyle=ls))


def draw_network(model_or_config, image_size: int = 224, ax=None, title: str | None = None):
    """The APSE network, drawn from an actual model: backbone stages with their channels and strides,
    the attention heads on their stages, the fusion (CLB), the embedding and the losses.

    ``model_or_config``: an :class:`apse.model.APSENet`, a :class:`apse.config.TrainConfig` or a dict
    of APSENet arguments. Every shape in the figure comes from :func:`network_shapes`, i.e. from a
    forward pass of a blank ``image_size`` image, so the drawing cannot drift from the code. Stages
    the model does not use are drawn dashed. Returns the figure.
    """
    model = _as_apsenet(model_or_config)
    info = network_shapes(model, image_size)
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 5.0))
    else:
        fig = ax.figure
    ax.set_xlim(0, 13)
    ax.set_ylim(0.3, 6.75)
    ax.axis("off")

    y_top, y_head, y_fuse, bh = 5.75, 3.7, 1.2, 1.15
    stage_names = list(info["stages"])[: list(info["stages"]).index(model.high_stage) + 1]
    xs = {s: 2.7 + 2.05 * k for k, s in enumerate(stage_names)}
    _diagram_box(ax, 0.85, y_top, 1.5, bh, f"image\n{_shape(info['image'])}", _DIAGRAM_COLORS["input"])
    used = {info[lv]["stage"] for lv in ("low", "high") if lv in info}
    prev = 1.6
    for s in stage_names:
        st = info["stages"][s]
        dims = _shape(st["shape"]) if "shape" in st else f"{st['channels']} channels"
        _diagram_box(ax, xs[s], y_top, 1.85, bh, f"{s}\n{dims}\nstride {st['stride']}",
                     _DIAGRAM_COLORS["stage" if s in used else "unused"],
                     ls="-" if s in used else "--", ec="0.35" if s in used else "0.6")
        _diagram_arrow(ax, (prev, y_top), (xs[s] - 0.925, y_top))
        prev = xs[s] + 0.925
    ax.text(xs[stage_names[0]] - 0.925, y_top + bh / 2 + 0.1, f"backbone: {info['backbone']}", fontsize=8,
            ha="left", va="bottom", color="0.25")

    # the two levels: an attention head (or the raw map) under each stage
    level_x, head_w = {}, 2.75
    for lv in ("low", "high"):
        if lv not in info:
            continue
        d = info[lv]
        x = xs[d["stage"]]
        if info.get("low", {}).get("stage") == info.get("high", {}).get("stage"):
            x += -0.05 if lv == "high" else -2.95         # both levels on one stage (TMM Table IV)
        level_x[lv] = x
        if "classes" in d:
            kind = "polarity" if (lv == "low" and model.low_attention == "polarity") else "emotion"
            text = (f"{kind} attention, K = {d['classes']}\n1×1 conv {d['shape'][0]} → {d['classes']}\n"
                    f"S {_shape(d['class_maps'])}, U {_shape(d['attention_map'])}\n"
                    f"F_a {_shape(d['attended'])}")
            _diagram_box(ax, x, y_head, head_w, 1.35, text, _DIAGRAM_COLORS[kind], fontsize=7)
        else:
            _diagram_box(ax, x, y_head, 2.0, 1.35, f"{d['stage']}, no attention\n{_shape(d['shape'])}",
                         _DIAGRAM_COLORS["unused"], fontsize=7, ls="--", ec="0.6")
        _diagram_arrow(ax, (xs[d["stage"]], y_top - bh / 2), (x, y_head + 0.68))

    # fusion -> embedding -> embedding loss
    fu = info["fusion"]
    x_fuse, x_emb, x_loss = 6.8, 9.95, 11.95
    if fu["kind"] == "clb":
        ftext = (f"cross-level bilinear pooling (CLB)\n{fu['low_dim']} × {fu['high_dim']} = "
                 f"{fu['bilinear']:,} → {info['embedding']}\nsigned √, ℓ2")
    elif fu["kind"] == "concat":
        ftext = f"GAP of both levels, ℓ2 each,\nconcatenated: {fu['in_dim']} → {info['embedding']}, ℓ2"
    else:
        ftext = f"GAP of {model.high_stage} only\n{fu['in_dim']} → {info['embedding']}, ℓ2"
    _diagram_box(ax, x_fuse, y_fuse, 3.6, 1.1, ftext, _DIAGRAM_COLORS["fusion"], fontsize=7.5)
    for lv in (("high",) if fu["kind"] == "single" else ("low", "high")):
        if lv in level_x:
            x = level_x[lv]
            end = min(max(x, x_fuse - 1.5), x_fuse + 1.5)
            _diagram_arrow(ax, (x, y_head - 0.68), (end, y_fuse + 0.55), "F_a" if lv in info and
                           "classes" in info[lv] else None, offset=(0.25 if x > x_fuse else -0.25, 0))
    _diagram_box(ax, x_emb, y_fuse, 1.7, 1.1, f"embedding e\n{info['embedding']}-d\n‖e‖ = 1",
                 _DIAGRAM_COLORS["embedding"], fontsize=7.5)
    _diagram_arrow(ax, (x_fuse + 1.8, y_fuse), (x_emb - 0.85, y_fuse))
    _diagram_box(ax, x_loss, y_fuse, 1.9, 1.1, "embedding loss\nN-pair, EP,\nWEP or GEP",
                 _DIAGRAM_COLORS["loss"], fontsize=7.5)
    _diagram_arrow(ax, (x_emb + 0.85, y_fuse), (x_loss - 0.95, y_fuse))

    # confidences -> attention loss (dotted); WEP and GEP also read them
    if info["confidences"]:
        conf = "\n".join(f"c {lv} ({k})" for lv, k in info["confidences"].items())
        _diagram_box(ax, x_loss, y_head, 1.9, 1.35, f"attention loss\ncross-entropy of\n{conf}",
                     _DIAGRAM_COLORS["loss"], fontsize=7)
        heads = sorted((x, lv) for lv, x in level_x.items() if "classes" in info[lv])
        for k, (x, lv) in enumerate(reversed(heads)):
            if k == 0:      # the head nearest the loss: straight across
                _diagram_path(ax, [(x + head_w / 2, y_head + 0.2), (x_loss - 0.95, y_head + 0.2)])
            else:           # the other one: under the nearer head
                y_route = y_head - 0.95
                _diagram_path(ax, [(x + 0.6, y_head - 0.68), (x + 0.6, y_route), (x_loss - 0.5, y_route),
                                   (x_loss - 0.5, y_head - 0.68)])
        _diagram_arrow(ax, (x_loss + 0.4, y_head - 0.68), (x_loss + 0.4, y_fuse + 0.55), ls=":")
        ax.text(x_loss + 0.3, (y_head + y_fuse) / 2 - 0.2, "WEP and GEP also\nread the confidences",
                fontsize=6.5, ha="right", va="center", color="0.35")
    ax.text(12.95, 0.35, f"shapes for one {image_size}-px image (channels × height × width)",
            fontsize=6.5, ha="right", color="0.45")
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def draw_clb(model_or_config=None, image_size: int = 224, ax=None, title: str | None = None):
    """Cross-level bilinear pooling, drawn from an actual model: the attended low and high maps, the
    low map pooled to the high grid, the 1×1 reductions, the outer product at one position u, its sum
    over the L positions (phi), the compaction to the embedding, signed square root and l2.

    ``model_or_config``: an :class:`apse.model.APSENet` with ``fusion="clb"``, a TrainConfig or a dict
    (see :func:`draw_network`), or ``None`` for Lite0 with the default CLB. Shapes come from
    :func:`network_shapes`. Returns the figure.
    """
    model = _as_apsenet({"backbone": "efficientnet_lite0"} if model_or_config is None else model_or_config)
    if model.fusion != "clb":
        raise ValueError(f"expected a model with fusion='clb', got fusion={model.fusion!r}")
    info = network_shapes(model, image_size)
    k1, h1, w1 = info["low"]["shape"]
    k2, h2, w2 = info["high"]["shape"]
    r1, r2, d = info["fusion"]["low_dim"], info["fusion"]["high_dim"], info["embedding"]
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 3.8))
    else:
        fig = ax.figure
    ax.set_xlim(0, 13)
    ax.set_ylim(-0.1, 5.0)
    ax.axis("off")

    def grid(x0, y0, size, rows, cols, color, label, cell=None):
        ax.add_patch(Rectangle((x0, y0), size, size, fc=color, ec="0.35", lw=1))
        if max(rows, cols) <= 32:
            for k in range(1, cols):
                ax.plot([x0 + k * size / cols] * 2, [y0, y0 + size], color="0.6", lw=0.4)
            for k in range(1, rows):
                ax.plot([x0, x0 + size], [y0 + k * size / rows] * 2, color="0.6", lw=0.4)
        if cell is not None:
            ax.add_patch(Rectangle((x0 + cell[1] * size / cols, y0 + size - (cell[0] + 1) * size / rows),
                                   size / cols, size / rows, fc="#d62728", ec="none", alpha=0.8))
        ax.text(x0 + size / 2, y0 - 0.1, label, ha="center", va="top", fontsize=7.5, linespacing=1.2)

    u = (h2 // 2, w2 // 3)
    low_label = "kept at" if r1 == k1 else "1×1 conv to"
    high_label = "kept at" if r2 == k2 else "1×1 conv to"
    grid(0.3, 3.0, 1.4, h1, w1, _DIAGRAM_COLORS["polarity"],
         f"F_a1 ({info['low']['stage']})\n{_shape((k1, h1, w1))}")
    grid(0.3, 0.55, 1.4, h2, w2, _DIAGRAM_COLORS["emotion"],
         f"F_a2 ({info['high']['stage']})\n{_shape((k2, h2, w2))}", cell=u)
    grid(2.85, 3.0, 1.4, h2, w2, _DIAGRAM_COLORS["polarity"],
         f"pooled to {h2} × {w2}\n{low_label} {r1} channels", cell=u)
    grid(2.85, 0.55, 1.4, h2, w2, _DIAGRAM_COLORS["emotion"], f"{high_label} {r2} channels", cell=u)
    _diagram_arrow(ax, (1.8, 3.7), (2.75, 3.7), "avg pool", offset=(0, 0.06))
    _diagram_arrow(ax, (1.8, 1.25), (2.75, 1.25))

    # the outer product at one position u: a column x_u (r1 values) times a row y_u (r2 values)
    xc, yc, bar = 5.75, 2.3, 0.14
    ax.add_patch(Rectangle((xc, yc - 1.0), bar, 1.72, fc=_DIAGRAM_COLORS["polarity"], ec="0.35", lw=1))
    ax.text(xc - 0.1, yc - 0.14, f"x_u\n{r1}", ha="right", va="center", fontsize=7)
    ax.add_patch(Rectangle((xc + 0.3, yc + 0.86), 2.2, bar, fc=_DIAGRAM_COLORS["emotion"], ec="0.35", lw=1))
    ax.text(xc + 1.4, yc + 1.08, f"y_u: {r2}", ha="center", va="bottom", fontsize=7)
    ax.add_patch(Rectangle((xc + 0.3, yc - 1.0), 2.2, 1.72, fc="#e3f1e3", ec="0.35", lw=1))
    ax.text(xc + 1.4, yc - 0.14, f"x_u y_uᵀ\n{r1} × {r2}", ha="center", va="center", fontsize=7.5)
    _diagram_arrow(ax, (4.35, 3.7), (xc + 0.02, yc + 0.78))
    _diagram_arrow(ax, (4.35, 1.25), (xc + 0.3, yc + 0.9))
    ax.text(xc + 1.25, 0.3, f"at each of the L = {h2} × {w2} = {h2 * w2} positions u",
            ha="center", va="center", fontsize=7, color="0.3")

    x1, x2, y1, y2 = 9.65, 11.9, 3.55, 1.45
    _diagram_box(ax, x1, y1, 1.7, 0.95, f"φ = Σ_u x_u y_uᵀ\n{r1 * r2:,} values",
                 _DIAGRAM_COLORS["fusion"], fontsize=7.5)
    _diagram_arrow(ax, (xc + 2.6, yc + 0.4), (x1 - 0.6, y1 - 0.48))
    _diagram_box(ax, x2, y1, 1.7, 0.95, f"compaction\nlinear → {d}", _DIAGRAM_COLORS["fusion"],
                 fontsize=7.5)
    _diagram_arrow(ax, (x1 + 0.85, y1), (x2 - 0.85, y1))
    _diagram_box(ax, x2, y2, 1.7, 0.95, "signed √:\nsign(z) √|z|, then ℓ2", _DIAGRAM_COLORS["fusion"],
                 fontsize=7)
    _diagram_arrow(ax, (x2, y1 - 0.48), (x2, y2 + 0.48))
    _diagram_box(ax, x1, y2, 1.7, 0.95, f"embedding e\n{d}-d, ‖e‖ = 1", _DIAGRAM_COLORS["embedding"],
                 fontsize=7.5)
    _diagram_arrow(ax, (x2 - 0.85, y2), (x1 + 0.85, y2))
    if title:
        ax.set_title(title, fontsize=9)
    return fig
