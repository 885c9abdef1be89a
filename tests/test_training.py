"""Training engine: config, resume == uninterrupted, NaN guard, selection on val only, checkpoints,
evaluation protocols and the retrieval index. Tiny generated datasets (8 emotions x 8 JPEGs, 64 px)
and a randomly initialised EfficientNet-Lite0 keep the whole file well under a minute on 2 cores."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from apse.metrics import metric_names

from apse.config import ConfigError, TrainConfig, apply_overrides, load_config
from apse.emotions import EMOTIONS
from conftest import tiny_config  # tiny: conftest's fixture

REPO = Path(__file__).resolve().parents[1]


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------- config
def test_config_defaults_are_the_papers():
    c = TrainConfig()
    assert (c.backbone, c.lr, c.momentum, c.weight_decay, c.lr_step, c.lr_gamma, c.epochs) == \
        ("resnet50", 1e-3, 0.9, 5e-4, 40, 0.1, 100)
    assert (c.classes_per_batch, c.samples_per_class, c.image_size, c.resize, c.lam) == (8, 4, 224, 256, 0.5)
    assert c.split_fractions() == pytest.approx((0.8, 0.05, 0.15))
    assert c.embedding_loss_name() == "gep"
    assert c.resolved_attention_loss(True) and not c.resolved_attention_loss(False)
    assert not TrainConfig(loss="npair").resolved_attention_loss(True)   # auto: APSE family only
    assert TrainConfig(loss="npair", attention_loss=True).resolved_attention_loss(True)  # the "AT" column
    with pytest.raises(ConfigError, match="attention heads"):
        TrainConfig(attention_loss=True, attention="none").resolved_attention_loss(False)


def test_config_yaml_overrides_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("backbone: efficientnet_lite0\nlr: 1e-3\nbatches_per_epoch: null\nsplit: [70, 10, 20]\n")
    c = load_config(path)
    assert c.lr == 1e-3 and isinstance(c.lr, float)  # PyYAML reads 1e-3 as a string: converted
    assert c.split_fractions() == pytest.approx((0.7, 0.1, 0.2))
    c2 = apply_overrides(c, ["lr=1e-4", "epochs=3", "pretrained=false", "beta=0.5", "amp=null",
                             "loss_options={margin: 0.3}", "pretrained=/w.pt"])
    assert (c2.lr, c2.epochs, c2.pretrained, c2.beta, c2.amp, c2.loss_options) == \
        (1e-4, 3, "/w.pt", 0.5, None, {"margin": 0.3})
    assert c.lr == 1e-3  # the original is untouched
    assert TrainConfig.from_dict(json.loads(json.dumps(c2.to_dict()))) == c2
    for name in ("fi-resnet50.yaml", "fi-subset-cpu.yaml", "fi-subset-finetune-cpu.yaml"):
        load_config(REPO / "configs" / name)  # the shipped configs are valid


@pytest.mark.parametrize("override, message", [
    ("nosuchkey=1", "unknown config key 'nosuchkey'; valid keys are: backbone"),
    ("lr=fast", "lr expects a number"),
    ("epochs=2.5", "epochs expects an integer"),
    ("loss=magic", "loss must be one of"),
    ("split=80/20", "split must be three"),
    ("cache_features=maybe", "cache_features expects true or false"),
    ("samples_per_class=3", "samples_per_class must be even"),
    ("lam", "not of the form key=value"),
])
def test_config_errors_are_one_clear_line(override, message):
    with pytest.raises(ConfigError) as info:
        apply_overrides(TrainConfig(), [override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_config_file_on_a_base_file_holds_only_what_differs(tmp_path):
    from apse.config import config_delta

    (tmp_path / "base.yaml").write_text("lr: 0.2\nepochs: 40\nloss: GEP\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "delta.yaml").write_text("base: ../base.yaml\nlr: 1e-2\nfreeze_bn: yes\n")
    (tmp_path / "sub" / "on_delta.yaml").write_text("base: delta.yaml\nepochs: 5\n")
    delta = load_config(tmp_path / "sub" / "delta.yaml")
    assert (delta.lr, delta.epochs, delta.loss, delta.freeze_bn) == (0.01, 40, "gep", True)
    assert delta == load_config(tmp_path / "base.yaml").replace(**config_delta(tmp_path / "sub" / "delta.yaml"))
    assert config_delta(tmp_path / "sub" / "delta.yaml") == {"lr": 0.01, "freeze_bn": True}  # typed, own keys
    assert load_config(tmp_path / "sub" / "on_delta.yaml") == delta.replace(epochs=5)
    (tmp_path / "base.yaml").write_text("lr: 0.2\nfoo: 1\n")
    with pytest.raises(ConfigError, match="base.yaml: unknown config key 'foo'"):  # named in its own file
        load_config(tmp_path / "sub" / "delta.yaml")
    (tmp_path / "base.yaml").write_text("base: sub/on_delta.yaml\n")
    with pytest.raises(ConfigError, match="form a circle"):
        load_config(tmp_path / "sub" / "delta.yaml")
    (tmp_path / "sub" / "delta.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "sub" / "delta.yaml")


def test_config_yaml_errors(tmp_path):
    (tmp_path / "bad.yaml").write_text("lr: 0.1\nfoo: 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown config key 'foo'"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")


# ------------------------------------------------------------------------------------------- training
def test_resume_after_kill_equals_uninterrupted_run(tiny, tmp_path, monkeypatch):
    from apse import training

    config = tiny_config(tmp_path)
    straight = training.train(config, tiny, tmp_path / "straight", progress=False)

    original = training.Trainer.train_epoch

    def dying(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt  # killed during epoch 2: checkpoint.pt holds epoch 1
        return original(self, epoch)

    monkeypatch.setattr(training.Trainer, "train_epoch", dying)
    with pytest.raises(KeyboardInterrupt):
        training.train(config, tiny, tmp_path / "killed", progress=False)
    assert not (tmp_path / "killed" / "results.json").exists()
    monkeypatch.setattr(training.Trainer, "train_epoch", original)
    with pytest.raises(FileExistsError, match="--resume"):
        training.train(config, tiny, tmp_path / "killed", progress=False)
    resumed = training.train(config, tiny, tmp_path / "killed", resume=True, progress=False)

    for key in ("loss", "embedding_loss", "attention_loss", "lr", "val"):
        assert [h[key] for h in resumed["history"]] == [h[key] for h in straight["history"]]
    assert resumed["test_metrics"] == straight["test_metrics"]
    assert resumed["chosen_epoch"] == straight["chosen_epoch"]
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)
    assert states_equal(a["model"], b["model"])
    ca = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    cb = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert states_equal(ca["model"], cb["model"])  # the last epoch's weights, too


def test_cached_features_resume_and_cache_reuse(tiny, tmp_path, monkeypatch):
    from apse import training, training_data

    config = tiny_config(tmp_path, cache_features=True, feature_flips=True, epochs=3)
    straight = training.train(config, tiny, tmp_path / "straight", progress=False)
    # results keep the cache file's name only (portable); it lies in the configured cache folder
    assert straight["feature_cache"] and (tmp_path / "cache" / straight["feature_cache"]).is_file()

    calls = []
    real = training_data.extract_features
    monkeypatch.setattr(training_data, "extract_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    short = training.train(config.replace(epochs=1), tiny, tmp_path / "resumed", progress=False)
    assert calls == []  # same backbone / stages / size / images: the cache file is reused
    assert short["history"][0]["loss"] == straight["history"][0]["loss"]
    resumed = training.train(config, tiny, tmp_path / "resumed", resume=True, progress=False)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in straight["history"]]
    assert [h["val"] for h in resumed["history"]] == [h["val"] for h in straight["history"]]
    assert resumed["test_metrics"] == straight["test_metrics"]
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)["model"]
    assert states_equal(a, b)

    # a different image size is a different cache
    training.train(config.replace(epochs=1, image_size=28, resize=32), tiny, tmp_path / "other", progress=False)
    assert calls == [1]


def test_nan_guard_names_epoch_and_step(tiny, tmp_path, monkeypatch):
    from apse import training

    class NaNLoss(torch.nn.Module):
        needs_confidences = False

        def forward(self, embeddings, labels, polarity_confidence=None, emotion_confidence=None):
            return embeddings.sum() * float("nan")

    monkeypatch.setattr(training, "build_configured_loss", lambda config, embedding_dim, level="emotion": NaNLoss())
    with pytest.raises(training.TrainingDiverged, match=r"loss became nan at epoch 1, step 1"):
        training.train(tiny_config(tmp_path, cache_features=True), tiny, tmp_path / "nan", progress=False)


def test_huge_learning_rate_diverges(tiny, tmp_path):
    from apse import training

    config = tiny_config(tmp_path, cache_features=True, lr=1e30, epochs=4, attention_loss=True)
    with pytest.raises(training.TrainingDiverged, match=r"at epoch \d+, step \d+"):
        training.train(config, tiny, tmp_path / "huge", progress=False)


def test_selection_on_val_only_and_test_evaluated_once(tiny, tmp_path, monkeypatch):
    from apse import training

    test_calls = []
    real_test = training.Trainer.test
    monkeypatch.setattr(training.Trainer, "test", lambda self: test_calls.append(1) or real_test(self))
    seen = []
    real_validate = training.Trainer.validate

    def spy_validate(self):
        # validation must never see a test image
        seen.append(set(self.val_set.indices) & set(self.split["test"]))
        return real_validate(self)

    monkeypatch.setattr(training.Trainer, "validate", spy_validate)
    config = tiny_config(tmp_path, cache_features=True, epochs=5, lr=0.05)
    out = tmp_path / "sel"
    results = training.train(config, tiny, out, progress=False)
    assert test_calls == [1] and seen == [set()] * 5

    saved = json.loads((out / "results.json").read_text())
    vals = [h["val"]["mAP8"] for h in saved["history"]]
    assert saved["chosen_epoch"] == 1 + int(np.argmax(vals))  # first best epoch on val
    assert saved["val_metrics"]["mAP8"] == max(vals)
    assert set(saved["test_metrics"]) == set(metric_names())
    for key in ("config", "history", "wall_time_s", "device", "torch_version", "apse_version", "git_commit"):
        assert key in saved
    # the config as run, except that its absolute cache folder is kept portable (no local path)
    assert saved["config"]["feature_cache"] == "<elsewhere>/cache"
    assert {**saved["config"], "feature_cache": config.feature_cache} == config.to_dict()
    assert results["test_metrics"] == saved["test_metrics"]

    # every file is plain tensors + containers
    model_file = torch.load(out / "model.pt", weights_only=True)
    assert model_file["epoch"] == saved["chosen_epoch"]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng", "history", "config", "epoch"} <= set(ckpt)
    assert ckpt["epoch"] == 5 and ckpt["best"]["epoch"] == saved["chosen_epoch"]

    # load_model gives back the chosen model: re-evaluating it on the cached features reproduces the
    # test metrics exactly, and the images give (nearly) the same embeddings as the float16 cache
    from apse.data import EmotionImageFolder, FeatureDataset, build_transforms
    from apse.evaluation import embed_dataset, evaluate_split

    model, cfg = training.load_model(out / "model.pt")
    assert cfg == config and not model.training
    features = FeatureDataset.load(Path(config.feature_cache) / results["feature_cache"])
    split = ckpt["split"]
    sub = torch.utils.data.Subset
    metrics = evaluate_split(model, sub(features, split["train"]), sub(features, split["test"]), progress=False)
    assert metrics == saved["test_metrics"]
    tf = build_transforms(False, image_size=cfg.image_size, resize=cfg.resize, mean=model.backbone.mean,
                          std=model.backbone.std)
    images = EmotionImageFolder(tiny, transform=tf)
    from_images, _ = embed_dataset(model, sub(images, split["test"]), progress=False)
    from_cache, _ = embed_dataset(model, sub(features, split["test"]), progress=False)
    assert torch.allclose(from_images, from_cache, atol=0.1)


def test_training_learns_on_structured_images(tiny, tmp_path):
    from apse import training

    # pretrained Lite0 on colour/stripe classes: a few epochs must beat chance (mAP8 ~ 0.13-0.2) by far
    config = tiny_config(tmp_path, pretrained=True, cache_features=True, epochs=6, lr=0.05, split="50/0/50")
    results = training.train(config, tiny, None, progress=False)
    assert results["selection"]["on"].startswith("last epoch")
    assert results["chosen_epoch"] == 6
    assert results["test_metrics"]["mAP8"] > 0.4


def test_kfold_config_uses_leave_one_out(tiny, tmp_path):
    from apse import training

    config = tiny_config(tmp_path, cache_features=True, epochs=1, folds=2, fold=1, split="100/0/0")
    results = training.train(config, tiny, None, progress=False)
    assert results["data"]["split"] == {"train": 32, "val": 0, "test": 32}
    assert results["test_protocol"].startswith("leave-one-out")


# ----------------------------------------------------------------------------------------- evaluation
class _Identity(torch.nn.Module):
    """A 'model' whose embedding is its (flattened, l2-normalised) input."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return types.SimpleNamespace(embedding=torch.nn.functional.normalize(x.flatten(1), dim=1))


