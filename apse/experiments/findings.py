"""The README's "What the experiments found", generated from the cached run records chapter 13 reads.

``python -m apse.experiments.findings`` rewrites the block of README.md between :data:`BEGIN` and
:data:`END` (and chapter 13c's paragraph on data scale between its own markers, :func:`blocks`); ``--check`` exits 1 (and prints the difference) when the README's block is not what the
records give, so that a re-run experiment cannot leave the README behind the book.

Every number is a paired difference of :func:`apse.experiments.paired_difference` over the run
records of :func:`apse.experiments.load_records` (the statistic of chapter 13's ``paired_table``:
seeds averaged within a fold, then the mean of the per-fold differences a - b, its standard error
over the folds and the folds a wins), or a setting read from those records (dataset size, folds,
seeds, backbone, image sizes, epochs). Nothing is recomputed by training, so the text is the same on
any CPU. What to report is data (:data:`SOURCES`, :data:`NAMES`, :data:`PAIRS`, the row lists); the
prose is :data:`TEMPLATE`, and every word whose choice depends on a number ("below", "level",
"narrows", "does not reproduce") is chosen from the number by the functions below, with one rule
for noise (:data:`NOISE_SE`).

:func:`findings_markdown` is pure: records in, markdown out. :func:`load_results` reads the records.
"""
from __future__ import annotations

import argparse
import difflib
import os
import sys
import textwrap
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from apse.experiments.regimes import DEFAULT_RESULTS, REPO_ROOT
from apse.experiments.runner import load_records
from apse.experiments.stats import paired_difference
from apse.experiments.tables import get_experiment

__all__ = ["BEGIN", "END", "SOURCES", "NAMES", "PAIRS", "PROBE_ROWS", "FOCUS", "NOISE_SE", "TEMPLATE",
           "Diff", "load_results", "findings_markdown", "readme_block", "replace_block", "blocks", "main"]

BEGIN = "<!-- findings:begin -->"
END = "<!-- findings:end -->"
README = REPO_ROOT / "README.md"

#: The (experiment, regime) run sets the section reads (results/core, results/core-probe, ...).
SOURCES = (("core", "frozen"), ("core", "probe"), ("core", "finetune"),
           ("diagnosis", "frozen"), ("diagnosis", "finetune"))

#: How the prose names a variant (a variant not listed goes by its record's label).
NAMES = {"softmax": "softmax", "npair": "N-pair", "ep-so": "EP, SO", "at-ep-mo": "AT + EP, MO",
         "at-ep-ha-clb-mo": "AT + EP + HA + CLB, MO", "apse-wep": "APSE + WEP", "apse-gep": "APSE + GEP",
         "yang": "Yang et al."}

#: The method the section is about, and the floor it is held against (both of experiment core).
FOCUS, FLOOR_ROW = "apse-gep", "npair"

#: The core rows also run as the fine-tuning's probe (fine-tuned against probe: what moving the
#: backbone adds), in the order the prose lists them.
PROBE_ROWS = ("apse-gep", "apse-wep", "softmax", "npair")

#: The paired differences the prose quotes: name -> (experiment, (variant a, regime a),
#: (variant b, regime b)), a - b on every metric. "<v>-probe" and "<v>-frozen" (fine-tuned against
#: its probe / its frozen runs) are added for the rows run in those regimes.
PAIRS = {
    "focus-floor-frozen": ("core", (FOCUS, "frozen"), (FLOOR_ROW, "frozen")),
    "focus-floor-ft": ("core", (FOCUS, "finetune"), (FLOOR_ROW, "finetune")),
    "two-levels-focus-ft": ("core", ("at-ep-mo", "finetune"), (FOCUS, "finetune")),
    "two-levels-one-ft": ("core", ("at-ep-mo", "finetune"), ("ep-so", "finetune")),
    # the diagnosis: the loss on each network, the network under each loss, in both regimes
    **{f"loss-linear-{r}": ("diagnosis", ("ep-so", r), ("npair-so", r)) for r in ("frozen", "finetune")},
    **{f"loss-net-{r}": ("diagnosis", ("at-ep-ha-clb-mo", r), ("npair-net", r)) for r in ("frozen", "finetune")},
    **{f"net-npair-{r}": ("diagnosis", ("npair-net", r), ("npair-so", r)) for r in ("frozen", "finetune")},
    **{f"net-ep-{r}": ("diagnosis", ("at-ep-ha-clb-mo", r), ("ep-so", r)) for r in ("frozen", "finetune")},
    "conv3-ft": ("diagnosis", ("at-ep-mo", "finetune"), ("ep-so", "finetune")),
    "conv4-ft": ("diagnosis", ("ep-mo-conv4", "finetune"), ("ep-so", "finetune")),
}

