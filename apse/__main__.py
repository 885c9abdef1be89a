"""Command line: ``python -m apse train | evaluate | index | search | data`` (also the ``apse`` script).

``data`` (fetch, list and verify the book's data sets) is :mod:`apse.data.cli`, with its own exit
statuses (``python -m apse data --help``).

User errors (missing files, bad config keys or values, unknown emotion folders) end with one line on
stderr and exit code 2; a diverging run ends with one line and exit code 1. Set ``APSE_DEBUG=1`` for
full tracebacks.

Progress (:mod:`apse.progress`): on a terminal, tqdm bars on stderr; when stderr is not a terminal
(``> train.log 2>&1``, CI, a cluster job), no bars: ``train`` prints one line per epoch on stdout and
each long phase (feature extraction, embedding) one line on stderr when it ends. ``--quiet`` leaves
only the command's result lines on stdout (for ``train``: the chosen epoch and the test metrics)
and errors on stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Each command imports what it needs inside its function: `python -m apse --help` and argument errors
# answer at once instead of after torch, torchvision and the models have loaded (seconds).

_EPILOG_MAIN = """\
examples:
  python -m apse train --config configs/fi-subset-cpu.yaml --data ../shared/data/fi-subset --out runs/cpu
  python -m apse train --config configs/fi-resnet50.yaml --data /data/FI --out runs/fi lr=1e-3 epochs=100
  python -m apse train --config configs/fi-resnet50.yaml --data /data/FI --out runs/fi --resume
  torchrun --nproc_per_node 4 -m apse train --config configs/fi-resnet50.yaml --data /data/FI --out runs/fi
  python -m apse evaluate --checkpoint runs/cpu/model.pt --queries DIR --gallery DIR --json metrics.json
  python -m apse index --checkpoint runs/cpu/model.pt --gallery DIR --out gallery.index
  python -m apse search --index gallery.index --image query.jpg -k 5

