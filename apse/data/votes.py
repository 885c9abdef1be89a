"""Vote-labelled images: a label CSV with one vote count per emotion (FlickrLDL's ``labels.csv``).

FlickrLDL (Yang, Sun and Sun, AAAI 2017) asked 11 viewers to choose one of Mikels' eight emotions for
each image, so an image has a *distribution* of votes, not a label. The retrieval metrics and every
loss of the book need one emotion per image (mAP8's relevance is "same emotion"), so this module turns
votes into labels, by two documented rules:

- **Ties are dropped.** The label is the emotion with the most votes; where the top count is shared
  (106 of the 861 images here) there is no majority, and the image is left out. Keeping them as soft
  labels would need a graded relevance that none of the papers' metrics has.
- **Polarity conflicts are dropped** (``conflicts="drop"``, the default). The book's polarity of an
  image is its emotion's polarity (the papers' hierarchy, used by the EP loss and mAP2). For 19 images
  the side with more of the 11 votes is not the majority emotion's side (e.g. 4 votes sadness, 6
  votes spread over positive emotions). Dropping them makes the polarity the model is scored on agree
  with the votes for every image kept; ``conflicts="keep"`` keeps them with their emotion's polarity.

What was dropped, and why, is kept (:attr:`VoteLabels.dropped`), so a reader can count it. The CSV
needs a path column (``file`` or ``path``) and the eight ``votes_<emotion>`` columns; an ``emotion``
column, when present, must agree with the votes (empty where they tie).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from apse.data.labelcsv import first_column, read_header, read_label_csv, resolve_path
from apse.emotions import EMOTIONS, NUM_EMOTIONS, emotion_index, polarity_of

__all__ = ["CONFLICT_RULES", "VOTE_COLUMNS", "VoteLabels", "has_vote_columns", "is_vote_file", "read_votes"]

#: The vote columns, in the papers' emotion order.
VOTE_COLUMNS: tuple[str, ...] = tuple(f"votes_{name}" for name in EMOTIONS)
#: What to do with an image whose vote polarity is not its majority emotion's polarity.
CONFLICT_RULES: tuple[str, ...] = ("drop", "keep")
PATH_COLUMNS: tuple[str, ...] = ("path", "file")


@dataclass
class VoteLabels:
    """What a vote CSV gives: ``samples`` [(path, majority emotion)] of the files that exist, in file
    order; ``votes`` {path: the 8 vote counts}; ``origin`` path -> ``"<csv> line <n>"``; ``missing``
    [(line, path)] of listed files that do not exist; ``dropped`` {"tie": [...], "polarity conflict":
    [...]} of the paths left out."""

    samples: list[tuple[str, int]] = field(default_factory=list)
    votes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    missing: list[tuple[int, str]] = field(default_factory=list)
    dropped: dict[str, list[str]] = field(default_factory=lambda: {"tie": [], "polarity conflict": []})
    duplicates: int = 0


def has_vote_columns(header: list[str]) -> bool:
    """True when a CSV header has any ``votes_<emotion>`` column (then all eight are required)."""
    return any(h.strip().lower().startswith("votes_") for h in header)


def is_vote_file(path: str | os.PathLike) -> bool:
    """True for a CSV label file whose header has vote columns (a folder: its ``labels.csv``)."""
    path = Path(path)
    csv_path = path / "labels.csv" if path.is_dir() else path
    if not csv_path.is_file() or csv_path.suffix.lower() != ".csv":
        return False
    return has_vote_columns(read_header(csv_path))


def majority(votes: np.ndarray) -> int | None:
    """The emotion with the most votes, or None where the top count is shared (or all are 0)."""
    top = int(votes.max())
    winners = np.flatnonzero(votes == top)
    return int(winners[0]) if top > 0 and len(winners) == 1 else None


def vote_polarity(votes: np.ndarray) -> int | None:
    """0 (positive) or 1 (negative): the side with more votes; None where the two sides tie."""
    half = NUM_EMOTIONS // 2
    pos, neg = int(votes[:half].sum()), int(votes[half:].sum())
    return None if pos == neg else (0 if pos > neg else 1)


def read_votes(csv_path: Path, base: Path, *, conflicts: str = "drop") -> VoteLabels:
    """Parse the vote CSV ``csv_path``; relative paths are resolved against ``base``.

    Raises ValueError naming the line for a missing column, a vote that is not a non-negative
    integer, an ``emotion`` that disagrees with the votes, or a path listed twice with different
    votes."""
    if conflicts not in CONFLICT_RULES:
        raise ValueError(f"conflicts must be one of {CONFLICT_RULES}, got {conflicts!r}")
    name = str(csv_path)
    result = VoteLabels()
    table = read_label_csv(csv_path, f"label file {name!r} is empty; expected a header with 'file' and "
                                     f"{', '.join(VOTE_COLUMNS)}")
    header, columns = table.header, table.columns
    path_col = first_column(columns, PATH_COLUMNS)
    missing = ([] if path_col else ["file"]) + [c for c in VOTE_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"label file {name!r} line 1: missing column(s) {', '.join(missing)}; a "
                         f"vote file needs 'file' (or 'path') and {', '.join(VOTE_COLUMNS)}")
    ip = columns.index(path_col)
    iv = [columns.index(c) for c in VOTE_COLUMNS]
    ie = columns.index("emotion") if "emotion" in columns else None
    seen: dict[str, tuple[tuple[int, ...], int]] = {}
    for line, row in table.rows:
        if len(row) < len(header):
            raise ValueError(f"label file {name!r} line {line}: expected {len(header)} columns, "
                             f"got {len(row)}: {row}")
        rel = row[ip].strip()
        if not rel:
            raise ValueError(f"label file {name!r} line {line}: empty path")
        try:
            counts = tuple(int(row[i]) for i in iv)
        except ValueError:
            raise ValueError(f"label file {name!r} line {line}: votes must be integers, got "
                             f"{[row[i] for i in iv]}") from None
        if min(counts) < 0:
            raise ValueError(f"label file {name!r} line {line}: negative vote count in {counts}")
        votes = np.asarray(counts)
        label = majority(votes)
        if ie is not None:
            stated = row[ie].strip()
            given = emotion_index(stated) if stated else None
            if given != label:
                raise ValueError(
                    f"label file {name!r} line {line}: 'emotion' is {stated or 'empty'!r} but the "
                    f"votes {counts} give {EMOTIONS[label] if label is not None else 'a tie'}")
        path = resolve_path(rel, base)
        if path in seen:
            if seen[path][0] != counts:
                raise ValueError(f"label file {name!r} line {line}: {rel!r} is listed again with "
                                 f"other votes (first on line {seen[path][1]})")
            result.duplicates += 1
            continue
        seen[path] = (counts, line)
        if label is None:
            result.dropped["tie"].append(path)
            continue
        side = vote_polarity(votes)
        if conflicts == "drop" and side is not None and side != polarity_of(label):
            result.dropped["polarity conflict"].append(path)
            continue
        if not os.path.isfile(path):
            result.missing.append((line, path))
            continue
        result.origin[path] = f"{csv_path.name} line {line}"
        result.votes[path] = counts
        result.samples.append((path, label))
    return result