#: A difference is within the noise when its mean is less than this many standard errors from 0.
NOISE_SE = 2.0

#: Digits of a metric difference (and of the "about" ranges, coarser).
DIGITS, ROUGH_DIGITS = 3, 2

REGIME_WORDS = {"frozen": "frozen", "finetune": "fine-tuned", "probe": "as the probe"}

#: The section's prose; ``{pair[metric]:spec}`` is a paired difference (:class:`Diff`'s specs), the
#: other fields are the settings and the number-dependent clauses of :func:`findings_markdown`.
#: Paragraphs are separated by a blank line and wrapped as the README is.
TEMPLATE = """\
All numbers are ours, on the FI subset ({images} images, {folds} held-out folds, {seeds}, {backbone}), \
not the papers' (full FI, ResNet-50); chapter 13 gives the answer and chapters 13a and 13b every table, the papers' numbers beside ours, and \
the paired statistics (mean difference ± standard error over the folds, folds won). Generated from \
results/ by `python -m apse.experiments.findings`; "level" and "within the noise" mean less than {noise} \
standard errors from zero.

- **Frozen backbone** (cached features, {frozen_px} px): {focus} is \
{d[focus-floor-frozen][mAP8]:gap} the trained linear {floor} floor ({d[focus-floor-frozen][mAP8]:won} folds) \
and {d[focus-floor-frozen][mAP2]:gap} it ({d[focus-floor-frozen][mAP2]:won}).

- **Fine-tuned end to end** (the papers' regime at CPU scale: a probe of the new layers, then {ft_epochs} \
epochs of every layer at {ft_px} px): {d[focus-floor-ft][mAP8]:gap} {floor} ({d[focus-floor-ft][mAP8]:won} \
folds won), {d[focus-floor-ft][mAP2]:gap} ({d[focus-floor-ft][mAP2]:won}). {probe_clause}{gap_clause}. \
{frozen_clause} {two_levels_clause}

- **Diagnosis**, in both regimes: {loss_clause}; {network_clause}. \
Fine-tuned, {second_level_clause}. The papers' claim that APSE beats {floor} on mAP8 {reproduce_clause}.
"""

WIDTH = 105  # the README's line length


class Diff:
    """One paired difference a - b of one metric, formatted by the template's specs:
    ``pm`` "+0.016 ± 0.006"; ``gap`` "0.065 ± 0.017 mAP8 below" (``bare``: without the metric);
    ``won`` "0 of 5" (folds a wins)."""

    def __init__(self, stats: Mapping, metric: str):
        self.mean, self.se = float(stats["mean"]), float(stats["se"])
        self.wins, self.n = int(stats["wins"]), int(stats["n_folds"])
        self.metric = metric

    @property
    def level(self) -> bool:
        """Within the noise: less than :data:`NOISE_SE` standard errors from zero."""
        return abs(self.mean) < NOISE_SE * self.se

    @property
    def side(self) -> str:
        return "below" if self.mean < 0 else "above"

    def __format__(self, spec: str) -> str:
        if spec == "pm":
            return f"{self.mean:+.{DIGITS}f} ± {self.se:.{DIGITS}f}"
        if spec in ("gap", "bare"):
            unit = f" {self.metric}" if spec == "gap" else ""
            return f"{abs(self.mean):.{DIGITS}f} ± {self.se:.{DIGITS}f}{unit} {self.side}"
        if spec == "won":
            return f"{self.wins} of {self.n}"
        raise ValueError(f"unknown format {spec!r} of a paired difference (pm, gap, bare, won)")


