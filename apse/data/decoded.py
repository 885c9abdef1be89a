"""Images decoded once per run into one uint8 tensor: the image mode's data without per-epoch decoding.

:class:`DecodedImages` decodes every image of a dataset once (:func:`apse.data.load_rgb`, through the
dataset's own item code, then the square ``resize x resize`` resize of
:func:`apse.data.build_transforms`) into one ``uint8`` tensor ``[N, 3, resize, resize]`` held in memory,
and serves the rest of the papers' preprocessing from it, a whole batch at a time
(:meth:`DecodedImages.get_batch`, which :class:`apse.data.GatheredBatches` and evaluation's batching
call, as they do for cached features):

* training view (``train=True``): a random ``image_size`` crop and a random horizontal flip (p = 0.5)
  of each image, drawn with ``generator`` (the run's loader generator, reseeded every epoch by the
  trainer), else torch's global RNG: the distribution of ``RandomCrop`` + ``RandomHorizontalFlip``
  (every offset ``0 .. resize - image_size`` equally likely on each axis, independent of the flip);
* evaluation view (``train=False``): the centre crop, at the offset ``CenterCrop`` takes
  (``int(round((resize - image_size) / 2))``);

then ToTensor's float conversion (``/ 255``) and the backbone's Normalize(mean, std), the same float32
operations in the same order, once per batch. An item therefore equals what
``build_transforms(train, image_size, resize, mean, std)`` gives for the same crop and flip: the resize is
the same PIL resize, whose output is uint8 in both pipelines (tests/data/test_decoded.py compares them on
real images). The views share one tensor (:meth:`view`); ``Subset`` views of them copy nothing.

Memory: ``N x 3 x resize x resize`` bytes: 602 images at 183 px (the fine-tuned regime) are 60 MB, at
256 px 118 MB; the 23,308 images of FI at 256 px would be 4.6 GB. Above ``max_bytes``
(:data:`DEFAULT_MAX_BYTES`, 2 GiB) the constructor refuses with :class:`DecodeCacheTooLarge` before
decoding anything; :func:`apse.training_data.prepare_data` checks :func:`decoded_nbytes` first and falls
back to decoding every item through a DataLoader, as before.

Switch: :func:`apse.training_data.prepare_data` uses the cache in image mode (``cache_features`` false)
whenever it fits; the environment variable ``APSE_DECODE_CACHE=0`` (or ``false``, ``no``, ``off``)
turns it off (:func:`decode_cache_enabled`), which brings back the per-item PIL pipeline.
"""
from __future__ import annotations

import copy
import os
import time
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from apse.backbones import IMAGENET_MEAN, IMAGENET_STD
from apse.progress import progress_bar

__all__ = ["DecodedImages", "DecodeCacheTooLarge", "DEFAULT_MAX_BYTES", "decoded_nbytes", "decode_cache_enabled"]

#: The largest decoded tensor :class:`DecodedImages` builds by default (2 GiB): 17,000 images at 183 px,
#: 10,900 at 256 px. A run holds one per process (per rank under torchrun).
DEFAULT_MAX_BYTES = 2 * 2**30

_OFF = ("0", "false", "no", "off")


class DecodeCacheTooLarge(MemoryError):
    """The decoded images would exceed the size limit; the message gives both sizes."""


def decode_cache_enabled() -> bool:
    """False when ``$APSE_DECODE_CACHE`` is ``0``/``false``/``no``/``off``; else True (the default)."""
    return os.environ.get("APSE_DECODE_CACHE", "1").strip().lower() not in _OFF


def default_resize(image_size: int, resize: int | None) -> int:
    """``resize``, or build_transforms' default ``round(image_size * 256 / 224)``."""
    return int(round(int(image_size) * 256 / 224)) if resize is None else int(resize)


def decoded_nbytes(n_images: int, resize: int) -> int:
    """Bytes of the decoded tensor of ``n_images`` at ``resize x resize``: ``N x 3 x resize**2``."""
    return int(n_images) * 3 * int(resize) ** 2


def _mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:.0f} MB"


