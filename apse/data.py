"""Datasets, splits, batch sampling, transforms and a frozen-backbone feature cache.

What is here, and which part of the spec (``../shared/spec/apse-method.md``) it serves:

- :class:`EmotionImageFolder` reads FI as its authors distribute it (one folder per emotion) and the
  small IAPSa / ArtPhoto / Abstract sets from a CSV manifest (:meth:`EmotionImageFolder.from_manifest`).
  Labels always go through :func:`apse.emotions.emotion_index` by *name* ("Labels": an alphabetical
  ImageFolder order is not the papers' order).
- :func:`locate_dataset` finds a dataset from an explicit path, ``$APSE_DATA`` or the usual places.
- :func:`stratified_split` (FI: random 80 / 5 / 15), :func:`stratified_kfold` (IAPSa, ArtPhoto,
  Abstract: 5-fold) and :func:`save_split` / :func:`load_split`, which store *file names*, so a run can
  be repeated exactly even when the folder listing changes ("Training and evaluation protocol").
- :class:`BalancedBatchSampler`: a batch of P x K = 8 x 4 images, 4 of each emotion, grouped by class in
  emotion order, which the losses cut into 2 disjoint N-pair tuples ("Losses": a batch of 32).
- :func:`build_transforms`: resize to 256 x 256, random 224 crop + horizontal flip for training, centre
  crop for evaluation, ToTensor, Normalize.
- :func:`extract_features` / :class:`FeatureDataset`: run a *frozen* backbone once over a dataset and
  keep its stage maps (conv3, conv5, ...) in memory or in a ``.pt`` file. Everything after the backbone
  (attention heads, cross-level bilinear pooling, embedding; ``APSENet.forward_features``) then trains
  on these cached maps. This is what makes real experiments feasible on 2 CPU cores: a ResNet-50
  forward pass costs far more than the heads, and with the backbone frozen it has to be paid once per
  image instead of once per image per epoch. (The paper fine-tunes the whole network; a frozen backbone
  is a deliberate, documented deviation for CPU work. Random crops cannot be cached; the optional
  horizontally flipped second view is the augmentation that remains.)
"""
from __future__ import annotations

import copy
import csv
import json
import logging
import math
import os
import warnings
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from apse.emotions import EMOTIONS, NUM_EMOTIONS, emotion_index
from apse.progress import progress_bar

__all__ = [
    "CorruptImageError", "DataWarning", "EmotionImageFolder", "FeatureDataset", "BalancedBatchSampler",
    "build_transforms", "extract_features", "is_image_file", "load_rgb", "load_split", "locate_dataset",
    "save_split", "stratified_kfold", "stratified_split",
]

log = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[1]  # module-level so tests can point it elsewhere

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".jp2", ".j2k", ".jpx",
})

FI_REQUEST = (
    "FI (You, Luo, Jin and Yang, 'Building a large scale dataset for image emotion recognition: the fine "
    "print and the benchmark', AAAI 2016; 23,308 images in 8 emotion folders) is distributed by its "
    "authors for research use: request it from them, unpack it as one folder per emotion and pass its "
    "path or set APSE_DATA. See data/README.md in the apse repository."
)


class DataWarning(UserWarning):
    """Warnings about the data itself (skipped files, empty or missing classes, resampled classes)."""


class CorruptImageError(OSError):
    """An image file that exists but cannot be decoded; the message names the file."""


# ----------------------------------------------------------------------------------------------------
# Image files: detection by content, decoding to RGB
# ----------------------------------------------------------------------------------------------------

