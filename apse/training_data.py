"""The data of one training run: open the dataset, split it, and build the training batches.

:func:`prepare_data` returns a :class:`RunData`: the split (stratified train/val/test, or one fold of a
k-fold protocol with validation carved out of the training folds), the four views the trainer uses
(train, gallery = the training images without augmentation, val, test) and the balanced batches of
the training images: images decoded once per run into one uint8 tensor in memory
(:class:`apse.data.decoded.DecodedImages`: crops, flips and normalisation per batch; with
``APSE_DECODE_CACHE=0``, or above its memory limit, each image is decoded as a DataLoader reads it,
every epoch), or, with ``cache_features``, feature maps of the frozen backbone extracted once and
cached on disk.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from apse.config import TrainConfig
from apse.data import (BalancedBatchSampler, FeatureDataset, GatheredBatches, build_transforms, extract_features,
                       open_data, stratified_kfold, stratified_split)
from apse.data.decoded import DEFAULT_MAX_BYTES, DecodedImages, decode_cache_enabled, decoded_nbytes, default_resize
from apse.distributed import DistInfo
from apse.io import atomic_write
from apse.emotions import classes_of
from apse.protocol import ProtocolConfig
from apse.provenance import cache_root, dataset_fingerprint

__all__ = ["MIN_PER_CLASS", "RunData", "prepare_data", "feature_run_data", "open_dataset", "split_indices", "feature_cache_path", "with_transform"]

_FEATURES_FORMAT_VERSION = 1  # part of the feature cache key: bump when what is cached changes meaning


def with_transform(dataset: Dataset, transform) -> Dataset:
    """A shallow copy of ``dataset`` with another ``transform`` (the images are not copied)."""
    clone = copy.copy(dataset)
    clone.transform = transform
    return clone


def open_dataset(data: Any) -> tuple[Dataset, str]:
    """``(dataset, its root as text)`` from a dataset with ``.samples``, or what
    :func:`apse.data.open_data` opens: None (the FI subset, located), a folder, a CSV label file, a
    data set name, or names joined by ``+`` (a pooled set)."""
    if isinstance(data, Dataset):
        if not hasattr(data, "samples"):
            raise ValueError("the dataset must have .samples [(path, label)], like apse.data.EmotionImageFolder")
        return data, str(getattr(data, "root", "<dataset>"))
    dataset = open_data(data)
    return dataset, str(Path(dataset.root).resolve())


#: The fewest training images a class keeps when ``train_fraction`` < 1: an anchor and a positive.
MIN_PER_CLASS = 2


def split_indices(config: ProtocolConfig, labels: list[int],
                  sources: list[str] | None = None) -> dict[str, list[int]]:
    """Indices of the train, val and test images under a protocol section (``split``, ``folds``; a
    training config is one).

    ``sources`` (a pooled data set's source of each image): the split is made within each source by
    the same rule as for that source alone, so a source's held-out images are the same as in a run on
    that source only. ``train_fraction`` < 1 then keeps that share of each (source, class) group of
    the training images, at least :data:`MIN_PER_CLASS`: the same images at every seed, and a smaller
    fraction's images are a subset of a larger one's (the learning curve adds images, never swaps
    them). Validation and test images do not change with it.
    """
    labels = [int(y) for y in labels]
    if sources is None or len(set(sources)) < 2:
        parts = _split_one(config, labels)
    else:
        parts = {"train": [], "val": [], "test": []}
        for source in dict.fromkeys(sources):
            members = [i for i, s in enumerate(sources) if s == source]
            for part, idx in _split_one(config, [labels[i] for i in members]).items():
                parts[part].extend(members[i] for i in idx)
    if config.train_fraction < 1.0:
        parts["train"] = _fraction(parts["train"], labels, sources, config.train_fraction, config.split_seed)
    return parts


def _split_one(config: ProtocolConfig, labels: list[int]) -> dict[str, list[int]]:
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


def _fraction(train: list[int], labels: list[int], sources: list[str] | None, fraction: float,
              seed: int) -> list[int]:
    groups: dict[tuple[str, int], list[int]] = {}
    for i in sorted(train):
        groups.setdefault((sources[i] if sources else "", labels[i]), []).append(i)
    kept = []
    for (source, label), members in sorted(groups.items()):
        # one fixed order per group: a prefix of it is the group's share at any fraction
        order = np.random.default_rng([seed, label, zlib.crc32(source.encode())]).permutation(len(members))
        n = min(len(members), max(MIN_PER_CLASS, int(round(fraction * len(members)))))
        kept.extend(members[j] for j in order[:n])
    return sorted(kept)


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
    """What :func:`prepare_data` builds: the trainer holds it as ``trainer.run`` (and reads the fields
    that callers and the book use, e.g. ``trainer.split``, through it)."""

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
    feature_cache_path: str | None  # the cached stage maps (the probe stage sets it in image mode)
    feature_seconds: float | None   # their extraction time; None: nothing extracted
    sources: list[str] | None       # a pooled data set's source of each sample (None: one source)
    base: Dataset                   # the dataset as opened, and its eval transform: the probe stage
    eval_transform: Any             # caches features of these
    level: str = "emotion"          # what the labels are (apse.emotions.LEVELS): the losses' and metrics'


def feature_run_data(features: FeatureDataset, labels: Any, split: dict[str, list[int]], config: TrainConfig,
                     *, level: str = "emotion") -> RunData:
    """The run data of stage maps cached already, labelled at ``level``: what :class:`apse.training.Trainer`
    takes instead of a data set to train a head on another data set's features (the transfer
    experiments: Twitter I under an FI model's frozen backbone, :func:`apse.transfer.fine_tune`).

    ``labels`` (one per item of ``features``, at ``level``) replace the cache's own; ``split`` holds
    the ``train``, ``val`` and ``test`` item indices; the balanced batches of the training items are
    ``config``'s (its batching fields and seed), as :func:`prepare_data` builds them. The gallery is
    the training items, as in a run.
    """
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    classes_of(level)  # checks the level
    if len(y) != len(features):
        raise ValueError(f"{len(y)} labels for {len(features)} cached items")
    split = {k: [int(i) for i in split.get(k, [])] for k in ("train", "val", "test")}
    if not split["train"]:
        raise ValueError("the training split is empty")
    train_ds = FeatureDataset(features.features, y, features.meta, train=True)
    eval_ds = FeatureDataset(features.features, y, features.meta)
    train_labels = [int(y[i]) for i in split["train"]]
    sampler = BalancedBatchSampler.from_config(train_labels, config, config.seed)
    try:
        samples = features.samples
    except AttributeError:  # features made in memory, not from files: items stand for themselves
        samples = [(f"item-{i}", int(label)) for i, label in enumerate(y.tolist())]
    root = str(features.root) if features.root is not None else "<features>"
    return RunData(root, samples, split, Subset(train_ds, split["train"]), Subset(eval_ds, split["train"]),
                   Subset(eval_ds, split["val"]), Subset(eval_ds, split["test"]), train_labels, sampler,
                   torch.Generator(), GatheredBatches(train_ds, split["train"], sampler), None, None, None,
                   eval_ds, None, level)


def _decoded_images(config: TrainConfig, base: Dataset, mean, std, *, log: Callable[[str], None],
                    progress: bool) -> DecodedImages | None:
    """The image mode's training view over every image of ``base`` decoded once (apse.data.decoded), or
    None: turned off (``APSE_DECODE_CACHE=0``) or above its memory limit (then items are decoded as read)."""
    if not decode_cache_enabled():
        return None
    resize = default_resize(config.image_size, config.resize)
    nbytes = decoded_nbytes(len(base.samples), resize)
    if nbytes > DEFAULT_MAX_BYTES:
        log(f"not decoding {len(base.samples)} images into memory ({nbytes / 2**20:.0f} MB at {resize} px is above "
            f"{DEFAULT_MAX_BYTES / 2**20:.0f} MB): each image is decoded as it is read")
        return None
    decoded = DecodedImages(base, image_size=config.image_size, resize=resize, mean=mean, std=std, train=True,
                            num_workers=config.num_workers, progress=progress)
    log(f"decoded {len(decoded)} images once into {decoded.nbytes() / 2**20:.0f} MB (uint8, {resize} px) "
        f"in {decoded.decode_seconds:.1f}s")
    return decoded


def prepare_data(config: TrainConfig, data: Any, model: nn.Module, *, device: torch.device, dist_info: DistInfo,
                 log: Callable[[str], None], progress: bool) -> RunData:
    """Open, split and batch the run's images for ``model`` (whose backbone gives the normalisation)."""
    base, data_root = open_dataset(data)
    samples = list(base.samples)
    labels = [int(label) for _, label in samples]
    split = split_indices(config, labels, getattr(base, "sources", None))
    if not split["train"]:
        raise ValueError("the training split is empty; check the data folder and split fractions")
    # a data set opened here is labelled with emotions (feature_run_data takes other levels)
    counts = np.bincount([labels[i] for i in split["train"]], minlength=len(classes_of("emotion")))
    # a class with fewer than samples_per_class images is sampled with replacement (the sampler warns);
    # with fewer than an anchor and a positive it cannot form an N-pair tuple at all
    if (counts < MIN_PER_CLASS).any():
        raise ValueError(f"every emotion needs at least {MIN_PER_CLASS} training images (an anchor and a "
                         f"positive); the training split has {counts.tolist()} (papers' emotion order)")
    mean, std = tuple(model.backbone.mean), tuple(model.backbone.std)
    eval_tf = build_transforms(False, image_size=config.image_size, resize=config.resize, mean=mean, std=std)
    cache_path, seconds = None, None
    generator = torch.Generator()
    if config.cache_features:
        features, path, seconds = cached_features(config, model, with_transform(base, eval_tf), device=device,
                                                  dist_info=dist_info, log=log, progress=progress)
        cache_path = str(path)
        # Two views of one cache (tensors shared): train mode draws a random flip per item when
        # flips were extracted, eval mode always gives the image as is.
        train_ds = FeatureDataset(features.features, features.labels, features.meta, train=True)
        eval_ds = features
    else:
        train_ds = _decoded_images(config, base, mean, std, log=log, progress=progress and dist_info.is_main)
        if train_ds is not None:
            # decoded once into one uint8 tensor (apse.data.decoded): the views share it, the training
            # view draws its crops and flips from the loader generator, reseeded every epoch
            train_ds.generator = generator
            eval_ds = train_ds.view(train=False)
        else:  # every item decoded and transformed as it is read, every epoch (APSE_DECODE_CACHE=0)
            train_tf = build_transforms(True, image_size=config.image_size, resize=config.resize, mean=mean, std=std)
            train_ds, eval_ds = with_transform(base, train_tf), with_transform(base, eval_tf)
    train_set = Subset(train_ds, split["train"])
    train_labels = [labels[i] for i in split["train"]]
    # Every rank builds the same epoch of balanced batches and takes every world_size-th one.
    sampler = BalancedBatchSampler.from_config(train_labels, config, config.seed, rank=dist_info.rank,
                                               world_size=dist_info.world_size)
    if config.cache_features or isinstance(train_ds, DecodedImages):
        # in-memory tensors: whole batches gathered in this process (no workers, no per-item collation)
        loader = GatheredBatches(train_set.dataset, train_set.indices, sampler)
    else:
        loader = DataLoader(train_set, batch_sampler=sampler, num_workers=config.num_workers,
                            pin_memory=device.type == "cuda", generator=generator, persistent_workers=False)
    return RunData(data_root, samples, split, train_set, Subset(eval_ds, split["train"]), Subset(eval_ds, split["val"]),
                   Subset(eval_ds, split["test"]), train_labels, sampler, generator, loader, cache_path, seconds,
                   getattr(base, "sources", None), base, eval_tf)
