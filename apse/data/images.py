"""Image files: finding them by content, decoding them to RGB, checking them, and the dataset that reads them.

:func:`is_image_file` judges a file by its first bytes (a JPEG saved as ``x.dat`` is an image, a README
is not), :func:`load_rgb` decodes any PIL mode to RGB or raises :class:`CorruptImageError` naming the
file, and :class:`ImageFileDataset` is what :class:`apse.data.EmotionImageFolder` and
:class:`apse.data.polarity.LabelledImages` share: item i is image i decoded, transformed, with its label.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageOps
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".jp2", ".j2k", ".jpx",
})

#: How thoroughly a dataset checks its files when it lists them (see EmotionImageFolder).
CHECKS = ("header", "full", "none")


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
# The dataset of image files
# ----------------------------------------------------------------------------------------------------

class ImageFileDataset(Dataset):
    """Images listed in ``samples`` [(path, label)]: item i is ``(transform(RGB image) or the PIL image,
    target_transform(label) or label)``.

    The part the image datasets share (:class:`apse.data.EmotionImageFolder`,
    :class:`apse.data.polarity.LabelledImages`): decoding through :func:`load_rgb`, a
    :class:`CorruptImageError` that names the file (and the manifest line it came from), counts per
    class and paths relative to ``root``. Subclasses set ``samples``, ``targets``, ``classes``,
    ``root``, ``transform`` and ``_origin`` (path -> where it was listed, e.g. ``labels.csv line 3``).
    """

    samples: list[tuple[str, int]]
    targets: list[int]
    classes: Sequence[str]
    root: Path
    transform: Callable | None = None
    target_transform: Callable | None = None
    _origin: dict[str, str]

    def _listed_at(self, path: str) -> str:
        """`` (labels.csv line 3)`` for a file read from a manifest, else the empty string."""
        return f" ({self._origin[path]})" if path in self._origin else ""

    def _decode_error(self, exc: CorruptImageError, path: str) -> str:
        """The message when item `path` fails to decode in ``__getitem__`` (subclasses add advice)."""
        return f"{exc}{self._listed_at(path)}"

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            image = load_rgb(path)
        except CorruptImageError as exc:
            raise CorruptImageError(self._decode_error(exc, path)) from exc.__cause__
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label

    def class_counts(self) -> dict[str, int]:
        """Number of images per class, in the order of ``classes`` (zeros included)."""
        counts = np.bincount(np.asarray(self.targets, dtype=np.int64), minlength=len(self.classes))
        return {name: int(c) for name, c in zip(self.classes, counts)}

    def relative_paths(self) -> list[str]:
        """Sample paths relative to :attr:`root`, with forward slashes (what split files store)."""
        return [_relpath(p, self.root) for p, _ in self.samples]
