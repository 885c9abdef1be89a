"""The extension points: a backbone, a loss and a metric added through their registries train and
score like the built-in ones, each option list has one owner, and the config's model section is
APSENet's keywords."""
from __future__ import annotations

import dataclasses
import inspect
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from apse import metrics
from apse.backbones import BACKBONE_REGISTRY, Backbone, register_backbone
from apse.config import SECTIONS, ConfigError, ModelConfig, TrainConfig
from apse.fusion import FUSIONS, build_fusion, register_fusion
from apse.losses import LOSSES, EmbeddingLoss, build_loss, register_loss
from apse.model import APSENet
from apse.training import train
from conftest import make_dataset

APSE = Path(__file__).resolve().parents[1] / "apse"


class TinyBackbone(Backbone):
    """Two strided convs: conv3 (stride 8, 6 channels) and conv5 (stride 32, 10 channels)."""

    name = "tiny-test"

    def __init__(self, pretrained=False, stages=("conv3", "conv5")):
        super().__init__(stages, channels=dict(conv2=4, conv3=6, conv4=8, conv5=10),
                         strides=dict(conv2=4, conv3=8, conv4=16, conv5=32), mean=(0.5,) * 3, std=(0.5,) * 3,
                         weights_source="random")
        self.low = nn.Sequential(nn.Conv2d(3, 6, 3, stride=8, padding=1), nn.ReLU())
        self.high = nn.Sequential(nn.Conv2d(6, 10, 3, stride=4, padding=1), nn.ReLU())

    def _iter_stages(self, x):
        low = self.low(x)
        yield "conv3", low
        yield "conv5", self.high(low)


class SpreadLoss(EmbeddingLoss):
    """Pull same-emotion embeddings together (mean squared distance), a toy loss with the shared
    call signature."""

    def forward(self, embeddings, labels, polarity_confidence=None, emotion_confidence=None):
        same = labels[:, None] == labels[None, :]
        return torch.cdist(embeddings, embeddings)[same].pow(2).mean()


def precision_at_4(rel: torch.Tensor) -> torch.Tensor:
    return rel[:, :4].to(torch.float64).mean(dim=1)


@pytest.fixture
def registered():
    register_backbone("tiny-test", TinyBackbone, native_resolution=32)
    register_loss("spread-test", SpreadLoss)
    metrics.register_metric("P@4-test", precision_at_4)
    try:
        yield
    finally:
        BACKBONE_REGISTRY.pop("tiny-test")
        LOSSES.pop("spread-test")
        metrics.METRICS.pop("P@4-test")


def test_a_backbone_loss_and_metric_added_through_the_registries_train_one_step(registered, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=8, size=40)
    config = TrainConfig(backbone="tiny-test", pretrained=False, loss="spread-test", attention="none",
                         fusion="concat", image_size=32, resize=36, epochs=1, batches_per_epoch=1, split="50/25/25",
                         num_workers=0, lr=0.1, select_on="P@4-test", feature_cache=str(tmp_path / "cache"))
    torch.manual_seed(config.seed)  # the trainer seeds the same way before it builds the model
    before = APSENet("tiny-test", pretrained=False, attention="none", fusion="concat").backbone.state_dict()
    results = train(config, data, tmp_path / "run", progress=False)
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["selection"]["metric"] == "P@4-test"
    assert len(written["history"]) == 1 and written["history"][0]["steps"] == 1
    value = written["test_metrics"]["P@4-test"]
    assert 0.0 <= value <= 1.0 and set(metrics.METRIC_NAMES) < set(written["test_metrics"])
    model = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["model"]
    changed = [k for k, v in before.items() if not torch.equal(v, model[f"backbone.{k}"])]
    assert changed, "one step on images must move the registered backbone's weights"
    assert results["chosen_epoch"] == 1


def test_a_registered_metric_is_scored_on_both_paths_like_its_own_function(registered):
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(40, 6, generator=g)
    labels = torch.arange(40) % 8
    dist = metrics.pairwise_distances(emb, emb)
    expected = precision_at_4(metrics.ranked_relevance(dist, labels, labels, exclude_self=True)).mean()
    for d in (dist, dist.double()):  # float32: the packed fast path; float64: the reference path
        got = metrics.retrieval_metrics(d, labels, labels, exclude_self=True)
        assert got["P@4-test"] == pytest.approx(float(expected), abs=1e-12)
        assert list(got)[:8] == list(metrics.METRIC_NAMES)
    assert metrics.higher_is_better("P@4-test") and not metrics.higher_is_better("ANMRR")
    assert "P@4-test" in metrics.metric_names("polarity")


def test_registries_refuse_a_second_entry_of_a_name_and_the_config_only_knows_registered_names():
    with pytest.raises(ValueError, match="registered already"):
        register_loss("gep", SpreadLoss)
    with pytest.raises(ValueError, match="registered already"):
        register_backbone("lite0", TinyBackbone)
    with pytest.raises(ValueError, match="registered already"):
        metrics.register_metric("mAP8", precision_at_4)
    with pytest.raises(ValueError, match="registered already"):
        register_fusion("clb", build_fusion)
    for key, value in (("backbone", "tiny-test"), ("loss", "spread-test"), ("select_on", "P@4-test"),
                       ("fusion", "sum")):
        with pytest.raises(ConfigError, match=f"{key} must be one of"):
            TrainConfig(**{key: value})


