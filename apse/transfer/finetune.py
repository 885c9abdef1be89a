"""Training an FI model's head on a small dataset's training folds: the N-pair loss on two classes, the loop.

The frozen-backbone regime: the head (attention heads, CLB, projection) starts from the FI model's
weights and trains on cached stage maps; the epoch (0 = the FI model as it is) is chosen on a
stratified share of the training folds, never on the held-out fold. On polarity-only data the
embedding loss is :func:`polarity_npair_loss` (EP is empty with one class per polarity) and the
emotion head is kept frozen; on emotion-labelled data it is the checkpoint's own loss plus both
attention losses (the :mod:`apse.transfer` package docstring says why).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from apse.data import BalancedBatchSampler, FeatureDataset, stratified_split
from apse.emotions import POLARITIES
from apse.losses import APSEObjective, attention_loss, build_configured_loss
from apse.rng import derived_seed, seed_everything
from apse.transfer._shared import labels_tensor, predict_on, retrieval_scores

__all__ = ["polarity_npair_loss", "FineTune", "fine_tune"]


def polarity_npair_loss(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The N-pair loss over the classes of a batch (N = 2 for polarities), averaged over tuples.

    The images of each class, in batch order, are paired 1-2, 3-4, ... as anchor / positive; tuple t
    takes pair t of every class, so with C classes and K images each there are K // 2 tuples of
    N = C (an odd last image is left out). Per tuple:
    ``1/N sum_i log(1 + sum_{j != i} exp(s_ij - s_ii))`` with ``s_ij = f_i . f_j+``
    (:func:`apse.losses.npair_loss`); for two classes that is
    ``log(1 + exp(s_12 - s_11))``. Needs at least two classes with two images each."""
    labels = torch.as_tensor(labels, device=embeddings.device).long()
    classes = torch.unique(labels)
    if len(classes) < 2:
        raise ValueError(f"the N-pair loss needs at least 2 classes in a batch, "
                         f"got {classes.tolist()}")
    groups = [torch.nonzero(labels == c).flatten() for c in classes]
    k = min(len(g) for g in groups) // 2 * 2
    if k < 2:
        raise ValueError("the N-pair loss needs at least 2 images of every class in a batch")
    idx = torch.stack([g[:k] for g in groups])                 # (N, k), batch order within a class
    anchors = embeddings[idx[:, 0::2].T]                       # (T, N, D)
    positives = embeddings[idx[:, 1::2].T]                     # (T, N, D)
    sim = anchors.float() @ positives.float().transpose(1, 2)  # (T, N, N)
    return (torch.logsumexp(sim, dim=2) - sim.diagonal(dim1=1, dim2=2)).mean()


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
    """Train a copy of `model`'s head on the cached `features` of ``train_idx`` (module docstring).

    `labels` are the dataset's labels at `level` (all images; indexed by ``train_idx``). Returns the
    model of the chosen epoch and ``{"chosen_epoch", "val_curve", "loss_curve", "n_train",
    "n_val"}``.
    """
    s = settings
    y_all = labels_tensor(labels)
    train_idx = [int(i) for i in train_idx]
    part = stratified_split(y_all[train_idx].numpy(), (1 - s.val_share, s.val_share, 0.0),
                            seed=s.seed)
    fit_idx = [train_idx[i] for i in part["train"]]
    val_idx = [train_idx[i] for i in part["val"]]
    n_classes = len(POLARITIES) if level == "polarity" else 8
    per_class = s.samples_per_class or (16 if level == "polarity" else 4)
    smallest = int(torch.bincount(y_all[fit_idx], minlength=n_classes).min())
    per_class = max(2, min(per_class, smallest // 2 * 2))  # small sets: no repeats within a batch
    select = "mAP2" if level == "polarity" else "mAP8"

    net = copy.deepcopy(model).cpu()
    net.freeze_backbone(True)
    if level == "polarity":
        # the emotion head has no labels here: kept as the FI model has it
        for head in (net.high_head, net.low_head if net.low_attention == "emotion" else None):
            if head is not None:
                head.requires_grad_(False)
        emb_loss = None
    else:
        emb_loss = build_configured_loss(fi_config, fi_config.embedding_dim)
    use_att = net.attention != "none"
    objective = None if emb_loss is None else APSEObjective(emb_loss, use_att, s.lam)
    params = [p for p in net.parameters() if p.requires_grad]
    if emb_loss is not None:
        params += [p for p in emb_loss.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=s.lr_step, gamma=s.lr_gamma)
    train_view = FeatureDataset(features.features, features.labels, features.meta, train=True)
    # one pass over the training images an epoch (at least one batch, for very small sets)
    batches = max(1, len(fit_idx) // (n_classes * per_class))
    sampler = BalancedBatchSampler(y_all[fit_idx].numpy(), classes_per_batch=n_classes,
                                   samples_per_class=per_class, seed=s.seed,
                                   batches_per_epoch=batches)

    def validate() -> float:
        if not val_idx:
            return float("nan")
        g = predict_on(net, features, fit_idx)["embedding"]
        q = predict_on(net, features, val_idx)["embedding"]
        return retrieval_scores(q, y_all[val_idx], g, y_all[fit_idx], level)[select]

    seed_everything(s.seed)
    best = {"epoch": 0, "score": validate(), "state": copy.deepcopy(net.state_dict())}
    val_curve, loss_curve = [round(best["score"], 4)], []
    for epoch in range(1, s.epochs + 1):
        seed_everything(derived_seed(s.seed, epoch))
        sampler.set_epoch(epoch)
        net.train()
        total, steps = 0.0, 0
        for batch in sampler:
            inputs, y = train_view.get_batch([fit_idx[i] for i in batch])
            y = y_all[[fit_idx[i] for i in batch]]
            out = net(inputs)
            if level == "polarity":
                loss = polarity_npair_loss(out.embedding, y)
                if use_att and out.polarity_confidence is not None:
                    loss = s.lam * loss + (1 - s.lam) * attention_loss(out.polarity_confidence, y)
            else:
                loss = objective(out.embedding, y, out.polarity_confidence, out.emotion_confidence,
                                 out.attention_terms())[0]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"fine-tuning loss became {float(loss)} at epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        sched.step()
        score = validate()
        loss_curve.append(round(total / max(steps, 1), 4))
        val_curve.append(round(score, 4))
        if score > best["score"]:  # strict: ties keep the earlier epoch (0 = the starting model)
            best = {"epoch": epoch, "score": score, "state": copy.deepcopy(net.state_dict())}
        if log is not None:
            log(f"    epoch {epoch}: loss {loss_curve[-1]:.4f}  val {select} {score:.4f}")
    net.load_state_dict(best["state"])
    net.eval()
    return net, {"chosen_epoch": best["epoch"], "val_curve": val_curve, "loss_curve": loss_curve,
                 "n_train": len(fit_idx), "n_val": len(val_idx)}