def _magic_is_image(head: bytes) -> bool:
    """True when the first bytes of a file carry the signature of a common image format."""
    return (
        head.startswith(b"\xff\xd8\xff")                      # JPEG
        or head.startswith(b"\x89PNG\r\n\x1a\n")              # PNG
        or head[:6] in (b"GIF87a", b"GIF89a")                 # GIF
        or head.startswith(b"BM")                             # BMP
        or head[:4] in (b"II*\x00", b"MM\x00*")               # TIFF
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")    # WebP
        or head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n")  # JPEG 2000 (jp2)
        or head.startswith(b"\xff\x4f\xff\x51")               # JPEG 2000 codestream
        or (len(head) > 2 and head[:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace())  # PNM
    )


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether `path` is an image, judged by its content and not only by its extension.

    A file counts as an image when its first bytes carry a known image signature (JPEG, PNG, GIF, BMP,
    TIFF, WebP, JPEG 2000, PNM), when its extension is an image extension (so that a *corrupt* ``.jpg``
    is still reported instead of silently dropped), or, failing both, when PIL can identify it. A README
    or a ``.txt`` file is therefore not an image, while a JPEG saved as ``photo.dat`` is.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError:
        return False
    if _magic_is_image(head) or path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    try:  # rarer formats PIL knows; reads the header only
        with Image.open(path) as img:
            img.size
        return True
    except Exception:
        return False


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited on white (see :func:`load_rgb`)."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":  # palette: keep its transparency (tRNS) if it has one
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    elif img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit / float greyscale: map to 8 bits by the range the mode can hold (float: by its max)
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I") else max(float(arr.max()), 1e-12)
        if img.mode.startswith("I") and arr.max() <= 255:
            top = 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "RGBA":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image file to an RGB PIL image, or raise :class:`CorruptImageError` naming the file.

    - Greyscale (L, 1, 16-bit), CMYK, YCbCr, palette images are converted to RGB by PIL.
    - Transparency (RGBA, LA, palette with tRNS) is alpha-composited on white, as the image shows on a
      white page; simply dropping alpha would expose whatever colours sit under transparent pixels.
    - The EXIF orientation tag is applied, so the image is the way its viewers (and annotators) saw it.
    - Animated GIF / multi-page TIFF: the first frame.
    """
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img) or img
            return _to_rgb(img)
    except FileNotFoundError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... for bad data
        raise CorruptImageError(f"cannot decode image file {path}: {type(exc).__name__}: {exc}") from exc


def _check_header(path: str) -> str | None:
    """Cheap check (about 0.1 ms): PIL can parse the header. Returns an error string or None."""
    try:
        with Image.open(path) as img:
            w, h = img.size
        if w <= 0 or h <= 0:
            return f"image has size {w}x{h}"
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def _check_decode(path: str) -> str | None:
    """Full check: decode every byte of pixel data. JPEGs decode at 1/8 scale (DCT scaling), which
    still reads all the entropy-coded data, so truncation is caught at about 1 ms per image."""
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
            img.load()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def _relpath(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """`path` relative to `root`, with forward slashes (split files must travel between systems)."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


# ----------------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------------

_ON_ERROR = ("raise", "skip")
_CHECKS = ("header", "full", "none")


class EmotionImageFolder(Dataset):
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
        if check not in _CHECKS:
            raise ValueError(f"check must be one of {_CHECKS}, got {check!r}")
        self.root = Path(root)
        self.transform = transform
        self.target_transform = target_transform
        self.on_error = on_error
        self.check = check
        self.bad_files: list[tuple[str, str]] = []
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
        where = lambda p: f"{p} ({self._origin[p]})" if p in self._origin else p  # noqa: E731
        if self.on_error == "raise":
            listed = "; ".join(f"{where(p)}: {r}" for p, r in bad[:5])
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
    ) -> "EmotionImageFolder":
        """A dataset from a CSV label file (IAPSa, ArtPhoto, Abstract: see data/README.md).

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

        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # -sig: tolerate Excel's BOM
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"manifest {str(csv_path)!r} is empty; expected a header 'path,emotion'")
            columns = [h.strip().lower() for h in header]
            missing = [c for c in ("path", "emotion") if c not in columns]
            if missing:
                raise ValueError(
                    f"manifest {str(csv_path)!r} line 1: missing column(s) {', '.join(missing)}; expected a "
                    f"header with 'path' and 'emotion', got {header}"
                )
            ip, ie = columns.index("path"), columns.index("emotion")
            candidates: list[tuple[str, int]] = []
            seen: dict[str, tuple[int, int]] = {}
            missing_files: list[tuple[int, str]] = []
            duplicates = 0
            for row in reader:
                lineno = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) <= max(ip, ie):
                    raise ValueError(f"manifest {str(csv_path)!r} line {lineno}: expected {len(header)} "
                                     f"columns, got {len(row)}: {row}")
                rel, emo = row[ip].strip(), row[ie].strip()
                if not rel:
                    raise ValueError(f"manifest {str(csv_path)!r} line {lineno}: empty path")
                try:
                    label = _parse_emotion(emo)
                except ValueError as exc:
                    raise ValueError(f"manifest {str(csv_path)!r} line {lineno}: {exc}") from None
                path = os.path.normpath(rel if os.path.isabs(rel) else os.path.join(base, rel))
                if path in seen:
                    if seen[path][0] != label:
                        raise ValueError(
                            f"manifest {str(csv_path)!r} line {lineno}: {rel!r} is listed as "
                            f"{EMOTIONS[label]!r} but line {seen[path][1]} lists it as {EMOTIONS[seen[path][0]]!r}"
                        )
                    duplicates += 1
                    continue
                seen[path] = (label, lineno)
                if not os.path.isfile(path):
                    missing_files.append((lineno, path))
                    continue
                self._origin[path] = f"{csv_path.name} line {lineno}"
                candidates.append((path, label))
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
        return self

    # -- the Dataset protocol ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            image = load_rgb(path)
        except CorruptImageError as exc:
            raise CorruptImageError(
                f"{exc}. It passed the '{self.check}' check at scan time; run .verify() (or pass "
                f"check='full') once to find and skip every such file up front."
            ) from exc.__cause__
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label

    # -- extras --------------------------------------------------------------------------------------

    def verify(self, progress: bool = True) -> list[tuple[str, str]]:
        """Decode every image now (JPEGs at 1/8 scale: all data is read, ~1 ms each) and apply
        `on_error` to the failures: raise naming them, or drop them with one warning. Returns the list
        of (path, reason) that failed (empty when all decode)."""
        return self._apply_check(_check_decode, progress=progress, what="full decode check")

    def class_counts(self) -> dict[str, int]:
        """Number of images per emotion, in the papers' order (zeros included)."""
        counts = np.bincount(np.asarray(self.targets, dtype=np.int64), minlength=NUM_EMOTIONS)
        return {name: int(counts[i]) for i, name in enumerate(EMOTIONS)}

    def first_per_emotion(self, n: int) -> "EmotionImageFolder":
        """A copy holding only the first ``n`` images of each emotion (in :attr:`samples` order, i.e.
        by path): a small, deterministic slice of a dataset, e.g. for a quick run of the full code."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        seen: dict[int, int] = {}
        kept = []
        for path, label in self.samples:
            seen[label] = seen.get(label, 0) + 1
            if seen[label] <= n:
                kept.append((path, label))
        clone = copy.copy(self)
        clone.samples, clone.targets = kept, [label for _, label in kept]
        return clone

    def relative_paths(self) -> list[str]:
        """Sample paths relative to :attr:`root`, with forward slashes (what split files store)."""
        return [_relpath(p, self.root) for p, _ in self.samples]

    def __repr__(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.class_counts().items())
        return f"{type(self).__name__}(root={str(self.root)!r}, {len(self)} images: {counts})"


def _parse_emotion(value: str) -> int:
    """An emotion given by name (any case) or by index 0..7 in the papers' order."""
    text = str(value).strip()
    if text.lstrip("+-").isdigit():
        index = int(text)
        if not 0 <= index < NUM_EMOTIONS:
            raise ValueError(f"emotion index {index} is out of range 0..{NUM_EMOTIONS - 1} "
                             f"({', '.join(f'{i}={n}' for i, n in enumerate(EMOTIONS))})")
        return index
    return emotion_index(text)


