"""The backbone interface: stage names, the :class:`Backbone` base class and state_dict files.

A backbone's ``forward(x)`` returns ``{stage: feature map}`` for the requested stages only, and stops
after the last requested one. Stages are named after the papers: ``conv2`` .. ``conv5`` (output
strides 4, 8, 16, 32). Normalisation constants travel with the backbone (``mean``, ``std``).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn

__all__ = ["STAGES", "IMAGENET_MEAN", "IMAGENET_STD", "Backbone", "load_state_dict_file"]

#: Stage names, shallow to deep, as the papers call them.
STAGES = ("conv2", "conv3", "conv4", "conv5")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_stages(stages: Sequence[str]) -> tuple[str, ...]:
    """Validate requested stages; return them unique, in network order."""
    if isinstance(stages, str):
        stages = (stages,)
    stages = tuple(stages)
    if not stages:
        raise ValueError(f"expected at least one stage out of {STAGES}, got none")
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"expected stages among {STAGES}, got unknown {unknown}")
    return tuple(s for s in STAGES if s in stages)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict saved with ``torch.save`` (``weights_only=True``: tensors only, no pickled code).

    Accepts a bare state_dict, or a checkpoint dict holding one under ``"state_dict"`` or ``"model"``;
    a ``"module."`` prefix (DataParallel) is stripped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"expected a state_dict file at {path!r}, but there is no such file")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"expected {path!r} to hold a state_dict (a mapping of names to tensors)")
    return OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in obj.items())


def _load_into(module: nn.Module, state: Mapping[str, torch.Tensor], optional_prefixes: Sequence[str],
               what: str) -> None:
    """``load_state_dict`` that tolerates only missing keys under ``optional_prefixes`` (classifier)."""
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(tuple(optional_prefixes))]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"expected a {what} state_dict; missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected keys {result.unexpected_keys[:5]}{'...' if len(result.unexpected_keys) > 5 else ''}"
        )


class Backbone(nn.Module):
    """Common interface: ``forward(x) -> {stage: (B, C, H/s, W/s)}`` for ``self.stages`` only.

    Attributes: ``name``, ``stages`` (requested, in network order), ``channels`` and ``strides``
    (dicts over all four stages), ``mean``/``std`` (input normalisation), ``weights_source``.
    Subclasses implement :meth:`_iter_stages`, yielding ``(stage, map)`` shallow to deep; the base
    class stops pulling from it once the deepest requested stage is out (no wasted compute).
    """

    name: str = "backbone"

    def __init__(self, stages, channels, strides, mean, std, weights_source):
        super().__init__()
        self.stages = _check_stages(stages)
        self.channels = dict(channels)
        self.strides = dict(strides)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.weights_source = weights_source

    @property
    def last_stage(self) -> str:
        return self.stages[-1]

    def _iter_stages(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a normalised image batch of shape (B, 3, H, W), got {tuple(x.shape)}")
        out: dict[str, torch.Tensor] = {}
        for stage, fmap in self._iter_stages(x):
            if stage in self.stages:
                out[stage] = fmap
            if stage == self.last_stage:
                break  # deeper layers are not needed (and were dropped at construction)
        return out

    def extra_repr(self) -> str:
        return f"stages={self.stages}, weights_source={self.weights_source!r}"
