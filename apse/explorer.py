"""An interactive retrieval explorer for notebooks (book chapter 14).

:class:`RetrievalExplorer` puts one or more trained models behind a small ipywidgets app: pick a query
from the gallery (filtered by emotion) or upload an image, choose how many results to show, and see the
ranked gallery of every model side by side, one row per model. Each result is a thumbnail titled with
its rank, emotion, polarity (+/-) and distance, framed by the papers' ranking tiers (ICCV Fig. 1): green = same emotion
as the query, blue = same polarity, red = opposite polarity.

Everything the app shows is computed by plain methods that also work without widgets (and are what
``tests/test_explorer.py`` checks): :meth:`RetrievalExplorer.search`, :meth:`~RetrievalExplorer.table`,
:meth:`~RetrievalExplorer.tier_counts` and :meth:`~RetrievalExplorer.render` (a matplotlib figure, the
static fallback of the app)::

    from apse.explorer import RetrievalExplorer
    app = RetrievalExplorer({"N-pair": "runs/npair/model.pt", "APSE": "runs/apse/model.pt"},
                            gallery="path/to/gallery")      # one sub-folder per emotion
    app                      # in Jupyter: the interactive app
    app.render(0)            # gallery image 0 as the query, as a static figure

A model is given as a :class:`~apse.retrieval.RetrievalIndex` (gallery already embedded), a path to an
index file or to a ``model.pt`` written by ``python -m apse train``, an ``nn.Module`` (then ``gallery``
is embedded once), or an :class:`apse.training.Trainer` that has been fitted (its training split is the
gallery, embedded from the trainer's datasets: fast with cached features).
"""
from __future__ import annotations

import io
import numbers
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from apse.checkpoints import load_model
from apse.data import load_rgb
from apse.emotions import EMOTIONS, POLARITIES, emotion_index, emotion_name, polarity_of
from apse.evaluation import embed_dataset
from apse.plotting import TIER_COLORS, figure_to_jpeg, retrieval_tier
from apse.retrieval import RetrievalIndex, SearchResult

__all__ = ["RetrievalExplorer", "index_from_trainer", "load_upload", "UNKNOWN_TIER_COLOR"]

#: Frame colour of results when the query's emotion is unknown (an uploaded image).
UNKNOWN_TIER_COLOR = "#7f7f7f"


def index_from_trainer(trainer: Any, part: str = "train") -> RetrievalIndex:
    """A :class:`RetrievalIndex` of one split of a fitted :class:`apse.training.Trainer`.

    The gallery (default: the training split, the papers' FI gallery) is embedded from the trainer's
    own dataset of that split, i.e. from the cached backbone features when the run used them, so this
    takes a fraction of a second; the trainer's model is attached to embed query images (paths, PIL
    images) with the run's evaluation transform.
    """
    sets = {"train": "gallery_set", "val": "val_set", "test": "test_set"}
    if part not in sets:
        raise ValueError(f"part must be one of {', '.join(sets)}, got {part!r}")
    if not hasattr(trainer, "split") or not hasattr(trainer, sets[part]):
        raise ValueError("expected a Trainer that has been set up (call trainer.fit() or trainer.setup() first)")
    model = getattr(trainer.model, "module", trainer.model)
    emb, labels = embed_dataset(model, getattr(trainer, sets[part]), progress=False)
    paths = [trainer.samples[i][0] for i in trainer.split[part]]
    cfg = trainer.config
    backbone = model.backbone
    return RetrievalIndex(emb, paths, labels, image_size=cfg.image_size, resize=cfg.resize,
                          mean=tuple(backbone.mean), std=tuple(backbone.std), model=model)


def load_upload(value: Any):
    """The image of an ipywidgets ``FileUpload`` value (ipywidgets 8: a tuple of dicts with ``content``;
    ipywidgets 7: a dict name -> dict), or of raw bytes, as an RGB PIL image; None when nothing is uploaded."""
    if value is None or (hasattr(value, "__len__") and len(value) == 0):
        return None
    item = value
    if isinstance(value, Mapping) and "content" not in value:   # ipywidgets 7: {name: {...}}
        item = next(iter(value.values()))
    elif isinstance(value, (list, tuple)):                       # ipywidgets 8: ({...},)
        item = value[0]
    content = item["content"] if isinstance(item, Mapping) else item
    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise ValueError(f"expected an uploaded file (bytes or a FileUpload value), got {type(content).__name__}")
    try:
        with Image.open(io.BytesIO(bytes(content))) as im:
            return im.convert("RGB")
    except Exception as exc:
        raise ValueError(f"the uploaded file is not an image PIL can read ({type(exc).__name__})") from None


