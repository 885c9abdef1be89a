"""The Twitter I retrieval figure: each query's top-5, framed by whether they share its polarity.

The entries are ``retrievals.json``'s (:func:`apse.transfer.report.load_retrievals`): fold 0's
top-5 leave-one-out retrievals of a few held-out queries, for the rows of
:data:`apse.transfer.rows.FIGURE_ROWS`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from apse.data import load_rgb

__all__ = ["plot_polarity_retrievals"]


def plot_polarity_retrievals(entries: Sequence[dict], data_root: str | os.PathLike, *,
                             queries: int | None = None, thumb: int = 96, size: float = 1.1):
    """Each query of each entry with its top-5: frames green = same polarity as the query, red =
    opposite. Rows: query after query, one row per entry (model). Images are read from `data_root`
    and shrunk to `thumb` px."""
    # lazy: matplotlib is the book's (requirements.txt), not a dependency of apse
    import matplotlib.pyplot as plt

    n_q = min(len(e["queries"]) for e in entries) if queries is None else queries
    cells = [(e["label"], e["queries"][q]) for q in range(n_q) for e in entries]
    k = max(len(c[1]["results"]) for c in cells)
    fig, axes = plt.subplots(len(cells), k + 1, squeeze=False,
                             figsize=(size * (k + 1) + 1.6, size * len(cells) * 1.12))
    cache: dict[str, Any] = {}

    def image(rel: str):
        if rel not in cache:
            im = load_rgb(Path(data_root) / rel)
            im.thumbnail((thumb, thumb), Image.BILINEAR)
            side = min(im.size)  # centre square: every cell the same size
            left, top = (im.size[0] - side) // 2, (im.size[1] - side) // 2
            cache[rel] = im.crop((left, top, left + side, top + side))
        return cache[rel]

    colours = {True: "#2ca02c", False: "#d62728"}
    for i, (label, q) in enumerate(cells):
        for j in range(k + 1):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            rel, pol = (q["query"], q["label"]) if j == 0 else q["results"][j - 1]
            ax.imshow(image(rel))
            colour = "black" if j == 0 else colours[pol == q["label"]]
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_edgecolor(colour)
                spine.set_linewidth(1.5 if j == 0 else 3)
            if j == 0:
                ax.set_ylabel(label.replace(", ", ",\n", 1), fontsize=6, rotation=0, ha="right",
                              va="center", labelpad=4)
                ax.set_title(f"query: {pol}", fontsize=7)
            else:
                ax.set_title(f"{j}. {pol}", fontsize=7)
    handles = [plt.Line2D([], [], color=colours[same], lw=3, label=t)
               for t, same in (("same polarity", True), ("opposite polarity", False))]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


