"""What a run's evaluation may skip without changing a number (issue #22's speed work).

* The test reuses the gallery embeddings of the validation that chose its epoch: the same weights on
  the same images, so the test metrics equal a fresh evaluation of the chosen model exactly.
* The probe's validation reads the cached maps of the frozen backbone it trained on, so the
  backbone does not run for it.
Tiny generated data (8 emotions x 8 JPEGs) and a random Lite0 cut at conv4, as in test_training.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset

from apse.config import TrainConfig
from apse.evaluation import embed_dataset, evaluate_split
from conftest import tiny_config  # tiny: conftest's fixture


def cost_config(tmp: Path, **changes) -> TrainConfig:
    # three epochs at a larger lr: the validations differ, so the chosen epoch is a real choice
    return tiny_config(tmp, **{"epochs": 3, "lr": 0.05, **changes})


@pytest.mark.parametrize("mode", ["images", "cached features"])
def test_the_test_reuses_the_chosen_epochs_gallery_and_equals_a_fresh_evaluation(tiny, tmp_path, mode):
    from apse.training import Trainer

    cfg = cost_config(tmp_path, cache_features=(mode == "cached features"))
    trainer = Trainer(cfg, str(tiny), None, progress=False)
    try:
        results = trainer.fit()
        assert trainer._best_gallery is not None
        emb, labels = trainer._best_gallery
        assert emb.shape == (len(trainer.gallery_set), cfg.embedding_dim)
        # the model now holds the chosen epoch's weights: a fresh pass gives the kept embeddings ...
        fresh_emb, fresh_labels = embed_dataset(trainer.model, trainer.gallery_set, **trainer._embed_kw())
        assert torch.equal(fresh_emb, emb) and torch.equal(fresh_labels, labels)
        # ... and a fresh evaluation the very test metrics
        fresh = evaluate_split(trainer.model, trainer.gallery_set, trainer.test_set, **trainer._embed_kw())
        assert fresh == results["test_metrics"]
        with pytest.raises(ValueError, match="gallery embeddings"):
            evaluate_split(trainer.model, trainer.gallery_set, trainer.test_set,
                           gallery=(emb[:-1], labels[:-1]), **trainer._embed_kw())
    finally:
        trainer.close()


def test_a_later_worse_epoch_does_not_replace_the_kept_gallery(tiny, tmp_path, monkeypatch):
    """The kept gallery is the chosen epoch's, not the last validation's."""
    from apse import training

    scores = iter([0.5, 0.9, 0.1])  # epoch 2 is chosen, epoch 3 validates last
    real = training.Trainer.validate

    def scored(self, *args, **kwargs):
        metrics = real(self, *args, **kwargs)
        return {**metrics, "mAP8": next(scores)}

    monkeypatch.setattr(training.Trainer, "validate", scored)
    trainer = training.Trainer(cost_config(tmp_path, cache_features=True), str(tiny), None, progress=False)
    try:
        results = trainer.fit()
        assert results["chosen_epoch"] == 2
        assert trainer._best_gallery is not trainer._val_gallery
        fresh, _ = embed_dataset(trainer.model, trainer.gallery_set, **trainer._embed_kw())
        assert torch.equal(fresh, trainer._best_gallery[0])
    finally:
        trainer.close()


def test_the_probes_validation_does_not_run_the_backbone(tiny, tmp_path):
    from apse.training import Trainer

    cfg = cost_config(tmp_path, epochs=1, probe_epochs=2, probe_lr=0.1, freeze_bn=True, lr=0.01,
                      backbone_lr=0.01)
    first = Trainer(cfg, str(tiny), None, progress=False)
    try:
        first.setup()
        first.probe()  # writes the feature cache
    finally:
        first.close()
    trainer = Trainer(cfg, str(tiny), None, progress=False)
    try:
        trainer.setup()
        calls = []
        handle = trainer.model.backbone.register_forward_hook(lambda *a: calls.append(1))
        probe = trainer.probe()  # the cache exists: neither training nor validation runs the backbone
        handle.remove()
        assert calls == [] and probe["val"] is not None
        assert trainer._val_gallery is None  # not a candidate: the end-to-end epochs validate afresh
        # the cached maps are the images' own, item for item (up to their float16 storage)
        from apse.data import FeatureDataset

        frozen = FeatureDataset.load(trainer.run.feature_cache_path)
        by_maps, map_labels = embed_dataset(trainer.model, Subset(frozen, trainer.split["train"]))
        by_images, image_labels = embed_dataset(trainer.model, trainer.gallery_set, **trainer._embed_kw())
        assert torch.equal(map_labels, image_labels)
        cosine = (by_maps * by_images).sum(1)          # unit vectors: 1 = the same direction
        assert cosine.min() > 0.99, cosine.min()
        assert (by_maps * by_images.roll(1, 0)).sum(1).min() < 0.99  # another image's is not
    finally:
        trainer.close()


def test_an_untrained_runs_test_reuses_its_validation_gallery_and_equals_a_fresh_evaluation(tiny, tmp_path):
    from apse.training import Trainer

    trainer = Trainer(cost_config(tmp_path, cache_features=True), str(tiny), None, progress=False)
    try:
        record = trainer.evaluate_untrained()
        assert trainer._best_gallery is trainer._val_gallery is not None
        fresh = evaluate_split(trainer.model, trainer.gallery_set, trainer.test_set, **trainer._embed_kw())
        assert fresh == record["test_metrics"]
    finally:
        trainer.close()
