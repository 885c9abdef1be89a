"""The papers' experiments, re-run on the FI subset: ``python -m apse.experiments NAME``.

An *experiment* is a list of named variants; a *variant* is a set of overrides on the CPU base config
(``configs/fi-subset-cpu.yaml``: frozen, ImageNet-pretrained EfficientNet-Lite0 whose stage maps are
extracted once and cached, so that only the APSE head trains). Each run (variant x fold x seed) is
cached as ``results/<experiment>/runs/<variant>-f<fold>-s<seed>-<key>.json``, where ``key`` hashes the
run's full :class:`~apse.config.TrainConfig` (fold and seed included) plus the settings of this
runner that change a result (:data:`RUNNER_VERSION`, the dataset's file list). A re-run skips the
runs already on disk (also when another experiment produced the identical run), ``--force`` re-runs
them. JSON files are small: metrics, the chosen epoch, the validation curve, timings; no embeddings.

Protocol (what ``summary.md`` states): the 602 images are cut into k = 5 stratified folds
(:func:`apse.data.stratified_kfold`, split_seed 0). For held-out fold f, the model trains on the other
four folds minus a stratified validation part carved out of them (the config's 80/5/15 shares: 5/85
of the training folds); the epoch is chosen on that validation part (validation images query the
training gallery), never on fold f; then fold f is evaluated once: every held-out image queries the
training gallery (``protocol=split``, the papers' FI protocol). ``--folds 3`` runs only the first 3
held-out folds of the same 5-fold partition (same training-set size as the 5-fold tables, so runs
are shared between experiments); mean and standard deviation are taken over the runs (folds x seeds).

Experiments (:data:`EXPERIMENTS`): ``table1`` (ICCV Table 1 / TMM Table I), ``ablation`` (ICCV Table 2 /
TMM Table II), ``beta`` (TMM Table III), ``layers`` (TMM Table IV), ``lambda`` (ICCV Fig. 5 / TMM
Fig. 6, plotted to ``results/lambda/lambda.png``), ``figures`` (attention maps, top-5 retrievals of
N-pair vs APSE, failure cases; PNGs in ``results/figures``). The papers' numbers come from
:mod:`apse.paper_results` and are printed beside ours, marked "paper (FI, ResNet-50)".

The "floor" variant is a linear 512-d head on GAP-pooled frozen backbone features that is never
trained (its random initialisation: a near-isometric random projection), i.e. what the ImageNet
features alone retrieve; every trained variant should beat it.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import csv
import hashlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from apse.paper_results import PAPER_LABEL, PAPER_METRICS, TABLES

__all__ = ["Variant", "Experiment", "RunSpec", "EXPERIMENTS", "METRICS", "RUNNER_VERSION", "expand",
           "run_key", "run_experiment", "summarise_experiment", "write_summary", "paired_difference", "load_records", "main"]

#: Bump when a change of this runner (protocol, what a run computes) invalidates cached runs.
RUNNER_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASE = REPO_ROOT / "configs" / "fi-subset-cpu.yaml"
DEFAULT_RESULTS = REPO_ROOT / "results"
METRICS = ("mAP8", "mAP2", "NN", "FT", "ST", "DCG", "F1", "ANMRR")
LOWER_IS_BETTER = ("ANMRR",)
DATASET_LABEL = "FI subset (602 images)"
BACKBONE_LABEL = "EfficientNet-Lite0, ImageNet-pretrained, frozen (cached features)"
OURS_LABEL = "ours (FI subset)"
K_FOLDS = 5
#: What every experiment changes in the base config, for the CPU budget (2 shared cores, about an hour
#: for all tables): 20 epochs with the lr step at 15 instead of the base config's 40 / 30. Measured on
#: held-out fold 0: APSE's best validation epoch came before the lr step anyway (epoch 24 of 40).
BUDGET_OVERRIDES = {"epochs": 20, "lr_step": 15}
#: Training regimes: what a regime changes in every run of an experiment (after the experiment's and
#: the variant's own overrides). "frozen" is the base config's (cached features of the frozen backbone);
#: "finetune" trains every layer on images, with the settings of configs/fi-subset-finetune-cpu.yaml
#: (chosen on validation; chapter 13). "probe" is the fine-tuning regime's first stage alone: the frozen
#: backbone at the fine-tuning's image size, the new layers trained on its cached features as the probe
#: trains them, so that "fine-tuned" against "probe" isolates what moving the backbone adds (against
#: "frozen", image size changes too). A regime other than frozen writes to results/<name>-<regime>/.
FINETUNE_CONFIG = REPO_ROOT / "configs" / "fi-subset-finetune-cpu.yaml"
REGIME_KEYS = ("cache_features", "feature_flips", "image_size", "resize", "channels_last", "freeze_bn",
               "warmup_epochs", "probe_epochs", "probe_lr", "lr", "backbone_lr", "attention_lr", "epochs",
               "lr_step", "lr_gamma")


def regime_overrides(regime: str) -> dict[str, Any]:
    """The overrides of a training regime (see REGIMES): ``{}`` for "frozen"."""
    if regime == "frozen":
        return {}
    if regime in ("finetune", "probe"):
        from apse.config import load_config

        ft = load_config(FINETUNE_CONFIG).to_dict()
        if regime == "probe":
            return {"cache_features": True, "feature_flips": ft["feature_flips"], "image_size": ft["image_size"],
                    "resize": ft["resize"], "channels_last": None, "freeze_bn": False, "warmup_epochs": 0,
                    "probe_epochs": 0, "probe_lr": None, "lr": ft["probe_lr"] or ft["lr"],
                    "backbone_lr": None, "attention_lr": ft["attention_lr"], "epochs": ft["probe_epochs"],
                    "lr_step": ft["probe_epochs"] + 1, "lr_gamma": ft["lr_gamma"]}
        return {k: ft[k] for k in REGIME_KEYS}
    raise ValueError(f"unknown regime {regime!r}; valid: {', '.join(REGIMES)}")


REGIMES = ("frozen", "finetune", "probe")


def regime_dir(name: str, regime: str = "frozen") -> str:
    """The results folder name of experiment ``name`` run in ``regime``."""
    return name if regime == "frozen" else f"{name}-{regime}"


# Config fields that cannot change a run's numbers (where files go, worker counts): left out of the key.
_NOT_IN_KEY = ("device", "num_workers", "feature_cache", "batch_size_eval")


# ----------------------------------------------------------------------------------------------------
# definitions
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One row of an experiment: config overrides, and the paper row it stands beside.

    ``paper``: ``(table id in apse.paper_results.TABLES, method)`` or None. ``untrained``: evaluate the
    freshly initialised head (the random-projection reference) instead of training. ``param``: the swept
    value (beta, lambda) used by plots. ``floor``: the row is a trained linear 512-d head on frozen,
    GAP-pooled features (softmax or N-pair, SO), the floor every real method must beat.
    """

    name: str
    label: str
    overrides: dict = field(default_factory=dict)
    paper: Optional[tuple[str, str]] = None
    untrained: bool = False
    param: Any = None
    note: str = ""
    floor: bool = False       # a trained linear 512-d head on frozen GAP features: the floor to beat


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    variants: tuple[Variant, ...]
    folds: int = K_FOLDS                       # held-out folds run by default (out of K_FOLDS)
    overrides: dict = field(default_factory=lambda: dict(BUDGET_OVERRIDES))  # applied to every variant
    paper_tables: tuple[str, ...] = ()
    description: str = ""


# Baselines of Table 1 use the papers' baseline network: GAP of the last stage, a linear map to 512
# (the papers' baselines retrieve with 2048-d ResNet GAP features), no attention heads.
_SO = {"attention": "none", "fusion": "single"}
_HA_CLB = {"attention": "hierarchical", "fusion": "clb"}

FLOOR = Variant("floor", "untrained linear 512-d head on GAP features (random projection)", {**_SO, "loss": "npair"},
                None, untrained=True,
                note="never trained: a random linear map of GAP(conv5) to 512-d, l2-normalised; what the ImageNet "
                     "features alone retrieve")


def _table1() -> Experiment:
    t = "tmm-table1"
    rows = [
        FLOOR,
        Variant("softmax", "softmax (ResNet (S) analogue; linear floor)", {**_SO, "loss": "softmax"}, (t, "ResNet (S)"),
                floor=True),
        Variant("contrastive", "contrastive loss (margin 0.4)",
                {**_SO, "loss": "contrastive", "loss_options": {"margin": 0.4}}, (t, "Contrastive loss")),
        Variant("triplet", "triplet loss (margin 0.2, semi-hard)",
                {**_SO, "loss": "triplet", "loss_options": {"margin": 0.2}}, (t, "Triplet loss")),
        Variant("npair", "N-pair loss (linear floor)", {**_SO, "loss": "npair"}, (t, "N-pair loss"), floor=True),
        Variant("center", "center loss", {**_SO, "loss": "center"}, (t, "Center loss")),
        Variant("binomial", "binomial deviance", {**_SO, "loss": "binomial"}, (t, "Binomial deviance")),
        Variant("arcface", "ArcFace", {**_SO, "loss": "arcface"}, (t, "ArcFace")),
        Variant("sphereface", "SphereFace", {**_SO, "loss": "sphereface"}, (t, "SphereFace")),
        Variant("fastap", "FastAP", {**_SO, "loss": "fastap"}, (t, "FastAP")),
        Variant("softtriple", "SoftTriple", {**_SO, "loss": "softtriple"}, (t, "SoftTriple")),
        Variant("yang", "Yang et al. (joint softmax + polarity-aware triplet)", {**_SO, "loss": "yang"},
                (t, "Yang et al.")),
        Variant("apse-wep", "APSE + WEP (ICCV)", {**_HA_CLB, "loss": "wep"}, (t, "Old APSE (WEP)")),
        Variant("apse-gep", "APSE + GEP (TMM)", {**_HA_CLB, "loss": "apse"}, (t, "New APSE (GEP)")),
    ]
    return Experiment("table1", "Retrieval performance (ICCV Table 1 / TMM Table I)", tuple(rows),
                      paper_tables=("iccv-table1", "tmm-table1"),
                      description="Embedding losses on the same frozen features and the same 512-d head; "
                                  "APSE rows use both attention levels and CLB.")


