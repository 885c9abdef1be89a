"""Shared test fixtures: a tiny generated dataset in FI's folder layout (never real FI images)."""
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

import pytest

from apse.config import TrainConfig
from apse.emotions import EMOTIONS


def make_dataset(root: Path, per_class: int = 8, size: int = 64, seed: int = 0) -> Path:
    """8 emotion folders of small JPEGs: a per-emotion colour and stripe orientation plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for e, name in enumerate(EMOTIONS):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        colour = np.array([(e * 37) % 256, (e * 91 + 60) % 256, (255 - e * 29) % 256], dtype=np.float32)
        stripes = 60 * np.sin((xx * np.cos(e) + yy * np.sin(e)) * (0.2 + 0.05 * e))[..., None]
        for i in range(per_class):
            img = colour + stripes + rng.normal(0, 25, (size, size, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{name}{i}.jpg", quality=90)
    return root


def load_file(path: Path):
    """The Python file ``path`` as a module named by its stem: the book's scripts and Sphinx
    extensions (book/_ext, .ci) are files, not modules of a package."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A generated data set (8 emotions x 8 JPEGs, 64 px), one per test module."""
    return make_dataset(tmp_path_factory.mktemp("tiny"))


def tiny_config(tmp: Path, **changes) -> TrainConfig:
    """A training config small enough for a test: a random Lite0 on :func:`tiny`'s images."""
    # conv3 + conv4 at 32 px: Lite0 is cut after block 10, a training step costs a fraction of a second
    base = dict(backbone="efficientnet_lite0", pretrained=False, image_size=32, resize=36, high_stage="conv4", epochs=2,
                split="50/25/25", num_workers=0, lr=0.01, eval_every=1, batch_size_eval=64,
                feature_cache=str(tmp / "cache"))
    base.update(changes)
    return TrainConfig(**base)
