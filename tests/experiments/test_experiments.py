"""The experiments runner (config expansion, caching, summaries) and the papers' tables.

Training is replaced by a stub (monkeypatched ``execute``), so these tests need neither the FI images
nor any training time.
"""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from apse import experiments as ex
from apse import paper_results as pr
from apse.config import load_config

BASE = ex.DEFAULT_BASE


# ------------------------------------------------------------------------------------------ papers
@pytest.mark.parametrize("table", list(pr.TABLES.values()), ids=list(pr.TABLES))
def test_every_paper_row_has_all_metrics_in_range(table):
    assert table["source"] and table["title"] and "note" in table
    assert table["rows"], table["id"]
    for row in table["rows"]:
        assert tuple(row["values"]) == tuple(table["metrics"]), (table["id"], row["method"])
        for m, v in row["values"].items():
            assert isinstance(v, float) and 0.0 < v < 1.0, (table["id"], row["method"], m, v)
    methods = [r["method"] for r in table["rows"]]
    assert len(set(methods)) == len(methods), f"duplicate method names in {table['id']}"


def test_seven_metric_tables():
    for t in (pr.ICCV_TABLE1, pr.ICCV_TABLE2, pr.TMM_TABLE1, pr.TMM_TABLE2, pr.TMM_TABLE4):
        assert t["metrics"] == pr.PAPER_METRICS and len(pr.PAPER_METRICS) == 7
        assert all(len(r["values"]) == 7 for r in t["rows"])
    assert len(pr.ICCV_TABLE1["rows"]) == 16 and len(pr.TMM_TABLE1["rows"]) == 23
    assert len(pr.ICCV_TABLE2["rows"]) == 10 and len(pr.TMM_TABLE2["rows"]) == 12
    assert len(pr.TMM_TABLE3["rows"]) == 6 and len(pr.TMM_TABLE4["rows"]) == 8


def test_numbers_repeated_across_tables_agree():
    gep = pr.row_values("tmm-table1", "New APSE (GEP)")
    wep = pr.row_values("iccv-table1", "APSE (WEP)")
    assert pr.row_values("tmm-table1", "Old APSE (WEP)") == wep
    assert pr.row_values("iccv-table2", "AT + WEP + HA + CLB + MO (APSE)") == wep
    assert pr.row_values("tmm-table2", "AT + GEP + HA + CLB + MO (APSE)") == gep
    assert pr.row_values("tmm-table4", "conv3 (p) + conv5 (e)") == gep
    adaptive = pr.row_values("tmm-table3", "adaptive (ours)")
    assert adaptive == {m: gep[m] for m in ("mAP8", "mAP2")}
    # the AT-only ablation row repeats Table 1's softmax ResNet, N-pair repeats N-pair
    assert pr.row_values("iccv-table2", "AT") == pr.row_values("iccv-table1", "ResNet (S)")
    assert pr.row_values("iccv-table2", "N-pair") == pr.row_values("iccv-table1", "N-pair loss (ResNet)")
    # every ICCV Table 1 row that TMM Table I repeats has the same numbers
    shared = {"SIFT": "SIFT", "HOG": "HOG", "Sentibank": "SentiBank", "MVSO": "MVSO",
              "ResNet (S)": "ResNet (S)", "Triplet loss (ResNet)": "Triplet loss",
              "Contrastive loss (ResNet)": "Contrastive loss", "Yang et al. (ResNet)": "Yang et al."}
    for iccv, tmm in shared.items():
        assert pr.row_values("iccv-table1", iccv) == pr.row_values("tmm-table1", tmm), iccv
    # the ten ICCV ablation rows reappear in TMM Table II (WEP -> GEP for the last one)
    tmm_rows = [r["values"] for r in pr.TMM_TABLE2["rows"]]
    for row in pr.ICCV_TABLE2["rows"][:-1]:
        assert row["values"] in tmm_rows, row["method"]


