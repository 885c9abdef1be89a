"""Training regimes (frozen, fine-tuned, probe): what each changes in a run, and where its results go.

A regime's overrides apply to every run of an experiment after the experiment's and the variant's
own; a regime other than "frozen" writes to ``results/<name>-<regime>/`` (:func:`regime_dir`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from apse.config import config_delta, load_config

__all__ = ["REPO_ROOT", "DEFAULT_BASE", "DEFAULT_RESULTS", "FINETUNE_CONFIG", "REGIMES", "regime_overrides",
           "run_overrides", "regime_dir", "split_regime_dir"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BASE = REPO_ROOT / "configs" / "fi-subset-cpu.yaml"
DEFAULT_RESULTS = REPO_ROOT / "results"
#: Training regimes: what a regime changes in every run of an experiment (after the experiment's and
#: the variant's own overrides). "frozen" is the base config's (cached features of the frozen backbone);
#: "finetune" trains every layer on images: its overrides are the keys of configs/fi-subset-finetune-cpu.yaml,
#: a delta on the base file (chosen on validation; chapter 13), which `apse train --config` reads the same
#: way (the base file, then these keys). "probe" is the fine-tuning regime's first stage alone: the frozen
#: backbone at the fine-tuning's image size, the new layers trained on its cached features as the probe
#: trains them, so that "fine-tuned" against "probe" isolates what moving the backbone adds (against
#: "frozen", image size changes too). A regime other than frozen writes to results/<name>-<regime>/.
FINETUNE_CONFIG = REPO_ROOT / "configs" / "fi-subset-finetune-cpu.yaml"

REGIMES = ("frozen", "finetune", "probe")


def regime_overrides(regime: str) -> dict[str, Any]:
    """The overrides of a training regime (see REGIMES): ``{}`` for "frozen"."""
    if regime == "frozen":
        return {}
    if regime == "finetune":
        return config_delta(FINETUNE_CONFIG)  # the file's own keys: one delta for both ways to the regime
    if regime == "probe":
        ft = load_config(FINETUNE_CONFIG).to_dict()  # the fine-tuning regime's config, its probe alone
        return {"cache_features": True, "feature_flips": ft["feature_flips"], "image_size": ft["image_size"],
                "resize": ft["resize"], "channels_last": None, "freeze_bn": False, "warmup_epochs": 0,
                "probe_epochs": 0, "probe_lr": None, "lr": ft["probe_lr"] or ft["lr"],
                "backbone_lr": None, "attention_lr": ft["attention_lr"], "epochs": ft["probe_epochs"],
                "lr_step": ft["probe_epochs"] + 1, "lr_gamma": ft["lr_gamma"]}
    raise ValueError(f"unknown regime {regime!r}; valid: {', '.join(REGIMES)}")


def run_overrides(regime: str = "frozen", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """What every run of an experiment in ``regime`` changes after the experiment's and the variant's
    own overrides: the CPU, the regime's overrides, then ``overrides`` (the command line's). The part of
    :func:`apse.experiments.specs.experiment_specs`, the one variant-to-config recipe, that a regime owns."""
    return {"device": "cpu", **regime_overrides(regime), **(overrides or {})}


def regime_dir(name: str, regime: str = "frozen") -> str:
    """The results folder name of experiment ``name`` run in ``regime``."""
    return name if regime == "frozen" else f"{name}-{regime}"


def split_regime_dir(folder: str) -> tuple[str, str]:
    """``(experiment, regime)`` of a results folder name, the inverse of :func:`regime_dir`
    (``"core-finetune"`` -> ``("core", "finetune")``, ``"table1"`` -> ``("table1", "frozen")``)."""
    for regime in REGIMES[1:]:
        if folder.endswith(f"-{regime}"):
            return folder[: -len(regime) - 1], regime
    return folder, "frozen"
