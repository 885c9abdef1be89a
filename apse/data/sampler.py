"""Balanced batches: P emotions x K images each (8 x 4 = 32, the papers' batch), grouped by class.

The losses cut such a batch into 2 disjoint N-pair tuples (spec, "Losses": a batch of 32), which needs
every emotion's K images side by side, in emotion order: :class:`BalancedBatchSampler` makes them.
:class:`BatchConfig` is the batches' section of a training config (P, K and the batches an epoch),
beside the sampler it builds (:meth:`BalancedBatchSampler.from_config`); it checks its own fields.
"""
from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np
from torch.utils.data import Sampler

from apse.checks import ConfigError
from apse.data.images import DataWarning
from apse.data.splits import _as_labels
from apse.emotions import EMOTIONS, NUM_EMOTIONS


@dataclass
class BatchConfig:
    """The batches of a training config: ``classes_per_batch`` (P) classes x ``samples_per_class``
    (K) images each, the papers' 8 x 4, and ``batches_per_epoch`` (None: about one pass over the
    training images). :class:`apse.config.TrainConfig` composes it with the other sections."""

    classes_per_batch: int = 8
    samples_per_class: int = 4
    batches_per_epoch: Optional[int] = None    # None = one pass over the training images

    def check_batches(self) -> None:
        """Check the batch fields (ConfigError with one sentence)."""
        for name in ("classes_per_batch", "samples_per_class"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.batches_per_epoch is not None and self.batches_per_epoch < 1:
            raise ConfigError(f"batches_per_epoch must be positive or null, got {self.batches_per_epoch}")
        if self.samples_per_class % 2:
            raise ConfigError("samples_per_class must be even: images 1-2, 3-4, ... of each emotion form "
                              f"anchor/positive pairs, got {self.samples_per_class}")


class BalancedBatchSampler(Sampler):
    """Batches of P emotions x K images (default 8 x 4 = 32, the papers' batch), as index lists.

    Each batch is grouped by class in emotion order: class c1's K indices, then class c2's, ... with
    c1 < c2 < ...; the losses cut a batch into N-pair tuples by this order (images 1-2, 3-4 of each
    emotion; :func:`apse.losses.split_into_tuples`). With P < number of classes, the P classes of each
    batch are drawn at random.

    An epoch has `batches_per_epoch` batches, or ``len(labels) // (P * K)`` (about one pass over the
    data). Within a class, indices are drawn without replacement until the class runs out, then the
    class is reshuffled (never repeating an index inside one batch). A class with fewer than K images
    in total is sampled with replacement (all its images, padded by random repeats), with one warning.

    Reproducibility: epoch e is a pure function of (seed, e). Iterating uses the current epoch and
    then advances it, so ``for epoch: for batch in sampler`` sees a new epoch each time; call
    :meth:`set_epoch` to pick one explicitly (DistributedSampler-style). Distributed training: give
    each process its `rank` and the `world_size`; every rank builds the same global batch list and takes
    every world_size-th batch, so ranks get distinct batches and the same number of them
    (``len(sampler) == total // world_size``; `batches_per_epoch` counts batches over all ranks).
    """

    def __init__(
        self,
        labels: Any,
        classes_per_batch: int = 8,
        samples_per_class: int = 4,
        batches_per_epoch: int | None = None,
        seed: int = 0,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        y = _as_labels(labels)
        P, K = int(classes_per_batch), int(samples_per_class)
        if P < 1 or K < 1:
            raise ValueError(f"classes_per_batch and samples_per_class must be >= 1, got {P} and {K}")
        if int(seed) < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.class_indices: dict[int, np.ndarray] = {int(c): np.flatnonzero(y == c) for c in np.unique(y)}
        present = sorted(self.class_indices)
        if P > len(present):
            absent = [EMOTIONS[i] if i < NUM_EMOTIONS else str(i)
                      for i in range(max(NUM_EMOTIONS, max(present, default=-1) + 1)) if i not in present]
            raise ValueError(
                f"classes_per_batch={P} but the labels hold only {len(present)} classes"
                + (f" (none of: {', '.join(absent)})" if absent else "")
            )
        total = int(batches_per_epoch) if batches_per_epoch is not None else len(y) // (P * K)
        if total < world_size:
            raise ValueError(
                f"an epoch of {total} batch(es) of {P}x{K} cannot give each of {world_size} rank(s) one "
                f"({len(y)} labels); lower classes_per_batch/samples_per_class or set batches_per_epoch"
            )
        self.labels = y
        self.classes_per_batch, self.samples_per_class = P, K
        self.batches_total = total
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch = 0
        self.small_classes = [c for c in present if len(self.class_indices[c]) < K]
        if self.small_classes:
            names = ", ".join(f"{EMOTIONS[c] if c < NUM_EMOTIONS else c} ({len(self.class_indices[c])})"
                              for c in self.small_classes)
            warnings.warn(
                f"class(es) with fewer than samples_per_class={K} images: {names}; they are sampled with "
                f"replacement, so a batch repeats some of their images", DataWarning, stacklevel=2,
            )

    @classmethod
    def from_config(cls, labels: Any, config: BatchConfig, seed: int = 0, *, rank: int = 0,
                    world_size: int = 1) -> "BalancedBatchSampler":
        """The sampler of a batch section (a training config is one) over ``labels``."""
        return cls(labels, classes_per_batch=config.classes_per_batch, samples_per_class=config.samples_per_class,
                   batches_per_epoch=config.batches_per_epoch, seed=seed, rank=rank, world_size=world_size)

    def __len__(self) -> int:
        return self.batches_total // self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration produce epoch `epoch` (same epoch, same batches)."""
        self.epoch = int(epoch)

    def _draw(self, c: int, pools: dict[int, deque], rng: np.random.Generator) -> list[int]:
        K, idx = self.samples_per_class, self.class_indices[c]
        if len(idx) < K:  # with replacement: every image once, padded by random repeats
            draw = np.concatenate([idx, rng.choice(idx, K - len(idx), replace=True)])
            return rng.permutation(draw).tolist()
        pool = pools[c]
        if len(pool) < K:  # class ran out: top up from a fresh shuffle, avoiding repeats in this batch
            left = list(pool)
            left_set = set(left)
            fresh = rng.permutation(idx).tolist()
            top = [i for i in fresh if i not in left_set][: K - len(left)]
            taken = set(top)
            pools[c] = pool = deque(left + top + [i for i in fresh if i not in taken])
        return [pool.popleft() for _ in range(K)]

    def batches(self, epoch: int) -> list[list[int]]:
        """All batches of `epoch`, over all ranks (the global list that ranks shard)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        present = sorted(self.class_indices)
        pools = {c: deque(rng.permutation(self.class_indices[c]).tolist()) for c in present}
        out = []
        for _ in range(self.batches_total):
            if self.classes_per_batch == len(present):
                classes = present
            else:
                classes = sorted(rng.choice(present, self.classes_per_batch, replace=False).tolist())
            batch: list[int] = []
            for c in classes:
                batch.extend(int(i) for i in self._draw(c, pools, rng))
            out.append(batch)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.epoch
        self.epoch += 1
        mine = self.batches(epoch)[self.rank: len(self) * self.world_size: self.world_size]
        return iter(mine)
