"""apse.transfer: the N-pair loss on two classes, fine-tuning from an FI model, the papers'
small-dataset protocol on small generated folders (emotion level, as IAPSa / ArtPhoto / Abstract)
and CSVs (polarity level), and the Twitter I experiment runner on a generated stand-in."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from apse import transfer
from apse.emotions import EMOTIONS, polarity_of
from apse.metrics import METRIC_NAMES, POLARITY_METRIC_NAMES, evaluate_embeddings, metric_names
from apse.data.polarity import LabelledImages, open_labelled
from conftest import make_dataset

TINY = ("backbone: efficientnet_lite0\npretrained: false\nimage_size: 32\nresize: 36\n"
        "high_stage: conv5\nepochs: 1\nnum_workers: 0\nbatch_size_eval: 32\n")


# ---------------------------------------------------------------- the loss


def test_linear_probe_separates_separable_classes():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=g)
    y = (x[:, 2] > 0).long()
    pred = transfer.linear_probe(x[:40], y[:40], x[40:])
    assert (pred == y[40:]).float().mean() >= 0.9
    # labels unrelated to the features: no better than chance on average, not perfect
    rand = torch.randint(0, 2, (60,), generator=g)
    assert (transfer.linear_probe(x[:40], rand[:40], x[40:]) == rand[40:]).float().mean() < 0.9


# ---------------------------------------------------------------- FI models and the protocol


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny "FI" folder, a tiny base config, and the apse cache in a temporary folder."""
    tmp = tmp_path_factory.mktemp("transfer")
    mp = pytest.MonkeyPatch()
    mp.setenv("APSE_CACHE", str(tmp / "cache"))
    mp.setitem(transfer.FI_TRAINING, "epochs", 2)
    mp.setitem(transfer.FI_TRAINING, "lr_step", 1)
    mp.setitem(transfer.FI_TRAINING, "num_workers", 0)
    base = tmp / "tiny.yaml"
    base.write_text(TINY)
    fi = make_dataset(tmp / "fi", per_class=8, size=40)
    yield {"tmp": tmp, "base": base, "fi": fi}
    mp.undo()


def test_fi_checkpoint_trains_once_and_is_reused(env):
    log = []
    path = transfer.fi_checkpoint("apse-gep", fi_data=env["fi"], base=env["base"], log=log.append)
    assert path.is_file() and path.parent.parent == env["tmp"] / "cache" / "fi-models"
    results = json.loads((path.parent / "results.json").read_text())
    assert results["config"]["loss"] == "apse" and results["config"]["fusion"] == "clb"
    assert results["data"]["split"]["test"] == 0  # the whole FI subset trains (95 / 5 / 0)
    assert any("training apse-gep" in m for m in log)
    log.clear()
    again = transfer.fi_checkpoint("apse-gep", fi_data=env["fi"], base=env["base"], log=log.append)
    assert again == path
    assert log == []  # found, not trained again
    with pytest.raises(FileNotFoundError, match="not found"):
        transfer.fi_checkpoint("npair", fi_data=env["fi"], base=env["base"],
                               models_dir=env["tmp"] / "none", train_if_missing=False)
    with pytest.raises(ValueError, match="unknown FI model"):
        transfer.fi_model_config("softmax")


