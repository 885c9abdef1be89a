"""The papers' two evaluation protocols, and k-fold summaries (spec, "Training and evaluation protocol").

* **Split** (FI): every test image queries the *training* images; :func:`evaluate_split`.
* **Leave-one-out** (IAPSa, ArtPhoto, Abstract): every image queries all the others;
  :func:`leave_one_out`.
* **k-fold**: :func:`run_folds` calls a function once per fold and :func:`summarise` reduces the
  per-fold metric dicts to mean and standard deviation (:func:`mean_std`, also what the experiments'
  tables report).

Retrieval is by Euclidean distance between the l2-normalised embeddings (:mod:`apse.metrics`).
Everything here works for image datasets (items ``(image tensor, label)``) and for cached-feature
datasets (items ``(dict stage -> feature map, label)``, embedded with ``model.forward_features``).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from apse.data.loader import GatheredBatches
from apse.emotions import polarity_labels
from apse.metrics import LOWER_IS_BETTER, METRIC_NAMES, evaluate_embeddings
from apse.progress import progress_bar

__all__ = ["embed_dataset", "predict", "attention_report", "evaluate_split", "leave_one_out",
           "run_folds", "mean_std", "summarise", "format_metrics", "METRIC_NAMES", "LOWER_IS_BETTER"]


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    # DistributedDataParallel / DataParallel keep the real network in `.module`.
    return getattr(model, "module", model)


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """Labels of a dataset without loading its images (uses ``.targets`` / ``.labels`` / Subsets)."""
    if isinstance(dataset, torch.utils.data.Subset):
        parent = dataset_labels(dataset.dataset)
        return parent[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    for attr in ("targets", "labels"):
        values = getattr(dataset, attr, None)
        if values is not None:
            return torch.as_tensor(values if torch.is_tensor(values) else list(values), dtype=torch.long)
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


@torch.no_grad()
def embed_dataset(
    model: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    *,
    num_workers: int = 0,
    amp: bool = False,
    channels_last: bool = False,
    progress: bool = True,
    desc: str = "embed",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed every item of ``dataset``; returns ``(embeddings (N, D) float32 on CPU, labels (N,))``.

    Items are ``(image, label)`` (embedded with ``model(images).embedding``) or ``(features: dict
    stage -> tensor, label)`` (embedded with ``model.forward_features``). The model is put in eval
    mode for the pass and its previous mode restored afterwards. ``device`` defaults to the model's.
    """
    net = _unwrap(model)
    device = torch.device(device) if device is not None else _model_device(net)
    if len(dataset) == 0:
        raise ValueError("cannot embed an empty dataset; check the split fractions and the data folder")
    use_amp = amp and device.type == "cuda"
    autocast = torch.autocast(device_type=device.type, dtype=_amp_dtype(device)) if use_amp else None
    embeddings, labels = [], []
    for out, target in _forward(net, dataset, batch_size, num_workers, device, autocast=autocast,
                                channels_last=channels_last, progress=progress, desc=desc):
        emb = out.embedding if hasattr(out, "embedding") else out
        embeddings.append(emb.float().cpu())
        labels.append(target)
    return torch.cat(embeddings), torch.cat(labels)


