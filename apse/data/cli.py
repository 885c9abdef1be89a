"""``python -m apse data get | list | verify``: the book's public data sets, by one command.

The main command line (:mod:`apse.__main__`) hands everything after ``data`` to :func:`main`, which
parses it, prints errors itself (a failed download lists every file it names) and returns the exit
status of :data:`apse.data.fetch.EXIT_CODES`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from apse.data.fetch import BASE_URL_ENV, EXIT_CODES, FetchError, fetch
from apse.data.locate import default_data_root, locate_dataset
from apse.data.sources import SOURCES, get_source, verify

_EXIT_TEXT = "exit status:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())

_EPILOG = f"""\
examples:
  python -m apse data get fi-subset
  python -m apse data get all --dest ~/apse-data      # then: export APSE_DATA=~/apse-data
  python -m apse data get twitter1 --base-url http://mirror.example.org/github
  python -m apse data list
  python -m apse data verify flickrldl

sets: {', '.join(SOURCES)} (research and teaching use only; each prints its licence note).
Files come from https://raw.githubusercontent.com/OWNER/REPO/COMMIT/PATH, pinned by commit;
--base-url or ${BASE_URL_ENV} names a mirror laid out the same way.

{_EXIT_TEXT}
"""


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``apse data`` and its sub-commands."""
    data = argparse.ArgumentParser(prog="apse data",
                          description="The book's three public data sets: fetch them (only the "
                                      "files of the shipped manifest, each SHA-256 checked), list "
                                      "where they are, verify a folder.",
                          epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = data.add_subparsers(dest="data_command", metavar="{get,list,verify}")
    commands.required = True
    names = list(SOURCES) + ["all"]

    p = commands.add_parser("get", help="download a data set (resumable; verifies every file)",
                            epilog=_EXIT_TEXT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="+", metavar="NAME", help=f"one or more of {', '.join(names)}")
    p.add_argument("--dest", help="the folder that holds the data sets; NAME goes to DEST/NAME "
                                  "(default: $APSE_DATA, else <repo>/data in a checkout, else "
                                  "~/.local/share/apse)")
    p.add_argument("--base-url", help=f"a mirror laid out as OWNER/REPO/COMMIT/PATH (default: "
                                      f"${BASE_URL_ENV}, else raw.githubusercontent.com)")
    p.add_argument("--jobs", "-j", type=int, default=8, help="downloads at once (default 8)")
    p.add_argument("--retries", type=int, default=4,
                   help="further tries of a failed file, with exponential back-off (default 4)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary lines")

    commands.add_parser("list", help="each data set, where it was found and whether it verifies")

    p = commands.add_parser("verify", help="check a data set folder file by file (SHA-256)",
                            epilog=_EXIT_TEXT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="NAME", help=f"one of {', '.join(SOURCES)}")
    p.add_argument("--path", help="the folder to check (default: where `data list` finds it)")
    return data


def _names(values: list[str]) -> list[str]:
    if "all" in [v.strip().lower() for v in values]:
        return list(SOURCES)
    return list(dict.fromkeys(get_source(v).name for v in values))


def _get(args) -> int:
    if args.jobs < 1 or args.retries < 0:
        print("apse data get: error: --jobs must be >= 1 and --retries >= 0", file=sys.stderr)
        return 2
    root = Path(args.dest).expanduser() if args.dest else default_data_root()
    status = 0
    for name in _names(args.names):
        try:
            result = fetch(get_source(name), root / name, url=args.base_url, jobs=args.jobs,
                           retries=args.retries, progress=not args.quiet)
        except FetchError as exc:
            print(f"apse data get: error: {exc}", file=sys.stderr)
            status = max(status, exc.exit_code)
            if exc.exit_code == 2:
                break  # the destination cannot take anything: the next set would fail the same
            continue
        if not args.quiet:
            print(result.summary())
    return status


def _list(args) -> int:
    rows = []
    for name, source in SOURCES.items():
        try:
            where = locate_dataset(name=name)
        except FileNotFoundError as exc:
            incomplete = "incomplete" in str(exc)
            rows.append((name, "incomplete download" if incomplete else "not found",
                         f"python -m apse data get {name}"))
            continue
        rows.append((name, str(where), verify(source, where).summary()))
    width = max(len(r[0]) for r in rows)
    for name, where, state in rows:
        print(f"{name:<{width}}  {where}\n{'':<{width}}  {state}")
    return 0


def _verify(args) -> int:
    source = get_source(args.name)
    root = Path(args.path).expanduser() if args.path else locate_dataset(name=source.name)
    report = verify(source, root)
    print(f"{source.name} in {root}: {report.summary()}")
    for label, paths in (("missing", report.missing), ("other bytes", report.wrong)):
        for path in paths[:20]:
            print(f"  {label}: {path}")
        if len(paths) > 20:
            print(f"  ... and {len(paths) - 20} more {label}")
    return 0 if report.passed else 4


def main(argv: list[str] | None = None) -> int:
    """Run ``apse data`` with the arguments ``argv``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return {"get": _get, "list": _list, "verify": _verify}[args.data_command](args)
    except (ValueError, FileNotFoundError) as exc:  # an unknown set name; a set not found
        print(f"apse data {args.data_command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"apse data {args.data_command}: interrupted; run the same command again to "
              f"resume", file=sys.stderr)
        return 130
