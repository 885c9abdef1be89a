"""CSV manifests: the label files of IAPSa, ArtPhoto and Abstract (a ``path`` and an ``emotion`` column).

:func:`read_manifest` parses one into the files it lists, line by line, and raises on what cannot be a
label file (a missing column, an unknown emotion, a path listed with two emotions), naming the line;
what to do with listed files that do not exist (raise or skip) is the caller's choice
(:meth:`apse.data.EmotionImageFolder.from_manifest`), so they are returned, not raised.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from apse.data.labelcsv import read_label_csv, resolve_path
from apse.emotions import EMOTIONS, NUM_EMOTIONS, emotion_index


@dataclass
class Manifest:
    """What a manifest lists: ``samples`` [(path, label)] of the files that exist, in file order;
    ``origin`` path -> ``"<csv name> line <n>"``; ``missing`` [(line, path)] of listed files that do
    not exist; ``duplicates``, how many lines repeat an earlier line's path (with the same emotion)."""

    samples: list[tuple[str, int]] = field(default_factory=list)
    origin: dict[str, str] = field(default_factory=dict)
    missing: list[tuple[int, str]] = field(default_factory=list)
    duplicates: int = 0


def parse_emotion(value: str) -> int:
    """An emotion given by name (any case) or by index 0..7 in the papers' order."""
    text = str(value).strip()
    if text.lstrip("+-").isdigit():
        index = int(text)
        if not 0 <= index < NUM_EMOTIONS:
            raise ValueError(f"emotion index {index} is out of range 0..{NUM_EMOTIONS - 1} "
                             f"({', '.join(f'{i}={n}' for i, n in enumerate(EMOTIONS))})")
        return index
    return emotion_index(text)


def read_manifest(csv_path: Path, base: Path) -> Manifest:
    """Parse the manifest `csv_path`; relative paths are resolved against `base`.

    The CSV needs a header with (at least) the columns ``path`` and ``emotion`` (any order, any case;
    more columns are ignored); ``emotion`` is read by :func:`parse_emotion`. Blank lines are ignored.
    """
    result = Manifest()
    table = read_label_csv(csv_path, f"manifest {str(csv_path)!r} is empty; expected a header 'path,emotion'")
    header, columns = table.header, table.columns
    missing = [c for c in ("path", "emotion") if c not in columns]
    if missing:
        raise ValueError(
            f"manifest {str(csv_path)!r} line 1: missing column(s) {', '.join(missing)}; expected a "
            f"header with 'path' and 'emotion', got {header}"
        )
    ip, ie = columns.index("path"), columns.index("emotion")
    seen: dict[str, tuple[int, int]] = {}
    for lineno, row in table.rows:
        if len(row) <= max(ip, ie):
            raise ValueError(f"manifest {str(csv_path)!r} line {lineno}: expected {len(header)} "
                             f"columns, got {len(row)}: {row}")
        rel, emo = row[ip].strip(), row[ie].strip()
        if not rel:
            raise ValueError(f"manifest {str(csv_path)!r} line {lineno}: empty path")
        try:
            label = parse_emotion(emo)
        except ValueError as exc:
            raise ValueError(f"manifest {str(csv_path)!r} line {lineno}: {exc}") from None
        path = resolve_path(rel, base)
        if path in seen:
            if seen[path][0] != label:
                raise ValueError(
                    f"manifest {str(csv_path)!r} line {lineno}: {rel!r} is listed as "
                    f"{EMOTIONS[label]!r} but line {seen[path][1]} lists it as {EMOTIONS[seen[path][0]]!r}"
                )
            result.duplicates += 1
            continue
        seen[path] = (label, lineno)
        if not os.path.isfile(path):
            result.missing.append((lineno, path))
            continue
        result.origin[path] = f"{csv_path.name} line {lineno}"
        result.samples.append((path, label))
    return result
