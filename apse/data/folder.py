"""The emotion folder dataset: FI as its authors distribute it (one folder per emotion), or a CSV manifest.

Labels always go through :func:`apse.emotions.emotion_index` by *name* (spec, "Labels": an alphabetical
ImageFolder order is not the papers' order). Reading a manifest is :mod:`apse.data.manifest`; decoding
and the item protocol are :class:`apse.data.images.ImageFileDataset`.
"""
from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from apse.data.images import (
    CHECKS, IMAGE_EXTENSIONS, CorruptImageError, DataWarning, ImageFileDataset, _check_decode, _check_header,
    is_image_file,
)
from apse.data.manifest import read_manifest
from apse.data.votes import is_vote_file, read_votes
from apse.emotions import EMOTIONS, NUM_EMOTIONS, emotion_index
from apse.progress import progress_bar

_ON_ERROR = ("raise", "skip")


class EmotionImageFolder(ImageFileDataset):
    """Images labelled with Mikels' 8 emotions, one folder per emotion (FI's own layout).

    ``root/<emotion>/**/<image>``: every sub-folder of `root` must be named after an emotion (matched
    case-insensitively through :func:`apse.emotions.emotion_index`; an unknown name raises ValueError
    listing the valid ones, never a silent mislabel by alphabetical position). Hidden folders (``.x``,
    ``__x``) are ignored, and so are files lying directly in `root` (README, SHA256SUMS).

    Images are found by content (:func:`is_image_file`: magic bytes, image extension, or PIL can
    identify it), so a JPEG saved as ``x.dat`` is found, while non-image files (``.txt``, README,
    ``Thumbs.db``) are ignored and listed in :attr:`ignored_files`. Every image is returned as RGB by
    :func:`load_rgb` (greyscale, CMYK and palette converted; alpha composited on white; EXIF
    orientation applied).

    Decode checking (a trade-off on 23k images):

    - ``check="header"`` (default) parses every file's header when the folder is scanned (~0.1 ms per
      file, a few seconds on FI). This catches files that are not decodable images at all.
    - ``check="full"`` also decodes all pixel data up front (~1 ms per JPEG, ~30 s on FI), which catches
      truncated files too. :meth:`verify` does the same later, on demand: run it once on a new copy.
    - ``check="none"`` trusts the scan.

    A file that fails a check raises :class:`CorruptImageError` naming it (``on_error="raise"``), or is
    dropped from :attr:`samples` and counted in a single :class:`DataWarning` (``on_error="skip"``; see
    :attr:`bad_files`). A file that passes the header check but fails to decode later, in
    ``__getitem__``, always raises (naming the file): a map-style dataset cannot drop an index that a
    sampler has already counted, and substituting another image would bias the class balance.
    An empty emotion folder and missing emotion folders are reported with a :class:`DataWarning`.

    Attributes: ``samples`` [(path, label)] sorted by label then path, ``targets`` [label],
    ``classes`` == :data:`apse.emotions.EMOTIONS`, ``class_to_idx``, ``root``, ``bad_files``
    [(path, reason)], ``ignored_files``. ``__getitem__`` returns ``(transform(image) or PIL image,
    label)``.
    """

    classes: tuple[str, ...] = EMOTIONS
    class_to_idx: dict[str, int] = {name: i for i, name in enumerate(EMOTIONS)}

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable | None = None,
        on_error: str = "raise",
        *,
        check: str = "header",
        target_transform: Callable | None = None,
        progress: bool = False,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(
                f"dataset root {str(root)!r} is not a directory; expected one folder per emotion "
                f"(see locate_dataset and data/README.md)"
            )
        self._init_options(root, transform, target_transform, on_error, check)
        candidates, ignored = self._scan(root)
        self.ignored_files = ignored
        self._finish(candidates, progress=progress)

    # -- construction helpers ------------------------------------------------------------------------

    def _init_options(self, root, transform, target_transform, on_error, check) -> None:
        if on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}")
        if check not in CHECKS:
            raise ValueError(f"check must be one of {CHECKS}, got {check!r}")
        self.root = Path(root)
        self.transform = transform
        self.target_transform = target_transform
        self.on_error = on_error
        self.check = check
        self.bad_files: list[tuple[str, str]] = []
        self.votes: np.ndarray | None = None      # vote files: [len(samples), 8] counts
        self.dropped: dict[str, list[str]] = {}   # vote files: paths left out, by reason
        self.sources: list[str] | None = None     # pooled sets: the data set of each sample
        self.ignored_files: list[str] = []
        self._origin: dict[str, str] = {}  # path -> where it was listed (manifest line), for errors

    def _scan(self, root: Path) -> tuple[list[tuple[str, int]], list[str]]:
        class_dirs: dict[int, list[Path]] = {}
        stray_images = []
        for entry in sorted(root.iterdir()):
            if entry.name.startswith((".", "__")):
                continue
            if not entry.is_dir():
                if entry.suffix.lower() in IMAGE_EXTENSIONS:
                    stray_images.append(entry.name)
                continue
            try:
                label = emotion_index(entry.name)
            except ValueError:
                raise ValueError(
                    f"folder {entry.name!r} in {str(root)!r} is not an emotion name; every sub-folder "
                    f"must be one of: {', '.join(EMOTIONS)} (case-insensitive)"
                ) from None
            class_dirs.setdefault(label, []).append(entry)
        if not class_dirs:
            raise ValueError(
                f"no emotion folders in {str(root)!r}; expected sub-folders named "
                f"{', '.join(EMOTIONS)} (FI's layout, see data/README.md)"
            )
        if stray_images:
            warnings.warn(
                f"{len(stray_images)} image file(s) lie directly in {str(root)!r} (e.g. {stray_images[0]!r}) "
                f"and are ignored: images must sit in a folder named after their emotion",
                DataWarning, stacklevel=3,
            )
        for label, dirs in class_dirs.items():
            if len(dirs) > 1:
                warnings.warn(
                    f"folders {[d.name for d in dirs]} all name the emotion {EMOTIONS[label]!r}; "
                    f"their images are merged", DataWarning, stacklevel=3,
                )
        missing = [EMOTIONS[i] for i in range(NUM_EMOTIONS) if i not in class_dirs]
        if missing:
            warnings.warn(
                f"{str(root)!r} has no folder for {len(missing)} emotion(s): {', '.join(missing)}",
                DataWarning, stacklevel=3,
            )

        samples: list[tuple[str, int]] = []
        ignored: list[str] = []
        empty = []
        for label in sorted(class_dirs):
            found = []
            for d in class_dirs[label]:
                for dirpath, dirnames, filenames in os.walk(d, followlinks=True):
                    dirnames[:] = sorted(n for n in dirnames if not n.startswith((".", "__")))
                    for name in sorted(filenames):
                        if name.startswith("."):
                            continue
                        path = os.path.join(dirpath, name)
                        (found if is_image_file(path) else ignored).append(path)
            if not found:
                empty.append(EMOTIONS[label])
            samples.extend((p, label) for p in sorted(found))
        if empty:
            warnings.warn(
                f"emotion folder(s) with no images in {str(root)!r}: {', '.join(empty)}",
                DataWarning, stacklevel=3,
            )
        return samples, ignored

    def _finish(self, candidates: list[tuple[str, int]], *, progress: bool = False) -> None:
        """Apply the decode check to the candidate files and set samples/targets."""
        self.samples = list(candidates)
        if self.check == "header":
            self._apply_check(_check_header, progress=progress, what="header check")
        elif self.check == "full":
            self._apply_check(_check_decode, progress=progress, what="full decode check")
        self.targets = [label for _, label in self.samples]
        if not self.samples:
            raise ValueError(f"no usable images found under {str(self.root)!r}")

    def _apply_check(self, fn: Callable[[str], str | None], *, progress: bool, what: str) -> list[tuple[str, str]]:
        items = progress_bar(self.samples, desc=what, unit="img", enabled=progress)
        bad = []
        for path, _ in items:
            reason = fn(path)
            if reason is not None:
                bad.append((path, reason))
        if bad:
            self._handle_bad(bad, what)
        return bad

    def _handle_bad(self, bad: list[tuple[str, str]], what: str) -> None:
        if self.on_error == "raise":
            listed = "; ".join(f"{p}{self._listed_at(p)}: {r}" for p, r in bad[:5])
            more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
            raise CorruptImageError(
                f"{len(bad)} file(s) failed the {what} and cannot be decoded: {listed}{more}. "
                f"Pass on_error='skip' to leave them out."
            )
        bad_set = {p for p, _ in bad}
        self.samples = [(p, y) for p, y in self.samples if p not in bad_set]
        self.targets = [y for _, y in self.samples]
        self.bad_files.extend(bad)
        names = ", ".join(os.path.basename(p) for p, _ in bad[:5]) + (", ..." if len(bad) > 5 else "")
        warnings.warn(
            f"skipped {len(bad)} image file(s) that failed the {what} ({names}); "
            f"{len(self.samples)} images remain. See .bad_files for the reasons.",
            DataWarning, stacklevel=4,
        )

    @classmethod
    def from_manifest(
        cls,
        csv_path: str | os.PathLike,
        root: str | os.PathLike | None = None,
        transform: Callable | None = None,
        on_error: str = "raise",
        *,
        check: str = "header",
        target_transform: Callable | None = None,
        progress: bool = False,
        conflicts: str = "drop",
    ) -> "EmotionImageFolder":
        """A dataset from a CSV label file (IAPSa, ArtPhoto, Abstract, FlickrLDL: see data/README.md).

        A CSV with ``votes_<emotion>`` columns (FlickrLDL's ``labels.csv``) is a vote file, read by
        :func:`apse.data.votes.read_votes`: each image is labelled with its majority emotion; ties and
        (``conflicts="drop"``) images whose vote polarity is not their emotion's are left out and
        listed in :attr:`dropped`, and the votes are kept in :attr:`votes` (one row per sample).

        The CSV needs a header with (at least) the columns ``path`` and ``emotion`` (any order, any
        case; more columns are ignored). ``emotion`` is an emotion name (any case) or its index 0..7 in
        the papers' order (:data:`apse.emotions.EMOTIONS`). Relative paths are resolved against `root`,
        or, when `root` is None, against the folder holding the CSV; absolute paths are used as given.
        Blank lines are ignored. A missing column raises ValueError; an unknown emotion, a listed file
        that does not exist (unless ``on_error="skip"``) or one path listed with two different emotions
        raises an error giving the CSV line number.
        """
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise FileNotFoundError(f"manifest {str(csv_path)!r} does not exist")
        base = Path(root) if root is not None else csv_path.parent
        self = cls.__new__(cls)
        self._init_options(base, transform, target_transform, on_error, check)

        votes = is_vote_file(csv_path)
        if votes:
            manifest = read_votes(csv_path, base, conflicts=conflicts)
            self.dropped = manifest.dropped
        else:
            manifest = read_manifest(csv_path, base)
        self._origin.update(manifest.origin)
        candidates, missing_files, duplicates = manifest.samples, manifest.missing, manifest.duplicates
        if duplicates:
            warnings.warn(f"manifest {str(csv_path)!r} lists {duplicates} path(s) more than once; kept the "
                          f"first", DataWarning, stacklevel=2)
        if missing_files:
            if on_error == "raise":
                lines = "; ".join(f"line {n}: {p}" for n, p in missing_files[:5])
                raise FileNotFoundError(
                    f"manifest {str(csv_path)!r} lists {len(missing_files)} file(s) that do not exist "
                    f"(relative paths are resolved against {str(base)!r}): {lines}"
                )
            warnings.warn(f"skipped {len(missing_files)} file(s) listed in {str(csv_path)!r} that do not exist",
                          DataWarning, stacklevel=2)
            self.bad_files.extend((p, "file does not exist") for _, p in missing_files)
        # stable order: by label, then by path, as for folders
        candidates.sort(key=lambda s: (s[1], s[0]))
        present = {y for _, y in candidates}
        absent = [EMOTIONS[i] for i in range(NUM_EMOTIONS) if i not in present]
        if absent and candidates:
            warnings.warn(f"manifest {str(csv_path)!r} has no images of: {', '.join(absent)}",
                          DataWarning, stacklevel=2)
        self._finish(candidates, progress=progress)
        if votes:
            self.votes = np.asarray([manifest.votes[p] for p, _ in self.samples], dtype=np.int64)
        return self

    # -- the Dataset protocol ------------------------------------------------------------------------

    def _decode_error(self, exc: CorruptImageError, path: str) -> str:
        return (f"{exc}. It passed the '{self.check}' check at scan time; run .verify() (or pass "
                f"check='full') once to find and skip every such file up front.")

    # -- extras --------------------------------------------------------------------------------------

    def verify(self, progress: bool = True) -> list[tuple[str, str]]:
        """Decode every image now (JPEGs at 1/8 scale: all data is read, ~1 ms each) and apply
        `on_error` to the failures: raise naming them, or drop them with one warning. Returns the list
        of (path, reason) that failed (empty when all decode)."""
        return self._apply_check(_check_decode, progress=progress, what="full decode check")

    def first_per_emotion(self, n: int) -> "EmotionImageFolder":
        """A copy holding only the first ``n`` images of each emotion (in :attr:`samples` order, i.e.
        by path): a small, deterministic slice of a dataset, e.g. for a quick run of the full code."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        seen: dict[int, int] = {}
        kept = []
        for i, (_, label) in enumerate(self.samples):
            seen[label] = seen.get(label, 0) + 1
            if seen[label] <= n:
                kept.append(i)
        return self.select(kept)

    def select(self, indices) -> "EmotionImageFolder":
        """A copy holding the samples at ``indices`` (in that order), with their votes and sources."""
        indices = [int(i) for i in indices]
        clone = copy.copy(self)
        clone.samples = [self.samples[i] for i in indices]
        clone.targets = [label for _, label in clone.samples]
        if self.votes is not None:
            clone.votes = self.votes[indices]
        if self.sources is not None:
            clone.sources = [self.sources[i] for i in indices]
        return clone

    def __repr__(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.class_counts().items())
        return f"{type(self).__name__}(root={str(self.root)!r}, {len(self)} images: {counts})"
