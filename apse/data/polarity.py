"""Images labelled by polarity (or emotion) from a CSV or from class folders, and Twitter I.

:class:`apse.data.EmotionImageFolder` reads FI: one folder per *emotion*. Many affective datasets
have only the upper level of APSE's label hierarchy, the polarity (positive / negative): Twitter I
(You et al., AAAI 2015), the most used image-polarity benchmark, is one. :class:`LabelledImages`
reads both kinds, and says which it holds in :attr:`LabelledImages.level`:

- ``level == "polarity"``: labels are 0 = positive, 1 = negative (:data:`apse.emotions.POLARITIES`);
- ``level == "emotion"``: labels are emotion indices 0..7 in the papers' order (as everywhere else).

Polarity labels are never turned into emotions: asking a polarity-only dataset for emotion labels
(:meth:`LabelledImages.labels_at`, ``level="emotion"``) is an error. The other way, emotion ->
polarity, is APSE's own hierarchy (:func:`apse.emotions.polarity_of`) and is allowed.

Sources:

- :meth:`LabelledImages.from_csv`: a CSV with a header ``file,label[,extra columns]``. The file
  column is ``file`` or ``path``; the label column ``polarity`` (positive / negative), ``emotion``
  (an emotion name, or its index 0..7) or ``label`` (names of either level, one level for the whole
  file). Extra columns are kept per image in :attr:`LabelledImages.extras` (Twitter I's
  ``agreement``). Errors name the CSV file and line: an unknown label, a row without a file, a file
  that does not exist or cannot be decoded, a file listed twice.
- :meth:`LabelledImages.from_folder`: ``root/positive/**`` and ``root/negative/**`` (polarity level)
  or FI's ``root/<emotion>/**`` (emotion level); any other sub-folder name is an error.
- :func:`open_labelled`: either of the two, by what the path is (a CSV file, a folder of class
  folders, or a folder holding a ``labels.csv``).
- :func:`load_twitter1`: Twitter I and its agreement subsets (:data:`TWITTER1_SUBSETS`).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from apse.data.images import (
    CHECKS, CorruptImageError, ImageFileDataset, _check_decode, _check_header, is_image_file,
)
from apse.data.labelcsv import first_column, read_label_csv, resolve_path
from apse.data.locate import check_complete, not_found_hint, usual_places
from apse.emotions import EMOTIONS, NUM_EMOTIONS, POLARITIES, polarity_of

__all__ = ["LEVELS", "LabelledImages", "open_labelled", "locate_twitter1", "load_twitter1",
           "TWITTER1_SUBSETS", "twitter1_label", "parse_polarity"]

LEVELS = ("polarity", "emotion")
_FILE_COLUMNS = ("file", "path")
_LABEL_COLUMNS = ("polarity", "emotion", "label")


def parse_polarity(value: str) -> int:
    """0 for "positive", 1 for "negative" (any case); otherwise ValueError naming the valid ones."""
    key = str(value).strip().lower()
    if key in POLARITIES:
        return POLARITIES.index(key)
    raise ValueError(f"unknown polarity {value!r}; valid values are: {', '.join(POLARITIES)}")


def _parse_label(value: str, column: str) -> tuple[str, int]:
    """(level, index) of one CSV label; `column` is the label column's name."""
    text = str(value).strip()
    key = text.lower()
    if column == "polarity":
        return "polarity", parse_polarity(text)
    if column == "emotion":
        if key.lstrip("+-").isdigit():
            index = int(key)
            if not 0 <= index < NUM_EMOTIONS:
                raise ValueError(f"emotion index {index} is out of range 0..{NUM_EMOTIONS - 1}")
            return "emotion", index
        if key in EMOTIONS:
            return "emotion", EMOTIONS.index(key)
        hint = " (a polarity: use a 'polarity' column)" if key in POLARITIES else ""
        raise ValueError(f"unknown emotion {value!r}{hint}; valid names are: {', '.join(EMOTIONS)}")
    if key in POLARITIES:
        return "polarity", POLARITIES.index(key)
    if key in EMOTIONS:
        return "emotion", EMOTIONS.index(key)
    raise ValueError(f"unknown label {value!r}; valid labels are the polarities "
                     f"({', '.join(POLARITIES)}) or the emotions ({', '.join(EMOTIONS)})")


