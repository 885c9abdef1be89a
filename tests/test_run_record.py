"""Issue #24, section 5: one RunRecord (apse.provenance) that trained and untrained runs both return,
written as results.json with the keys, in the order, that the stored records have."""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from apse.provenance import RunRecord

STORED = Path(__file__).resolve().parents[1] / "results" / "fi-subset-cpu" / "results.json"


def _record(**changes) -> RunRecord:
    values = dict(config={"loss": "apse"}, data={"split": {"train": 4, "val": 1, "test": 2}}, history=[],
                  probe=None, selection={"metric": "mAP8", "on": "untrained", "lower_is_better": False},
                  chosen_epoch=0, val_metrics={"mAP8": 0.2}, test_protocol="test images query the training images",
                  test_metrics={"mAP8": 0.25}, test_metrics_by_source=None, attention_loss_used=True,
                  weights_source="random", wall_time_s=1.0, train_time_s=0.0, test_time_s=0.5,
                  feature_extraction_s=None, feature_cache=None, device="cpu", world_size=1, amp=False,
                  environment={"torch_version": "2", "python_version": "3", "apse_version": "0.1.0",
                               "git_commit": None})
    return RunRecord(**{**values, **changes})


def test_the_record_reads_as_the_dict_it_replaces():
    record = _record()
    assert record["test_metrics"] == record.test_metrics == {"mAP8": 0.25}
    assert record["apse_version"] == "0.1.0" and "environment" not in record
    assert record.get("probe") is None and record.get("no such key", 7) == 7
    assert list(record) == list(record.to_dict()) and len(record) == len(record.to_dict())
    assert record.untrained and not _record(selection={"on": "val"}).untrained
    assert json.loads(json.dumps(record.to_dict())) == record.to_dict()


def test_the_records_keys_keep_the_stored_results_order():
    """The fields added since (probe, test_metrics_by_source) aside, the record writes the keys of a
    results.json written before it existed, in the same order."""
    stored = list(json.loads(STORED.read_text()))
    written = list(_record().to_dict())
    assert [k for k in written if k in stored] == stored
    assert set(written) - set(stored) == {"probe", "test_metrics_by_source"}
    assert [f.name for f in fields(RunRecord)][-1] == "environment"
