"""The one setting every notebook reads: APSE_MODE ("cpu", the default, "gpu" or "smoke").

`setup()` is the first call of each notebook. It seeds everything, fixes the plotting style, and
returns the mode's :class:`NotebookSettings`. The training configuration itself lives in the YAML
files under `configs/` (one per mode), never in a notebook:

- cpu: `configs/fi-subset-cpu.yaml`: the FI subset, frozen pretrained EfficientNet-Lite0 with cached
  features, few epochs: the configuration the book was executed with (and CI checks with nbval).
- gpu: `configs/fi-resnet50.yaml`: the papers' ResNet-50 fine-tuned end to end on images at 224 px,
  AMP and channels_last on CUDA, the full schedule; the data is whatever `APSE_DATA` points to.
- smoke: exactly the code of the gpu mode (the same configuration file, images rather than cached
  features, the same transforms, AMP where the device supports it) shrunk by :data:`SMOKE_OVERRIDES`
  to one short epoch on :data:`SMOKE_IMAGES_PER_EMOTION` images of each emotion, so that it finishes on
  2 CPU cores. Its numbers mean nothing; it exists so that the gpu code path cannot break unseen (CI
  executes every notebook in it). Without local ResNet-50 weights it uses random ones.

Notebooks never test the mode by name: they ask ``settings.config()`` for the training
configuration, ``settings.dataset()`` for the images, and ``settings.pick(cpu=, gpu=, smoke=)`` for
the few sizes (steps, seeds, epochs) that a mode shrinks.

The chapters that show attention maps (8, 11, 12) take a model trained in the fine-tuned regime
from ``settings.trained_apse()``: trained once, on first use, and cached outside the repository
(``$APSE_CACHE/models``, default ``~/.cache/apse/models``), so that later calls and notebooks load
it.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import torch

from apse import training
from apse.checkpoints import CHECKPOINT_NAME, MODEL_NAME, load_model
from apse.config import load_config
from apse.data import EmotionImageFolder, build_transforms, load_rgb, locate_dataset
from apse.io import atomic_directory
from apse.provenance import cache_root, dataset_fingerprint, portable_path
from apse.rng import rng_states, seed_everything, set_rng_states
from apse.runs import result_fields, short_hash

REPO_ROOT = Path(__file__).resolve().parents[1]
MODES = {"cpu": "fi-subset-cpu.yaml", "gpu": "fi-resnet50.yaml", "smoke": "fi-resnet50.yaml"}
#: What the smoke mode changes in the gpu configuration: one epoch of one balanced batch, and
#: evaluation batches small enough for a CPU's memory. Everything else (backbone, stages, heads,
#: loss, transforms, optimiser) is the gpu mode's.
SMOKE_OVERRIDES = {"epochs": 1, "batches_per_epoch": 1, "num_workers": 0, "batch_size_eval": 16}
#: Images of each emotion the smoke mode keeps (the first ones, in path order): the 80/5/15 split of
#: 14 leaves 11 for training (a balanced batch takes 4), 1 for validation and 2 for testing (the
#: least a leave-one-out query needs to find a relevant image); each training part of the 5 folds
#: keeps 1 for validation too.
SMOKE_IMAGES_PER_EMOTION = 14
#: The fine-tuned configuration whose model the cpu mode shows the attention maps of (a probe, then
#: end to end).
FINETUNE_CPU_CONFIG = "fi-subset-finetune-cpu.yaml"
#: End-to-end epochs of that model in the notebooks: shortened from the file's 5, to keep the first
#: execution (which trains it once; later ones load it) to a few CPU-minutes.
FINETUNE_NOTEBOOK_EPOCHS = 2
_TRAINED_FORMAT = 1  # part of the cache key: bump when what trained_apse trains changes meaning
#: What the trained models' keys leave out of the config: only where features are cached (these
#: keys keep the device, worker counts and evaluation batch size that :data:`apse.runs.NOT_IN_RESULT`
#: leaves out: they predate it, and chapters 8, 11 and 12 print the key).
_KEY_LEAVES_OUT = ("feature_cache",)
#: The newest config field (of :data:`apse.runs.ADDED_FIELDS`) these keys hold: a later one leaves
#: them as they are while it holds its old value.
_KEY_AS_OF = "train_fraction"


def trained_model_key(config, dataset) -> str:
    """Cache key of a trained model: a hash of the configuration (:func:`apse.runs.result_fields`:
    every field but where the features are cached) and of the images
    (:func:`apse.provenance.dataset_fingerprint`)."""
    fields = result_fields(config.to_dict(), leave_out=_KEY_LEAVES_OUT, as_of=_KEY_AS_OF)
    return short_hash({"v": _TRAINED_FORMAT, "config": fields,
                       "data": dataset_fingerprint(dataset.samples)}, 16)


def train_cached(config, dataset, *, cache: str | os.PathLike | None = None, progress: bool = False,
                 log: Callable[[str], None] | None = print):
    """``(model in eval mode, config)``: ``config`` trained on ``dataset``, once, then cached.

    The model lives in ``<cache>/models/<key>/model.pt`` (``cache`` defaults to :func:`cache_root`,
    ``key`` is :func:`trained_model_key`). When it is there it is loaded
    (:func:`apse.training.load_model`); otherwise the run trains in a temporary folder next to it,
    which is renamed into place only once ``model.pt`` and ``results.json`` are written, so a run
    killed mid-training leaves no broken entry (at most a ``.tmp-*`` folder, ignored). ``progress``:
    the Trainer's (one line per epoch outside a terminal); ``log``: one line saying which of the two
    happened (None: silent). The random state of ``random``, numpy and torch is left as it was, so
    that what a notebook draws next does not depend on whether the model was in the cache.
    """
    models = Path(cache) if cache is not None else cache_root() / "models"
    key = trained_model_key(config, dataset)
    states = rng_states()  # training reseeds, building draws: leave the caller's random state alone
    try:
        return _train_or_load(config, dataset, models, key, progress, log)
    finally:
        set_rng_states(states)


def _train_or_load(config, dataset, models: Path, key: str, progress: bool, log):

    final = models / key
    where = portable_path(final)
    if not (final / MODEL_NAME).is_file():
        t0 = time.time()

        def fill(tmp: Path) -> None:
            training.train(config, dataset, tmp, overwrite=True, progress=progress)
            (tmp / CHECKPOINT_NAME).unlink(missing_ok=True)  # the resumable state: not needed here

        atomic_directory(final, fill, done=MODEL_NAME)  # another process may finish first: keep its
        if log:
            log(f"trained once in {(time.time() - t0) / 60:.1f} min and cached: {where}")
    elif log:
        log(f"loaded from the cache: {where}")
    return load_model(final / MODEL_NAME)


T = TypeVar("T")


def resnet50_weights_cached() -> bool:
    """True when torchvision's ImageNet ResNet-50 file is in the torch hub cache (no download needed)."""
    from torchvision.models import ResNet50_Weights

    name = ResNet50_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    return (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file()


@dataclass(frozen=True)
class NotebookSettings:
    mode: str
    config_path: Path
    device: str
    seed: int

    def pick(self, *, cpu: T, gpu: T, smoke: T) -> T:
        """The value of the current mode: ``settings.pick(cpu=300, gpu=1000, smoke=20)``."""
        return {"cpu": cpu, "gpu": gpu, "smoke": smoke}[self.mode]

    def config(self):
        """The mode's :class:`~apse.config.TrainConfig` (smoke: the gpu one with SMOKE_OVERRIDES)."""
        config = load_config(self.config_path)
        if self.mode == "smoke":
            config = config.replace(**SMOKE_OVERRIDES)
            if config.backbone == "resnet50" and config.pretrained is True and not resnet50_weights_cached():
                config = config.replace(pretrained=False)  # offline: the same network, random weights
        return config

    def dataset(self, path: str | os.PathLike | None = None):
        """The images the mode trains on, as an :class:`~apse.data.EmotionImageFolder`: the folder
        :func:`apse.data.locate_dataset` finds (``$APSE_DATA``, else the FI subset), or in the smoke
        mode its first SMOKE_IMAGES_PER_EMOTION images of each emotion."""
        folder = EmotionImageFolder(locate_dataset(path))
        if self.mode == "smoke":
            folder = folder.first_per_emotion(SMOKE_IMAGES_PER_EMOTION)
        return folder

    def finetune_config(self):
        """The configuration of :meth:`trained_apse`: APSE + GEP in the fine-tuned regime. cpu:
        ``configs/fi-subset-finetune-cpu.yaml`` (the probe, then end-to-end fine-tuning of Lite0 on
        the 80/5/15 split, seed 0) with its end-to-end epochs shortened to
        :data:`FINETUNE_NOTEBOOK_EPOCHS`; gpu and smoke: :meth:`config` (already fine-tuned end to
        end; smoke shrunk to one batch)."""
        if self.mode != "cpu":
            return self.config()
        config = load_config(REPO_ROOT / "configs" / FINETUNE_CPU_CONFIG)
        return config.replace(epochs=min(config.epochs, FINETUNE_NOTEBOOK_EPOCHS))

    def trained_apse(self, data: str | os.PathLike | None = None, **kwargs):
        """``(model, config)``: APSE + GEP trained in the fine-tuned regime on :meth:`dataset`
        (:meth:`finetune_config`), for showing what trained attention heads look at. Trained on
        first use and cached outside the repository (:func:`train_cached`, which takes ``kwargs``);
        later calls and notebooks load it. The model is on ``self.device``, in eval mode. In the gpu
        mode that first use trains the papers' whole schedule."""
        model, config = train_cached(self.finetune_config(), self.dataset(data), **kwargs)
        return model.to(self.device), config


def attention_on(model, config, paths):
    """``(images, output)``: the files ``paths`` through ``model`` as it is evaluated (the
    evaluation transform of ``config``: resize, centre crop, the backbone's normalisation), on the
    CPU, without gradients. ``output`` is the :class:`~apse.model.APSEOutput` (attention maps,
    confidences)."""
    model = model.cpu().eval()
    tf = build_transforms(False, image_size=config.image_size, resize=config.resize,
                          mean=tuple(model.backbone.mean), std=tuple(model.backbone.std))
    images = torch.stack([tf(load_rgb(p)) for p in paths])
    with torch.no_grad():
        return images, model(images)


def significant(x: float, digits: int = 2) -> float:
    """``x`` rounded to ``digits`` significant digits: what a checked output may print of a float32
    result, whose last digits change with the CPU, the BLAS build and the thread count."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


def current_mode() -> str:
    mode = os.environ.get("APSE_MODE", "cpu").strip().lower()
    if mode not in MODES:
        raise ValueError(f"APSE_MODE must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


#: Longest line of a table's plain-text form (a notebook's fallback behind its HTML table).
PLAIN_WIDTH = 100


def wrap_lines(text: str, width: int = PLAIN_WIDTH) -> str:
    """``text`` with every line longer than ``width`` cut into pieces of ``width`` characters (lines
    that fit are left exactly as they are)."""
    out = []
    for line in text.split("\n"):
        out += [line[i:i + width] for i in range(0, len(line), width)] if len(line) > width else [line]
    return "\n".join(out)


def _wrap_plain_tables(width: int = PLAIN_WIDTH) -> None:
    """In IPython, give DataFrames and Series a plain-text form whose lines fit ``width``: the form
    saved next to the HTML table in a notebook (what nbval compares with the HTML, and what a
    terminal shows). Tables that already fit are unchanged. Outside IPython: nothing."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None:
        return
    import pandas as pd

    plain = ip.display_formatter.formatters["text/plain"]
    for kind in (pd.DataFrame, pd.Series):
        plain.for_type(kind, lambda obj, p, cycle: p.text(wrap_lines(repr(obj), width)))


def setup(seed: int = 0, quiet: bool = False) -> NotebookSettings:
    """Seed, style plots, and return the settings of the current APSE_MODE."""
    import matplotlib

    mode = current_mode()
    seed_everything(seed)
    matplotlib.rcParams.update({"figure.dpi": 90, "savefig.dpi": 90, "axes.spines.top": False,
                                "axes.spines.right": False, "font.size": 9})
    device = "cuda" if mode != "cpu" and torch.cuda.is_available() else "cpu"
    settings = NotebookSettings(mode=mode, config_path=REPO_ROOT / "configs" / MODES[mode],
                                device=device, seed=seed)
    _wrap_plain_tables()
    if not quiet:
        import apse

        print(f"apse {apse.__version__} | torch {torch.__version__.split('+')[0]} | "
              f"APSE_MODE={mode} | device={device}")
    return settings
