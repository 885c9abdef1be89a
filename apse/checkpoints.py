"""Model files: building a model from its config, saving and loading ``model.pt`` / ``checkpoint.pt``.

Every file is plain tensors and Python containers tagged by a ``format``, read with
``torch.load(path, weights_only=True)`` (no pickled code) through :func:`apse.io.read_apse_file`.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from apse.config import ConfigError, TrainConfig
from apse.io import read_apse_file
from apse.model import APSENet

__all__ = ["CHECKPOINT_NAME", "MODEL_NAME", "RESULTS_NAME", "CHECKPOINT_FORMAT", "MODEL_FORMAT", "build_model",
           "load_model", "cpu_state", "check_resumable", "RESUMABLE_CHANGES"]

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"
RESULTS_NAME = "results.json"
CHECKPOINT_FORMAT = "apse-checkpoint"
MODEL_FORMAT = "apse-model"


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def build_model(config: TrainConfig, pretrained: Any = None) -> nn.Module:
    """The :class:`~apse.model.APSENet` described by ``config`` (``pretrained`` overrides the config's)."""
    return APSENet.from_config(config, **({} if pretrained is None else {"pretrained": pretrained}))


def load_model(checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """Load ``model.pt`` (the chosen model) or ``checkpoint.pt`` (latest epoch) -> ``(model in eval mode, config)``.

    Reads with ``weights_only=True``; the backbone is built without downloading weights since the file
    holds all of them.
    """
    data = read_apse_file(checkpoint, (MODEL_FORMAT, CHECKPOINT_FORMAT), "checkpoint",
                          "expected a model.pt or checkpoint.pt written by apse")
    config = TrainConfig.from_dict(data["config"])
    model = build_model(config, pretrained=False)
    model.load_state_dict(data["model"])
    model.to(device).eval()
    return model, config


#: Settings a resumed run may change: the schedule's length and where or how fast it runs.
RESUMABLE_CHANGES = ("epochs", "num_workers", "device", "feature_cache")


def check_resumable(checkpoint: dict, config: TrainConfig, split: dict) -> None:
    """Refuse to resume from ``checkpoint`` with another config (but :data:`RESUMABLE_CHANGES`) or
    another split of the images: either would silently change the run."""
    saved = TrainConfig.from_dict(checkpoint["config"]).to_dict()
    current = config.to_dict()
    diff = [k for k in current if k not in RESUMABLE_CHANGES and current[k] != saved[k]]
    if diff:
        k = diff[0]
        raise ConfigError(f"cannot resume: {k}={current[k]!r} differs from the checkpoint's {saved[k]!r}")
    if checkpoint["split"] != split:
        raise ValueError("cannot resume: the dataset split differs from the checkpoint's (images changed?)")
