"""The data of one training run: open the dataset, split it, and build the training batches.

:func:`prepare_data` returns a :class:`RunData`: the split (stratified train/val/test, or one fold of a
k-fold protocol with validation carved out of the training folds), the four views the trainer uses
(train, gallery = the training images without augmentation, val, test) and the balanced batches of
the training images: images through a DataLoader, or, with ``cache_features``, feature maps of the
frozen backbone extracted once and cached on disk.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from apse.config import TrainConfig
from apse.data import (BalancedBatchSampler, EmotionImageFolder, FeatureDataset, build_transforms, extract_features,
                       locate_dataset, stratified_kfold, stratified_split)
from apse.distributed import DistInfo
from apse.evaluation import GatheredBatches
from apse.io import atomic_write
from apse.provenance import cache_root, dataset_fingerprint

__all__ = ["RunData", "prepare_data", "open_dataset", "split_indices", "feature_cache_path", "with_transform"]

_FEATURES_FORMAT_VERSION = 1  # part of the feature cache key: bump when what is cached changes meaning


def with_transform(dataset: Dataset, transform) -> Dataset:
    """A shallow copy of ``dataset`` with another ``transform`` (the images are not copied)."""
    clone = copy.copy(dataset)
    clone.transform = transform
    return clone


def open_dataset(data: Any) -> tuple[Dataset, str]:
    """``(dataset, its root as text)`` from a dataset with ``.samples``, a folder, or None (located)."""
    if isinstance(data, Dataset):
        if not hasattr(data, "samples"):
            raise ValueError("the dataset must have .samples [(path, label)], like apse.data.EmotionImageFolder")
        return data, str(getattr(data, "root", "<dataset>"))
    root = locate_dataset(data) if data is None else Path(data)
    if not Path(root).is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    return EmotionImageFolder(root), str(Path(root).resolve())


def split_indices(config: TrainConfig, labels: list[int]) -> dict[str, list[int]]:
    """Indices of the train, val and test images under the config's protocol (``split``, ``folds``)."""
    fractions = config.split_fractions()
    if config.folds is None:
        parts = stratified_split(labels, fractions=fractions, seed=config.split_seed)
        return {k: list(map(int, parts.get(k, []))) for k in ("train", "val", "test")}
    train_idx, held = stratified_kfold(labels, k=config.folds, seed=config.split_seed)[config.fold]
    train_idx, held = list(map(int, train_idx)), list(map(int, held))
    val_share = fractions[1] / (fractions[0] + fractions[1])
    if val_share > 0:
        # Carve the validation images out of the training folds (stratified), never the held-out one.
        sub = stratified_split([labels[i] for i in train_idx], fractions=(1 - val_share, val_share, 0.0),
                               seed=config.split_seed)
        return {"train": [train_idx[i] for i in sub["train"]], "val": [train_idx[i] for i in sub["val"]],
                "test": held}
    return {"train": train_idx, "val": [], "test": held}


def feature_cache_path(config: TrainConfig, model: nn.Module, samples) -> Path:
    """Where the frozen backbone's stage maps of ``samples`` are cached: keyed by everything that
    decides them (backbone and weights, stages, image sizes, flips, the image files)."""
    key = hashlib.sha256(json.dumps({
        "v": _FEATURES_FORMAT_VERSION, "backbone": config.backbone, "weights": str(model.backbone.weights_source),
        "pretrained": str(config.pretrained), "stages": list(model.stages), "size": config.image_size,
        "resize": config.resize, "flips": config.feature_flips, "data": dataset_fingerprint(samples),
    }, sort_keys=True).encode()).hexdigest()[:16]
    cache_dir = Path(config.feature_cache) if config.feature_cache else cache_root() / "features"
    return cache_dir / f"{config.backbone}-{'-'.join(model.stages)}-{config.image_size}px-{key}.pt"