def test_ablation_flags_are_consistent():
    for table in (pr.ICCV_TABLE2, pr.TMM_TABLE2):
        for row in table["rows"]:
            f = row["flags"]
            assert set(f) == set(pr.ABLATION_FLAGS)
            assert f["SO"] != f["MO"], row["method"]                         # exactly one output
            assert sum(f[k] for k in ("N-pair", "EP", "WEP", "GEP")) <= 1, row["method"]
            assert not (f["SA"] and f["HA"]), row["method"]
            assert not f["CLB"] or f["MO"], row["method"]                    # CLB needs two levels
            assert (f["AT"] or f["N-pair"] or f["EP"]), row["method"]
    # the paper's point: each switch added improves mAP8 within the second part of ICCV Table 2
    m8 = [r["values"]["mAP8"] for r in pr.ICCV_TABLE2["rows"][5:]]
    assert m8 == sorted(m8)


def test_best_rows_are_what_the_papers_claim():
    t4 = pr.TMM_TABLE4["rows"]
    best = {m: (min if m == "ANMRR" else max)(t4, key=lambda r: r["values"][m])["method"] for m in pr.PAPER_METRICS}
    assert sum(v == "conv3 (p) + conv5 (e)" for v in best.values()) == 6  # "six out of seven criteria"
    t3 = max(pr.TMM_TABLE3["rows"], key=lambda r: r["values"]["mAP8"])
    assert t3["beta"] is None
    assert pr.LAMBDA_FIGURE["best_lambda"] == 0.5


# ------------------------------------------------------------------------------------- definitions
def test_every_variant_paper_reference_resolves_and_names_are_unique():
    for name in ex.EXPERIMENTS:
        exp = ex.get_experiment(name)
        names = [v.name for v in exp.variants]
        assert len(set(names)) == len(names), name
        for v in exp.variants:
            if v.paper:
                assert ex._paper_values(v.paper), (name, v.name)
    with pytest.raises(ValueError, match="valid names"):
        ex.get_experiment("nope")


def test_floor_is_in_table1_and_ablation():
    for name in ("table1", "ablation"):
        floor = [v for v in ex.get_experiment(name).variants if v.untrained]
        assert [v.name for v in floor] == ["floor"]
        assert floor[0].overrides["attention"] == "none" and floor[0].overrides["fusion"] == "single"


@pytest.mark.parametrize("name", ["table1", "ablation", "beta", "lambda", "layers"])
def test_expand_configs(name):
    base = load_config(BASE)
    exp = ex.get_experiment(name)
    specs = ex.expand(exp, base, folds=2, seeds=[0, 1])          # raises if an override is invalid
    assert len(specs) == len(exp.variants) * 2 * 2
    # every distinct run has its own key (variants with identical overrides share theirs)
    distinct = {(json.dumps(s.variant.overrides, sort_keys=True), s.variant.untrained, s.fold, s.seed) for s in specs}
    assert len({s.key for s in specs}) == len(distinct)
    assert len({s.filename for s in specs}) == len(specs)
    for s in specs:
        assert s.config.folds == ex.K_FOLDS and s.config.fold == s.fold and s.config.seed == s.seed
        assert s.config.protocol == "split"
        for k, v in s.variant.overrides.items():
            assert s.config.to_dict()[k] == v, (s.variant.name, k)


def test_run_keys_follow_the_config():
    base = load_config(BASE)
    exp = ex.get_experiment("beta")
    exp = ex.Experiment(exp.name, exp.title, exp.variants[:2], folds=2)
    specs = ex.expand(exp, base, folds=2, seeds=[0, 1])
    again = ex.expand(exp, base, folds=2, seeds=[0, 1])
    assert [s.key for s in again] == [s.key for s in specs]       # deterministic
    longer = ex.expand(exp, base, folds=2, seeds=[0, 1], overrides={"epochs": base.epochs + 1})
    assert not {s.key for s in longer} & {s.key for s in specs}   # epochs are part of the key
    moved = ex.expand(exp, base, folds=2, seeds=[0, 1], overrides={"feature_cache": "/elsewhere"})
    assert [s.key for s in moved] == [s.key for s in specs]       # where files go is not
    with pytest.raises(ValueError, match="folds"):
        ex.expand(exp, base, folds=6)


