"""What every label CSV of the package shares, read once: the header, the rows by line, the paths.

The three label files (emotion manifests, :mod:`apse.data.manifest`; polarity or emotion labels,
:mod:`apse.data.polarity`; vote counts, :mod:`apse.data.votes`) differ in their columns and in what a
row means, and are read the same way: UTF-8 with or without Excel's byte-order mark, a header whose
column names count in any case, blank lines skipped, each row known by its line number (what an
error names), and a listed path taken relative to a base folder unless it is absolute.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Sequence

__all__ = ["LabelCSV", "read_label_csv", "read_header", "first_column", "resolve_path"]


@dataclass(frozen=True)
class LabelCSV:
    """A label CSV's ``header`` as written, its ``columns`` (stripped, lower case) and its non-blank
    ``rows`` as ``(line number, cells)``."""

    header: list[str]
    columns: list[str]
    rows: list[tuple[int, list[str]]]


def read_header(csv_path: str | os.PathLike) -> list[str]:
    """The first row of a CSV (empty for an empty file), without reading the rest."""
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:  # -sig: tolerate Excel's BOM
        return next(csv.reader(fh), [])


def read_label_csv(csv_path: str | os.PathLike, empty_message: str) -> LabelCSV:
    """Read ``csv_path``; a file without even a header raises ``ValueError(empty_message)`` (each reader
    says what header it expected)."""
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:  # -sig: tolerate Excel's BOM
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise ValueError(empty_message)
        rows = [(reader.line_num, row) for row in reader if row and any(c.strip() for c in row)]
    return LabelCSV(header, [h.strip().lower() for h in header], rows)


def first_column(columns: Sequence[str], names: Sequence[str]) -> str | None:
    """The first of ``names`` that is a column (readers accept e.g. ``file`` or ``path``), or None."""
    return next((c for c in names if c in columns), None)


def resolve_path(listed: str, base: str | os.PathLike) -> str:
    """A listed path as the readers key it: relative to ``base`` unless absolute, normalised."""
    return os.path.normpath(listed if os.path.isabs(listed) else os.path.join(base, listed))
