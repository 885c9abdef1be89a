"""Issue #24, section 1: each config section owned and checked by the module that consumes it, the
training config only composing them (flat, so YAML files and run keys stay as they were)."""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
import torch

from apse.checks import ConfigError
from apse.config import SECTIONS, TrainConfig, load_config
from apse.experiments import DEFAULT_BASE, run_key
from apse.losses import GEPLoss, LossConfig, build_configured_loss, gep_loss
from apse.model import APSENet, ModelConfig
from apse.optim import OptimConfig, build_optimizer
from apse.data import BalancedBatchSampler, BatchConfig, ImageConfig
from apse.protocol import ProtocolConfig
from apse.training_data import split_indices

APSE = Path(__file__).resolve().parents[1] / "apse"


def _top_level_imports(path: Path) -> set[str]:
    """The apse modules a file imports at module level (not inside functions)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("apse"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("apse"))
    return names


def _module_name(path: Path) -> str:
    parts = path.relative_to(APSE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_model_section_lives_beside_the_model_and_checks_itself():
    section = ModelConfig(backbone="Lite0", fusion="CLB", pretrained=False)
    assert section.backbone == "efficientnet_lite0" and section.fusion == "clb"   # as the registries spell them
    with pytest.raises(ConfigError, match="attention must be one of"):
        ModelConfig(attention="spatial")
    with pytest.raises(ConfigError, match="embedding_dim must be a positive integer"):
        ModelConfig(embedding_dim=0)
    assert SECTIONS["model"] is ModelConfig and isinstance(TrainConfig(), ModelConfig)
    torch.manual_seed(0)
    built = APSENet.from_config(section, embedding_dim=64)
    torch.manual_seed(0)
    by_hand = APSENet("efficientnet_lite0", pretrained=False, embedding_dim=64)
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), by_hand.state_dict().values()))
    config = TrainConfig(backbone="lite0", pretrained=False, attention_temperature="1", clb_reduce_low="none")
    model = APSENet.from_config(config)   # the values stored as text, converted
    assert model.low_head.temperature == 1.0 and isinstance(model.fuse.reduce_low, torch.nn.Identity)


def test_the_loss_section_lives_beside_the_losses_and_beta_is_checked_once():
    section = LossConfig(loss="GEP", beta=0.25)
    section.check_loss()
    assert section.loss == "gep" and SECTIONS["loss"] is LossConfig and isinstance(TrainConfig(), LossConfig)
    assert build_configured_loss(section, 512).beta == 0.25
    message = "beta must lie in [0, 1] or be null (adaptive), got 1.5"
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig(beta=1.5)
    with pytest.raises(ValueError) as from_module:
        GEPLoss(beta=1.5)
    emb = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    with pytest.raises(ValueError) as from_function:
        gep_loss(emb, emb, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]), None, None, beta=1.5)
    assert str(from_module.value) == str(from_function.value) == message
    with pytest.raises(ConfigError, match="lam must lie in"):
        TrainConfig(lam=2)
    assert not LossConfig(loss="npair").resolved_attention_loss(True)
    assert LossConfig(loss="apse").embedding_loss_name() == "gep"


def test_the_optimisation_section_checks_itself_and_builds_the_optimiser_alone():
    section = OptimConfig(optimizer="adamw", weight_decay=0.01)
    section.check_optim()
    optimizer = build_optimizer(section, [torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["weight_decay"] == 0.01
    with pytest.raises(ConfigError, match="warmup_epochs must lie in 0..epochs-1"):
        OptimConfig(epochs=3, warmup_epochs=3).check_optim()
    assert SECTIONS["optim"] is OptimConfig and not OptimConfig().fine_tunes_backbone()
    with pytest.raises(ConfigError, match="with cache_features=true it is frozen"):   # a rule across sections
        TrainConfig(cache_features=True, probe_epochs=2)


def test_the_batch_section_lives_beside_the_sampler_it_builds():
    """Issue #24: the batching fields were the optimiser's; they are the data's, beside the sampler."""
    section = BatchConfig(classes_per_batch=2, samples_per_class=6, batches_per_epoch=3)
    section.check_batches()
    labels = [i % 2 for i in range(40)]
    built = BalancedBatchSampler.from_config(labels, section, seed=4)
    by_hand = BalancedBatchSampler(labels, classes_per_batch=2, samples_per_class=6, batches_per_epoch=3, seed=4)
    assert built.batches(1) == by_hand.batches(1) and len(built) == 3
    assert built.batches(1) == BalancedBatchSampler.from_config(labels, TrainConfig(
        classes_per_batch=2, samples_per_class=6, batches_per_epoch=3), seed=4).batches(1)
    with pytest.raises(ConfigError, match="samples_per_class must be even"):
        BatchConfig(samples_per_class=3).check_batches()
    with pytest.raises(ConfigError, match="batches_per_epoch must be positive or null"):
        TrainConfig(batches_per_epoch=0)
    assert SECTIONS["batch"] is BatchConfig
    assert not {f.name for f in dataclasses.fields(BatchConfig)} & {f.name for f in dataclasses.fields(OptimConfig)}
    with pytest.raises(ConfigError, match="num_workers must be >= 0"):   # the run section's own check
        TrainConfig(num_workers=-1)