def test_ablation_rows_without_attention_repeat_the_runs_without_at():
    exp = ex.get_experiment("ablation")
    specs = {s.variant.name: s for s in ex.expand(exp, load_config(BASE), folds=1)}
    assert specs["at-npair-so"].key == specs["npair-so"].key and specs["at-ep-so"].key == specs["ep-so"].key
    others = [s.key for n, s in specs.items() if n not in ("at-npair-so", "at-ep-so")]
    assert len(set(others)) == len(others)


# --------------------------------------------------------------------------------- caching/summaries
def _stub(calls):
    def execute(spec, ctx):
        calls.append((spec.variant.name, spec.fold, spec.seed))
        # deterministic fake metrics: depend on variant position and fold
        base = 0.3 + 0.01 * (sum(map(ord, spec.variant.name)) % 20)
        metrics = {m: base + 0.02 * spec.fold for m in ex.METRICS}
        return {"test_metrics": metrics, "val_metrics": metrics, "chosen_epoch": 3 + spec.fold,
                "val_curve": [0.1, 0.2], "loss_curve": [1.0, 0.5], "split": {"train": 453, "val": 28, "test": 121},
                "train_time_s": 0.0, "wall_time_s": 0.5}
    return execute


def test_run_experiment_caches_skips_and_forces(tmp_path):
    calls = []
    out = ex.run_experiment("beta", folds=2, seeds=[0], results_dir=tmp_path, execute=_stub(calls), log=lambda m: None,
                            command="python -m apse.experiments beta --folds 2")
    n = len(ex.get_experiment("beta").variants) * 2
    assert len(calls) == n and out["ran"] == n and out["cached"] == 0
    files = sorted((tmp_path / "beta" / "runs").glob("*.json"))
    assert len(files) == n
    rec = json.loads(files[0].read_text())
    assert rec["key"] in files[0].name and rec["test_metrics"] and "config" in rec
    assert files[0].stat().st_size < 8000                          # small: no embeddings

    calls.clear()
    out = ex.run_experiment("beta", folds=2, results_dir=tmp_path, execute=_stub(calls), log=lambda m: None)
    assert calls == [] and out["cached"] == n                       # everything skipped

    out = ex.run_experiment("beta", folds=3, results_dir=tmp_path, execute=_stub(calls), log=lambda m: None)
    assert sorted({c[1] for c in calls}) == [2] and out["cached"] == n  # only the new fold runs

    calls.clear()
    ex.run_experiment("beta", folds=1, force=True, results_dir=tmp_path, execute=_stub(calls), log=lambda m: None)
    assert len(calls) == len(ex.get_experiment("beta").variants)   # --force re-runs

    # a corrupt or foreign file is not trusted
    victim = sorted((tmp_path / "beta" / "runs").glob("beta-0.2-f0-*.json"))[0]
    victim.write_text("{not json")
    calls.clear()
    ex.run_experiment("beta", folds=1, results_dir=tmp_path, execute=_stub(calls), log=lambda m: None)
    assert calls == [("beta-0.2", 0, 0)]


def test_identical_runs_are_shared_between_experiments(tmp_path):
    calls = []
    ex.run_experiment("beta", folds=1, results_dir=tmp_path, execute=_stub(calls), log=lambda m: None)
    calls.clear()
    ex.run_experiment("lambda", folds=1, results_dir=tmp_path, execute=_stub(calls), log=lambda m: None)
    # lambda = 0.5 with adaptive beta is the base APSE config: the same run as beta's "adaptive"
    assert ("lam-0.5", 0, 0) not in calls and len(calls) == len(ex.get_experiment("lambda").variants) - 1
    reused = json.loads(next((tmp_path / "lambda" / "runs").glob("lam-0.5-*.json")).read_text())
    assert reused["reused_from"].startswith("beta/runs/beta-adaptive-f0-s0-")
    assert (tmp_path / "lambda" / "lambda.png").stat().st_size > 1000


