"""The evaluation-protocol section of a training config: the split or fold, the test protocol, the
validation metric.

:class:`ProtocolConfig` is what :func:`apse.training_data.split_indices` reads (``split``,
``split_seed``, ``folds``, ``fold``, ``train_fraction``) and what the trainer validates and tests by
(``eval_every``, ``select_on``, ``protocol``); it checks its own fields (:meth:`check_protocol`, the
validation metric through the metric registry). :class:`apse.config.TrainConfig` composes it with the
other sections.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from apse.checks import ConfigError, choice, registered
from apse.metrics import METRICS, metric_names

__all__ = ["PROTOCOLS", "ProtocolConfig"]

#: Test protocols: test queries against the training gallery, or leave-one-out among the test images.
PROTOCOLS = ("auto", "split", "loo")


@dataclass
class ProtocolConfig:
    """The evaluation protocol: the split or fold, the test protocol, the validation metric."""

    split: str = "80/5/15"                     # train/val/test percentages (FI protocol)
    split_seed: int = 0
    train_fraction: float = 1.0                # learning curves: keep this share of each class's training images
    folds: Optional[int] = None                # k of a k-fold protocol (None = random split)
    fold: Optional[int] = None                 # which fold is held out (0..folds-1)
    protocol: str = "auto"                     # test protocol: "split" | "loo"; auto = loo for folds
    eval_every: int = 1                        # validate every n epochs (and after the last)
    select_on: str = "mAP8"                    # validation metric that chooses the epoch

    def check_protocol(self) -> None:
        """Check the protocol fields (ConfigError with one sentence on the first bad one); the validation
        metric is stored as the metric registry spells it (``"map8"`` -> ``"mAP8"``)."""
        choice("protocol", self.protocol, PROTOCOLS)
        self.select_on = registered("select_on", self.select_on, METRICS.canonical, metric_names())
        if self.eval_every < 1:
            raise ConfigError(f"eval_every must be a positive integer, got {self.eval_every}")
        self.split_fractions()  # validates the split string
        if not 0.0 < self.train_fraction <= 1.0:
            raise ConfigError(f"train_fraction must lie in (0, 1], got {self.train_fraction}")
        if self.folds is not None:
            if self.folds < 2:
                raise ConfigError(f"folds must be at least 2, got {self.folds}")
            if self.fold is None or not 0 <= self.fold < self.folds:
                raise ConfigError(f"fold must be in 0..{self.folds - 1} when folds={self.folds}, "
                                  f"got {self.fold}")
        elif self.fold is not None:
            raise ConfigError("fold is set but folds is not; set both (e.g. folds=5 fold=0)")

    def split_fractions(self) -> tuple[float, float, float]:
        """The ``split`` string (e.g. ``"80/5/15"``) as train/val/test fractions summing to 1."""
        text = str(self.split).replace(",", "/").replace(" ", "")
        try:
            parts = tuple(float(p) for p in text.split("/"))
        except ValueError:
            parts = ()
        if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0 or parts[0] <= 0:
            raise ConfigError(f"split must be three non-negative train/val/test shares such as "
                              f"'80/5/15', got {self.split!r}")
        total = sum(parts)
        return tuple(p / total for p in parts)  # type: ignore[return-value]

    def resolved_protocol(self) -> str:
        """Test protocol: ``"split"`` (test queries vs training gallery) or ``"loo"``."""
        if self.protocol != "auto":
            return self.protocol
        return "loo" if self.folds is not None else "split"