def _as_index(obj: Any, gallery: Any, progress: bool) -> RetrievalIndex:
    if isinstance(obj, RetrievalIndex):
        return obj
    if hasattr(obj, "gallery_set") and hasattr(obj, "split"):       # a fitted Trainer
        return index_from_trainer(obj)
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        try:
            return RetrievalIndex.load(path)
        except ValueError:
            pass  # not an index file: maybe a checkpoint
        model, config = load_model(path)
        if gallery is None:
            raise ValueError(f"{path} is a model checkpoint: pass gallery= (a folder with one sub-folder per "
                             "emotion) to embed")
        return RetrievalIndex.build(model, gallery, image_size=config.image_size, resize=config.resize,
                                    checkpoint=str(path), progress=progress)
    if isinstance(obj, torch.nn.Module):
        if gallery is None:
            raise ValueError("a model needs gallery= (a folder with one sub-folder per emotion, or a dataset) to embed")
        return RetrievalIndex.build(obj, gallery, progress=progress)
    raise TypeError(f"expected a RetrievalIndex, a model, a Trainer or a path to an index/model.pt, "
                    f"got {type(obj).__name__}")


class RetrievalExplorer:
    """Browse the ranked gallery of one or several models for a query; see the module docstring.

    Args:
        index_or_model: one model, or a mapping name -> model (compared side by side, in that order),
            where a model is a RetrievalIndex, a path to an index or a model.pt, an nn.Module or a fitted
            Trainer. Every model must index the same gallery images in the same order.
        gallery: folder or dataset to embed for models given as nn.Module or model.pt.
        names: names for a sequence of models (default "model 1", ...).
        k: number of results shown at first.
        thumb_size: side of the square thumbnails, pixels (small keeps figures light).
    """

    def __init__(self, index_or_model: Any, gallery: Any = None, *, names: Sequence[str] | None = None,
                 k: int = 5, thumb_size: int = 96, progress: bool = False):
        if isinstance(index_or_model, Mapping):
            items = list(index_or_model.items())
        elif isinstance(index_or_model, (list, tuple)):
            names = list(names) if names is not None else [f"model {i + 1}" for i in range(len(index_or_model))]
            if len(names) != len(index_or_model):
                raise ValueError(f"expected one name per model, got {len(names)} names for {len(index_or_model)} models")
            items = list(zip(names, index_or_model))
        else:
            items = [((names or ["model"])[0], index_or_model)]
        if not items:
            raise ValueError("expected at least one model or index")
        self.indexes: dict[str, RetrievalIndex] = {str(n): _as_index(m, gallery, progress) for n, m in items}
        first = next(iter(self.indexes.values()))
        for name, index in self.indexes.items():
            if index.paths != first.paths or not torch.equal(index.labels, first.labels):
                raise ValueError(f"every model must index the same gallery in the same order; {name!r} differs "
                                 f"from {next(iter(self.indexes))!r}")
        if len(first) < 2:
            raise ValueError("the gallery needs at least two images")
        self.paths: list[str] = list(first.paths)
        self.labels: list[int] = [int(y) for y in first.labels]
        self._position = {os.path.abspath(p): i for i, p in enumerate(self.paths)}
        self.k = int(k)
        self.thumb_size = int(thumb_size)
        self._thumbs: OrderedDict[str, Any] = OrderedDict()
        self._widget = None

    # ------------------------------------------------------------------ queries
    @property
    def names(self) -> list[str]:
        return list(self.indexes)

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, i: int) -> str:
        """Short label of gallery image ``i``: ``"12 · awe · awe/xyz.jpg"``."""
        path = Path(self.paths[i])
        return f"{i} · {emotion_name(self.labels[i])} · {path.parent.name}/{path.name}"

    def query_options(self, emotion: str | None = None) -> list[tuple[str, int]]:
        """(label, gallery position) of every gallery image, optionally of one emotion only."""
        keep = None if emotion in (None, "all") else EMOTIONS.index(emotion)
        return [(self.describe(i), i) for i in range(len(self)) if keep is None or self.labels[i] == keep]

    def _gallery_position(self, query: Any) -> int | None:
        if isinstance(query, bool):
            raise TypeError("expected a gallery position, an image path, a PIL image or image bytes, got a bool")
        if isinstance(query, numbers.Integral):
            query = int(query)
            if not 0 <= query < len(self):
                raise IndexError(f"gallery position must be in 0..{len(self) - 1}, got {query}")
            return query
        if isinstance(query, (str, os.PathLike)):
            return self._position.get(os.path.abspath(query))
        return None

    def query_label(self, query: Any) -> int | None:
        """Emotion index of the query when it is a gallery image, else None (e.g. an upload)."""
        pos = self._gallery_position(query)
        return None if pos is None else self.labels[pos]

    def search(self, query: Any, k: int | None = None) -> dict[str, list[SearchResult]]:
        """Top-``k`` results of every model: name -> [SearchResult].

        ``query``: a gallery position (int) or the path of a gallery image (both excluded from their own
        results, as in the papers' leave-one-out protocol), another image path, a PIL image, or the
        bytes / FileUpload value of an uploaded image (embedded by each model)."""
        k = self.k if k is None else int(k)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        pos = self._gallery_position(query)
        if pos is None and not isinstance(query, (str, os.PathLike)) and not hasattr(query, "convert") \
                and not torch.is_tensor(query):
            query = load_upload(query)
        out = {}
        for name, index in self.indexes.items():
            if pos is not None:
                emb = index.embeddings[pos]
                dist, idx = index.search_embeddings(emb[None], min(k + 1, len(index)))
                pairs = [(d, i) for d, i in zip(dist[0].tolist(), idx[0].tolist()) if i != pos][:k]
            else:
                dist, idx = index.search_embeddings(index.embed_query(query)[None], k)
                pairs = list(zip(dist[0].tolist(), idx[0].tolist()))
            out[name] = [SearchResult(r, self.paths[i], float(d), EMOTIONS[self.labels[i]],
                                      POLARITIES[polarity_of(self.labels[i])]) for r, (d, i) in enumerate(pairs, 1)]
        return out

    def _label(self, query: Any, label: int | str | None) -> int | None:
        if label is None:
            return self.query_label(query)
        return emotion_index(label) if isinstance(label, str) else EMOTIONS.index(emotion_name(int(label)))

    def table(self, query: Any, k: int | None = None, label: int | str | None = None):
        """The results of :meth:`search` as a pandas DataFrame (one row per model and rank). ``label``:
        the query's emotion when it is not a gallery image (for the tier column)."""
        import pandas as pd

        label = self._label(query, label)
        rows = []
        for name, results in self.search(query, k).items():
            for r in results:
                tier = None if label is None else retrieval_tier(label, EMOTIONS.index(r.emotion))
                rows.append({"model": name, "rank": r.rank, "emotion": r.emotion, "polarity": r.polarity,
                             "tier": tier, "distance": round(r.distance, 4),
                             "file": f"{Path(r.path).parent.name}/{Path(r.path).name}"})
        return pd.DataFrame(rows)

    def tier_counts(self, query: Any, k: int | None = None, label: int | str | None = None):
        """How many of each model's top ``k`` fall in each ranking tier (a DataFrame). The query's emotion
        is known for a gallery image; for another image pass it as ``label``."""
        import pandas as pd

        label = self._label(query, label)
        if label is None:
            raise ValueError("tiers need the query's emotion: use a gallery image as the query or pass label=")
        counts = {}
        for name, results in self.search(query, k).items():
            tiers = [retrieval_tier(label, EMOTIONS.index(r.emotion)) for r in results]
            counts[name] = {t: tiers.count(t) for t in TIER_COLORS}
        return pd.DataFrame.from_dict(counts, orient="index")

    # ------------------------------------------------------------------ drawing
    def thumbnail(self, image: Any):
        """A small square RGB thumbnail (PIL) of a path (cached) or a PIL image."""
        size = (self.thumb_size, self.thumb_size)
        if not isinstance(image, (str, os.PathLike)):
            return ImageOps.fit(image.convert("RGB"), size)
        key = str(image)
        if key not in self._thumbs:
            self._thumbs[key] = ImageOps.fit(load_rgb(key), size)
            if len(self._thumbs) > 512:
                self._thumbs.popitem(last=False)
        return self._thumbs[key]

    def render(self, query: Any, k: int | None = None, size: float = 1.35, title: str | None = None,
               label: int | str | None = None):
        """A matplotlib figure: one row per model, the query then its top ``k`` (rank, emotion, distance),
        framed by tier. ``label``: the query's emotion when it is not a gallery image (without it,
        such results get grey frames)."""
        import matplotlib.pyplot as plt
        k = self.k if k is None else int(k)
        results = self.search(query, k)
        label = self._label(query, label)
        pos = self._gallery_position(query)
        if pos is not None:
            q_image = self.thumbnail(self.paths[pos])
        elif isinstance(query, (str, os.PathLike)):
            q_image = self.thumbnail(query)
        elif hasattr(query, "convert"):
            q_image = self.thumbnail(query)
        else:
            q_image = self.thumbnail(load_upload(query))
        q_text = f"query: {emotion_name(label)}" if label is not None else "query: uploaded"
        n = len(results)
        fig, axes = plt.subplots(n, k + 1, figsize=(size * (k + 1) + 0.3, size * n * 1.42 + 0.3), squeeze=False)
        for row, (name, res) in enumerate(results.items()):
            for col in range(k + 1):
                ax = axes[row, col]
                ax.set_xticks([])
                ax.set_yticks([])
                if col == 0:
                    ax.imshow(np.asarray(q_image))
                    self._frame(ax, "black")
                    ax.set_title(q_text, fontsize=7)
                    ax.set_ylabel(name, fontsize=9, fontweight="bold")
                    continue
                if col > len(res):
                    ax.axis("off")
                    continue
                r = res[col - 1]
                ax.imshow(np.asarray(self.thumbnail(r.path)))
                color = UNKNOWN_TIER_COLOR if label is None else TIER_COLORS[
                    retrieval_tier(label, EMOTIONS.index(r.emotion))]
                self._frame(ax, color)
                sign = "+" if r.polarity == POLARITIES[0] else "−"     # the polarity, as a sign
                ax.set_title(f"{r.rank}. {r.emotion} ({sign})\nd = {r.distance:.3f}", fontsize=7)
        if label is not None:
            handles = [plt.Line2D([], [], color=c, lw=4, label=t) for t, c in TIER_COLORS.items()]
            fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, frameon=False)
        if title:
            fig.suptitle(title, fontsize=8)
        fig.tight_layout(rect=(0, 0.05 if label is not None else 0, 1, 1))
        return fig

    @staticmethod
    def _frame(ax, color, width: float = 3.5):
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_edgecolor(color)
            spine.set_linewidth(width)

    # ------------------------------------------------------------------ the widget app
    def widget(self):
        """The ipywidgets app (built once): emotion filter, query picker, number of results, upload."""
        if self._widget is not None:
            return self._widget
        import ipywidgets as W
        import matplotlib.pyplot as plt
        from IPython.display import Image as IPyImage, display

        emotion = W.Dropdown(options=["all", *EMOTIONS], value="all", description="emotion")
        picker = W.Dropdown(options=self.query_options(), value=0, description="query",
                            layout=W.Layout(width="420px"))
        k = W.IntSlider(value=self.k, min=1, max=min(20, len(self) - 1), description="results")
        upload = W.FileUpload(accept="image/*", multiple=False, description="upload image")
        status = W.HTML()
        out = W.Output()
        state: dict[str, Any] = {"upload": None}

        def redraw(*_):
            query = state["upload"] if state["upload"] is not None else picker.value
            with out:
                out.clear_output(wait=True)
                try:
                    fig = self.render(query, k.value)
                    display(IPyImage(data=figure_to_jpeg(fig), format="jpeg"))  # photos: JPEG is ~5x smaller
                    plt.close(fig)
                    if state["upload"] is None:
                        counts = self.tier_counts(query, k.value)
                        status.value = "<br>".join(
                            f"<b>{name}</b>: " + ", ".join(f"{int(v)} {t}" for t, v in row.items())
                            for name, row in counts.iterrows())
                    else:
                        status.value = "uploaded image: its emotion is unknown, so results are not framed by tier"
                except Exception as exc:  # show the problem in the app rather than in a log
                    status.value = f"<span style='color:#d62728'>{type(exc).__name__}: {exc}</span>"

        def on_emotion(change):
            options = self.query_options(change["new"])
            picker.options = options
            if options:
                picker.value = options[0][1]

        def on_pick(_):
            state["upload"] = None
            redraw()

        def on_upload(change):
            try:
                state["upload"] = load_upload(change["new"])
            except ValueError as exc:
                status.value = f"<span style='color:#d62728'>{exc}</span>"
                return
            redraw()

        emotion.observe(on_emotion, names="value")
        picker.observe(on_pick, names="value")
        k.observe(redraw, names="value")
        upload.observe(on_upload, names="value")
        redraw()
        self._widget = W.VBox([W.HBox([emotion, picker]), W.HBox([k, upload]), status, out])
        return self._widget

    def _ipython_display_(self):
        from IPython.display import display

        # the widget's own bundle, with this explorer's one-line repr as its text stand-in (what a
        # page or console without widgets shows) instead of the widget tree cut at 110 characters
        display({**self.widget()._repr_mimebundle_(), "text/plain": repr(self)}, raw=True)

    def __repr__(self) -> str:
        return f"RetrievalExplorer({', '.join(self.names)}; gallery of {len(self)} images)"
