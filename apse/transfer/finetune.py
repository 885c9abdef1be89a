"""Training an FI model's head on a small dataset's training folds: a Trainer run on cached maps.

The frozen-backbone regime: the head (attention heads, CLB, projection) starts from the FI model's
weights and trains on cached stage maps; the epoch (0 = the FI model as it is) is chosen on a
stratified share of the training folds, never on the held-out fold. On polarity-only data the
embedding loss is the N-pair loss over the two polarities (:class:`apse.losses.NPairLoss` with
``level="polarity"``; EP is empty with one class per polarity), the attention loss supervises the
polarity head, and the emotion head is kept frozen; on emotion-labelled data it is the checkpoint's
own loss plus both attention losses (the :mod:`apse.transfer` package docstring says why). The loop
is :class:`apse.training.Trainer`'s, the one every run of the book trains with.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from apse.data import stratified_split
from apse.emotions import classes_of
from apse.training import Trainer
from apse.training_data import feature_run_data
from apse.transfer._shared import labels_tensor

__all__ = ["FineTune", "fine_tune"]


@dataclass(frozen=True)
class FineTune:
    """How the head is trained on the small dataset's training folds (frozen-backbone regime).

    The schedule is the FI models' own (the CPU configuration's lr 0.2, x0.1 after 15 epochs, 20
    epochs: the experiments' budget), the same for a head that starts from an FI model and for one
    that starts untrained, so that two trained rows differ only in where they start. (A first try
    continued at 0.02, where the FI schedule ends: the FI heads were then still improving at the
    last epoch in most folds.) Batches: ``samples_per_class`` images of every class (polarity:
    2 x 16 = 32; emotion: the papers' 8 x 4), one pass over the training images an epoch. The epoch
    (0 = the starting model) is chosen on a stratified ``val_share`` of the training folds,
    validation images querying the training images, by mAP2 (polarity level) or mAP8 (emotion)."""

    epochs: int = 20
    lr: float = 0.2
    lr_step: int = 15
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lam: float = 0.5
    samples_per_class: int | None = None
    val_share: float = 0.1
    seed: int = 0


def fine_tune(model: nn.Module, fi_config, features, labels, train_idx: Sequence[int], *,
              level: str, settings: FineTune = FineTune(),
              log: Callable[[str], None] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train a copy of `model`'s head on the cached `features` of ``train_idx`` (module docstring):
    a :class:`apse.training.Trainer` run over :func:`apse.training_data.feature_run_data`, with the
    copy's backbone (and, at the polarity level, its emotion head) frozen and the copy as it starts
    a candidate epoch.

    `labels` are the dataset's labels at `level` (all images; indexed by ``train_idx``). Returns the
    model of the chosen epoch and ``{"chosen_epoch", "val_curve", "loss_curve", "n_train",
    "n_val"}`` (the curves start at epoch 0, the starting model).
    """
    s = settings
    y_all = labels_tensor(labels)
    train_idx = [int(i) for i in train_idx]
    part = stratified_split(y_all[train_idx].numpy(), (1 - s.val_share, s.val_share, 0.0),
                            seed=s.seed)
    split = {"train": [train_idx[i] for i in part["train"]],
             "val": [train_idx[i] for i in part["val"]], "test": []}
    n_classes = len(classes_of(level))
    per_class = s.samples_per_class or (16 if level == "polarity" else 4)
    smallest = int(torch.bincount(y_all[split["train"]], minlength=n_classes).min())
    per_class = max(2, min(per_class, smallest // 2 * 2))  # small sets: no repeats within a batch

    net = copy.deepcopy(model).cpu()
    frozen = []
    if level == "polarity":
        # the emotion head has no labels here: kept as the FI model has it
        frozen = [h for h in (net.high_head, net.low_head if net.low_attention == "emotion" else None)
                  if h is not None]
        # EP is empty with one class per polarity: the N-pair loss on the two polarities
        loss = "npair"
    else:
        loss = fi_config.loss
    config = fi_config.replace(
        loss=loss, attention_loss=net.attention != "none", lam=s.lam, epochs=s.epochs, lr=s.lr,
        lr_step=s.lr_step, lr_gamma=s.lr_gamma, optimizer="sgd", momentum=s.momentum,
        weight_decay=s.weight_decay, seed=s.seed, device="cpu", cache_features=True,
        classes_per_batch=n_classes, samples_per_class=per_class,
        # one pass over the training images an epoch (at least one batch, for very small sets)
        batches_per_epoch=max(1, len(split["train"]) // (n_classes * per_class)),
        eval_every=1, select_on="mAP2" if level == "polarity" else "mAP8", amp=False,
        num_workers=0, batch_size_eval=128, probe_epochs=0, warmup_epochs=0, backbone_lr=None,
        attention_lr=None, freeze_bn=False, grad_clip=None)
    run = feature_run_data(features, y_all, split, config, level=level)
    lines = (lambda msg: log("    " + msg)) if log is not None else None
    trainer = Trainer(config, None, None, model=net, run_data=run, frozen=frozen,
                      start_candidate=True, progress=log is not None, log=lines)
    record = trainer.fit()
    select = config.select_on
    start = trainer.start_metrics
    val_curve = [round(start[select], 4) if start else float("nan")]
    val_curve += [round(h["val"][select], 4) if h["val"] else float("nan") for h in record.history]
    net = trainer.model.eval()
    return net, {"chosen_epoch": record.chosen_epoch, "val_curve": val_curve,
                 "loss_curve": [round(h["loss"], 4) for h in record.history],
                 "n_train": len(split["train"]), "n_val": len(split["val"])}
