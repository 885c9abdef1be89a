"""README's "What the experiments found" is generated from results/ (apse.experiments.findings)."""
from __future__ import annotations

import math
import shutil

import pytest

from apse.experiments import get_experiment
from apse.experiments.findings import (BEGIN, END, README, SOURCES, findings_markdown, load_results, main,
                                       readme_block, replace_block)

FOLDS = range(5)


def flat(text: str) -> str:
    return " ".join(text.split())


def default_value(variant: str, regime: str, metric: str, fold: int) -> float:
    """A value that differs between variants and folds (so every difference has a standard error)."""
    h = sum(map(ord, f"{variant}/{regime}/{metric}"))
    return 0.4 + 0.001 * (h % 97) + 0.002 * ((h + 3 * fold) % 5)


def hand_built(values: dict | None = None) -> dict:
    """Run records of every variant of SOURCES' experiments over 5 folds, seed 0; ``values`` sets
    ``(experiment, regime, variant, metric) -> five values`` (one per fold)."""
    values = values or {}
    out = {}
    for name, regime in SOURCES:
        config = {"backbone": "efficientnet_lite0", "image_size": 160 if regime != "frozen" else 224,
                  "epochs": 5 if regime == "finetune" else 20}
        recs = []
        for v in get_experiment(name).variants:
            for fold in FOLDS:
                metrics = {m: values.get((name, regime, v.name, m), [None] * 5)[fold]
                           or default_value(v.name, regime, m, fold) for m in ("mAP8", "mAP2")}
                recs.append({"variant": v.name, "label": v.label, "fold": fold, "seed": 0, "config": config,
                             "split": {"train": 451 + (fold > 1), "val": 30, "test": 121 - (fold > 1)},
                             "test_metrics": metrics})
        out[name, regime] = recs
    return out


def plus(base, deltas):
    return [b + d for b, d in zip(base, deltas)]


NPAIR8 = [0.50, 0.52, 0.48, 0.51, 0.49]
NPAIR2 = [0.70, 0.72, 0.74, 0.71, 0.73]


def known(gep8_deltas, gep2_deltas, **extra) -> dict:
    return {("core", "frozen", "npair", "mAP8"): NPAIR8, ("core", "frozen", "npair", "mAP2"): NPAIR2,
            ("core", "frozen", "apse-gep", "mAP8"): plus(NPAIR8, gep8_deltas),
            ("core", "frozen", "apse-gep", "mAP2"): plus(NPAIR2, gep2_deltas), **extra}


def test_readme_block_is_the_generated_text():
    """A re-run experiment that changes a number fails here until the README is regenerated
    (python -m apse.experiments.findings)."""
    text = README.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert text.index("## What the experiments found") < text.index(BEGIN) < text.index(END) \
        < text.index("## Notebook modes")
    assert readme_block(text) == findings_markdown(load_results())
    # chapter 13c's paragraph on data scale, in its own block after it, from the same records
    from apse.experiments.scale import README_BEGIN, README_END, readme_markdown

    assert text.index(END) < text.index(README_BEGIN) < text.index(README_END) < text.index("## Notebook modes")
    assert readme_block(text, README_BEGIN, README_END) == readme_markdown()


def test_known_paired_difference_and_folds_won():
    # a - b per fold: -0.04 -0.05 -0.06 -0.05 -0.05: mean -0.05, sample std sqrt(0.0002 / 4), 0 folds won
    # mAP2: +0.02 -0.01 +0.03 +0.02 +0.04: mean +0.02, std sqrt(0.0014 / 4), 4 folds won
    text = flat(findings_markdown(hand_built(known([-0.04, -0.05, -0.06, -0.05, -0.05],
                                                   [0.02, -0.01, 0.03, 0.02, 0.04]))))
    se8, se2 = math.sqrt(0.0002 / 4) / math.sqrt(5), math.sqrt(0.0014 / 4) / math.sqrt(5)
    assert f"{se8:.3f}" == "0.003" and f"{se2:.3f}" == "0.008"
    assert ("APSE + GEP is 0.050 ± 0.003 mAP8 below the trained linear N-pair floor (0 of 5 folds) "
            "and 0.020 ± 0.008 mAP2 above it (4 of 5)") in text
    assert "(602 images, 5 held-out folds, seed 0, EfficientNet-Lite0)" in text
    assert "(cached features, 224 px)" in text and "then 5 epochs of every layer at 160 px" in text
    assert "451-452 training images" in text


