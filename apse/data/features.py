"""The frozen-backbone feature cache: run a backbone once over a dataset and keep its stage maps.

:func:`extract_features` / :class:`FeatureDataset` keep a *frozen* backbone's stage maps (conv3, conv5,
...) in memory or in a ``.pt`` file. Everything after the backbone (attention heads, cross-level bilinear
pooling, embedding; ``APSENet.forward_features``) then trains on these cached maps. This is what makes
real experiments feasible on 2 CPU cores: a ResNet-50 forward pass costs far more than the heads, and
with the backbone frozen it has to be paid once per image instead of once per image per epoch. (The
paper fine-tunes the whole network; a frozen backbone is a deliberate, documented deviation for CPU
work. Random crops cannot be cached; the optional horizontally flipped second view is the augmentation
that remains.)
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from apse.data.images import DataWarning, _relpath
from apse.data.splits import _as_labels
from apse.emotions import EMOTIONS
from apse.io import atomic_save
from apse.progress import progress_bar

log = logging.getLogger(__name__)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _available_memory() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _base_and_indices(dataset: Any) -> tuple[Any, list[int] | None]:
    """Unwrap (nested) Subsets: the base dataset and the indices into it (None: all of it)."""
    indices = None
    while isinstance(dataset, Subset):
        sub = [int(i) for i in dataset.indices]
        indices = sub if indices is None else [sub[i] for i in indices]
        dataset = dataset.dataset
    return dataset, indices


def _check_transform(dataset: Any, backbone: torch.nn.Module) -> None:
    """Warn about the two easy mistakes: random augmentation frozen into the cache, and a Normalize
    that does not match the backbone's expected input."""
    base, _ = _base_and_indices(dataset)
    transform = getattr(base, "transform", None)
    steps = getattr(transform, "transforms", [transform] if transform is not None else [])
    names = [type(s).__name__ for s in steps]
    randoms = [n for n in names if n.startswith("Random")]
    if randoms:
        warnings.warn(f"the dataset's transform has random steps ({', '.join(randoms)}); the cache freezes one "
                      f"random draw per image. Use build_transforms(train=False) and flips=True instead.",
                      DataWarning, stacklevel=3)
    mean, std = getattr(backbone, "mean", None), getattr(backbone, "std", None)
    for s in steps:
        if type(s).__name__ == "Normalize" and mean is not None and std is not None:
            if not (np.allclose(np.broadcast_to(s.mean, 3), np.broadcast_to(mean, 3))
                    and np.allclose(np.broadcast_to(s.std, 3), np.broadcast_to(std, 3))):
                warnings.warn(f"the dataset normalises with mean={tuple(s.mean)}, std={tuple(s.std)} but the "
                              f"backbone expects mean={tuple(mean)}, std={tuple(std)}", DataWarning, stacklevel=3)


