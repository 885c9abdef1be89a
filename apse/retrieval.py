"""Affective image search with a trained model: a gallery embedded once, queried many times.

:class:`RetrievalIndex` holds the l2-normalised embeddings of a gallery together with each image's path
and emotion. Queries are ranked by Euclidean distance (spec, "Retrieval by Euclidean distance between
l2-normalised 512-d embeddings"), with ties broken by gallery order, like :mod:`apse.metrics`.

Search is exact. It runs in torch by default; when the optional ``faiss`` package is importable and the
gallery has more than :attr:`RetrievalIndex.faiss_threshold` items, a ``faiss.IndexFlatL2`` (also exact,
just faster on very large galleries) is used instead. FAISS is never required.

An index saved with :meth:`RetrievalIndex.save` contains only tensors, strings and numbers, so it loads
with ``torch.load(..., weights_only=True)``. It remembers the checkpoint it was built with, so that a
query *image* can be embedded later without naming the model again.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from apse.backbones import IMAGENET_MEAN, IMAGENET_STD
from apse.checkpoints import load_model
from apse.data import EmotionImageFolder, build_transforms
from apse.emotions import EMOTIONS, POLARITIES, polarity_of
from apse.evaluation import embed_dataset
from apse.io import atomic_save, read_apse_file
from apse.metrics import nearest, pairwise_distances

__all__ = ["RetrievalIndex", "SearchResult"]

_FORMAT = "apse-retrieval-index"


@dataclass(frozen=True)
class SearchResult:
    """One retrieved gallery image."""

    rank: int            # 1-based
    path: str
    distance: float      # Euclidean distance between embeddings
    emotion: Optional[str]   # gallery label (None if the gallery was unlabelled)
    polarity: Optional[str]


def _faiss():
    try:
        import faiss  # type: ignore
    except Exception:  # ImportError, or a broken install: torch search is always available
        return None
    return faiss


class RetrievalIndex:
    """Gallery embeddings + paths + labels, searchable by image or embedding.

    Build with :meth:`build` (embeds a folder or dataset) or directly from tensors. ``model`` (optional)
    is used to embed query images; otherwise it is loaded from ``checkpoint`` on first need.
    """

    #: galleries larger than this use FAISS when it is installed.
    faiss_threshold: int = 50_000

    def __init__(self, embeddings: torch.Tensor, paths: Sequence[str], labels: torch.Tensor | Sequence[int],
                 *, checkpoint: str | None = None, image_size: int = 224, resize: int = 256,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 model: torch.nn.Module | None = None):
        embeddings = torch.as_tensor(embeddings, dtype=torch.float32)
        labels = torch.as_tensor(list(labels) if not torch.is_tensor(labels) else labels, dtype=torch.long)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(paths) or labels.shape != (len(paths),):
            raise ValueError(f"expected embeddings (N, D), N paths and N labels; got {tuple(embeddings.shape)}, "
                             f"{len(paths)} paths and labels {tuple(labels.shape)}")
        self.embeddings = embeddings.contiguous()
        self.paths = [str(p) for p in paths]
        self.labels = labels
        self.checkpoint = checkpoint
        self.image_size, self.resize = int(image_size), int(resize)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.model = model
        self._faiss_index = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, model: torch.nn.Module, gallery: str | os.PathLike | Dataset, transform=None, *,
              batch_size: int = 64, device: str | torch.device | None = None, image_size: int | None = None,
              resize: int | None = None, checkpoint: str | None = None, progress: bool = True,
              num_workers: int = 0) -> "RetrievalIndex":
        """Embed a gallery once (batched, with a progress bar).

        Args:
            model: a trained APSENet (its ``backbone.mean/std`` normalise the images).
            gallery: a folder with one sub-folder per emotion, or a dataset of ``(image, label)`` with
                ``.samples`` [(path, label)] (e.g. :class:`apse.data.EmotionImageFolder`).
            transform: evaluation transform; default resize + centre crop with the model's normalisation.
            image_size, resize: sizes of the default transform (default 224 and image_size * 256 / 224;
                pass the checkpoint's config values, as ``apse index`` does).
            checkpoint: path recorded in the index so a later process can embed query images.
        """
        image_size = int(image_size or 224)
        resize = int(resize) if resize else int(round(image_size * 256 / 224))  # the papers' 256/224 ratio
        backbone = getattr(getattr(model, "module", model), "backbone", None)
        mean = tuple(getattr(backbone, "mean", IMAGENET_MEAN))
        std = tuple(getattr(backbone, "std", IMAGENET_STD))
        if transform is None:
            transform = build_transforms(False, image_size=image_size, resize=resize, mean=mean, std=std)
        if isinstance(gallery, (str, os.PathLike)):
            folder = Path(gallery)
            if not folder.is_dir():
                raise FileNotFoundError(f"gallery folder not found: {folder}")
            dataset = EmotionImageFolder(folder, transform=transform)
        else:
            dataset = gallery
            if hasattr(dataset, "transform") and dataset.transform is None:
                dataset = copy.copy(dataset)  # leave the caller's dataset untouched
                dataset.transform = transform
        samples = getattr(dataset, "samples", None)
        if samples is None:
            raise ValueError("the gallery dataset must have .samples [(path, label)] so results can name images")
        embeddings, labels = embed_dataset(model, dataset, batch_size, device, progress=progress,
                                           num_workers=num_workers, desc="index gallery")
        return cls(embeddings, [p for p, _ in samples], labels, checkpoint=checkpoint, image_size=image_size,
                   resize=resize, mean=mean, std=std, model=model)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the index (tensors, strings and numbers only; atomic replace)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": _FORMAT, "version": 1,
            "embeddings": self.embeddings, "paths": list(self.paths), "labels": self.labels,
            "checkpoint": self.checkpoint, "image_size": self.image_size, "resize": self.resize,
            "mean": list(self.mean), "std": list(self.std),
        }
        atomic_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike, model: torch.nn.Module | None = None) -> "RetrievalIndex":
        """Read an index written by :meth:`save` (with ``weights_only=True``)."""

        data = read_apse_file(path, (_FORMAT,), "index file", "written by `apse index`")
        return cls(data["embeddings"], data["paths"], data["labels"], checkpoint=data.get("checkpoint"),
                   image_size=data["image_size"], resize=data["resize"], mean=data["mean"], std=data["std"],
                   model=model)

    # ------------------------------------------------------------------ querying
    def _get_model(self) -> torch.nn.Module:
        if self.model is None:
            if not self.checkpoint:
                raise ValueError("this index has no model to embed query images; pass model= or a checkpoint")
            self.model, _ = load_model(self.checkpoint)
        return self.model

    def embed_query(self, query: Any) -> torch.Tensor:
        """Embedding (D,) of an image path, a PIL image, an image tensor (3, H, W) or an embedding (D,)."""
        if torch.is_tensor(query) and query.ndim == 1:
            if query.shape[0] != self.dim:
                raise ValueError(f"query embedding must have {self.dim} dimensions, got {query.shape[0]}")
            return query.float().cpu()
        if isinstance(query, (str, os.PathLike)):
            qpath = Path(query)
            if not qpath.is_file():
                raise FileNotFoundError(f"query image not found: {qpath}")
            try:
                with Image.open(qpath) as im:
                    query = im.convert("RGB")
            except Exception as exc:
                raise ValueError(f"cannot read image {qpath}: {exc}") from None
        if not torch.is_tensor(query):  # a PIL image
            tf = build_transforms(False, image_size=self.image_size, resize=self.resize, mean=self.mean, std=self.std)
            query = tf(query.convert("RGB") if hasattr(query, "convert") else query)
        if query.ndim != 3 or query.shape[0] != 3:
            raise ValueError(f"expected an image tensor (3, H, W) or an embedding ({self.dim},), "
                             f"got shape {tuple(query.shape)}")
        model = getattr(self._get_model(), "module", self._get_model())
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                emb = model(query.unsqueeze(0).to(device)).embedding[0]
        finally:
            model.train(was_training)
        return emb.float().cpu()

    def search_embeddings(self, queries: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact k-nearest neighbours of query embeddings (Q, D): ``(distances (Q, k), indices (Q, k))``."""
        queries = torch.as_tensor(queries, dtype=torch.float32).reshape(-1, self.dim)
        k = max(1, min(int(k), len(self)))
        faiss = _faiss() if len(self) > self.faiss_threshold else None
        if faiss is not None:
            if self._faiss_index is None:
                index = faiss.IndexFlatL2(self.dim)
                index.add(self.embeddings.numpy())
                self._faiss_index = index
            sq, idx = self._faiss_index.search(queries.numpy(), k)
            # IndexFlatL2 returns squared distances
            return torch.as_tensor(sq).clamp_min(0).sqrt(), torch.as_tensor(idx, dtype=torch.long)
        dist = pairwise_distances(queries, self.embeddings)
        order = nearest(dist, k)  # ties in gallery order
        return dist.gather(1, order), order

    def query(self, query: Any, k: int = 5) -> list[SearchResult]:
        """The ``k`` gallery images nearest to ``query`` (path, PIL image, image tensor or embedding)."""
        emb = self.embed_query(query)
        dist, idx = self.search_embeddings(emb.unsqueeze(0), k)
        results = []
        for rank, (d, i) in enumerate(zip(dist[0].tolist(), idx[0].tolist()), start=1):
            label = int(self.labels[i])
            emotion = EMOTIONS[label] if 0 <= label < len(EMOTIONS) else None
            polarity = POLARITIES[polarity_of(label)] if emotion is not None else None
            results.append(SearchResult(rank, self.paths[i], float(d), emotion, polarity))
        return results

    def __repr__(self) -> str:
        return f"RetrievalIndex({len(self)} images, dim={self.dim}, checkpoint={self.checkpoint!r})"