def test_protocols_match_direct_metric_computation():
    from apse.evaluation import embed_dataset, evaluate_split, leave_one_out, run_folds, summarise
    from apse.metrics import evaluate_embeddings

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=g), torch.arange(8).repeat(5)
    ds = torch.utils.data.TensorDataset(x, y)
    train, test = torch.utils.data.Subset(ds, range(24)), torch.utils.data.Subset(ds, range(24, 40))
    model = _Identity()
    emb, labels = embed_dataset(model, ds, batch_size=7, progress=False)
    assert torch.allclose(emb, torch.nn.functional.normalize(x, dim=1)) and torch.equal(labels, y)
    assert evaluate_split(model, train, test, progress=False) == evaluate_embeddings(emb[24:], y[24:], emb[:24], y[:24])
    assert leave_one_out(model, ds, progress=False) == evaluate_embeddings(emb, y, None, None)

    folds = run_folds(lambda k: {"mAP8": float(k), "ANMRR": 1.0}, 3)
    assert folds["summary"]["mAP8"] == pytest.approx((1.0, 1.0)) and folds["summary"]["ANMRR"] == (1.0, 0.0)
    assert summarise([{"NN": 0.5}]) == {"NN": (0.5, 0.0)}
    with pytest.raises(ValueError):
        summarise([])