A data folder holds one sub-folder per emotion (amusement, contentment, awe, excitement, fear, anger,
disgust, sadness), like the FI release; --data also takes a label file (a manifest, or FlickrLDL's
vote file: ../shared/data/flickrldl/labels.csv), a data set name, or a pooled set such as
fi-subset+flickrldl (apse.data.open_data).
"""


class UserError(Exception):
    """Raised for problems the user can fix; printed as one line, exit code 2."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apse", description="APSE (Attention-aware Polarity Sensitive Embedding) for affective image "
                                 "retrieval: train, evaluate, index and search.",
        epilog=_EPILOG_MAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="{train,evaluate,index,search,data}")
    sub.required = True

    p = sub.add_parser("train", help="train a model (writes OUT/model.pt and OUT/results.json)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train APSE with the papers' protocol: split, train, choose the epoch on the "
                                   "validation split, evaluate the test split once.",
                       epilog="examples:\n"
                              "  python -m apse train --config configs/fi-subset-cpu.yaml --data ../shared/data/fi-subset "
                              "--out runs/cpu\n"
                              "  python -m apse train --config configs/fi-resnet50.yaml --data /data/FI --out runs/fi "
                              "loss=wep epochs=50\n\n"
                              "overrides are key=value pairs of apse.config.TrainConfig, e.g. lr=1e-4 "
                              "pretrained=false batches_per_epoch=null split=70/10/20")
    p.add_argument("--config", "-c", help="YAML config file (default: the papers' settings)")
    p.add_argument("--data", "-d", help="dataset folder with one sub-folder per emotion, a label CSV (FlickrLDL's "
                                        "votes too), a data set name, or a pooled a+b (default: $APSE_DATA)")
    p.add_argument("--out", "-o", required=True, help="output folder for checkpoint.pt, model.pt, results.json")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.pt")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if --out already holds a run")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="print only the result (chosen epoch, test metrics) and errors: no progress "
                        "bars, no per-epoch or per-phase lines")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    p = sub.add_parser("evaluate", help="retrieval metrics of a checkpoint on a query and a gallery folder",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Every query image searches the gallery; the eight metrics of the papers. "
                                   "If --queries and --gallery are the same folder, every image queries all the "
                                   "others (leave-one-out).",
                       epilog="examples:\n"
                              "  python -m apse evaluate --checkpoint runs/cpu/model.pt "
                              "--queries test/ --gallery train/ --json metrics.json\n"
                              "  python -m apse evaluate --checkpoint runs/cpu/model.pt "
                              "--queries mine/ --gallery ../shared/data/twitter1/labels.csv "
                              "--level polarity")
    p.add_argument("--checkpoint", required=True, help="model.pt (or checkpoint.pt) written by `apse train`")
    p.add_argument("--queries", required=True,
                   help="query images: a folder with one sub-folder per emotion (or positive/ and "
                        "negative/), or a labels CSV")
    p.add_argument("--gallery", required=True,
                   help="gallery images: a folder or a labels CSV, as --queries")
    p.add_argument("--level", choices=("emotion", "polarity"), default="emotion",
                   help="emotion: the eight metrics (needs emotion labels); polarity: relevance = "
                        "same polarity for every metric, no mAP8 (polarity-only data: Twitter I)")
    p.add_argument("--json", help="also write {\"metrics\": {...}, ...} to this file")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the metrics (and errors)")

    p = sub.add_parser("index", help="embed a gallery folder once into an index file",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  python -m apse index --checkpoint runs/cpu/model.pt --gallery photos/ "
                              "--out photos.index")
    p.add_argument("--checkpoint", required=True, help="model.pt written by `apse train`")
    p.add_argument("--gallery", required=True, help="folder of images, one sub-folder per emotion")
    p.add_argument("--out", "-o", required=True, help="index file to write")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the result line (and errors)")

    p = sub.add_parser("search", help="the k gallery images nearest to a query image",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  python -m apse search --index photos.index --image query.jpg -k 5")
    p.add_argument("--index", required=True, help="index file written by `apse index`")
    p.add_argument("--image", required=True, help="query image")
    p.add_argument("-k", type=int, default=5, help="number of results (default 5)")
    p.add_argument("--checkpoint", help="model to embed the query (default: the one the index was built with)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    # `apse data ...` parses its own arguments (apse.data.cli), so its options and help live there.
    p = sub.add_parser("data", add_help=False,
                       help="fetch, list and verify the book's data sets (apse data --help)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _device(name: str):
    from apse.distributed import resolve_device

    return resolve_device(name)


def _cmd_train(args) -> int:
    from apse.config import TrainConfig, apply_overrides, load_config
    from apse.training import train

    config = load_config(args.config) if args.config else TrainConfig()
    config = apply_overrides(config, args.overrides)
    from apse.data import open_data

    data = args.data or os.environ.get("APSE_DATA")
    if data is None:
        raise UserError("no dataset: pass --data DIR (one sub-folder per emotion) or set $APSE_DATA")
    try:  # a folder, a label file (FlickrLDL's votes too), a data set name, or a pooled a+b
        data = open_data(data)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    results = train(config, data, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 wrote files and reports
        return 0
    test = results.get("test_metrics") or {}
    print(f"chosen epoch {results['chosen_epoch']} (on {results['selection']['on']}); "
          f"wall time {results['wall_time_s']:.1f}s; wrote {Path(args.out) / 'model.pt'} and "
          f"{Path(args.out) / 'results.json'}")
    if test:
        print("test: " + "  ".join(f"{k} {v:.4f}" for k, v in test.items()))
    return 0


def _cmd_evaluate(args) -> int:
    from apse.data import EmotionImageFolder, build_transforms, open_data
    from apse.data.votes import is_vote_file
    from apse.evaluation import embed_dataset
    from apse.metrics import evaluate_embeddings, higher_is_better
    from apse.checkpoints import load_model

    from apse.emotions import POLARITIES
    from apse.data.polarity import open_labelled

    for name in ("queries", "gallery"):
        if not Path(getattr(args, name)).exists():
            raise UserError(f"{name} folder or labels CSV not found: {getattr(args, name)}")
    device = _device(args.device)
    model, config = load_model(args.checkpoint, device=device)
    tf = build_transforms(False, image_size=config.image_size, resize=config.resize,
                          mean=tuple(model.backbone.mean), std=tuple(model.backbone.std))
    same = Path(args.queries).resolve() == Path(args.gallery).resolve()

    def images(path):  # FI's emotion folders as before; CSVs, polarity folders, --level polarity
        folder = Path(path)
        polarity_dirs = folder.is_dir() and any(e.is_dir() and e.name.strip().lower() in POLARITIES
                                                for e in folder.iterdir())
        if args.level == "emotion" and folder.is_dir() and not polarity_dirs \
                and not (folder / "labels.csv").is_file():
            return EmotionImageFolder(path, transform=tf)
        if args.level == "emotion" and is_vote_file(folder):  # FlickrLDL: majority emotions
            data = open_data(path)
            data.transform = tf
            return data
        return open_labelled(path, tf, level=args.level)

    queries = images(args.queries)
    q_emb, q_lab = embed_dataset(model, queries, args.batch_size, device, progress=not args.quiet,
                                 desc="embedding queries")
    if same:
        metrics = evaluate_embeddings(q_emb, q_lab, None, None, level=args.level)
        protocol = "leave-one-out"
        n_gallery = len(queries)
    else:
        gallery = images(args.gallery)
        g_emb, g_lab = embed_dataset(model, gallery, args.batch_size, device, progress=not args.quiet,
                                     desc="embedding gallery")
        metrics = evaluate_embeddings(q_emb, q_lab, g_emb, g_lab, level=args.level)
        protocol = "queries vs gallery"
        n_gallery = len(gallery)
    print(f"{protocol}: {len(queries)} queries, {n_gallery} gallery images")
    if args.level == "polarity":
        print("polarity level: relevance = same polarity for every metric (no mAP8)")
    width = max(len(k) for k in metrics)
    for k, v in metrics.items():
        print(f"  {k:<{width}}  {v:.4f}" + ("" if higher_is_better(k) else "  (lower is better)"))
    if args.json:
        payload = {"metrics": metrics, "protocol": protocol, "checkpoint": str(Path(args.checkpoint).resolve()),
                   "queries": str(Path(args.queries).resolve()), "gallery": str(Path(args.gallery).resolve()),
                   "num_queries": len(queries), "num_gallery": n_gallery, "level": args.level}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def _cmd_index(args) -> int:
    from apse.retrieval import RetrievalIndex
    from apse.checkpoints import load_model

    if not Path(args.gallery).is_dir():
        raise UserError(f"gallery folder not found: {args.gallery}")
    device = _device(args.device)
    model, config = load_model(args.checkpoint, device=device)
    index = RetrievalIndex.build(model, args.gallery, batch_size=args.batch_size, device=device,
                                 image_size=config.image_size, resize=config.resize,
                                 checkpoint=str(Path(args.checkpoint).resolve()), progress=not args.quiet)
    index.save(args.out)
    print(f"indexed {len(index)} images ({index.dim}-d) -> {args.out}")
    return 0


def _cmd_search(args) -> int:
    from apse.retrieval import RetrievalIndex
    from apse.checkpoints import load_model

    if args.k < 1:
        raise UserError(f"-k must be at least 1, got {args.k}")
    index = RetrievalIndex.load(args.index)
    if args.checkpoint:
        index.model, _ = load_model(args.checkpoint)
    elif index.checkpoint and not Path(index.checkpoint).is_file():
        raise UserError(f"the index was built with {index.checkpoint}, which no longer exists; pass --checkpoint")
    results = index.query(args.image, k=args.k)
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
        return 0
    print(f"{'rank':>4}  {'distance':>8}  {'emotion':<11}  {'polarity':<8}  path")
    for r in results:
        print(f"{r.rank:>4}  {r.distance:>8.4f}  {r.emotion or '-':<11}  {r.polarity or '-':<8}  {r.path}")
    return 0


def _cmd_data(args) -> int:
    from apse.data import cli

    return cli.main(args.rest)


_COMMANDS = {"train": _cmd_train, "evaluate": _cmd_evaluate, "index": _cmd_index, "search": _cmd_search,
             "data": _cmd_data}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m apse`` and the ``apse`` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["data"]:  # its own parser: `apse data --help` must reach it
        return _cmd_data(argparse.Namespace(rest=argv[1:]))
    parser = _build_parser()
    args = parser.parse_args(argv)
    from apse.config import ConfigError
    from apse.training import TrainingDiverged

    debug = os.environ.get("APSE_DEBUG", "") not in ("", "0")
    try:
        return _COMMANDS[args.command](args)
    except (UserError, ConfigError, OSError, ValueError) as exc:  # OSError: missing/unreadable/corrupt files
        if debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"apse {args.command}: error: {message}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        if debug:
            raise
        print(f"apse {args.command}: training diverged: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"apse {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
