"""Splits: stratified train / val / test and k-fold index lists, and split files that store file names.

:func:`stratified_split` (FI: random 80 / 5 / 15) and :func:`stratified_kfold` (IAPSa, ArtPhoto,
Abstract: 5-fold) return indices; :func:`save_split` / :func:`load_split` store *file names*, so a run
can be repeated exactly even when the folder listing changes (spec, "Training and evaluation protocol").
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from apse.data.images import DataWarning, _relpath
from apse.emotions import EMOTIONS
from apse.io import write_json


def _as_labels(labels: Any) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D sequence of class indices, got shape {arr.shape}")
    if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0):
        raise ValueError("labels must be non-negative integers (class indices)")
    return arr.astype(np.int64)


def _largest_remainder(n: int, fractions: Sequence[float]) -> list[int]:
    """Split the integer n in proportion to `fractions` (sum 1), rounding by largest remainder; ties go
    to the earlier part."""
    quotas = [n * f for f in fractions]
    counts = [int(math.floor(q + 1e-9)) for q in quotas]
    left = n - sum(counts)
    order = sorted(range(len(fractions)), key=lambda i: (-round(quotas[i] - counts[i], 9), i))
    for i in order[:left]:
        counts[i] += 1
    return counts


def stratified_split(
    labels: Any,
    fractions: Sequence[float] = (0.8, 0.05, 0.15),
    seed: int = 0,
    names: Sequence[str] = ("train", "val", "test"),
) -> dict[str, list[int]]:
    """Random stratified split: name -> sorted list of indices into `labels`.

    Each class is shuffled (numpy ``default_rng(seed)``) and cut in proportion to `fractions`, with
    largest-remainder rounding per class, so the parts are disjoint, cover every index, keep each
    class's proportions to within one image, and are identical for the same seed. FI protocol: 80 / 5 /
    15 (spec, "Training and evaluation protocol").
    """
    y = _as_labels(labels)
    fractions = [float(f) for f in fractions]
    if len(fractions) != len(names):
        raise ValueError(f"got {len(fractions)} fractions for {len(names)} names {tuple(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"split names must be distinct, got {tuple(names)}")
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in names]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        start = 0
        for part, count in zip(parts, _largest_remainder(len(idx), fractions)):
            part.extend(idx[start:start + count].tolist())
            start += count
    return {name: sorted(part) for name, part in zip(names, parts)}


def stratified_kfold(labels: Any, k: int = 5, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Stratified k-fold: a list of k (train indices, held-out indices), each sorted.

    Every index is held out exactly once. Each class is shuffled and dealt to the folds in turn, the
    dealing continuing from class to class, so fold sizes differ by at most one and each class's share
    of a fold by at most one image. Used for IAPSa, ArtPhoto and Abstract (5-fold).
    """
    y = _as_labels(labels)
    if int(k) != k or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k}")
    if k > len(y):
        raise ValueError(f"k={k} folds need at least k samples, got {len(y)}")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)])
    fold_of = np.empty(len(y), dtype=np.int64)
    fold_of[order] = np.arange(len(y)) % k
    small = [int(c) for c in np.unique(y) if (y == c).sum() < k]
    if small:
        warnings.warn(f"class(es) {small} have fewer than k={k} samples; some folds hold none of them",
                      DataWarning, stacklevel=2)
    folds = []
    for f in range(k):
        held = np.flatnonzero(fold_of == f)
        train = np.flatnonzero(fold_of != f)
        folds.append((train.tolist(), held.tolist()))
    return folds