class LabelledImages(ImageFileDataset):
    """Images with polarity or emotion labels; build with :meth:`from_csv` or :meth:`from_folder`.

    Attributes: ``samples`` [(path, label)] sorted by label then path, ``targets`` [label],
    ``level`` ("polarity" or "emotion"), ``classes`` (:data:`POLARITIES` or :data:`EMOTIONS`),
    ``extras`` [dict column -> text] aligned with ``samples`` (empty dicts for folders), ``root``
    (paths in split files and feature caches are relative to it), ``source`` (the CSV or folder).
    ``__getitem__`` returns ``(transform(RGB image) or the PIL image, label)``.

    Files are checked when listed (``check="header"``: PIL parses each header, ~0.1 ms a file;
    ``"full"`` decodes them; ``"none"``); a file that fails raises :class:`CorruptImageError` naming
    it and, for a CSV, its line.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], level: str, *, root: str | os.PathLike,
                 extras: Sequence[Mapping[str, str]] | None = None,
                 transform: Callable | None = None,
                 source: str | os.PathLike | None = None, origin: Mapping[str, str] | None = None,
                 check: str = "header") -> None:
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        n_classes = len(POLARITIES) if level == "polarity" else NUM_EMOTIONS
        extras = [dict(e) for e in extras] if extras is not None else [{} for _ in samples]
        if len(extras) != len(samples):
            raise ValueError(f"got {len(extras)} extras for {len(samples)} samples")
        for path, label in samples:
            if not 0 <= int(label) < n_classes:
                raise ValueError(f"label {label} of {path} is not a {level} index "
                                 f"0..{n_classes - 1}")
        order = sorted(range(len(samples)), key=lambda i: (int(samples[i][1]), str(samples[i][0])))
        self.samples = [(str(samples[i][0]), int(samples[i][1])) for i in order]
        self.extras = [extras[i] for i in order]
        self.targets = [label for _, label in self.samples]
        self.level = level
        self.classes = POLARITIES if level == "polarity" else EMOTIONS
        self.root = Path(root)
        self.transform = transform
        self.source = str(source) if source is not None else str(root)
        self._origin = dict(origin or {})
        if not self.samples:
            raise ValueError(f"no images in {self.source}")
        if check not in CHECKS:
            raise ValueError(f"check must be 'header', 'full' or 'none', got {check!r}")
        if check != "none":
            self._check(full=check == "full")

    # -- construction ------------------------------------------------------------------------
    def _check(self, full: bool) -> None:
        fn = _check_decode if full else _check_header
        for path, _ in self.samples:
            reason = fn(path)
            if reason is not None:
                raise CorruptImageError(f"{path}{self._listed_at(path)} cannot be decoded: {reason}")

    @classmethod
    def from_csv(cls, csv_path: str | os.PathLike, root: str | os.PathLike | None = None,
                 transform: Callable | None = None, *, level: str | None = None,
                 check: str = "header") -> "LabelledImages":
        """Read a labels CSV (module docstring). Relative paths are resolved against `root`, by
        default the CSV's folder. ``level="polarity"`` reads emotion labels as their polarities;
        ``level="emotion"`` on a file of polarities raises (polarity-only data has no emotions)."""
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise FileNotFoundError(f"labels CSV not found: {csv_path}")
        if level is not None and level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        base = Path(root) if root is not None else csv_path.parent
        name = str(csv_path)
        table = read_label_csv(csv_path, f"{name} is empty; expected a header such as 'file,polarity'")
        header, columns = table.header, table.columns
        file_col, label_col = first_column(columns, _FILE_COLUMNS), first_column(columns, _LABEL_COLUMNS)
        if file_col is None or label_col is None:
            raise ValueError(f"{name} line 1: expected a header with a file column (file or "
                             f"path) and a label column (polarity, emotion or label), "
                             f"got {header}")
        i_file, i_label = columns.index(file_col), columns.index(label_col)
        extra_cols = [(i, c) for i, c in enumerate(columns) if i not in (i_file, i_label)]
        samples, extras, origin = [], [], {}
        seen: dict[str, int] = {}
        missing: list[str] = []
        file_level = None
        for line, row in table.rows:
            where = f"{name} line {line}"
            if len(row) != len(header):
                raise ValueError(f"{where}: expected {len(header)} columns "
                                 f"({','.join(header)}), got {len(row)}: {row}")
            rel = row[i_file].strip()
            if not rel:
                raise ValueError(f"{where}: empty file name")
            try:
                row_level, label = _parse_label(row[i_label], label_col)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            if file_level is None:
                file_level = row_level
            elif row_level != file_level:
                raise ValueError(f"{where}: {row[i_label].strip()!r} is a {row_level} but "
                                 f"earlier rows hold {file_level} labels; one file holds "
                                 "one level")
            path = resolve_path(rel, base)
            if path in seen:
                raise ValueError(f"{where}: {rel!r} is listed again (first on line "
                                 f"{seen[path]}); each file may appear once")
            seen[path] = line
            if not os.path.isfile(path):
                missing.append(f"line {line}: {path}")
                continue
            origin[path] = f"{csv_path.name} line {line}"
            samples.append((path, label))
            extras.append({c: row[i].strip() for i, c in extra_cols})
        if missing:
            more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
            raise FileNotFoundError(f"{name} lists {len(missing)} file(s) that do not exist "
                                    f"(relative to {base}): {'; '.join(missing[:5])}{more}")
        if file_level is None:
            raise ValueError(f"{name} has a header but no rows")
        samples, file_level = _to_level(samples, file_level, level, name)
        return cls(samples, file_level, root=base, extras=extras, transform=transform,
                   source=csv_path, origin=origin, check=check)

    @classmethod
    def from_folder(cls, root: str | os.PathLike, transform: Callable | None = None, *,
                    level: str | None = None, check: str = "header") -> "LabelledImages":
        """``root/positive/**``, ``root/negative/**`` (polarity) or ``root/<emotion>/**`` (emotion).

        Sub-folder names are matched case-insensitively; hidden ones (``.x``, ``__x``) and files in
        `root` itself are ignored; images are found by content (:func:`apse.data.is_image_file`)."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"folder not found: {root}")
        folders: dict[str, list[Path]] = {}
        for entry in sorted(root.iterdir()):
            if entry.name.startswith((".", "__")) or not entry.is_dir():
                continue
            key = entry.name.strip().lower()
            if key in POLARITIES:
                folders.setdefault("polarity", []).append(entry)
            elif key in EMOTIONS:
                folders.setdefault("emotion", []).append(entry)
            else:
                raise ValueError(f"folder {entry.name!r} in {root} is neither a polarity "
                                 f"({', '.join(POLARITIES)}) nor an emotion "
                                 f"({', '.join(EMOTIONS)})")
        if not folders:
            raise ValueError(f"no class folders in {root}; expected positive/ and negative/ "
                             "(or one folder per emotion)")
        if len(folders) > 1:
            pol, emo = ([p.name for p in folders[k]] for k in ("polarity", "emotion"))
            raise ValueError(f"{root} mixes polarity folders ({pol}) and emotion folders ({emo})")
        found_level, dirs = next(iter(folders.items()))
        names = POLARITIES if found_level == "polarity" else EMOTIONS
        samples = []
        for d in dirs:
            label = names.index(d.name.strip().lower())
            for dirpath, dirnames, filenames in os.walk(d, followlinks=True):
                dirnames[:] = sorted(n for n in dirnames if not n.startswith((".", "__")))
                for fname in sorted(filenames):
                    path = os.path.join(dirpath, fname)
                    if not fname.startswith(".") and is_image_file(path):
                        samples.append((path, label))
        samples, found_level = _to_level(samples, found_level, level, str(root))
        return cls(samples, found_level, root=root, transform=transform, source=root, check=check)

    # -- labels and subsets ------------------------------------------------------------------
    def labels_at(self, level: str) -> np.ndarray:
        """The labels at `level`: the polarities of an emotion dataset are derived (the hierarchy),
        but a polarity-only dataset has no emotion labels (ValueError)."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        y = np.asarray(self.targets, dtype=np.int64)
        if level == self.level:
            return y
        if level == "polarity":
            return np.asarray([polarity_of(int(e)) for e in y], dtype=np.int64)
        raise ValueError(f"{self.source} has polarity labels only; it has no emotion labels "
                         "(polarity is never mapped to an emotion)")

    def select(self, keep: Callable[[str, int, dict], bool]) -> "LabelledImages":
        """A copy with the images for which ``keep(path, label, extras)`` is true (order kept)."""
        chosen = [i for i, ((p, y), e) in enumerate(zip(self.samples, self.extras))
                  if keep(p, y, e)]
        if not chosen:
            raise ValueError(f"no image of {self.source} passes the selection")
        clone = copy.copy(self)
        clone.samples = [self.samples[i] for i in chosen]
        clone.extras = [self.extras[i] for i in chosen]
        clone.targets = [y for _, y in clone.samples]
        return clone

    def __repr__(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.class_counts().items())
        return f"LabelledImages({self.source}, {self.level} level, {len(self)} images: {counts})"


def _to_level(samples, found: str, wanted: str | None, name: str):
    if wanted is None or wanted == found:
        return samples, found
    if wanted == "polarity":  # emotion -> polarity: the label hierarchy
        return [(p, polarity_of(y)) for p, y in samples], "polarity"
    raise ValueError(f"{name} holds polarity labels only and cannot be read at the emotion level "
                     "(polarity is never mapped to an emotion)")


def open_labelled(path: str | os.PathLike, transform: Callable | None = None, *,
                  level: str | None = None, check: str = "header") -> LabelledImages:
    """A labels CSV, a folder of class folders, or a folder holding ``labels.csv``."""
    path = Path(path)
    if path.is_file():
        return LabelledImages.from_csv(path, transform=transform, level=level, check=check)
    if not path.is_dir():
        raise FileNotFoundError(f"not found: {path} (expected a labels CSV or a folder with "
                                "positive/ and negative/ sub-folders)")
    has_classes = any(e.is_dir() and e.name.strip().lower() in POLARITIES + EMOTIONS
                      for e in path.iterdir())
    if not has_classes and (path / "labels.csv").is_file():
        return LabelledImages.from_csv(path / "labels.csv", transform=transform, level=level,
                                       check=check)
    return LabelledImages.from_folder(path, transform=transform, level=level, check=check)


# --------------------------------------------------------------------------------------------------
# Twitter I
# --------------------------------------------------------------------------------------------------

#: Twitter I's subsets as the literature reports them: name -> least worker agreement (of 5).
TWITTER1_SUBSETS: dict[str, int] = {"5": 5, "4": 4, "all": 3}
_TWITTER_NAMES = {5: "Twitter I-5", 4: "Twitter I-4", 3: "Twitter I-3"}
TWITTER1_REFERENCE = ("You, Luo, Jin and Yang, 'Robust image sentiment analysis using "
                      "progressively trained and domain transferred deep networks', AAAI 2015")


def twitter1_label(subset: str | int, n_images: int) -> str:
    """How results on a subset of this folder must be labelled, e.g. "Twitter I-5 (706-image
    subset)"; all images: "Twitter I (1,093-image subset)" (the folder holds 1,093 of 1,269)."""
    least = TWITTER1_SUBSETS[str(subset)] if str(subset) in TWITTER1_SUBSETS else int(subset)
    name = "Twitter I" if least <= 3 else _TWITTER_NAMES[least]
    return f"{name} ({n_images:,}-image subset)"


def locate_twitter1(path: str | os.PathLike | None = None) -> Path:
    """The Twitter I folder (holding labels.csv): `path`, else ``$APSE_DATA/twitter1``,
    ``<repo>/data/twitter1`` or ``<repo>/../shared/data/twitter1``; FileNotFoundError otherwise."""
    if path is not None:
        candidates = [Path(path).expanduser()]
    else:
        env = os.environ.get("APSE_DATA")
        candidates = ([Path(env).expanduser() / "twitter1"] if env else []) + list(usual_places("twitter1"))
    for c in candidates:
        if (c / "labels.csv").is_file() or (c / ".apse-download").is_dir():
            return check_complete(c, "twitter1")
    raise FileNotFoundError("Twitter I not found (a folder with labels.csv). "
                            + not_found_hint("twitter1") + " Looked in: "
                            + "; ".join(map(str, candidates))
                            + f". The dataset is from {TWITTER1_REFERENCE}.")


def load_twitter1(path: str | os.PathLike | None = None, subset: str | int = "5",
                  transform: Callable | None = None, *, check: str = "header") -> LabelledImages:
    """Twitter I at polarity level, keeping the images whose worker agreement is at least the
    subset's (:data:`TWITTER1_SUBSETS`: "5" = all five workers agreed, "4" = at least four,
    "all" = every image)."""
    key = str(subset)
    if key not in TWITTER1_SUBSETS:
        raise ValueError(f"subset must be one of {', '.join(TWITTER1_SUBSETS)}, got {subset!r}")
    folder = locate_twitter1(path)
    data = LabelledImages.from_csv(folder / "labels.csv", transform=transform, check=check)
    if data.level != "polarity":
        raise ValueError(f"{data.source} should hold polarity labels")
    least = TWITTER1_SUBSETS[key]
    try:
        return data.select(lambda p, y, e: int(e["agreement"]) >= least)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{data.source}: every row needs an integer 'agreement' column "
                         f"({exc})") from None
