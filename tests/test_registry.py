"""Issue #24, section 4: one registry type (apse.registry.Registry) behind the five registries, and the
losses' capabilities on the loss classes (apse.losses.EmbeddingLoss).

The generic type: registration as a decorator or a call, aliases, one name rule, one error text,
duplicate names refused, registration order. The five registries: every name they answered before
the port still answers, with the same entry (and the config stores the same spelling, so that run
keys do not move). The losses: built from their constructors' signatures, and one automatic rule for
the attention loss, the config's."""
from __future__ import annotations

import inspect

import pytest
import torch

from apse import metrics
from apse.backbones import BACKBONE_REGISTRY, build_backbone, canonical_backbone, native_resolution
from apse.config import TrainConfig
from apse.experiments import EXPERIMENTS, get_experiment
from apse.fusion import FUSIONS, build_fusion
from apse.losses import (LOSS_NAMES, LOSSES, EmbeddingLoss, automatic_attention_loss, build_configured_loss, build_loss,
                         canonical_loss, loss_entry, register_loss)
from apse.registry import Registry, UnknownName, normalise


# ---------------------------------------------------------------------- the generic type
def _colours() -> Registry[int]:
    reg: Registry[int] = Registry("colour")
    reg.register("dark_red", 1, aliases=("maroon",))

    @reg.register("sky-blue")
    def _blue():
        return 2

    reg.register("green", 3)
    return reg


def test_a_registry_keeps_registration_order_and_answers_any_spelling_of_a_name():
    reg = _colours()
    assert list(reg) == ["dark_red", "sky-blue", "green"] == list(reg.names()) and len(reg) == 3
    assert reg.aliases() == {"maroon": "dark_red"}
    assert reg["green"] == 3 and reg["sky-blue"]() == 2       # the decorator returns what it decorates
    for spelling in ("dark_red", "Dark-Red", " DARK_RED ", "darkred", "maroon", "MAROON"):
        assert spelling in reg and reg[spelling] == 1 and reg.canonical(spelling) == "dark_red"
    assert reg.spelling("Maroon") == "maroon" and reg.spelling("darkred") == "dark_red"
    assert reg.get("sky_blue")() == 2 and reg.get("purple") is None and "purple" not in reg
    assert normalise(" Sky_Blue-x ") == "skybluex"


def test_an_unknown_name_is_one_error_listing_the_valid_names():
    reg = _colours()
    for lookup in (reg.__getitem__, reg.canonical, reg.spelling):
        with pytest.raises(UnknownName) as err:
            lookup("purple")
        assert str(err.value) == ("unknown colour 'purple'; valid names are: dark_red, sky-blue, green "
                                  "(aliases: maroon)")
        assert isinstance(err.value, ValueError) and isinstance(err.value, KeyError)


def test_a_name_that_reads_as_a_registered_one_is_refused():
    reg = _colours()
    for name, aliases in (("green", ()), ("GREEN", ()), ("Sky_Blue", ()), ("navy", ("maroon",)),
                          ("darkred", ()), ("navy", ("navy",))):
        with pytest.raises(ValueError, match="registered already"):
            reg.register(name, 9, aliases=aliases)
    assert list(reg) == ["dark_red", "sky-blue", "green"] and "navy" not in reg   # nothing half-added


def test_pop_removes_an_entry_with_its_aliases():
    reg = _colours()
    assert reg.pop("Maroon") == 1 and "dark_red" not in reg and "maroon" not in reg
    assert reg.pop("purple", None) is None
    with pytest.raises(UnknownName):
        reg.pop("purple")
    reg.register("maroon", 4)  # the name is free again
    assert list(reg) == ["sky-blue", "green", "maroon"]


def test_wrap_stores_a_record_and_returns_what_was_registered():
    reg: Registry[tuple] = Registry("factory")

    def make():
        return "made"

    assert reg.register("f", make, wrap=lambda fn: (fn, "options")) is make
    assert reg["F"] == (make, "options")


