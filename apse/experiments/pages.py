"""What the experiment chapters (13, 13a, 13c) show of a results folder, shared by all three.

A chapter never trains: it reads ``results/NAME/`` and shows the summary's settings, our numbers
beside the papers', the runner's notes and the orderings (:func:`show_report`), the same as bars
(:func:`plot_ours_vs_paper`), which summaries exist (:func:`status_frame`) and the backbone
comparison (:func:`backbone_table`).
"""
from __future__ import annotations

import os
import textwrap
from typing import Sequence

import pandas as pd

from apse.experiments.regimes import DEFAULT_RESULTS
from apse.experiments.reports import last_command, load_summary, paper_comparison, summary_frame
from apse.experiments.stats import metric_difference, ordering_report, paired_difference, unsigned_zero
from apse.experiments.summary import OURS_LABEL
from apse.paper_results import PAPER_LABEL, PAPER_METRICS

__all__ = ["EXPERIMENT_TITLES", "available", "status_frame", "show_report", "plot_ours_vs_paper",
           "backbone_table", "pair_differences", "pair_text", "pair_facts", "glue_all"]

#: The results folders the experiment chapters read, and what each holds.
EXPERIMENT_TITLES = {
    "table1": "losses and methods (ICCV Table 1 / TMM Table I)",
    "ablation": "ablation (ICCV Table 2 / TMM Table II)",
    "beta": "fixed vs adaptive beta (TMM Table III)",
    "layers": "stage combinations (TMM Table IV)",
    "lambda": "weight lambda (ICCV Fig. 5 / TMM Fig. 6)",
    "attention": "attention mask scale, heads' lr (ours)",
    "lr": "learning rate per loss, chosen on val (ours)",
    "backbones": "frozen Lite0, Lite1, Lite2 (ours)",
    "core": "the key rows, frozen (seed 0)",
    "core-probe": "the key rows, frozen at 160 px (the probe)",
    "core-finetune": "the key rows, fine-tuned end to end",
    "diagnosis": "where the emotion level goes (ours)",
}

def available(results_dir: str | os.PathLike = DEFAULT_RESULTS) -> list[str]:
    """The folders of :data:`EXPERIMENT_TITLES` that hold a summary."""
    root = os.fspath(results_dir)
    return [n for n in EXPERIMENT_TITLES if os.path.isfile(os.path.join(root, n, "summary.csv"))]


def status_frame(results_dir: str | os.PathLike = DEFAULT_RESULTS) -> pd.DataFrame:
    """One row per experiment: what it holds, whether its summary exists, the command that wrote it."""
    present = set(available(results_dir))
    rows = [{"experiment": name, "what": what,
             "summary": "present" if name in present else "MISSING",
             "produced by": last_command(name, results_dir) or f"python -m apse.experiments {name}"}
            for name, what in EXPERIMENT_TITLES.items()]
    return pd.DataFrame(rows).set_index("experiment")


def _fill(lines: Sequence[str]) -> str:
    return "\n".join(textwrap.fill(line, 100, subsequent_indent="  ") for line in lines)


def show_report(name: str, metrics: Sequence[str] = PAPER_METRICS, *,
                results_dir: str | os.PathLike = DEFAULT_RESULTS) -> pd.DataFrame | None:
    """Display the summary of ``results/NAME`` (settings, ours beside the papers', the runner's
    notes, the Kendall tau of our ordering against the papers') and return its frame; None, with the
    command that makes it, when the summary is missing."""
    from IPython.display import Markdown, display

    if not os.path.isfile(os.path.join(os.fspath(results_dir), name, "summary.csv")):
        print(f"results/{name}/summary.csv is missing:\n  python -m apse.experiments {name}")
        return None
    summary = load_summary(name, results_dir=results_dir)
    display(Markdown(_fill(summary.settings)))
    with pd.option_context("display.max_colwidth", 60):
        display(paper_comparison(summary.frame, metrics))
    if summary.notes:
        display(Markdown("Notes from the runner:\n\n" + _fill(summary.notes)))
    for metric in ("mAP8", "mAP2"):
        rep = ordering_report(summary.distinct_rows(), metric)
        if rep["n"] >= 3:
            tau = rep["kendall_tau"]
            print(f"{metric}: Kendall tau, ours vs the paper's ordering, {rep['n']} runs: "
                  f"{'n/a' if tau is None else f'{tau:+.2f}'}")
    return summary.frame