class _ResizeToUint8:
    """The item transform used to decode: the PIL resize of build_transforms, then HWC uint8 -> CHW
    (ToTensor's layout, without its float conversion). A class, so DataLoader workers can pickle it."""

    def __init__(self, resize: int):
        self.resize = int(resize)

    def __call__(self, image) -> torch.Tensor:
        from torchvision.transforms import functional as TF  # lazy, as in apse.data.transforms

        image = TF.resize(image, [self.resize, self.resize])  # = T.Resize((resize, resize)): bilinear
        array = np.array(image, dtype=np.uint8, copy=True)
        if array.ndim != 3 or array.shape[2] != 3:
            raise TypeError(f"expected an RGB image, got an array of shape {array.shape}")
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class DecodedImages(Dataset):
    """Every image of ``dataset`` decoded once and resized, in one uint8 tensor; see the module docstring.

    Args:
        dataset: images with ``samples`` [(path, label)] whose items decode through ``transform``
            (:class:`apse.data.EmotionImageFolder`, :class:`apse.data.polarity.LabelledImages`): a
            shallow copy with the resize as its transform decodes them, so errors name the file as the
            dataset does.
        image_size, resize: the crop and the square resize (``resize`` None: build_transforms' default).
        mean, std: the backbone's normalisation.
        train: the view's mode (random crop + flip, or centre crop); :meth:`view` gives the other.
        flip: random horizontal flips in the training view (build_transforms' ``flip``).
        generator: a ``torch.Generator`` the training view draws crops and flips from (None: torch's
            global RNG). ``prepare_data`` passes the run's loader generator, reseeded every epoch.
        max_bytes: the size limit (:data:`DEFAULT_MAX_BYTES`); above it :class:`DecodeCacheTooLarge`.
        num_workers: DataLoader workers for the one decoding pass.
        progress: a bar on a terminal, else one line when done (:mod:`apse.progress`); False: silent.

    Attributes: ``images`` (N, 3, resize, resize) uint8, ``labels`` (N,) long, ``targets``,
    ``samples``, ``root``, ``classes`` (as the dataset had them), ``training``, ``decode_seconds``.
    """

    def __init__(self, dataset: Dataset, *, image_size: int, resize: int | None = None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, train: bool = False,
                 flip: bool = True, generator: torch.Generator | None = None,
                 max_bytes: int | None = DEFAULT_MAX_BYTES, num_workers: int = 0, progress: bool = True):
        self.image_size = int(image_size)
        self.resize = default_resize(image_size, resize)
        if self.image_size < 1 or self.resize < self.image_size:
            raise ValueError(f"need 1 <= image_size <= resize, got image_size={self.image_size}, resize={self.resize}")
        self.samples = list(dataset.samples)
        n = len(self.samples)
        nbytes = decoded_nbytes(n, self.resize)
        if max_bytes is not None and nbytes > max_bytes:
            raise DecodeCacheTooLarge(
                f"decoding {n} images at {self.resize} x {self.resize} needs {_mb(nbytes)} of memory, above the "
                f"limit of {_mb(max_bytes)}; decode per item instead (APSE_DECODE_CACHE=0) or raise max_bytes")
        self.root = getattr(dataset, "root", None)
        if hasattr(dataset, "classes"):
            self.classes = dataset.classes
        self.training, self.flip, self.generator = bool(train), bool(flip), generator
        self.mean = torch.as_tensor(tuple(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.as_tensor(tuple(std), dtype=torch.float32).view(1, -1, 1, 1)

        t0 = time.time()
        self.images = torch.empty((n, 3, self.resize, self.resize), dtype=torch.uint8)
        labels = torch.empty(n, dtype=torch.long)
        source = copy.copy(dataset)
        source.transform = _ResizeToUint8(self.resize)
        loader = DataLoader(source, batch_size=32, shuffle=False, num_workers=num_workers) if n else []
        bar = progress_bar(total=n, desc=f"decoding images ({_mb(nbytes)})", unit="img", leave=False,
                           enabled=progress)
        start = 0
        try:
            for batch, targets in loader:
                if batch.dtype != torch.uint8 or tuple(batch.shape[1:]) != tuple(self.images.shape[1:]):
                    raise TypeError(f"the dataset's items did not go through its transform (got "
                                    f"{batch.dtype} {tuple(batch.shape)}); DecodedImages needs an image dataset")
                self.images[start:start + len(batch)] = batch
                labels[start:start + len(batch)] = torch.as_tensor(targets, dtype=torch.long)
                start += len(batch)
                bar.update(len(batch))
        finally:
            bar.close()
        self.labels = labels
        self.targets = labels.tolist()
        self.decode_seconds = time.time() - t0

    # ------------------------------------------------------------------ views
    def view(self, train: bool) -> "DecodedImages":
        """The same images (one tensor, not copied) in training or evaluation mode."""
        clone = copy.copy(self)
        clone.training = bool(train)
        return clone

    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size()

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"DecodedImages({len(self)} images at {self.resize} px, {self.image_size} px "
                f"{'random' if self.training else 'centre'} crops, {_mb(self.nbytes())})")

    # ------------------------------------------------------------------ items and batches
    def __getitem__(self, index: int):
        images, labels = self.get_batch([int(index)])
        return images[0], int(labels[0])

    def get_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images (B, 3, image_size, image_size) float32, normalised; labels (B,))`` of ``indices``:
        random crops and flips in the training view, centre crops in the evaluation view."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        crops = self.random_crops(idx) if self.training else self.centre_crops(idx)
        return self.normalise(crops), self.labels[idx]

    def centre_crops(self, idx: torch.Tensor) -> torch.Tensor:
        """uint8 centre crops of images ``idx``, at CenterCrop's offset."""
        s = self.image_size
        top = int(round((self.resize - s) / 2.0))
        return self.images[idx, :, top:top + s, top:top + s]

    def crop_params(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(tops, lefts, flips)`` for ``n`` training items: offsets uniform on 0 .. resize - image_size,
        a flip with probability 0.5 (none when ``flip`` is off), drawn from ``generator``."""
        span = self.resize - self.image_size + 1
        tops = torch.randint(0, span, (n,), generator=self.generator)
        lefts = torch.randint(0, span, (n,), generator=self.generator)
        flips = (torch.rand(n, generator=self.generator) < 0.5) if self.flip else torch.zeros(n, dtype=torch.bool)
        return tops, lefts, flips

    def random_crops(self, idx: torch.Tensor, params=None) -> torch.Tensor:
        """uint8 random crops (and flips) of images ``idx``; ``params`` = :meth:`crop_params` to fix them."""
        tops, lefts, flips = self.crop_params(len(idx)) if params is None else params
        s = self.image_size
        out = torch.empty((len(idx), 3, s, s), dtype=torch.uint8)
        for b, (k, i, j) in enumerate(zip(idx.tolist(), tops.tolist(), lefts.tolist())):
            out[b] = self.images[k, :, i:i + s, j:j + s]
        if bool(flips.any()):
            out[flips] = out[flips].flip(-1)
        return out

    def normalise(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, h, w) -> float32, ToTensor's ``/ 255`` then Normalize's ``(x - mean) / std``."""
        return crops.to(torch.float32).div(255).sub_(self.mean).div_(self.std)
