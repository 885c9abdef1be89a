"""Vote-labelled data (FlickrLDL), pooled data sets, per-source folds and learning-curve fractions."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apse.config import TrainConfig, load_config
from apse.data import EmotionImageFolder, open_data, pool
from apse.data.votes import VOTE_COLUMNS
from apse.emotions import EMOTIONS, polarity_of
from apse.evaluation import evaluate_split
from apse.experiments import expand, get_experiment
from apse.training import Trainer
from apse.training_data import MIN_PER_CLASS, split_indices
from conftest import make_dataset

REPO = Path(__file__).resolve().parents[2]
FLICKR = REPO.parent / "shared" / "data" / "flickrldl"
HEADER = "file,emotion,polarity," + ",".join(VOTE_COLUMNS)


def _votes(**counts: int) -> list[int]:
    return [counts.get(name, 0) for name in EMOTIONS]


def write_vote_file(root: Path, rows: list[tuple[str, str, list[int]]]) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    for name, emotion, votes in rows:
        Image.new("RGB", (8, 8), (len(name) * 20 % 256, 0, 0)).save(root / "images" / name)
        lines.append(f"images/{name},{emotion},," + ",".join(map(str, votes)))
    path = root / "labels.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.filterwarnings("ignore:manifest .* has no images of")
def test_majority_ties_and_polarity_conflicts(tmp_path):
    path = write_vote_file(tmp_path, [
        ("a.jpg", "awe", _votes(awe=6, fear=5)),                        # clear majority, same side
        ("b.jpg", "", _votes(awe=4, fear=4, anger=3)),                  # tie: no majority
        ("c.jpg", "sadness", _votes(sadness=4, amusement=3, awe=3, contentment=1)),  # 7 positive votes
        ("d.jpg", "fear", _votes(fear=11)),
    ])
    data = EmotionImageFolder.from_manifest(path)
    names = [Path(p).name for p, _ in data.samples]
    assert names == ["a.jpg", "d.jpg"]  # sorted by label: awe (2) before fear (4)
    assert data.targets == [EMOTIONS.index("awe"), EMOTIONS.index("fear")]
    assert [Path(p).name for p in data.dropped["tie"]] == ["b.jpg"]
    assert [Path(p).name for p in data.dropped["polarity conflict"]] == ["c.jpg"]
    # the votes stay aligned with the (re-ordered) samples
    assert data.votes.tolist() == [_votes(awe=6, fear=5), _votes(fear=11)]
    kept = EmotionImageFolder.from_manifest(path, conflicts="keep")
    assert len(kept) == 3 and EMOTIONS.index("sadness") in kept.targets
    assert kept.dropped["polarity conflict"] == []
    # select keeps votes aligned
    one = kept.select([2])
    assert one.votes.tolist() == [kept.votes[2].tolist()] and one.samples == [kept.samples[2]]


@pytest.mark.parametrize("row, message", [
    ("images/a.jpg,awe,,6,0,0,x,0,0,0,0", "votes must be integers"),
    ("images/a.jpg,awe,,6,0,0,-1,0,0,0,0", "negative vote"),
    ("images/a.jpg,fear,,0,0,6,0,0,0,0,0", "'emotion' is 'fear' but the votes"),
    ("images/a.jpg,,,0,0,6,0,0,0,0,0", "'emotion' is 'empty' but the votes"),
    ("images/a.jpg,awe,,6,0", "expected 11 columns"),
])
def test_vote_file_errors_name_the_line(tmp_path, row, message):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.jpg")
    path = tmp_path / "labels.csv"
    path.write_text(HEADER + "\n" + row + "\n")
    with pytest.raises(ValueError, match="line 2") as info:
        EmotionImageFolder.from_manifest(path)
    assert message in str(info.value)


def test_vote_file_missing_columns_and_files(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("file,votes_awe\nimages/a.jpg,3\n")
    with pytest.raises(ValueError, match="missing column.*votes_amusement"):
        EmotionImageFolder.from_manifest(path)
    path = write_vote_file(tmp_path, [("a.jpg", "awe", _votes(awe=9)), ("b.jpg", "fear", _votes(fear=9))])
    (tmp_path / "images" / "b.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="line 3"):
        EmotionImageFolder.from_manifest(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(EmotionImageFolder.from_manifest(path, on_error="skip")) == 1


@pytest.mark.skipif(not FLICKR.is_dir(), reason="FlickrLDL is not beside the repository")
def test_flickrldl_counts_and_open_data_spellings():
    data = open_data("flickrldl")
    assert len(data) == 736 and data.name == "flickrldl"
    assert len(data.dropped["tie"]) == 106 and len(data.dropped["polarity conflict"]) == 19
    counts = np.bincount(data.targets, minlength=8)
    assert counts[EMOTIONS.index("anger")] == 8 and counts[EMOTIONS.index("contentment")] == 355
    # every kept image's vote majority is its label, and its votes' side is its label's polarity
    half = len(EMOTIONS) // 2
    for votes, label in zip(data.votes, data.targets):
        assert int(np.argmax(votes)) == label and (votes == votes.max()).sum() == 1
        assert int(votes[half:].sum() > votes[:half].sum()) == polarity_of(label)
    for spec in (FLICKR, FLICKR / "labels.csv"):
        same = open_data(spec)
        assert same.samples == data.samples and same.name == "flickrldl"


def test_open_data_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_data(tmp_path / "nowhere" / "labels.csv")
    with pytest.raises(FileNotFoundError, match="neither a path nor a data set name.*flickrldl"):
        open_data("no-such-set")


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    a = make_dataset(tmp_path_factory.mktemp("a"), per_class=8, size=32, seed=1)
    b = make_dataset(tmp_path_factory.mktemp("b"), per_class=6, size=32, seed=2)
    return a, b


def test_pool_keeps_each_source_in_order_and_refuses_overlap(two_sources):
    a, b = (EmotionImageFolder(p) for p in two_sources)
    pooled = pool({"a": a, "b": b})
    assert pooled.samples == a.samples + b.samples
    assert pooled.sources == ["a"] * len(a) + ["b"] * len(b)
    assert pooled.name == "a+b" and pooled.select([0, len(a)]).sources == ["a", "b"]
    with pytest.raises(ValueError, match="share image files"):
        pool({"a": a, "a2": a})
    with pytest.raises(ValueError, match="at least two"):
        pool({"a": a})
    opened = open_data(f"{two_sources[0]}+{two_sources[1]}")
    assert opened.samples == pooled.samples and set(opened.sources) == {two_sources[0].name, two_sources[1].name}


def test_pooled_folds_are_each_sources_own_folds(two_sources):
    a, b = (EmotionImageFolder(p) for p in two_sources)
    pooled = pool({"a": a, "b": b})
    for fold in range(5):
        cfg = TrainConfig(folds=5, fold=fold, split="80/5/15", protocol="split")
        joint = split_indices(cfg, pooled.targets, pooled.sources)
        alone_a = split_indices(cfg, a.targets)
        alone_b = split_indices(cfg, b.targets)
        for part in ("train", "val", "test"):
            expected = sorted(alone_a[part] + [len(a) + i for i in alone_b[part]])
            assert sorted(joint[part]) == expected


def test_train_fraction_is_stratified_nested_and_leaves_val_and_test(two_sources):
    a, b = (EmotionImageFolder(p) for p in two_sources)
    pooled = pool({"a": a, "b": b})
    labels, sources = pooled.targets, pooled.sources
    full = split_indices(TrainConfig(folds=5, fold=1), labels, sources)
    previous: set[int] = set()
    for fraction in (0.125, 0.25, 0.5, 0.75, 1.0):
        part = split_indices(TrainConfig(folds=5, fold=1, train_fraction=fraction), labels, sources)
        assert part["val"] == full["val"] and part["test"] == full["test"]
        train = set(part["train"])
        assert previous <= train <= set(full["train"])  # nested: the curve only adds images
        previous = train
        for source in ("a", "b"):
            for c in range(8):
                group = [i for i in full["train"] if labels[i] == c and sources[i] == source]
                kept = [i for i in group if i in train]
                assert len(kept) == min(len(group), max(MIN_PER_CLASS, round(fraction * len(group))))
    assert previous == set(full["train"])
    with pytest.raises(ValueError, match="train_fraction"):
        TrainConfig(train_fraction=0.0)


def test_curve_and_second_data_set_runs_have_their_own_keys():
    base = load_config(REPO / "configs" / "fi-subset-cpu.yaml")
    fi = {s.variant.name.split("-p")[0] + f"-{s.fold}": s.key
          for s in expand(get_experiment("curve-fi"), base) if s.variant.param == 1.0}
    core = {f"{s.variant.name}-{s.fold}": s.key for s in expand(get_experiment("core"), base)}
    # the full-size FI runs of the curve are the core runs (same key: shared cache)
    assert fi["npair-0"] == core["npair-0"] and fi["apse-gep-4"] == core["apse-gep-4"]
    flickr = {f"{s.variant.name}-{s.fold}": s.key for s in expand(get_experiment("flickrldl"), base)}
    assert flickr["npair-0"] != core["npair-0"]  # same config, another data set
    pooled = {s.key for s in expand(get_experiment("curve-pooled"), base)}
    flickr_curve = {s.key for s in expand(get_experiment("curve-flickrldl"), base)}
    assert not pooled & flickr_curve and not pooled & set(core.values())


def test_pooled_run_scores_each_source_against_its_own_training_images(two_sources, tmp_path):
    a, b = (EmotionImageFolder(p) for p in two_sources)
    pooled = pool({"a": a, "b": b})
    cfg = TrainConfig(backbone="efficientnet_lite0", pretrained=False, image_size=32, resize=36,
                      high_stage="conv4", epochs=1, folds=3, fold=0, split="90/10/0", protocol="split",
                      num_workers=0, cache_features=True, feature_cache=str(tmp_path / "cache"),
                      batch_size_eval=64)
    trainer = Trainer(cfg, pooled, None, progress=False)
    results = trainer.fit()
    by_source = results["test_metrics_by_source"]
    assert set(by_source) == {"a", "b"}
    split, sources = trainer.split, pooled.sources
    for source in ("a", "b"):
        gallery = torch.utils.data.Subset(trainer.gallery_set.dataset,
                                          [i for i in split["train"] if sources[i] == source])
        queries = torch.utils.data.Subset(trainer.test_set.dataset,
                                          [i for i in split["test"] if sources[i] == source])
        direct = evaluate_split(trainer.model, gallery, queries, progress=False)
        assert by_source[source] == pytest.approx(direct, abs=1e-9)
    # and a pooled score over both differs from either (another gallery)
    assert results["test_metrics"]["mAP8"] != pytest.approx(by_source["a"]["mAP8"], abs=1e-12)


def vote_dataset(root: Path, per_class: int = 6) -> Path:
    """A generated vote file: each image's majority is its emotion (never real FlickrLDL images)."""
    images = make_dataset(root / "src", per_class=per_class, size=48, seed=4)
    rows = [HEADER]
    (root / "images").mkdir(parents=True)
    for e, name in enumerate(EMOTIONS):
        for i, src in enumerate(sorted((images / name).iterdir())):
            target = root / "images" / f"{name}{i}.jpg"
            target.write_bytes(src.read_bytes())
            votes = [1] * 8
            votes[e] = 4
            rows.append(f"images/{target.name},{name},," + ",".join(map(str, votes)))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def test_cli_trains_and_evaluates_on_a_vote_file(tmp_path, capsys):
    from apse.__main__ import main

    labels = vote_dataset(tmp_path / "votes", per_class=8)
    config = tmp_path / "tiny.yaml"
    config.write_text("backbone: efficientnet_lite0\npretrained: false\nimage_size: 32\nresize: 36\n"
                      "high_stage: conv4\nepochs: 1\nsplit: 50/25/25\nnum_workers: 0\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--data", str(labels), "--out", str(out), "--quiet",
                 "lr=0.01", "cache_features=true", f"feature_cache={tmp_path / 'cache'}"]) == 0
    assert "test: mAP8" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--queries", str(labels),
                 "--gallery", str(labels), "--quiet", "--device", "cpu"]) == 0
    assert "leave-one-out: 64 queries" in capsys.readouterr().out
    assert main(["train", "--config", str(config), "--data", str(tmp_path / "no" / "labels.csv"),
                 "--out", str(out), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