def plot_ours_vs_paper(frame: pd.DataFrame, metrics: Sequence[str] = ("mAP8", "mAP2"),
                       title: str = ""):
    """Horizontal bars of a summary frame: ours (mean ± std over runs) beside the papers' numbers.
    Returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(metrics), figsize=(10, 0.32 * len(frame) + 1.4), sharey=True)
    axes = np.atleast_1d(axes)
    y = np.arange(len(frame))
    for ax, m in zip(axes, metrics):
        ax.barh(y - 0.2, frame[f"{m}_mean"], 0.4, xerr=frame[f"{m}_std"], color="#1f77b4",
                ecolor="0.3", capsize=2, label=f"{OURS_LABEL}: mean ± std over runs")
        paper = frame.get(f"paper_{m}")
        if paper is not None and paper.notna().any():
            ax.barh(y + 0.2, paper.fillna(0), 0.4, color="#d62728", alpha=0.75, label=PAPER_LABEL)
        ax.set_title(m)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, frame["label"], fontsize=7)
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=2, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def backbone_table(results_dir: str | os.PathLike = DEFAULT_RESULTS,
                   metrics: Sequence[str] = ("mAP8", "mAP2")) -> pd.DataFrame:
    """Per frozen backbone of the ``backbones`` experiment: the held-out means of APSE + GEP and
    the two linear floors, and APSE + GEP minus the stronger floor on each metric, paired fold by
    fold (mean and standard error over the folds)."""
    from apse.backbones import LITE_VARIANTS, NATIVE_RESOLUTION
    from apse.experiments.reports import by_fold
    from apse.experiments.tables import BACKBONE_GRID

    means = summary_frame("backbones", results_dir=results_dir).set_index("variant")
    rows = {}
    for backbone in BACKBONE_GRID:
        short = backbone.replace("efficientnet_", "")
        row = {}
        for m in metrics:
            runs = by_fold("backbones", "frozen", m, results_dir=results_dir)
            mean = {n: means.loc[f"{short}-{n}", f"{m}_mean"] for n in ("apse-gep", "softmax", "npair")}
            best = max(("softmax", "npair"), key=mean.get)  # the stronger floor on this metric
            d = paired_difference(runs[f"{short}-apse-gep"], runs[f"{short}-{best}"])
            row.update({(m, "APSE+GEP"): mean["apse-gep"], (m, "softmax"): mean["softmax"],
                        (m, "N-pair"): mean["npair"], (m, "APSE - best floor"): d["mean"],
                        (m, "± SE"): d["se"]})
        rows[f"{LITE_VARIANTS[backbone].title} ({NATIVE_RESOLUTION[backbone]} px)"] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["held-out metric", ""])
    return table.round(3)


def pair_differences(name: str, pairs: dict[str, tuple[tuple[str, str], tuple[str, str]]],
                     metrics: Sequence[str] = ("mAP8", "mAP2"), *,
                     results_dir: str | os.PathLike = DEFAULT_RESULTS) -> dict[str, dict[str, dict]]:
    """The paired differences a chapter's prose quotes, as numbers: ``{key: {metric: d}}`` with ``d``
    the :func:`~apse.experiments.stats.metric_difference` of a over b (``mean``, ``se``, ``wins``,
    ``n_folds``; a win is a fold where a is better).

    ``pairs`` maps a short key to ``((variant_a, regime_a), (variant_b, regime_b))`` of experiment
    ``name``. Computed as :func:`apse.experiments.reports.paired_table` computes them, so prose and
    table agree; :func:`pair_text` words them for the glue, and a chapter asserts on the numbers.
    """
    from apse.experiments.reports import by_fold

    cache: dict[tuple[str, str], dict] = {}
    out: dict[str, dict[str, dict]] = {}
    for key, ((va, ra), (vb, rb)) in pairs.items():
        for m in metrics:
            for regime in (ra, rb):
                if (regime, m) not in cache:
                    cache[regime, m] = by_fold(name, regime, m, results_dir=results_dir)
            d = metric_difference(cache[ra, m].get(va, {}), cache[rb, m].get(vb, {}), m)
            if d is None:
                raise ValueError(f"{name}: no common folds for {va} ({ra}) and {vb} ({rb})")
            out.setdefault(key, {})[m] = d
    return out


def pair_text(differences: dict[str, dict[str, dict]], digits: int = 3) -> dict[str, str]:
    """:func:`pair_differences` as text for myst-nb's ``glue``: for each key and metric,
    ``{key}_{metric}`` (mean ± standard error over the folds, signed) and ``{key}_{metric}_won``
    ("k of n" folds where a is better)."""
    facts = {}
    for key, by_metric in differences.items():
        for m, d in by_metric.items():
            facts[f"{key}_{m}"] = unsigned_zero(f"{d['mean']:+.{digits}f} ± {d['se']:.{digits}f}")
            facts[f"{key}_{m}_won"] = f"{d['wins']} of {d['n_folds']}"
    return facts


def pair_facts(name: str, pairs: dict[str, tuple[tuple[str, str], tuple[str, str]]],
               metrics: Sequence[str] = ("mAP8", "mAP2"), *,
               results_dir: str | os.PathLike = DEFAULT_RESULTS, digits: int = 3) -> dict[str, str]:
    """The paired differences a chapter's prose quotes, as text for myst-nb's ``glue``
    (:func:`pair_text` of :func:`pair_differences`)."""
    return pair_text(pair_differences(name, pairs, metrics, results_dir=results_dir), digits)


def glue_all(facts: dict[str, str]) -> None:
    """Glue every value of ``facts`` under its key (myst-nb), shown nowhere but where prose uses it."""
    from myst_nb import glue

    for key, value in facts.items():
        glue(key, value, display=False)
