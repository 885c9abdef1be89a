"""Beyond FI: the papers' small-dataset protocol, and Twitter I (``python -m apse.transfer``).

The papers test APSE on IAPSa, ArtPhoto and Abstract by transferring the FI model: "we transfer the
parameters of the network fine-tuned on FI to them. 5-fold validation is performed and the average
performance is reported" (ICCV Sec. 4.2), every image querying all the others. Here that protocol is
generic (:func:`small_dataset_protocol`): any dataset (:class:`apse.polarity_data.LabelledImages`,
emotion- or polarity-labelled), any FI-trained checkpoint, 5 stratified folds; for held-out fold f

1. optionally fine-tune from the FI model on the other 4 folds (:class:`FineTune`): a stratified
   10 % of them is held back for validation, the epoch (0 = the FI model as it is) is chosen on it
   (validation images query the training images), never on fold f;
2. every image of fold f queries all the other images of fold f (leave-one-out within the held-out
   fold, as the trainer's ``protocol=loo``); the metrics are averaged over the 5 folds.

**The frozen-backbone regime.** Like every experiment of the book on CPU, the backbone is the
frozen, ImageNet-pretrained EfficientNet-Lite0 (224 px centre crops of 256 x 256 resizes, conv3 +
conv5 maps extracted once and cached, mirrored images as a second view): "fine-tune from the FI
model" therefore means *start the head (attention heads, CLB, projection) from the FI-trained
head's weights and train it on the 4 training folds*. The papers fine-tune every layer.

**Polarity-only data** (Twitter I). There are no emotion labels, so

- metrics are computed at the polarity level (:func:`apse.metrics.retrieval_metrics` with
  ``level="polarity"``: relevance = same polarity for mAP2, NN, FT, ST, DCG, F1 and ANMRR; there is
  no mAP8). NN is then the leave-one-out 1-nearest-neighbour polarity accuracy;
- the embedding is trained with the N-pair loss on the two polarity classes
  (:func:`polarity_npair_loss`): each tuple holds one anchor/positive pair per polarity, so
  ``L = log(1 + exp(s_12 - s_11))`` per anchor. Why not EP: with one class per polarity, both of its
  terms are empty (no other class of the same polarity: ``P_i`` is empty), so EP is 0 by
  definition; GEP and WEP inherit that. The N-pair loss needs no margin to tune for the new domain
  (contrastive and triplet losses do);
- the attention loss applies to the low (polarity) head only; the emotion head is kept as the FI
  model has it (frozen: it cannot be trained without emotion labels).

On emotion-labelled data (IAPSa, ArtPhoto, Abstract) the fine-tuning loss is the checkpoint's own
(N-pair, EP, WEP or GEP, 8 x 4 balanced batches) plus both attention losses, and metrics are at the
emotion level (all eight).

The Twitter I experiment (:func:`run_twitter1`) writes ``results/twitter1/``: one small JSON per
row x subset x fold in ``runs/``, ``summary.csv`` / ``summary.md``, ``retrievals.json`` (fold 0's
top-5 of a few queries, for the book's figure) and ``meta.json``. Its FI-trained models are trained
once on the whole FI subset (:func:`fi_checkpoint`: 95 % train / 5 % validation to choose the
epoch, the experiments' 20-epoch budget) and kept outside the repository, in
``~/.cache/apse/fi-models`` (``$APSE_CACHE``), trained again when missing.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from apse.emotions import POLARITIES
from apse.io import atomic_write, write_json

__all__ = ["FI_VARIANTS", "FineTune", "fi_model_config", "fi_checkpoint", "dataset_features",
           "polarity_npair_loss", "fine_tune", "small_dataset_protocol", "linear_probe",
           "ROWS", "run_twitter1", "load_runs", "summarise_runs", "summary_table",
           "load_retrievals", "load_meta", "paired_difference", "plot_polarity_retrievals", "main"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = REPO_ROOT / "results" / "twitter1"
DEFAULT_BASE = REPO_ROOT / "configs" / "fi-subset-cpu.yaml"
#: Bump when a change of this module changes what a cached run computes.
RUNNER_VERSION = 1
POLARITY_NOTE = ("polarity level: relevance = same polarity for every metric (mAP2, NN, FT, ST, "
                 "DCG, F1, ANMRR); Twitter I has no emotion labels, so there is no mAP8")

#: The FI-trained models: name -> (label, overrides of the CPU config).
FI_VARIANTS: dict[str, tuple[str, dict]] = {
    "npair": ("N-pair", {"loss": "npair", "attention": "none", "fusion": "single"}),
    "ep": ("EP", {"loss": "ep", "attention": "none", "fusion": "single"}),
    "apse-gep": ("APSE + GEP", {"loss": "apse", "attention": "hierarchical", "fusion": "clb"}),
}
#: How the FI models are trained: the experiments' 20-epoch budget, nearly all of the FI subset.
FI_TRAINING = {"epochs": 20, "lr_step": 15, "split": "95/5/0", "device": "cpu", "num_workers": 1}


def _cache_root() -> Path:
    return Path(os.environ.get("APSE_CACHE", Path.home() / ".cache" / "apse"))


def _hash(payload: Any, n: int = 12) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:n]


def _log_default(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------------
# FI-trained models
# --------------------------------------------------------------------------------------------------
def fi_model_config(variant: str, base: str | os.PathLike = DEFAULT_BASE):
    """The :class:`~apse.config.TrainConfig` of an FI-trained model (:data:`FI_VARIANTS`)."""
    from apse.config import load_config

    if variant not in FI_VARIANTS:
        raise ValueError(f"unknown FI model {variant!r}; valid: {', '.join(FI_VARIANTS)}")
    return load_config(base).replace(**{**FI_TRAINING, **FI_VARIANTS[variant][1]})


def fi_checkpoint(variant: str, *, fi_data: str | os.PathLike | None = None,
                  models_dir: str | os.PathLike | None = None, train_if_missing: bool = True,
                  base: str | os.PathLike = DEFAULT_BASE,
                  log: Callable[[str], None] = _log_default) -> Path:
    """``model.pt`` of the FI-trained `variant`, trained on the FI subset when it is missing.

    Kept in ``models_dir`` (default ``~/.cache/apse/fi-models``) under a name that hashes the config
    and the FI file list, so a changed configuration or dataset trains a new model."""
    from apse.data import EmotionImageFolder, locate_dataset
    from apse.training import dataset_fingerprint, train

    config = fi_model_config(variant, base)
    folder = EmotionImageFolder(locate_dataset(fi_data))
    skip = ("device", "num_workers", "feature_cache", "batch_size_eval")
    key = _hash({"config": {k: v for k, v in config.to_dict().items() if k not in skip},
                 "data": dataset_fingerprint(folder.samples)})
    out = Path(models_dir) if models_dir is not None else _cache_root() / "fi-models"
    out = out / f"{variant}-{key}"
    if (out / "model.pt").is_file():
        return out / "model.pt"
    if not train_if_missing:
        raise FileNotFoundError(f"FI model {variant!r} not found at {out / 'model.pt'}; run "
                                "python -m apse.transfer prepare")
    log(f"[fi-models] training {variant} on {len(folder)} FI images -> {out}")
    t0 = time.time()
    train(config, folder, out, overwrite=True, progress=False)
    log(f"[fi-models] {variant} done in {time.time() - t0:.0f}s")
    return out / "model.pt"


# --------------------------------------------------------------------------------------------------
# features of a dataset under a checkpoint's (frozen) backbone
# --------------------------------------------------------------------------------------------------
def _state_hash(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def dataset_features(dataset, model: nn.Module, config, *,
                     stages: Sequence[str] = ("conv3", "conv5"),
                     flips: bool = True, cache_dir: str | os.PathLike | None = None,
                     progress: bool = True, log: Callable[[str], None] = _log_default):
    """Stage maps of `dataset` under `model`'s backbone (weights as the checkpoint holds them), at
    the checkpoint config's image size, extracted once and cached.

    The cache key hashes the backbone's weights, the stages, the sizes and the dataset's file list
    (paths, labels, sizes), so models that share a frozen backbone (every FI model of the CPU
    regime: ImageNet Lite0) share one cache. Returns a :class:`apse.data.FeatureDataset` whose
    labels are the dataset's (its ``level``)."""
    from apse.backbones import build_backbone
    from apse.data import FeatureDataset, build_transforms, extract_features
    from apse.training import _default_cache_dir, dataset_fingerprint

    wanted = set(stages) | set(model.stages)
    stages = tuple(s for s in ("conv2", "conv3", "conv4", "conv5") if s in wanted)
    src = model.backbone
    backbone = build_backbone(config.backbone, pretrained=False, stages=stages)
    backbone.load_state_dict(src.state_dict(), strict=True)
    backbone.weights_source = getattr(src, "weights_source", "checkpoint")
    key = _hash({"v": 1, "backbone": config.backbone, "weights": _state_hash(backbone),
                 "stages": stages, "size": config.image_size, "resize": config.resize,
                 "flips": flips,
                 "data": dataset_fingerprint(dataset.samples)}, 16)
    cache = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    path = cache / f"{config.backbone}-{'-'.join(stages)}-{config.image_size}px-{key}.pt"
    if path.is_file():
        return FeatureDataset.load(path)
    tf = build_transforms(False, image_size=config.image_size, resize=config.resize,
                          mean=tuple(backbone.mean), std=tuple(backbone.std))
    clone = copy.copy(dataset)
    clone.transform = tf
    log(f"[features] extracting {'+'.join(stages)} of {len(dataset)} images -> {path}")
    t0 = time.time()
    feats = extract_features(backbone, clone, stages, batch_size=32, flips=flips, progress=progress)
    feats.meta["level"] = getattr(dataset, "level", "emotion")
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write(path, feats.save)
    log(f"[features] done in {time.time() - t0:.0f}s")
    return FeatureDataset.load(path)