def load_results(results_dir: str | os.PathLike = DEFAULT_RESULTS) -> dict[tuple[str, str], list[dict]]:
    """The run records of every (experiment, regime) of :data:`SOURCES`, as chapter 13 reads them."""
    return {(name, regime): load_records(name, results_dir, regime=regime) for name, regime in SOURCES}


def _join(items: Sequence[str], last: str = "and") -> str:
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"


def _one(values: Iterable, what: str):
    found = sorted(set(values), key=str)
    if len(found) != 1:
        raise ValueError(f"the records disagree on {what}: {found}")
    return found[0]


def _rough(x: float) -> str:
    return f"{abs(x):.{ROUGH_DIGITS}f}"


def _range(diffs: Sequence[Diff], signed: bool) -> str:
    lo, hi = min(d.mean for d in diffs), max(d.mean for d in diffs)
    if not signed:
        lo, hi = sorted((abs(lo), abs(hi)))
    fmt = (lambda x: f"{x:+.{ROUGH_DIGITS}f}") if signed else _rough
    return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)} to {fmt(hi)}"


class _Results:
    """The records of :data:`SOURCES` indexed for paired differences."""

    def __init__(self, results: Mapping[tuple[str, str], Sequence[dict]]):
        self.runs: dict[tuple[str, str, str], dict] = {}
        self.labels: dict[str, str] = {}
        self.records = results
        for (name, regime), records in results.items():
            for r in records:
                self.runs.setdefault((name, regime, r["variant"]), {})[(int(r["fold"]), int(r["seed"]))] = \
                    r.get("test_metrics") or {}
                self.labels.setdefault(r["variant"], r.get("label") or r["variant"])

    def has(self, name: str, regime: str, variant: str) -> bool:
        return (name, regime, variant) in self.runs

    def name(self, variant: str) -> str:
        return NAMES.get(variant, self.labels.get(variant, variant))

    def values(self, name: str, regime: str, variant: str, metric: str) -> dict:
        if not self.has(name, regime, variant):
            raise KeyError(f"no runs of {variant!r} in results of {name!r} ({regime})")
        return {k: m[metric] for k, m in self.runs[name, regime, variant].items() if m.get(metric) is not None}

    def mean(self, name: str, regime: str, variant: str, metric: str) -> float:
        v = list(self.values(name, regime, variant, metric).values())
        return sum(v) / len(v)

    def diff(self, name: str, a: tuple[str, str], b: tuple[str, str], metric: str) -> Diff:
        stats = paired_difference(self.values(name, a[1], a[0], metric), self.values(name, b[1], b[0], metric))
        if stats is None:
            raise ValueError(f"fewer than two common folds for {a} - {b} in {name!r} ({metric})")
        return Diff(stats, metric)


def _probe_clause(res: _Results, d: Mapping) -> tuple[str, bool]:
    """Which rows moving the backbone helps (fine-tuned against the probe, mAP8): a row is helped when
    its difference is positive and beyond the noise. Returns the sentence and whether the focus is helped."""
    rows = [v for v in PROBE_ROWS if f"{v}-probe" in d]
    helped = [v for v in rows if d[f"{v}-probe"]["mAP8"].mean > 0 and not d[f"{v}-probe"]["mAP8"].level]
    rest = [v for v in rows if v not in helped]
    items, first = {}, True
    for v in helped + rest:
        x = d[f"{v}-probe"]["mAP8"]
        extra = (" mAP8 over its own probe", " folds") if first else ("", "")
        items[v] = f"{res.name(v)} ({x:pm}{extra[0]}, {x:won}{extra[1]})"
        first = False
    if not helped:
        text = f"Moving the backbone helps none of {_join([items[v] for v in rest], 'or')}"
    else:
        text = (f"Moving the backbone helps {_join([items[v] for v in helped])}"
                + (f", not {_join([items[v] for v in rest], 'nor')}" if rest else ""))
    return text, FOCUS in helped


