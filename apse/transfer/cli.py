"""The command line of apse.transfer (``python -m apse.transfer``): prepare, twitter1, protocol."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch

from apse.io import write_json
from apse.data.polarity import load_twitter1, open_labelled
from apse.checkpoints import load_model
from apse.transfer.fi_models import FI_VARIANTS, dataset_features, fi_checkpoint
from apse.transfer.finetune import FineTune
from apse.transfer.protocol import small_dataset_protocol
from apse.transfer.rows import DEFAULT_RESULTS, ROW_NAMES
from apse.transfer.twitter1 import run_twitter1

__all__ = ["main"]

#: The first line of the package's docstring: the ``--help`` text.
DESCRIPTION = ("Beyond FI: the papers' small-dataset protocol, and Twitter I "
               "(``python -m apse.transfer``).")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m apse.transfer",
                                description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--fi-data", default=None,
                        help="FI folder (default: apse.data.locate_dataset())")
    common.add_argument("--models-dir", default=None,
                        help="where the FI models live (default: ~/.cache/apse/fi-models)")
    common.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    q = sub.add_parser("prepare", parents=[common],
                       help="train the FI models when missing and cache Twitter I's features")
    tw_help = "Twitter I folder (default: ../shared/data/twitter1)"
    q.add_argument("--data", default=None, help=tw_help)
    q = sub.add_parser("twitter1", parents=[common],
                       help="the Twitter I experiment -> results/twitter1")
    q.add_argument("--data", default=None, help=tw_help)
    q.add_argument("--subsets", nargs="+", default=["5", "all"], choices=["5", "4", "all"])
    q.add_argument("--rows", nargs="+", default=None, choices=ROW_NAMES)
    q.add_argument("--folds", type=int, default=5)
    q.add_argument("--force", action="store_true",
                   help="re-run runs found in results/twitter1/runs")
    q.add_argument("--results", default=str(DEFAULT_RESULTS))
    q = sub.add_parser("protocol", parents=[common],
                       help="the small-dataset protocol for any dataset and checkpoint")
    q.add_argument("--data", required=True, help="labels CSV, or a folder of class folders")
    q.add_argument("--checkpoint", required=True, help="an FI-trained model.pt")
    q.add_argument("--level", choices=["polarity", "emotion"], default=None,
                   help="label level (default: the dataset's own)")
    q.add_argument("--zero-shot", action="store_true",
                   help="evaluate the model as it is, no fine-tuning")
    q.add_argument("--folds", type=int, default=5)
    q.add_argument("--epochs", type=int, default=FineTune.epochs)
    q.add_argument("--json", default=None, help="write the per-fold results and summary here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    command = "python -m apse.transfer " + " ".join(sys.argv[1:] if argv is None else list(argv))
    if args.command == "prepare":
        paths = {v: fi_checkpoint(v, fi_data=args.fi_data, models_dir=args.models_dir)
                 for v in FI_VARIANTS}
        model, config = load_model(paths["apse-gep"])
        dataset_features(load_twitter1(args.data, "all"), model, config)
        return 0
    if args.command == "twitter1":
        run_twitter1(subsets=args.subsets, folds=args.folds, rows=args.rows, force=args.force,
                     results_dir=args.results, data=args.data, fi_data=args.fi_data,
                     models_dir=args.models_dir, command=command)
        return 0
    dataset = open_labelled(args.data, level=args.level)
    settings = None if args.zero_shot else FineTune(epochs=args.epochs)
    result = small_dataset_protocol(dataset, args.checkpoint, level=args.level, folds=args.folds,
                                    settings=settings)
    print("mean over folds: " + "  ".join(f"{k} {m:.4f}±{sd:.4f}"
                                          for k, (m, sd) in result["summary"].items()))
    if args.json:
        write_json(Path(args.json), {"command": command, **result})
    return 0
