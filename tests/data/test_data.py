"""Tests of apse.data (the package): loader, manifests, dataset lookup, splits, sampler, transforms, feature cache.

Every image here is generated with PIL in a temporary folder; the real FI subset is only used by the
test marked `fi_subset`, which skips when ../shared/data/fi-subset is absent.
"""
from __future__ import annotations

import io
import json
import os
import random
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import apse.data.locate
from apse.data import (
    BalancedBatchSampler, CorruptImageError, DataWarning, EmotionImageFolder, FeatureDataset,
    build_transforms, extract_features, load_split, locate_dataset, save_split, stratified_kfold,
    stratified_split,
)
from apse.data.splits import _largest_remainder
from apse.emotions import EMOTIONS

REPO = Path(__file__).resolve().parents[2]
FI_SUBSET = REPO.parent / "shared" / "data" / "fi-subset"


# --------------------------------------------------------------------------------------------------
# helpers: images made on the fly
# --------------------------------------------------------------------------------------------------

def jpeg_bytes(size=(40, 30), color=(200, 30, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def noisy_jpeg_bytes(size=(64, 48), seed=0) -> bytes:
    """A JPEG with real entropy-coded data (noise), so truncating it cuts pixel data."""
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def write(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def make_tree(root: Path, counts: dict[str, int], size=(16, 12)) -> Path:
    for name, n in counts.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = Image.new("RGB", size, (10 * i % 255, 40, 90))
            img.paste((250, 250, 0), (0, 0, size[0] // 3, size[1]))  # left band: not mirror-symmetric
            img.save(d / f"{name}_{i:03d}.png")
    return root


@pytest.fixture()
def mixed_root(tmp_path) -> Path:
    """amusement: greyscale PNG, CMYK JPEG, RGBA PNG, palette PNG with transparency, JPEG named .dat,
    a text file and a README; fear: a corrupt JPEG and a good one; anger: a good one."""
    root = tmp_path / "mixed"
    a = root / "amusement"
    a.mkdir(parents=True)
    Image.new("L", (20, 10), 77).save(a / "grey.png")
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(a / "cmyk.jpg", "JPEG", quality=95)  # red ink
    rgba = Image.new("RGBA", (20, 10), (0, 0, 255, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black
    rgba.save(a / "rgba.png")
    pal = Image.new("P", (20, 10), 1)
    pal.putpalette([0, 0, 0, 0, 200, 0] + [0] * (254 * 3))
    pal.putpixel((0, 0), 0)
    pal.save(a / "palette.png", transparency=0)  # palette index 0 is transparent
    write(a / "really_a_jpeg.dat", jpeg_bytes((20, 10)))
    (a / "notes.txt").write_text("not an image\n")
    (a / "README").write_text("# readme\n")
    write(root / "fear" / "corrupt.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    write(root / "fear" / "good.jpg", jpeg_bytes())
    write(root / "anger" / "good.jpg", jpeg_bytes())
    (root / "SHA256SUMS").write_text("ignored\n")  # files in the root are not classes
    return root


# --------------------------------------------------------------------------------------------------
# EmotionImageFolder
# --------------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::apse.data.DataWarning")  # expected warnings are asserted inside
def test_corrupt_file_raises_naming_it(mixed_root):
    with pytest.raises(CorruptImageError, match="corrupt.jpg"):
        EmotionImageFolder(mixed_root)


def test_skip_counts_in_one_warning_and_formats_become_rgb(mixed_root):
    with pytest.warns(DataWarning) as record:
        ds = EmotionImageFolder(mixed_root, on_error="skip")
    skipped = [str(w.message) for w in record if "skipped" in str(w.message)]
    assert len(skipped) == 1 and "skipped 1 image file" in skipped[0] and "corrupt.jpg" in skipped[0]
    missing = [str(w.message) for w in record if "no folder for" in str(w.message)]
    assert len(missing) == 1 and "contentment" in missing[0] and "sadness" in missing[0]
    assert [Path(p).name for p, _ in ds.bad_files] == ["corrupt.jpg"]

    names = {Path(p).name: y for p, y in ds.samples}
    # the .dat JPEG is found by content; text files are not images
    assert names == {"cmyk.jpg": 0, "grey.png": 0, "palette.png": 0, "really_a_jpeg.dat": 0, "rgba.png": 0,
                     "good.jpg": names["good.jpg"]}
    assert sorted(Path(p).name for p in ds.ignored_files) == ["README", "notes.txt"]
    assert len(ds) == 7 and ds.targets.count(0) == 5 and ds.class_counts()["fear"] == 1
    assert ds.class_counts()["anger"] == 1 and ds.classes == EMOTIONS

    by_name = {Path(p).name: i for i, (p, _) in enumerate(ds.samples)}
    for name, i in by_name.items():
        img, label = ds[i]
        assert isinstance(img, Image.Image) and img.mode == "RGB", name
    grey = np.asarray(ds[by_name["grey.png"]][0])
    assert (grey == 77).all()
    cmyk = np.asarray(ds[by_name["cmyk.jpg"]][0]).astype(int)
    assert cmyk[..., 0].mean() > 200 and cmyk[..., 1].mean() < 60 and cmyk[..., 2].mean() < 60
    rgba = np.asarray(ds[by_name["rgba.png"]][0])
    assert tuple(rgba[0, 0]) == (255, 255, 255)  # transparent -> white
    assert tuple(rgba[5, 5]) == (0, 0, 255)
    pal = np.asarray(ds[by_name["palette.png"]][0])
    assert tuple(pal[0, 0]) == (255, 255, 255) and tuple(pal[5, 5]) == (0, 200, 0)


@pytest.mark.filterwarnings("ignore::apse.data.DataWarning")  # expected warnings are asserted inside
def test_truncated_jpeg_lazy_error_verify_and_full_check(tmp_path):
    root = make_tree(tmp_path / "t", {"awe": 2})
    full = noisy_jpeg_bytes()
    write(root / "awe" / "truncated.jpg", full[: len(full) // 2])
    # the header is intact, so the cheap scan keeps it; decoding it names the file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # missing emotion folders
        ds = EmotionImageFolder(root)
    i = [Path(p).name for p, _ in ds.samples].index("truncated.jpg")
    with pytest.raises(CorruptImageError, match="truncated.jpg"):
        ds[i]
    with pytest.raises(CorruptImageError, match="truncated.jpg"):
        ds.verify(progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        ds = EmotionImageFolder(root, on_error="skip")
    with pytest.warns(DataWarning, match="skipped 1 image file"):
        bad = ds.verify(progress=False)
    assert [Path(p).name for p, _ in bad] == ["truncated.jpg"] and len(ds) == 2 == len(ds.targets)
    with pytest.warns(DataWarning, match="skipped 1 image file"):
        ds = EmotionImageFolder(root, on_error="skip", check="full")
    assert len(ds) == 2


def test_unknown_folder_raises_listing_valid_names(tmp_path):
    root = make_tree(tmp_path / "u", {"amusement": 1, "happiness": 1})
    with pytest.raises(ValueError, match="happiness") as err:
        EmotionImageFolder(root)
    assert all(name in str(err.value) for name in EMOTIONS)


def test_empty_folder_is_reported(tmp_path):
    root = make_tree(tmp_path / "e", {name: 1 for name in EMOTIONS if name != "disgust"})
    (root / "disgust").mkdir()
    with pytest.warns(DataWarning, match="no images.*disgust"):
        ds = EmotionImageFolder(root)
    assert ds.class_counts()["disgust"] == 0 and len(ds) == 7


def test_labels_follow_names_not_alphabetical_order(tmp_path):
    counts = {"Sadness": 3, "amusement": 1, "ANGER": 2, "awe": 4, "contentment": 1, "disgust": 2,
              "Excitement": 1, "fear": 5}
    root = make_tree(tmp_path / "n", counts)
    ds = EmotionImageFolder(root, transform=build_transforms(False, image_size=8, resize=10))
    assert ds.class_counts() == {"amusement": 1, "contentment": 1, "awe": 4, "excitement": 1, "fear": 5,
                                 "anger": 2, "disgust": 2, "sadness": 3}
    for path, label in ds.samples:
        assert Path(path).parent.name.lower() == EMOTIONS[label]
    assert ds.targets == sorted(ds.targets)  # ordered by emotion index
    x, y = ds[0]
    assert x.shape == (3, 8, 8) and y == 0
    # ImageFolder's alphabetical order would have called anger class 1
    assert EMOTIONS.index("anger") == 5 and Counter(ds.targets)[5] == 2


# --------------------------------------------------------------------------------------------------
# manifests
# --------------------------------------------------------------------------------------------------

def assert_manifest_fails(csv: Path, text: str, error: type[Exception], match: str) -> None:
    """Write `text` as the manifest `csv`; reading it must raise `error` with a message matching `match`."""
    csv.write_text(text)
    with pytest.raises(error, match=match):
        EmotionImageFolder.from_manifest(csv)


@pytest.mark.filterwarnings("ignore::apse.data.DataWarning")  # expected warnings are asserted inside
def test_manifest_loading_and_errors(tmp_path):
    imgs = tmp_path / "images"
    for i in range(4):
        write(imgs / f"img{i}.jpg", jpeg_bytes())
    csv = tmp_path / "labels.csv"
    csv.write_text("id,Path,Emotion\n1,images/img0.jpg,Fear\n2,images/img1.jpg,0\n\n3,images/img2.jpg,sadness\n")
    with pytest.warns(DataWarning, match="no images of"):
        ds = EmotionImageFolder.from_manifest(csv)
    assert [(Path(p).name, y) for p, y in ds.samples] == [("img1.jpg", 0), ("img0.jpg", 4), ("img2.jpg", 7)]
    assert ds.root == tmp_path and ds.relative_paths()[0] == "images/img1.jpg"

    # relative to an explicit root
    csv2 = tmp_path / "elsewhere" / "m.csv"
    csv2.parent.mkdir()
    csv2.write_text("path,emotion\nimg3.jpg,awe\n")
    with pytest.warns(DataWarning):
        ds2 = EmotionImageFolder.from_manifest(csv2, root=imgs)
    assert ds2.samples == [(str(imgs / "img3.jpg"), 2)]

    bad = tmp_path / "bad.csv"
    assert_manifest_fails(bad, "file,emotion\nimages/img0.jpg,fear\n", ValueError, "missing column.*path")
    assert_manifest_fails(bad, "path,emotion\nimages/img0.jpg,fear\nimages/img1.jpg,joy\n", ValueError,
                          "line 3.*joy")
    assert_manifest_fails(bad, "path,emotion\nimages/img0.jpg,9\n", ValueError, "line 2.*out of range")
    assert_manifest_fails(bad, "path,emotion\nimages/img0.jpg,fear\nimages/img0.jpg,awe\n", ValueError,
                          "line 3.*line 2")
    assert_manifest_fails(bad, "path,emotion\nimages/img0.jpg,fear\nimages/nope.jpg,awe\n", FileNotFoundError,
                          "line 3.*nope.jpg")
    with pytest.warns(DataWarning, match="skipped 1 file"):
        ds3 = EmotionImageFolder.from_manifest(bad, on_error="skip")  # the manifest listing nope.jpg
    assert len(ds3) == 1
    write(imgs / "broken.jpg", b"not a jpeg at all")
    assert_manifest_fails(bad, "path,emotion\nimages/broken.jpg,fear\nimages/img0.jpg,fear\n", CorruptImageError,
                          "broken.jpg.*line 2")


# --------------------------------------------------------------------------------------------------
# locate_dataset
# --------------------------------------------------------------------------------------------------

def test_locate_dataset_search_order(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.setattr(apse.data.locate, "_REPO_ROOT", repo)
    monkeypatch.delenv("APSE_DATA", raising=False)

    with pytest.raises(FileNotFoundError) as err:
        locate_dataset()
    msg = str(err.value)
    assert str(repo / "data" / "fi-subset") in msg and str(tmp_path / "shared" / "data" / "fi-subset") in msg
    assert "APSE_DATA" in msg and "AAAI 2016" in msg and "data/README.md" in msg

    shared = make_tree(tmp_path / "shared" / "data" / "fi-subset", {"awe": 1})
    assert locate_dataset() == shared
    local = make_tree(repo / "data" / "fi-subset", {"awe": 1})
    assert locate_dataset() == local  # the repo's data/ before ../shared

    env = tmp_path / "env"
    env_ds = make_tree(env / "fi-subset", {"awe": 1})
    monkeypatch.setenv("APSE_DATA", str(env))
    assert locate_dataset() == env_ds  # $APSE_DATA/<name> before the repo
    monkeypatch.setenv("APSE_DATA", str(env_ds))
    assert locate_dataset() == env_ds  # $APSE_DATA naming the dataset itself
    monkeypatch.setenv("APSE_DATA", str(tmp_path / "nowhere"))
    assert locate_dataset() == local  # a wrong $APSE_DATA falls through (and is listed when all fail)

    explicit = make_tree(tmp_path / "mine", {"fear": 1})
    assert locate_dataset(explicit) == explicit
    with pytest.raises(FileNotFoundError, match="does not exist"):
        locate_dataset(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        locate_dataset(name="other")


# --------------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------------

def labels_fixture():
    sizes = [77, 77, 78, 75, 78, 75, 70, 72]  # the FI subset's class sizes in the papers' order
    return [c for c, n in enumerate(sizes) for _ in range(n)], sizes


def test_stratified_split_is_stratified_disjoint_covering_and_seeded():
    labels, sizes = labels_fixture()
    random.Random(1).shuffle(labels)
    split = stratified_split(labels)
    assert set(split) == {"train", "val", "test"}
    all_idx = split["train"] + split["val"] + split["test"]
    assert sorted(all_idx) == list(range(len(labels)))  # disjoint and covering
    for part in split.values():
        assert part == sorted(part)
    y = np.asarray(labels)
    for c, n in enumerate(sizes):
        got = [int((y[split[k]] == c).sum()) for k in ("train", "val", "test")]
        assert got == _largest_remainder(n, (0.8, 0.05, 0.15))
        assert all(abs(g - n * f) < 1 for g, f in zip(got, (0.8, 0.05, 0.15)))
    assert _largest_remainder(77, (0.8, 0.05, 0.15)) == [62, 4, 11]  # 61.6, 3.85, 11.55
    assert stratified_split(labels, seed=0) == split
    assert stratified_split(labels, seed=1) != split
    two = stratified_split(torch.tensor(labels), (0.5, 0.5), seed=3, names=("a", "b"))
    assert sorted(two["a"] + two["b"]) == list(range(len(labels)))
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(labels, (0.8, 0.1, 0.15))
    with pytest.raises(ValueError, match="names"):
        stratified_split(labels, (0.5, 0.5))


def test_stratified_kfold_holds_each_index_once():
    labels, sizes = labels_fixture()
    random.Random(2).shuffle(labels)
    folds = stratified_kfold(labels, k=5, seed=0)
    assert len(folds) == 5
    held_count = Counter(i for _, held in folds for i in held)
    assert sorted(held_count) == list(range(len(labels))) and set(held_count.values()) == {1}
    y = np.asarray(labels)
    for train, held in folds:
        assert sorted(train + held) == list(range(len(labels))) and not set(train) & set(held)
        for c, n in enumerate(sizes):
            assert abs((y[held] == c).sum() - n / 5) < 1
    assert max(len(h) for _, h in folds) - min(len(h) for _, h in folds) <= 1
    assert stratified_kfold(labels, k=5, seed=0) == folds and stratified_kfold(labels, k=5, seed=1) != folds
    with pytest.raises(ValueError):
        stratified_kfold(labels, k=1)


def test_save_load_split_round_trip_survives_new_files(tmp_path):
    root = make_tree(tmp_path / "ds", {name: 5 for name in EMOTIONS})
    ds = EmotionImageFolder(root)
    split = stratified_split(ds.targets, seed=4)
    f = save_split(tmp_path / "splits" / "split.json", split, ds)
    stored = json.loads(f.read_text())
    assert stored["splits"]["test"][0].count("/") == 1 and not os.path.isabs(stored["splits"]["test"][0])
    assert load_split(f, ds) == split

    # a new file sorts first, shifting every index: the split still names the same files
    Image.new("RGB", (16, 12)).save(root / "amusement" / "aaa_new.png")
    ds2 = EmotionImageFolder(root)
    loaded = load_split(f, ds2)
    for name in split:
        assert [ds2.samples[i][0] for i in loaded[name]] == [ds.samples[i][0] for i in split[name]]

    # k-fold lists are written as fold<i>_train / fold<i>_held; a plain list of samples works too
    folds = stratified_kfold(ds.targets, k=5)
    f2 = save_split(tmp_path / "folds.json", folds, ds.samples)
    assert load_split(f2, ds)["fold3_held"] == folds[3][1]

    os.remove(ds.samples[split["test"][0]][0])
    with pytest.raises(FileNotFoundError, match="do not exist"):
        load_split(f, ds)


# --------------------------------------------------------------------------------------------------
# BalancedBatchSampler
# --------------------------------------------------------------------------------------------------

def test_sampler_batches_are_balanced_grouped_and_sized():
    labels, sizes = labels_fixture()
    random.Random(3).shuffle(labels)
    sampler = BalancedBatchSampler(labels, 8, 4, seed=0)
    assert len(sampler) == len(labels) // 32 == 18
    sampler.set_epoch(0)
    epoch0 = list(sampler)
    assert len(epoch0) == 18
    for batch in epoch0:
        assert len(batch) == 32 and len(set(batch)) == 32
        assert [labels[i] for i in batch] == [c for c in range(8) for _ in range(4)]  # grouped, emotion order
    # without replacement within a class until it runs out: 18 batches x 4 = 72 draws per class, so
    # classes of >= 72 images repeat nothing, and disgust (70) repeats only after all 70 were drawn
    for c, n in enumerate(sizes):
        drawn = [i for batch in epoch0 for i in batch if labels[i] == c]
        assert len(drawn) == 72 and len(set(drawn[:n])) == min(n, 72) and len(set(drawn)) == min(n, 72)
    # reproducible per epoch, different across epochs, auto-advancing
    assert sampler.epoch == 1 and list(sampler) != epoch0
    sampler.set_epoch(0)
    assert list(sampler) == epoch0
    assert list(BalancedBatchSampler(labels, seed=0)) == epoch0
    assert list(BalancedBatchSampler(labels, seed=1)) != epoch0

    # long epochs reshuffle a class once it runs out, never repeating inside a batch
    long = BalancedBatchSampler(labels, 8, 4, batches_per_epoch=60)
    batches = list(long)
    assert len(batches) == 60 and all(len(set(b)) == 32 for b in batches)
    per_class = Counter(i for b in batches for i in b)
    c6 = [i for i, y in enumerate(labels) if y == 6]  # 70 images, 240 draws: each drawn 3 or 4 times
    assert all(3 <= per_class[i] <= 4 for i in c6)

    # fewer classes per batch: P random classes, still grouped in emotion order
    small = BalancedBatchSampler(labels, classes_per_batch=4, samples_per_class=2)
    for b in small:
        ys = [labels[i] for i in b]
        assert len(b) == 8 and ys == sorted(ys) and all(v == 2 for v in Counter(ys).values())


def test_sampler_tiny_class_warns_and_uses_replacement():
    # class 3 (excitement) has 2 < K = 4 images, the others 10
    labels = [c for c in range(8) for _ in range(2 if c == 3 else 10)]
    with pytest.warns(DataWarning, match="excitement.*replacement"):
        sampler = BalancedBatchSampler(labels, 8, 4)
    tiny = {i for i, y in enumerate(labels) if y == 3}
    for b in sampler:
        part = b[12:16]
        assert set(part) == tiny  # both images every time, padded by repeats
    with pytest.raises(ValueError, match="excitement"):
        BalancedBatchSampler([y for y in labels if y != 3], 8, 4)


def test_sampler_ddp_shards_are_disjoint():
    labels, _ = labels_fixture()
    ranks = [BalancedBatchSampler(labels, seed=5, rank=r, world_size=3) for r in range(3)]
    for s in ranks:
        s.set_epoch(2)
    shards = [list(s) for s in ranks]
    assert all(len(sh) == len(s) == 18 // 3 for sh, s in zip(shards, ranks))
    as_sets = [{tuple(b) for b in sh} for sh in shards]
    assert not (as_sets[0] & as_sets[1]) and not (as_sets[1] & as_sets[2]) and not (as_sets[0] & as_sets[2])
    single = BalancedBatchSampler(labels, seed=5).batches(2)
    assert sorted(b for sh in shards for b in sh) == sorted(single)  # together: the single-process epoch
    with pytest.raises(ValueError):
        BalancedBatchSampler(labels, rank=3, world_size=3)


# --------------------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------------------

def test_transforms_shapes_and_defaults():
    img = Image.new("RGB", (300, 180), (255, 0, 0))
    assert build_transforms(True)(img).shape == (3, 224, 224)
    ev = build_transforms(False, image_size=112)
    x = ev(img)
    assert x.shape == (3, 112, 112)
    assert [type(t).__name__ for t in ev.transforms] == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    assert ev.transforms[0].size == (128, 128)  # round(112 * 256 / 224)
    assert build_transforms(True, resize=256).transforms[0].size == (256, 256)
    assert torch.allclose(x[0], torch.full((112, 112), (1 - 0.485) / 0.229))
    lite = build_transforms(False, mean=(0.5,) * 3, std=(0.5,) * 3)(img)
    assert torch.allclose(lite[0], torch.ones(224, 224))
    names = [type(t).__name__ for t in build_transforms(True, flip=False).transforms]
    assert "RandomHorizontalFlip" not in names and "RandomCrop" in names
    with pytest.raises(ValueError):
        build_transforms(True, image_size=224, resize=200)


# --------------------------------------------------------------------------------------------------
# feature cache
# --------------------------------------------------------------------------------------------------

class TinyBackbone(torch.nn.Module):
    """Two 'stages' like a real backbone: stride 2 (4 ch) and stride 8 (6 ch)."""

    def __init__(self):
        super().__init__()
        self.low = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.high = torch.nn.Sequential(torch.nn.Conv2d(4, 6, 3, stride=4, padding=1), torch.nn.BatchNorm2d(6))
        self.mean, self.std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        self.weights_source = "random"

    def forward(self, x):
        low = self.low(x)
        return {"low": low, "high": self.high(low), "unused": low.mean(1)}


def test_extract_features_shapes_flips_and_round_trip(tmp_path, capsys):
    torch.manual_seed(0)
    root = make_tree(tmp_path / "ds", {name: 2 for name in EMOTIONS}, size=(40, 24))
    ds = EmotionImageFolder(root, transform=build_transforms(False, image_size=32))
    net = TinyBackbone().train()
    feats = extract_features(net, ds, ("low", "high"), batch_size=5, flips=True, dtype=torch.float32,
                             progress=True)
    captured = capsys.readouterr()
    out = captured.out
    # not a terminal here: no bar, one line when the phase ends
    assert captured.err.startswith("extracting features: 16 img in ") and "\r" not in captured.err
    per_image = 4 * 16 * 16 + 6 * 4 * 4
    assert "16 images x 2 view(s)" in out and f"{16 * per_image * 4 * 2}" not in out  # printed in human units
    assert f"16 x {per_image} x 4 B x 2" in out
    assert net.training  # mode restored
    assert feats.features["low"].shape == (2, 16, 4, 16, 16) and feats.features["high"].shape == (2, 16, 6, 4, 4)
    assert feats.nbytes() == 16 * per_image * 4 * 2 and feats.stages == ("low", "high")
    assert feats.targets == ds.targets and feats.num_views == 2

    net.eval()
    with torch.no_grad():
        x = torch.stack([ds[i][0] for i in range(3)])
        ref = net(x)
        ref_flip = net(torch.flip(x, dims=[-1]))
    item, label = feats[1]
    assert label == ds.targets[1] and item["high"].dtype == torch.float32
    assert torch.allclose(item["high"], ref["high"][1], atol=1e-5)  # eval mode: the image as is
    assert torch.allclose(feats.features["low"][1, :3], ref_flip["low"], atol=1e-5)
    assert not torch.allclose(ref_flip["low"], ref["low"])  # the flipped view is a different input

    feats.train()
    seen = set()
    for _ in range(40):
        h = feats[1][0]["high"]
        seen.add(0 if torch.allclose(h, ref["high"][1], atol=1e-5) else
                 1 if torch.allclose(h, ref_flip["high"][1], atol=1e-5) else -1)
    assert seen == {0, 1}
    batch, y = feats.get_batch([0, 2])
    assert batch["low"].shape == (2, 4, 16, 16) and y.tolist() == [ds.targets[0], ds.targets[2]]
    feats.eval()

    path = feats.save(tmp_path / "cache" / "f.pt")
    back = FeatureDataset.load(path)
    assert back.stages == feats.stages and back.targets == feats.targets and back.meta == feats.meta
    for s in feats.stages:
        assert torch.equal(back.features[s], feats.features[s])
    assert back.meta["weights_source"] == "random" and back.meta["paths"][0].startswith("amusement/")
    # split files work on the cache as on the images
    split = stratified_split(ds.targets, (0.5, 0.5), names=("a", "b"))
    f = save_split(tmp_path / "s.json", split, ds)
    assert load_split(f, back) == split

    # default: float16, one view, all stages when stages=None; a Subset keeps its files
    half = extract_features(net, torch.utils.data.Subset(ds, [3, 5, 7]), None, progress=False)
    assert half.features["low"].dtype == torch.float16 and half.num_views == 1
    assert set(half.stages) == {"low", "high", "unused"} and len(half) == 3
    assert [p for p, _ in half.samples] == [str(root / ds.relative_paths()[i]) for i in (3, 5, 7)]
    with pytest.raises(KeyError, match="conv5"):
        extract_features(net, ds, ("conv5",), progress=False)
    with pytest.raises(TypeError, match="transform"):
        extract_features(net, EmotionImageFolder(root), ("low",), progress=False)
    with pytest.warns(DataWarning, match="random"):
        extract_features(net, EmotionImageFolder(root, transform=build_transforms(True, 32)), ("low",),
                         progress=False)


    class Huge(torch.nn.Module):
        def forward(self, x):
            return {"x": x * 1e6}

    with pytest.warns(DataWarning, match="non-finite.*float32"):  # float16 overflows above 65504
        extract_features(Huge(), torch.utils.data.Subset(ds, [0]), ("x",), progress=False)


# --------------------------------------------------------------------------------------------------
# the real FI subset (skipped when ../shared is absent)
# --------------------------------------------------------------------------------------------------

@pytest.mark.fi_subset
@pytest.mark.skipif(not FI_SUBSET.is_dir(), reason=f"FI subset not found at {FI_SUBSET} (../shared absent)")
def test_fi_subset_counts():
    ds = EmotionImageFolder(locate_dataset(FI_SUBSET))
    assert len(ds) == 602
    assert ds.class_counts() == {"amusement": 77, "contentment": 77, "awe": 78, "excitement": 75, "fear": 78,
                                 "anger": 75, "disgust": 70, "sadness": 72}
    assert sum(1 for y in ds.targets if y < 4) == 307 and sum(1 for y in ds.targets if y >= 4) == 295
    assert ds.ignored_files == [] and ds.verify(progress=False) == []  # every file decodes
    img, label = ds[0]
    assert img.mode == "RGB" and label == 0
