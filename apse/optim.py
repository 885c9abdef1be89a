"""The optimisation section of a training config, beside the optimiser it builds.

:class:`OptimConfig` holds the optimiser, its learning rates and schedule, the epochs and the
fine-tuning switches; it checks them itself (:meth:`OptimConfig.check_optim`) and
:func:`build_optimizer` reads this section alone. :class:`apse.config.TrainConfig` composes it with the
other sections. Its defaults are the papers': SGD, lr 1e-3, momentum 0.9, weight decay 5e-4, lr x0.1
every 40 epochs, 100 epochs.

The batches are the data's section (:class:`apse.data.BatchConfig`, beside the sampler).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from apse.checks import ConfigError, choice

__all__ = ["OPTIMIZERS", "OptimConfig", "build_optimizer"]

#: Optimisers :func:`build_optimizer` builds.
OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass
class OptimConfig:
    """The optimiser, its learning rates and schedule, the epochs and the fine-tuning switches."""

    optimizer: str = "sgd"
    lr: float = 1e-3
    attention_lr: Optional[float] = None       # lr of the attention heads' 1x1 convs; None = lr
    backbone_lr: Optional[float] = None        # lr of a fine-tuned backbone; None = lr (the papers')
    freeze_bn: bool = False                    # fine-tuning: backbone BatchNorm keeps ImageNet statistics
    warmup_epochs: int = 0                     # fine-tuning: first epochs train the new layers only
    probe_epochs: int = 0                      # fine-tuning: new layers first, on cached frozen features
    probe_lr: Optional[float] = None           # lr of those probe epochs (constant); None = lr
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_step: int = 40                          # StepLR step size, epochs
    lr_gamma: float = 0.1
    epochs: int = 100
    grad_clip: Optional[float] = None          # max gradient norm; None = no clipping (the papers')

    def check_optim(self) -> None:
        """Check the optimiser, learning-rate and schedule fields (ConfigError with one sentence)."""
        choice("optimizer", self.optimizer, OPTIMIZERS)
        for name in ("epochs", "lr_step"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.attention_lr is not None and self.attention_lr <= 0:
            raise ConfigError(f"attention_lr must be positive or null, got {self.attention_lr}")
        if self.backbone_lr is not None and self.backbone_lr < 0:
            raise ConfigError(f"backbone_lr must be >= 0 or null, got {self.backbone_lr}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(f"warmup_epochs must lie in 0..epochs-1 ({self.epochs - 1}), got "
                              f"{self.warmup_epochs}")
        if self.probe_epochs < 0:
            raise ConfigError(f"probe_epochs must be >= 0, got {self.probe_epochs}")
        if self.probe_lr is not None and self.probe_lr <= 0:
            raise ConfigError(f"probe_lr must be positive or null, got {self.probe_lr}")

    def fine_tunes_backbone(self) -> bool:
        """Whether a switch that only a trained backbone uses is set (backbone_lr, freeze_bn, warmup or
        probe epochs)."""
        return bool(self.backbone_lr is not None or self.freeze_bn or self.warmup_epochs or self.probe_epochs)


def build_optimizer(config: OptimConfig, params, lr: float) -> torch.optim.Optimizer:
    """The section's optimiser over ``params`` (a list of tensors or of parameter groups) at ``lr``."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