def cached_features(config: TrainConfig, model: nn.Module, dataset: Dataset, *, device: torch.device,
                    dist_info: DistInfo, log: Callable[[str], None], progress: bool) -> tuple[FeatureDataset, Path, float]:
    """The frozen backbone's stage maps of every image of ``dataset`` (already with its eval transform),
    extracted once (on the main rank) and cached: ``(features, cache path, seconds spent extracting)``."""
    path = feature_cache_path(config, model, dataset.samples)
    seconds = 0.0
    if dist_info.is_main and not path.exists():
        log(f"extracting {'+'.join(model.stages)} features of {len(dataset.samples)} images -> {path}")
        t0 = time.time()
        features = extract_features(model.backbone, dataset, model.stages, batch_size=config.batch_size_eval,
                                    device=device, flips=config.feature_flips, num_workers=config.num_workers,
                                    progress=progress)
        atomic_write(path, features.save)
        seconds = time.time() - t0
    else:
        log(f"using cached features {path}")
    if dist_info.enabled:
        dist.barrier()
    return FeatureDataset.load(path), path, seconds


@dataclass
class RunData:
    """What :func:`prepare_data` builds (the trainer exposes each field as its own attribute)."""

    data_root: str
    samples: list
    split: dict[str, list[int]]
    train_set: Dataset
    gallery_set: Dataset
    val_set: Dataset
    test_set: Dataset
    train_labels: list[int]
    batch_sampler: BalancedBatchSampler
    loader_generator: torch.Generator
    train_loader: Any
    feature_cache_path: str | None
    feature_seconds: float | None  # None: nothing extracted in this mode
    _base: Dataset      # the dataset as opened, and its eval transform: the probe stage caches features
    _eval_tf: Any       # of these


def prepare_data(config: TrainConfig, data: Any, model: nn.Module, *, device: torch.device, dist_info: DistInfo,
                 log: Callable[[str], None], progress: bool) -> RunData:
    """Open, split and batch the run's images for ``model`` (whose backbone gives the normalisation)."""
    base, data_root = open_dataset(data)
    samples = list(base.samples)
    labels = [int(label) for _, label in samples]
    split = split_indices(config, labels)
    if not split["train"]:
        raise ValueError("the training split is empty; check the data folder and split fractions")
    counts = np.bincount([labels[i] for i in split["train"]], minlength=8)
    if (counts < config.samples_per_class).any():
        raise ValueError(f"every emotion needs at least samples_per_class={config.samples_per_class} training "
                         f"images; the training split has {counts.tolist()} (papers' emotion order)")
    mean, std = tuple(model.backbone.mean), tuple(model.backbone.std)
    eval_tf = build_transforms(False, image_size=config.image_size, resize=config.resize, mean=mean, std=std)
    cache_path, seconds = None, None
    if config.cache_features:
        features, path, seconds = cached_features(config, model, with_transform(base, eval_tf), device=device,
                                                  dist_info=dist_info, log=log, progress=progress)
        cache_path = str(path)
        # Two views of one cache (tensors shared): train mode draws a random flip per item when
        # flips were extracted, eval mode always gives the image as is.
        train_ds = FeatureDataset(features.features, features.labels, features.meta, train=True)
        eval_ds = features
    else:
        train_tf = build_transforms(True, image_size=config.image_size, resize=config.resize, mean=mean, std=std)
        train_ds, eval_ds = with_transform(base, train_tf), with_transform(base, eval_tf)
    train_set = Subset(train_ds, split["train"])
    train_labels = [labels[i] for i in split["train"]]
    # Every rank builds the same epoch of balanced batches and takes every world_size-th one.
    sampler = BalancedBatchSampler(
        train_labels, classes_per_batch=config.classes_per_batch, samples_per_class=config.samples_per_class,
        batches_per_epoch=config.batches_per_epoch, seed=config.seed, rank=dist_info.rank,
        world_size=dist_info.world_size)
    generator = torch.Generator()
    if config.cache_features:
        loader = GatheredBatches(train_set.dataset, train_set.indices, sampler)
    else:
        loader = DataLoader(train_set, batch_sampler=sampler, num_workers=config.num_workers,
                            pin_memory=device.type == "cuda", generator=generator, persistent_workers=False)
    return RunData(data_root, samples, split, train_set, Subset(eval_ds, split["train"]), Subset(eval_ds, split["val"]),
                   Subset(eval_ds, split["test"]), train_labels, sampler, generator, loader, cache_path, seconds,
                   base, eval_tf)