def test_one_mean_and_std_for_fold_summaries_and_experiment_tables():
    """evaluation.summarise and the experiments' tables (stats.mean_std) report the same numbers: the
    sample standard deviation (ddof=1), missing metrics summarised over the dicts that have them."""
    from apse.evaluation import mean_std, summarise
    from apse.experiments import stats

    assert stats.mean_std is mean_std
    assert mean_std([0.2, 0.4, 0.9]) == pytest.approx((0.5, 0.360555127546399))
    folds = [{"mAP8": 0.2, "NN": 1.0}, {"mAP8": 0.4}, {"mAP8": 0.9, "NN": 0.0}]
    assert summarise(folds) == {"mAP8": mean_std([0.2, 0.4, 0.9]), "NN": mean_std([1.0, 0.0])}


# ------------------------------------------------------------------------------------------ retrieval
def _toy_index(n=12, d=4):
    from apse.retrieval import RetrievalIndex

    g = torch.Generator().manual_seed(1)
    emb = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    return RetrievalIndex(emb, [f"/g/{i}.jpg" for i in range(n)], torch.arange(n) % 8)


def test_retrieval_index_save_load_query(tmp_path):
    from apse.retrieval import RetrievalIndex

    index = _toy_index()
    index.save(tmp_path / "g.index")
    raw = torch.load(tmp_path / "g.index", weights_only=True)
    assert raw["paths"][0] == "/g/0.jpg"
    loaded = RetrievalIndex.load(tmp_path / "g.index")
    assert torch.equal(loaded.embeddings, index.embeddings) and loaded.paths == index.paths
    hits = loaded.query(index.embeddings[5], k=3)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].path == "/g/5.jpg" and hits[0].distance == pytest.approx(0.0, abs=1e-5)
    assert hits[0].emotion == EMOTIONS[5] and hits[0].polarity == "negative"
    dist = torch.cdist(index.embeddings[5:6], index.embeddings)[0]
    assert [h.distance for h in hits] == pytest.approx(torch.sort(dist).values[:3].tolist(), abs=1e-5)
    assert len(loaded.query(index.embeddings[0], k=100)) == 12
    with pytest.raises(ValueError, match="dimensions"):
        loaded.query(torch.zeros(7))
    with pytest.raises(ValueError, match="no model"):
        loaded.query(torch.zeros(3, 8, 8))


