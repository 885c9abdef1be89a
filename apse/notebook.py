"""The one setting every notebook reads: APSE_MODE ("cpu", the default, or "gpu").

`setup()` is the first call of each notebook. It seeds everything, fixes the plotting style, and
returns the mode's settings. The training configuration itself lives in the YAML files under
`configs/` (one per mode), never in a notebook:

- cpu: `configs/fi-subset-cpu.yaml`: the FI subset, frozen pretrained EfficientNet-Lite0 with cached
  features, small images, few epochs: the configuration the book was executed with (and CI runs).
- gpu: `configs/fi-resnet50.yaml`: the papers' ResNet-50 fine-tuned end to end on FI at 224 px.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
MODES = {"cpu": "fi-subset-cpu.yaml", "gpu": "fi-resnet50.yaml"}


@dataclass(frozen=True)
class NotebookSettings:
    mode: str
    config_path: Path
    device: str
    seed: int

    @property
    def small(self) -> bool:
        """True in the CPU configuration: notebooks shrink whatever they train or sweep."""
        return self.mode == "cpu"


def current_mode() -> str:
    mode = os.environ.get("APSE_MODE", "cpu").strip().lower()
    if mode not in MODES:
        raise ValueError(f"APSE_MODE must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def seed_everything(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(seed: int = 0, quiet: bool = False) -> NotebookSettings:
    """Seed, style plots, and return the settings of the current APSE_MODE."""
    import matplotlib

    mode = current_mode()
    seed_everything(seed)
    matplotlib.rcParams.update({"figure.dpi": 90, "savefig.dpi": 90, "axes.spines.top": False,
                                "axes.spines.right": False, "font.size": 9})
    device = "cuda" if mode == "gpu" and torch.cuda.is_available() else "cpu"
    settings = NotebookSettings(mode=mode, config_path=REPO_ROOT / "configs" / MODES[mode], device=device, seed=seed)
    if not quiet:
        import apse

        print(f"apse {apse.__version__} | torch {torch.__version__.split('+')[0]} | APSE_MODE={mode} | device={device}")
    return settings
