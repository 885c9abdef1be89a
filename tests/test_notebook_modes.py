"""APSE_MODE: what each notebook mode trains, and the pieces that let one notebook run all three
(settings.pick / config / dataset, APSENet taking images or cached maps, evaluation.predict)."""
from __future__ import annotations

import pytest
import torch

import apse.notebook as nbm
from apse.config import load_config
from conftest import make_dataset


@pytest.fixture
def mode(monkeypatch):
    def set_mode(name):
        monkeypatch.setenv("APSE_MODE", name)
        return nbm.setup(quiet=True)
    return set_mode


def test_modes_pick_their_config_and_sizes(mode):
    cpu, gpu, smoke = mode("cpu"), mode("gpu"), mode("smoke")
    assert [s.pick(cpu=1, gpu=2, smoke=3) for s in (cpu, gpu, smoke)] == [1, 2, 3]
    assert cpu.config() == load_config(nbm.REPO_ROOT / "configs" / "fi-subset-cpu.yaml")
    papers = load_config(nbm.REPO_ROOT / "configs" / "fi-resnet50.yaml")
    assert gpu.config() == papers
    got = smoke.config()
    # the gpu configuration, shrunk by SMOKE_OVERRIDES only (and random weights when none are on disk)
    expected = papers.replace(**nbm.SMOKE_OVERRIDES)
    if not nbm.resnet50_weights_cached():
        expected = expected.replace(pretrained=False)
    assert got == expected
    assert (got.backbone, got.cache_features, got.image_size, got.resize) == ("resnet50", False, 224, 256)
    assert got.epochs == 1 and got.batches_per_epoch == 1


def test_bad_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("APSE_MODE", "tpu")
    with pytest.raises(ValueError, match="APSE_MODE must be one of cpu, gpu, smoke"):
        nbm.setup(quiet=True)


def test_smoke_dataset_keeps_the_first_images_of_each_emotion(mode, tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "data", per_class=16, size=24)
    full = mode("cpu").dataset(root)
    small = mode("smoke").dataset(root)
    n = nbm.SMOKE_IMAGES_PER_EMOTION
    assert len(full) == 8 * 16 and len(small) == 8 * n
    assert small.targets == [label for _, label in small.samples]
    for e in range(8):
        paths = [p for p, label in full.samples if label == e]
        assert [p for p, label in small.samples if label == e] == paths[:n]
    assert len(full) == 8 * 16                                # the original is left as it was
    with pytest.raises(ValueError, match="n must be >= 1"):
        full.first_per_emotion(0)


def test_significant_digits():
    assert nbm.significant(469.7072, 3) == 470.0
    assert nbm.significant(652.7, 2) == 650.0
    assert nbm.significant(-0.0039127, 2) == -0.0039
    assert nbm.significant(0.0, 3) == 0.0


def test_apsenet_takes_images_or_cached_maps_and_predict_gathers_outputs():
    from apse.evaluation import predict
    from apse.model import APSENet

    torch.manual_seed(0)
    model = APSENet("efficientnet_lite0", pretrained=False, high_stage="conv4").eval()
    images = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        maps = model.backbone(images)
        from_images, from_maps = model(images), model(maps)
    torch.testing.assert_close(from_images.embedding, from_maps.embedding)
    torch.testing.assert_close(from_maps.embedding, model.forward_features(maps).embedding)
    labels = torch.tensor([0, 1, 2, 5, 6, 7])
    out, got = predict(model, torch.utils.data.TensorDataset(images, labels), batch_size=4)
    assert torch.equal(got, labels)
    torch.testing.assert_close(out["embedding"], from_images.embedding)
    torch.testing.assert_close(out["polarity_confidence"], from_images.polarity_confidence)
    assert out["emotion_map"].shape == from_images.emotion_map.shape
    assert "low_emotion_confidence" not in out                # None fields are left out


def test_wrap_lines_cuts_only_the_long_lines():
    from apse.notebook import wrap_lines

    text = "short\n" + "x" * 230 + "\n\nend"
    out = wrap_lines(text, 100).split("\n")
    assert out == ["short", "x" * 100, "x" * 100, "x" * 30, "", "end"]
    assert wrap_lines("a\nb", 100) == "a\nb"