# ---------------------------------------------------------------------- the five registries
def test_the_backbone_registry_answers_what_it_answered_before():
    before = {"resnet50": "resnet50", "ResNet50": "resnet50", "efficientnet_lite0": "efficientnet_lite0",
              "efficientnet-lite0": "efficientnet_lite0", "EfficientNet_Lite1": "efficientnet_lite1",
              "lite0": "efficientnet_lite0", "LITE0": "efficientnet_lite0", "Lite1": "efficientnet_lite1",
              "lite2": "efficientnet_lite2"}
    for spelling, name in before.items():
        assert canonical_backbone(spelling) == name and TrainConfig(backbone=spelling).backbone == name
        assert BACKBONE_REGISTRY[spelling].name == name
    assert native_resolution("lite0") == BACKBONE_REGISTRY["efficientnet_lite0"].native_resolution
    assert list(BACKBONE_REGISTRY) == ["resnet50", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert isinstance(build_backbone("lite0", pretrained=False), torch.nn.Module)
    with pytest.raises(ValueError, match="unknown backbone 'lite9'; valid names are: resnet50"):
        canonical_backbone("lite9")


def test_the_loss_registry_answers_what_it_answered_before_and_n_pair_too():
    assert LOSS_NAMES == ("npair", "ep", "wep", "gep", "softmax", "contrastive", "triplet", "center", "binomial",
                          "arcface", "sphereface", "fastap", "softtriple", "yang")
    before = {"GEP": "gep", " Wep ": "wep", "APSE": "apse", "apse": "apse", "NPair": "npair", "npair": "npair",
              "Softmax": "softmax"}
    for spelling, stored in {**before, "N-pair": "npair", "soft_triple": "softtriple"}.items():
        assert canonical_loss(spelling) == stored and TrainConfig(loss=spelling).loss == stored
    assert loss_entry("APSE").name == "gep" and TrainConfig(loss="apse").embedding_loss_name() == "gep"
    with pytest.raises(ValueError, match="unknown loss 'apse'"):
        build_loss("apse")   # the method's name, not a loss module


def test_the_fusion_metric_and_experiment_registries_answer_their_names():
    assert list(FUSIONS) == ["clb", "concat", "concat_raw", "single"]
    for name in FUSIONS:
        assert FUSIONS[name].name == name and TrainConfig(fusion=name).fusion == name
        assert isinstance(build_fusion(name, 4, 6, 8), torch.nn.Module)
    assert FUSIONS["Concat-Raw"].name == "concat_raw" and not FUSIONS["single"].uses_low
    assert list(metrics.METRICS)[:8] == list(metrics.METRIC_NAMES)
    for name in metrics.METRICS:
        assert metrics.METRICS[name].name == name and TrainConfig(select_on=name).select_on == name
    assert metrics.METRICS["map8"].name == "mAP8" and not metrics.higher_is_better("anmrr")
    with pytest.raises(ValueError, match="unknown metric 'P@10'"):
        metrics.higher_is_better("P@10")
    for name in EXPERIMENTS:
        assert get_experiment(name).name == name
    assert get_experiment("Table1").name == "table1" and EXPERIMENTS.canonical("user_view") == "user-view"
    with pytest.raises(ValueError, match="unknown experiment 'table9'; valid names are: table1, ablation"):
        get_experiment("table9")


# ---------------------------------------------------------------------- capabilities on the loss
def test_every_registered_loss_is_an_embedding_loss_built_from_its_signature():
    for name in LOSS_NAMES:
        cls = LOSSES[name].cls
        assert issubclass(cls, EmbeddingLoss), name
        takes_dim = "embedding_dim" in inspect.signature(cls).parameters
        loss = build_loss(name, embedding_dim=16)
        # a loss that owns weights (a class head, centres) takes embedding_dim, and no other does
        assert takes_dim == any(True for _ in loss.parameters()), name
        if takes_dim:
            assert any(16 in p.shape for p in loss.parameters()), name
    with pytest.raises(TypeError, match="EmbeddingLoss subclass"):
        register_loss("plain-module", torch.nn.Module)
    assert "plain-module" not in LOSSES


def test_the_config_reaches_a_loss_through_the_keywords_its_constructor_names():
    def built(**fields):
        config = TrainConfig(**fields)
        return build_configured_loss(config.section("loss"), config.embedding_dim)  # the loss section alone

    assert built(loss="gep", beta=0.3).beta == 0.3
    assert built(loss="apse").beta is None          # adaptive
    assert built(loss="gep", beta=0.3, loss_options={"beta": 0.7}).beta == 0.7
    # binomial deviance has a beta of its own: the config's unset (None) beta leaves it at its default
    assert built(loss="binomial").beta == 0.5
    assert built(loss="softmax", embedding_dim=32).head.in_features == 32
    assert build_configured_loss(TrainConfig(loss="softmax"), 16).head.in_features == 16  # a config is a section
    assert not hasattr(loss_entry("gep"), "config_keys") and not hasattr(loss_entry("softmax"), "takes_embedding_dim")


def test_the_automatic_attention_loss_is_on_for_the_apse_family_read_from_the_loss_class():
    family = {"ep", "wep", "gep"}
    assert {n for n in LOSS_NAMES if LOSSES[n].cls.apse_family} == family
    for name in (*LOSS_NAMES, "apse"):
        cfg = TrainConfig(loss=name)
        on = loss_entry(name).name in family
        assert cfg.resolved_attention_loss(model_has_heads=True) is on
        assert cfg.resolved_attention_loss(model_has_heads=False) is False
        assert automatic_attention_loss(loss_entry(name).cls, True) is on
    # the toy's own default differs (on iff the loss reads the confidences): EP and a fixed-beta GEP
    assert not build_loss("ep").needs_confidences and not build_loss("gep", beta=0.5).needs_confidences


def test_a_fusion_gets_the_model_options_its_signature_names():
    """Issue #24: a fusion's options are read from its factory's signature (no list written beside it),
    and None reaches it (CLB's reduce_low=None: no reduction)."""
    from apse.fusion import register_fusion

    seen = {}

    @register_fusion("reduction-test")
    def _fusion(c_low, c_high, dim, reduction="linear"):
        seen["reduction"] = reduction
        return torch.nn.Linear(c_high, dim, bias=False)

    try:
        options = dict(reduce_low=None, reduce_high=3, reduction="bn_relu")
        build_fusion("Reduction_Test", 4, 6, 8, **options)
        assert seen == {"reduction": "bn_relu"} and not hasattr(FUSIONS["reduction-test"], "options")
        clb = build_fusion("clb", 4, 6, 8, **options)
        assert isinstance(clb.reduce_low, torch.nn.Identity) and isinstance(clb.reduce_high, torch.nn.Sequential)
        assert isinstance(build_fusion("concat", 4, 6, 8, **options), torch.nn.Module)  # takes none of them
    finally:
        FUSIONS.pop("reduction-test")