def test_retrieval_uses_faiss_for_large_galleries(monkeypatch):
    index = _toy_index()
    expected = [(h.path, round(h.distance, 5)) for h in index.query(index.embeddings[2], k=4)]

    class FakeFlatL2:  # the IndexFlatL2 interface, computed with numpy: squared L2 distances
        def __init__(self, d):
            self.d, self.x = d, None

        def add(self, x):
            self.x = np.asarray(x)

        def search(self, q, k):
            sq = ((np.asarray(q)[:, None, :] - self.x[None]) ** 2).sum(-1)
            idx = np.argsort(sq, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(sq, idx, 1), idx

    fake = types.SimpleNamespace(IndexFlatL2=FakeFlatL2, used=0)
    monkeypatch.setitem(sys.modules, "faiss", fake)
    index.faiss_threshold = 5
    got = [(h.path, round(h.distance, 5)) for h in index.query(index.embeddings[2], k=4)]
    assert index._faiss_index is not None and got == expected
    index2 = _toy_index()  # below the threshold: torch, even with faiss importable
    index2.query(index2.embeddings[2], k=4)
    assert index2._faiss_index is None


def test_attention_report_counts_hits_and_confidences():
    from apse.evaluation import attention_report
    from apse.model import APSEOutput

    class _Fixed(torch.nn.Module):
        """Returns hand-set confidences for the images whose index is the input."""

        def __init__(self, pol, emo):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))
            self.pol, self.emo = pol, emo

        def forward(self, idx):
            i = idx.long()
            return APSEOutput(embedding=None, polarity_confidence=None if self.pol is None else self.pol[i],
                              emotion_confidence=self.emo[i])

    labels = torch.tensor([0, 1, 5, 7])                      # polarities 0, 0, 1, 1
    pol = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.5, 0.5]])
    emo = torch.full((4, 8), 0.05)
    emo[0, 0] = emo[1, 3] = emo[2, 5] = emo[3, 7] = 0.65     # rows sum to 1; image 1 is wrong
    ds = torch.utils.data.TensorDataset(torch.arange(4.0), labels)
    rep = attention_report(_Fixed(pol, emo), ds, batch_size=3)
    # polarity: hits on images 0 and 2; image 3 is a tie, which argmax sends to class 0 (wrong)
    assert rep["polarity_accuracy"] == pytest.approx(0.5)
    assert rep["polarity_top_confidence"] == pytest.approx((0.9 + 0.6 + 0.7 + 0.5) / 4)
    assert rep["emotion_accuracy"] == pytest.approx(0.75)
    assert rep["emotion_top_confidence"] == pytest.approx(0.65)
    no_pol = attention_report(_Fixed(None, emo), ds)
    assert no_pol["polarity_accuracy"] is None and no_pol["emotion_accuracy"] == pytest.approx(0.75)