class FeatureDataset(Dataset):
    """Cached stage maps of a frozen backbone: item i is ``(dict stage -> (C, h, w) tensor, label)``.

    ``features[stage]`` has shape (V, N, C, h, w) (any trailing shape is kept as the backbone gave it):
    V = 1 view, or 2 when the horizontally flipped images were extracted too. In eval mode (the
    default) item i is view 0 (the image as is); in train mode (:meth:`train`) a random view, drawn
    with torch's RNG (so ``torch.manual_seed`` and DataLoader worker seeding govern it). Maps are
    stored in ``dtype`` (float16 halves memory) and returned as float32. :meth:`get_batch` gathers a
    whole batch without per-item collation.

    When the source dataset had files (EmotionImageFolder), ``samples`` and ``root`` are kept, so
    :func:`save_split` / :func:`load_split` work on the cache as on the images.
    """

    classes = EMOTIONS

    def __init__(
        self,
        features: Mapping[str, torch.Tensor],
        labels: Any,
        meta: Mapping[str, Any] | None = None,
        *,
        train: bool = False,
    ) -> None:
        labels = torch.as_tensor(_as_labels(labels), dtype=torch.long)
        feats: dict[str, torch.Tensor] = {}
        for stage, t in features.items():
            t = torch.as_tensor(t)
            if t.dim() < 2 or t.shape[1] != len(labels):
                raise ValueError(f"features[{stage!r}] must be (views, N, C, h, w) with N = {len(labels)} "
                                 f"labels (add a leading view axis of 1 for one view), got shape {tuple(t.shape)}")
            feats[str(stage)] = t
        if not feats:
            raise ValueError("features must hold at least one stage")
        views = {t.shape[0] for t in feats.values()}
        if len(views) != 1:
            raise ValueError(f"all stages must have the same number of views, got {views}")
        self.features = feats
        self.labels = labels
        self.targets = labels.tolist()
        self.meta = dict(meta or {})
        self.num_views = views.pop()
        self.training = bool(train)
        self.output_dtype = torch.float32

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(self.features)

    @property
    def root(self) -> Path | None:
        return Path(self.meta["root"]) if self.meta.get("root") else None

    @property
    def samples(self) -> list[tuple[str, int]]:
        rel = self.meta.get("paths")
        if rel is None or self.root is None:
            raise AttributeError("this FeatureDataset was not built from files, so it has no samples")
        return [(str(self.root / r), y) for r, y in zip(rel, self.targets)]

    def train(self, mode: bool = True) -> "FeatureDataset":
        """Train mode: a random view per item (when flips were extracted). Returns self."""
        self.training = bool(mode)
        return self

    def eval(self) -> "FeatureDataset":
        return self.train(False)

    def __len__(self) -> int:
        return len(self.labels)

    def _views(self, n: int) -> torch.Tensor:
        if self.training and self.num_views > 1:
            return torch.randint(self.num_views, (n,))
        return torch.zeros(n, dtype=torch.long)

    def __getitem__(self, index: int):
        v = int(self._views(1)[0])
        return ({s: t[v, index].to(self.output_dtype) for s, t in self.features.items()},
                int(self.labels[index]))

    def get_batch(self, indices: Sequence[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(dict stage -> (B, C, h, w) float32, labels (B,)) for `indices`, views as in __getitem__."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        views = self._views(len(idx))
        return ({s: t[views, idx].to(self.output_dtype) for s, t in self.features.items()}, self.labels[idx])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.features.values())

    def save(self, path: str | os.PathLike) -> Path:
        """torch.save of the tensors and metadata (plain types only, loadable with weights_only=True)."""
        return atomic_save({"format": "apse-features-v1", "features": self.features, "labels": self.labels,
                            "meta": self.meta}, path)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu", *, mmap: bool = False,
             train: bool = False) -> "FeatureDataset":
        """Load a cache written by :meth:`save` (``weights_only=True``: no code is unpickled). With
        ``mmap=True`` the tensors stay on disk and pages are read on demand (caches larger than RAM)."""
        data = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        if not isinstance(data, dict) or data.get("format") != "apse-features-v1":
            raise ValueError(f"{str(path)!r} is not a feature cache written by FeatureDataset.save")
        return cls(data["features"], data["labels"], data.get("meta"), train=train)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{s} {tuple(t.shape[2:])}" for s, t in self.features.items())  # per item
        return (f"FeatureDataset({len(self)} items x {self.num_views} view(s), {shapes}, "
                f"{_human(self.nbytes())})")


