"""The experiments' definitions: variants, experiments, and the registry the runner and the CLI read.

An *experiment* is a list of named variants; a *variant* is a set of overrides on the CPU base config.
Each experiment is one function returning an :class:`Experiment`, registered with
:func:`register_experiment` under its name (the CLI's choices, :func:`get_experiment`) and its place
in ``python -m apse.experiments all`` (:data:`ORDER`). Adding an experiment is one such function here.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

from apse.backbones import LITE_VARIANTS, NATIVE_RESOLUTION, STAGES
from apse.registry import Registry

__all__ = ["Variant", "Experiment", "EXPERIMENTS", "ORDER", "K_FOLDS", "BUDGET_OVERRIDES", "register_experiment",
           "get_experiment", "run_order", "FLOOR", "LR_GRID", "CORE_ROWS", "BACKBONE_GRID", "BACKBONE_ROWS",
           "SCALE_ROWS", "CURVE_ROWS", "CURVE_FRACTIONS", "CURVE_DATA", "TUNING_TRIALS", "TUNING_ROWS",
           "tuning_space"]

K_FOLDS = 5
#: What every experiment changes in the base config, for the CPU budget (2 shared cores, about an hour
#: for all tables): 20 epochs with the lr step at 15 instead of the base config's 40 / 30. Measured on
#: held-out fold 0: APSE's best validation epoch came before the lr step anyway (epoch 24 of 40).
BUDGET_OVERRIDES = {"epochs": 20, "lr_step": 15}


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
    #: the data set, as apse.data.open_data names it; None = the FI subset (the book's default).
    #: Another data set is part of each run's key, so its runs never share a file with FI's.
    data: Optional[str] = None
    #: metrics its runs must record: a run cached by another experiment before one of them was
    #: registered is trained again here instead of being reused (user-view: Opp@5).
    metrics: tuple[str, ...] = ()


#: name -> the function that builds the experiment, in the order of registration (the CLI lists them so).
EXPERIMENTS: Registry[Callable[[], "Experiment"]] = Registry("experiment")
#: name -> its position in ``python -m apse.experiments all``.
_RUN_ORDER: dict[str, int] = {}


def register_experiment(name: str, *, order: int) -> Callable[[Callable[[], Experiment]], Callable[[], Experiment]]:
    """Register the decorated function as experiment ``name``, run at position ``order`` by ``all``."""
    def register(build: Callable[[], Experiment]) -> Callable[[], Experiment]:
        EXPERIMENTS.register(name, build)
        _RUN_ORDER[name] = order
        return build
    return register


def get_experiment(name: str) -> Experiment:
    """The experiment registered as ``name``; ValueError listing the valid names otherwise."""
    return EXPERIMENTS[name]()


def run_order() -> tuple[str, ...]:
    """The registered experiments in the order ``all`` runs them."""
    return tuple(sorted(EXPERIMENTS, key=lambda n: _RUN_ORDER[n]))


# Baselines of Table 1 use the papers' baseline network: GAP of the last stage, a linear map to 512
# (the papers' baselines retrieve with 2048-d ResNet GAP features), no attention heads.
_SO = {"attention": "none", "fusion": "single"}
_HA_CLB = {"attention": "hierarchical", "fusion": "clb"}

FLOOR = Variant("floor", "untrained linear 512-d head on GAP features (random projection)", {**_SO, "loss": "npair"},
                None, untrained=True,
                note="never trained: a random linear map of GAP(conv5) to 512-d, l2-normalised; what the ImageNet "
                     "features alone retrieve")


@register_experiment("table1", order=3)
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


@register_experiment("ablation", order=2)
def _ablation() -> Experiment:
    t = "tmm-table2"
    # "AT" without SA/HA is, in the papers, two softmax classifiers on conv3 and conv5 whose gradients
    # reach the embedding only through the shared, fine-tuned backbone. With a frozen backbone such
    # classifiers share no parameter with the embedding head and cannot change it: "AT + X" without
    # attention is exactly "X" there. Those rows are therefore the same runs as the rows without AT (the
    # run cache shares them), and the MO ones are the multi-level (concatenated GAP) nets without heads;
    # fine-tuned (--regime finetune) they are still the runs without AT, which is no longer the same.
    frozen_at = ("no attention head at all (attention none), in either regime, so this is the run without AT; "
                 "with a frozen backbone that equals AT without SA/HA (which would share no parameter with the "
                 "embedding), fine-tuned it does not (the papers' AT would also train the shared backbone)")
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


@register_experiment("beta", order=4)
def _beta() -> Experiment:
    t = "tmm-table3"
    rows = [Variant(f"beta-{b:g}", f"beta fixed = {b:g}", {**_HA_CLB, "loss": "apse", "beta": b},
                    (t, f"beta = {b:g}"), param=b) for b in (0.0, 0.2, 0.4, 0.6, 0.8)]
    rows.append(Variant("beta-adaptive", "beta adaptive, exp(-w_ij) (APSE)", {**_HA_CLB, "loss": "apse", "beta": None},
                        (t, "adaptive (ours)"), param="adaptive"))
    return Experiment("beta", "GEP: fixed vs adaptive beta (TMM Table III)", tuple(rows),
                      paper_tables=("tmm-table3",))


@register_experiment("lambda", order=5)
def _lambda() -> Experiment:
    rows = [Variant(f"lam-{lam:.1f}", f"lambda = {lam:.1f}", {**_HA_CLB, "loss": "apse", "lam": lam},
                    ("lambda-figure", "TMM (GEP), lambda = 0.5") if abs(lam - 0.5) < 1e-9 else None, param=lam)
            for lam in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)]
    return Experiment("lambda", "Effect of lambda (ICCV Fig. 5 / TMM Fig. 6)", tuple(rows),
                      paper_tables=("lambda-figure",))


@register_experiment("layers", order=6)
def _layers() -> Experiment:
    t = "tmm-table4"
    rows = []
    for stage in STAGES:
        for att, tag in (("polarity", "p"), ("emotion", "e")):
            rows.append(Variant(f"{stage}{tag}-conv5e", f"{stage} ({tag}) + conv5 (e)",
                                {**_HA_CLB, "loss": "apse", "low_stage": stage, "low_attention": att},
                                (t, f"{stage} ({tag}) + conv5 (e)"), param=(stage, att)))
    return Experiment("layers", "Combinations of stages (TMM Table IV)", tuple(rows),
                      paper_tables=("tmm-table4",))


@register_experiment("figures", order=11)
def _figures() -> Experiment:
    rows = (Variant("npair", "N-pair loss", {**_SO, "loss": "npair"}),
            Variant("apse-gep", "APSE + GEP", {**_HA_CLB, "loss": "apse"}))
    return Experiment("figures", "Attention maps, top-5 retrievals (N-pair vs APSE), failure cases", rows, folds=1)


@register_experiment("attention", order=1)
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


@register_experiment("lr", order=7)
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


#: Backbones of the ``backbones`` experiment, weakest first.
BACKBONE_GRID = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
#: The rows each backbone gets: Table 1's two trained linear floors and APSE + GEP.
BACKBONE_ROWS = ("softmax", "npair", "apse-gep")


@register_experiment("backbones", order=8)
def _backbones() -> Experiment:
    # Not in the papers: does a stronger frozen backbone change APSE + GEP against the trained linear
    # floor? Each backbone at its native ImageNet resolution: a centre crop of that size from a resize
    # to size + 32 (EfficientNet's evaluation crop; Lite0's 224 / 256 are the base config's, so
    # Lite0's rows are Table 1's runs, from the cache).
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


#: The key rows of Table 1 and the ablation, the ones every regime is compared on (issue: does APSE
#: work once the backbone is fine-tuned?): the two trained linear floors, EP on GAP, EP on two levels,
#: EP with both heads and CLB, APSE with WEP and with GEP, and Yang et al.
CORE_ROWS = (("table1", "softmax"), ("table1", "npair"), ("ablation", "ep-so"), ("ablation", "at-ep-mo"),
             ("ablation", "at-ep-ha-clb-mo"), ("table1", "apse-wep"), ("table1", "apse-gep"),
             ("table1", "yang"))


def _rows(pairs, papers: bool = True) -> list[Variant]:
    """The variants ``(table, name)`` of table1 / ablation; ``papers=False`` drops their paper rows
    (the papers' numbers are on full FI: they do not stand beside another data set's)."""
    tables = {name: {v.name: v for v in EXPERIMENTS[name]().variants} for name in ("table1", "ablation")}
    rows = [tables[table][name] for table, name in pairs]
    return rows if papers else [replace(v, paper=None) for v in rows]


@register_experiment("core", order=9)
def _core() -> Experiment:
    return Experiment("core", "The key rows of Table 1 and the ablation, frozen or fine-tuned",
                      tuple(_rows(CORE_ROWS)),
                      description="Run with --regime frozen (the cached runs of Table 1 and the ablation) "
                                  "and --regime finetune (every layer trained on images): the same "
                                  "variants, folds and seeds in both, for paired comparisons.")


@register_experiment("user-view", order=17)
def _user_view() -> Experiment:
    return Experiment("user-view", "What a user sees: opposite polarity in the top five (Opp@5)",
                      tuple(_rows(CORE_ROWS)), metrics=("Opp@5",),
                      description="The key rows of `core` once more, in the frozen regime (and "
                                  "--regime finetune for the two the answer compares), so that "
                                  "every run records Opp@5, registered after `core` ran; the other "
                                  "metrics are a re-run of core's and should match them.")


#: The diagnosis of chapter 13: where APSE's mAP8 goes. (1) SO -> MO: the low level at conv3 (as the
#: papers), at conv4, or concatenated without the per-level l2 normalisation; (2) the loss against the
#: network: N-pair and EP, each on the linear head and on APSE's network (both heads, CLB, attention
#: loss); (3) APSE with the low level at conv4 (TMM Table IV's best row here), a candidate "beyond the
#: papers" variant, chosen on validation only.
@register_experiment("diagnosis", order=10)
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



#: Issue "Is it the data?": the key rows on a second 8-class domain (FlickrLDL) and learning curves.
#: The key rows of chapter 13 that the second data set and the learning curves re-run.
SCALE_ROWS = (("table1", "softmax"), ("table1", "npair"), ("ablation", "ep-so"), ("ablation", "at-ep-mo"),
              ("table1", "apse-wep"), ("table1", "apse-gep"))
#: The rows of the learning curves: the N-pair floor, EP on the same linear head, and APSE + GEP.
CURVE_ROWS = (("table1", "npair"), ("ablation", "ep-so"), ("table1", "apse-gep"))
#: The shares of the training folds a learning curve trains on (stratified by class, nested).
CURVE_FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0)
#: The curves' data sets: each source alone, then pooled (reported per source of the queries).
CURVE_DATA = {"curve-fi": "fi-subset", "curve-flickrldl": "flickrldl", "curve-pooled": "fi-subset+flickrldl"}


@register_experiment("flickrldl", order=12)
def _flickrldl() -> Experiment:
    return Experiment("flickrldl", "The key rows on FlickrLDL (861-image part), frozen or fine-tuned",
                      (FLOOR, *_rows(SCALE_ROWS, papers=False)), data="flickrldl",
                      description="FlickrLDL's majority-vote labels (ties and polarity conflicts left "
                                  "out: 736 images), 5 stratified folds, the FI protocol.")


def _curve(name: str) -> Callable[[], Experiment]:
    def build() -> Experiment:
        rows = []
        for row in _rows(CURVE_ROWS, papers=False):
            for fraction in CURVE_FRACTIONS:
                overrides = {**row.overrides, "train_fraction": fraction}
                rows.append(Variant(f"{row.name}-p{round(fraction * 1000):04d}",
                                    f"{row.label}, {fraction:g} of the training images", overrides,
                                    row.paper, param=fraction, floor=row.floor))
        data = CURVE_DATA[name]
        return Experiment(name, f"Learning curve on {data}: N-pair SO, EP SO and APSE + GEP at "
                                f"{', '.join(f'{f:g}' for f in CURVE_FRACTIONS)} of the training images",
                          tuple(rows), data=data)
    return build


for _order, _name in enumerate(CURVE_DATA, 13):
    register_experiment(_name, order=_order)(_curve(_name))


#: The equal tuning budget (Musgrave, Belongie and Lim, "A Metric Learning Reality Check", ECCV 2020):
#: each row gets TUNING_TRIALS trials, the book's own setting first, then random draws over its own
#: hyper-parameters (seeded, so the definition is fixed). The trial is chosen on validation only.
TUNING_TRIALS = 12
TUNING_ROWS = (("table1", "npair"), ("ablation", "ep-so"), ("table1", "apse-gep"))


def tuning_space(loss: str, rng) -> dict:
    """One random trial: lr (log-uniform 0.01-1) and weight decay (log-uniform 1e-5-1e-2) for every
    row; APSE's own lam (uniform 0.1-0.9) and GEP's beta (adaptive, or uniform 0-1, even odds)."""
    def sig(x: float) -> float:
        return float(f"{x:.2g}")
    trial = {"lr": sig(10 ** rng.uniform(-2, 0)), "weight_decay": sig(10 ** rng.uniform(-5, -2))}
    if loss == "apse":
        trial["lam"] = round(float(rng.uniform(0.1, 0.9)), 2)
        trial["beta"] = None if rng.uniform() < 0.5 else round(float(rng.uniform(0, 1)), 2)
    return trial


@register_experiment("tuning", order=16)
def _tuning() -> Experiment:
    import numpy as np

    rows = []
    for row in _rows(TUNING_ROWS):
        rng = np.random.default_rng([2020, len(rows)])
        for t in range(1, TUNING_TRIALS + 1):
            trial = {} if t == 1 else tuning_space(row.overrides["loss"], rng)
            text = ", ".join(f"{k} {v if v is not None else 'adaptive'}" for k, v in trial.items())
            rows.append(Variant(f"{row.name}-t{t:02d}", f"{row.label}, trial {t}"
                                + (f" ({text})" if text else " (the book's setting)"),
                                {**row.overrides, **trial}, row.paper, param=t, floor=row.floor))
    return Experiment("tuning", f"An equal tuning budget: {TUNING_TRIALS} trials each for N-pair SO, EP SO "
                                "and APSE + GEP, chosen on validation", tuple(rows))


#: The order of ``python -m apse.experiments all`` (and of the results index).
ORDER = run_order()