def test_attention_lr_puts_the_heads_in_their_own_group(tiny, tmp_path):
    from apse.training import Trainer

    cfg = tiny_config(tmp_path, lr=0.2, attention_lr=0.003, cache_features=True)
    trainer = Trainer(cfg, str(tiny), None, progress=False)
    try:
        trainer.setup()
        groups = trainer.optimizer.param_groups
        heads = {id(p) for h in (trainer.model.low_head, trainer.model.high_head) for p in h.parameters()}
        assert [g["lr"] for g in groups] == [0.2, 0.003]
        assert {id(p) for p in groups[1]["params"]} == heads
        assert not heads & {id(p) for p in groups[0]["params"]} and groups[0]["params"]
    finally:
        trainer.close()
    with pytest.raises(ConfigError, match="attention_lr must be positive"):
        tiny_config(tmp_path, attention_lr=0.0)


def test_backbone_lr_puts_the_backbone_in_its_own_group(tiny, tmp_path):
    from apse.training import Trainer

    cfg = tiny_config(tmp_path, lr=0.05, backbone_lr=0.005, attention_lr=0.01)
    trainer = Trainer(cfg, str(tiny), None, progress=False)
    try:
        trainer.setup()
        groups = trainer.optimizer.param_groups
        trunk = {id(p) for p in trainer.model.backbone.parameters()}
        heads = {id(p) for h in (trainer.model.low_head, trainer.model.high_head) for p in h.parameters()}
        assert [g["lr"] for g in groups] == [0.05, 0.01, 0.005]
        assert {id(p) for p in groups[2]["params"]} == trunk
        assert {id(p) for p in groups[1]["params"]} == heads
        rest = {id(p) for p in groups[0]["params"]}
        assert rest and not rest & (trunk | heads)
        # every trainable parameter is in exactly one group
        assert sum(len(g["params"]) for g in groups) == sum(1 for p in trainer.step_module.parameters())
    finally:
        trainer.close()
    with pytest.raises(ConfigError, match="cache_features=false"):
        tiny_config(tmp_path, cache_features=True, backbone_lr=0.001)
    with pytest.raises(ConfigError, match="warmup_epochs"):
        tiny_config(tmp_path, epochs=2, warmup_epochs=2)