def test_summary_tables(tmp_path):
    calls = []
    ex.run_experiment("beta", folds=3, seeds=[0], results_dir=tmp_path, execute=_stub(calls), log=lambda m: None,
                      command="python -m apse.experiments beta --folds 3")
    exp = ex.get_experiment("beta")
    with open(tmp_path / "beta" / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["variant"] for r in rows] == [v.name for v in exp.variants]
    for r in rows:
        assert r["n_runs"] == "3" and r["folds"] == "0 1 2" and r["seeds"] == "0"
        base = 0.3 + 0.01 * (sum(map(ord, r["variant"])) % 20)
        vals = [base, base + 0.02, base + 0.04]
        assert math.isclose(float(r["mAP8_mean"]), sum(vals) / 3, abs_tol=1e-6)
        assert math.isclose(float(r["mAP8_std"]), 0.02, abs_tol=1e-6)      # sample std of +-0.02 steps
        assert all(f"{m}_mean" in r for m in ex.METRICS)
    adaptive = rows[-1]
    assert float(adaptive["paper_mAP8"]) == 0.7433 and adaptive["paper_FT"] == ""
    md = (tmp_path / "beta" / "summary.md").read_text()
    for text in ("FI subset (602 images)", "EfficientNet-Lite0, ImageNet-pretrained, frozen (cached features)",
                 "paper (FI, ResNet-50)", "ours (FI subset)", "Folds: 3 of a 5-fold", "seeds: 0", "epochs:",
                 "Wall time:", "image size", "python -m apse.experiments beta --folds 3", " ± ",
                 "Kendall tau"):
        assert text in md, text
    assert md.count("| paper (FI, ResNet-50) |") == len(exp.variants)
    index = ex.write_index(tmp_path).read_text()
    assert "## [beta](beta/summary.md)" in index and "python -m apse.experiments beta --folds 3" in index
    assert index.count("| beta") == len(exp.variants) and "0.7433" in index


def test_ordering_report():
    rows = [{"variant": v, "mean": {"mAP8": o, "ANMRR": 1 - o}, "paper": {"mAP8": p, "ANMRR": 1 - p}}
            for v, o, p in (("a", 0.1, 0.3), ("b", 0.2, 0.2), ("c", 0.3, 0.1))]
    rep = ex.ordering_report(rows, "mAP8")
    assert rep["kendall_tau"] == -1.0 and len(rep["swapped"]) == 3
    assert rep["ours_order"] == ["c", "b", "a"] and rep["paper_order"] == ["a", "b", "c"]
    same = [dict(r, paper=dict(r["mean"])) for r in rows]
    rep = ex.ordering_report(same, "ANMRR")                          # lower is better handled
    assert rep["kendall_tau"] == 1.0 and rep["swapped"] == [] and rep["ours_order"] == ["c", "b", "a"]


