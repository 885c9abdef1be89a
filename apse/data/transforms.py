"""Image transforms: the papers' preprocessing (square resize, 224 crop, flip, ToTensor, Normalize),
and the image section of a training config (:class:`ImageConfig`), which they consume."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from apse.backbones import IMAGENET_MEAN, IMAGENET_STD
from apse.checks import ConfigError


@dataclass
class ImageConfig:
    """Image sizes: resize, then crop (the image section of :class:`apse.config.TrainConfig`)."""

    image_size: int = 224                      # crop size
    resize: int = 256                          # images are resized to resize x resize first

    def check_image(self) -> None:
        """ConfigError unless both sizes are positive and the crop fits in the resized image."""
        for name in ("image_size", "resize"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.image_size > self.resize:
            raise ConfigError(f"image_size ({self.image_size}) must not exceed resize ({self.resize})")


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
    # lazy: importing torchvision costs seconds, and only this function of apse.data needs it
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
