"""Polarity-only data: the CSV / folder loader (apse.data.polarity), polarity-level metrics
(apse.metrics, level="polarity") against a naive loop and a hand-computed ranking, and
`python -m apse evaluate --level polarity` on a positive/negative folder against a labels CSV."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apse.data import CorruptImageError
from apse.emotions import EMOTIONS, polarity_of
from apse.metrics import POLARITY_METRIC_NAMES, metric_names, per_query_metrics, retrieval_metrics
from apse.data.polarity import (LabelledImages, load_twitter1, open_labelled, parse_polarity,
                                twitter1_label)
from conftest import make_dataset


def _jpeg(path: Path, colour=(200, 40, 40), size: int = 24) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path, quality=90)
    return path.name


def _csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def images(tmp_path):
    for i in range(4):
        _jpeg(tmp_path / "images" / f"p{i}.jpg", (220, 180, 40))
        _jpeg(tmp_path / "images" / f"n{i}.jpg", (30, 40, 160))
    return tmp_path


# ---------------------------------------------------------------- the CSV loader


def test_csv_of_polarities_with_extra_columns(images):
    lines = ["file,polarity,agreement"]
    lines += [f"images/p{i}.jpg,positive,{3 + i % 3}" for i in range(4)]
    lines += [f"images/n{i}.jpg,Negative,5" for i in range(4)]
    data = LabelledImages.from_csv(_csv(images / "labels.csv", lines))
    assert data.level == "polarity" and data.classes == ("positive", "negative")
    assert data.class_counts() == {"positive": 4, "negative": 4}
    assert data.targets == [0, 0, 0, 0, 1, 1, 1, 1]  # sorted by label, then path
    assert [e["agreement"] for e in data.extras] == ["3", "4", "5", "3", "5", "5", "5", "5"]
    assert data.relative_paths()[0] == "images/p0.jpg"
    image, label = data[5]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and label == 1
    # polarity-only data is never mapped to an emotion
    np.testing.assert_array_equal(data.labels_at("polarity"), data.targets)
    with pytest.raises(ValueError, match="polarity labels only"):
        data.labels_at("emotion")
    with pytest.raises(ValueError, match="polarity labels only"):
        LabelledImages.from_csv(images / "labels.csv", level="emotion")
    five = data.select(lambda p, y, e: int(e["agreement"]) >= 5)
    assert len(five) == 5 and five.targets == [0, 1, 1, 1, 1]
    assert len(data) == 8  # select returns a copy


def test_csv_of_emotions_reads_at_polarity_level_through_the_hierarchy(images):
    lines = ["path,emotion"] + [f"images/p{i}.jpg,{EMOTIONS[i]}" for i in range(4)]
    lines += [f"images/n{i}.jpg,{4 + i}" for i in range(4)]  # indices in the papers' order
    path = _csv(images / "emo.csv", lines)
    emo = LabelledImages.from_csv(path)
    assert emo.level == "emotion" and sorted(emo.targets) == list(range(8))
    np.testing.assert_array_equal(emo.labels_at("polarity"), [polarity_of(e) for e in emo.targets])
    pol = LabelledImages.from_csv(path, level="polarity")
    assert pol.level == "polarity" and pol.class_counts() == {"positive": 4, "negative": 4}
    # a generic "label" column takes either level, one level per file
    mixed = _csv(images / "mixed.csv",
                 ["file,label", "images/p0.jpg,awe", "images/n0.jpg,negative"])
    with pytest.raises(ValueError, match=r"mixed\.csv line 3: 'negative' is a polarity"):
        LabelledImages.from_csv(mixed)


@pytest.mark.parametrize("row, message", [
    ("images/p1.jpg,happy", r"bad\.csv line 3: unknown polarity 'happy'"),
    ("images/p1.jpg,1", r"bad\.csv line 3: unknown polarity '1'"),
    (",positive", r"bad\.csv line 3: empty file name"),
    ("images/p1.jpg", r"bad\.csv line 3: expected 2 columns"),
    ("images/p0.jpg,positive",
     r"bad\.csv line 3: 'images/p0.jpg' is listed again \(first on line 2\)"),
])
def test_bad_csv_rows_name_the_file_and_line(images, row, message):
    path = _csv(images / "bad.csv",
                ["file,polarity", "images/p0.jpg,positive", row, "images/n0.jpg,negative"])
    with pytest.raises(ValueError, match=message):
        LabelledImages.from_csv(path)


def test_bad_csv_files(images):
    rows = ["file,polarity", "images/p0.jpg,positive", "images/gone.jpg,negative"]
    with pytest.raises(FileNotFoundError,
                       match=r"missing\.csv lists 1 file\(s\) that do not exist.*line 3: "):
        LabelledImages.from_csv(_csv(images / "missing.csv", rows))
    (images / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows = ["file,polarity", "images/p0.jpg,positive", "images/broken.jpg,negative"]
    with pytest.raises(CorruptImageError,
                       match=r"broken\.jpg \(corrupt\.csv line 3\) cannot be decoded"):
        LabelledImages.from_csv(_csv(images / "corrupt.csv", rows))
    with pytest.raises(ValueError, match=r"nohead\.csv line 1: expected a header"):
        LabelledImages.from_csv(_csv(images / "nohead.csv", ["images/p0.jpg,positive"]))
    with pytest.raises(ValueError, match="no rows"):
        LabelledImages.from_csv(_csv(images / "empty.csv", ["file,polarity", ""]))
    with pytest.raises(FileNotFoundError, match="labels CSV not found"):
        LabelledImages.from_csv(images / "nope.csv")


# ---------------------------------------------------------------- folders and open_labelled


def test_polarity_folders(tmp_path):
    for i in range(3):
        _jpeg(tmp_path / "q" / "positive" / f"a{i}.jpg")
        _jpeg(tmp_path / "q" / "Negative" / "sub" / f"b{i}.jpg")
    (tmp_path / "q" / "positive" / "notes.txt").write_text("not an image")
    data = LabelledImages.from_folder(tmp_path / "q")
    assert data.level == "polarity" and data.class_counts() == {"positive": 3, "negative": 3}
    assert open_labelled(tmp_path / "q").targets == data.targets
    _jpeg(tmp_path / "q" / "happy" / "c.jpg")
    with pytest.raises(ValueError, match="folder 'happy'"):
        LabelledImages.from_folder(tmp_path / "q")
    _jpeg(tmp_path / "m" / "positive" / "a.jpg")
    _jpeg(tmp_path / "m" / "awe" / "b.jpg")
    with pytest.raises(ValueError, match="mixes polarity folders"):
        LabelledImages.from_folder(tmp_path / "m")


def test_emotion_folders_and_labels_csv_folder(tmp_path):
    root = make_dataset(tmp_path / "fi", per_class=2, size=16)
    emo = open_labelled(root)
    assert emo.level == "emotion" and len(emo) == 16
    pol = open_labelled(root, level="polarity")
    assert pol.class_counts() == {"positive": 8, "negative": 8}
    # a folder holding labels.csv and images/ (Twitter I's layout) is read through its CSV
    (tmp_path / "tw" / "images").mkdir(parents=True)
    rows = ["file,polarity"]
    for e in EMOTIONS:
        (tmp_path / "tw" / "images" / f"{e}.jpg").write_bytes((root / e / f"{e}0.jpg").read_bytes())
        rows.append(f"images/{e}.jpg,{('positive', 'negative')[polarity_of(e)]}")
    _csv(tmp_path / "tw" / "labels.csv", rows)
    tw = open_labelled(tmp_path / "tw")
    assert tw.level == "polarity" and tw.class_counts() == {"positive": 4, "negative": 4}
    # class-named folders win over a labels.csv beside them
    _csv(root / "labels.csv", ["file,polarity", "amusement/amusement0.jpg,positive"])
    assert open_labelled(root).level == "emotion" and len(open_labelled(root)) == 16
    with pytest.raises(FileNotFoundError):
        open_labelled(tmp_path / "absent")


def test_twitter1_subsets_by_agreement(tmp_path):
    rows = ["file,polarity,agreement"]
    agreements = [5, 5, 4, 3, 5, 4, 4, 3]
    for i, a in enumerate(agreements):
        _jpeg(tmp_path / "images" / f"{i}.jpg")
        rows.append(f"images/{i}.jpg,{'positive' if i < 4 else 'negative'},{a}")
    _csv(tmp_path / "labels.csv", rows)
    sizes = {s: len(load_twitter1(tmp_path, s)) for s in ("5", "4", "all")}
    assert sizes == {"5": 3, "4": 6, "all": 8}
    assert load_twitter1(tmp_path, "5").class_counts() == {"positive": 2, "negative": 1}
    with pytest.raises(ValueError, match="subset must be one of"):
        load_twitter1(tmp_path, "2")
    assert twitter1_label("5", 706) == "Twitter I-5 (706-image subset)"
    assert twitter1_label("all", 1093) == "Twitter I (1,093-image subset)"
    assert parse_polarity(" POSITIVE ") == 0
    with pytest.raises(ValueError, match="unknown polarity"):
        parse_polarity("neutral")


# ---------------------------------------------------------------- polarity-level metrics


def naive_polarity_metrics(dist, q, g, exclude_self, f1_k=32):
    """The spec's formulas with relevance = same polarity label, one query at a time."""
    dist = dist.tolist()
    rankings, ns = [], []
    for i, ql in enumerate(q):
        items = sorted((j for j in range(len(g)) if not (exclude_self and j == i)),
                       key=lambda j: dist[i][j])
        rankings.append([int(g[j] == ql) for j in items])
        ns.append(sum(rankings[-1]))
    gtm = max(ns)
    out = {m: [] for m in metric_names("polarity")}
    for rel, n in zip(rankings, ns):
        if n == 0:
            for m in out:
                out[m].append(float("nan"))
            continue
        G, hits, ap = len(rel), 0, 0.0
        for k, r in enumerate(rel, 1):
            if r:
                hits += 1
                ap += hits / k
        out["mAP2"].append(ap / n)
        out["NN"].append(float(rel[0]))
        out["FT"].append(sum(rel[:n]) / n)
        out["ST"].append(sum(rel[:min(2 * n, G)]) / n)
        dcg = rel[0] + sum(rel[k - 1] / math.log2(k) for k in range(2, G + 1))
        out["DCG"].append(dcg / (1 + sum(1 / math.log2(k) for k in range(2, n + 1))))
        K = min(f1_k, G)
        h = sum(rel[:K])
        out["F1"].append(0.0 if h == 0 else 2 * (h / K) * (h / n) / (h / K + h / n))
        Ka = min(4 * n, 2 * gtm)
        ranks = [k if k <= Ka else 1.25 * Ka for k in range(1, G + 1) if rel[k - 1]]
        out["ANMRR"].append((sum(ranks) / n - 0.5 - n / 2) / (1.25 * Ka - 0.5 - n / 2))
        out["Opp@5"].append(1 - sum(rel[:5]) / len(rel[:5]))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_polarity_level_matches_naive_loop(seed, exclude_self):
    rng = np.random.default_rng(seed)
    n_q = int(rng.integers(4, 25))
    n_g = n_q if exclude_self else int(rng.integers(3, 40))
    # integer distances: many ties, so the gallery order decides
    dist = rng.integers(0, 4, size=(n_q, n_g)).astype(np.float32)
    if exclude_self:
        dist = (dist + dist.T) / 2
    g = rng.integers(0, 2, n_g)
    q = g if exclude_self else rng.integers(0, 2, n_q)
    ref = naive_polarity_metrics(torch.tensor(dist), q.tolist(), g.tolist(), exclude_self, f1_k=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means, per = retrieval_metrics(dist, q, g, exclude_self=exclude_self, f1_k=5,
                                       level="polarity", return_per_query=True, chunk_size=4)
    assert tuple(means) == metric_names("polarity")
    assert metric_names("polarity")[:len(POLARITY_METRIC_NAMES)] == POLARITY_METRIC_NAMES
    for m in metric_names("polarity"):
        np.testing.assert_allclose(per[m].numpy(), np.array(ref[m]), rtol=1e-9, atol=1e-12,
                                   err_msg=m)
        assert means[m] == pytest.approx(float(np.nanmean(ref[m])), abs=1e-12)


def test_polarity_level_hand_computed_ranking():
    # one positive query; the gallery ranked in index order: polarities + - + + -
    # rel = 1 0 1 1 0, n = 3, G = 5
    # AP = (1/1 + 2/3 + 3/4)/3 = 0.805556; NN = 1; FT = hits@3/3 = 2/3; ST = hits@5/3 = 1
    # DCG = (1 + 1/log2 3 + 1/log2 4)/(1 + 1 + 1/log2 3); F1 (K = 5): 2 * 3 / (5 + 3) = 0.75
    # ANMRR: GTM = 3, K = min(12, 6) = 6: ranks 1 3 4, AVR = 8/3, NMRR = (8/3 - 2)/(7.5 - 2)
    m = retrieval_metrics(torch.arange(5.0).unsqueeze(0), [0], [0, 1, 0, 0, 1], level="polarity")
    assert set(m) == set(metric_names("polarity")) and "mAP8" not in m
    assert m["Opp@5"] == pytest.approx(2 / 5)  # polarity rel 1 0 1 1 0
    assert m["mAP2"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert m["NN"] == 1 and m["FT"] == pytest.approx(2 / 3) and m["ST"] == 1
    assert m["DCG"] == pytest.approx((1 + 1 / math.log2(3) + 0.5) / (2 + 1 / math.log2(3)))
    assert m["F1"] == pytest.approx(0.75)
    assert m["ANMRR"] == pytest.approx((8 / 3 - 2) / 5.5)
    # the same ranking at the emotion level with emotions 0 (amusement) and 4 (fear): identical mAP2
    e = retrieval_metrics(torch.arange(5.0).unsqueeze(0), [0], [0, 4, 0, 0, 4])
    assert e["mAP2"] == pytest.approx(m["mAP2"])
    # but at the emotion level two positive emotions are not relevant to each other: with emotions
    # 1 4 0 0 4 the query (0) has rel = 0 0 1 1 0, n = 2, FT = hits@2 / 2 = 0; polarity FT stays 2/3
    e = retrieval_metrics(torch.arange(5.0).unsqueeze(0), [0], [1, 4, 0, 0, 4])
    assert e["FT"] == 0 and e["mAP2"] == pytest.approx(m["mAP2"])
    assert m["FT"] == pytest.approx(2 / 3)


def test_polarity_level_rejects_emotion_labels_and_bad_levels():
    d = torch.rand(2, 3)
    with pytest.raises(ValueError, match=r"polarity indices in 0\.\.1"):
        retrieval_metrics(d, [0, 4], [0, 1, 0], level="polarity")
    with pytest.raises(ValueError, match="level must be one of"):
        per_query_metrics(d, [0, 1], [0, 1, 0], level="valence")
    with pytest.raises(ValueError, match="no query has a relevant \\(same-polarity\\)"):
        retrieval_metrics(d, [0, 0], [1, 1, 1], level="polarity")
    with pytest.warns(RuntimeWarning, match="1 of 2 queries have no same-polarity item"):
        retrieval_metrics(d, [0, 1], [0, 0, 0], level="polarity")


# ---------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from apse.__main__ import main

    tmp = tmp_path_factory.mktemp("pol-cli")
    data = make_dataset(tmp / "data", per_class=8, size=40)
    cfg = tmp / "tiny.yaml"
    cfg.write_text("backbone: efficientnet_lite0\npretrained: false\nimage_size: 32\nresize: 36\n"
                   "high_stage: conv4\nepochs: 1\nsplit: 50/25/25\nnum_workers: 0\n")
    assert main(["train", "--config", str(cfg), "--data", str(data), "--out", str(tmp / "run"),
                 "--quiet", "lr=0.01", f"feature_cache={tmp / 'cache'}"]) == 0
    return tmp, data, tmp / "run" / "model.pt"


def test_evaluate_level_polarity_folder_against_csv(tiny_checkpoint, capsys):
    from apse.__main__ import main

    tmp, data, ckpt = tiny_checkpoint
    queries = tmp / "queries"
    for e in EMOTIONS[:2] + EMOTIONS[4:6]:
        pol = ("positive", "negative")[polarity_of(e)]
        for i in range(2):
            (queries / pol).mkdir(parents=True, exist_ok=True)
            (queries / pol / f"{e}{i}.jpg").write_bytes((data / e / f"{e}{i}.jpg").read_bytes())
    lines = ["file,polarity,agreement"] + [
        f"{e}/{e}{i}.jpg,{('positive', 'negative')[polarity_of(e)]},5"
        for e in EMOTIONS for i in range(2, 8)]
    gallery = _csv(data / "labels.csv", lines)
    out = tmp / "pol.json"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--queries", str(queries),
                 "--gallery", str(gallery), "--level", "polarity", "--json", str(out), "--quiet",
                 "--device", "cpu"]) == 0
    res = json.loads(out.read_text())
    assert set(res["metrics"]) == set(metric_names("polarity")) and res["level"] == "polarity"
    assert res["num_queries"] == 8 and res["num_gallery"] == 48
    assert all(0 <= v <= 1 for v in res["metrics"].values())
    assert "same polarity" in capsys.readouterr().out
    # an emotion folder against itself at the polarity level: leave-one-out, relevance by polarity
    assert main(["evaluate", "--checkpoint", str(ckpt), "--queries", str(data),
                 "--gallery", str(data), "--level", "polarity", "--json", str(out), "--quiet"]) == 0
    res = json.loads(out.read_text())
    assert res["protocol"] == "leave-one-out" and res["num_queries"] == 64
    # ... and at the emotion level, a polarity-only gallery is refused with one line, exit 2
    assert main(["evaluate", "--checkpoint", str(ckpt), "--queries", str(queries),
                 "--gallery", str(gallery), "--quiet"]) == 2
    assert "polarity labels only" in capsys.readouterr().err
    bad = _csv(tmp / "bad.csv", ["file,polarity", f"{data}/awe/awe0.jpg,positive",
                                 f"{data}/awe/awe1.jpg,happy"])
    assert main(["evaluate", "--checkpoint", str(ckpt), "--queries", str(bad),
                 "--gallery", str(gallery), "--level", "polarity", "--quiet"]) == 2
    assert "bad.csv line 3: unknown polarity 'happy'" in capsys.readouterr().err