def test_cli_dry_run(tmp_path, capsys):
    assert ex.main(["beta", "--folds", "1", "--results", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("to run") == len(ex.get_experiment("beta").variants)


def test_floor_line_val_column_and_attention_choice(tmp_path):
    calls = []
    out = ex.run_experiment("table1", folds=1, results_dir=tmp_path, execute=_stub(calls), log=lambda m: None)
    means = {r["variant"]: r["mean"] for r in out["summary"]}
    floor8 = max(means["softmax"]["mAP8"], means["npair"]["mAP8"])
    md = (tmp_path / "table1" / "summary.md").read_text()
    assert f"mAP8 {floor8:.4f}" in md and "| val mAP8 |" in md
    above = [r["label"] for r in out["summary"] if not r["floor"] and r["mean"]["mAP8"] > floor8]
    line = next(l for l in md.splitlines() if l.startswith("Floor:"))
    assert all(label in line for label in above) and ("none" in line) == (not above)

    tmp_path = tmp_path / "fresh"   # no table1 runs to share: every attention row has its own stub scores
    ex.run_experiment("attention", folds=1, results_dir=tmp_path, execute=_stub(calls), log=lambda m: None)
    text = (tmp_path / "attention" / "attention.md").read_text()
    assert "(`mask-sum`)" in text.split("Choice")[1] and "minus the papers' row" not in text  # one run: no SE
    ex.run_experiment("attention", folds=2, results_dir=tmp_path, execute=_stub(calls), log=lambda m: None)
    rows = {r["variant"]: r for r in ex.summarise_experiment(ex.get_experiment("attention"), [
        json.loads(p.read_text()) for p in (tmp_path / "attention" / "runs").glob("*.json")])}
    # the stub's val scores differ between variants by the same amount on every fold: paired SE 0, so
    # the best row wins whenever it is above the papers' row
    best = max(rows.values(), key=lambda r: r["val_mean"]["mAP8"])
    text = (tmp_path / "attention" / "attention.md").read_text()
    assert f"**{best['label']}** (`{best['variant']}`)" in text.split("Choice")[1]
    assert text.count("paired over 2 folds") == len(rows) - 1


def test_paired_difference_averages_seeds_within_folds():
    a = {(0, 0): 0.50, (0, 1): 0.54, (1, 0): 0.40, (1, 1): 0.40, (2, 0): 0.61, (3, 0): 0.9}
    b = {"0-0": 0.45, "0-1": 0.45, "1-0": 0.42, "1-1": 0.40, "2-0": 0.60}      # fold 3 missing in b
    d = ex.paired_difference(a, b)
    per_fold = [0.07, -0.01, 0.01]                                              # seeds averaged first
    mean = sum(per_fold) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in per_fold) / 2)
    assert d["n_folds"] == 3 and d["wins"] == 2
    assert d["mean"] == pytest.approx(mean) and d["se"] == pytest.approx(sd / math.sqrt(3))
    assert ex.paired_difference({(0, 0): 1.0}, {(0, 0): 0.0}) is None          # one fold: no standard error


def test_load_records_returns_the_current_runs_only(tmp_path):
    calls = []
    ex.run_experiment("beta", folds=2, seeds=[0, 1], results_dir=tmp_path, execute=_stub(calls), log=lambda m: None)
    (tmp_path / "beta" / "runs" / "beta-0.2-f0-s0-000000000000.json").write_text('{"key": "000000000000"}')
    records = ex.load_records("beta", tmp_path, folds=2)              # seeds read from summary.csv
    assert len(records) == len(calls) == len(ex.get_experiment("beta").variants) * 4
    assert {(r["fold"], r["seed"]) for r in records} == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_lr_experiment_shares_the_base_lr_runs_and_picks_on_validation(tmp_path):
    exp = ex.get_experiment("lr")
    specs = {s.variant.name: s for s in ex.expand(exp, load_config(BASE), folds=1)}
    table1 = {s.variant.name: s for s in ex.expand(ex.get_experiment("table1"), load_config(BASE), folds=1)}
    assert specs["npair-lr0.2"].key == table1["npair"].key and specs["apse-gep-lr0.2"].key == table1["apse-gep"].key
    assert specs["npair-lr0.02"].config.lr == 0.02 and specs["npair-lr0.02"].key != table1["npair"].key

    calls = []
    out = ex.run_experiment("lr", folds=2, results_dir=tmp_path, execute=_stub(calls), log=lambda m: None)
    text = (tmp_path / "lr" / "lr.md").read_text()
    for loss in ("softmax", "npair", "apse-gep"):
        cands = [r for r in out["summary"] if r["param"][0] == loss]
        best = max(cands, key=lambda r: r["val_mean"]["mAP8"])
        line = next(l for l in text.splitlines() if l.startswith(f"| {loss} |"))
        assert line.split("|")[2].strip() == f"{best['param'][1]:g}"