def _samples_and_root(samples: Any, root: str | os.PathLike | None = None) -> tuple[list[tuple[str, int]], Path]:
    """(samples, root) from a dataset (EmotionImageFolder, FeatureDataset, a Subset of either) or a
    plain list of (path, label)."""
    if hasattr(samples, "samples"):
        root = root if root is not None else getattr(samples, "root", None)
        samples = samples.samples
    elif isinstance(samples, Dataset):
        raise TypeError(f"{type(samples).__name__} has no .samples (file paths); pass the image dataset it came "
                        f"from, or a list of (path, label)")
    samples = [(str(p), int(y)) for p, y in samples]
    if root is None:
        if not samples:
            raise ValueError("cannot infer a root from an empty sample list; pass root=")
        # the folder above the emotion folders, for the usual root/<emotion>/<file> layout
        root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p, _ in samples])
        if all(Path(root).name.lower() == EMOTIONS[y] for _, y in samples):
            root = os.path.dirname(root)
    return samples, Path(root)


def save_split(
    path: str | os.PathLike,
    split_dict: Mapping[str, Sequence[int]],
    samples: Any,
    *,
    root: str | os.PathLike | None = None,
) -> Path:
    """Write a split as JSON lists of file paths relative to the dataset root, with their emotions.

    `split_dict`: name -> indices into `samples` (e.g. from :func:`stratified_split`; a list from
    :func:`stratified_kfold` is written as ``fold0_train``, ``fold0_held``, ...). `samples`: a dataset
    with ``.samples`` and ``.root`` or a list of (path, label). Files, not indices, are stored, so the
    same split can be re-applied exactly after files are added or the listing order changes.
    """
    samples, root = _samples_and_root(samples, root)
    if isinstance(split_dict, (list, tuple)):  # k-fold output
        split_dict = {f"fold{i}_{part}": idx for i, pair in enumerate(split_dict)
                      for part, idx in zip(("train", "held"), pair)}
    rel = [_relpath(p, root) for p, _ in samples]
    out: dict[str, Any] = {"format": "apse-split-v1", "root": str(root), "splits": {}, "emotions": {}}
    for name, indices in split_dict.items():
        files = []
        for i in indices:
            i = int(i)
            if not 0 <= i < len(samples):
                raise IndexError(f"split {name!r} holds index {i}, outside 0..{len(samples) - 1}")
            files.append(rel[i])
            out["emotions"][rel[i]] = EMOTIONS[samples[i][1]]
        out["splits"][str(name)] = files
    return write_json(path, out)


def load_split(path: str | os.PathLike, dataset: Any, *, root: str | os.PathLike | None = None) -> dict[str, list[int]]:
    """Read a split written by :func:`save_split` and map it onto `dataset`: name -> sorted indices
    into ``dataset.samples``.

    Verifies that every listed file exists under the dataset root (FileNotFoundError listing the
    missing ones), that it is one of the dataset's samples (ValueError otherwise, e.g. a file skipped
    as corrupt) and that its emotion matches the one stored (ValueError).
    """
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("format") != "apse-split-v1":
        raise ValueError(f"{str(path)!r} is not a split file written by apse.data.save_split")
    samples, root = _samples_and_root(dataset, root)
    index_of = {_relpath(p, root): i for i, (p, _) in enumerate(samples)}
    emotions = data.get("emotions", {})
    result: dict[str, list[int]] = {}
    missing, unknown, mislabelled = [], [], []
    for name, files in data["splits"].items():
        indices = []
        for rel in files:
            if not (root / rel).exists():
                missing.append(rel)
                continue
            i = index_of.get(rel)
            if i is None:
                unknown.append(rel)
                continue
            if rel in emotions and EMOTIONS[samples[i][1]] != emotions[rel]:
                mislabelled.append(f"{rel} (split file: {emotions[rel]}, dataset: {EMOTIONS[samples[i][1]]})")
            indices.append(i)
        result[name] = sorted(indices)
    if missing:
        raise FileNotFoundError(f"split {str(path)!r}: {len(missing)} listed file(s) do not exist under "
                                f"{str(root)!r}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if unknown:
        raise ValueError(f"split {str(path)!r}: {len(unknown)} listed file(s) are not in the dataset "
                         f"(skipped as corrupt?): {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    if mislabelled:
        raise ValueError(f"split {str(path)!r}: {len(mislabelled)} file(s) changed emotion: "
                         f"{', '.join(mislabelled[:5])}")
    return result
