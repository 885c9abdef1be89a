"""apse.notebook.train_cached / NotebookSettings.trained_apse: a fine-tuned model trained once,
cached outside the repository, loaded afterwards."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import apse.notebook as nb
import apse.training
from apse.config import TrainConfig
from apse.data import EmotionImageFolder
from apse.training import build_model

from conftest import make_dataset


def tiny_finetune_config(tmp: Path, **changes) -> TrainConfig:
    # The fine-tuned regime of configs/fi-subset-finetune-cpu.yaml (probe on cached features, then
    # end to end with a backbone lr of its own and frozen BatchNorm), shrunk: Lite0 to conv4, 32 px.
    base = dict(backbone="efficientnet_lite0", pretrained=False, image_size=32, resize=36,
                high_stage="conv4", split="50/25/25", num_workers=0, batch_size_eval=64,
                cache_features=False, probe_epochs=1, probe_lr=0.05, lr=0.01, backbone_lr=0.01,
                freeze_bn=True, epochs=1, seed=0, feature_cache=str(tmp / "features"))
    base.update(changes)
    return TrainConfig(**base)


@pytest.fixture
def counted_train(monkeypatch):
    calls = []
    real = apse.training.train

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(apse.training, "train", counting)
    return calls


def test_trains_once_then_loads_from_the_cache(tmp_path, counted_train):
    data = EmotionImageFolder(make_dataset(tmp_path / "data", per_class=8, size=40))
    config = tiny_finetune_config(tmp_path)
    cache = tmp_path / "models"
    lines = []

    model, cfg = nb.train_cached(config, data, cache=cache, log=lines.append)
    assert len(counted_train) == 1 and cfg == config and not model.training
    key = nb.trained_model_key(config, data)
    entry = cache / key / apse.training.MODEL_NAME
    assert entry.is_file() and (cache / key / apse.training.RESULTS_NAME).is_file()
    assert [p.name for p in cache.iterdir()] == [key]       # no temporary folder left behind
    mtime = entry.stat().st_mtime_ns

    again, _ = nb.train_cached(config, data, cache=cache, log=lines.append)
    assert len(counted_train) == 1 and entry.stat().st_mtime_ns == mtime    # loaded, not trained
    assert "trained once" in lines[0] and "loaded from the cache" in lines[1]
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name

    # fine-tuned: the backbone moved away from the weights it started from (the seed builds them)
    torch.manual_seed(config.seed)
    initial = build_model(config).backbone.state_dict()
    trained = model.backbone.state_dict()
    moved = [k for k, v in initial.items()
             if v.is_floating_point() and not torch.equal(v, trained[k])]
    assert moved, "the backbone was not trained"
    # frozen BatchNorm: the running statistics are the initial ones
    assert all(torch.equal(initial[k], trained[k]) for k in initial if "running_" in k)


def test_the_key_follows_the_config_and_the_data(tmp_path):
    data = EmotionImageFolder(make_dataset(tmp_path / "data", per_class=8, size=40))
    config = tiny_finetune_config(tmp_path)
    key = nb.trained_model_key(config, data)
    assert nb.trained_model_key(config.replace(), data) == key
    assert nb.trained_model_key(config.replace(feature_cache=str(tmp_path / "other")), data) == key
    for change in (dict(epochs=2), dict(backbone_lr=0.001), dict(seed=1), dict(probe_epochs=0)):
        assert nb.trained_model_key(config.replace(**change), data) != key, change
    assert nb.trained_model_key(config, data.first_per_emotion(7)) != key


def test_a_crash_mid_training_leaves_no_entry(tmp_path, monkeypatch):
    data = EmotionImageFolder(make_dataset(tmp_path / "data", per_class=8, size=40))
    cache = tmp_path / "models"

    def crash(config, data, out_dir, **kwargs):
        (Path(out_dir) / apse.training.CHECKPOINT_NAME).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(apse.training, "train", crash)
    with pytest.raises(KeyboardInterrupt):
        nb.train_cached(tiny_finetune_config(tmp_path), data, cache=cache, log=None)
    assert list(cache.iterdir()) == []


def test_trained_apse_uses_the_cache_root_and_the_mode(tmp_path, monkeypatch, counted_train):
    monkeypatch.setenv("APSE_CACHE", str(tmp_path / "cache"))
    assert nb.cache_root() == tmp_path / "cache"
    cpu = nb.NotebookSettings("cpu", nb.REPO_ROOT / "configs" / nb.MODES["cpu"], "cpu", 0)
    ft = cpu.finetune_config()
    assert (ft.backbone, ft.cache_features, ft.loss, ft.split, ft.seed) == (
        "efficientnet_lite0", False, "apse", "80/5/15", 0)
    assert ft.probe_epochs > 0 and ft.freeze_bn and ft.epochs == nb.FINETUNE_NOTEBOOK_EPOCHS
    smoke = nb.NotebookSettings("smoke", nb.REPO_ROOT / "configs" / nb.MODES["smoke"], "cpu", 0)
    assert smoke.finetune_config() == smoke.config()
    assert smoke.finetune_config().batches_per_epoch == 1

    data = make_dataset(tmp_path / "data", per_class=8, size=40)
    tiny = tiny_finetune_config(tmp_path)
    monkeypatch.setattr(nb.NotebookSettings, "finetune_config", lambda self: tiny)
    model, cfg = cpu.trained_apse(data, log=None)
    assert cfg == tiny and len(counted_train) == 1
    assert len(list((tmp_path / "cache" / "models").glob("*/model.pt"))) == 1
    cpu.trained_apse(data, log=None)
    assert len(counted_train) == 1


def test_training_leaves_the_callers_random_state_alone(tmp_path):
    data = EmotionImageFolder(make_dataset(tmp_path / "data", per_class=8, size=40))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    nb.train_cached(tiny_finetune_config(tmp_path), data, cache=tmp_path / "models", log=None)
    assert torch.equal(torch.rand(3), expected)   # the same draws whether it trained or loaded