def test_finetune_regime_keys_runs_apart_and_writes_its_own_folder(tmp_path):
    """--regime finetune: the same variants with every layer trained on images, keyed by their config
    (never sharing a cached frozen run), in results/<name>-finetune/; load_records finds them."""
    seen = []

    def execute(spec, ctx):
        seen.append(spec.config)
        return {"test_metrics": {m: 0.5 for m in ex.METRICS}, "val_metrics": {m: 0.4 for m in ex.METRICS},
                "chosen_epoch": 1}

    ft = ex.regime_overrides("finetune")
    assert ex.regime_overrides("frozen") == {} and ft["cache_features"] is False
    ex.run_experiment("beta", folds=1, results_dir=tmp_path, execute=execute, log=lambda m: None)
    frozen_cfgs = list(seen)
    seen.clear()
    ex.run_experiment("beta", folds=1, results_dir=tmp_path, execute=execute, log=lambda m: None,
                      regime="finetune")
    n = len(ex.get_experiment("beta").variants)
    assert len(seen) == n                                # nothing reused from the frozen runs
    for cfg in seen:
        assert cfg.cache_features is False and cfg.image_size == ft["image_size"]
        assert (cfg.backbone_lr, cfg.freeze_bn, cfg.epochs) == (ft["backbone_lr"], ft["freeze_bn"], ft["epochs"])
    assert all(c.cache_features for c in frozen_cfgs)
    assert len(list((tmp_path / "beta-finetune" / "runs").glob("*.json"))) == n
    assert (tmp_path / "beta-finetune" / "summary.md").is_file()
    loaded = ex.load_records("beta", tmp_path, folds=1, regime="finetune")
    assert len(loaded) == n and all(r["config"]["cache_features"] is False for r in loaded)
    with pytest.raises(ValueError, match="unknown regime"):
        ex.regime_overrides("thawed")
    # --regime probe: the fine-tuning regime's first stage alone (frozen, at its image size, as the probe)
    seen.clear()
    ex.run_experiment("beta", folds=1, results_dir=tmp_path, execute=execute, log=lambda m: None,
                      regime="probe")
    assert len(seen) == n and (tmp_path / "beta-probe" / "summary.md").is_file()
    for cfg in seen:
        assert cfg.cache_features and cfg.image_size == ft["image_size"] and cfg.resize == ft["resize"]
        assert (cfg.epochs, cfg.lr, cfg.probe_epochs) == (ft["probe_epochs"], ft["probe_lr"], 0)
        assert cfg.lr_step > cfg.epochs                  # constant lr, as in the probe stage


def test_only_runs_the_named_variants(tmp_path):
    calls = []
    out = ex.run_experiment("core", folds=2, results_dir=tmp_path, execute=_stub(calls), log=lambda m: None,
                            only=["npair", "apse-gep"])
    assert sorted(calls) == [("apse-gep", 0, 0), ("apse-gep", 1, 0), ("npair", 0, 0), ("npair", 1, 0)]
    assert [r["variant"] for r in out["summary"]] == ["npair", "apse-gep"]
    with pytest.raises(ValueError, match="has no variant 'nothing'"):
        ex.run_experiment("core", folds=1, results_dir=tmp_path, execute=_stub(calls), only=["nothing"])


