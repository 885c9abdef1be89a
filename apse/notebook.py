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
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from apse.training import seed_everything

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
        from apse.config import load_config

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
        from apse.data import EmotionImageFolder, locate_dataset

        folder = EmotionImageFolder(locate_dataset(path))
        if self.mode == "smoke":
            folder = folder.first_per_emotion(SMOKE_IMAGES_PER_EMOTION)
        return folder


def significant(x: float, digits: int = 2) -> float:
    """``x`` rounded to ``digits`` significant digits: what a checked output may print of a float32
    result, whose last digits change with the CPU, the BLAS build and the thread count."""
    import math

    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


def current_mode() -> str:
    mode = os.environ.get("APSE_MODE", "cpu").strip().lower()
    if mode not in MODES:
        raise ValueError(f"APSE_MODE must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


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
    if not quiet:
        import apse

        print(f"apse {apse.__version__} | torch {torch.__version__.split('+')[0]} | "
              f"APSE_MODE={mode} | device={device}")
    return settings