# ----------------------------------------------------------------------------------------------------
# Finding a dataset
# ----------------------------------------------------------------------------------------------------

def _looks_like_dataset(path: Path) -> bool:
    """A folder with at least one emotion-named sub-folder, or a CSV manifest."""
    if not path.is_dir():
        return False
    for entry in path.iterdir():
        if entry.is_dir() and entry.name.strip().lower() in EMOTIONS:
            return True
        if entry.is_file() and entry.suffix.lower() == ".csv":
            return True
    return False


def locate_dataset(path: str | os.PathLike | None = None, name: str = "fi-subset") -> Path:
    """Find a dataset folder and return its path. The first that exists wins:

    1. `path`, when given (it must exist: an explicit path is never silently replaced);
    2. ``$APSE_DATA/<name>``, or ``$APSE_DATA`` itself when it is a dataset (emotion folders or a CSV
       manifest in it), so ``APSE_DATA`` may name either a folder of datasets or one dataset;
    3. ``<repo>/data/<name>``;
    4. ``<repo>/../shared/data/<name>`` (where the FI subset lives beside the repository).

    Raises FileNotFoundError listing every place it looked and how to obtain FI.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"dataset path {str(p)!r} does not exist. {FI_REQUEST}")
        return p
    looked: list[str] = []
    env = os.environ.get("APSE_DATA")
    if env:
        base = Path(env).expanduser()
        looked.append(f"$APSE_DATA/{name} = {base / name}")
        if (base / name).is_dir():
            return base / name
        looked.append(f"$APSE_DATA = {base} (as a dataset itself)")
        if _looks_like_dataset(base):
            return base
    else:
        looked.append("$APSE_DATA (not set)")
    for candidate in (_REPO_ROOT / "data" / name, _REPO_ROOT.parent / "shared" / "data" / name):
        looked.append(str(candidate))
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"dataset {name!r} not found; looked in: " + "; ".join(looked) + f". {FI_REQUEST}"
    )


# ----------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------

def _as_labels(labels: Any) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D sequence of class indices, got shape {arr.shape}")
    if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0):
        raise ValueError("labels must be non-negative integers (class indices)")
    return arr.astype(np.int64)


def _largest_remainder(n: int, fractions: Sequence[float]) -> list[int]:
    """Split the integer n in proportion to `fractions` (sum 1), rounding by largest remainder; ties go
    to the earlier part."""
    quotas = [n * f for f in fractions]
    counts = [int(math.floor(q + 1e-9)) for q in quotas]
    left = n - sum(counts)
    order = sorted(range(len(fractions)), key=lambda i: (-round(quotas[i] - counts[i], 9), i))
    for i in order[:left]:
        counts[i] += 1
    return counts


def stratified_split(
    labels: Any,
    fractions: Sequence[float] = (0.8, 0.05, 0.15),
    seed: int = 0,
    names: Sequence[str] = ("train", "val", "test"),
) -> dict[str, list[int]]:
    """Random stratified split: name -> sorted list of indices into `labels`.

    Each class is shuffled (numpy ``default_rng(seed)``) and cut in proportion to `fractions`, with
    largest-remainder rounding per class, so the parts are disjoint, cover every index, keep each
    class's proportions to within one image, and are identical for the same seed. FI protocol: 80 / 5 /
    15 (spec, "Training and evaluation protocol").
    """
    y = _as_labels(labels)
    fractions = [float(f) for f in fractions]
    if len(fractions) != len(names):
        raise ValueError(f"got {len(fractions)} fractions for {len(names)} names {tuple(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"split names must be distinct, got {tuple(names)}")
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in names]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        start = 0
        for part, count in zip(parts, _largest_remainder(len(idx), fractions)):
            part.extend(idx[start:start + count].tolist())
            start += count
    return {name: sorted(part) for name, part in zip(names, parts)}


def stratified_kfold(labels: Any, k: int = 5, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Stratified k-fold: a list of k (train indices, held-out indices), each sorted.

    Every index is held out exactly once. Each class is shuffled and dealt to the folds in turn, the
    dealing continuing from class to class, so fold sizes differ by at most one and each class's share
    of a fold by at most one image. Used for IAPSa, ArtPhoto and Abstract (5-fold).
    """
    y = _as_labels(labels)
    if int(k) != k or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k}")
    if k > len(y):
        raise ValueError(f"k={k} folds need at least k samples, got {len(y)}")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)])
    fold_of = np.empty(len(y), dtype=np.int64)
    fold_of[order] = np.arange(len(y)) % k
    small = [int(c) for c in np.unique(y) if (y == c).sum() < k]
    if small:
        warnings.warn(f"class(es) {small} have fewer than k={k} samples; some folds hold none of them",
                      DataWarning, stacklevel=2)
    folds = []
    for f in range(k):
        held = np.flatnonzero(fold_of == f)
        train = np.flatnonzero(fold_of != f)
        folds.append((train.tolist(), held.tolist()))
    return folds


