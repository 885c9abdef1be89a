"""The decode cache of image mode (apse.data.decoded): equal to the PIL pipeline, reproducible crops,
one shared tensor, its memory guard, and prepare_data using it (APSE_DECODE_CACHE=0 turning it off).
Generated JPEGs and PNGs in tmp_path, plus a handful of real FI-subset images when the subset is here."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from apse.backbones import IMAGENET_MEAN, IMAGENET_STD
from apse.data import EmotionImageFolder, build_transforms, load_rgb
from apse.data.decoded import DecodeCacheTooLarge, DecodedImages, decode_cache_enabled, decoded_nbytes
from apse.distributed import DistInfo
from apse.emotions import EMOTIONS
from apse.data import GatheredBatches
from apse.evaluation import _batches
from conftest import make_dataset

SIZE, RESIZE = 40, 46


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """8 emotions x 8 generated JPEGs of 64 px, plus odd ones: non-square, greyscale, RGBA PNG."""
    root = make_dataset(tmp_path_factory.mktemp("decoded"), per_class=8)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (75, 120, 3), dtype=np.uint8)).save(root / EMOTIONS[0] / "wide.jpg")
    Image.fromarray(rng.integers(0, 256, (90, 50), dtype=np.uint8), "L").save(root / EMOTIONS[1] / "grey.jpg")
    Image.fromarray(rng.integers(0, 256, (60, 70, 4), dtype=np.uint8), "RGBA").save(root / EMOTIONS[2] / "alpha.png")
    return root


def pil_item(dataset, index, train: bool, image_size=SIZE, resize=RESIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    tf = build_transforms(train, image_size=image_size, resize=resize, mean=mean, std=std)
    return tf(load_rgb(dataset.samples[index][0]))


def test_eval_view_equals_the_pil_pipeline(folder):
    ds = EmotionImageFolder(folder)
    mean, std = (0.5,) * 3, (0.5,) * 3  # a backbone's own normalisation (Lite0) is honoured
    decoded = DecodedImages(ds, image_size=SIZE, resize=RESIZE, mean=mean, std=std, progress=False)
    assert decoded.images.shape == (len(ds), 3, RESIZE, RESIZE) and decoded.images.dtype == torch.uint8
    for i in range(len(ds)):
        torch.testing.assert_close(decoded[i][0], pil_item(ds, i, False, mean=mean, std=std), rtol=0, atol=1e-6)
    # a whole batch is the items stacked
    batch, labels = decoded.get_batch([3, 0, 5])
    torch.testing.assert_close(batch, torch.stack([decoded[i][0] for i in (3, 0, 5)]), rtol=0, atol=0)
    assert labels.tolist() == [ds.samples[i][1] for i in (3, 0, 5)]


def test_eval_view_equals_the_pil_pipeline_on_real_images():
    from apse.data import locate_dataset
    from apse.data.images import ImageFileDataset

    try:
        root = locate_dataset()
    except Exception:
        pytest.skip("the FI subset is not here")
    samples = EmotionImageFolder(root).samples
    picks = [samples[i] for i in range(0, len(samples), max(1, len(samples) // 6))][:6]
    # a greyscale file too, if the subset has one (load_rgb converts it)
    grey = next((s for s in samples if Image.open(s[0]).mode != "RGB"), None)
    picks += [grey] if grey else []

    class Files(ImageFileDataset):
        def __init__(self, samples):
            self.samples, self.targets, self.classes = samples, [y for _, y in samples], EMOTIONS
            self.root, self._origin = root, {}

    ds = Files(picks)
    decoded = DecodedImages(ds, image_size=160, resize=183, progress=False)  # the fine-tuned regime's sizes
    for i in range(len(ds)):
        torch.testing.assert_close(decoded[i][0], pil_item(ds, i, False, 160, 183), rtol=0, atol=1e-6)
    assert decoded.samples == picks


def test_train_crops_match_pil_crops_are_reproducible_and_inside(folder):
    from torchvision.transforms import functional as TF

    ds = EmotionImageFolder(folder)
    decoded = DecodedImages(ds, image_size=SIZE, resize=RESIZE, train=True, progress=False,
                            generator=torch.Generator().manual_seed(7))
    idx = torch.arange(len(ds))
    params = decoded.crop_params(len(idx))
    tops, lefts, flips = params
    span = RESIZE - SIZE
    assert tops.min() >= 0 and tops.max() <= span and lefts.min() >= 0 and lefts.max() <= span
    assert flips.any() and not flips.all()
    crops = decoded.normalise(decoded.random_crops(idx, params))
    normalize = build_transforms(False, image_size=SIZE, resize=RESIZE).transforms[-1]
    for k in range(len(ds)):
        resized = TF.resize(load_rgb(ds.samples[k][0]), [RESIZE, RESIZE])
        ref = TF.crop(resized, int(tops[k]), int(lefts[k]), SIZE, SIZE)  # RandomCrop's crop ...
        ref = TF.hflip(ref) if flips[k] else ref                          # ... and flip
        torch.testing.assert_close(crops[k], normalize(TF.to_tensor(ref)), rtol=0, atol=1e-6)
        # and the same as cropping the eval tensor's uint8 image
        own = decoded.images[k, :, tops[k]:tops[k] + SIZE, lefts[k]:lefts[k] + SIZE]
        own = own.flip(-1) if flips[k] else own
        assert torch.equal(decoded.random_crops(idx[k:k + 1], (tops[k:k + 1], lefts[k:k + 1], flips[k:k + 1]))[0], own)

    def draw(seed):
        decoded.generator = torch.Generator().manual_seed(seed)
        return decoded.get_batch(range(10))[0]

    assert torch.equal(draw(3), draw(3)) and not torch.equal(draw(3), draw(4))
    decoded.generator = None  # no generator: torch's global RNG, as RandomCrop draws
    torch.manual_seed(0)
    a = decoded[2][0]
    torch.manual_seed(0)
    assert torch.equal(a, decoded[2][0])


def test_crop_and_flip_distribution_is_randomcrop_and_randomhorizontalflip():
    ds = types.SimpleNamespace(samples=[])
    decoded = DecodedImages(ds, image_size=5, resize=9, progress=False,
                            generator=torch.Generator().manual_seed(0))
    tops, lefts, flips = decoded.crop_params(20000)
    for offsets in (tops, lefts):  # every offset 0 .. resize - size, equally likely
        counts = torch.bincount(offsets, minlength=5)
        assert len(counts) == 5 and counts.min() > 3700 and counts.max() < 4300
    assert abs(flips.float().mean().item() - 0.5) < 0.015
    assert abs(np.corrcoef(tops.numpy(), flips.numpy())[0, 1]) < 0.03  # independent draws
    decoded.flip = False
    assert not decoded.crop_params(100)[2].any()


def test_labels_samples_views_and_shared_storage(folder):
    ds = EmotionImageFolder(folder)
    decoded = DecodedImages(ds, image_size=SIZE, resize=RESIZE, train=True, progress=False)
    assert decoded.samples == ds.samples and decoded.targets == ds.targets
    assert decoded.labels.tolist() == [y for _, y in ds.samples] and decoded.root == ds.root
    evaluation = decoded.view(train=False)
    assert decoded.training and not evaluation.training
    assert evaluation.images.data_ptr() == decoded.images.data_ptr()  # one tensor, not copied
    subsets = [Subset(evaluation, [0, 1, 2]), Subset(evaluation, [5, 7]), Subset(decoded, [3])]
    assert {s.dataset.images.data_ptr() for s in subsets} == {decoded.images.data_ptr()}
    # evaluation gathers whole batches from the view, in order
    loader = _batches(subsets[0], 2, 0, torch.device("cpu"))
    assert isinstance(loader, GatheredBatches)
    got = [(x.shape[0], y.tolist()) for x, y in loader]
    assert got == [(2, [ds.samples[0][1], ds.samples[1][1]]), (1, [ds.samples[2][1]])]


def test_memory_guard_refuses_before_decoding(tmp_path):
    ds = types.SimpleNamespace(samples=[(str(tmp_path / f"missing{i}.jpg"), 0) for i in range(10)])
    assert decoded_nbytes(10, 256) == 10 * 3 * 256 * 256
    with pytest.raises(DecodeCacheTooLarge, match=r"10 images at 256 x 256 needs 2 MB .* limit of 1 MB"):
        DecodedImages(ds, image_size=224, resize=256, max_bytes=2**20, progress=False)


def test_progress_is_one_line_off_a_terminal(folder, capsys):
    ds = EmotionImageFolder(folder)
    DecodedImages(ds, image_size=SIZE, resize=RESIZE, progress=False)
    assert capsys.readouterr().err == ""
    DecodedImages(ds, image_size=SIZE, resize=RESIZE, progress=True)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{len(ds)} img" in err


def _prepare(folder, **changes):
    from apse.config import TrainConfig
    from apse.training_data import prepare_data

    base = dict(backbone="efficientnet_lite0", pretrained=False, image_size=SIZE, resize=RESIZE, split="50/25/25",
                num_workers=0, batch_size_eval=64)
    config = TrainConfig(**{**base, **changes})
    model = types.SimpleNamespace(backbone=types.SimpleNamespace(mean=IMAGENET_MEAN, std=IMAGENET_STD))
    logs = []
    data = prepare_data(config, str(folder), model, device=torch.device("cpu"), dist_info=DistInfo(),
                        log=logs.append, progress=False)
    return data, logs


def test_prepare_data_uses_the_decode_cache_and_the_switch_turns_it_off(folder, monkeypatch):
    monkeypatch.delenv("APSE_DECODE_CACHE", raising=False)
    assert decode_cache_enabled()
    data, logs = _prepare(folder)
    decoded = data.train_set.dataset
    assert isinstance(decoded, DecodedImages) and decoded.training and decoded.generator is data.loader_generator
    assert isinstance(data.train_loader, GatheredBatches)
    ptr = decoded.images.data_ptr()
    for view in (data.gallery_set, data.val_set, data.test_set):
        assert not view.dataset.training and view.dataset.images.data_ptr() == ptr  # one tensor for all views
    assert any("decoded" in line for line in logs)

    def first_batch(data, seed):
        data.loader_generator.manual_seed(seed)  # what the trainer does at every epoch
        data.batch_sampler.set_epoch(1)
        return next(iter(data.train_loader))

    x, y = first_batch(data, 11)
    assert x.shape == (32, 3, SIZE, SIZE) and x.dtype == torch.float32 and y.shape == (32,)
    assert torch.equal(x, first_batch(data, 11)[0])                   # reproducible from the epoch's seed
    assert not torch.equal(x, first_batch(data, 12)[0])
    assert torch.equal(x, first_batch(_prepare(folder)[0], 11)[0])    # ... in another run too
    # the gallery view's items are the PIL pipeline's
    k = data.split["train"][0]
    ds = EmotionImageFolder(folder)
    torch.testing.assert_close(data.gallery_set[0][0], pil_item(ds, k, False), rtol=0, atol=1e-6)

    for off in ("0", "off"):
        monkeypatch.setenv("APSE_DECODE_CACHE", off)
        plain, _ = _prepare(folder)
        assert not isinstance(plain.train_set.dataset, DecodedImages) and isinstance(plain.train_loader, DataLoader)
        assert plain.split == data.split


def test_prepare_data_falls_back_above_the_memory_limit(folder, monkeypatch):
    from apse import training_data

    monkeypatch.delenv("APSE_DECODE_CACHE", raising=False)
    monkeypatch.setattr(training_data, "DEFAULT_MAX_BYTES", 1000)
    data, logs = _prepare(folder)
    assert not isinstance(data.train_set.dataset, DecodedImages) and isinstance(data.train_loader, DataLoader)
    assert any("not decoding" in line for line in logs)