def _ablation() -> Experiment:
    t = "tmm-table2"
    # "AT" without SA/HA is, in the papers, two softmax classifiers on conv3 and conv5 whose gradients
    # reach the embedding only through the shared, fine-tuned backbone. Our backbone is frozen, so such
    # classifiers share no parameter with the embedding head and cannot change it: "AT + X" without
    # attention is exactly "X" here. Those rows are therefore the same runs as the rows without AT (the
    # run cache shares them), and the MO ones are the multi-level (concatenated GAP) nets without heads.
    frozen_at = "frozen backbone: AT without SA/HA shares no parameter with the embedding, so this is the run without AT"
    rows = [
        FLOOR,
        Variant("at-so", "AT, SO (= softmax on GAP(conv5); linear floor)", {**_SO, "loss": "softmax"}, (t, "AT"),
                floor=True,
                note="the papers print Table 1's ResNet (S) numbers for this row; here: the softmax-trained head"),
        Variant("npair-so", "N-pair, SO (linear floor)", {**_SO, "loss": "npair"}, (t, "N-pair"), floor=True),
        Variant("ep-so", "EP, SO", {**_SO, "loss": "ep"}, (t, "EP")),
        Variant("at-npair-so", "AT + N-pair, SO (= N-pair, SO)", {**_SO, "loss": "npair"}, (t, "AT + N-pair"),
                note=frozen_at),
        Variant("at-ep-so", "AT + EP, SO (= EP, SO)", {**_SO, "loss": "ep"}, (t, "AT + EP"), note=frozen_at),
        Variant("at-npair-mo", "AT + N-pair, MO (= N-pair, MO; TMM row (e), inferred)",
                {"attention": "none", "fusion": "concat", "loss": "npair"}, (t, "AT + N-pair + MO (inferred)"),
                note=frozen_at),
        Variant("at-ep-mo", "AT + EP, MO (= EP, MO)", {"attention": "none", "fusion": "concat", "loss": "ep"},
                (t, "AT + EP + MO"), note=frozen_at),
        Variant("at-ep-sa-mo", "AT + EP + SA, MO", {"attention": "emotion", "fusion": "concat", "loss": "ep"},
                (t, "AT + EP + SA + MO")),
        Variant("at-ep-ha-mo", "AT + EP + HA, MO", {"attention": "hierarchical", "fusion": "concat", "loss": "ep"},
                (t, "AT + EP + HA + MO")),
        Variant("at-gep-ha-mo", "AT + GEP + HA, MO (TMM row (j), inferred)",
                {"attention": "hierarchical", "fusion": "concat", "loss": "apse"},
                (t, "AT + GEP + HA + MO (inferred)")),
        Variant("at-ep-ha-clb-mo", "AT + EP + HA + CLB, MO", {**_HA_CLB, "loss": "ep"}, (t, "AT + EP + HA + CLB + MO")),
        Variant("at-wep-ha-clb-mo", "AT + WEP + HA + CLB, MO (APSE, ICCV)", {**_HA_CLB, "loss": "wep"},
                ("iccv-table2", "AT + WEP + HA + CLB + MO (APSE)")),
        Variant("at-gep-ha-clb-mo", "AT + GEP + HA + CLB, MO (APSE, TMM)", {**_HA_CLB, "loss": "apse"},
                (t, "AT + GEP + HA + CLB + MO (APSE)")),
    ]
    return Experiment("ablation", "Ablation (ICCV Table 2 / TMM Table II)", tuple(rows),
                      paper_tables=("iccv-table2", "tmm-table2"),
                      description="AT = attention loss; SA = emotion attention on the high stage; HA = both "
                                  "levels; CLB = cross-level bilinear; SO = high stage only (GAP); MO = low + "
                                  "high stage (GAPs concatenated without CLB). With SA/HA the attention loss acts "
                                  "on the embedding through the attention maps; without them it cannot (frozen "
                                  "backbone), so the AT rows without attention repeat the runs without AT.")


def _beta() -> Experiment:
    t = "tmm-table3"
    rows = [Variant(f"beta-{b:g}", f"beta fixed = {b:g}", {**_HA_CLB, "loss": "apse", "beta": b},
                    (t, f"beta = {b:g}"), param=b) for b in (0.0, 0.2, 0.4, 0.6, 0.8)]
    rows.append(Variant("beta-adaptive", "beta adaptive, exp(-w_ij) (APSE)", {**_HA_CLB, "loss": "apse", "beta": None},
                        (t, "adaptive (ours)"), param="adaptive"))
    return Experiment("beta", "GEP: fixed vs adaptive beta (TMM Table III)", tuple(rows),
                      paper_tables=("tmm-table3",))


def _layers() -> Experiment:
    t = "tmm-table4"
    rows = []
    for stage in ("conv2", "conv3", "conv4", "conv5"):
        for att, tag in (("polarity", "p"), ("emotion", "e")):
            rows.append(Variant(f"{stage}{tag}-conv5e", f"{stage} ({tag}) + conv5 (e)",
                                {**_HA_CLB, "loss": "apse", "low_stage": stage, "low_attention": att},
                                (t, f"{stage} ({tag}) + conv5 (e)"), param=(stage, att)))
    return Experiment("layers", "Combinations of stages (TMM Table IV)", tuple(rows),
                      paper_tables=("tmm-table4",))


def _lambda() -> Experiment:
    rows = [Variant(f"lam-{lam:.1f}", f"lambda = {lam:.1f}", {**_HA_CLB, "loss": "apse", "lam": lam},
                    ("lambda-figure", "TMM (GEP), lambda = 0.5") if abs(lam - 0.5) < 1e-9 else None, param=lam)
            for lam in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)]
    return Experiment("lambda", "Effect of lambda (ICCV Fig. 5 / TMM Fig. 6)", tuple(rows),
                      paper_tables=("lambda-figure",))


def _attention() -> Experiment:
    # Not a table of the papers: the scale of the spatial mask and the attention heads' lr (see
    # apse.attention). Chosen on the validation parts only (the summary's "val" column); the held-out
    # folds are reported like every other experiment, not used to choose.
    full = {**_HA_CLB, "loss": "apse"}
    rows = [Variant("mask-sum", "mask at sum 1 (papers' scale), heads at the base lr",
                    {**full, "attention_mask_scale": "sum", "attention_lr": None}, param=("sum", None))]
    rows += [Variant(f"mask-mean-lr{lr:g}", f"mask at mean 1, heads at lr {lr:g}",
                     {**full, "attention_mask_scale": "mean", "attention_lr": lr}, param=("mean", lr))
             for lr in (0.2, 0.01, 0.001)]
    return Experiment("attention", "Attention heads: scale of the spatial mask and lr of the heads (not in the papers)",
                      tuple(rows),
                      description="Does the attention head learn? The papers' mask (sum 1) shrinks the heads' "
                                  "logits by 1/(h*w); at mean 1 they read attention-pooled features at the "
                                  "backbone's scale and want the lr of a linear classifier. The base config of "
                                  "the other experiments keeps the papers' mask unless another row beats it on "
                                  "validation mAP8 by more than two standard errors of the paired difference. "
                                  "Heads' accuracy, top confidence and the choice: see attention.md.")


#: Learning rates of the ``lr`` experiment (the base config's 0.2 included, so its runs are shared).
LR_GRID = (0.005, 0.02, 0.05, 0.2)


def _lr() -> Experiment:
    # Not in the papers: every other experiment gives every loss the base config's lr (0.2, sized for
    # the APSE head). Here each Table 1 loss gets its own lr, chosen on validation only (lr.md).
    t1 = {v.name: v for v in _table1().variants if not v.untrained}
    rows = [Variant(f"{name}-lr{lr:g}", f"{v.label.split(' (')[0]}, lr {lr:g}", {**v.overrides, "lr": lr},
                    v.paper if lr == 0.2 else None, param=(name, lr), floor=v.floor and lr == 0.2)
            for name, v in t1.items() if name != "apse-wep" for lr in LR_GRID]
    return Experiment("lr", "Learning rate per loss, chosen on validation (not in the papers)", tuple(rows),
                      description="Each loss of Table 1 (and APSE + GEP) at four learning rates; lr.md picks, "
                                  "per loss, the lr with the best mean validation mAP8 and shows its held-out "
                                  "metrics beside those at the shared lr 0.2.")


def _figures() -> Experiment:
    rows = (Variant("npair", "N-pair loss", {**_SO, "loss": "npair"}),
            Variant("apse-gep", "APSE + GEP", {**_HA_CLB, "loss": "apse"}))
    return Experiment("figures", "Attention maps, top-5 retrievals (N-pair vs APSE), failure cases", rows, folds=1)


#: The key rows of Table 1 and the ablation, the ones every regime is compared on (issue: does APSE
#: work once the backbone is fine-tuned?): the two trained linear floors, EP on GAP, EP on two levels,
#: EP with both heads and CLB, APSE with WEP and with GEP, and Yang et al.
CORE_ROWS = (("table1", "softmax"), ("table1", "npair"), ("ablation", "ep-so"), ("ablation", "at-ep-mo"),
             ("ablation", "at-ep-ha-clb-mo"), ("table1", "apse-wep"), ("table1", "apse-gep"),
             ("table1", "yang"))


def _core() -> Experiment:
    rows = {name: {v.name: v for v in EXPERIMENTS[name]().variants} for name in ("table1", "ablation")}
    return Experiment("core", "The key rows of Table 1 and the ablation, frozen or fine-tuned",
                      tuple(rows[table][name] for table, name in CORE_ROWS),
                      description="Run with --regime frozen (the cached runs of Table 1 and the ablation) "
                                  "and --regime finetune (every layer trained on images): the same "
                                  "variants, folds and seeds in both, for paired comparisons.")


