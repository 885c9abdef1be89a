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

One module per job: :mod:`~apse.experiments.tables` (the definitions and their registry),
:mod:`~apse.experiments.regimes` (frozen / finetune / probe), :mod:`~apse.experiments.specs` (the
runs of an experiment: the one recipe from a variant to a run's config; keys from :mod:`apse.runs`),
:mod:`~apse.experiments.runner` (cache, runs), :mod:`~apse.experiments.stats`,
:mod:`~apse.experiments.summary` (summary rows, DataFrame, summary.csv / summary.md, the index), :mod:`~apse.experiments.extras` (lambda plot,
attention and lr reports), :mod:`~apse.experiments.figures`, :mod:`~apse.experiments.reports` (chapter
13's DataFrames from the run records) and :mod:`~apse.experiments.cli`.
"""
from apse.experiments.tables import (BACKBONE_GRID, BACKBONE_ROWS, BUDGET_OVERRIDES, CORE_ROWS, EXPERIMENTS, FLOOR,
                                     K_FOLDS, LR_GRID, ORDER, Experiment, Variant, get_experiment,
                                     register_experiment, run_order)
from apse.experiments.regimes import (DEFAULT_BASE, DEFAULT_RESULTS, FINETUNE_CONFIG, REGIMES, REPO_ROOT, regime_dir,
                                      regime_overrides, run_overrides, split_regime_dir)
from apse.experiments.stats import kendall_tau, key_means, mean_std, ordering_report, paired_difference
from apse.experiments.summary import (BACKBONE_LABEL, DATASET_LABEL, METRICS, OURS_LABEL, SUMMARY_COLUMNS,
                                      _paper_values, note_lines, settings_lines, summarise_experiment,
                                      summary_table, table_info, write_index, write_summary)
from apse.experiments.extras import (EXTRAS, attention_choice, attention_table, lr_intro, lr_table, plot_lambda,
                                     report_attention, report_lr)
from apse.experiments.specs import RunSpec, expand, experiment_specs, select_variants
from apse.experiments.runner import execute_run, load_records, run_experiment
from apse.experiments.figures import make_figures
from apse.experiments.reports import (Summary, agreement, agreement_table, last_command, load_summary,
                                      paper_comparison, summary_frame)
from apse.experiments.cli import main
from apse.metrics import LOWER_IS_BETTER
from apse.provenance import portable_config
from apse.runs import RUNNER_VERSION, run_key

__all__ = ["Variant", "Experiment", "RunSpec", "EXPERIMENTS", "METRICS", "RUNNER_VERSION", "expand",
           "run_key", "run_experiment", "summarise_experiment", "write_summary", "paired_difference", "load_records",
           "main", "ORDER", "get_experiment", "register_experiment", "run_order", "regime_overrides", "run_overrides",
           "regime_dir", "split_regime_dir", "REGIMES", "DEFAULT_BASE", "DEFAULT_RESULTS", "K_FOLDS", "ordering_report",
           "write_index", "make_figures", "execute_run", "summary_table", "settings_lines", "note_lines",
           "table_info", "load_summary", "Summary", "summary_frame", "paper_comparison", "agreement",
           "agreement_table", "last_command", "attention_table", "attention_choice", "lr_table", "lr_intro",
           "plot_lambda", "report_attention", "report_lr", "EXTRAS", "LOWER_IS_BETTER", "kendall_tau", "key_means",
           "mean_std", "BACKBONE_GRID", "BACKBONE_ROWS", "BUDGET_OVERRIDES", "CORE_ROWS", "FLOOR", "LR_GRID",
           "FINETUNE_CONFIG", "REPO_ROOT", "BACKBONE_LABEL", "DATASET_LABEL", "OURS_LABEL",
           "SUMMARY_COLUMNS", "portable_config", "_paper_values", "experiment_specs", "select_variants"]
