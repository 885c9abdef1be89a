"""Whole batches gathered from tensors in memory: a DataLoader without workers or per-item collation.

Cached feature maps (:class:`apse.data.FeatureDataset`) and images decoded once
(:class:`apse.data.decoded.DecodedImages`) hold every item in one tensor and answer ``get_batch``; a
batch is then one indexing operation, much faster than collating thousands of per-item dicts. The
trainer's loader over them (a batch sampler) and evaluation's (consecutive chunks) are both
:class:`GatheredBatches`.
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["GatheredBatches"]


class GatheredBatches:
    """Batches of cached features (or decoded images) gathered with ``features.get_batch`` (no per-item collation).

    ``batches`` yields lists of positions into ``indices`` (``features``' own item indices): a batch
    sampler (training: a fresh draw at each iteration) or consecutive chunks (evaluation, above)."""

    def __init__(self, features, indices: Sequence[int], batches):
        self.features, self.indices, self.batches = features, list(indices), batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            yield self.features.get_batch([self.indices[i] for i in batch])
