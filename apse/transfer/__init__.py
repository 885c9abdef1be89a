"""Beyond FI: the papers' small-dataset protocol, and Twitter I (``python -m apse.transfer``).

The papers test APSE on IAPSa, ArtPhoto and Abstract by transferring the FI model: "we transfer the
parameters of the network fine-tuned on FI to them. 5-fold validation is performed and the average
performance is reported" (ICCV Sec. 4.2), every image querying all the others. Here that protocol is
generic (:func:`small_dataset_protocol`): any dataset (:class:`apse.data.polarity.LabelledImages`,
emotion- or polarity-labelled), any FI-trained checkpoint, 5 stratified folds; for held-out fold f

1. optionally fine-tune from the FI model on the other 4 folds (:class:`FineTune`): a stratified
   10 % of them is held back for validation, the epoch (0 = the FI model as it is) is chosen on it
   (validation images query the training images), never on fold f;
2. every image of fold f queries all the other images of fold f (leave-one-out within the held-out
   fold, as the trainer's ``protocol=loo``); the metrics are averaged over the 5 folds.

**The frozen-backbone regime.** Like every experiment of the book on CPU, the backbone is the
frozen, ImageNet-pretrained EfficientNet-Lite0 (224 px centre crops of 256 x 256 resizes, conv3 +
conv5 maps extracted once and cached, mirrored images as a second view): "fine-tune from the FI
model" therefore means *start the head (attention heads, CLB, projection) from the FI-trained
head's weights and train it on the 4 training folds*. The papers fine-tune every layer.

**Polarity-only data** (Twitter I). There are no emotion labels, so

- metrics are computed at the polarity level (:func:`apse.metrics.retrieval_metrics` with
  ``level="polarity"``: relevance = same polarity for mAP2, NN, FT, ST, DCG, F1 and ANMRR; there is
  no mAP8). NN is then the leave-one-out 1-nearest-neighbour polarity accuracy;
- the embedding is trained with the N-pair loss on the two polarity classes
  (:class:`apse.losses.NPairLoss` with ``level="polarity"``): each tuple holds one anchor/positive pair per polarity, so
  ``L = log(1 + exp(s_12 - s_11))`` per anchor. Why not EP: with one class per polarity, both of its
  terms are empty (no other class of the same polarity: ``P_i`` is empty), so EP is 0 by
  definition; GEP and WEP inherit that. The N-pair loss needs no margin to tune for the new domain
  (contrastive and triplet losses do);
- the attention loss applies to the low (polarity) head only; the emotion head is kept as the FI
  model has it (frozen: it cannot be trained without emotion labels).

On emotion-labelled data (IAPSa, ArtPhoto, Abstract) the fine-tuning loss is the checkpoint's own
(N-pair, EP, WEP or GEP, 8 x 4 balanced batches) plus both attention losses, and metrics are at the
emotion level (all eight).

The Twitter I experiment (:func:`run_twitter1`) writes ``results/twitter1/``: one small JSON per
row x subset x fold in ``runs/``, ``summary.csv`` / ``summary.md``, ``retrievals.json`` (fold 0's
top-5 of a few queries, for the book's figure) and ``meta.json``. Its FI-trained models are trained
once on the whole FI subset (:func:`fi_checkpoint`: 95 % train / 5 % validation to choose the
epoch, the experiments' 20-epoch budget) and kept outside the repository, in
``~/.cache/apse/fi-models`` (``$APSE_CACHE``), trained again when missing.

Modules, one job each (everything public is re-exported here, ``from apse.transfer import ...``):

- :mod:`~apse.transfer.fi_models`: the FI-trained models (:func:`fi_checkpoint`) and a dataset's
  cached features under their frozen backbone (:func:`dataset_features`);
- :mod:`~apse.transfer.finetune`: :class:`FineTune`, :func:`fine_tune` (a :class:`apse.training.Trainer` run);
- :mod:`~apse.transfer.protocol`: :func:`small_dataset_protocol`, :func:`evaluate_fold`,
  :func:`linear_probe`;
- :mod:`~apse.transfer.rows`: the Twitter I table's rows (:data:`ROWS`) and shared constants;
- :mod:`~apse.transfer.twitter1`: :func:`run_twitter1` and its cache keys (:func:`run_key`);
- :mod:`~apse.transfer.report`: the records read back (:func:`load_runs`, :func:`summary_table`,
  :func:`paired_difference`, ...); :mod:`~apse.transfer.figure`: :func:`plot_polarity_retrievals`;
- :mod:`~apse.transfer.cli`: the command line (:func:`main`).
"""
from __future__ import annotations

from apse.transfer._shared import REPO_ROOT
from apse.transfer.cli import main
from apse.transfer.fi_models import (DEFAULT_BASE, FI_TRAINING, FI_VARIANTS, dataset_features,
                                     fi_checkpoint, fi_model_config, state_hash)
from apse.transfer.figure import plot_polarity_retrievals
from apse.transfer.finetune import FineTune, fine_tune
from apse.transfer.protocol import evaluate_fold, gap_features, linear_probe, small_dataset_protocol
from apse.transfer.report import (load_meta, load_retrievals, load_runs, paired_difference,
                                  summarise_runs, summary_table, write_summary)
from apse.transfer.rows import (ACCURACY_LABELS, DEFAULT_RESULTS, FIGURE_QUERIES_PER_POLARITY,
                                FIGURE_ROWS, POLARITY_NOTE, ROW_NAMES, ROWS, RUNNER_VERSION, Row)
from apse.transfer.twitter1 import run_file_name, run_key, run_twitter1

__all__ = ["FI_VARIANTS", "FineTune", "fi_model_config", "fi_checkpoint", "dataset_features",
           "fine_tune", "small_dataset_protocol", "linear_probe",
           "ROWS", "run_twitter1", "load_runs", "summarise_runs", "summary_table",
           "load_retrievals", "load_meta", "paired_difference", "plot_polarity_retrievals", "main",
           # also public before the split into modules (module-level names of apse/transfer.py)
           "REPO_ROOT", "DEFAULT_BASE", "DEFAULT_RESULTS", "FI_TRAINING", "RUNNER_VERSION",
           "POLARITY_NOTE", "Row", "ROW_NAMES", "FIGURE_ROWS", "FIGURE_QUERIES_PER_POLARITY",
           "ACCURACY_LABELS", "evaluate_fold", "write_summary",
           # new with the split: the run cache's key and file name, helpers the modules share
           "run_key", "run_file_name", "state_hash", "gap_features"]