def test_direction_words_follow_the_numbers():
    text = flat(findings_markdown(hand_built(known([0.04, 0.05, 0.06, 0.05, 0.05],
                                                   [-0.02, -0.03, -0.01, -0.02, -0.02]))))
    assert ("APSE + GEP is 0.050 ± 0.003 mAP8 above the trained linear N-pair floor (5 of 5 folds) "
            "and 0.020 ± 0.003 mAP2 below it (0 of 5)") in text


def test_probe_rows_helped_and_the_papers_claim():
    base = [0.45, 0.47, 0.43, 0.46, 0.44]
    values = {("core", "probe", v, "mAP8"): base for v in ("apse-gep", "apse-wep", "softmax", "npair")}
    values.update({
        ("core", "finetune", "npair", "mAP8"): plus(base, [0.03, 0.02, 0.03, 0.04, 0.03]),  # 5 of 5, clear
        ("core", "finetune", "apse-gep", "mAP8"): plus(base, [0.01, -0.01, 0.02, -0.02, 0.005]),  # noise
        ("core", "finetune", "apse-wep", "mAP8"): plus(base, [-0.03, -0.02, -0.03, -0.04, -0.03]),
        ("core", "finetune", "softmax", "mAP8"): plus(base, [0.0, 0.01, -0.01, 0.0, 0.005]),
    })
    # frozen: APSE + GEP beats the floor clearly; fine-tuned: it does not (npair fine-tuned is higher)
    values.update(known([0.04, 0.05, 0.06, 0.05, 0.05], [0.0] * 5))
    values[("core", "frozen", "apse-gep", "mAP2")] = plus(NPAIR2, [0.01, -0.01, 0.02, 0.0, 0.01])
    text = flat(findings_markdown(hand_built(values)))
    assert ("Moving the backbone helps N-pair (+0.030 ± 0.003 mAP8 over its own probe, 5 of 5 folds), "
            "not APSE + GEP (+0.001 ± 0.007, 3 of 5), APSE + WEP (-0.030 ± 0.003, 0 of 5) nor softmax") in text
    assert "so the gap" not in text  # the focus is not helped: no "so"
    assert "The papers' claim that APSE beats N-pair on mAP8 reproduces here only frozen." in text


def test_missing_runs_are_an_error_not_a_blank():
    results = hand_built()
    results["diagnosis", "finetune"] = [r for r in results["diagnosis", "finetune"] if r["variant"] != "ep-mo-conv4"]
    with pytest.raises(KeyError, match="ep-mo-conv4"):
        findings_markdown(results)


def test_replace_block_and_check(tmp_path, capsys):
    text = f"# t\n\n## What the experiments found\n\n{BEGIN}\nold 0.065\n{END}\n\n## Next\n"
    assert readme_block(text) == "old 0.065\n"
    assert replace_block(text, "new\n") == f"# t\n\n## What the experiments found\n\n{BEGIN}\nnew\n{END}\n\n## Next\n"
    readme = tmp_path / "README.md"
    shutil.copy(README, readme)
    readme.write_text(readme.read_text().replace("0.065 ± 0.017", "0.066 ± 0.017"))
    assert main(["--check", "--readme", str(readme)]) == 1
    err = capsys.readouterr().err
    assert "out of date" in err and "-  linear N-pair floor" not in err and "0.066 ± 0.017" in err
    assert main(["--readme", str(readme)]) == 0
    assert readme.read_text() == README.read_text()
    assert main(["--check", "--readme", str(readme)]) == 0


def test_claims_that_need_a_gap_are_not_made_without_one():
    # APSE + GEP above the floor on mAP8, below it on mAP2: no "deficit", no "gain" to explain
    text = flat(findings_markdown(hand_built(known([0.04, 0.05, 0.06, 0.05, 0.05],
                                                   [-0.02, -0.03, -0.01, -0.02, -0.02]))))
    assert "polarity-level gain" not in text and "emotion-level deficit" not in text
    assert "EP against N-pair changes mAP2 by" in text and "the network's heads and CLB change mAP8 by" in text