def _polarity_csv(root, folder):
    rows = ["file,polarity,agreement"]
    for k, e in enumerate(EMOTIONS):
        for i in range(6):
            pol = ("positive", "negative")[polarity_of(e)]
            rows.append(f"{e}/{e}{i}.jpg,{pol},{3 + (i + k) % 3}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder / "labels.csv"


def test_protocol_on_an_emotion_folder_zero_shot_and_fine_tuned(env):
    ckpt = transfer.fi_checkpoint("apse-gep", fi_data=env["fi"], base=env["base"])
    small = open_labelled(make_dataset(env["tmp"] / "small", per_class=10, size=40, seed=4))
    assert small.level == "emotion"
    zs = transfer.small_dataset_protocol(small, ckpt, settings=None, log=None)
    assert zs["level"] == "emotion" and len(zs["folds"]) == 5
    assert sum(f["n_test"] for f in zs["folds"]) == 80  # every image held out exactly once
    assert set(zs["folds"][0]["metrics"]) == set(metric_names())
    mean_map8 = np.mean([f["metrics"]["mAP8"] for f in zs["folds"]])
    assert zs["summary"]["mAP8"][0] == pytest.approx(mean_map8)
    # fold 0 by hand: the model on the cached features of the held-out images, leave-one-out
    from apse.data import stratified_kfold
    from apse.training import load_model

    model, config = load_model(ckpt)
    feats = transfer.dataset_features(small, model, config, progress=False, log=lambda m: None)
    held = stratified_kfold(small.targets, k=5, seed=0)[0][1]
    maps, _ = feats.get_batch(held)
    with torch.no_grad():
        emb = model.forward_features(maps).embedding
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        direct = evaluate_embeddings(emb, torch.tensor(small.targets)[held])
    for m in METRIC_NAMES:
        assert zs["folds"][0]["metrics"][m] == pytest.approx(direct[m], abs=1e-6), m
    ft = transfer.small_dataset_protocol(small, ckpt, settings=transfer.FineTune(epochs=2),
                                         fold_ids=[0], log=None)
    fold = ft["folds"][0]
    assert fold["chosen_epoch"] in (0, 1, 2) and len(fold["val_curve"]) == 3
    assert fold["n_train"] + fold["n_val"] == 64 and fold["n_test"] == 16


def test_protocol_on_polarity_data_keeps_the_emotion_head(env):
    ckpt = transfer.fi_checkpoint("apse-gep", fi_data=env["fi"], base=env["base"])
    folder = make_dataset(env["tmp"] / "pol", per_class=6, size=40, seed=5)
    data = LabelledImages.from_csv(_polarity_csv(env["tmp"], folder))
    res = transfer.small_dataset_protocol(data, ckpt, settings=transfer.FineTune(epochs=2),
                                          fold_ids=[1], log=None)
    assert res["level"] == "polarity"
    fold = res["folds"][0]
    assert set(fold["metrics"]) == set(metric_names("polarity"))
    assert set(fold["accuracy"]) == {"polarity_head", "emotion_head_polarity"}
    # fine-tuning on polarities: the emotion head is the FI model's, the rest may move
    from apse.data import stratified_kfold
    from apse.training import load_model

    model, config = load_model(ckpt)
    feats = transfer.dataset_features(data, model, config, progress=False, log=lambda m: None)
    train_idx = stratified_kfold(data.targets, k=5, seed=0)[1][0]
    settings = transfer.FineTune(epochs=3, lr=0.5)
    net, info = transfer.fine_tune(model, config, feats, data.targets, train_idx, level="polarity",
                                   settings=settings)
    before, after = model.state_dict(), net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("high_head."))
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))
    if info["chosen_epoch"] > 0:
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("fuse."))
    # a Trainer run (issue #24: one loop): epoch 0 is the FI model as it is, validated on a
    # stratified tenth of the training folds querying the rest, at the polarity level
    assert len(info["loss_curve"]) == 3 and len(info["val_curve"]) == 4
    best = max(info["val_curve"])
    assert info["chosen_epoch"] == info["val_curve"].index(best)  # ties keep the earlier epoch
    from apse.data import stratified_split

    y = torch.tensor(data.targets)
    part = stratified_split(y[train_idx].numpy(), (0.9, 0.1, 0.0), seed=0)
    fit = [train_idx[i] for i in part["train"]]
    val = [train_idx[i] for i in part["val"]]
    assert (info["n_train"], info["n_val"]) == (len(fit), len(val))
    with torch.no_grad():
        model.eval()
        g = model.forward_features(feats.get_batch(fit)[0]).embedding
        q = model.forward_features(feats.get_batch(val)[0]).embedding
    start = evaluate_embeddings(q, y[val], g, y[fit], level="polarity")["mAP2"]
    assert info["val_curve"][0] == pytest.approx(round(start, 4), abs=1e-4)
    with pytest.raises(ValueError, match="polarity labels only"):
        transfer.small_dataset_protocol(data, ckpt, level="emotion", settings=None, log=None)


