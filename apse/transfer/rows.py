"""The Twitter I table: its rows, and what the runner and the reports of it agree on.

A row's fields (:class:`Row`, through ``dataclasses.asdict``) are part of every cached run's key in
``results/twitter1/runs``: renaming or re-ordering fields re-runs the experiment, and so does
bumping :data:`RUNNER_VERSION`.
"""
from __future__ import annotations

from dataclasses import dataclass

from apse.transfer._shared import REPO_ROOT

__all__ = ["Row", "ROWS", "ROW_NAMES", "FIGURE_ROWS", "FIGURE_QUERIES_PER_POLARITY",
           "ACCURACY_LABELS", "RUNNER_VERSION", "POLARITY_NOTE", "DEFAULT_RESULTS"]

DEFAULT_RESULTS = REPO_ROOT / "results" / "twitter1"
#: Bump when a change of apse.transfer changes what a cached run computes. 2: fine-tuning is a
#: :class:`apse.training.Trainer` run (its per-epoch seeds, so other flips of the cached maps).
RUNNER_VERSION = 2
POLARITY_NOTE = ("polarity level: relevance = same polarity for every metric (mAP2, NN, FT, ST, "
                 "DCG, F1, ANMRR); Twitter I has no emotion labels, so there is no mAP8")


@dataclass(frozen=True)
class Row:
    """One row of the Twitter I table. ``source``: "chance" (random embeddings), "imagenet" (an
    untrained linear head on GAP(conv5) of the frozen ImageNet backbone), or an FI model of
    :data:`apse.transfer.FI_VARIANTS`. ``trained``: trained on Twitter I's training folds (from the
    FI head, or from the untrained one for "imagenet")."""

    name: str
    label: str
    source: str
    trained: bool = False
    group: str = ""


ROWS: tuple[Row, ...] = (
    Row("chance", "random embedding (chance)", "chance", group="reference"),
    Row("imagenet", "ImageNet features, untrained head", "imagenet", group="reference"),
    Row("twitter-npair", "ImageNet features, head trained on Twitter I only (N-pair, SO)",
        "imagenet", True, "trained on Twitter I only"),
    Row("fi-npair", "N-pair (SO), FI-trained, as it is", "npair", group="zero-shot transfer"),
    Row("fi-ep", "EP (SO), FI-trained, as it is", "ep", group="zero-shot transfer"),
    Row("fi-apse-gep", "APSE + GEP, FI-trained, as it is", "apse-gep", group="zero-shot transfer"),
    Row("ft-npair", "N-pair (SO), FI-trained, fine-tuned on Twitter I", "npair", True,
        "fine-tuned"),
    Row("ft-ep", "EP (SO), FI-trained, fine-tuned on Twitter I", "ep", True, "fine-tuned"),
    Row("ft-apse-gep", "APSE + GEP, FI-trained, fine-tuned on Twitter I", "apse-gep", True,
        "fine-tuned"),
)
ROW_NAMES = tuple(r.name for r in ROWS)
#: Rows whose fold-0 top-5 retrievals are kept for the book's figure, and how many queries.
FIGURE_ROWS = ("imagenet", "fi-apse-gep", "ft-apse-gep")
FIGURE_QUERIES_PER_POLARITY = 2
ACCURACY_LABELS = {  # column names of the accuracy table (what each is: the book's chapter)
    "majority": "majority class",
    "linear_probe": "logistic regression, ImageNet GAP",
    "polarity_head": "APSE polarity head",
    "emotion_head_polarity": "APSE emotion head, summed",
}