def test_the_protocol_section_checks_itself_and_is_all_the_split_reads():
    section = ProtocolConfig(folds=5, fold=1, select_on="map8")
    section.check_protocol()
    assert section.select_on == "mAP8" and section.resolved_protocol() == "loo"
    labels = [i % 8 for i in range(80)]
    assert split_indices(section, labels) == split_indices(TrainConfig(folds=5, fold=1), labels)
    with pytest.raises(ConfigError, match="fold must be in 0..4"):
        ProtocolConfig(folds=5, fold=5).check_protocol()
    with pytest.raises(ConfigError, match="select_on must be one of"):
        ProtocolConfig(select_on="P@10").check_protocol()
    assert SECTIONS["protocol"] is ProtocolConfig


def test_the_image_section_lives_beside_the_transforms():
    ImageConfig(image_size=160, resize=182).check_image()
    with pytest.raises(ConfigError, match=r"image_size \(300\) must not exceed resize \(256\)"):
        TrainConfig(image_size=300)
    with pytest.raises(ConfigError, match="resize must be a positive integer"):
        ImageConfig(resize=0).check_image()
    assert SECTIONS["image"] is ImageConfig


def test_config_imports_none_of_the_models_option_lists():
    imported = _top_level_imports(APSE / "config.py")
    assert imported <= {"apse.checks", "apse.losses", "apse.metrics", "apse.model", "apse.optim",
                        "apse.protocol", "apse.data.transforms", "apse.data.sampler"}, imported
    source = (APSE / "config.py").read_text()
    for name in ("ATTENTIONS", "LOW_ATTENTIONS", "STAGES", "FUSIONS", "NORMS", "MASK_SCALES", "REDUCTIONS"):
        assert name not in source, name


def test_the_package_imports_form_no_circle():
    graph = {_module_name(p): _top_level_imports(p) for p in APSE.rglob("*.py")}
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(module: str, path: tuple[str, ...]) -> None:
        if state.get(module) == 2:
            return
        assert state.get(module) != 1, " -> ".join((*path, module))
        state[module] = 1
        for dep in graph[module]:
            visit(dep, (*path, module))
        state[module] = 2

    for module in graph:
        visit(module, ())


def test_the_composed_config_stays_flat_and_keeps_its_keys():
    config = TrainConfig()
    names = [f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)]
    assert list(config.to_dict()) == names == [f.name for f in dataclasses.fields(TrainConfig)]
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert run_key(load_config(DEFAULT_BASE).to_dict(), 0, 0) == "31dda4dfc1df"
