"""Experiment-specific outputs beside a summary: the lambda plot, the attention heads' report, the lr choice.

Each report is a DataFrame at the source (:func:`attention_table`, :func:`lr_table`) that the
markdown writer renders and a notebook shows; :data:`EXTRAS` maps an experiment to its writer, which
the runner calls after the summary with the summary's rows and settings (``info``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from apse.experiments.stats import paired_difference
from apse.experiments.summary import DATASET_LABEL, OURS_LABEL, _fmt
from apse.experiments.tables import Experiment
from apse.metrics import LOWER_IS_BETTER
from apse.paper_results import PAPER_LABEL, TABLES

__all__ = ["EXTRAS", "plot_lambda", "attention_table", "attention_choice", "report_attention", "lr_intro",
           "lr_table", "report_lr", "markdown_lines"]


def markdown_lines(frame: pd.DataFrame) -> list[str]:
    """A DataFrame of strings as a markdown pipe table (its index as the first column)."""
    header = [frame.index.name or ""] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in frame.iterrows():
        lines.append("| " + " | ".join([str(index)] + [str(v) for v in row]) + " |")
    return lines


def plot_lambda(out_dir: Path, experiment: Experiment, rows: Sequence[dict], info: dict[str, Any]) -> Path | None:
    """results/lambda/lambda.png: mAP8 and mAP2 vs lambda, mean ± std band, paper's lambda = 0.5 points."""
    # lazy: choosing the Agg backend when apse.experiments is imported would take over a notebook's
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


def attention_table(rows: Sequence[dict], info: dict[str, Any]) -> pd.DataFrame:
    """Per variant of the attention experiment: validation score, the heads' argmax accuracy (val /
    held-out) and mean top confidence (held-out), held-out mAP8 and mAP2; strings, as attention.md."""
    select = info.get("select_on") or "mAP8"

    def a(r, k):
        return _fmt(r["attention"].get(k), 3)

    table = [{"variant": r["label"], f"val {select}": _fmt(r["val_mean"].get(select)),
              "polarity acc (val / held-out)": f"{a(r, 'val_polarity_accuracy')} / {a(r, 'test_polarity_accuracy')}",
              "polarity top conf (held-out)": a(r, "test_polarity_top_confidence"),
              "emotion acc (val / held-out)": f"{a(r, 'val_emotion_accuracy')} / {a(r, 'test_emotion_accuracy')}",
              "emotion top conf (held-out)": a(r, "test_emotion_top_confidence"),
              "held-out mAP8": _fmt(r["mean"].get("mAP8")), "held-out mAP2": _fmt(r["mean"].get("mAP2"))}
             for r in rows]
    return pd.DataFrame(table, columns=list(table[0]) if table else ["variant"]).set_index("variant")


def attention_choice(rows: Sequence[dict], info: dict[str, Any]) -> tuple[list[str], str | None]:
    """The attention experiment's choice on validation: one line per other row (its paired difference
    to the papers' row ``mask-sum``), and the choice line (None without the papers' row). The papers'
    row stays the choice unless another beats it by more than two standard errors of the paired (same
    fold and seed) difference: the validation parts are ~30 images each."""
    select = info.get("select_on") or "mAP8"
    sign = -1 if select in LOWER_IS_BETTER else 1
    papers = next((r for r in rows if r["variant"] == "mask-sum"), None)
    chosen, margin, lines = papers, 0.0, []
    for r in rows:
        if papers is None or r is papers:
            continue
        d = paired_difference({k: v.get(select) for k, v in r["val_runs"].items()},
                              {k: v.get(select) for k, v in papers["val_runs"].items()})
        if d is None:
            continue
        gain = sign * d["mean"]
        wins = gain > 2 * d["se"]
        lines.append(f"- {r['label']}: validation {select} minus the papers' row, paired over {d['n_folds']} "
                     f"folds: {d['mean']:+.4f} ± {d['se']:.4f} (SE){' — better beyond 2 SE' if wins else ''}")
        if wins and gain > margin:
            chosen, margin = r, gain
    if papers is None:
        return lines, None
    return lines, (f"Choice (validation only; the papers' row stays unless another beats it by more than two "
                   f"standard errors): **{chosen['label']}** (`{chosen['variant']}`).")


def report_attention(out_dir: Path, experiment: Experiment, rows: Sequence[dict], info: dict[str, Any]) -> Path:
    """results/attention/attention.md: the heads' accuracy and confidence per variant
    (:func:`attention_table`), and the choice on validation (:func:`attention_choice`)."""
    lines = [f"# {experiment.title}: the heads", "",
             _settings_line(info),
             "Accuracy of the heads' argmax and mean top confidence (uniform: 0.5 for polarity, 0.125 for emotion), "
             "averaged over the runs; val = the validation parts, held-out = the held-out folds.", "",
             *markdown_lines(attention_table(rows, info))]
    diffs, choice = attention_choice(rows, info)
    if choice is not None:
        lines += ["", *diffs, "", choice]
    path = Path(out_dir) / "attention.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def lr_intro(info: dict[str, Any]) -> str:
    """lr.md's first line: the settings, and how the lr is chosen."""
    select = info.get("select_on") or "mAP8"
    return (f"{_settings_line(info)} The lr is chosen per loss on the mean validation {select}; held-out "
            "numbers are mean ± std over the runs.")


def lr_table(rows: Sequence[dict], info: dict[str, Any]) -> pd.DataFrame:
    """Per loss of the lr experiment: the lr with the best mean validation score, its held-out mAP8
    and mAP2, and those at the shared lr 0.2 of the other experiments; strings, as lr.md."""
    select = info.get("select_on") or "mAP8"
    sign = -1 if select in LOWER_IS_BETTER else 1
    by_loss: dict[str, list[dict]] = {}
    for r in rows:
        if r["param"] is not None and r["val_mean"].get(select) is not None:
            by_loss.setdefault(r["param"][0], []).append(r)

    def cell(r, m):
        return f"{r['mean'][m]:.4f} ± {r['std'][m]:.4f}" if r and m in r["mean"] else "—"

    table = []
    for loss, cands in by_loss.items():
        best = max(cands, key=lambda r: sign * r["val_mean"][select])
        shared = next((r for r in cands if r["param"][1] == 0.2), None)
        table.append({"loss": loss, "lr chosen": f"{best['param'][1]:g}",
                      f"val {select}": f"{best['val_mean'][select]:.4f}",
                      "held-out mAP8": cell(best, "mAP8"), "held-out mAP2": cell(best, "mAP2"),
                      "at lr 0.2: held-out mAP8": cell(shared, "mAP8"),
                      "at lr 0.2: held-out mAP2": cell(shared, "mAP2")})
    columns = ["loss", "lr chosen", f"val {select}", "held-out mAP8", "held-out mAP2", "at lr 0.2: held-out mAP8",
               "at lr 0.2: held-out mAP2"]
    return pd.DataFrame(table, columns=columns).set_index("loss")


def report_lr(out_dir: Path, experiment: Experiment, rows: Sequence[dict], info: dict[str, Any]) -> Path:
    """results/lr/lr.md: :func:`lr_intro` and :func:`lr_table`."""
    lines = [f"# {experiment.title}", "", lr_intro(info), "", *markdown_lines(lr_table(rows, info))]
    path = Path(out_dir) / "lr.md"
    path.write_text("\n".join(lines) + "\n")
    return path


#: experiment name -> what it writes beside its summary (called by the runner).
EXTRAS: dict[str, Callable] = {"lambda": plot_lambda, "attention": report_attention, "lr": report_lr}