def _samples_and_root(samples: Any, root: str | os.PathLike | None = None) -> tuple[list[tuple[str, int]], Path]:
    """(samples, root) from a dataset (EmotionImageFolder, FeatureDataset, a Subset of either) or a
    plain list of (path, label)."""
    if hasattr(samples, "samples"):
        root = root if root is not None else getattr(samples, "root", None)
        samples = samples.samples
    elif isinstance(samples, Dataset):
        raise TypeError(f"{type(samples).__name__} has no .samples (file paths); pass the image dataset it came "
                        f"from, or a list of (path, label)")
    samples = [(str(p), int(y)) for p, y in samples]
    if root is None:
        if not samples:
            raise ValueError("cannot infer a root from an empty sample list; pass root=")
        # the folder above the emotion folders, for the usual root/<emotion>/<file> layout
        root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p, _ in samples])
        if all(Path(root).name.lower() == EMOTIONS[y] for _, y in samples):
            root = os.path.dirname(root)
    return samples, Path(root)


def save_split(
    path: str | os.PathLike,
    split_dict: Mapping[str, Sequence[int]],
    samples: Any,
    *,
    root: str | os.PathLike | None = None,
) -> Path:
    """Write a split as JSON lists of file paths relative to the dataset root, with their emotions.

    `split_dict`: name -> indices into `samples` (e.g. from :func:`stratified_split`; a list from
    :func:`stratified_kfold` is written as ``fold0_train``, ``fold0_held``, ...). `samples`: a dataset
    with ``.samples`` and ``.root`` or a list of (path, label). Files, not indices, are stored, so the
    same split can be re-applied exactly after files are added or the listing order changes.
    """
    samples, root = _samples_and_root(samples, root)
    if isinstance(split_dict, (list, tuple)):  # k-fold output
        split_dict = {f"fold{i}_{part}": idx for i, pair in enumerate(split_dict)
                      for part, idx in zip(("train", "held"), pair)}
    rel = [_relpath(p, root) for p, _ in samples]
    out: dict[str, Any] = {"format": "apse-split-v1", "root": str(root), "splits": {}, "emotions": {}}
    for name, indices in split_dict.items():
        files = []
        for i in indices:
            i = int(i)
            if not 0 <= i < len(samples):
                raise IndexError(f"split {name!r} holds index {i}, outside 0..{len(samples) - 1}")
            files.append(rel[i])
            out["emotions"][rel[i]] = EMOTIONS[samples[i][1]]
        out["splits"][str(name)] = files
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    return path