# --------------------------------------------------------------------------------------------------
# training on a few classes: the N-pair loss over the classes present, and the fine-tuning loop
# --------------------------------------------------------------------------------------------------
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


def _labels_tensor(labels) -> torch.Tensor:
    return torch.as_tensor(np.asarray(labels), dtype=torch.long)


def _predict(model: nn.Module, features, indices: Sequence[int]) -> dict[str, torch.Tensor]:
    from torch.utils.data import Subset

    from apse.evaluation import predict

    outputs, _ = predict(model, Subset(features, list(map(int, indices))), batch_size=128)
    return outputs


def _retrieval(q_emb, q_lab, g_emb=None, g_lab=None, level: str = "polarity") -> dict[str, float]:
    import warnings

    from apse.metrics import evaluate_embeddings

    with warnings.catch_warnings():
        # queries without a relevant item are left out of the means (and counted there)
        warnings.simplefilter("ignore", RuntimeWarning)
        return evaluate_embeddings(q_emb, q_lab, g_emb, g_lab, level=level)


def fine_tune(model: nn.Module, fi_config, features, labels, train_idx: Sequence[int], *,
              level: str, settings: FineTune = FineTune(),
              log: Callable[[str], None] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train a copy of `model`'s head on the cached `features` of ``train_idx`` (module docstring).

    `labels` are the dataset's labels at `level` (all images; indexed by ``train_idx``). Returns the
    model of the chosen epoch and ``{"chosen_epoch", "val_curve", "loss_curve", "n_train",
    "n_val"}``.
    """
    from apse.data import BalancedBatchSampler, FeatureDataset, stratified_split
    from apse.losses import attention_loss, build_loss
    from apse.rng import derived_seed, seed_everything

    s = settings
    y_all = _labels_tensor(labels)
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
        kwargs = dict(fi_config.loss_options)
        if fi_config.embedding_loss_name() == "gep":
            kwargs.setdefault("beta", fi_config.beta)
        emb_loss = build_loss(fi_config.embedding_loss_name(),
                              embedding_dim=fi_config.embedding_dim, **kwargs)
    use_att = net.attention != "none"
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
        g = _predict(net, features, fit_idx)["embedding"]
        q = _predict(net, features, val_idx)["embedding"]
        return _retrieval(q, y_all[val_idx], g, y_all[fit_idx], level)[select]

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
                from apse.emotions import polarity_labels

                loss = emb_loss(out.embedding, y, out.polarity_confidence, out.emotion_confidence)
                terms = out.attention_terms() if use_att else []
                if terms:
                    att = sum(attention_loss(c, polarity_labels(y) if lv == "polarity" else y)
                              for lv, c in terms)
                    loss = s.lam * loss + (1 - s.lam) * att
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


def linear_probe(x_train: torch.Tensor, y_train, x_test: torch.Tensor, *, l2: float = 1e-3,
                 n_classes: int = 2) -> torch.Tensor:
    """Multinomial logistic regression on features (standardised with the training statistics),
    ``mean CE + l2 ||W||^2``, fitted by L-BFGS in float64; returns the predicted test classes."""
    x_train, x_test = x_train.double(), x_test.double()
    mean, std = x_train.mean(0), x_train.std(0).clamp(min=1e-6)
    a, b = (x_train - mean) / std, (x_test - mean) / std
    y = _labels_tensor(y_train)
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


# --------------------------------------------------------------------------------------------------
# the protocol, one held-out fold at a time
# --------------------------------------------------------------------------------------------------
def _gap(features, indices: Sequence[int], stage: str = "conv5") -> torch.Tensor:
    from apse.pooling import l2_normalise

    maps, _ = features.get_batch(list(map(int, indices)))
    return l2_normalise(maps[stage].mean(dim=(2, 3)))


def evaluate_fold(model: nn.Module, features, labels, held: Sequence[int], *,
                  level: str) -> tuple[dict[str, float], dict[str, float], torch.Tensor]:
    """Leave-one-out within the held-out images: ``(metrics, accuracies, embeddings)``.

    Accuracies (polarity of the held-out images): ``polarity_head`` (the low head's argmax, when it
    is a polarity head) and ``emotion_head_polarity`` (the emotion head's confidences summed over
    each polarity's four emotions: a polarity classifier from emotions, zero-shot)."""
    y = _labels_tensor(labels)[list(map(int, held))]
    out = _predict(model, features, held)
    metrics = _retrieval(out["embedding"], y, level=level)
    pol = y if level == "polarity" else (y >= 4).long()
    acc: dict[str, float] = {}
    if out.get("polarity_confidence") is not None:
        acc["polarity_head"] = float((out["polarity_confidence"].argmax(1) == pol).double().mean())
    if out.get("emotion_confidence") is not None:
        ec = out["emotion_confidence"]
        neg = ec[:, 4:].sum(1) > ec[:, :4].sum(1)
        acc["emotion_head_polarity"] = float((neg.long() == pol).double().mean())
        if level == "emotion":
            acc["emotion_head"] = float((ec.argmax(1) == y).double().mean())
    return metrics, acc, out["embedding"]


def small_dataset_protocol(dataset, checkpoint: str | os.PathLike, *, level: str | None = None,
                           folds: int = 5, split_seed: int = 0,
                           settings: FineTune | None = FineTune(),
                           fold_ids: Sequence[int] | None = None, features=None,
                           log: Callable[[str], None] | None = _log_default) -> dict[str, Any]:
    """The papers' small-dataset protocol for any dataset and an FI-trained checkpoint.

    `dataset`: a :class:`apse.polarity_data.LabelledImages` (or anything with ``samples`` and
    ``labels_at``/``targets``). `level`: "polarity" or "emotion" (default: the dataset's own).
    ``settings=None`` evaluates the FI model as it is (zero-shot transfer); otherwise it is
    fine-tuned on the 4 training folds of every held-out fold (:func:`fine_tune`). Every held-out
    image queries the other held-out images. Returns ``{"level", "folds": [{"fold", "metrics",
    "accuracy", ...}], "summary": {metric: (mean, std)}}``."""
    from apse.data import stratified_kfold
    from apse.evaluation import summarise
    from apse.training import load_model

    model, config = load_model(checkpoint)
    level = level or getattr(dataset, "level", "emotion")
    labels = (dataset.labels_at(level) if hasattr(dataset, "labels_at")
              else np.asarray(dataset.targets, dtype=np.int64))
    if level == "polarity" and labels.max() > 1:
        from apse.emotions import polarity_of

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


# --------------------------------------------------------------------------------------------------
# the Twitter I experiment
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One row of the Twitter I table. ``source``: "chance" (random embeddings), "imagenet" (an
    untrained linear head on GAP(conv5) of the frozen ImageNet backbone), or an FI model of
    :data:`FI_VARIANTS`. ``trained``: trained on Twitter I's training folds (from the FI head, or
    from the untrained one for "imagenet")."""

    name: str
    label: str
    source: str
    trained: bool = False
    group: str = ""


ROWS: tuple[Row, ...] = (
    Row("chance", "random embedding (chance)", "chance", group="reference"),
    Row("imagenet", "ImageNet features, untrained head", "imagenet", group="reference"),
    Row("twitter-npair", "ImageNet features, head trained on Twitter I only (N-pair, SO)",
        "imagenet", True, "trained on Twitter I only"),
    Row("fi-npair", "N-pair (SO), FI-trained, as it is", "npair", group="zero-shot transfer"),
    Row("fi-ep", "EP (SO), FI-trained, as it is", "ep", group="zero-shot transfer"),
    Row("fi-apse-gep", "APSE + GEP, FI-trained, as it is", "apse-gep", group="zero-shot transfer"),
    Row("ft-npair", "N-pair (SO), FI-trained, fine-tuned on Twitter I", "npair", True,
        "fine-tuned"),
    Row("ft-ep", "EP (SO), FI-trained, fine-tuned on Twitter I", "ep", True, "fine-tuned"),
    Row("ft-apse-gep", "APSE + GEP, FI-trained, fine-tuned on Twitter I", "apse-gep", True,
        "fine-tuned"),
)
ROW_NAMES = tuple(r.name for r in ROWS)
#: Rows whose fold-0 top-5 retrievals are kept for the book's figure, and how many queries.
FIGURE_ROWS = ("imagenet", "fi-apse-gep", "ft-apse-gep")
FIGURE_QUERIES_PER_POLARITY = 2
ACCURACY_LABELS = {  # column names of the accuracy table (what each is: the book's chapter)
    "majority": "majority class",
    "linear_probe": "logistic regression, ImageNet GAP",
    "polarity_head": "APSE polarity head",
    "emotion_head_polarity": "APSE emotion head, summed",
}


def _untrained_head(config) -> nn.Module:
    from apse.rng import seed_everything
    from apse.training import build_model

    seed_everything(0)
    return build_model(config.replace(attention="none", fusion="single"), pretrained=False).eval()


def _top_k(emb: torch.Tensor, k: int) -> torch.Tensor:
    """(Q, k) leave-one-out nearest neighbours by Euclidean distance (ties: gallery order)."""
    from apse.metrics import pairwise_distances

    d = pairwise_distances(emb, emb).double()
    d.fill_diagonal_(math.inf)
    return torch.sort(d, dim=1, stable=True).indices[:, :k]


def _figure_queries(labels: torch.Tensor, held: Sequence[int], per_polarity: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    picks = []
    for p in range(len(POLARITIES)):
        pos = [j for j, i in enumerate(held) if int(labels[i]) == p]
        picks += sorted(rng.choice(pos, size=min(per_polarity, len(pos)), replace=False).tolist())
    return picks


def run_twitter1(*, subsets: Sequence[str] = ("5", "all"), folds: int = 5,
                 rows: Sequence[str] | None = None, force: bool = False,
                 results_dir: str | os.PathLike = DEFAULT_RESULTS, data: str | None = None,
                 fi_data: str | None = None, models_dir: str | None = None,
                 settings: FineTune = FineTune(), split_seed: int = 0,
                 base: str | os.PathLike = DEFAULT_BASE, log: Callable[[str], None] = _log_default,
                 command: str | None = None) -> list[dict]:
    """Every row x subset x held-out fold of the Twitter I experiment (cached in
    ``results_dir/runs``; ``force`` re-runs), then the summary files. Returns the records."""
    from apse.data import stratified_kfold
    from apse.polarity_data import load_twitter1, twitter1_label
    from apse.training import load_model

    t_start, c_start = time.time(), time.process_time()
    results_dir = Path(results_dir)
    chosen = [r for r in ROWS if rows is None or r.name in rows]
    unknown = set(rows or ()) - set(ROW_NAMES)
    if unknown:
        raise ValueError(f"unknown row(s) {sorted(unknown)}; valid: {', '.join(ROW_NAMES)}")
    full = load_twitter1(data, "all")
    rel_all = full.relative_paths()
    index_of = {r: i for i, r in enumerate(rel_all)}
    labels = _labels_tensor(full.labels_at("polarity"))
    checkpoints = {v: fi_checkpoint(v, fi_data=fi_data, models_dir=models_dir, base=base, log=log)
                   for v in sorted({r.source for r in chosen if r.source in FI_VARIANTS})
                   or ["apse-gep"]}
    models = {v: load_model(path) for v, path in checkpoints.items()}
    ref_model, ref_config = models.get("apse-gep") or next(iter(models.values()))
    features = dataset_features(full, ref_model, ref_config, log=log)
    feature_name = f"{ref_config.backbone}-{ref_config.image_size}px-flips"
    for v, (m, c) in models.items():  # every FI model must share the cached (frozen) backbone
        same = _state_hash(m.backbone) == _state_hash(ref_model.backbone)
        if not same or c.image_size != ref_config.image_size:
            raise ValueError(f"FI model {v!r} has another backbone than the cached features'")
    records = []
    ran = cached = 0
    for subset in subsets:
        sub = load_twitter1(data, subset, check="none")
        sub_idx = [index_of[r] for r in sub.relative_paths()]
        sub_label = twitter1_label(subset, len(sub_idx))
        splits = stratified_kfold(labels[sub_idx].numpy(), k=folds, seed=split_seed)
        for row in chosen:
            for f in range(folds):
                train_idx = [sub_idx[i] for i in splits[f][0]]
                held = [sub_idx[i] for i in splits[f][1]]
                key = _hash({"row": asdict(row), "subset": subset, "fold": f, "folds": folds,
                             "split_seed": split_seed, "images": len(sub_idx),
                             "settings": asdict(settings) if row.trained else None,
                             "fi_model": checkpoints[row.source].parent.name
                             if row.source in FI_VARIANTS else None,
                             "features": feature_name, "runner": RUNNER_VERSION})
                path = results_dir / "runs" / f"{row.name}-s{subset}-f{f}-{key}.json"
                if not force and path.is_file():
                    records.append(json.loads(path.read_text()))
                    cached += 1
                    continue
                log(f"[twitter1] {sub_label}: {row.name} fold {f} ...")
                t0, c0 = time.time(), time.process_time()
                record = _run_row(row, models, features, labels, train_idx, held, settings, f,
                                  rel_all, ref_config)
                record.update({
                    "row": row.name, "label": row.label, "group": row.group, "subset": subset,
                    "subset_label": sub_label, "n_images": len(sub_idx), "fold": f, "folds": folds,
                    "split_seed": split_seed, "key": key, "level": "polarity",
                    "note": POLARITY_NOTE, "fine_tune": asdict(settings) if row.trained else None,
                    "fi_model": checkpoints[row.source].parent.name
                    if row.source in FI_VARIANTS else None,
                    "n_test": len(held), "wall_time_s": round(time.time() - t0, 2),
                    "cpu_time_s": round(time.process_time() - c0, 2),
                    "runner_version": RUNNER_VERSION,
                    "created": time.strftime("%Y-%m-%d %H:%M:%S")})
                write_json(path, record)
                records.append(record)
                ran += 1
                m = record["metrics"]
                log(f"    mAP2 {m['mAP2']:.4f}  NN {m['NN']:.4f}  FT {m['FT']:.4f}  "
                    f"epoch {record.get('chosen_epoch')}  {record['wall_time_s']:.1f}s")
    write_summary(results_dir, records)
    meta_path = results_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"invocations": []}
    meta["invocations"].append({"command": command, "ran": ran, "cached": cached,
                                "wall_time_s": round(time.time() - t_start, 1),
                                "cpu_time_s": round(time.process_time() - c_start, 1),
                                "threads": torch.get_num_threads(), "host": platform.node(),
                                "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    meta["fi_models"] = {v: {"dir": p.parent.name, "config": _fi_summary(p)}
                         for v, p in checkpoints.items()}
    write_json(meta_path, meta)
    log(f"[twitter1] {ran} run(s), {cached} cached; summary in {results_dir}")
    return records


def _fi_summary(checkpoint: Path) -> dict[str, Any]:
    results = checkpoint.parent / "results.json"
    if not results.is_file():
        return {}
    r = json.loads(results.read_text())
    c = r.get("config", {})
    return {"loss": c.get("loss"), "attention": c.get("attention"), "fusion": c.get("fusion"),
            "epochs": c.get("epochs"), "chosen_epoch": r.get("chosen_epoch"),
            "images": r.get("data", {}).get("images"), "split": r.get("data", {}).get("split"),
            "val_mAP8": (r.get("val_metrics") or {}).get("mAP8")}


def _run_row(row: Row, models, features, labels, train_idx, held, settings, fold, rel_all, config):
    rec: dict[str, Any] = {"chosen_epoch": None}
    y_held = labels[held]
    acc: dict[str, float] = {}
    if row.source == "chance":
        g = torch.Generator().manual_seed(1000 + fold)
        emb = torch.nn.functional.normalize(torch.randn(len(held), 512, generator=g), dim=1)
        metrics = _retrieval(emb, y_held, level="polarity")
        majority = int(torch.bincount(labels[train_idx], minlength=2).argmax())
        acc["majority"] = float((y_held == majority).double().mean())
    else:
        if row.source == "imagenet":
            net = _untrained_head(config)
        else:
            net = models[row.source][0]
        fi_config = models[row.source][1] if row.source in models else config
        if row.trained:
            net, info = fine_tune(net, fi_config, features, labels, train_idx, level="polarity",
                                  settings=settings)
            rec.update(info)
        metrics, acc, emb = evaluate_fold(net, features, labels, held, level="polarity")
        if row.source == "imagenet" and not row.trained:
            pred = linear_probe(_gap(features, train_idx), labels[train_idx], _gap(features, held))
            acc["linear_probe"] = float((pred == y_held).double().mean())
    rec["metrics"] = {k: round(float(v), 6) for k, v in metrics.items()}
    rec["accuracy"] = {k: round(v, 6) for k, v in acc.items()}
    if fold == 0 and row.name in FIGURE_ROWS:
        picks = _figure_queries(labels, held, FIGURE_QUERIES_PER_POLARITY)
        top = _top_k(emb, 5)
        rec["top5"] = [{"query": rel_all[held[j]], "label": POLARITIES[int(labels[held[j]])],
                        "results": [[rel_all[held[int(t)]], POLARITIES[int(labels[held[int(t)]])]]
                                    for t in top[j]]} for j in picks]
    return rec


# --------------------------------------------------------------------------------------------------
# reading the results back
# --------------------------------------------------------------------------------------------------
def load_runs(results_dir: str | os.PathLike = DEFAULT_RESULTS, *,
              settings: FineTune | None = FineTune()) -> list[dict]:
    """The run records in ``results_dir/runs`` of the current rows; trained rows only with the
    fine-tuning `settings` (default: :class:`FineTune`'s; None: any)."""
    folder = Path(results_dir) / "runs"
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    wanted = asdict(settings) if settings is not None else None
    trained = {r.name for r in ROWS if r.trained}
    return [r for r in records
            if r.get("row") in ROW_NAMES and r.get("runner_version") == RUNNER_VERSION
            and (r["row"] not in trained or wanted is None or r.get("fine_tune") == wanted)]


def _stats(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


def summarise_runs(records: Sequence[dict]) -> list[dict]:
    """One row per (subset, row), in :data:`ROWS` order: mean and std over folds of every metric and
    accuracy, the folds, the chosen epochs."""
    from apse.metrics import POLARITY_METRIC_NAMES

    out = []
    subsets = sorted({r["subset"] for r in records}, key=lambda s: (s != "5", s))
    for subset in subsets:
        for row in ROWS:
            runs = sorted((r for r in records if r["subset"] == subset and r["row"] == row.name),
                          key=lambda r: r["fold"])
            if not runs:
                continue
            item: dict[str, Any] = {"subset": subset, "subset_label": runs[0]["subset_label"],
                                    "row": row.name, "label": row.label, "group": row.group,
                                    "folds": [r["fold"] for r in runs], "mean": {}, "std": {},
                                    "chosen_epochs": [r.get("chosen_epoch") for r in runs]}
            for m in POLARITY_METRIC_NAMES:
                item["mean"][m], item["std"][m] = _stats([r["metrics"][m] for r in runs])
            for a in sorted({k for r in runs for k in r.get("accuracy", {})}):
                vals = [r["accuracy"][a] for r in runs if a in r.get("accuracy", {})]
                item["mean"][f"acc:{a}"], item["std"][f"acc:{a}"] = _stats(vals)
            out.append(item)
    return out


def write_summary(results_dir: str | os.PathLike, records: Sequence[dict]) -> None:
    """``summary.csv`` (machine-readable), ``summary.md`` (for people) and ``retrievals.json``."""
    import csv

    from apse.metrics import POLARITY_METRIC_NAMES

    results_dir = Path(results_dir)
    rows = summarise_runs(records)
    results_dir.mkdir(parents=True, exist_ok=True)
    acc_keys = sorted({k for r in rows for k in r["mean"] if k.startswith("acc:")})
    columns = (*POLARITY_METRIC_NAMES, *acc_keys)
    with open(results_dir / "summary.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["subset", "subset_label", "row", "label", "group", "folds"]
                   + [f"{m}_{s}" for m in columns for s in ("mean", "std")])
        for r in rows:
            w.writerow([r["subset"], r["subset_label"], r["row"], r["label"], r["group"],
                        " ".join(map(str, r["folds"]))]
                       + [f"{r[s][m]:.6f}" if m in r[s] else "" for m in columns
                          for s in ("mean", "std")])
    lines = ["# Beyond FI: polarity retrieval on Twitter I", "",
             f"- Metrics at the {POLARITY_NOTE}.",
             "- Protocol: 5 stratified folds; for each held-out fold, every held-out image queries "
             "the other held-out images (leave-one-out); mean ± std over the folds. Trained rows "
             "train the head on the other 4 folds (frozen ImageNet EfficientNet-Lite0, cached "
             "224 px features), the epoch chosen on 10 % of them.",
             "- Labels: results on this folder are \"Twitter I (1,093-image subset)\" and "
             "\"Twitter I-5 (706-image subset)\"; they are not the literature's Twitter I numbers.",
             "- Produced by `python -m apse.transfer twitter1` (apse/transfer.py).", ""]
    for subset in sorted({r["subset"] for r in rows}, key=lambda s: (s != "5", s)):
        part = [r for r in rows if r["subset"] == subset]
        lines += [f"## {part[0]['subset_label']}, polarity level", "",
                  "| row | " + " | ".join(POLARITY_METRIC_NAMES) + " | accuracy |",
                  "|---|" + "---|" * (len(POLARITY_METRIC_NAMES) + 1)]
        for r in part:
            accs = ", ".join(f"{k[4:]} {r['mean'][k]:.3f}" for k in r["mean"]
                             if k.startswith("acc:"))
            lines.append(f"| {r['label']} | " + " | ".join(
                f"{r['mean'][m]:.3f} ± {r['std'][m]:.3f}" for m in POLARITY_METRIC_NAMES)
                + f" | {accs or '—'} |")
        lines.append("")
    (results_dir / "summary.md").write_text("\n".join(lines) + "\n")
    figure = [{"row": r["row"], "label": r["label"], "subset": r["subset"],
               "subset_label": r["subset_label"], "fold": r["fold"], "queries": r["top5"]}
              for r in records if r.get("top5")]
    figure.sort(key=lambda e: (e["subset"] != "5", FIGURE_ROWS.index(e["row"])
                               if e["row"] in FIGURE_ROWS else 99))
    note = ("top-5 leave-one-out retrievals of a few held-out queries (fold 0); paths are relative "
            "to the Twitter I folder")
    write_json(results_dir / "retrievals.json", {"note": note, "rows": figure})


def summary_table(results_dir: str | os.PathLike = DEFAULT_RESULTS, subset: str = "5", *,
                  what: str = "retrieval", digits: int = 3, settings: FineTune | None = FineTune()):
    """A pandas DataFrame of one subset's summary, "mean ± std" over folds, rows labelled.

    ``what="retrieval"``: the seven polarity-level metrics; ``"accuracy"``: the polarity
    classifiers' accuracies (and NN, the leave-one-out 1-NN accuracy of the embedding)."""
    import pandas as pd

    from apse.metrics import POLARITY_METRIC_NAMES

    rows = [r for r in summarise_runs(load_runs(results_dir, settings=settings))
            if r["subset"] == subset]
    if not rows:
        raise FileNotFoundError(f"no Twitter I runs for subset {subset!r} in {results_dir}; run "
                                "python -m apse.transfer twitter1")
    fmt = lambda r, k: (f"{r['mean'][k]:.{digits}f} ± {r['std'][k]:.{digits}f}"  # noqa: E731
                        if k in r["mean"] else "")
    if what == "retrieval":
        data = {m: [fmt(r, m) for r in rows] for m in POLARITY_METRIC_NAMES}
    elif what == "accuracy":
        keys = [k for k in ACCURACY_LABELS if any(f"acc:{k}" in r["mean"] for r in rows)]
        data = {"1-NN (= NN)": [fmt(r, "NN") for r in rows]}
        data.update({ACCURACY_LABELS[k]: [fmt(r, f"acc:{k}") for r in rows] for k in keys})
    else:
        raise ValueError(f"what must be 'retrieval' or 'accuracy', got {what!r}")
    index = pd.MultiIndex.from_tuples([(r["group"], r["label"]) for r in rows], names=["", "row"])
    return pd.DataFrame(data, index=index)


def load_meta(results_dir: str | os.PathLike = DEFAULT_RESULTS) -> dict[str, Any]:
    """``meta.json``: the invocations (command, runs, wall and CPU time) and the FI models used."""
    path = Path(results_dir) / "meta.json"
    return json.loads(path.read_text()) if path.is_file() else {"invocations": [], "fi_models": {}}


def paired_difference(records: Sequence[dict], subset: str, a: str, b: str,
                      metric: str = "mAP2") -> dict[str, float] | None:
    """Row `a` minus row `b` fold by fold on one subset: ``{"mean", "se", "wins", "n_folds"}``
    (standard error of the mean difference over folds; wins = folds where `a` is better), or None
    when the two rows share no fold. ANMRR is lower-is-better: a win is a smaller value."""
    from apse.metrics import LOWER_IS_BETTER

    def of(row):
        return {r["fold"]: {**r["metrics"], **{f"acc:{k}": v for k, v in r["accuracy"].items()}}
                for r in records if r["subset"] == subset and r["row"] == row}

    ra, rb = of(a), of(b)
    folds = sorted(f for f in set(ra) & set(rb) if metric in ra[f] and metric in rb[f])
    if not folds:
        return None
    d = [ra[f][metric] - rb[f][metric] for f in folds]
    mean, std = _stats(d)
    better = (lambda x: x < 0) if metric in LOWER_IS_BETTER else (lambda x: x > 0)
    return {"mean": mean, "se": std / math.sqrt(len(d)), "wins": sum(better(x) for x in d),
            "n_folds": len(d)}


def load_retrievals(results_dir: str | os.PathLike = DEFAULT_RESULTS) -> list[dict]:
    """The figure's entries from ``retrievals.json``: ``[{"row", "label", "queries": [...]}]``."""
    path = Path(results_dir) / "retrievals.json"
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def plot_polarity_retrievals(entries: Sequence[dict], data_root: str | os.PathLike, *,
                             queries: int | None = None, thumb: int = 96, size: float = 1.1):
    """Each query of each entry with its top-5: frames green = same polarity as the query, red =
    opposite. Rows: query after query, one row per entry (model). Images are read from `data_root`
    and shrunk to `thumb` px."""
    import matplotlib.pyplot as plt
    from PIL import Image

    from apse.data import load_rgb

    n_q = min(len(e["queries"]) for e in entries) if queries is None else queries
    cells = [(e["label"], e["queries"][q]) for q in range(n_q) for e in entries]
    k = max(len(c[1]["results"]) for c in cells)
    fig, axes = plt.subplots(len(cells), k + 1, squeeze=False,
                             figsize=(size * (k + 1) + 1.6, size * len(cells) * 1.12))
    cache: dict[str, Any] = {}

    def image(rel: str):
        if rel not in cache:
            im = load_rgb(Path(data_root) / rel)
            im.thumbnail((thumb, thumb), Image.BILINEAR)
            side = min(im.size)  # centre square: every cell the same size
            left, top = (im.size[0] - side) // 2, (im.size[1] - side) // 2
            cache[rel] = im.crop((left, top, left + side, top + side))
        return cache[rel]

    colours = {True: "#2ca02c", False: "#d62728"}
    for i, (label, q) in enumerate(cells):
        for j in range(k + 1):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            rel, pol = (q["query"], q["label"]) if j == 0 else q["results"][j - 1]
            ax.imshow(image(rel))
            colour = "black" if j == 0 else colours[pol == q["label"]]
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_edgecolor(colour)
                spine.set_linewidth(1.5 if j == 0 else 3)
            if j == 0:
                ax.set_ylabel(label.replace(", ", ",\n", 1), fontsize=6, rotation=0, ha="right",
                              va="center", labelpad=4)
                ax.set_title(f"query: {pol}", fontsize=7)
            else:
                ax.set_title(f"{j}. {pol}", fontsize=7)
    handles = [plt.Line2D([], [], color=colours[same], lw=3, label=t)
               for t, same in (("same polarity", True), ("opposite polarity", False))]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m apse.transfer",
                                description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--fi-data", default=None,
                        help="FI folder (default: apse.data.locate_dataset())")
    common.add_argument("--models-dir", default=None,
                        help="where the FI models live (default: ~/.cache/apse/fi-models)")
    common.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    q = sub.add_parser("prepare", parents=[common],
                       help="train the FI models when missing and cache Twitter I's features")
    tw_help = "Twitter I folder (default: ../shared/data/twitter1)"
    q.add_argument("--data", default=None, help=tw_help)
    q = sub.add_parser("twitter1", parents=[common],
                       help="the Twitter I experiment -> results/twitter1")
    q.add_argument("--data", default=None, help=tw_help)
    q.add_argument("--subsets", nargs="+", default=["5", "all"], choices=["5", "4", "all"])
    q.add_argument("--rows", nargs="+", default=None, choices=ROW_NAMES)
    q.add_argument("--folds", type=int, default=5)
    q.add_argument("--force", action="store_true",
                   help="re-run runs found in results/twitter1/runs")
    q.add_argument("--results", default=str(DEFAULT_RESULTS))
    q = sub.add_parser("protocol", parents=[common],
                       help="the small-dataset protocol for any dataset and checkpoint")
    q.add_argument("--data", required=True, help="labels CSV, or a folder of class folders")
    q.add_argument("--checkpoint", required=True, help="an FI-trained model.pt")
    q.add_argument("--level", choices=["polarity", "emotion"], default=None,
                   help="label level (default: the dataset's own)")
    q.add_argument("--zero-shot", action="store_true",
                   help="evaluate the model as it is, no fine-tuning")
    q.add_argument("--folds", type=int, default=5)
    q.add_argument("--epochs", type=int, default=FineTune.epochs)
    q.add_argument("--json", default=None, help="write the per-fold results and summary here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    command = "python -m apse.transfer " + " ".join(sys.argv[1:] if argv is None else list(argv))
    if args.command == "prepare":
        from apse.polarity_data import load_twitter1
        from apse.training import load_model

        paths = {v: fi_checkpoint(v, fi_data=args.fi_data, models_dir=args.models_dir)
                 for v in FI_VARIANTS}
        model, config = load_model(paths["apse-gep"])
        dataset_features(load_twitter1(args.data, "all"), model, config)
        return 0
    if args.command == "twitter1":
        run_twitter1(subsets=args.subsets, folds=args.folds, rows=args.rows, force=args.force,
                     results_dir=args.results, data=args.data, fi_data=args.fi_data,
                     models_dir=args.models_dir, command=command)
        return 0
    from apse.polarity_data import open_labelled

    dataset = open_labelled(args.data, level=args.level)
    settings = None if args.zero_shot else FineTune(epochs=args.epochs)
    result = small_dataset_protocol(dataset, args.checkpoint, level=args.level, folds=args.folds,
                                    settings=settings)
    print("mean over folds: " + "  ".join(f"{k} {m:.4f}±{sd:.4f}"
                                          for k, (m, sd) in result["summary"].items()))
    if args.json:
        write_json(Path(args.json), {"command": command, **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