def _gap_clause(frozen: Diff, ft: Diff, focus_helped: bool) -> str:
    """What fine-tuning does to the focus's mAP8 gap to the floor."""
    if frozen.mean >= 0:
        return f"; fine-tuned it ends {ft.side} the floor"
    if ft.mean >= 0:
        words = "the gap closes"
    elif abs(ft.mean) < abs(frozen.mean):
        words = "the gap narrows but does not close"
    else:
        words = "the gap does not narrow"
    return f", so {words}" if focus_helped and ft.mean > frozen.mean else f"; {words}"


def _frozen_clause(res: _Results, d: Mapping, key_rows: Sequence[str]) -> str:
    """Fine-tuned against the frozen runs (mAP8): the focus, then every other key row by sign, those
    beyond the noise named, the largest loss quoted with the lowest fine-tuned row."""
    f = d[f"{FOCUS}-frozen"]["mAP8"]
    focus = (f"Against its frozen runs, fine-tuning leaves {res.name(FOCUS)} level on mAP8 ({f:pm}, {f:won} folds)"
             if f.level else
             f"Against its frozen runs, fine-tuning moves {res.name(FOCUS)} {f:gap} them ({f:won} folds)")
    others = [v for v in key_rows if v != FOCUS]
    lose = [v for v in others if d[f"{v}-frozen"]["mAP8"].mean < 0]
    gain = [v for v in others if v not in lose]
    clear = [v for v in lose if not d[f"{v}-frozen"]["mAP8"].level]
    if not gain:
        text = f"{focus}; every other key row loses mAP8 to it"
    else:
        text = (f"{focus}; of the other key rows, {_join([res.name(v) for v in gain])} "
                f"{'gains' if len(gain) == 1 else 'gain'} mAP8 from it"
                + (f" and {_join([res.name(v) for v in lose])} lose{'s' if len(lose) == 1 else ''}" if lose else ""))
    if lose:
        text += (f" ({len(clear)} of the {len(lose)} beyond the noise)" if clear and len(clear) < len(lose) else
                 " (all within the noise)" if not clear else "")
        worst = min(lose, key=lambda v: d[f"{v}-frozen"]["mAP8"].mean)
        w = d[f"{worst}-frozen"]["mAP8"]
        lowest = min(key_rows, key=lambda v: res.mean("core", "finetune", v, "mAP8"))
        tail = ""
        if lowest != FLOOR_ROW:
            g = res.diff("core", (lowest, "finetune"), (FLOOR_ROW, "finetune"), "mAP8")
            who = "it is" if lowest == worst else f"{res.name(lowest)} is"
            tail = f"; fine-tuned {who} the lowest key row, {g:gap} {res.name(FLOOR_ROW)}"
        text += f", {res.name(worst)} most ({w:pm}, {w:won} folds{tail})"
    return text + "."


def _two_levels_clause(res: _Results, d: Mapping) -> str:
    a, b = d["two-levels-focus-ft"]["mAP8"], d["two-levels-one-ft"]["mAP8"]
    where = (f"ends level with {res.name(FOCUS)} on mAP8 ({a:pm}, {a:won} folds)" if a.level else
             f"ends {a:gap} {res.name(FOCUS)} ({a:won} folds)")
    return (f"{res.name('at-ep-mo')}, which has no attention head in either regime (EP on conv3 + conv5), "
            f"{where} and {b:bare} EP on one level ({b:won}).")


def _loss_clause(d: Mapping) -> str:
    gains = [d[f"loss-{n}-{r}"]["mAP2"] for r in ("frozen", "finetune") for n in ("linear", "net")]
    focus = [d["focus-floor-frozen"]["mAP2"], d["focus-floor-ft"]["mAP2"]]  # APSE's own gain over the floor
    if all(x.mean > 0 and not x.level for x in gains + focus):
        return f"APSE's polarity-level gain comes from the EP loss ({_range(gains, True)} mAP2 on either network)"
    return f"EP against N-pair changes mAP2 by {_range(gains, True)} on either network"


