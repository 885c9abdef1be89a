"""Fusion of the two levels into the embedding, by name: CLB, concatenated GAPs, or the high level alone.

Every fusion is a module ``fuse(low, high) -> (B, embedding_dim)``, l2-normalised, built by the
factory registered under its name in :data:`FUSIONS` (:func:`register_fusion`):

- ``"clb"``: :class:`apse.pooling.CrossLevelBilinear` of the two (attended) levels (the papers' CLB).
- ``"concat"`` (MO without CLB): GAP of both levels, each l2-normalised, concatenated, linear to
  ``embedding_dim``, l2. An attended map (F * Z * U) is orders of magnitude smaller than a raw one
  (Lite0, SA: |GAP(raw conv3)| ~ 17 against |GAP(attended conv5)| ~ 0.3), so a plain concatenation
  would be the larger level alone.
- ``"concat_raw"`` (not in the papers; chapter 13's diagnosis): as ``concat`` without the per-level
  normalisation, so that the larger level is not scaled down to the smaller one's weight.
- ``"single"`` (SO): GAP of the high level only, linear to ``embedding_dim``, l2; the low level is not
  read (``uses_low=False``).

The linear fusions subclass :class:`torch.nn.Linear` (no bias, see :mod:`apse.pooling`), so a model's
weights keep the names ``fuse.weight`` whatever the fusion.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from apse.pooling import CrossLevelBilinear, global_average_pool, l2_normalise
from apse.registry import Registry, accepted_keywords

__all__ = ["FusionEntry", "FUSIONS", "register_fusion", "build_fusion", "ConcatFusion", "SingleFusion"]


@dataclass(frozen=True)
class FusionEntry:
    """A registered fusion: ``factory(low_channels, high_channels, embedding_dim, **options)``.

    ``uses_low``: whether it reads the low level (if not, the backbone need not compute it unless an
    attention head does). The model options (:class:`apse.model.APSENet` keywords, e.g. CLB's channel
    reductions) a factory takes are those its signature names.
    """

    name: str
    factory: Callable[..., nn.Module]
    uses_low: bool = True


#: name -> :class:`FusionEntry` (names read as every apse registry reads them, :mod:`apse.registry`).
FUSIONS: Registry[FusionEntry] = Registry("fusion")


def register_fusion(name: str, factory: Callable[..., nn.Module] | None = None, *, uses_low: bool = True):
    """Add a fusion to :data:`FUSIONS`; usable as a decorator or called directly."""
    return FUSIONS.register(name, factory, wrap=lambda fn: FusionEntry(name, fn, uses_low))


def build_fusion(name: str, low_channels: int, high_channels: int, embedding_dim: int, **options) -> nn.Module:
    """The fusion module ``name`` for levels of these channel counts, with the ``options`` its
    factory's signature names (the model passes all of its fusion options to whichever fusion it
    uses; None is passed on: CLB's ``reduce_low=None`` means no reduction)."""
    entry = FUSIONS[name]
    return entry.factory(low_channels, high_channels, embedding_dim, **accepted_keywords(entry.factory, options))


class ConcatFusion(nn.Linear):
    """GAP of both levels, concatenated (each l2-normalised first when ``normalise``), linear, l2."""

    def __init__(self, low_channels: int, high_channels: int, embedding_dim: int, normalise: bool = True):
        super().__init__(low_channels + high_channels, embedding_dim, bias=False)
        self.normalise = normalise

    def pooled(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """The concatenated GAPs (each l2-normalised when ``normalise``), before the linear map."""
        pooled = [global_average_pool(low), global_average_pool(high)]
        if self.normalise:
            pooled = [l2_normalise(p) for p in pooled]
        return torch.cat(pooled, dim=1)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """The linear map alone (no bias), before the final l2 normalisation."""
        return super().forward(pooled)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return l2_normalise(self.project(self.pooled(low, high)))


class SingleFusion(nn.Linear):
    """GAP of the high level only, linear, l2 (the low level is ignored)."""

    def __init__(self, low_channels: int, high_channels: int, embedding_dim: int):
        super().__init__(high_channels, embedding_dim, bias=False)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """The linear map alone (no bias), before the final l2 normalisation."""
        return super().forward(pooled)

    def forward(self, low: torch.Tensor | None, high: torch.Tensor) -> torch.Tensor:
        return l2_normalise(self.project(global_average_pool(high)))


register_fusion("clb", CrossLevelBilinear)
register_fusion("concat", lambda c_low, c_high, dim: ConcatFusion(c_low, c_high, dim, normalise=True))
register_fusion("concat_raw", lambda c_low, c_high, dim: ConcatFusion(c_low, c_high, dim, normalise=False))
register_fusion("single", SingleFusion, uses_low=False)