def load_split(path: str | os.PathLike, dataset: Any, *, root: str | os.PathLike | None = None) -> dict[str, list[int]]:
    """Read a split written by :func:`save_split` and map it onto `dataset`: name -> sorted indices
    into ``dataset.samples``.

    Verifies that every listed file exists under the dataset root (FileNotFoundError listing the
    missing ones), that it is one of the dataset's samples (ValueError otherwise, e.g. a file skipped
    as corrupt) and that its emotion matches the one stored (ValueError).
    """
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("format") != "apse-split-v1":
        raise ValueError(f"{str(path)!r} is not a split file written by apse.data.save_split")
    samples, root = _samples_and_root(dataset, root)
    index_of = {_relpath(p, root): i for i, (p, _) in enumerate(samples)}
    emotions = data.get("emotions", {})
    result: dict[str, list[int]] = {}
    missing, unknown, mislabelled = [], [], []
    for name, files in data["splits"].items():
        indices = []
        for rel in files:
            if not (root / rel).exists():
                missing.append(rel)
                continue
            i = index_of.get(rel)
            if i is None:
                unknown.append(rel)
                continue
            if rel in emotions and EMOTIONS[samples[i][1]] != emotions[rel]:
                mislabelled.append(f"{rel} (split file: {emotions[rel]}, dataset: {EMOTIONS[samples[i][1]]})")
            indices.append(i)
        result[name] = sorted(indices)
    if missing:
        raise FileNotFoundError(f"split {str(path)!r}: {len(missing)} listed file(s) do not exist under "
                                f"{str(root)!r}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if unknown:
        raise ValueError(f"split {str(path)!r}: {len(unknown)} listed file(s) are not in the dataset "
                         f"(skipped as corrupt?): {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    if mislabelled:
        raise ValueError(f"split {str(path)!r}: {len(mislabelled)} file(s) changed emotion: "
                         f"{', '.join(mislabelled[:5])}")
    return result


# ----------------------------------------------------------------------------------------------------
# Balanced P x K batches
# ----------------------------------------------------------------------------------------------------

class BalancedBatchSampler(Sampler):
    """Batches of P emotions x K images (default 8 x 4 = 32, the papers' batch), as index lists.

    Each batch is grouped by class in emotion order: class c1's K indices, then class c2's, ... with
    c1 < c2 < ...; the losses cut a batch into N-pair tuples by this order (images 1-2, 3-4 of each
    emotion; :func:`apse.losses.split_into_tuples`). With P < number of classes, the P classes of each
    batch are drawn at random.

    An epoch has `batches_per_epoch` batches, or ``len(labels) // (P * K)`` (about one pass over the
    data). Within a class, indices are drawn without replacement until the class runs out, then the
    class is reshuffled (never repeating an index inside one batch). A class with fewer than K images
    in total is sampled with replacement (all its images, padded by random repeats), with one warning.

    Reproducibility: epoch e is a pure function of (seed, e). Iterating uses the current epoch and
    then advances it, so ``for epoch: for batch in sampler`` sees a new epoch each time; call
    :meth:`set_epoch` to pick one explicitly (DistributedSampler-style). Distributed training: give
    each process its `rank` and the `world_size`; every rank builds the same global batch list and takes
    every world_size-th batch, so ranks get distinct batches and the same number of them
    (``len(sampler) == total // world_size``; `batches_per_epoch` counts batches over all ranks).
    """

    def __init__(
        self,
        labels: Any,
        classes_per_batch: int = 8,
        samples_per_class: int = 4,
        batches_per_epoch: int | None = None,
        seed: int = 0,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        y = _as_labels(labels)
        P, K = int(classes_per_batch), int(samples_per_class)
        if P < 1 or K < 1:
            raise ValueError(f"classes_per_batch and samples_per_class must be >= 1, got {P} and {K}")
        if int(seed) < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.class_indices: dict[int, np.ndarray] = {int(c): np.flatnonzero(y == c) for c in np.unique(y)}
        present = sorted(self.class_indices)
        if P > len(present):
            absent = [EMOTIONS[i] if i < NUM_EMOTIONS else str(i)
                      for i in range(max(NUM_EMOTIONS, max(present, default=-1) + 1)) if i not in present]
            raise ValueError(
                f"classes_per_batch={P} but the labels hold only {len(present)} classes"
                + (f" (none of: {', '.join(absent)})" if absent else "")
            )
        total = int(batches_per_epoch) if batches_per_epoch is not None else len(y) // (P * K)
        if total < world_size:
            raise ValueError(
                f"an epoch of {total} batch(es) of {P}x{K} cannot give each of {world_size} rank(s) one "
                f"({len(y)} labels); lower classes_per_batch/samples_per_class or set batches_per_epoch"
            )
        self.labels = y
        self.classes_per_batch, self.samples_per_class = P, K
        self.batches_total = total
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch = 0
        self.small_classes = [c for c in present if len(self.class_indices[c]) < K]
        if self.small_classes:
            names = ", ".join(f"{EMOTIONS[c] if c < NUM_EMOTIONS else c} ({len(self.class_indices[c])})"
                              for c in self.small_classes)
            warnings.warn(
                f"class(es) with fewer than samples_per_class={K} images: {names}; they are sampled with "
                f"replacement, so a batch repeats some of their images", DataWarning, stacklevel=2,
            )

    def __len__(self) -> int:
        return self.batches_total // self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration produce epoch `epoch` (same epoch, same batches)."""
        self.epoch = int(epoch)

    def _draw(self, c: int, pools: dict[int, deque], rng: np.random.Generator) -> list[int]:
        K, idx = self.samples_per_class, self.class_indices[c]
        if len(idx) < K:  # with replacement: every image once, padded by random repeats
            draw = np.concatenate([idx, rng.choice(idx, K - len(idx), replace=True)])
            return rng.permutation(draw).tolist()
        pool = pools[c]
        if len(pool) < K:  # class ran out: top up from a fresh shuffle, avoiding repeats in this batch
            left = list(pool)
            left_set = set(left)
            fresh = rng.permutation(idx).tolist()
            top = [i for i in fresh if i not in left_set][: K - len(left)]
            taken = set(top)
            pools[c] = pool = deque(left + top + [i for i in fresh if i not in taken])
        return [pool.popleft() for _ in range(K)]

    def batches(self, epoch: int) -> list[list[int]]:
        """All batches of `epoch`, over all ranks (the global list that ranks shard)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        present = sorted(self.class_indices)
        pools = {c: deque(rng.permutation(self.class_indices[c]).tolist()) for c in present}
        out = []
        for _ in range(self.batches_total):
            if self.classes_per_batch == len(present):
                classes = present
            else:
                classes = sorted(rng.choice(present, self.classes_per_batch, replace=False).tolist())
            batch: list[int] = []
            for c in classes:
                batch.extend(int(i) for i in self._draw(c, pools, rng))
            out.append(batch)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.epoch
        self.epoch += 1
        mine = self.batches(epoch)[self.rank: len(self) * self.world_size: self.world_size]
        return iter(mine)


# ----------------------------------------------------------------------------------------------------
# Transforms
# ----------------------------------------------------------------------------------------------------

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transforms(
    train: bool,
    image_size: int = 224,
    resize: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    flip: bool = True,
):
    """The paper's preprocessing (spec, "Training and evaluation protocol"): resize to
    ``resize x resize`` (square, aspect ratio not kept), then a random ``image_size`` crop and a random
    horizontal flip for training, or the centre crop for evaluation; ToTensor; Normalize(mean, std).

    `resize` defaults to ``round(image_size * 256 / 224)`` (256 for 224). Pass the backbone's own
    `mean`/`std` (EfficientNet-Lite0 expects [-1, 1]: mean = std = (0.5,) * 3).
    """
    from torchvision import transforms as T

    image_size = int(image_size)
    resize = int(round(image_size * 256 / 224)) if resize is None else int(resize)
    if image_size < 1 or resize < image_size:
        raise ValueError(f"need 1 <= image_size <= resize, got image_size={image_size}, resize={resize}")
    steps = [T.Resize((resize, resize))]
    if train:
        steps.append(T.RandomCrop(image_size))
        if flip:
            steps.append(T.RandomHorizontalFlip())
    else:
        steps.append(T.CenterCrop(image_size))
    steps += [T.ToTensor(), T.Normalize(tuple(mean), tuple(std))]
    return T.Compose(steps)


# ----------------------------------------------------------------------------------------------------
# Frozen-backbone feature cache
# ----------------------------------------------------------------------------------------------------

def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _available_memory() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _base_and_indices(dataset: Any) -> tuple[Any, list[int] | None]:
    """Unwrap (nested) Subsets: the base dataset and the indices into it (None: all of it)."""
    indices = None
    while isinstance(dataset, Subset):
        sub = [int(i) for i in dataset.indices]
        indices = sub if indices is None else [sub[i] for i in indices]
        dataset = dataset.dataset
    return dataset, indices


def _check_transform(dataset: Any, backbone: torch.nn.Module) -> None:
    """Warn about the two easy mistakes: random augmentation frozen into the cache, and a Normalize
    that does not match the backbone's expected input."""
    base, _ = _base_and_indices(dataset)
    transform = getattr(base, "transform", None)
    steps = getattr(transform, "transforms", [transform] if transform is not None else [])
    names = [type(s).__name__ for s in steps]
    randoms = [n for n in names if n.startswith("Random")]
    if randoms:
        warnings.warn(f"the dataset's transform has random steps ({', '.join(randoms)}); the cache freezes one "
                      f"random draw per image. Use build_transforms(train=False) and flips=True instead.",
                      DataWarning, stacklevel=3)
    mean, std = getattr(backbone, "mean", None), getattr(backbone, "std", None)
    for s in steps:
        if type(s).__name__ == "Normalize" and mean is not None and std is not None:
            if not (np.allclose(np.broadcast_to(s.mean, 3), np.broadcast_to(mean, 3))
                    and np.allclose(np.broadcast_to(s.std, 3), np.broadcast_to(std, 3))):
                warnings.warn(f"the dataset normalises with mean={tuple(s.mean)}, std={tuple(s.std)} but the "
                              f"backbone expects mean={tuple(mean)}, std={tuple(std)}", DataWarning, stacklevel=3)


class FeatureDataset(Dataset):
    """Cached stage maps of a frozen backbone: item i is ``(dict stage -> (C, h, w) tensor, label)``.

    ``features[stage]`` has shape (V, N, C, h, w) (any trailing shape is kept as the backbone gave it):
    V = 1 view, or 2 when the horizontally flipped images were extracted too. In eval mode (the default) item i is view 0 (the image as is); in train
    mode (:meth:`train`) a random view, drawn with torch's RNG (so ``torch.manual_seed`` and DataLoader
    worker seeding govern it). Maps are stored in ``dtype`` (float16 halves memory) and returned as
    float32. :meth:`get_batch` gathers a whole batch without per-item collation.

    When the source dataset had files (EmotionImageFolder), ``samples`` and ``root`` are kept, so
    :func:`save_split` / :func:`load_split` work on the cache as on the images.
    """

    classes = EMOTIONS

    def __init__(
        self,
        features: Mapping[str, torch.Tensor],
        labels: Any,
        meta: Mapping[str, Any] | None = None,
        *,
        train: bool = False,
    ) -> None:
        labels = torch.as_tensor(_as_labels(labels), dtype=torch.long)
        feats: dict[str, torch.Tensor] = {}
        for stage, t in features.items():
            t = torch.as_tensor(t)
            if t.dim() < 2 or t.shape[1] != len(labels):
                raise ValueError(f"features[{stage!r}] must be (views, N, C, h, w) with N = {len(labels)} "
                                 f"labels (add a leading view axis of 1 for one view), got shape {tuple(t.shape)}")
            feats[str(stage)] = t
        if not feats:
            raise ValueError("features must hold at least one stage")
        views = {t.shape[0] for t in feats.values()}
        if len(views) != 1:
            raise ValueError(f"all stages must have the same number of views, got {views}")
        self.features = feats
        self.labels = labels
        self.targets = labels.tolist()
        self.meta = dict(meta or {})
        self.num_views = views.pop()
        self.training = bool(train)
        self.output_dtype = torch.float32

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(self.features)

    @property
    def root(self) -> Path | None:
        return Path(self.meta["root"]) if self.meta.get("root") else None

    @property
    def samples(self) -> list[tuple[str, int]]:
        rel = self.meta.get("paths")
        if rel is None or self.root is None:
            raise AttributeError("this FeatureDataset was not built from files, so it has no samples")
        return [(str(self.root / r), y) for r, y in zip(rel, self.targets)]

    def train(self, mode: bool = True) -> "FeatureDataset":
        """Train mode: a random view per item (when flips were extracted). Returns self."""
        self.training = bool(mode)
        return self

    def eval(self) -> "FeatureDataset":
        return self.train(False)

    def __len__(self) -> int:
        return len(self.labels)

    def _views(self, n: int) -> torch.Tensor:
        if self.training and self.num_views > 1:
            return torch.randint(self.num_views, (n,))
        return torch.zeros(n, dtype=torch.long)

    def __getitem__(self, index: int):
        v = int(self._views(1)[0])
        return ({s: t[v, index].to(self.output_dtype) for s, t in self.features.items()},
                int(self.labels[index]))

    def get_batch(self, indices: Sequence[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(dict stage -> (B, C, h, w) float32, labels (B,)) for `indices`, views as in __getitem__."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        views = self._views(len(idx))
        return ({s: t[views, idx].to(self.output_dtype) for s, t in self.features.items()}, self.labels[idx])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.features.values())

    def save(self, path: str | os.PathLike) -> Path:
        """torch.save of the tensors and metadata (plain types only, loadable with weights_only=True)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format": "apse-features-v1", "features": self.features, "labels": self.labels,
                    "meta": self.meta}, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu", *, mmap: bool = False,
             train: bool = False) -> "FeatureDataset":
        """Load a cache written by :meth:`save` (``weights_only=True``: no code is unpickled). With
        ``mmap=True`` the tensors stay on disk and pages are read on demand (caches larger than RAM)."""
        data = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        if not isinstance(data, dict) or data.get("format") != "apse-features-v1":
            raise ValueError(f"{str(path)!r} is not a feature cache written by FeatureDataset.save")
        return cls(data["features"], data["labels"], data.get("meta"), train=train)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{s} {tuple(t.shape[2:])}" for s, t in self.features.items())  # per item
        return (f"FeatureDataset({len(self)} items x {self.num_views} view(s), {shapes}, "
                f"{_human(self.nbytes())})")


def extract_features(
    backbone: torch.nn.Module,
    dataset: Any,
    stages: Sequence[str] | None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    flips: bool = False,
    num_workers: int = 0,
    dtype: torch.dtype = torch.float16,
    *,
    progress: bool = True,
) -> FeatureDataset:
    """Run a frozen `backbone` once over `dataset` and keep its stage maps: a :class:`FeatureDataset`.

    `backbone`: any nn.Module whose ``forward(x)`` returns a dict stage -> (B, C, h, w) map (see
    :func:`apse.backbones.build_backbone`); it is moved to `device` and run in eval mode under no_grad
    (its train/eval mode is restored afterwards). `dataset` must yield (image tensor, label): give it
    an evaluation transform, e.g. ``build_transforms(False, mean=backbone.mean, std=backbone.std)``.
    `stages`: the maps to keep (None: all the backbone returns). ``flips=True`` also runs the
    horizontally flipped images (a second view, the augmentation left once crops are frozen).

    Before starting, the size is estimated from one forward pass of a single image,
    bytes = N x sum over stages (C x h x w) x itemsize x views, and printed when `progress` (a
    warning when it exceeds the memory available comes either way). Order of items = order of
    `dataset`. `progress`: a bar on a terminal, else one line when done (:mod:`apse.progress`).
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("extract_features got an empty dataset")
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    device = torch.device(device)
    views = 2 if flips else 1
    _check_transform(dataset, backbone)

    first = dataset[0][0]
    if not isinstance(first, torch.Tensor) or first.dim() != 3:
        raise TypeError(
            f"dataset items must be (image tensor (3, H, W), label), got {type(first).__name__}; give the "
            f"dataset a transform, e.g. build_transforms(False, mean=backbone.mean, std=backbone.std)"
        )
    was_training = backbone.training
    backbone.to(device).eval()
    try:
        with torch.no_grad():
            probe = backbone(first.unsqueeze(0).to(device))
            if not isinstance(probe, Mapping):
                raise TypeError(f"backbone must return a dict stage -> feature map, got {type(probe).__name__}")
            stages = tuple(probe) if stages is None else tuple(stages)
            absent = [s for s in stages if s not in probe]
            if absent:
                raise KeyError(f"backbone did not return stage(s) {absent}; it returns {list(probe)}")
            shapes = {s: tuple(probe[s].shape[1:]) for s in stages}
            per_image = sum(math.prod(shp) for shp in shapes.values())
            itemsize = torch.empty((), dtype=dtype).element_size()
            nbytes = n * per_image * itemsize * views
            desc = ", ".join(f"{s} {'x'.join(map(str, shp))}" for s, shp in shapes.items())
            msg = (f"extract_features: {n} images x {views} view(s), {desc}: "
                   f"{n} x {per_image} x {itemsize} B x {views} = {_human(nbytes)} in {str(dtype).split('.')[-1]}")
            if progress:
                print(msg)
            log.info(msg)
            avail = _available_memory()
            if avail is not None and nbytes > 0.8 * avail:
                warnings.warn(f"the feature cache needs {_human(nbytes)} but only {_human(avail)} of memory is "
                              f"available; use fewer stages, float16, or a subset", DataWarning, stacklevel=2)

            feats = {s: torch.empty((views, n) + shp, dtype=dtype) for s, shp in shapes.items()}
            labels = torch.empty(n, dtype=torch.long)
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                pin_memory=device.type == "cuda")
            start, overflow = 0, False
            # a bar on a terminal, else one line when done (apse.progress); nothing if not progress
            bar = progress_bar(total=n, desc="extracting features", unit="img", enabled=progress)
            for images, y in loader:
                images = images.to(device)
                b = images.shape[0]
                for v in range(views):
                    out = backbone(torch.flip(images, dims=[-1]) if v == 1 else images)
                    for s in stages:
                        if tuple(out[s].shape[1:]) != shapes[s]:
                            raise ValueError(f"stage {s!r} has shape {tuple(out[s].shape[1:])} for a batch but "
                                             f"{shapes[s]} for the first image: are the images of one size?")
                        stored = out[s].to("cpu", dtype)
                        if not overflow and not torch.isfinite(stored).all():
                            overflow = True  # e.g. float16 tops out at 65504
                            warnings.warn(f"stage {s!r} has non-finite values once stored as {dtype}; use "
                                          f"dtype=torch.float32", DataWarning, stacklevel=2)
                        feats[s][v, start:start + b] = stored
                labels[start:start + b] = torch.as_tensor(y).long()
                start += b
                bar.update(b)
            bar.close()
    finally:
        backbone.train(was_training)

    meta: dict[str, Any] = {
        "backbone": type(backbone).__name__,
        "weights_source": str(getattr(backbone, "weights_source", "unknown")),
        "stages": list(stages),
        "shapes": {s: list(shp) for s, shp in shapes.items()},
        "input_shape": list(first.shape),
        "dtype": str(dtype).split(".")[-1],
        "flips": bool(flips),
        "mean": list(getattr(backbone, "mean", ()) or ()),
        "std": list(getattr(backbone, "std", ()) or ()),
    }
    base, indices = _base_and_indices(dataset)
    if hasattr(base, "samples") and getattr(base, "root", None) is not None:
        rel = [_relpath(p, base.root) for p, _ in base.samples]
        meta["root"] = os.path.abspath(base.root)
        meta["paths"] = rel if indices is None else [rel[i] for i in indices]
    return FeatureDataset(feats, labels, meta)
