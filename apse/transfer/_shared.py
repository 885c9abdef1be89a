"""Helpers every apse.transfer module uses: the default log, scoring cached features.

Private to the package. The package's cache keys (``fi-models``, the features cache, ``results/twitter1/runs``)
hash with :func:`apse.runs.short_hash`, so changing that renames (re-computes) all of them.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from apse.evaluation import predict
from apse.metrics import evaluate_embeddings

REPO_ROOT = Path(__file__).resolve().parents[2]


def print_log(msg: str) -> None:
    """The default ``log`` of the long-running functions: a flushed line on stdout."""
    print(msg, flush=True)


def labels_tensor(labels) -> torch.Tensor:
    return torch.as_tensor(np.asarray(labels), dtype=torch.long)


def predict_on(model: nn.Module, features, indices: Sequence[int]) -> dict[str, torch.Tensor]:
    """The model's outputs (:func:`apse.evaluation.predict`) on the cached features of `indices`."""
    outputs, _ = predict(model, Subset(features, list(map(int, indices))), batch_size=128)
    return outputs


def retrieval_scores(q_emb, q_lab, g_emb=None, g_lab=None,
                     level: str = "polarity") -> dict[str, float]:
    """:func:`apse.metrics.evaluate_embeddings` (leave-one-out without a gallery), quietly."""
    with warnings.catch_warnings():
        # queries without a relevant item are left out of the means (and counted there)
        warnings.simplefilter("ignore", RuntimeWarning)
        return evaluate_embeddings(q_emb, q_lab, g_emb, g_lab, level=level)