#: The diagnosis of chapter 13: where APSE's mAP8 goes. (1) SO -> MO: the low level at conv3 (as the
#: papers), at conv4, or concatenated without the per-level l2 normalisation; (2) the loss against the
#: network: N-pair and EP, each on the linear head and on APSE's network (both heads, CLB, attention
#: loss); (3) APSE with the low level at conv4 (TMM Table IV's best row here), a candidate "beyond the
#: papers" variant, chosen on validation only.
def _diagnosis() -> Experiment:
    ep_mo = {"attention": "none", "loss": "ep"}
    rows = (
        Variant("npair-so", "N-pair, linear head (floor)", {**_SO, "loss": "npair"}, floor=True),
        Variant("ep-so", "EP, linear head", {**_SO, "loss": "ep"}),
        Variant("at-ep-mo", "EP, conv3 + conv5 concatenated (each l2-normalised)", {**ep_mo, "fusion": "concat"}),
        Variant("ep-mo-conv4", "EP, conv4 + conv5 concatenated (each l2-normalised)",
                {**ep_mo, "fusion": "concat", "low_stage": "conv4"}),
        Variant("ep-mo-raw", "EP, conv3 + conv5 concatenated (not normalised)", {**ep_mo, "fusion": "concat_raw"}),
        Variant("npair-net", "N-pair on APSE's network (HA + CLB + attention loss)",
                {**_HA_CLB, "loss": "npair", "attention_loss": True}),
        Variant("at-ep-ha-clb-mo", "EP on APSE's network (HA + CLB + attention loss)", {**_HA_CLB, "loss": "ep"}),
        Variant("apse-gep", "APSE + GEP (the papers' method)", {**_HA_CLB, "loss": "apse"}),
        Variant("conv4p-conv5e", "APSE + GEP, low level at conv4 (beyond the papers)",
                {**_HA_CLB, "loss": "apse", "low_stage": "conv4", "low_attention": "polarity"}),
    )
    return Experiment("diagnosis", "Where APSE's emotion-level accuracy goes: levels, loss and network", rows,
                      description="Not in the papers. The same folds and seeds as the core table; run in "
                                  "both regimes for paired comparisons.")


#: Backbones of the ``backbones`` experiment, weakest first.
BACKBONE_GRID = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
#: The rows each backbone gets: Table 1's two trained linear floors and APSE + GEP.
BACKBONE_ROWS = ("softmax", "npair", "apse-gep")


def _backbones() -> Experiment:
    # Not in the papers: does a stronger frozen backbone change APSE + GEP against the trained linear
    # floor? Each backbone at its native ImageNet resolution: a centre crop of that size from a resize
    # to size + 32 (EfficientNet's evaluation crop; Lite0's 224 / 256 are the base config's, so
    # Lite0's rows are Table 1's runs, from the cache).
    from apse.backbones import LITE_VARIANTS, NATIVE_RESOLUTION

    t1 = {v.name: v for v in _table1().variants}
    rows = []
    for backbone in BACKBONE_GRID:
        size, title = NATIVE_RESOLUTION[backbone], LITE_VARIANTS[backbone].title
        short = backbone.replace("efficientnet_", "")
        for name in BACKBONE_ROWS:
            v = t1[name]
            rows.append(Variant(f"{short}-{name}", f"{title} ({size} px): {v.label}",
                                {**v.overrides, "backbone": backbone, "image_size": size,
                                 "resize": size + 32},
                                param=(backbone, name), floor=v.floor))
    return Experiment("backbones", "A stronger frozen backbone: EfficientNet-Lite0, Lite1, Lite2 "
                                   "(not in the papers)", tuple(rows),
                      description="Table 1's linear floors (softmax and N-pair on GAP(conv5), SO) and "
                                  "APSE + GEP on three frozen ImageNet backbones of one family, each at "
                                  "its native resolution (224, 240, 260 px crops of 256, 272, 292 px "
                                  "resizes). The question: does the comparison that matters, APSE + GEP "
                                  "against the trained linear floor, change with better features? The "
                                  "Floor line below takes the best floor over all backbones; compare "
                                  "within a backbone.")


EXPERIMENTS: dict[str, Callable[[], Experiment]] = {
    "table1": _table1, "ablation": _ablation, "beta": _beta, "lambda": _lambda, "layers": _layers,
    "figures": _figures, "attention": _attention, "lr": _lr, "backbones": _backbones, "core": _core,
    "diagnosis": _diagnosis,
}
ORDER = ("attention", "ablation", "table1", "beta", "lambda", "layers", "lr", "backbones", "core", "diagnosis",
         "figures")


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid names are: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]()


# ----------------------------------------------------------------------------------------------------
# expansion and keys
# ----------------------------------------------------------------------------------------------------
@dataclass
class RunSpec:
    experiment: str
    variant: Variant
    fold: int
    seed: int
    config: Any          # TrainConfig
    key: str

    @property
    def filename(self) -> str:
        return f"{self.variant.name}-f{self.fold}-s{self.seed}-{self.key}.json"


# Config fields added after runs were cached, with the value that reproduces those runs: left out of
# the key at that value, so the cached runs stay valid (a run that sets another value is keyed by it).
_ADDED_FIELDS = {"attention_mask_scale": "sum", "attention_lr": None, "backbone_lr": None, "freeze_bn": False,
                 "warmup_epochs": 0, "probe_epochs": 0, "probe_lr": None}


def run_key(config: dict, fold: int, seed: int, untrained: bool = False, extra: dict | None = None) -> str:
    """12 hex digits of a hash of everything that decides a run's numbers."""
    payload = {"config": {k: v for k, v in sorted(config.items())
                          if k not in _NOT_IN_KEY and not (k in _ADDED_FIELDS and v == _ADDED_FIELDS[k])},
               "fold": int(fold), "seed": int(seed), "untrained": bool(untrained),
               "runner_version": RUNNER_VERSION, **(extra or {})}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def expand(experiment: Experiment, base, *, folds: int | None = None, seeds: Sequence[int] = (0,),
           k: int = K_FOLDS, overrides: dict | None = None, extra_key: dict | None = None) -> list[RunSpec]:
    """Every run of ``experiment``: variants x held-out folds 0..folds-1 (of a k-fold partition) x seeds.

    ``base`` is a TrainConfig; ``overrides`` apply to every run after the experiment's and variant's own.
    """
    folds = experiment.folds if folds is None else int(folds)
    if not 1 <= folds <= k:
        raise ValueError(f"folds must be between 1 and k={k}, got {folds}")
    specs = []
    for variant in experiment.variants:
        changes = {**experiment.overrides, **variant.overrides, **(overrides or {}),
                   "folds": k, "fold": 0, "seed": int(seeds[0]), "protocol": "split"}
        template = base.replace(**changes)  # validated once per variant (validation is not cheap)
        for fold in range(folds):
            for seed in seeds:
                # fold in 0..k-1 and an int seed are valid by construction: set them on a copy
                cfg = copy.copy(template)
                cfg.fold, cfg.seed = fold, int(seed)
                key = run_key(cfg.to_dict(), fold, seed, variant.untrained, extra_key)
                specs.append(RunSpec(experiment.name, variant, fold, int(seed), cfg, key))
    return specs


# ----------------------------------------------------------------------------------------------------
# running one run
# ----------------------------------------------------------------------------------------------------
class _Context:
    """What every run of an invocation shares: the dataset object (scanned once), found from
    ``data`` (a folder or None, see :func:`apse.data.locate_dataset`) or given already opened."""

    def __init__(self, data: str | None, dataset=None):
        self._data_arg = data
        self._dataset = dataset

    @property
    def dataset(self):
        if self._dataset is None:
            from apse.data import EmotionImageFolder, locate_dataset

            self._dataset = EmotionImageFolder(locate_dataset(self._data_arg))
        return self._dataset


def _round(metrics: dict | None, digits: int = 6) -> dict | None:
    if metrics is None:
        return None
    return {k: (round(float(v), digits) if isinstance(v, (int, float)) and v is not None else v)
            for k, v in metrics.items()}


def execute_run(spec: RunSpec, ctx: _Context) -> dict[str, Any]:
    """Train (or, for the floor, only build) one run and return its small JSON record."""
    from apse.training import Trainer

    t0, c0 = time.time(), time.process_time()
    cfg = spec.config
    trainer = Trainer(cfg, ctx.dataset, None, progress=False)
    try:
        if spec.variant.untrained:
            trainer.setup()
            test = trainer.test()
            val = trainer.validate()
            results = {"test_metrics": test, "val_metrics": val, "chosen_epoch": 0, "history": [],
                       "data": {"split": {k: len(v) for k, v in trainer.split.items()}},
                       "train_time_s": 0.0, "feature_extraction_s": getattr(trainer, "feature_seconds", None),
                       "weights_source": _portable_source(
                           str(getattr(trainer.model.backbone, "weights_source", "")))}
        else:
            results = trainer.fit()
        attention = None
        if trainer.model.attention != "none":
            from apse.evaluation import attention_report

            attention = {part: _round(attention_report(trainer.model, ds))
                         for part, ds in (("val", trainer.val_set), ("test", trainer.test_set)) if len(ds)}
    finally:
        trainer.close()
    select = cfg.select_on
    history = results.get("history") or []
    probe = results.get("probe")
    return {
        "test_metrics": _round(results["test_metrics"]),
        "val_metrics": _round(results.get("val_metrics")),
        "chosen_epoch": results.get("chosen_epoch"),
        "attention_heads": attention,
        "val_curve": [None if not h.get("val") else round(float(h["val"][select]), 4) for h in history],
        "loss_curve": [round(float(h["loss"]), 4) for h in history],
        # the probe stage (fine-tuning regime): the new layers' validation score before the backbone moved
        "probe_val": (round(float(probe["val"][select]), 4) if probe and probe.get("val") else None),
        "probe_s": round(float(probe["seconds"]), 2) if probe else None,
        "split": results.get("data", {}).get("split"),
        "train_time_s": round(float(results.get("train_time_s") or 0.0), 2),
        "feature_extraction_s": results.get("feature_extraction_s"),
        "weights_source": results.get("weights_source"),
        "wall_time_s": round(time.time() - t0, 2),
        "cpu_time_s": round(time.process_time() - c0, 2),
    }


