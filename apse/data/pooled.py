"""Data sets by name, and pooled data sets: ``"fi-subset"``, ``"flickrldl"``, ``"fi-subset+flickrldl"``.

A pooled data set is the book's way to train on more images than one source holds (issue "Is it the
data?"): it is not a copied folder but the samples of each source, in each source's own order, with
the source of every image kept in :attr:`~apse.data.EmotionImageFolder.sources`. Two consequences the
protocol relies on (:func:`apse.training_data.split_indices`):

- folds are drawn *within* each source, by the same rule as for that source alone, so a pooled run's
  held-out FI images are exactly the FI-only run's held-out fold (and the same for FlickrLDL);
- each held-out image can be scored against the training images of its own source only, so a pooled
  run and a single-source run differ in what the embedding learnt from, not in what is searched.

:func:`open_data` opens any of: a folder of emotion folders, a CSV label file (manifest or votes), a
data set name, or names joined by ``+``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from apse.data.folder import EmotionImageFolder
from apse.data.locate import locate_dataset
from apse.data.sources import SOURCES

__all__ = ["DATASET_LABELS", "open_data", "pool", "dataset_label"]

#: How results on each data set must be labelled (each data set's README says so).
DATASET_LABELS: dict[str, str] = {
    "fi-subset": "FI subset",
    "flickrldl": "FlickrLDL (861-image part)",
    "twitter1": "Twitter I (1,093-image subset)",
}
_LABEL_FILE = "labels.csv"


def dataset_label(name: str) -> str:
    """The label results on ``name`` carry (``a + b`` for pooled sets)."""
    return " + ".join(DATASET_LABELS.get(part, part) for part in name.split("+"))


def pool(parts: Mapping[str, EmotionImageFolder]) -> EmotionImageFolder:
    """One data set holding every sample of ``parts`` ({source name: data set}), each part's samples
    in its own order, the parts in the mapping's order; ``sources[i]`` names sample i's source.
    Transforms are not kept (set them on the result); a part that is itself pooled keeps its
    sources."""
    if len(parts) < 2:
        raise ValueError(f"pooling needs at least two data sets, got {list(parts)}")
    samples, sources, votes = [], [], []
    for name, part in parts.items():
        if not isinstance(part, EmotionImageFolder):
            raise TypeError(f"data set {name!r} is a {type(part).__name__}; pool EmotionImageFolder "
                            f"data sets (folders or label files)")
        samples.extend(part.samples)
        sources.extend(part.sources or [name] * len(part.samples))
        votes.append(part.votes)
    paths = [p for p, _ in samples]
    if len(set(paths)) != len(paths):
        raise ValueError("the data sets to pool share image files; pooling needs disjoint sets")
    first = next(iter(parts.values()))
    pooled = first.select([])
    pooled.samples = samples
    pooled.targets = [label for _, label in samples]
    pooled.sources = sources
    pooled.votes = None  # votes exist for some parts only: not meaningful for the pool
    pooled.root = Path(os.path.commonpath([str(part.root) for part in parts.values()]))
    pooled.transform = pooled.target_transform = None
    pooled.name = "+".join(parts)
    return pooled


def _open_one(spec: str | os.PathLike) -> EmotionImageFolder:
    path = Path(spec).expanduser()
    if not path.exists():
        looks_like_path = os.sep in str(spec) or path.suffix or str(spec).startswith(".")
        # a path that is not there is an error; a bare word is a data set name, found where
        # locate_dataset looks for it (or named in its error, with the command that fetches it)
        if not looks_like_path and str(spec) not in SOURCES:
            raise FileNotFoundError(
                f"{str(spec)!r} is neither a path nor a data set name; the names are "
                f"{', '.join(SOURCES)} (`python -m apse data list`), or give a folder or label file")
        path = locate_dataset(path) if looks_like_path else locate_dataset(None, str(spec))
    if path.is_file():
        return EmotionImageFolder.from_manifest(path)
    if (path / _LABEL_FILE).is_file():
        return EmotionImageFolder.from_manifest(path / _LABEL_FILE)
    return EmotionImageFolder(path)


def open_data(spec: str | os.PathLike | None) -> EmotionImageFolder:
    """The data set ``spec`` names: None (the FI subset, found by :func:`locate_dataset`), a folder
    (emotion sub-folders, or a ``labels.csv`` in it), a CSV label file, a data set name
    (``flickrldl``), or names and paths joined by ``+`` (a pooled set, :func:`pool`). The result's
    ``name`` is the data set's name where one is known."""
    if spec is None:
        data = EmotionImageFolder(locate_dataset(None))
        data.name = "fi-subset"
        return data
    text = str(spec)
    if "+" in text and not Path(text).exists():
        parts = [p.strip() for p in text.split("+") if p.strip()]
        return pool({_short_name(p): open_data(p) for p in parts})
    data = _open_one(spec)
    data.name = _short_name(text)
    return data


def _short_name(spec: str) -> str:
    """``flickrldl`` for ``flickrldl``, ``../shared/data/flickrldl`` or ``.../flickrldl/labels.csv``."""
    path = Path(spec)
    if path.name == _LABEL_FILE:
        path = path.parent
    return path.name or str(spec)
