"""The command line ``python -m apse.experiments NAME``: run an experiment (or all, or the index) from flags.

Its choices come from the registry (:data:`apse.experiments.EXPERIMENTS`, :data:`ORDER`); ``--dry-run``
lists the runs and whether each is cached, without training.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from apse.config import apply_overrides, load_config
from apse.experiments.figures import make_figures
from apse.experiments.regimes import DEFAULT_BASE, DEFAULT_RESULTS, REGIMES, regime_overrides
from apse.experiments.runner import _find_cached, run_experiment
from apse.experiments.specs import experiment_specs
from apse.experiments.summary import write_index
from apse.experiments.tables import EXPERIMENTS, ORDER

__all__ = ["DESCRIPTION", "main"]

#: The help text's description (the first line of the package's docstring).
DESCRIPTION = "The papers' experiments, re-run on the FI subset: ``python -m apse.experiments NAME``."


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m apse.experiments", description=DESCRIPTION)
    p.add_argument("name", help=f"experiment: {', '.join(EXPERIMENTS)}, 'all' (in the order {', '.join(ORDER)}), "
                                "or 'index' (write results/README.md from the summaries)")
    p.add_argument("--folds", type=int, default=None, help="held-out folds to run (of the 5-fold partition); "
                                                           "default: the experiment's (5 or 3)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--force", action="store_true", help="re-run runs found in the cache")
    p.add_argument("--results", default=str(DEFAULT_RESULTS), help="results folder (default: results/)")
    p.add_argument("--config", default=str(DEFAULT_BASE), help="base config (default: configs/fi-subset-cpu.yaml)")
    p.add_argument("--data", default=None, help="dataset folder (default: apse.data.locate_dataset())")
    p.add_argument("--epochs", type=int, default=None, help="epochs for every run (default: the base config's)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="further config overrides")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the heads are small, and on 2 busy cores one thread ran an "
                        "APSE epoch 4x faster than two)")
    p.add_argument("--regime", choices=REGIMES, default="frozen",
                   help="frozen: the base config's cached features (default); finetune: every layer "
                        "trained on images (configs/fi-subset-finetune-cpu.yaml), into results/NAME-finetune")
    p.add_argument("--only", nargs="+", default=None, metavar="VARIANT",
                   help="run these variants of the experiment only (its summary then lists only them)")
    p.add_argument("--only-folds", nargs="+", type=int, default=None, metavar="FOLD",
                   help="run these held-out folds only (0-based; with --folds 5 unless --folds is given)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether they are cached")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m apse.experiments``: run, dry-run or index the experiments named on the command line."""
    args = _parse(argv)
    if args.name == "index":
        print(write_index(args.results))
        return 0
    names = list(ORDER) if args.name == "all" else [EXPERIMENTS.canonical(args.name)]  # validates the name
    overrides: dict[str, Any] = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.set:
        # typed values (dicts, nulls, booleans) exactly as `python -m apse train KEY=VALUE` reads them
        # (on the base config in the chosen regime, whose settings the overrides may presuppose)
        in_regime = load_config(args.config).replace(**regime_overrides(args.regime))
        typed = apply_overrides(in_regime, args.set).to_dict()
        for item in args.set:
            key = item.split("=", 1)[0].strip()
            overrides[key] = typed[key]
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python -m apse.experiments " + " ".join(sys.argv[1:] if argv is None else list(argv))
    for n in names:
        if args.dry_run:
            specs = experiment_specs(n, base=args.config, regime=args.regime, overrides=overrides,
                                     folds=args.folds, seeds=args.seeds)
            for s in specs:
                hit = _find_cached(Path(args.results), s, args.regime)
                print(f"{n}: {s.filename}  {'cached' if hit else 'to run'}")
            continue
        if n == "figures":
            make_figures(results_dir=args.results, base=args.config, data=args.data, overrides=overrides,
                         command=command, regime=args.regime)
            continue
        run_experiment(n, folds=args.folds, seeds=args.seeds, force=args.force, results_dir=args.results,
                       base=args.config, data=args.data, overrides=overrides, command=command,
                       regime=args.regime, only=args.only, only_folds=args.only_folds)
    return 0