def test_twitter1_runner_on_a_generated_stand_in(env, tmp_path):
    folder = make_dataset(tmp_path / "tw", per_class=6, size=40, seed=6)
    _polarity_csv(tmp_path, folder)
    results = tmp_path / "results"
    kw = dict(subsets=("5", "all"), folds=3,
              rows=["chance", "imagenet", "fi-apse-gep", "ft-apse-gep"],
              results_dir=results, data=str(folder), fi_data=env["fi"], base=env["base"],
              settings=transfer.FineTune(epochs=1), log=lambda m: None)
    records = transfer.run_twitter1(**kw)
    assert len(records) == 2 * 4 * 3
    n5 = sum(1 for k in range(8) for i in range(6) if 3 + (i + k) % 3 == 5)
    assert {r["n_images"] for r in records if r["subset"] == "5"} == {n5}
    assert {r["n_images"] for r in records if r["subset"] == "all"} == {48}
    assert all(set(r["metrics"]) == set(metric_names("polarity")) for r in records)
    chance = [r for r in records if r["row"] == "chance"]
    assert all("majority" in r["accuracy"] for r in chance)
    assert all("linear_probe" in r["accuracy"] for r in records if r["row"] == "imagenet")
    # every held-out image once per subset and row
    held = [r["n_test"] for r in records if r["row"] == "imagenet" and r["subset"] == "all"]
    assert sum(held) == 48
    for name in ("summary.csv", "summary.md", "retrievals.json", "meta.json"):
        assert (results / name).is_file()
    assert "polarity level" in (results / "summary.md").read_text()
    figure = transfer.load_retrievals(results)
    assert [e["row"] for e in figure if e["subset"] == "5"] == list(transfer.FIGURE_ROWS)
    q = figure[0]["queries"][0]
    assert len(q["results"]) == 5 and q["query"] not in [r for r, _ in q["results"]]
    assert {e["label"] for e in figure[0]["queries"]} == {"positive", "negative"}
    table = transfer.summary_table(results, "5", settings=kw["settings"])
    assert list(table.columns) == list(POLARITY_METRIC_NAMES) and len(table) == 4
    acc = transfer.summary_table(results, "all", what="accuracy", settings=kw["settings"])
    # the default settings' table has no trained row: those runs used other settings
    assert len(transfer.summary_table(results, "5")) == 3
    assert "1-NN (= NN)" in acc.columns
    # a second invocation finds every run on disk
    log = []
    again = transfer.run_twitter1(**{**kw, "log": log.append})
    assert [r["key"] for r in again] == [r["key"] for r in records]
    assert any("0 run(s), 24 cached" in m for m in log)
    fig = transfer.plot_polarity_retrievals(figure[:2], folder, queries=1, thumb=24)
    assert len(fig.axes) == 2 * 6


def test_the_committed_twitter1_runs_are_found_as_cached():
    """Every record of results/twitter1/runs lies where run_twitter1 looks for it: the key it would
    compute for that run (row, subset, fold, settings, FI model, features) names the file, so a
    re-run loads the records instead of running them again."""
    runs = sorted((transfer.DEFAULT_RESULTS / "runs").glob("*.json"))
    if not runs:
        pytest.skip("no results/twitter1/runs in this checkout")
    config = transfer.fi_model_config("apse-gep")  # the features are the apse-gep model's
    features = f"{config.backbone}-{config.image_size}px-flips"
    rows = {r.name: r for r in transfer.ROWS}
    for path in runs:
        record = json.loads(path.read_text())
        row = rows[record["row"]]
        key = transfer.run_key(row, record["subset"], record["fold"], folds=record["folds"],
                               split_seed=record["split_seed"], n_images=record["n_images"],
                               settings=transfer.FineTune(), fi_model=record["fi_model"],
                               features=features)
        assert key == record["key"], path.name
        assert path.name == transfer.run_file_name(row, record["subset"], record["fold"], key)
    assert len(transfer.load_runs()) == len(runs)  # all current: runner version, settings


def test_protocol_command_line(env, tmp_path, capsys):
    ckpt = transfer.fi_checkpoint("npair", fi_data=env["fi"], base=env["base"])
    folder = make_dataset(tmp_path / "pol", per_class=6, size=40, seed=7)
    csv_path = _polarity_csv(tmp_path, folder)
    out = tmp_path / "protocol.json"
    assert transfer.main(["protocol", "--data", str(csv_path), "--checkpoint", str(ckpt),
                          "--zero-shot", "--folds", "3", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["level"] == "polarity" and len(res["folds"]) == 3
    assert set(res["summary"]) == set(metric_names("polarity"))
    assert all(f["chosen_epoch"] is None for f in res["folds"])  # zero-shot: nothing trained
    assert "mean over folds: mAP2" in capsys.readouterr().out
