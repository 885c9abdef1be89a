"""The runs of an experiment: each variant x held-out fold x seed as a :class:`RunSpec` (its config and key).

One recipe turns a variant into a run's config, and everything that needs a run's config (the runner,
the reports, the figures, the command line's dry run, the benchmarks) takes it from
:func:`experiment_specs`: the base config, then the experiment's overrides, the variant's, the CPU,
the regime's (:func:`~apse.experiments.regimes.run_overrides`), the caller's, and last the protocol's
fold and seed. The key of each run is :func:`apse.runs.run_key` of that config.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, replace
from typing import Any, Sequence

from apse.config import load_config
from apse.experiments.regimes import DEFAULT_BASE, run_overrides
from apse.experiments.tables import K_FOLDS, Experiment, Variant, get_experiment
from apse.runs import run_key

__all__ = ["DEFAULT_DATA", "RunSpec", "data_key", "expand", "select_variants", "experiment_specs"]

#: The data set of the book's experiments: its runs' keys do not name it (they predate the others).
DEFAULT_DATA = "fi-subset"


@dataclass
class RunSpec:
    """One run of an experiment: a variant on one held-out fold with one seed, its config and key."""

    experiment: str
    variant: Variant
    fold: int
    seed: int
    config: Any          # TrainConfig
    key: str

    @property
    def filename(self) -> str:
        return f"{self.variant.name}-f{self.fold}-s{self.seed}-{self.key}.json"


def data_key(data: str | None) -> dict[str, str]:
    """What an experiment's data set adds to its runs' keys and records: nothing for the FI subset
    (its keys predate the other data sets), ``{"data": name}`` for another one."""
    return {} if data in (None, DEFAULT_DATA) else {"data": data}


def expand(experiment: Experiment, base, *, folds: int | None = None, seeds: Sequence[int] = (0,),
           k: int = K_FOLDS, overrides: dict | None = None, extra_key: dict | None = None) -> list[RunSpec]:
    """Every run of ``experiment``: variants x held-out folds 0..folds-1 (of a k-fold partition) x seeds.

    ``base`` is a TrainConfig; ``overrides`` apply to every run after the experiment's and variant's own
    (:func:`experiment_specs` passes the CPU's, the regime's and the caller's).
    """
    folds = experiment.folds if folds is None else int(folds)
    extra_key = {**data_key(experiment.data), **(extra_key or {})} or None
    if not 1 <= folds <= k:
        raise ValueError(f"folds must be between 1 and k={k}, got {folds}")
    specs = []
    for variant in experiment.variants:
        changes = {**experiment.overrides, **variant.overrides, **(overrides or {}),
                   "folds": k, "fold": 0, "seed": int(seeds[0]), "protocol": "split"}
        template = base.replace(**changes)  # validated once per variant (validation is not cheap)
        for fold in range(folds):
            for seed in seeds:
                # fold in 0..k-1 and an int seed are valid by construction: set them on a copy
                cfg = copy.copy(template)
                cfg.fold, cfg.seed = fold, int(seed)
                key = run_key(cfg.to_dict(), fold, seed, variant.untrained, extra_key)
                specs.append(RunSpec(experiment.name, variant, fold, int(seed), cfg, key))
    return specs


def select_variants(experiment: Experiment, names: Sequence[str] | None) -> Experiment:
    """``experiment`` with just the variants ``names`` (in its own order; None or empty: all of them).
    A name it has no variant of is an error, which lists the ones it has."""
    if not names:
        return experiment
    unknown = sorted(set(names) - {v.name for v in experiment.variants})
    if unknown:
        raise ValueError(f"{experiment.name} has no variant {unknown[0]!r}; its variants are: "
                         f"{', '.join(v.name for v in experiment.variants)}")
    return replace(experiment, variants=tuple(v for v in experiment.variants if v.name in names))


def experiment_specs(experiment: str | Experiment, *, base: str | os.PathLike | Any = DEFAULT_BASE,
                     regime: str = "frozen", overrides: dict | None = None, folds: int | None = None,
                     seeds: Sequence[int] = (0,), k: int = K_FOLDS) -> list[RunSpec]:
    """The runs of ``experiment`` (a name or an :class:`Experiment`) in ``regime``: the one recipe from
    a variant to a run's config (module docstring). ``base``: a config file or a loaded TrainConfig;
    ``overrides``: the caller's (the command line's ``--epochs`` / ``--set``)."""
    experiment = get_experiment(experiment) if isinstance(experiment, str) else experiment
    base_cfg = load_config(base) if isinstance(base, (str, os.PathLike)) else base
    return expand(experiment, base_cfg, folds=folds, seeds=seeds, k=k, overrides=run_overrides(regime, overrides))