def _forward(net: torch.nn.Module, dataset: Dataset, batch_size: int, num_workers: int, device: torch.device, *,
             autocast: Any = None, channels_last: bool = False, progress: bool = False, desc: str = ""):
    """Yield ``(model output, labels on CPU)`` for the batches of ``dataset`` in order, with ``net`` in
    eval mode (its mode is restored afterwards). Image batches go through ``net(images)``, cached
    feature batches (dicts stage -> map) through ``net.forward_features``."""
    autocast = autocast if autocast is not None else contextlib.nullcontext()
    loader = _batches(dataset, batch_size, num_workers, device)
    was_training = net.training
    net.eval()
    # a bar on a terminal, else one line when done (apse.progress); nothing if not progress
    bar = progress_bar(total=len(dataset), desc=desc, unit="img", leave=False, enabled=progress)
    try:
        for inputs, target in loader:
            with autocast:
                if isinstance(inputs, dict):
                    inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
                else:
                    inputs = inputs.to(device, non_blocking=True)
                    if channels_last and inputs.dim() == 4:
                        inputs = inputs.contiguous(memory_format=torch.channels_last)
                out = net(inputs)  # APSENet takes images and dicts of cached maps alike
            bar.update(len(target))
            yield out, torch.as_tensor(target, dtype=torch.long).cpu()
    finally:
        bar.close()
        net.train(was_training)


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: Dataset, batch_size: int = 64, *,
            num_workers: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run ``model`` over ``dataset`` (images or cached maps alike) in eval mode and return
    ``({output field: (N, ...) tensor on CPU}, labels (N,))``: every non-None field of the model's
    output (embedding, confidences, attention maps), concatenated over the batches in order."""
    net = _unwrap(model)
    parts: dict[str, list[torch.Tensor]] = {}
    labels = []
    for out, target in _forward(net, dataset, batch_size, num_workers, _model_device(net)):
        for name, value in vars(out).items():
            if torch.is_tensor(value):
                parts.setdefault(name, []).append(value.float().cpu())
        labels.append(target)
    return {name: torch.cat(values) for name, values in parts.items()}, torch.cat(labels)


def attention_report(model: torch.nn.Module, dataset: Dataset, batch_size: int = 64) -> dict[str, float | None]:
    """How well the attention heads classify ``dataset``: accuracy of the argmax confidence, and the
    mean of the top confidence (1/K for a head that never left uniform, 1 for a fully confident one).

    Keys ``polarity_accuracy``, ``polarity_top_confidence`` (the low head, when it is supervised by
    polarity), ``emotion_accuracy``, ``emotion_top_confidence`` (the high head); None where the model
    has no such head. WEP weights and GEP's adaptive beta are computed from these confidences.
    """
    outputs, y = predict(model, dataset, batch_size)
    report: dict[str, float | None] = {}
    for name, truth in (("polarity", polarity_labels(y)), ("emotion", y)):
        c = outputs.get(f"{name}_confidence")
        report[f"{name}_accuracy"] = None if c is None else (c.argmax(1) == truth).float().mean().item()
        report[f"{name}_top_confidence"] = None if c is None else c.max(1).values.mean().item()
    return report


def _batches(dataset: Dataset, batch_size: int, num_workers: int, device: torch.device):
    """Batches of ``dataset`` in order. Cached features (a FeatureDataset, or a Subset of one) are
    gathered with ``get_batch``: much faster than collating thousands of per-item dicts."""
    base, indices = dataset, None
    while isinstance(base, torch.utils.data.Subset):
        sub = [int(i) for i in base.indices]
        indices = sub if indices is None else [sub[i] for i in indices]
        base = base.dataset
    if hasattr(base, "get_batch") and not getattr(base, "training", False):
        indices = list(range(len(base))) if indices is None else indices
        chunks = [range(s, min(s + batch_size, len(indices))) for s in range(0, len(indices), batch_size)]
        return GatheredBatches(base, indices, chunks)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=device.type == "cuda")


def _amp_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def evaluate_split(model: torch.nn.Module, train_set: Dataset, test_set: Dataset, *, batch_size: int = 64,
                   device: str | torch.device | None = None, f1_k: int = 32, progress: bool = True,
                   gallery: tuple[torch.Tensor, torch.Tensor] | None = None, level: str = "emotion",
                   **embed_kw: Any) -> dict[str, float]:
    """FI protocol: every image of ``test_set`` queries the images of ``train_set``.

    ``level``: what the labels are (:data:`apse.emotions.LEVELS`), as in
    :func:`apse.metrics.retrieval_metrics` (polarity labels: the polarity level's metrics).

    ``gallery``: ``(embeddings, labels)`` of ``train_set`` under this very model, when the caller
    has them already (:func:`embed_dataset`'s output; the trainer keeps its chosen epoch's from the
    validation that chose it): they are used as they are, not computed again.
    Returns the eight metrics of :func:`apse.metrics.retrieval_metrics` (python floats).
    """
    return _protocol(model, test_set, train_set, batch_size, device, f1_k, progress, embed_kw, gallery, level)


def leave_one_out(model: torch.nn.Module, dataset: Dataset, *, batch_size: int = 64,
                  device: str | torch.device | None = None, f1_k: int = 32, progress: bool = True,
                  level: str = "emotion", **embed_kw: Any) -> dict[str, float]:
    """Small-dataset protocol: every image of ``dataset`` queries all the others (itself excluded);
    ``level`` as in :func:`evaluate_split`."""
    return _protocol(model, dataset, None, batch_size, device, f1_k, progress, embed_kw, level=level)


def _protocol(model: torch.nn.Module, queries: Dataset, gallery: Dataset | None, batch_size: int,
              device: str | torch.device | None, f1_k: int, progress: bool,
              embed_kw: dict[str, Any],
              embedded: tuple[torch.Tensor, torch.Tensor] | None = None,
              level: str = "emotion") -> dict[str, float]:
    """Both protocols: embed the gallery (when there is one and it is not ``embedded`` already) and
    the queries, then :func:`apse.metrics.evaluate_embeddings`; without a gallery every query
    searches the others."""
    if gallery is None:
        emb, labels = embed_dataset(model, queries, batch_size, device, progress=progress, **embed_kw)
        return evaluate_embeddings(emb, labels, None, None, f1_k=f1_k, level=level)
    if embedded is not None:
        gallery_emb, gallery_labels = embedded
        if len(gallery_emb) != len(gallery) or len(gallery_labels) != len(gallery):
            raise ValueError(f"{len(gallery_emb)} gallery embeddings for a gallery of {len(gallery)} items")
    else:
        gallery_emb, gallery_labels = embed_dataset(model, gallery, batch_size, device, progress=progress,
                                                    desc="embed gallery", **embed_kw)
    query_emb, query_labels = embed_dataset(model, queries, batch_size, device, progress=progress,
                                            desc="embed queries", **embed_kw)
    return evaluate_embeddings(query_emb, query_labels, gallery_emb, gallery_labels, exclude_self=False,
                               f1_k=f1_k, level=level)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``, the spread expected between repetitions; 0 for
    a single value), in plain floats: the one definition of every "mean ± std" of the package."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def summarise(results: Sequence[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each metric over folds: ``{metric: (mean, std)}``.

    The standard deviation is the sample one (``ddof=1``; 0.0 for a single fold), the spread one
    would expect between repetitions. Metrics missing from some dicts are summarised over the
    dicts that have them.
    """
    results = list(results)
    if not results:
        raise ValueError("summarise needs at least one metrics dict")
    names = [m for m in METRIC_NAMES if any(m in r for r in results)]
    names += sorted({k for r in results for k in r} - set(names))
    return {name: mean_std([float(r[name]) for r in results if name in r]) for name in names}


def run_folds(fn: Callable[[int], dict[str, float]], folds: int | Iterable[int]) -> dict[str, Any]:
    """Run ``fn(fold)`` for each fold and summarise.

    Args:
        fn: called with the fold index, returns that fold's metric dict (e.g. train on the other
            folds, then :func:`leave_one_out` on the held-out one).
        folds: number of folds k (runs 0..k-1) or an iterable of fold indices.

    Returns:
        ``{"folds": [metrics of each fold], "summary": {metric: (mean, std)}}``.
    """
    indices = range(folds) if isinstance(folds, int) else list(folds)
    per_fold = [dict(fn(i)) for i in indices]
    return {"folds": per_fold, "summary": summarise(per_fold)}


def format_metrics(metrics: dict[str, Any], digits: int = 4) -> str:
    """A one-line ``mAP8 0.1234  mAP2 ...`` rendering (values or ``(mean, std)`` pairs)."""
    parts = []
    for name in list(METRIC_NAMES) + sorted(set(metrics) - set(METRIC_NAMES)):
        if name not in metrics:
            continue
        value = metrics[name]
        if isinstance(value, (tuple, list)):
            parts.append(f"{name} {value[0]:.{digits}f}±{value[1]:.{digits}f}")
        elif isinstance(value, float) and not math.isnan(value):
            parts.append(f"{name} {value:.{digits}f}")
        else:
            parts.append(f"{name} {value}")
    return "  ".join(parts)
