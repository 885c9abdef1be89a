"""The FI-trained starting points: the FI models (trained once, cached) and a dataset's features under one.

Both live outside the repository, under :func:`apse.notebook.cache_root` (``$APSE_CACHE``, default
``~/.cache/apse``): the models in ``fi-models/<variant>-<key>/``, the stage maps in ``features/``
(the folder the trainer caches its own features in, so that models sharing a frozen backbone share
one cache). Each key hashes what the file depends on, so a changed configuration, dataset or
backbone computes a new one instead of reusing a stale one.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Callable, Sequence

from torch import nn

from apse.backbones import STAGES, build_backbone
from apse.config import load_config
from apse.data import (EmotionImageFolder, FeatureDataset, build_transforms, extract_features,
                       locate_dataset)
from apse.io import atomic_write
from apse.provenance import cache_root, dataset_fingerprint
from apse.runs import result_fields, short_hash
from apse.training import train
from apse.training_data import with_transform
from apse.transfer._shared import REPO_ROOT, print_log

__all__ = ["DEFAULT_BASE", "FI_VARIANTS", "FI_TRAINING", "FI_KEY_AS_OF", "fi_model_config", "fi_model_key",
           "fi_checkpoint", "state_hash", "dataset_features"]

DEFAULT_BASE = REPO_ROOT / "configs" / "fi-subset-cpu.yaml"

#: The FI-trained models: name -> (label, overrides of the CPU config).
FI_VARIANTS: dict[str, tuple[str, dict]] = {
    "npair": ("N-pair", {"loss": "npair", "attention": "none", "fusion": "single"}),
    "ep": ("EP", {"loss": "ep", "attention": "none", "fusion": "single"}),
    "apse-gep": ("APSE + GEP", {"loss": "apse", "attention": "hierarchical", "fusion": "clb"}),
}
#: How the FI models are trained: the experiments' 20-epoch budget, nearly all of the FI subset.
FI_TRAINING = {"epochs": 20, "lr_step": 15, "split": "95/5/0", "device": "cpu", "num_workers": 1}
#: The newest config field (of :data:`apse.runs.ADDED_FIELDS`) when the FI models were first trained:
#: their keys hold the fields up to it, so that later fields (at their old value) leave the folder
#: names, which results/twitter1's run keys hash, as they were.
FI_KEY_AS_OF = "warmup_epochs"


def fi_model_config(variant: str, base: str | os.PathLike = DEFAULT_BASE):
    """The :class:`~apse.config.TrainConfig` of an FI-trained model (:data:`FI_VARIANTS`)."""
    if variant not in FI_VARIANTS:
        raise ValueError(f"unknown FI model {variant!r}; valid: {', '.join(FI_VARIANTS)}")
    return load_config(base).replace(**{**FI_TRAINING, **FI_VARIANTS[variant][1]})


def fi_model_key(config, samples) -> str:
    """The key of an FI model's folder: the config's fields that decide its weights
    (:func:`apse.runs.result_fields` as of :data:`FI_KEY_AS_OF`) and the FI file list."""
    return short_hash({"config": result_fields(config.to_dict(), as_of=FI_KEY_AS_OF),
                       "data": dataset_fingerprint(samples)})


def fi_checkpoint(variant: str, *, fi_data: str | os.PathLike | None = None,
                  models_dir: str | os.PathLike | None = None, train_if_missing: bool = True,
                  base: str | os.PathLike = DEFAULT_BASE,
                  log: Callable[[str], None] = print_log) -> Path:
    """``model.pt`` of the FI-trained `variant`, trained on the FI subset when it is missing.

    Kept in ``models_dir`` (default ``~/.cache/apse/fi-models``) under a name that hashes the config
    and the FI file list, so a changed configuration or dataset trains a new model."""
    config = fi_model_config(variant, base)
    folder = EmotionImageFolder(locate_dataset(fi_data))
    out = Path(models_dir) if models_dir is not None else cache_root() / "fi-models"
    out = out / f"{variant}-{fi_model_key(config, folder.samples)}"
    if (out / "model.pt").is_file():
        return out / "model.pt"
    if not train_if_missing:
        raise FileNotFoundError(f"FI model {variant!r} not found at {out / 'model.pt'}; run "
                                "python -m apse.transfer prepare")
    log(f"[fi-models] training {variant} on {len(folder)} FI images -> {out}")
    t0 = time.time()
    train(config, folder, out, overwrite=True, progress=False)
    log(f"[fi-models] {variant} done in {time.time() - t0:.0f}s")
    return out / "model.pt"


def state_hash(module: nn.Module) -> str:
    """A hash of `module`'s weights: equal for two backbones that compute the same features."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def dataset_features(dataset, model: nn.Module, config, *,
                     stages: Sequence[str] = ("conv3", "conv5"),
                     flips: bool = True, cache_dir: str | os.PathLike | None = None,
                     progress: bool = True, log: Callable[[str], None] = print_log):
    """Stage maps of `dataset` under `model`'s backbone (weights as the checkpoint holds them), at
    the checkpoint config's image size, extracted once and cached.

    The cache key hashes the backbone's weights, the stages, the sizes and the dataset's file list
    (paths, labels, sizes), so models that share a frozen backbone (every FI model of the CPU
    regime: ImageNet Lite0) share one cache. Returns a :class:`apse.data.FeatureDataset` whose
    labels are the dataset's (its ``level``)."""
    wanted = set(stages) | set(model.stages)
    stages = tuple(s for s in STAGES if s in wanted)
    src = model.backbone
    backbone = build_backbone(config.backbone, pretrained=False, stages=stages)
    backbone.load_state_dict(src.state_dict(), strict=True)
    backbone.weights_source = getattr(src, "weights_source", "checkpoint")
    key = short_hash({"v": 1, "backbone": config.backbone, "weights": state_hash(backbone),
                      "stages": stages, "size": config.image_size, "resize": config.resize,
                      "flips": flips,
                      "data": dataset_fingerprint(dataset.samples)}, 16)
    cache = Path(cache_dir) if cache_dir is not None else cache_root() / "features"
    path = cache / f"{config.backbone}-{'-'.join(stages)}-{config.image_size}px-{key}.pt"
    if path.is_file():
        return FeatureDataset.load(path)
    tf = build_transforms(False, image_size=config.image_size, resize=config.resize,
                          mean=tuple(backbone.mean), std=tuple(backbone.std))
    clone = with_transform(dataset, tf)
    log(f"[features] extracting {'+'.join(stages)} of {len(dataset)} images -> {path}")
    t0 = time.time()
    feats = extract_features(backbone, clone, stages, batch_size=32, flips=flips, progress=progress)
    feats.meta["level"] = getattr(dataset, "level", "emotion")
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write(path, feats.save)
    log(f"[features] done in {time.time() - t0:.0f}s")
    return FeatureDataset.load(path)
