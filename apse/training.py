"""Training APSE: the papers' protocol end to end (spec, "Training and evaluation protocol").

:func:`train` (or :class:`Trainer`) takes a :class:`~apse.config.TrainConfig`, a dataset folder (one
sub-folder per emotion) and an output folder, and

1. splits the images (stratified 80/5/15 by default), or takes one fold of a stratified k-fold protocol
   (``folds``/``fold``: the held-out fold is the test set, and the train/val shares of ``split`` carve a
   stratified validation set out of the training folds, never out of the held-out one);
2. builds :class:`~apse.model.APSENet` and the loss of :func:`~apse.losses.build_loss`, plus the attention
   loss weighted by ``lam`` (``L = lam L_emb + (1 - lam) L_att``, ICCV Eq. 10; see :mod:`apse.config`);
3. trains with SGD + StepLR on balanced batches of 8 emotions x 4 images
   (:class:`~apse.data.BalancedBatchSampler`), either on images (random crops and flips) or, with
   ``cache_features=True``, on feature maps of a frozen backbone extracted once and cached on disk;
4. validates every ``eval_every`` epochs (validation images query the *training* gallery) and keeps the
   epoch with the best validation ``select_on`` metric; the test split plays no part in that choice;
5. evaluates the chosen model on the test split exactly once, at the end (every test image queries the
   training gallery; or, ``protocol="loo"``, the default for k-fold, every test image queries all the
   other test images);
6. writes ``checkpoint.pt`` atomically after every epoch (model, optimiser, scheduler, RNG states,
   history, config, best model so far) so that ``resume=True`` continues a killed run to exactly the
   result of an uninterrupted one, and at the end ``model.pt`` (chosen model + config) and
   ``results.json`` (config, history, chosen epoch, test metrics, wall time, versions): the
   :class:`~apse.provenance.RunRecord` that :meth:`Trainer.fit` returns, and an untrained run's
   (:meth:`Trainer.evaluate_untrained`) too.

Everything written is plain tensors and Python containers: ``torch.load(path, weights_only=True)``
reads it, no pickled code. :func:`load_model` turns ``model.pt`` or ``checkpoint.pt`` back into a model.
This module is the loop; its parts have their own: :mod:`apse.training_data` (split and batches),
:mod:`apse.checkpoints` (model files), :mod:`apse.distributed`, :mod:`apse.provenance` (the record).
It is the only training loop of the package: the transfer experiments' fine-tuning of an FI model's
head on another data set's cached maps (:func:`apse.transfer.fine_tune`) is a :class:`Trainer` run
too, given the model, the prepared data (any label level), the modules that stay frozen, and the
starting model as a candidate epoch.

Reproducibility: every epoch starts by seeding ``torch``, ``numpy`` and ``random`` from (seed, epoch,
rank) and the sampler from (seed, epoch), so an epoch's batches, augmentations and dropout do not depend
on what ran before it; with the saved model/optimiser/scheduler states, a resumed run retraces the
uninterrupted one step for step (bit for bit on CPU; on CUDA set ``deterministic=True`` for that).

Distributed: launched with ``torchrun --nproc_per_node N -m apse train ...`` (``WORLD_SIZE > 1``) the
trainer joins a process group (NCCL on CUDA, Gloo on CPU), wraps the model in DistributedDataParallel and
gives each rank a disjoint share of every epoch's balanced batches; only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import Dataset, Subset
from tqdm.auto import tqdm

from apse.checkpoints import (CHECKPOINT_FORMAT, CHECKPOINT_NAME, MODEL_FORMAT, MODEL_NAME, RESULTS_NAME, build_model,
                              check_resumable, cpu_state, load_model)
from apse.config import ConfigError, TrainConfig, load_config
from apse.distributed import device_description, init_distributed, resolve_device
from apse.data import FeatureDataset, GatheredBatches
from apse.evaluation import embed_dataset, evaluate_split, leave_one_out
from apse.io import atomic_save, json_safe, write_json
from apse.losses import APSEObjective, build_configured_loss, constructor_keywords, loss_entry
from apse.progress import progress_bar
from apse.metrics import higher_is_better
from apse.optim import build_optimizer
from apse.provenance import (RunRecord, dataset_fingerprint, environment, portable_config, portable_path,
                             portable_source)
from apse.rng import derived_seed, rng_states, seed_everything, set_rng_states
from apse.training_data import RunData, cached_features, prepare_data, with_transform

# load_model, build_model, build_optimizer, the file names and the path helpers are re-exported: they
# are what a user of a training run needs next to train() (their homes: apse.checkpoints, apse.optim,
# apse.provenance).
__all__ = ["Trainer", "train", "TrainStep", "build_optimizer", "TrainingDiverged", "load_model", "build_model",
           "resolve_device", "portable_path", "portable_config", "dataset_fingerprint", "CHECKPOINT_NAME",
           "MODEL_NAME", "RESULTS_NAME"]


class TrainStep(nn.Module):
    """Model + objective: ``forward(inputs, labels) -> (total, L_emb, L_att)``.

    ``inputs`` are images, or a dict stage -> feature map in cached-feature mode. The objective is
    :class:`apse.losses.APSEObjective` (``lam L_emb + (1 - lam) L_att``, ICCV Eq. 10, when the
    attention loss is used). One module, so that DistributedDataParallel also syncs a loss's weights.
    """

    def __init__(self, model: nn.Module, objective: APSEObjective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, inputs, labels: torch.Tensor):
        out = self.model(inputs)  # images, or a dict stage -> cached map: APSENet takes both
        # Losses in float32 even under autocast: logs/exps of similarities are precision-sensitive.
        f32 = lambda t: None if t is None else t.float()  # noqa: E731
        return self.objective(out.embedding.float(), labels, f32(out.polarity_confidence),
                              f32(out.emotion_confidence),
                              [(level, conf.float()) for level, conf in out.attention_terms()])


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


def _run_field(name: str) -> property:
    """A read-only Trainer attribute that is field ``name`` of its prepared data (:class:`RunData`),
    there once :meth:`Trainer.setup` has built it."""
    def get(self: "Trainer"):
        if self.run is None:
            raise AttributeError(f"Trainer.{name} is there after setup() (the prepared data's {name})")
        return getattr(self.run, name)
    return property(get, doc=f"``self.run.{name}`` (:class:`~apse.training_data.RunData`).")


class Trainer:
    """One training run; see the module docstring. Most users call :func:`train`.

    Args:
        config: the run's :class:`TrainConfig`.
        data: dataset folder (one sub-folder per emotion), ``None`` (``$APSE_DATA`` / the FI subset via
            :func:`apse.data.locate_dataset`), or an :class:`apse.data.EmotionImageFolder`.
        out_dir: where checkpoint.pt, model.pt and results.json go (only rank 0 writes).
        resume: continue from ``out_dir/checkpoint.pt``.
        overwrite: allow starting afresh in a folder that already holds a run.
        progress: report progress: one line per epoch (to ``log``), plus tqdm bars when standard
            error is a terminal, or one line per phase (feature extraction) when it is not, e.g. a
            log file (:mod:`apse.progress`). False: silent.
        log: where per-epoch lines go (default ``tqdm.write``).
        model: train this network instead of building the config's (e.g. an FI model's head on another
            data set's features); the config's model section should describe it.
        run_data: train on this prepared data (:class:`~apse.training_data.RunData`, e.g.
            :func:`~apse.training_data.feature_run_data` over cached features) instead of opening
            ``data``; its ``level`` (emotion or polarity labels) reaches the losses and the metrics.
        frozen: modules of the model that do not train (e.g. an emotion head that has no labels in
            polarity-only data).
        start_candidate: the model as it starts (epoch 0) is validated and chosen unless an epoch
            beats it (fine-tuning a trained model: training may not help it).

    After :meth:`setup`, ``trainer.run`` is the run's prepared data (:class:`~apse.training_data.RunData`);
    the fields below read it, as the book and the experiments do (``trainer.split``, ``trainer.test_set``).
    """

    data_root, samples, split = _run_field("data_root"), _run_field("samples"), _run_field("split")
    train_set, gallery_set = _run_field("train_set"), _run_field("gallery_set")
    val_set, test_set = _run_field("val_set"), _run_field("test_set")
    train_labels, sources = _run_field("train_labels"), _run_field("sources")
    batch_sampler, loader_generator = _run_field("batch_sampler"), _run_field("loader_generator")
    train_loader = _run_field("train_loader")

    def __init__(self, config: TrainConfig, data: Any, out_dir: str | os.PathLike | None, *, resume: bool = False,
                 overwrite: bool = False, progress: bool = True, log: Callable[[str], None] | None = None,
                 model: nn.Module | None = None, run_data: RunData | None = None, frozen: Sequence[nn.Module] = (),
                 start_candidate: bool = False):
        self.config = config.validate()
        self.data = data
        self._given_model, self._given_run, self._frozen = model, run_data, tuple(frozen)
        self.start_candidate = start_candidate
        self.start_metrics: dict[str, float] | None = None  # epoch 0's validation (start_candidate)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.resume, self.overwrite, self.progress = resume, overwrite, progress
        self.dist = init_distributed(config.device)
        self._log = log or (lambda msg: tqdm.write(msg))
        self.device = resolve_device(config.device, self.dist.local_rank)
        self.amp = config.amp if config.amp is not None else self.device.type == "cuda"
        if self.amp and self.device.type != "cuda":
            self.amp = False  # autocast on CPU is slower than float32 for these convs; say so in results
        self.channels_last = (config.channels_last if config.channels_last is not None
                              else self.device.type == "cuda") and not config.cache_features
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.start_epoch = 0
        self.elapsed_before = 0.0
        self.run: RunData | None = None                   # the prepared data, built by setup()
        self.probe_result: dict[str, Any] | None = None   # the probe stage's record (probe_epochs)
        # (embeddings, labels) of the gallery at the last validation, and at the chosen epoch's: the
        # test reuses the latter (same weights, same images: the same numbers, one pass fewer)
        self._val_gallery: tuple[torch.Tensor, torch.Tensor] | None = None
        self._best_gallery: tuple[torch.Tensor, torch.Tensor] | None = None
        self._setup_done = False
        self._t_init = time.time()  # wall time counts setup too (feature extraction included)

    @property
    def level(self) -> str:
        """What the labels are (:data:`apse.emotions.LEVELS`): the prepared data's level; emotions
        for a data set the trainer opens itself."""
        run = self.run if self.run is not None else self._given_run
        return run.level if run is not None else "emotion"

    def log(self, msg: str) -> None:
        if self.dist.is_main and self.progress:
            self._log(msg)

    # ------------------------------------------------------------------ setup
    def setup(self) -> "Trainer":
        """Build data, model, loss, optimiser, scheduler (and restore a checkpoint when resuming)."""
        if self._setup_done:
            return self
        cfg = self.config
        if self.out_dir is not None and self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            existing = [n for n in (CHECKPOINT_NAME, RESULTS_NAME) if (self.out_dir / n).exists()]
            if existing and not self.resume and not self.overwrite:
                raise FileExistsError(f"{self.out_dir} already holds a run ({', '.join(existing)}); "
                                      "pass --resume to continue it, --overwrite to start again, or another --out")
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        seed_everything(cfg.seed)

        self.model = (self._given_model if self._given_model is not None else build_model(cfg)).to(self.device)
        if cfg.cache_features:
            self.model.freeze_backbone(True)
        for module in self._frozen:
            module.requires_grad_(False)
        if cfg.freeze_bn:
            self.model.freeze_batchnorm(True)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.has_heads = self.model.attention != "none"
        self.use_attention_loss = cfg.resolved_attention_loss(self.has_heads)
        self._build_loss()
        self._build_data()

        self.step_module = TrainStep(self.model, APSEObjective(self.loss_fn, self.use_attention_loss, cfg.lam,
                                                               level=self.level))
        self.ddp_module: nn.Module = self.step_module
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # find_unused_parameters: some heads/losses own parameters a given batch may not reach.
            self.ddp_module = DDP(self.step_module, device_ids=ids, find_unused_parameters=True)

        params = [p for p in self.step_module.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("nothing to train: every parameter is frozen")
        # Optimiser groups: the new layers at lr; the attention heads' 1x1 convs at attention_lr (they
        # read attention-pooled features at the backbone's scale, so they may want a linear
        # classifier's lr rather than the one a fresh CLB projection needs); a fine-tuned, pretrained
        # backbone at backbone_lr (the papers use one lr for all; a fresh head on a small dataset
        # usually wants a larger one than the pretrained layers). A group is split off only when set.
        heads = {id(p) for p in self.model.attention_parameters()} if cfg.attention_lr is not None else set()
        trunk = {id(p) for p in self.model.backbone_parameters()} if cfg.backbone_lr is not None else set()
        params = [{"params": [p for p in params if id(p) not in heads | trunk]},
                  {"params": [p for p in params if id(p) in heads], "lr": cfg.attention_lr},
                  {"params": [p for p in params if id(p) in trunk], "lr": cfg.backbone_lr}]
        params = [g for g in params if g["params"]]
        self.optimizer = build_optimizer(cfg, params, cfg.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
        amp_fp16 = self.amp and not torch.cuda.is_bf16_supported()
        self.amp_dtype = torch.float16 if amp_fp16 else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_fp16)

        if self.resume:
            self._restore()
        self._setup_done = True
        return self

    def _build_loss(self) -> None:
        cfg = self.config
        entry = loss_entry(cfg.loss)
        try:
            self.loss_fn = build_configured_loss(cfg, cfg.embedding_dim, self.level).to(self.device)
        except TypeError as exc:
            raise ConfigError(f"loss_options do not fit loss {entry.name!r}: {exc}") from None
        if self.loss_fn.needs_confidences and not self.has_heads:
            fixed_beta = constructor_keywords(entry.cls, {"beta": 0.5})  # GEP: a fixed beta reads no confidences
            raise ConfigError(f"loss {cfg.loss!r} needs the attention confidences, but attention=none; "
                              "use attention=hierarchical" + (" or a fixed beta (beta=0.5)" if fixed_beta else ""))

    def _build_data(self) -> None:
        if self._given_run is not None:
            self.run = self._given_run
            return
        self.run = prepare_data(self.config, self.data, self.model, device=self.device, dist_info=self.dist,
                                log=self.log, progress=self.progress)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_payload(self, epoch: int, elapsed: float) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT, "version": 1, "epoch": epoch, "config": self.config.to_dict(),
            "model": cpu_state(self.model), "loss_state": cpu_state(self.loss_fn),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng_states(), "history": self.history,
            "best": self.best, "split": self.split, "elapsed_s": elapsed,
            "probe": self.probe_result,
        }

    def _restore(self) -> None:
        path = self.out_dir / CHECKPOINT_NAME if self.out_dir is not None else None
        if path is None or not path.exists():
            self.log(f"no checkpoint in {self.out_dir}; starting from epoch 1")
            return
        data = torch.load(path, map_location="cpu", weights_only=True)
        check_resumable(data, self.config, self.split)
        self.model.load_state_dict(data["model"])
        self.loss_fn.load_state_dict(data["loss_state"])
        self.optimizer.load_state_dict(data["optimizer"])
        self.scheduler.load_state_dict(data["scheduler"])
        self.scaler.load_state_dict(data["scaler"])
        set_rng_states(data["rng"])
        self.history = list(data["history"])
        self.probe_result = data.get("probe")
        self.best = data["best"]
        self.start_epoch = int(data["epoch"])
        self.elapsed_before = float(data.get("elapsed_s", 0.0))
        self.log(f"resumed from {path} after epoch {self.start_epoch}")

    # ------------------------------------------------------------------ loops
    def _autocast(self):
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def to_device(self, inputs):
        """A batch (images, or a dict stage -> cached map) on the training device, in its memory format."""
        if isinstance(inputs, dict):
            return {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
        inputs = inputs.to(self.device, non_blocking=True)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch (``epoch`` is 1-based); returns mean losses and the learning rate used."""
        cfg = self.config
        seed_everything(derived_seed(cfg.seed, epoch, self.dist.rank))
        self.loader_generator.manual_seed(derived_seed(cfg.seed, epoch, self.dist.rank, 1))
        self.batch_sampler.set_epoch(epoch)
        if cfg.warmup_epochs:
            # warm-up: the new layers settle before gradients reach the pretrained ones (and the
            # backbone's backward pass is skipped, so these epochs are cheaper)
            self.model.backbone.requires_grad_(epoch > cfg.warmup_epochs)
        lr = self.optimizer.param_groups[0]["lr"]
        result = self._run_batches(self.train_loader, self.optimizer, f"epoch {epoch}/{cfg.epochs}",
                                   f"epoch {epoch}", lr)
        self.scheduler.step()
        return result

    def _run_batches(self, loader, optimizer, desc: str, where: str, lr: float) -> dict[str, float]:
        """Train ``self.step_module`` on every batch of ``loader`` with ``optimizer``; mean losses.
        ``desc`` labels the progress bar, ``where`` the errors ("epoch 3")."""
        cfg = self.config
        self.step_module.train()
        sums = torch.zeros(3, dtype=torch.float64)
        steps = 0
        # a bar on a terminal; elsewhere nothing here, fit() logs one line per epoch
        bar = progress_bar(loader, desc=desc, unit="batch", leave=False,
                           enabled=self.progress and self.dist.is_main, line=False)
        for step, (inputs, labels) in enumerate(bar, start=1):
            inputs, labels = self.to_device(inputs), labels.to(self.device, non_blocking=True)
            with self._autocast():
                total, l_emb, l_att = self.ddp_module(inputs, labels)
            finite = torch.isfinite(total.detach()).float()
            if self.dist.enabled:  # every rank must stop together, or the others hang in all-reduce
                    dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            if finite.item() < 1:
                raise TrainingDiverged(
                    f"loss became {float(total.detach()):.4g} at {where}, step {step} (lr {lr:g}); "
                    "lower lr, or check the data and config")
            optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            if cfg.grad_clip is not None:
                self.scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(self.step_module.parameters(), cfg.grad_clip)
            self.scaler.step(optimizer)
            self.scaler.update()
            values = torch.stack([total.detach(), l_emb, l_att]).double().cpu()
            sums += values
            steps += 1
            if self.progress and self.dist.is_main:
                bar.set_postfix(loss=f"{float(values[0]):.4f}")
        bar.close()
        if self.dist.enabled:
            # DDP syncs gradients, but BatchNorm running statistics are updated per rank: take rank 0's so
            # that every rank validates (and would save) the same model.
            for buffer in self.step_module.buffers():
                dist.broadcast(buffer.data, src=0)
        # A step can leave inf/NaN weights while its own loss was still finite (e.g. a huge lr):
        # catch it here rather than as NaN distances in validation.
        for name, p in self.step_module.named_parameters():
            if p.requires_grad and not bool(torch.isfinite(p.detach()).all()):
                raise TrainingDiverged(f"parameter {name} became non-finite at {where}, step {steps} "
                                       f"(lr {lr:g}); lower lr, or check the data and config")
        mean = (sums / max(steps, 1)).tolist()
        return {"loss": mean[0], "embedding_loss": mean[1], "attention_loss": mean[2], "lr": lr, "steps": steps}

    def probe(self) -> dict[str, Any]:
        """The probe stage of ``probe_epochs``: the new layers alone, on cached features of the frozen
        backbone (centre crops, and their mirror images when ``feature_flips``), at a constant
        ``probe_lr``, before the end-to-end epochs. With ``freeze_bn`` the backbone computes exactly
        these maps in evaluation, so the probe is a warm-up on fixed crops, in seconds. Returns the
        probe's losses per epoch, its validation metrics and its cost."""
        cfg = self.config
        t0 = time.time()
        run = self.run
        features, path, run.feature_seconds = cached_features(
            cfg, self.model, with_transform(run.base, run.eval_transform), device=self.device, dist_info=self.dist,
            log=self.log, progress=self.progress)
        run.feature_cache_path = str(path)  # the run's cached features are now the probe's
        train = FeatureDataset(features.features, features.labels, features.meta, train=True)
        loader = GatheredBatches(train, self.split["train"], self.batch_sampler)
        backbone = {id(p) for p in self.model.backbone_parameters()}
        params = [p for p in self.step_module.parameters() if id(p) not in backbone and p.requires_grad]
        lr = cfg.probe_lr if cfg.probe_lr is not None else cfg.lr
        optimizer = build_optimizer(cfg, params, lr)
        trainable = {n: p.requires_grad for n, p in self.model.backbone.named_parameters()}
        self.model.backbone.requires_grad_(False)
        losses = []
        try:
            for epoch in range(1, cfg.probe_epochs + 1):
                seed_everything(derived_seed(cfg.seed, epoch, self.dist.rank, 2))
                self.batch_sampler.set_epoch(100_000 + epoch)  # batches unlike the end-to-end epochs'
                losses.append(self._run_batches(loader, optimizer, f"probe {epoch}/{cfg.probe_epochs}",
                                                f"probe epoch {epoch}", lr)["loss"])
        finally:
            for n, p in self.model.backbone.named_parameters():
                p.requires_grad_(trainable[n])
        # The backbone did not change: its maps of the gallery and validation images are the cached
        # ones (view 0, the centre crop, as evaluation sees them), so only the new layers run.
        frozen = FeatureDataset(features.features, features.labels, features.meta)
        val = self.validate(Subset(frozen, self.split["train"]), Subset(frozen, self.split["val"]),
                            num_workers=0)
        self._val_gallery = None  # not a candidate epoch: the end-to-end epochs validate afresh
        seconds = time.time() - t0
        vtxt = f"  val {cfg.select_on} {val[cfg.select_on]:.4f}" if val is not None else ""
        self.log(f"probe: {cfg.probe_epochs} epochs of the new layers on cached features at lr {lr:g}, "
                 f"loss {losses[-1]:.4f}{vtxt}  {seconds:.1f}s")
        return {"epochs": cfg.probe_epochs, "lr": lr, "loss_curve": losses, "val": val, "seconds": seconds}

    def _embed_kw(self) -> dict[str, Any]:
        # Image mode decodes JPEGs: the training loader's workers serve evaluation too.
        return dict(batch_size=self.config.batch_size_eval, device=self.device, progress=False,
                    amp=self.amp, channels_last=self.channels_last, num_workers=self.config.num_workers)

    def validate(self, gallery_set: Dataset | None = None, val_set: Dataset | None = None,
                 **embed_kw: Any) -> dict[str, float] | None:
        """Validation images query the training gallery (by default the run's own sets); None when
        there is no validation split. The gallery's embeddings are kept for :meth:`test`."""
        gallery_set = self.gallery_set if gallery_set is None else gallery_set
        val_set = self.val_set if val_set is None else val_set
        if len(val_set) == 0:
            return None
        kw = {**self._embed_kw(), **embed_kw}
        self._val_gallery = embed_dataset(self.model, gallery_set, desc="embed gallery", **kw)
        return evaluate_split(self.model, gallery_set, val_set, gallery=self._val_gallery, level=self.level, **kw)

    def test(self) -> dict[str, float] | None:
        """The test protocol on the test split (called once, after training)."""
        if len(self.test_set) == 0:
            return None
        if self.config.resolved_protocol() == "loo":
            return leave_one_out(self.model, self.test_set, level=self.level, **self._embed_kw())
        return evaluate_split(self.model, self.gallery_set, self.test_set, gallery=self._best_gallery,
                              level=self.level, **self._embed_kw())

    def test_by_source(self) -> dict[str, dict[str, float]] | None:
        """A pooled data set's test images scored per source: each source's held-out images query
        that source's training images only (what the embedding learnt from is pooled, what is
        searched is not). None for a single-source data set."""
        sources = self.sources
        if not sources or len(set(sources)) < 2 or not len(self.test_set):
            return None
        out = {}
        for source in dict.fromkeys(sources):
            gallery = [i for i in self.split["train"] if sources[i] == source]
            queries = [i for i in self.split["test"] if sources[i] == source]
            if gallery and queries:
                out[source] = evaluate_split(self.model, Subset(self.gallery_set.dataset, gallery),
                                             Subset(self.test_set.dataset, queries), level=self.level,
                                             **self._embed_kw())
        return out

    def _is_better(self, metrics: dict[str, float]) -> bool:
        if self.best is None or self.best.get("metrics") is None:
            return True
        name = self.config.select_on
        new, old = metrics[name], self.best["metrics"][name]
        if new is None or (isinstance(new, float) and math.isnan(new)):
            return False
        # strict improvement: ties keep the earlier epoch
        return new > old if higher_is_better(name) else new < old

    def fit(self) -> RunRecord:
        """Train, select, test once, write model.pt and results.json; returns the run's record."""
        self.setup()
        cfg = self.config
        t_start = time.time()
        if self.start_epoch == 0:
            self.log(f"training {cfg.backbone} ({getattr(self.model.backbone, 'weights_source', '?')}) with "
                     f"loss={cfg.loss}{' + attention' if self.use_attention_loss else ''} on {self.device}: "
                     f"{len(self.split['train'])} train / {len(self.split['val'])} val / "
                     f"{len(self.split['test'])} test images, {len(self.batch_sampler)} batches per epoch")
        if self.start_epoch == 0 and cfg.probe_epochs:
            self.probe_result = self.probe()
        if self.start_epoch == 0 and self.start_candidate:
            # the starting model is a candidate: an epoch must beat it (strictly) to be chosen
            self.start_metrics = self._keep_start()
        for epoch in range(self.start_epoch + 1, cfg.epochs + 1):
            t0 = time.time()
            entry: dict[str, Any] = {"epoch": epoch, **self.train_epoch(epoch)}
            val = None
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                val = self.validate()
            entry["val"] = val
            entry["seconds"] = time.time() - t0
            self.history.append(entry)
            improved = ""
            if val is not None and self._is_better(val):
                self.best = {"epoch": epoch, "metrics": val, "model": cpu_state(self.model)}
                self._best_gallery = self._val_gallery
                improved = " *"
            elif not len(self.val_set):  # no validation split: the last epoch is the chosen one
                self.best = {"epoch": epoch, "metrics": None, "model": cpu_state(self.model)}
            vtxt = f"  val {cfg.select_on} {val[cfg.select_on]:.4f}{improved}" if val is not None else ""
            self.log(f"epoch {epoch}/{cfg.epochs}  loss {entry['loss']:.4f} (emb {entry['embedding_loss']:.4f}, "
                     f"att {entry['attention_loss']:.4f})  lr {entry['lr']:.2g}{vtxt}  {entry['seconds']:.1f}s")
            if self.dist.is_main and self.out_dir is not None:
                atomic_save(self._checkpoint_payload(epoch, self.elapsed_before + time.time() - self._t_init),
                             self.out_dir / CHECKPOINT_NAME)
        # train_time_s: this session's epochs; wall_time_s: every session, setup and extraction included
        return self._finish(time.time() - t_start, self.elapsed_before + time.time() - self._t_init)

    def evaluate_untrained(self) -> RunRecord:
        """The record of the model as built and never trained (epoch 0), the same record :meth:`fit`
        returns and writes: its val and test scores are the initialisation's (the experiments' random-
        projection floor)."""
        self.setup()
        self._keep_start()
        return self._finish(0.0, self.elapsed_before + time.time() - self._t_init)

    def _keep_start(self) -> dict[str, float] | None:
        """Validate the model as it is and keep it as epoch 0, the chosen model unless an epoch beats
        it (its validation metrics are returned); the test then reuses the gallery that validation
        embedded, as after a chosen epoch of :meth:`fit`."""
        metrics = self.validate()
        self.best = {"epoch": 0, "metrics": metrics, "model": cpu_state(self.model)}
        self._best_gallery = self._val_gallery
        return metrics

    def _finish(self, train_seconds: float, wall_seconds: float) -> RunRecord:
        cfg = self.config
        if self.best is None:
            raise RuntimeError("no epoch was trained (epochs=0?)")
        self.model.load_state_dict(self.best["model"])
        t0 = time.time()
        test = self.test()  # the only time the test split is looked at
        by_source = self.test_by_source()
        test_seconds = time.time() - t0
        val_history = [(h["epoch"], h["val"][cfg.select_on]) for h in self.history if h.get("val")]
        # Paths are kept portable (portable_path): the data set is named and fingerprinted, and the
        # feature cache is its file name in the cache folder, so the record reads alike anywhere.
        cache_file = self.run.feature_cache_path
        record = RunRecord(
            config=portable_config(cfg.to_dict(), self.data_root),
            data={"name": getattr(self.run.base, "name", None) or Path(self.data_root).name,
                  "fingerprint": dataset_fingerprint(self.samples), "images": len(self.samples),
                  "split": {k: len(v) for k, v in self.split.items()},
                  "fold": cfg.fold, "folds": cfg.folds},
            history=self.history,
            probe=self.probe_result,  # the probe stage (probe_epochs), if any
            selection={"metric": cfg.select_on,
                       "on": ("val" if val_history else "untrained" if self.best["epoch"] == 0
                              else "last epoch (no val split)"),
                       "lower_is_better": not higher_is_better(cfg.select_on)},
            chosen_epoch=self.best["epoch"],
            val_metrics=self.best["metrics"],
            test_protocol=("leave-one-out within the test images" if cfg.resolved_protocol() == "loo"
                           else "test images query the training images"),
            test_metrics=test,
            test_metrics_by_source=by_source,
            attention_loss_used=self.use_attention_loss,
            weights_source=portable_source(
                str(getattr(self.model.backbone, "weights_source", "")), self.data_root),
            wall_time_s=wall_seconds + test_seconds,  # setup + feature extraction + training + test
            train_time_s=train_seconds,
            test_time_s=test_seconds,
            feature_extraction_s=self.run.feature_seconds,
            feature_cache=Path(cache_file).name if cache_file else None,
            device=device_description(self.device, self.dist.world_size),
            world_size=self.dist.world_size,
            amp=self.amp,
            environment=environment(),  # torch, python and apse versions, git commit
        )
        if test is not None:
            self.log("test (" + record.test_protocol + f", epoch {self.best['epoch']}): " +
                     "  ".join(f"{k} {v:.4f}" for k, v in test.items()))
        if self.dist.is_main and self.out_dir is not None:
            atomic_save({"format": MODEL_FORMAT, "version": 1, "config": cfg.to_dict(), "model": self.best["model"],
                          "epoch": self.best["epoch"], "val_metrics": self.best["metrics"], "test_metrics": test,
                          "weights_source": record.weights_source, "apse_version": record["apse_version"]},
                         self.out_dir / MODEL_NAME)
            write_json(self.out_dir / RESULTS_NAME, json_safe(record.to_dict()), indent=2)
        return record

    def close(self) -> None:
        """Leave the process group if this trainer joined it."""
        if self.dist.initialised_here:
            if dist.is_initialized():
                dist.destroy_process_group()


def train(config: TrainConfig | dict | str | os.PathLike, data: Any = None, out_dir: str | os.PathLike | None = None, *, resume: bool = False,
          overwrite: bool = False, progress: bool = True, log: Callable[[str], None] | None = None) -> RunRecord:
    """Run a whole training (see the module docstring) and return its record (also in results.json).

    ``config``: a TrainConfig, a dict of its fields, or a YAML file.

    ``data``: dataset folder, an EmotionImageFolder, or None for ``$APSE_DATA`` / the FI subset.
    ``out_dir``: output folder (None writes nothing). ``resume``: continue ``out_dir/checkpoint.pt``.
    Raises :class:`TrainingDiverged` when the loss stops being finite.
    """
    if isinstance(config, (str, os.PathLike)):
        config = load_config(config)
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    trainer = Trainer(config, data, out_dir, resume=resume, overwrite=overwrite, progress=progress, log=log)
    try:
        return trainer.fit()
    finally:
        trainer.close()