# ----------------------------------------------------------------------------------------------------
# caching and the experiment loop
# ----------------------------------------------------------------------------------------------------
def portable_config(config: dict) -> dict:
    """A run's config as its record keeps it: absolute paths (``feature_cache``, a weights file)
    made machine-independent by :func:`apse.training.portable_config` (the key is not affected)."""
    from apse.training import portable_config as portable

    return portable(config)


def _portable_source(source: str) -> str:
    from apse.training import _portable_source as portable

    return portable(source)


def _find_cached(results_dir: Path, spec: RunSpec) -> Path | None:
    own = results_dir / spec.experiment / "runs" / spec.filename
    if own.is_file():
        return own
    # the same run may have been done by another experiment (e.g. APSE + GEP in every table)
    for path in sorted(results_dir.glob(f"*/runs/*-f{spec.fold}-s{spec.seed}-{spec.key}.json")):
        return path
    return None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _code_hash() -> str:
    h = hashlib.sha256()
    for name in ("losses", "model", "attention", "pooling", "training", "evaluation", "metrics", "data",
                 "config", "backbones", "experiments"):
        p = REPO_ROOT / "apse" / f"{name}.py"
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def run_experiment(name: str, *, folds: int | None = None, seeds: Sequence[int] = (0,), force: bool = False,
                   results_dir: str | os.PathLike = DEFAULT_RESULTS, base: str | os.PathLike = DEFAULT_BASE,
                   data: str | None = None, overrides: dict | None = None, k: int = K_FOLDS,
                   execute: Callable[[RunSpec, Any], dict] | None = None, log: Callable[[str], None] = print,
                   command: str | None = None, regime: str = "frozen",
                   only: Sequence[str] | None = None,
                   only_folds: Sequence[int] | None = None) -> dict[str, Any]:
    """Run (or load from cache) every run of experiment ``name``, then write its summary files.

    ``only`` / ``only_folds``: just these variants / held-out folds (e.g. to share one experiment's
    runs between two processes); the summary then lists just those runs.

    Returns ``{"experiment", "runs": [records], "summary": rows, "ran": n, "cached": n, "wall_time_s"}``.
    ``execute`` defaults to :func:`execute_run` (tests pass a stub).
    """
    from apse.config import load_config

    t_start, c_start = time.time(), time.process_time()
    experiment = get_experiment(name)
    results_dir = Path(results_dir)
    base_cfg = load_config(base)
    run_overrides = {"device": "cpu", **regime_overrides(regime), **(overrides or {})}
    if only:
        unknown = sorted(set(only) - {v.name for v in experiment.variants})
        if unknown:
            raise ValueError(f"{name} has no variant {unknown[0]!r}; its variants are: "
                             f"{', '.join(v.name for v in experiment.variants)}")
        experiment = dataclasses.replace(experiment, variants=tuple(v for v in experiment.variants
                                                                    if v.name in only))
    specs = expand(experiment, base_cfg, folds=folds, seeds=seeds, k=k, overrides=run_overrides)
    if only_folds is not None:
        if not set(only_folds) <= set(range(k)):
            raise ValueError(f"only_folds must lie in 0..{k - 1}, got {sorted(only_folds)}")
        specs = [s for s in specs if s.fold in set(only_folds)]
    execute = execute or execute_run
    ctx = _Context(data)
    records, ran, cached = [], 0, 0
    out_dir = results_dir / regime_dir(name, regime)
    for i, spec in enumerate(specs, 1):
        path = out_dir / "runs" / spec.filename
        found = None if force else _find_cached(results_dir, spec)
        record = _read_json(found) if found else None
        if record is not None and record.get("key") == spec.key and record.get("test_metrics"):
            if found != path:  # produced by another experiment: keep a copy here, say where it came from
                record = {**record, "experiment": name, "variant": spec.variant.name,
                          "reused_from": str(found.relative_to(results_dir))}
                _write_json(path, record)
            cached += 1
            records.append(record)
            continue
        log(f"[{name} {i}/{len(specs)}] {spec.variant.name} fold {spec.fold} seed {spec.seed} ...")
        t0 = time.time()
        result = execute(spec, ctx)
        record = {"experiment": name, "variant": spec.variant.name, "label": spec.variant.label,
                  "fold": spec.fold, "seed": spec.seed, "key": spec.key, "untrained": spec.variant.untrained,
                  "config": portable_config(spec.config.to_dict()), **result,
                  "code_hash": _code_hash(), "runner_version": RUNNER_VERSION,
                  "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        record.setdefault("wall_time_s", round(time.time() - t0, 2))
        _write_json(path, record)
        ran += 1
        records.append(record)
        tm = record.get("test_metrics") or {}
        log(f"    mAP8 {tm.get('mAP8', float('nan')):.4f}  mAP2 {tm.get('mAP2', float('nan')):.4f}  "
            f"epoch {record.get('chosen_epoch')}  {record['wall_time_s']:.1f}s")
    wall = time.time() - t_start
    meta_path = out_dir / "meta.json"
    meta = _read_json(meta_path) or {"invocations": []}
    meta["invocations"].append({"command": command, "ran": ran, "cached": cached, "wall_time_s": round(wall, 1),
                                "cpu_time_s": round(time.process_time() - c_start, 1),
                                "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(),
                                "threads": _threads()})
    _write_json(meta_path, meta)
    rows = summarise_experiment(experiment, records)
    info = _table_info(experiment, specs, seeds, folds if folds is not None else experiment.folds, k, meta, records)
    write_summary(out_dir, experiment, rows, info)
    extra = EXTRAS.get(name)
    if extra is not None:
        extra(out_dir, experiment, rows, info)
    log(f"[{name}] {ran} run(s) trained, {cached} from cache, {wall:.0f}s; summary in {out_dir}")
    return {"experiment": name, "runs": records, "summary": rows, "ran": ran, "cached": cached, "wall_time_s": wall}


def load_records(name: str, results_dir: str | os.PathLike = DEFAULT_RESULTS, *, folds: int | None = None,
                 seeds: Sequence[int] | None = None, base: str | os.PathLike = DEFAULT_BASE,
                 regime: str = "frozen") -> list[dict]:
    """The cached run records of experiment ``name`` (in ``regime``) for the current definitions (files
    of other keys, e.g. from an older configuration, are ignored). ``seeds`` default: those in its
    summary.csv."""
    from apse.config import load_config

    results_dir = Path(results_dir)
    folder = regime_dir(name, regime)
    if seeds is None:
        seeds = [0]
        summary = results_dir / folder / "summary.csv"
        if summary.is_file():
            with open(summary) as fh:
                found = {int(x) for row in csv.DictReader(fh) for x in (row.get("seeds") or "").split()}
            seeds = sorted(found) or [0]
    specs = expand(get_experiment(name), load_config(base), folds=folds, seeds=seeds,
                   overrides={"device": "cpu", **regime_overrides(regime)})
    records = []
    for spec in specs:
        record = _read_json(results_dir / folder / "runs" / spec.filename)
        if record is not None and record.get("key") == spec.key:
            records.append(record)
    return records


def _threads() -> int | None:
    try:
        import torch

        return torch.get_num_threads()
    except Exception:  # pragma: no cover
        return None


# ----------------------------------------------------------------------------------------------------
# summaries
# ----------------------------------------------------------------------------------------------------
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def summarise_experiment(experiment: Experiment, records: Sequence[dict]) -> list[dict]:
    """One row per variant (in the experiment's order): mean and std over its runs of every metric,
    plus the paper's numbers where the variant has a paper row."""
    rows = []
    for variant in experiment.variants:
        runs = [r for r in records if r.get("variant") == variant.name and r.get("test_metrics")]
        row: dict[str, Any] = {"variant": variant.name, "label": variant.label, "n_runs": len(runs),
                               "folds": sorted({r["fold"] for r in runs}), "seeds": sorted({r["seed"] for r in runs}),
                               "param": variant.param, "note": variant.note, "mean": {}, "std": {}}
        for m in METRICS:
            vals = [float(r["test_metrics"][m]) for r in runs if r["test_metrics"].get(m) is not None]
            if vals:
                row["mean"][m], row["std"][m] = _mean_std(vals)
        # validation (what selection may look at) and the attention heads on val / held-out
        row["val_runs"] = {f"{r['fold']}-{r['seed']}": dict(r.get("val_metrics") or {}) for r in runs}
        row["val_mean"] = _key_means(row["val_runs"].values())
        row["attention"] = _key_means({f"{part}_{k}": v for part, d in (r.get("attention_heads") or {}).items()
                                       for k, v in (d or {}).items()} for r in runs)
        epochs = [r.get("chosen_epoch") for r in runs if r.get("chosen_epoch") is not None]
        row["chosen_epochs"] = epochs
        row["run_time_s"] = round(sum(float(r.get("wall_time_s") or 0.0) for r in runs), 1)
        row["cpu_time_s"] = round(sum(float(r.get("cpu_time_s") or 0.0) for r in runs), 1)
        row["paper_ref"] = list(variant.paper) if variant.paper else None
        row["floor"] = variant.floor
        row["paper"] = _paper_values(variant.paper)
        rows.append(row)
    return rows


def _key_means(dicts: Iterable[dict]) -> dict[str, float]:
    """Per key, the mean of its non-None values over ``dicts`` (keys with no value are left out)."""
    values: dict[str, list[float]] = {}
    for d in dicts:
        for k, v in d.items():
            if v is not None:
                values.setdefault(k, []).append(float(v))
    return {k: sum(v) / len(v) for k, v in values.items()}


def _paper_values(ref: tuple[str, str] | None) -> dict[str, float] | None:
    if not ref:
        return None
    table, method = ref
    for row in TABLES[table]["rows"]:
        if row["method"] == method:
            return dict(row["values"])
    raise KeyError(f"paper row {method!r} not in {table}")


def _fmt(x: float | None, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _backbone_label(specs: Sequence[RunSpec]) -> str:
    """The settings line's backbone: BACKBONE_LABEL for Lite0, else the backbones' names (per row)."""
    names = list(dict.fromkeys(s.config.backbone for s in specs))
    if not all(s.config.cache_features for s in specs):
        return (f"{', '.join(names)}, ImageNet-pretrained, fine-tuned end to end on images "
                "(regime finetune: configs/fi-subset-finetune-cpu.yaml)")
    if not names or names == ["efficientnet_lite0"]:
        return BACKBONE_LABEL
    if len(names) == 1:
        return names[0]
    return f"per row: {', '.join(names)}; ImageNet-pretrained, frozen (cached features)"


def _image_size_label(specs: Sequence[RunSpec]) -> str | None:
    sizes = list(dict.fromkeys((s.config.image_size, s.config.resize) for s in specs))
    if not sizes:
        return None
    text = ", ".join(f"{size} px (resize {resize}" + ")" for size, resize in sizes)
    return (text if len(sizes) > 1 else text[:-1] + ", centre crop)") + \
        (" per row, centre crop" if len(sizes) > 1 else "")


def _table_info(experiment: Experiment, specs: Sequence[RunSpec], seeds, folds: int, k: int, meta: dict,
                records: Sequence[dict]) -> dict[str, Any]:
    cfg = specs[0].config if specs else None
    epochs = sorted({s.config.epochs for s in specs})
    wall = [inv["wall_time_s"] for inv in meta.get("invocations", [])]
    run_time = sum(float(r.get("wall_time_s") or 0.0) for r in records)
    cpu_time = sum(float(r.get("cpu_time_s") or 0.0) for r in records)
    splits = [r.get("split") for r in records if r.get("split")]
    return {
        "dataset": DATASET_LABEL,
        "backbone": _backbone_label(specs),
        "image_size": _image_size_label(specs),
        "folds": f"{folds} of a {k}-fold stratified partition (split_seed {cfg.split_seed if cfg else 0})",
        "seeds": list(seeds),
        "epochs": epochs,
        "optimiser": None if cfg is None else (f"{cfg.optimizer}, lr {cfg.lr:g}, momentum {cfg.momentum:g}, "
                                               f"weight decay {cfg.weight_decay:g}, lr x{cfg.lr_gamma:g} every "
                                               f"{cfg.lr_step} epochs, batches of {cfg.classes_per_batch} x "
                                               f"{cfg.samples_per_class}, select on val {cfg.select_on}"),
        "split_sizes": splits[0] if splits else None,
        "select_on": None if cfg is None else cfg.select_on,
        "wall_time_last_s": wall[-1] if wall else None,
        "wall_time_all_invocations_s": round(sum(wall), 1) if wall else None,
        "invocations": len(wall),
        "run_time_sum_s": round(run_time, 1),
        "cpu_time_sum_s": round(cpu_time, 1),
        "threads": (meta.get("invocations") or [{}])[-1].get("threads"),
        "commands": [inv.get("command") for inv in meta.get("invocations", []) if inv.get("command")],
    }


def _kendall_tau(a: Sequence[float], b: Sequence[float]) -> float | None:
    n = len(a)
    if n < 2:
        return None
    s = 0
    pairs = 0
    for i in range(n):
        for j in range(i + 1, n):
            x, y = a[i] - a[j], b[i] - b[j]
            if x == 0 or y == 0:
                continue
            pairs += 1
            s += 1 if (x > 0) == (y > 0) else -1
    return s / pairs if pairs else None


def paired_difference(a: dict, b: dict) -> dict[str, Any] | None:
    """Paired comparison of two variants run on the same folds and seeds: ``a`` and ``b`` map
    ``(fold, seed)`` (or ``"fold-seed"``) to a metric value. Seeds are averaged within a fold first (runs
    of one fold share their held-out images, so they are not independent), then the per-fold
    differences a - b give the mean, its standard error over folds, and how many folds a wins.

    Returns ``{"mean", "se", "n_folds", "wins"}``, or None with fewer than two common folds. Paired
    differences are far more sensitive than comparing each row's mean ± std: most of the spread between
    runs comes from which images are held out, and that part is shared by both variants.
    """
    def key(k):
        return tuple(int(x) for x in k.split("-")) if isinstance(k, str) else tuple(k)

    a = {key(k): v for k, v in a.items() if v is not None}
    b = {key(k): v for k, v in b.items() if v is not None}
    per_fold: dict[int, list[float]] = {}
    for k in sorted(set(a) & set(b)):
        per_fold.setdefault(k[0], []).append(float(a[k]) - float(b[k]))
    diffs = [sum(d) / len(d) for d in per_fold.values()]
    if len(diffs) < 2:
        return None
    mean, std = _mean_std(diffs)
    return {"mean": mean, "se": std / math.sqrt(len(diffs)), "n_folds": len(diffs),
            "wins": sum(d > 0 for d in diffs)}


def ordering_report(rows: Sequence[dict], metric: str = "mAP8") -> dict[str, Any]:
    """Compare our ordering of the variants with the paper's on ``metric``: Kendall tau and the pairs
    of variants ordered differently."""
    both = [r for r in rows if r.get("paper") and metric in r["paper"] and metric in r["mean"]]
    ours = [r["mean"][metric] for r in both]
    paper = [r["paper"][metric] for r in both]
    sign = -1 if metric in LOWER_IS_BETTER else 1
    swapped = []
    for i in range(len(both)):
        for j in range(i + 1, len(both)):
            d_ours, d_paper = sign * (ours[i] - ours[j]), sign * (paper[i] - paper[j])
            if d_ours * d_paper < 0:
                better_paper, worse_paper = (both[i], both[j]) if d_paper > 0 else (both[j], both[i])
                swapped.append((better_paper["variant"], worse_paper["variant"]))
    return {"metric": metric, "n": len(both), "kendall_tau": _kendall_tau(ours, paper), "swapped": swapped,
            "ours_order": [r["variant"] for r in sorted(both, key=lambda r: -sign * r["mean"][metric])],
            "paper_order": [r["variant"] for r in sorted(both, key=lambda r: -sign * r["paper"][metric])]}


def write_summary(out_dir: Path, experiment: Experiment, rows: Sequence[dict], info: dict[str, Any]) -> None:
    """Write ``summary.csv`` (one line per variant) and ``summary.md`` (ours beside the paper's)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = (["experiment", "variant", "label", "n_runs", "folds", "seeds", "epochs", "mean_chosen_epoch"]
              + [f"{m}_mean" for m in METRICS] + [f"{m}_std" for m in METRICS]
              + ["paper_table", "paper_method"] + [f"paper_{m}" for m in PAPER_METRICS] + ["run_time_s"])
    with open(out_dir / "summary.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in rows:
            ref = r.get("paper_ref") or [None, None]
            paper = r.get("paper") or {}
            ep = r.get("chosen_epochs") or []
            w.writerow([experiment.name, r["variant"], r["label"], r["n_runs"], " ".join(map(str, r["folds"])),
                        " ".join(map(str, r["seeds"])), " ".join(map(str, info.get("epochs") or [])),
                        round(sum(ep) / len(ep), 1) if ep else ""]
                       + [_fmt(r["mean"].get(m), 6) if m in r["mean"] else "" for m in METRICS]
                       + [_fmt(r["std"].get(m), 6) if m in r["std"] else "" for m in METRICS]
                       + [ref[0] or "", ref[1] or ""] + [paper.get(m, "") for m in PAPER_METRICS]
                       + [r.get("run_time_s", "")])

    lines = [f"# {experiment.title}", ""]
    if experiment.description:
        lines += [experiment.description, ""]
    wall = info.get("wall_time_last_s")
    lines += [
        f"- Dataset: **{info['dataset']}**. Protocol: each held-out fold queries the training folds (minus the "
        f"validation part carved from them); the epoch is chosen on that validation part only; the held-out "
        f"fold is evaluated once."
        + (f" Split sizes (train / val / held-out) of a run: {info['split_sizes'].get('train')} / "
           f"{info['split_sizes'].get('val')} / {info['split_sizes'].get('test')}." if info.get("split_sizes") else ""),
        f"- Backbone: **{info['backbone']}**; image size {info['image_size']}.",
        f"- Folds: {info['folds']}; seeds: {', '.join(map(str, info['seeds']))}; epochs: "
        f"{', '.join(map(str, info['epochs']))} (every run of this experiment).",
        f"- Optimisation: {info['optimiser']}.",
        f"- Numbers: mean ± std (sample std) over the runs (folds x seeds); ANMRR lower is better. "
        f"Rows marked **{PAPER_LABEL}** are the papers' numbers (full FI, ResNet-50 fine-tuned end to end; "
        f"no F1 printed), beside ours (**{OURS_LABEL}**): the settings differ, so compare orderings, not values.",
        f"- Wall time: {_fmt(info.get('wall_time_all_invocations_s'), 0)} s in total over {info.get('invocations')} "
        f"invocation(s) (meta.json; the last: {_fmt(wall, 0)} s); {_fmt(info.get('run_time_sum_s'), 0)} s summed "
        f"over the runs in this table ({_fmt(info.get('cpu_time_sum_s'), 0)} s CPU time, torch threads "
        f"{info.get('threads')}; runs shared with other experiments count here too).",
    ]
    if info.get("commands"):
        lines.append(f"- Command: `{info['commands'][-1]}`")
    select = info.get("select_on", "mAP8")
    lines += ["", f"| variant | source | runs | val {select} | " + " | ".join(METRICS) + " |",
              "|---|---|---|---|" + "---|" * len(METRICS)]
    for r in rows:
        cells = [(f"{r['mean'][m]:.4f} ± {r['std'][m]:.4f}" if m in r["mean"] else "—") for m in METRICS]
        val = _fmt(r.get("val_mean", {}).get(select)) if r.get("val_mean", {}).get(select) is not None else "—"
        lines.append(f"| {r['label']} | {OURS_LABEL} | {r['n_runs']} | {val} | " + " | ".join(cells) + " |")
        if r.get("paper"):
            pcells = [_fmt(r["paper"].get(m)) for m in METRICS]
            lines.append(f"|  | {PAPER_LABEL} |  |  | " + " | ".join(pcells) + " |")
    floor_rows = [r for r in rows if r.get("floor") and r["mean"]]
    if floor_rows:
        best = {m: max(r["mean"][m] for r in floor_rows if m in r["mean"]) for m in ("mAP8", "mAP2")}
        beat = [r["label"] for r in rows if not r.get("floor") and r["mean"]
                and all(r["mean"].get(m, -1) > best[m] for m in best)]
        # the floor's features are frozen, or those of the backbone fine-tuned with it (regime finetune)
        pooled = ("GAP(conv5) features, fine-tuned with it" if "fine-tuned" in str(info.get("backbone", ""))
                  else "frozen GAP(conv5) features")
        lines += ["", f"Floor: the best trained linear 512-d head on {pooled} (rows marked "
                      f"'linear floor'): mAP8 {best['mAP8']:.4f}, mAP2 {best['mAP2']:.4f}. Rows above it on both "
                      f"(means; see the std before calling a difference real): "
                      + (", ".join(beat) if beat else "none") + "."]
    lines += ["", f"The val {select} column is the mean over the runs of the validation score at the chosen epoch "
                  "(the validation parts carved from the training folds): the only number a choice between rows "
                  "may use. The metric columns are the held-out folds."]
    notes = [r for r in rows if r.get("note")]
    if notes:
        lines += [""] + [f"- {r['label']}: {r['note']}." for r in notes]
    refs = {tuple(r["paper_ref"]) for r in rows if r.get("paper_ref")}
    tables = sorted({t for t, _ in refs} | set(experiment.paper_tables))
    if tables:
        lines += ["", "Paper sources:"]
        for t in tables:
            tab = TABLES[t]
            lines.append(f"- {tab['title']}: {tab['source']} {tab['note']}")
    for metric in ("mAP8", "mAP2"):
        rep = ordering_report(rows, metric)
        if rep["n"] >= 3:
            tau = rep["kendall_tau"]
            lines += ["", f"Ordering by {metric} ({rep['n']} variants with a paper row): Kendall tau ours vs paper "
                          f"= {_fmt(tau, 2)}.",
                      f"- ours: {' > '.join(rep['ours_order'])}",
                      f"- paper: {' > '.join(rep['paper_order'])}"]
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------------
# experiment-specific outputs
# ----------------------------------------------------------------------------------------------------
def plot_lambda(out_dir: Path, experiment: Experiment, rows: Sequence[dict], info: dict[str, Any]) -> Path | None:
    """results/lambda/lambda.png: mAP8 and mAP2 vs lambda, mean ± std band, paper's lambda = 0.5 points."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r["param"] is not None and "mAP8" in r["mean"]]
    if not pts:
        return None
    lam = [float(r["param"]) for r in pts]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, metric in zip(axes, ("mAP8", "mAP2")):
        mean = [r["mean"][metric] for r in pts]
        std = [r["std"][metric] for r in pts]
        ax.plot(lam, mean, "o-", color="#1f77b4", label=OURS_LABEL)
        ax.fill_between(lam, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color="#1f77b4", alpha=0.2, label="± 1 std over runs")
        for prow, marker in zip(TABLES["lambda-figure"]["rows"], ("s", "D")):
            ax.plot([prow["lam"]], [prow["values"][metric]], marker, color="#d62728", ms=6,
                    label=f"{PAPER_LABEL}: {prow['method'].split(',')[0]}")
        ax.set_xlabel("lambda (weight of the embedding loss)")
        ax.set_title(metric)
        ax.set_xticks(lam)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{DATASET_LABEL}, {info['folds'].split(' of')[0]} folds, epochs {info['epochs'][0]}; "
                 "paper curves not published as numbers", fontsize=8)
    fig.tight_layout()
    path = Path(out_dir) / "lambda.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _settings_line(info: dict[str, Any]) -> str:
    return f"{info['dataset']}; {info['backbone']}; {info['folds']}; seeds {', '.join(map(str, info['seeds']))}."


def report_attention(out_dir: Path, experiment: Experiment, rows: Sequence[dict], info: dict[str, Any]) -> Path:
    """results/attention/attention.md: the heads' accuracy and confidence per variant, and the choice on
    validation mAP8: the papers' row unless another beats it by more than two standard errors of the
    paired difference (the one the base config should use)."""
    select = info.get("select_on") or "mAP8"
    lines = [f"# {experiment.title}: the heads", "",
             _settings_line(info),
             "Accuracy of the heads' argmax and mean top confidence (uniform: 0.5 for polarity, 0.125 for emotion), "
             "averaged over the runs; val = the validation parts, held-out = the held-out folds.", "",
             "| variant | val " + select + " | polarity acc (val / held-out) | polarity top conf (held-out) "
             "| emotion acc (val / held-out) | emotion top conf (held-out) | held-out mAP8 | held-out mAP2 |",
             "|---|---|---|---|---|---|---|---|"]
    a = lambda r, k: _fmt(r["attention"].get(k), 3)  # noqa: E731
    for r in rows:
        lines.append(f"| {r['label']} | {_fmt(r['val_mean'].get(select))} | {a(r, 'val_polarity_accuracy')} / "
                     f"{a(r, 'test_polarity_accuracy')} | {a(r, 'test_polarity_top_confidence')} | "
                     f"{a(r, 'val_emotion_accuracy')} / {a(r, 'test_emotion_accuracy')} | "
                     f"{a(r, 'test_emotion_top_confidence')} | {_fmt(r['mean'].get('mAP8'))} | "
                     f"{_fmt(r['mean'].get('mAP2'))} |")
    # The papers' row stays the choice unless another beats it on validation by more than two standard
    # errors of the paired (same fold and seed) difference: the validation parts are ~30 images each.
    sign = -1 if select in LOWER_IS_BETTER else 1
    papers = next((r for r in rows if r["variant"] == "mask-sum"), None)
    chosen, margin, lines_diff = papers, 0.0, []
    for r in rows:
        if papers is None or r is papers:
            continue
        d = paired_difference({k: v.get(select) for k, v in r["val_runs"].items()},
                              {k: v.get(select) for k, v in papers["val_runs"].items()})
        if d is None:
            continue
        gain = sign * d["mean"]
        wins = gain > 2 * d["se"]
        lines_diff.append(f"- {r['label']}: validation {select} minus the papers' row, paired over {d['n_folds']} folds: "
                          f"{d['mean']:+.4f} ± {d['se']:.4f} (SE){' — better beyond 2 SE' if wins else ''}")
        if wins and gain > margin:
            chosen, margin = r, gain
    if papers is not None:
        lines += ["", *lines_diff, "",
                  f"Choice (validation only; the papers' row stays unless another beats it by more than two standard "
                  f"errors): **{chosen['label']}** (`{chosen['variant']}`)."]
    path = Path(out_dir) / "attention.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def report_lr(out_dir: Path, experiment: Experiment, rows: Sequence[dict], info: dict[str, Any]) -> Path:
    """results/lr/lr.md: per loss, the lr with the best mean validation mAP8, and its held-out metrics
    beside those at the shared lr 0.2 of the other experiments."""
    select = info.get("select_on") or "mAP8"
    sign = -1 if select in LOWER_IS_BETTER else 1
    by_loss: dict[str, list[dict]] = {}
    for r in rows:
        if r["param"] is not None and r["val_mean"].get(select) is not None:
            by_loss.setdefault(r["param"][0], []).append(r)
    lines = [f"# {experiment.title}", "",
             f"{_settings_line(info)} The lr is chosen per loss on the mean validation {select}; held-out numbers are mean ± std over the runs.",
             "", f"| loss | lr chosen | val {select} | held-out mAP8 | held-out mAP2 | at lr 0.2: held-out mAP8 | "
                 "at lr 0.2: held-out mAP2 |", "|---|---|---|---|---|---|---|"]
    cell = lambda r, m: f"{r['mean'][m]:.4f} ± {r['std'][m]:.4f}" if m in r["mean"] else "—"  # noqa: E731
    for loss, cands in by_loss.items():
        best = max(cands, key=lambda r: sign * r["val_mean"][select])
        shared = next((r for r in cands if r["param"][1] == 0.2), None)
        lines.append(f"| {loss} | {best['param'][1]:g} | {best['val_mean'][select]:.4f} | {cell(best, 'mAP8')} | "
                     f"{cell(best, 'mAP2')} | {cell(shared, 'mAP8') if shared else '—'} | "
                     f"{cell(shared, 'mAP2') if shared else '—'} |")
    path = Path(out_dir) / "lr.md"
    path.write_text("\n".join(lines) + "\n")
    return path


EXTRAS: dict[str, Callable] = {"lambda": plot_lambda, "attention": report_attention, "lr": report_lr}


# ----------------------------------------------------------------------------------------------------
# figures: attention maps, top-5 retrievals (N-pair vs APSE), failure cases
# ----------------------------------------------------------------------------------------------------
def _save_small_png(fig, path: Path, dpi: int = 64) -> None:
    """Save a figure as a small PNG: rendered at a low dpi, then quantised to a 256-colour palette."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    buf.seek(0)
    Image.open(buf).convert("RGB").quantize(colors=256).save(path, optimize=True)


def _thumb(path: str, size: int = 80):
    """A small square thumbnail of an image file (what the figures show; keeps the PNGs small)."""
    from PIL import ImageOps

    from apse.data import load_rgb

    return ImageOps.fit(load_rgb(path), (size, size))


def _top_k(query_emb, gallery_emb, k: int):
    import torch

    from apse.metrics import pairwise_distances

    d = pairwise_distances(query_emb, gallery_emb)
    return torch.sort(d, dim=1, stable=True).indices[:, :k]


def make_figures(*, results_dir: str | os.PathLike = DEFAULT_RESULTS, base: str | os.PathLike = DEFAULT_BASE,
                 data: str | None = None, overrides: dict | None = None, fold: int = 0, seed: int = 0,
                 n_queries: int = 4, command: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Train N-pair and APSE (GEP) on the training folds of ``fold`` and draw, for held-out queries:

    * ``attention_maps.png``: image, polarity-specific (low) and emotion-specific (high) attention map
      of APSE (TMM Fig. 7) for ``n_queries`` held-out images;
    * ``retrievals_npair_vs_apse.png``: the same ``n_queries`` queries, top-5 of N-pair then of APSE
      (TMM Fig. 8); frames: green = same emotion, blue = same polarity, red = opposite polarity;
    * ``failure_cases.png``: the held-out queries whose APSE top-3 holds the most opposite-polarity
      images (TMM Fig. 9).

    The queries are drawn at random (seeded), two of each polarity, not picked for looking good.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from apse import plotting
    from apse.config import load_config
    from apse.data import build_transforms
    from apse.emotions import emotion_name, polarity_of
    from apse.evaluation import embed_dataset
    from apse.training import Trainer

    t_start = time.time()
    out_dir = Path(results_dir) / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    experiment = get_experiment("figures")
    base_cfg = load_config(base)
    run_overrides = {"device": "cpu", **(overrides or {})}
    ctx = _Context(data)
    dataset = ctx.dataset
    trained = {}
    for variant in experiment.variants:
        cfg = base_cfg.replace(**{**experiment.overrides, **variant.overrides, **run_overrides, "folds": K_FOLDS, "fold": fold,
                                  "seed": seed, "protocol": "split"})
        log(f"[figures] training {variant.name} on the training folds of fold {fold} ...")
        trainer = Trainer(cfg, dataset, None, progress=False)
        results = trainer.fit()
        gallery, g_labels = embed_dataset(trainer.model, trainer.gallery_set, progress=False)
        queries, q_labels = embed_dataset(trainer.model, trainer.test_set, progress=False)
        trained[variant.name] = dict(trainer=trainer, config=cfg, gallery=gallery, queries=queries,
                                     test_metrics=results["test_metrics"], chosen_epoch=results["chosen_epoch"])
        log(f"    test mAP8 {results['test_metrics']['mAP8']:.4f}  mAP2 {results['test_metrics']['mAP2']:.4f}")
    apse_run, npair_run = trained["apse-gep"], trained["npair"]
    trainer = apse_run["trainer"]
    samples = dataset.samples
    gallery_idx, test_idx = trainer.split["train"], trainer.split["test"]
    q_labels = [samples[i][1] for i in test_idx]
    g_labels = [samples[i][1] for i in gallery_idx]

    rng = np.random.default_rng(seed)
    picks = []
    for pol in (0, 1):
        pool = [j for j, y in enumerate(q_labels) if polarity_of(y) == pol]
        picks += sorted(rng.choice(pool, size=n_queries // 2, replace=False).tolist())
    files = {}

    # --- attention maps (APSE) ---
    model = trainer.model.eval()
    tf = build_transforms(False, image_size=apse_run["config"].image_size, resize=apse_run["config"].resize,
                          mean=tuple(model.backbone.mean), std=tuple(model.backbone.std))
    from apse.data import load_rgb

    images = torch.stack([tf(load_rgb(samples[test_idx[j]][0])) for j in picks])
    with torch.no_grad():
        out = model(images)
    fig, axes = plt.subplots(len(picks), 3, figsize=(3 * 1.6, len(picks) * 1.7), squeeze=False)
    for row, j in enumerate(picks):
        img = images[row]
        mean, std = tuple(model.backbone.mean), tuple(model.backbone.std)
        axes[row, 0].imshow(plotting.to_image(img, mean, std))
        plotting._blank(axes[row, 0])
        p = out.polarity_confidence[row]
        e = out.emotion_confidence[row]
        axes[row, 0].set_title(f"{emotion_name(q_labels[j])}", fontsize=7)
        plotting.overlay_attention(img, out.polarity_map[row], ax=axes[row, 1], mean=mean, std=std,
                                   title=f"polarity map (p+ {float(p[0]):.2f})")
        plotting.overlay_attention(img, out.emotion_map[row], ax=axes[row, 2], mean=mean, std=std,
                                   title=f"emotion map ({emotion_name(int(e.argmax()))} {float(e.max()):.2f})")
        for ax in axes[row, 1:]:
            ax.title.set_fontsize(6)
    fig.suptitle(f"APSE attention, {DATASET_LABEL}, held-out fold {fold}", fontsize=8)
    fig.tight_layout()
    files["attention_maps"] = out_dir / "attention_maps.png"
    _save_small_png(fig, files["attention_maps"], dpi=72)
    plt.close(fig)

    # --- top-5 retrievals, N-pair vs APSE, same queries ---
    thumbs: dict[int, Any] = {}

    def thumb(dataset_index: int):
        if dataset_index not in thumbs:
            thumbs[dataset_index] = _thumb(samples[dataset_index][0])
        return thumbs[dataset_index]

    rows_q, rows_ql, rows_res, rows_rl, names = [], [], [], [], []
    hits: dict[str, list[int]] = {"N-pair": [], "APSE": []}
    tops = {name: _top_k(run["queries"][picks], run["gallery"], 5)
            for name, run in (("N-pair", npair_run), ("APSE", apse_run))}
    for row, j in enumerate(picks):        # each query twice: N-pair's top 5, then APSE's
        for name in ("N-pair", "APSE"):
            res = [gallery_idx[int(t)] for t in tops[name][row]]
            rows_q.append(thumb(test_idx[j]))
            rows_ql.append(q_labels[j])
            rows_res.append([thumb(r) for r in res])
            rows_rl.append([samples[r][1] for r in res])
            names.append(name)
            hits[name].append(sum(samples[r][1] == q_labels[j] for r in res))
    fig = plotting.plot_retrievals(rows_q, rows_ql, rows_res, rows_rl, row_names=names, size=1.1)
    fig.suptitle(f"Top-5 on {DATASET_LABEL}, held-out fold {fold}: N-pair vs APSE, same queries", fontsize=8)
    fig.subplots_adjust(top=0.93)
    files["retrievals"] = out_dir / "retrievals_npair_vs_apse.png"
    _save_small_png(fig, files["retrievals"])
    plt.close(fig)

    # --- failure cases: most opposite-polarity images in APSE's top-3 ---
    top3 = _top_k(apse_run["queries"], apse_run["gallery"], 3)
    opp = [sum(polarity_of(g_labels[int(t)]) != polarity_of(q_labels[j]) for t in top3[j])
           for j in range(len(test_idx))]
    worst = sorted(range(len(test_idx)), key=lambda j: (-opp[j], j))[:3]
    fig = plotting.plot_retrievals([thumb(test_idx[j]) for j in worst], [q_labels[j] for j in worst],
                                   [[thumb(gallery_idx[int(t)]) for t in top3[j]] for j in worst],
                                   [[g_labels[int(t)] for t in top3[j]] for j in worst], size=1.3)
    fig.suptitle(f"APSE failure cases: most opposite-polarity images in the top 3 ({DATASET_LABEL})", fontsize=8)
    fig.subplots_adjust(top=0.85)
    files["failure_cases"] = out_dir / "failure_cases.png"
    _save_small_png(fig, files["failure_cases"])
    plt.close(fig)

    # --- how far the attention heads trained: their confidences on every held-out image ---
    feats, y_test = trainer.test_set.dataset.get_batch(trainer.test_set.indices)
    with torch.no_grad():
        out_all = model.forward_features(feats)
        low_logits = model.low_head(feats[model.low_stage]).logits
        high_logits = model.high_head(feats[model.high_stage]).logits
    pc, ec = out_all.polarity_confidence, out_all.emotion_confidence
    heads = {
        "polarity_confidence_range": [round(float(pc[:, 0].min()), 4), round(float(pc[:, 0].max()), 4)],
        "polarity_max_confidence_mean": round(float(pc.max(1).values.mean()), 4),
        "polarity_argmax_accuracy": round(float((pc.argmax(1) == (y_test >= 4).long()).float().mean()), 4),
        "polarity_logit_std": round(float(low_logits.std()), 5),
        "emotion_max_confidence_mean": round(float(ec.max(1).values.mean()), 4),
        "emotion_argmax_accuracy": round(float((ec.argmax(1) == y_test).float().mean()), 4),
        "emotion_logit_std": round(float(high_logits.std()), 5),
        "uniform_confidences": {"polarity": 0.5, "emotion": 0.125},
    }

    wall = time.time() - t_start
    rel = lambda i: os.path.relpath(samples[i][0], dataset.root) if hasattr(dataset, "root") else samples[i][0]  # noqa: E731
    summary = {
        "dataset": DATASET_LABEL, "backbone": BACKBONE_LABEL, "fold": fold, "seed": seed,
        "epochs": apse_run["config"].epochs, "image_size": apse_run["config"].image_size,
        "test_metrics": {k: _round(v["test_metrics"], 4) for k, v in trained.items()},
        "chosen_epoch": {k: v["chosen_epoch"] for k, v in trained.items()},
        "queries": [rel(test_idx[j]) for j in picks],
        "top5_same_emotion_hits": hits,
        "failure_queries": [rel(test_idx[j]) for j in worst],
        "failure_opposite_in_top3": [opp[j] for j in worst],
        "opposite_polarity_in_top3_all_queries": {"APSE": round(float(np.mean(opp)), 4)},
        "apse_attention_heads_on_held_out": heads,
        "files": {k: str(v.relative_to(results_dir)) for k, v in files.items()},
        "wall_time_s": round(wall, 1), "command": command,
    }
    top3n = _top_k(npair_run["queries"], npair_run["gallery"], 3)
    summary["opposite_polarity_in_top3_all_queries"]["N-pair"] = round(float(np.mean(
        [sum(polarity_of(g_labels[int(t)]) != polarity_of(q_labels[j]) for t in top3n[j]) for j in range(len(test_idx))])), 4)
    _write_json(out_dir / "figures.json", summary)
    lines = [f"# {experiment.title}", "",
             f"- Dataset: **{DATASET_LABEL}**; backbone: **{BACKBONE_LABEL}**; image size "
             f"{apse_run['config'].image_size} px; held-out fold {fold} of {K_FOLDS}; seed {seed}; epochs "
             f"{apse_run['config'].epochs} (epoch chosen on the validation part: N-pair {npair_run['chosen_epoch']}, "
             f"APSE {apse_run['chosen_epoch']}).",
             f"- Held-out fold {fold} test mAP8 / mAP2: N-pair {npair_run['test_metrics']['mAP8']:.4f} / "
             f"{npair_run['test_metrics']['mAP2']:.4f}; APSE {apse_run['test_metrics']['mAP8']:.4f} / "
             f"{apse_run['test_metrics']['mAP2']:.4f}.",
             f"- Queries drawn at random (seed {seed}), {n_queries // 2} per polarity; same queries for both "
             f"models. Same-emotion hits in the top 5: N-pair {hits['N-pair']}, APSE {hits['APSE']}.",
             f"- Mean number of opposite-polarity images in the top 3 over all held-out queries: N-pair "
             f"{summary['opposite_polarity_in_top3_all_queries']['N-pair']}, APSE "
             f"{summary['opposite_polarity_in_top3_all_queries']['APSE']}.",
             f"- APSE's attention heads on the {len(test_idx)} held-out images (uniform would be 0.5 / 0.125): "
             f"polarity confidence p+ in [{heads['polarity_confidence_range'][0]}, {heads['polarity_confidence_range'][1]}] "
             f"(logit std {heads['polarity_logit_std']}, argmax accuracy {heads['polarity_argmax_accuracy']}); "
             f"emotion max confidence {heads['emotion_max_confidence_mean']} on average (argmax accuracy "
             f"{heads['emotion_argmax_accuracy']}). Near-uniform confidences make the WEP weights and GEP's adaptive "
             "beta nearly constant; the maps are min-max normalised, so they still show a shape.",
             f"- Wall time: {wall:.0f} s" + (f"; command: `{command}`" if command else "") + ".",
             "", "Files: " + ", ".join(f"`{p.name}`" for p in files.values()) + ".",
             "The PNGs show small thumbnails of FI images (research use only; see data/README.md)."]
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    log(f"[figures] done in {wall:.0f}s: {', '.join(str(p) for p in files.values())}")
    return summary


# ----------------------------------------------------------------------------------------------------
# index of all results
# ----------------------------------------------------------------------------------------------------
def write_index(results_dir: str | os.PathLike = DEFAULT_RESULTS) -> Path:
    """``results/README.md``: every experiment's command, time, and mAP8 / mAP2 beside the paper's."""
    results_dir = Path(results_dir)
    lines = ["# Results: the papers' experiments re-run on the FI subset", "",
             f"Dataset **{DATASET_LABEL}**, backbone **{BACKBONE_LABEL}**. Produced by `python -m apse.experiments "
             "NAME` (see `apse/experiments.py`); each folder holds `summary.md` (all 8 metrics, mean ± std, the "
             "settings), `summary.csv`, `meta.json` (invocations, wall and CPU time) and `runs/` (one small JSON per "
             "run: variant x held-out fold x seed). Paper numbers: `apse/paper_results.py`, marked "
             f"\"{PAPER_LABEL}\". The settings differ from the papers' (3% of FI, frozen small backbone, 20 epochs), "
             "so compare orderings, not values.", ""]
    total_wall = total_cpu = 0.0
    for name in ORDER:
        d = results_dir / name
        meta = _read_json(d / "meta.json") or {}
        invs = meta.get("invocations", [])
        wall = sum(float(i.get("wall_time_s") or 0) for i in invs)
        cpu = sum(float(i.get("cpu_time_s") or 0) for i in invs)
        if name == "figures":
            fj = _read_json(d / "figures.json")
            if fj:
                wall = cpu = float(fj.get("wall_time_s") or 0)
                lines += [f"## figures", "", f"`{fj.get('command')}`: {wall:.0f} s. PNGs: "
                          + ", ".join(f"[{Path(v).name}]({name}/{Path(v).name})" for v in fj["files"].values()) + ".", ""]
                total_wall += wall
                total_cpu += cpu
            continue
        if not (d / "summary.csv").is_file():
            continue
        total_wall += wall
        total_cpu += cpu
        with open(d / "summary.csv") as fh:
            rows = list(csv.DictReader(fh))
        title = get_experiment(name).title
        cmds = [i.get("command") for i in invs if i.get("command")]
        lines += [f"## [{name}]({name}/summary.md): {title}", "",
                  f"Command: `{cmds[-1] if cmds else 'python -m apse.experiments ' + name}`; "
                  f"{rows[0]['n_runs'] if rows else '?'} run(s) per row (folds: {rows[0]['folds'] if rows else '?'}), "
                  f"epochs {rows[0]['epochs'] if rows else '?'}; wall time {wall:.0f} s, CPU time {cpu:.0f} s "
                  f"(all invocations).", "",
                  f"| variant | mAP8 ours | mAP2 ours | mAP8 {PAPER_LABEL} | mAP2 {PAPER_LABEL} |", "|---|---|---|---|---|"]
        for r in rows:
            ours = [f"{float(r[m + '_mean']):.4f} ± {float(r[m + '_std']):.4f}" if r.get(m + "_mean") else "—"
                    for m in ("mAP8", "mAP2")]
            paper = [f"{float(r['paper_' + m]):.4f}" if r.get("paper_" + m) else "—" for m in ("mAP8", "mAP2")]
            lines.append(f"| {r['label']} | {ours[0]} | {ours[1]} | {paper[0]} | {paper[1]} |")
        lines.append("")
    lines += [f"Total: {total_wall / 60:.1f} min wall, {total_cpu / 60:.1f} min CPU over the experiments above."]
    path = results_dir / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------
def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m apse.experiments", description=__doc__.split("\n\n")[0])
    p.add_argument("name", help=f"experiment: {', '.join(EXPERIMENTS)}, 'all' (in the order {', '.join(ORDER)}), "
                                "or 'index' (write results/README.md from the summaries)")
    p.add_argument("--folds", type=int, default=None, help="held-out folds to run (of the 5-fold partition); "
                                                           "default: the experiment's (5 or 3)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--force", action="store_true", help="re-run runs found in the cache")
    p.add_argument("--results", default=str(DEFAULT_RESULTS), help="results folder (default: results/)")
    p.add_argument("--config", default=str(DEFAULT_BASE), help="base config (default: configs/fi-subset-cpu.yaml)")
    p.add_argument("--data", default=None, help="dataset folder (default: apse.data.locate_dataset())")
    p.add_argument("--epochs", type=int, default=None, help="epochs for every run (default: the base config's)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="further config overrides")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the heads are small, and on 2 busy cores one thread ran an "
                        "APSE epoch 4x faster than two)")
    p.add_argument("--regime", choices=REGIMES, default="frozen",
                   help="frozen: the base config's cached features (default); finetune: every layer "
                        "trained on images (configs/fi-subset-finetune-cpu.yaml), into results/NAME-finetune")
    p.add_argument("--only", nargs="+", default=None, metavar="VARIANT",
                   help="run these variants of the experiment only (its summary then lists only them)")
    p.add_argument("--only-folds", nargs="+", type=int, default=None, metavar="FOLD",
                   help="run these held-out folds only (0-based; with --folds 5 unless --folds is given)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether they are cached")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.name == "index":
        print(write_index(args.results))
        return 0
    names = list(ORDER) if args.name == "all" else [args.name]
    for n in names:
        get_experiment(n)  # validates the name
    overrides: dict[str, Any] = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.set:
        from apse.config import apply_overrides, load_config

        # typed values (dicts, nulls, booleans) exactly as `python -m apse train KEY=VALUE` reads them
        # (on the base config in the chosen regime, whose settings the overrides may presuppose)
        in_regime = load_config(args.config).replace(**regime_overrides(args.regime))
        typed = apply_overrides(in_regime, args.set).to_dict()
        for item in args.set:
            key = item.split("=", 1)[0].strip()
            overrides[key] = typed[key]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    command = "python -m apse.experiments " + " ".join(sys.argv[1:] if argv is None else list(argv))
    for n in names:
        if args.dry_run:
            from apse.config import load_config

            exp = get_experiment(n)
            specs = expand(exp, load_config(args.config), folds=args.folds, seeds=args.seeds,
                           overrides={"device": "cpu", **regime_overrides(args.regime), **overrides})
            for s in specs:
                hit = _find_cached(Path(args.results), s)
                print(f"{n}: {s.filename}  {'cached' if hit else 'to run'}")
            continue
        if n == "figures":
            make_figures(results_dir=args.results, base=args.config, data=args.data, overrides=overrides,
                         command=command)
            continue
        run_experiment(n, folds=args.folds, seeds=args.seeds, force=args.force, results_dir=args.results,
                       base=args.config, data=args.data, overrides=overrides, command=command,
                       regime=args.regime, only=args.only, only_folds=args.only_folds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