def test_fine_tuning_warmup_and_frozen_batchnorm(tiny, tmp_path):
    """warmup_epochs=1: epoch 1 leaves every backbone weight as it was and trains the head; epoch 2
    moves the backbone. freeze_bn: BatchNorm running statistics never change, affine weights do."""
    from apse.training import Trainer

    cfg = tiny_config(tmp_path, epochs=2, warmup_epochs=1, freeze_bn=True, lr=0.05, backbone_lr=0.05)
    trainer = Trainer(cfg, str(tiny), None, progress=False)
    try:
        trainer.setup()
        model = trainer.model
        bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert bns
        start = {k: v.clone() for k, v in model.backbone.state_dict().items()}
        head0 = {k: v.clone() for k, v in model.fuse.state_dict().items()}
        trainer.train_epoch(1)
        assert states_equal(model.backbone.state_dict(), start)           # warm-up: backbone untouched
        assert not states_equal(model.fuse.state_dict(), head0)           # ... while the head trains
        model.train()
        assert model.training and not any(m.training for m in bns)        # BN stays in eval mode
        trainer.train_epoch(2)
        after = model.backbone.state_dict()
        weights = [k for k in after if k.endswith("weight") and "bn" not in k.lower()]
        assert any(not torch.equal(after[k], start[k]) for k in weights)  # the backbone learns ...
        stats = [k for k in after if k.endswith(("running_mean", "running_var"))]
        assert stats and all(torch.equal(after[k], start[k]) for k in stats)   # ... its BN statistics stay
    finally:
        trainer.close()


def test_probe_trains_the_new_layers_on_cached_features_then_fine_tuning_moves_the_backbone(tiny, tmp_path):
    """probe_epochs: the head trains alone on cached frozen features (the backbone bit-identical, a
    feature cache written), then the end-to-end epochs move the backbone; results record the probe."""
    from apse.training import Trainer

    cfg = tiny_config(tmp_path, epochs=1, probe_epochs=2, probe_lr=0.1, freeze_bn=True, lr=0.01,
                      backbone_lr=0.01)
    trainer = Trainer(cfg, str(tiny), tmp_path / "run", progress=False)
    try:
        trainer.setup()
        model = trainer.model
        start = {k: v.clone() for k, v in model.backbone.state_dict().items()}
        head0 = {k: v.clone() for k, v in model.fuse.state_dict().items()}
        probe = trainer.probe()
        assert states_equal(model.backbone.state_dict(), start)          # the probe: backbone untouched
        assert not states_equal(model.fuse.state_dict(), head0)          # ... the head trained
        assert all(p.requires_grad for p in model.backbone.parameters())  # and the backbone is trainable again
        assert len(probe["loss_curve"]) == 2 and probe["lr"] == 0.1 and probe["val"] is not None
        assert list((tmp_path / "cache").glob("*.pt"))                   # it ran on cached features
        assert trainer.optimizer.param_groups[0]["lr"] == 0.01           # the main optimiser is untouched
        trainer.train_epoch(1)
        after = model.backbone.state_dict()
        assert any(not torch.equal(after[k], start[k]) for k in after if k.endswith("weight"))
    finally:
        trainer.close()
    results = Trainer(cfg, str(tiny), tmp_path / "fit", progress=False).fit()
    assert results["probe"]["epochs"] == 2 and len(results["probe"]["loss_curve"]) == 2
    with pytest.raises(ConfigError, match="probe_epochs"):
        tiny_config(tmp_path, cache_features=True, probe_epochs=1)
    with pytest.raises(ConfigError, match="probe_lr"):
        tiny_config(tmp_path, probe_epochs=1, probe_lr=0.0)


