"""The papers' small-dataset protocol: 5 stratified folds, each held-out fold queried leave-one-out.

:func:`small_dataset_protocol` takes any dataset (emotion- or polarity-labelled) and an FI-trained
checkpoint; for each held-out fold it optionally fine-tunes the head on the other folds
(:func:`apse.transfer.finetune.fine_tune`), then :func:`evaluate_fold` lets every held-out image
query the other held-out images. :func:`linear_probe` and :func:`gap_features` are the reference
classifier of the Twitter I table (logistic regression on GAP(conv5) of the frozen backbone).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from apse.data import stratified_kfold
from apse.emotions import class_polarities, polarity_of
from apse.evaluation import summarise
from apse.pooling import l2_normalise
from apse.checkpoints import load_model
from apse.transfer._shared import labels_tensor, predict_on, print_log, retrieval_scores
from apse.transfer.fi_models import dataset_features
from apse.transfer.finetune import FineTune, fine_tune

__all__ = ["linear_probe", "gap_features", "evaluate_fold", "small_dataset_protocol"]


def linear_probe(x_train: torch.Tensor, y_train, x_test: torch.Tensor, *, l2: float = 1e-3,
                 n_classes: int = 2) -> torch.Tensor:
    """Multinomial logistic regression on features (standardised with the training statistics),
    ``mean CE + l2 ||W||^2``, fitted by L-BFGS in float64; returns the predicted test classes."""
    x_train, x_test = x_train.double(), x_test.double()
    mean, std = x_train.mean(0), x_train.std(0).clamp(min=1e-6)
    a, b = (x_train - mean) / std, (x_test - mean) / std
    y = labels_tensor(y_train)
    w = torch.zeros(a.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], lr=1.0, max_iter=500, tolerance_grad=1e-9,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(a @ w + bias, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (b @ w + bias).argmax(1)


def gap_features(features, indices: Sequence[int], stage: str = "conv5") -> torch.Tensor:
    """l2-normalised global average pooling of the cached `stage` maps of `indices`."""
    maps, _ = features.get_batch(list(map(int, indices)))
    return l2_normalise(maps[stage].mean(dim=(2, 3)))


def evaluate_fold(model: nn.Module, features, labels, held: Sequence[int], *,
                  level: str) -> tuple[dict[str, float], dict[str, float], torch.Tensor]:
    """Leave-one-out within the held-out images: ``(metrics, accuracies, embeddings)``.

    Accuracies (polarity of the held-out images): ``polarity_head`` (the low head's argmax, when it
    is a polarity head) and ``emotion_head_polarity`` (the emotion head's confidences summed over
    each polarity's four emotions: a polarity classifier from emotions, zero-shot)."""
    y = labels_tensor(labels)[list(map(int, held))]
    out = predict_on(model, features, held)
    metrics = retrieval_scores(out["embedding"], y, level=level)
    pol = class_polarities(level)[y]  # each label's polarity (polarity labels: themselves)
    acc: dict[str, float] = {}
    if out.get("polarity_confidence") is not None:
        acc["polarity_head"] = float((out["polarity_confidence"].argmax(1) == pol).double().mean())
    if out.get("emotion_confidence") is not None:
        ec = out["emotion_confidence"]
        negative = class_polarities("emotion").bool()  # the emotion head's classes
        neg = ec[:, negative].sum(1) > ec[:, ~negative].sum(1)
        acc["emotion_head_polarity"] = float((neg.long() == pol).double().mean())
        if level == "emotion":
            acc["emotion_head"] = float((ec.argmax(1) == y).double().mean())
    return metrics, acc, out["embedding"]


def small_dataset_protocol(dataset, checkpoint: str | os.PathLike, *, level: str | None = None,
                           folds: int = 5, split_seed: int = 0,
                           settings: FineTune | None = FineTune(),
                           fold_ids: Sequence[int] | None = None, features=None,
                           log: Callable[[str], None] | None = print_log) -> dict[str, Any]:
    """The papers' small-dataset protocol for any dataset and an FI-trained checkpoint.

    `dataset`: a :class:`apse.data.polarity.LabelledImages` (or anything with ``samples`` and
    ``labels_at``/``targets``). `level`: "polarity" or "emotion" (default: the dataset's own).
    ``settings=None`` evaluates the FI model as it is (zero-shot transfer); otherwise it is
    fine-tuned on the 4 training folds of every held-out fold (:func:`fine_tune`). Every held-out
    image queries the other held-out images. Returns ``{"level", "folds": [{"fold", "metrics",
    "accuracy", ...}], "summary": {metric: (mean, std)}}``."""
    model, config = load_model(checkpoint)
    level = level or getattr(dataset, "level", "emotion")
    labels = (dataset.labels_at(level) if hasattr(dataset, "labels_at")
              else np.asarray(dataset.targets, dtype=np.int64))
    if level == "polarity" and labels.max() > 1:
        labels = np.asarray([polarity_of(int(e)) for e in labels], dtype=np.int64)
    if features is None:
        features = dataset_features(dataset, model, config, progress=log is not None,
                                    log=log or (lambda m: None))
    splits = stratified_kfold(labels, k=folds, seed=split_seed)
    results = []
    for f in (range(folds) if fold_ids is None else fold_ids):
        train_idx, held = splits[f]
        net, info = model, {"chosen_epoch": None}
        if settings is not None:
            net, info = fine_tune(model, config, features, labels, train_idx, level=level,
                                  settings=settings)
        metrics, acc, _ = evaluate_fold(net, features, labels, held, level=level)
        results.append({"fold": int(f), "metrics": metrics, "accuracy": acc, "n_test": len(held),
                        **info})
        if log is not None:
            first = "mAP2" if level == "polarity" else "mAP8"
            log(f"fold {f}: {first} {metrics[first]:.4f}  NN {metrics['NN']:.4f}")
    return {"level": level, "folds": results, "summary": summarise([r["metrics"] for r in results])}