def extract_features(
    backbone: torch.nn.Module,
    dataset: Any,
    stages: Sequence[str] | None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    flips: bool = False,
    num_workers: int = 0,
    dtype: torch.dtype = torch.float16,
    *,
    progress: bool = True,
) -> FeatureDataset:
    """Run a frozen `backbone` once over `dataset` and keep its stage maps: a :class:`FeatureDataset`.

    `backbone`: any nn.Module whose ``forward(x)`` returns a dict stage -> (B, C, h, w) map (see
    :func:`apse.backbones.build_backbone`); it is moved to `device` and run in eval mode under no_grad
    (its train/eval mode is restored afterwards). `dataset` must yield (image tensor, label): give it
    an evaluation transform, e.g. ``build_transforms(False, mean=backbone.mean, std=backbone.std)``.
    `stages`: the maps to keep (None: all the backbone returns). ``flips=True`` also runs the
    horizontally flipped images (a second view, the augmentation left once crops are frozen).

    Before starting, the size is estimated from one forward pass of a single image,
    bytes = N x sum over stages (C x h x w) x itemsize x views, and printed when `progress` (a
    warning when it exceeds the memory available comes either way). Order of items = order of
    `dataset`. `progress`: a bar on a terminal, else one line when done (:mod:`apse.progress`).
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("extract_features got an empty dataset")
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    device = torch.device(device)
    views = 2 if flips else 1
    _check_transform(dataset, backbone)

    first = dataset[0][0]
    if not isinstance(first, torch.Tensor) or first.dim() != 3:
        raise TypeError(
            f"dataset items must be (image tensor (3, H, W), label), got {type(first).__name__}; give the "
            f"dataset a transform, e.g. build_transforms(False, mean=backbone.mean, std=backbone.std)"
        )
    was_training = backbone.training
    backbone.to(device).eval()
    try:
        with torch.no_grad():
            probe = backbone(first.unsqueeze(0).to(device))
            if not isinstance(probe, Mapping):
                raise TypeError(f"backbone must return a dict stage -> feature map, got {type(probe).__name__}")
            stages = tuple(probe) if stages is None else tuple(stages)
            absent = [s for s in stages if s not in probe]
            if absent:
                raise KeyError(f"backbone did not return stage(s) {absent}; it returns {list(probe)}")
            shapes = {s: tuple(probe[s].shape[1:]) for s in stages}
            per_image = sum(math.prod(shp) for shp in shapes.values())
            itemsize = torch.empty((), dtype=dtype).element_size()
            nbytes = n * per_image * itemsize * views
            desc = ", ".join(f"{s} {'x'.join(map(str, shp))}" for s, shp in shapes.items())
            msg = (f"extract_features: {n} images x {views} view(s), {desc}: "
                   f"{n} x {per_image} x {itemsize} B x {views} = {_human(nbytes)} in {str(dtype).split('.')[-1]}")
            if progress:
                print(msg)
            log.info(msg)
            avail = _available_memory()
            if avail is not None and nbytes > 0.8 * avail:
                warnings.warn(f"the feature cache needs {_human(nbytes)} but only {_human(avail)} of memory is "
                              f"available; use fewer stages, float16, or a subset", DataWarning, stacklevel=2)

            feats = {s: torch.empty((views, n) + shp, dtype=dtype) for s, shp in shapes.items()}
            labels = torch.empty(n, dtype=torch.long)
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                pin_memory=device.type == "cuda")
            start, overflow = 0, False
            # a bar on a terminal, else one line when done (apse.progress); nothing if not progress
            bar = progress_bar(total=n, desc="extracting features", unit="img", enabled=progress)
            for images, y in loader:
                images = images.to(device)
                b = images.shape[0]
                for v in range(views):
                    out = backbone(torch.flip(images, dims=[-1]) if v == 1 else images)
                    for s in stages:
                        if tuple(out[s].shape[1:]) != shapes[s]:
                            raise ValueError(f"stage {s!r} has shape {tuple(out[s].shape[1:])} for a batch but "
                                             f"{shapes[s]} for the first image: are the images of one size?")
                        stored = out[s].to("cpu", dtype)
                        if not overflow and not torch.isfinite(stored).all():
                            overflow = True  # e.g. float16 tops out at 65504
                            warnings.warn(f"stage {s!r} has non-finite values once stored as {dtype}; use "
                                          f"dtype=torch.float32", DataWarning, stacklevel=2)
                        feats[s][v, start:start + b] = stored
                labels[start:start + b] = torch.as_tensor(y).long()
                start += b
                bar.update(b)
            bar.close()
    finally:
        backbone.train(was_training)

    meta: dict[str, Any] = {
        "backbone": type(backbone).__name__,
        "weights_source": str(getattr(backbone, "weights_source", "unknown")),
        "stages": list(stages),
        "shapes": {s: list(shp) for s, shp in shapes.items()},
        "input_shape": list(first.shape),
        "dtype": str(dtype).split(".")[-1],
        "flips": bool(flips),
        "mean": list(getattr(backbone, "mean", ()) or ()),
        "std": list(getattr(backbone, "std", ()) or ()),
    }
    base, indices = _base_and_indices(dataset)
    if hasattr(base, "samples") and getattr(base, "root", None) is not None:
        rel = [_relpath(p, base.root) for p, _ in base.samples]
        meta["root"] = os.path.abspath(base.root)
        meta["paths"] = rel if indices is None else [rel[i] for i in indices]
    return FeatureDataset(feats, labels, meta)