def _network_clause(d: Mapping, train: str) -> str:
    costs = [d[f"net-{n}-{r}"]["mAP8"] for r in ("frozen", "finetune") for n in ("npair", "ep")]
    focus = [d["focus-floor-frozen"]["mAP8"], d["focus-floor-ft"]["mAP8"]]  # APSE's own deficit to the floor
    if all(x.mean < 0 and not x.level for x in costs) and all(x.mean < 0 for x in focus):
        return (f"its emotion-level deficit from the network (heads and CLB cost {_range(costs, False)} mAP8 "
                f"on either loss, on {train} training images)")
    return f"the network's heads and CLB change mAP8 by {_range(costs, True)} on either loss ({train} training images)"


def _second_level_clause(d: Mapping) -> str:
    c3, c4 = d["conv3-ft"]["mAP8"], d["conv4-ft"]["mAP8"]
    won = f"{c3:won} folds each" if (c3.wins, c3.n) == (c4.wins, c4.n) else f"{c3:won} and {c4:won} folds"
    numbers = f"({c3:pm} and {c4:pm}, {won})"
    if (c3.mean < 0) != (c4.mean < 0):
        return f"a second level changes EP's mAP8 by {c3:pm} from conv3 and {c4:pm} from conv4 ({won})"
    verb = "costs EP about" if c3.mean < 0 else "raises EP's mAP8 by about"
    unit = " mAP8" if c3.mean < 0 else ""
    if _rough(c3.mean) == _rough(c4.mean):
        return f"a second level {verb} {_rough(c3.mean)}{unit} whether it comes from conv3 or conv4 {numbers}"
    return f"a second level {verb} {_rough(c3.mean)}{unit} from conv3 and {_rough(c4.mean)} from conv4 {numbers}"


def _reproduce_clause(d: Mapping) -> str:
    regimes = {"frozen": d["focus-floor-frozen"]["mAP8"], "finetune": d["focus-floor-ft"]["mAP8"]}
    beats = [r for r, x in regimes.items() if x.mean > 0 and not x.level]
    if not beats:
        return "does not reproduce here"
    if len(beats) == len(regimes):
        return "reproduces here"
    return f"reproduces here only {REGIME_WORDS[beats[0]]}"