def test_the_trainer_holds_its_prepared_data_as_one_typed_run(tiny, tmp_path):
    """Issue #24: the trainer copied every field of its prepared data (private ones too) onto itself and
    read optional state with getattr(..., None). Now ``trainer.run`` is the RunData; the fields the book
    reads go through it, exist only after setup(), and the probe's feature cache is the run's."""
    from dataclasses import fields

    from apse.training import Trainer
    from apse.training_data import RunData

    trainer = Trainer(tiny_config(tmp_path, epochs=1, probe_epochs=1, freeze_bn=True), str(tiny), None,
                      progress=False)
    try:
        assert trainer.run is None and trainer.probe_result is None
        with pytest.raises(AttributeError, match="after setup"):
            trainer.split
        trainer.setup()
        assert isinstance(trainer.run, RunData)
        assert not {f.name for f in fields(RunData)} & set(vars(trainer))   # nothing copied onto it
        assert trainer.split is trainer.run.split and trainer.test_set is trainer.run.test_set
        assert trainer.run.feature_cache_path is None                         # image mode: none yet
        trainer.probe()
        assert trainer.run.feature_cache_path.endswith(".pt") and trainer.run.feature_seconds is not None
    finally:
        trainer.close()


def test_an_untrained_run_returns_the_record_a_trained_run_does(tiny, tmp_path):
    """Issue #24: the experiments' runner rebuilt the results record by hand for untrained runs (the
    floor). Trainer.evaluate_untrained gives fit()'s record, scored on the initialised model."""
    from apse.training import Trainer

    cfg = tiny_config(tmp_path, epochs=1, cache_features=True)
    fresh = Trainer(cfg, str(tiny), None, progress=False).setup()
    expected_test, expected_val = fresh.test(), fresh.validate()
    untrained = Trainer(cfg, str(tiny), tmp_path / "untrained", progress=False).evaluate_untrained()
    trained = Trainer(cfg, str(tiny), None, progress=False).fit()
    assert untrained.keys() == trained.keys()
    assert untrained["test_metrics"] == expected_test and untrained["val_metrics"] == expected_val
    assert untrained["chosen_epoch"] == 0 and untrained["history"] == [] and untrained["train_time_s"] == 0.0
    assert untrained["selection"]["on"] == "untrained" and trained["selection"]["on"] == "val"
    assert untrained["data"]["split"] == trained["data"]["split"]
    assert (tmp_path / "untrained" / "results.json").is_file()
    # one record type for both (apse.provenance.RunRecord), written as results.json field for field
    from apse.io import json_safe
    from apse.provenance import RunRecord

    assert isinstance(untrained, RunRecord) and isinstance(trained, RunRecord)
    assert untrained.untrained and not trained.untrained and untrained.chosen_epoch == 0
    written = json.loads((tmp_path / "untrained" / "results.json").read_text())
    assert list(written) == list(untrained) and written == json_safe(untrained.to_dict())


def test_the_worker_count_does_not_change_an_image_mode_run(tiny, tmp_path):
    """apse.runs.NOT_IN_RESULT leaves num_workers out of the run keys: a fine-tuned (image mode) run
    must give the same numbers with and without data-loading workers. (Before the images were
    decoded once, augmentations were drawn in the workers, so the worker count could move them.)"""
    from apse import training

    runs = [training.train(tiny_config(tmp_path / str(w), num_workers=w, epochs=1), tiny, None,
                           progress=False) for w in (0, 2)]
    assert runs[0]["test_metrics"] == runs[1]["test_metrics"]
    assert runs[0]["history"][0]["loss"] == runs[1]["history"][0]["loss"]