def test_apse_is_an_alias_of_gep_and_build_loss_takes_module_names_only():
    assert TrainConfig(loss="apse").embedding_loss_name() == "gep"
    assert not hasattr(LOSSES["gep"], "config_keys")  # GEP's beta reaches it through its signature
    with pytest.raises(ValueError, match="unknown loss 'apse'"):
        build_loss("apse")


def test_the_model_section_is_apsenets_keywords_with_the_same_defaults():
    signature = inspect.signature(APSENet).parameters
    assert sorted(f.name for f in dataclasses.fields(ModelConfig)) == sorted(signature)
    kwargs = TrainConfig().model_kwargs()
    assert {k: v for k, v in kwargs.items()} == {k: p.default for k, p in signature.items()}


def test_the_sections_partition_the_config_in_its_field_order():
    names = [f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)]
    assert names == [f.name for f in dataclasses.fields(TrainConfig)]
    config = TrainConfig(loss="npair", lr=0.05, folds=5, fold=2)
    assert config.section("loss").loss == "npair" and config.section("optim").lr == 0.05
    assert config.section("protocol").fold == 2 and isinstance(config.section("model"), ModelConfig)
    with pytest.raises(ConfigError, match="unknown config section"):
        config.section("weights")


def test_a_fusion_module_keeps_its_weights_under_fuse():
    for name in FUSIONS:
        model = APSENet("efficientnet_lite0", pretrained=False, attention="none", fusion=name)
        assert any(k.startswith("fuse.") for k in model.state_dict()), name
        assert all(not k.startswith("fuse.fuse") for k in model.state_dict())


# Each option list is written once, in the module that owns it: a literal of its first two names
# (as a tuple or the start of a list) appears in exactly that one file.
OWNERS = {
    '"clb", "concat"': None,                                 # fusions: registered one by one
    '"hierarchical", "emotion", "none"': "model.py",
    '"conv2", "conv3", "conv4", "conv5"': "backbones/base.py",
    '"minmax", "softmax", "l1", "none"': "attention.py",
    '"mAP8", "mAP2", "NN", "FT"': None,                      # metrics: registered one by one
    '"apse", "gep"': None,                                   # losses: registered one by one
    '"npair", "ep", "wep"': None,
    '"sgd", "adam", "adamw"': "optim.py",
    '0.485, 0.456, 0.406': "backbones/base.py",
}


@pytest.mark.parametrize("literal", OWNERS)
def test_each_option_list_is_written_in_one_module(literal):
    found = sorted(str(p.relative_to(APSE)) for p in APSE.rglob("*.py")
                   if re.search(r"[(\[]\s*" + re.escape(literal), p.read_text()))
    owner = OWNERS[literal]
    assert found == ([owner] if owner else []), f"{literal} is written in {found}"


def test_the_config_takes_every_name_its_registry_takes_and_stores_the_canonical_one():
    """Issue #24: the config checks a backbone or loss name with the registry's own lookup (aliases and
    case as the registry reads them), and stores the name the registry gives back, so that to_dict(),
    YAML and run keys hold one spelling per choice; a canonical name is stored (and keyed) unchanged."""
    from apse.backbones import canonical_backbone
    from apse.config import load_config
    from apse.experiments import DEFAULT_BASE, run_key
    from apse.losses import loss_entry

    for alias in ("lite0", "LITE0", "efficientnet-lite0", "Lite1"):
        canonical_backbone(alias)  # the registry takes it ...
        cfg = TrainConfig(backbone=alias)  # ... and so does the config
        assert cfg.backbone == canonical_backbone(alias) and cfg.to_dict()["backbone"] == cfg.backbone
    for name in ("GEP", " Wep ", "APSE", "NPair"):
        loss_entry(name)
        cfg = TrainConfig(loss=name)
        assert cfg.loss == name.strip().lower() and cfg.embedding_loss_name() == loss_entry(name).name
    assert TrainConfig(loss="APSE").loss == "apse"  # the method's name is kept (not rewritten to "gep")
    aliased = TrainConfig(backbone="lite0", loss="GEP")
    canonical = TrainConfig(backbone="efficientnet_lite0", loss="gep")
    assert aliased == canonical and run_key(aliased.to_dict(), 0, 0) == run_key(canonical.to_dict(), 0, 0)
    # canonical names keep their keys (the defaults, the papers' ResNet-50 + apse, and the CPU base file)
    assert run_key(TrainConfig().to_dict(), 0, 0) == run_key(TrainConfig(backbone="resnet50", loss="apse")
                                                             .to_dict(), 0, 0)
    assert run_key(load_config(DEFAULT_BASE).to_dict(), 0, 0) == "31dda4dfc1df"
    for key, value in (("backbone", "lite9"), ("loss", "gepp")):
        with pytest.raises(ConfigError, match=f"{key} must be one of"):
            TrainConfig(**{key: value})