def test_cli_set_is_typed_in_the_chosen_regime(tmp_path, capsys):
    """--set backbone_lr=... is a fine-tuning setting: valid with --regime finetune (the base config is
    frozen, where it would be refused), keyed into the runs; refused in the frozen regime."""
    from apse.config import ConfigError

    assert ex.main(["core", "--regime", "finetune", "--only", "npair", "--folds", "1", "--dry-run",
                    "--results", str(tmp_path), "--set", "backbone_lr=0.003"]) == 0
    with_set = capsys.readouterr().out
    ex.main(["core", "--regime", "finetune", "--only", "npair", "--folds", "1", "--dry-run",
             "--results", str(tmp_path)])
    assert with_set.split()[1] != capsys.readouterr().out.split()[1]   # another run key
    with pytest.raises(ConfigError, match="cache_features=false"):
        ex.main(["core", "--only", "npair", "--dry-run", "--results", str(tmp_path),
                 "--set", "backbone_lr=0.003"])


def test_only_folds_runs_just_those_folds(tmp_path):
    seen = []

    def execute(spec, ctx):
        seen.append(spec.fold)
        return {"test_metrics": {m: 0.5 for m in ex.METRICS}, "val_metrics": None, "chosen_epoch": 1}

    ex.run_experiment("core", results_dir=tmp_path, execute=execute, log=lambda m: None,
                      only=["npair"], only_folds=[3, 4])
    assert seen == [3, 4]
    ex.run_experiment("core", results_dir=tmp_path, execute=execute, log=lambda m: None, only=["npair"])
    assert seen == [3, 4, 0, 1, 2]                     # the other folds, 3 and 4 from the cache
    with pytest.raises(ValueError, match="only_folds"):
        ex.run_experiment("core", results_dir=tmp_path, execute=execute, only_folds=[5])


def test_a_regime_reads_its_own_cached_runs_and_leaves_their_files_alone(tmp_path):
    # lambda trains the APSE + GEP run that beta then reuses; run again, lambda must find its own file
    # (results/lambda-finetune/runs) first, not rewrite it as a copy of beta's
    calls = []
    for name in ("lambda", "beta"):
        ex.run_experiment(name, folds=1, results_dir=tmp_path, execute=_stub(calls), log=lambda m: None,
                          regime="finetune")
    own = sorted((tmp_path / "lambda-finetune" / "runs").glob("*.json"))
    before = {p: p.read_bytes() for p in own}
    assert not any("reused_from" in json.loads(b) for b in before.values())
    out = ex.run_experiment("lambda", folds=1, results_dir=tmp_path, execute=_stub(calls), log=lambda m: None,
                            regime="finetune")
    assert out["ran"] == 0 and {p: p.read_bytes() for p in own} == before


@pytest.mark.parametrize("regime", ex.REGIMES)
def test_figures_train_the_runners_config_of_their_regime(tmp_path, monkeypatch, regime):
    """Issue #24: ``python -m apse.experiments figures --regime finetune`` trained the frozen regime (its
    config was built without the regime). Each figure's model is trained with the config the runner
    gives the same variant, fold, seed and regime; the figures of a regime go to its own folder."""
    import importlib

    figures = importlib.import_module("apse.experiments.figures")

    class Stop(Exception):
        pass

    class Context:
        def __init__(self, data):
            self.dataset = None

    trained, runner = {}, {}

    class Trainer:  # records the config of the first figure model, then stops before any training
        def __init__(self, cfg, dataset, out, progress=False):
            trained["config"] = cfg
            raise Stop

    def execute(spec, ctx):  # the runner's config for the same run, recorded the same way
        runner[spec.variant.name] = spec.config
        raise Stop

    monkeypatch.setattr(figures, "Trainer", Trainer)
    monkeypatch.setattr(figures, "_Context", Context)
    with pytest.raises(Stop):
        ex.main(["figures", "--regime", regime, "--results", str(tmp_path), "--epochs", "3"])
    first = ex.get_experiment("figures").variants[0].name
    with pytest.raises(Stop):
        ex.run_experiment("figures", folds=1, results_dir=tmp_path, execute=execute, regime=regime,
                          overrides={"epochs": 3}, only=[first], log=lambda m: None)
    assert trained["config"] == runner[first], (
        f"figures --regime {regime}: cache_features={trained['config'].cache_features}, "
        f"image_size={trained['config'].image_size}; the runner's: cache_features="
        f"{runner[first].cache_features}, image_size={runner[first].image_size}")
    assert (tmp_path / ex.regime_dir("figures", regime)).is_dir()


