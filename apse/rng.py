"""Random number generators: seeding them all, deriving per-epoch seeds, saving and restoring states.

A training epoch seeds ``random``, ``numpy`` and ``torch`` from (seed, epoch, rank) with
:func:`derived_seed`, so its batches, augmentations and dropout do not depend on what ran before it;
:func:`rng_states` / :func:`set_rng_states` carry the generators through a checkpoint as plain tensors
and containers (``torch.load(..., weights_only=True)`` reads them).
"""
from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch

__all__ = ["seed_everything", "derived_seed", "rng_states", "set_rng_states"]


def seed_everything(seed: int) -> None:
    """Seed ``random``, ``numpy`` and ``torch`` (all devices)."""
    seed = int(seed) % (2**32)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def derived_seed(*parts: int) -> int:
    """A stable mix of (seed, epoch, rank, ...) into 32 bits.

    Consecutive seeds must not give overlapping streams, which a plain sum could.
    """
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def rng_states() -> dict[str, Any]:
    """RNG states of python, numpy and torch (CPU and CUDA) as tensors and plain containers."""
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()
    out = {
        "python": [version, list(state), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