def _settings(res: _Results) -> dict[str, str]:
    from apse.backbones import LITE_VARIANTS

    frozen, ft = res.records[("core", "frozen")], res.records[("core", "finetune")]
    if not frozen or not ft:
        raise ValueError("no run records of core (frozen and finetune)")
    images = _one((sum(r["split"].values()) for r in frozen), "the dataset size")
    train = sorted({int(r["split"]["train"]) for r in frozen})  # folds of 602 images differ by one
    seeds = sorted({int(r["seed"]) for r in frozen})
    backbone = _one((r["config"]["backbone"] for recs in res.records.values() for r in recs), "the backbone")
    return {"images": str(images), "train": str(train[0]) if len(train) == 1 else f"{train[0]}-{train[-1]}",
            "folds": str(len({int(r["fold"]) for r in frozen})),
            "seeds": (f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {_join([str(s) for s in seeds])}"),
            "backbone": LITE_VARIANTS[backbone].title if backbone in LITE_VARIANTS else backbone,
            "frozen_px": str(_one((r["config"]["image_size"] for r in frozen), "the frozen image size")),
            "ft_px": str(_one((r["config"]["image_size"] for r in ft), "the fine-tuned image size")),
            "ft_epochs": str(_one((r["config"]["epochs"] for r in ft), "the fine-tuning epochs"))}


def _wrap(text: str) -> str:
    out = []
    for para in text.strip().split("\n\n"):
        bullet = para.startswith("- ")
        out.append(textwrap.fill(" ".join(para.split()), WIDTH, subsequent_indent="  " if bullet else "",
                                 break_on_hyphens=False, break_long_words=False))
    text = out[0]
    for prev, para in zip(out, out[1:]):  # a list's items follow one another; other paragraphs have a blank line
        text += ("\n" if prev.startswith("- ") and para.startswith("- ") else "\n\n") + para
    return text


def findings_markdown(results: Mapping[tuple[str, str], Sequence[dict]]) -> str:
    """The section's markdown (what goes between :data:`BEGIN` and :data:`END`) from the run records
    ``{(experiment, regime): [record, ...]}`` of :data:`SOURCES` (:func:`load_results`); a record needs
    ``variant``, ``fold``, ``seed``, ``test_metrics`` and, for core, ``config`` and ``split``."""
    res = _Results(results)
    key_rows = [v.name for v in get_experiment("core").variants
                if res.has("core", "frozen", v.name) and res.has("core", "finetune", v.name)]
    pairs = dict(PAIRS)
    pairs.update({f"{v}-probe": ("core", (v, "finetune"), (v, "probe")) for v in PROBE_ROWS
                  if res.has("core", "probe", v)})
    pairs.update({f"{v}-frozen": ("core", (v, "finetune"), (v, "frozen")) for v in key_rows})
    d = {k: {m: res.diff(name, a, b, m) for m in ("mAP8", "mAP2")} for k, (name, a, b) in pairs.items()}
    probe, focus_helped = _probe_clause(res, d)
    settings = _settings(res)
    fields = {**settings, "d": d, "focus": res.name(FOCUS), "floor": res.name(FLOOR_ROW),
              "noise": f"{NOISE_SE:g}", "probe_clause": probe,
              "gap_clause": _gap_clause(d["focus-floor-frozen"]["mAP8"], d["focus-floor-ft"]["mAP8"], focus_helped),
              "frozen_clause": _frozen_clause(res, d, key_rows), "two_levels_clause": _two_levels_clause(res, d),
              "loss_clause": _loss_clause(d), "network_clause": _network_clause(d, settings["train"]),
              "second_level_clause": _second_level_clause(d), "reproduce_clause": _reproduce_clause(d)}
    return _wrap(TEMPLATE.format(**fields)) + "\n"


def _markers(text: str, begin: str = BEGIN, end: str = END) -> tuple[int, int]:
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"README needs one {begin} and, after it, one {end}")
    return text.index(begin) + len(begin), text.index(end)


def readme_block(text: str, begin: str = BEGIN, end: str = END) -> str:
    """The text between the markers (the newlines next to them left out)."""
    start, stop = _markers(text, begin, end)
    return text[start:stop].strip("\n") + "\n"


def replace_block(text: str, block: str, begin: str = BEGIN, end: str = END) -> str:
    """``text`` with the block between the markers replaced by ``block``."""
    start, stop = _markers(text, begin, end)
    return f"{text[:start]}\n{block.strip(chr(10))}\n{text[stop:]}"


def blocks(results_dir: str | os.PathLike) -> list[tuple[str, str, str]]:
    """Every generated README block: ``(begin marker, end marker, markdown)``: chapter 13's findings,
    then chapter 13c's paragraph on data scale (:func:`apse.experiments.scale.readme_markdown`)."""
    from apse.experiments.scale import README_BEGIN, README_END, readme_markdown

    return [(BEGIN, END, findings_markdown(load_results(results_dir))),
            (README_BEGIN, README_END, readme_markdown(results_dir))]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m apse.experiments.findings", description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the README's block differs; write nothing")
    p.add_argument("--readme", type=Path, default=README)
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = p.parse_args(argv)
    text = args.readme.read_text()
    updated, stale = text, 0
    for begin, end, new in blocks(args.results):
        old = readme_block(updated, begin, end)
        if args.check and old != new:
            sys.stderr.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                                       f"{args.readme} (now)", "generated"))
            stale += 1
        updated = replace_block(updated, new, begin, end)
    if args.check:
        if stale:
            print(f"{args.readme}: {stale} generated block(s) out of date; run python -m "
                  f"apse.experiments.findings", file=sys.stderr)
        return int(bool(stale))
    if updated != text:
        args.readme.write_text(updated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