def test_the_recorded_code_hash_covers_every_apse_module_a_run_imports(tmp_path, monkeypatch):
    """Issue #24: the runs' ``code_hash`` hashed a hand-written module list that missed the modules split
    out later (fusion, training_data, checkpoints, rng). It hashes every apse module loaded, so an edit of
    any of them changes it; unchanged code gives the same hash."""
    import importlib
    from pathlib import Path

    split_out = [importlib.import_module(name)  # a run imports them
                 for name in ("apse.fusion", "apse.training_data", "apse.checkpoints", "apse.rng")]

    def hash_of_a_run():
        ex.run_experiment("core", folds=1, only=["npair"], force=True, results_dir=tmp_path / "results",
                          execute=_stub([]), log=lambda m: None)
        (path,) = (tmp_path / "results" / "core" / "runs").glob("*.json")
        return json.loads(path.read_text())["code_hash"]

    first = hash_of_a_run()
    assert hash_of_a_run() == first
    for module in split_out:
        name = module.__name__
        edited = tmp_path / f"{name}.py"
        edited.write_text(Path(module.__file__).read_text() + "\n# an edit\n")
        with monkeypatch.context() as m:
            m.setattr(module, "__file__", str(edited))
            assert hash_of_a_run() != first, f"an edit of {name} leaves the recorded code_hash unchanged"
    assert hash_of_a_run() == first


def test_the_figures_heads_report_is_the_run_records_attention_report():
    """figures._heads takes accuracy and top confidence from evaluation.attention_report (what a run
    record's attention_heads hold), so the figures and the tables cannot disagree about the heads."""
    from types import SimpleNamespace

    from torch.utils.data import Subset

    from apse.data import FeatureDataset
    from apse.evaluation import attention_report
    from apse.experiments import figures
    from apse.model import APSENet

    torch.manual_seed(0)
    model = APSENet("efficientnet_lite0", pretrained=False, attention="hierarchical", fusion="clb").eval()
    with torch.no_grad():
        maps = model.backbone(torch.randn(16, 3, 64, 64))
    data = FeatureDataset({s: t.unsqueeze(0) for s, t in maps.items()}, torch.arange(8).repeat(2))
    test_set = Subset(data, list(range(3, 16)))
    heads = figures._heads(model, SimpleNamespace(test_set=test_set))
    report = attention_report(model, test_set)
    assert heads["polarity_argmax_accuracy"] == round(report["polarity_accuracy"], 4)
    assert heads["emotion_max_confidence_mean"] == round(report["emotion_top_confidence"], 4)
    assert 0.5 <= heads["polarity_max_confidence_mean"] <= 1 and 0.125 <= heads["emotion_max_confidence_mean"] <= 1
    low, high = heads["polarity_confidence_range"]
    assert 0 <= low <= high <= 1 and heads["emotion_logit_std"] > 0


def test_a_run_record_says_where_it_ran(tmp_path):
    """Same key, other torch build or CPU: other last digits (chapter 13), so each record names its
    torch version, thread count and CPU; none of it enters the key."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ex.run_experiment("core", folds=1, only=["npair"], force=True, results_dir=tmp_path / "results",
                          execute=_stub([]), log=lambda m: None)
    finally:
        torch.set_num_threads(before)
    (path,) = (tmp_path / "results" / "core" / "runs").glob("*.json")
    record = json.loads(path.read_text())
    assert record["machine"]["torch_version"] == torch.__version__
    assert record["machine"]["threads"] == 1 and record["machine"]["cpu"]
    spec = next(s for s in ex.experiment_specs("core", folds=1) if s.variant.name == "npair")
    assert record["key"] == spec.key
