"""The papers' published numbers, as plain Python data (FI dataset, ResNet-50 backbone).

Sources (both in ``../shared/papers``):

* ICCV 2019: Yao, She, Zhao, Liang, Lai, Yang, "Attention-aware Polarity Sensitive Embedding for
  Affective Image Retrieval" (``apse-iccv2019.md``): Table 1 (FI retrieval) and Table 2 (ablation).
  The markdown tables are clean; they are transcribed as printed.
* IEEE TMM 2020, the journal version with the GEP loss (``apse-tmm2020.txt``, a PDF-to-text
  extraction): Table I (FI retrieval), Table II (ablation), Table III (beta), Table IV (stage
  combinations). The extraction prints each table column by column; the numeric columns are complete
  (every column has one value per row) and are transcribed here. What could NOT be read with
  confidence is said in each table's ``note`` (mainly Table II's check marks).
* Neither paper prints numbers for the lambda curves (ICCV Fig. 5, TMM Fig. 6) or for the
  small-dataset bars (ICCV Fig. 4, TMM Fig. 5): see :data:`LAMBDA_FIGURE`.

Every row stores the seven metrics of the papers (:data:`PAPER_METRICS`; the papers describe F1 but
print no F1 column for FI). ANMRR is "lower is better", every other metric "higher is better".

Each table is a dict ``{"id", "title", "source", "note", "metrics", "rows"}``; a row is a dict with
``"method"`` (the paper's label) and ``"values"`` (metric -> float), plus table-specific keys
(``"group"``, ``"dim"``, ``"flags"``, ``"beta"``, ``"combination"``).
"""
from __future__ import annotations

from typing import Any

__all__ = ["PAPER_METRICS", "ICCV_TABLE1", "ICCV_TABLE2", "TMM_TABLE1", "TMM_TABLE2", "TMM_TABLE3",
           "TMM_TABLE4", "LAMBDA_FIGURE", "TABLES", "ABLATION_FLAGS", "PAPER_LABEL", "paper_row",
           "row_values"]

#: The seven metrics the papers print for FI, in their column order.
PAPER_METRICS = ("mAP8", "mAP2", "FT", "ST", "NN", "DCG", "ANMRR")

#: How every table of paper numbers is labelled beside ours (BOOK.md convention).
PAPER_LABEL = "paper (FI, ResNet-50)"


def _rows(spec: list[tuple], keys: tuple[str, ...], metrics: tuple[str, ...] = PAPER_METRICS) -> list[dict]:
    """Build row dicts from tuples ``(*keys, *metric values)``."""
    rows = []
    for item in spec:
        head, values = item[:len(keys)], item[len(keys):]
        if len(values) != len(metrics):  # pragma: no cover - guarded by the tests too
            raise ValueError(f"row {head} has {len(values)} values, expected {len(metrics)}")
        row: dict[str, Any] = dict(zip(keys, head))
        row["values"] = dict(zip(metrics, (float(v) for v in values)))
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------- ICCV
ICCV_TABLE1: dict[str, Any] = {
    "id": "iccv-table1",
    "title": "ICCV 2019 Table 1: retrieval performance on FI",
    "source": "apse-iccv2019.md, Table 1 (section 4.4); transcribed as printed.",
    "note": "FI 80/5/15 random split, test images query the training images. 'S' = trained with "
            "softmax, features of the last FC layer. Embedding-learning rows use ResNet-50.",
    "metrics": PAPER_METRICS,
    "rows": _rows([
        ("TRA", "SIFT", 1000, 0.1705, 0.5913, 0.1830, 0.3513, 0.2462, 0.4507, 0.6553),
        ("TRA", "HOG", 1000, 0.2115, 0.6002, 0.1926, 0.3620, 0.3225, 0.4639, 0.6424),
        ("TRA", "Sentibank", 1200, 0.2337, 0.6168, 0.2422, 0.4232, 0.3990, 0.5223, 0.5934),
        ("CNN", "DeepSentiBank", 2089, 0.2559, 0.6247, 0.2658, 0.4468, 0.4583, 0.5509, 0.5655),
        ("CNN", "MVSO", 4342, 0.2798, 0.6366, 0.2877, 0.4761, 0.5158, 0.5731, 0.5346),
        ("CNN", "AlexNet (S)", 4096, 0.2709, 0.6328, 0.2795, 0.4693, 0.5038, 0.5633, 0.5463),
        ("CNN", "VggNet (S)", 4096, 0.3013, 0.6552, 0.3007, 0.4887, 0.5511, 0.5860, 0.5161),
        ("CNN", "GoogleNet (S)", 2048, 0.3583, 0.6773, 0.3571, 0.5619, 0.5816, 0.6403, 0.4517),
        ("CNN", "ResNet (S)", 2048, 0.4380, 0.7068, 0.4286, 0.6079, 0.6084, 0.6816, 0.3998),
        ("CNN", "WSCNet", 4096, 0.5060, 0.7381, 0.4653, 0.6223, 0.6358, 0.6910, 0.3872),
        ("EMB", "Contrastive loss (ResNet)", 2048, 0.3842, 0.6972, 0.3768, 0.5702, 0.5711, 0.6508, 0.4396),
        ("EMB", "Triplet loss (ResNet)", 2048, 0.5130, 0.7120, 0.4864, 0.6216, 0.5710, 0.6843, 0.3860),
        ("EMB", "N-pair loss (ResNet)", 2048, 0.5217, 0.8062, 0.4785, 0.7075, 0.5341, 0.7310, 0.3089),
        ("EMB", "Yang et al. (GoogleNet)", 640, 0.4885, 0.8098, 0.4834, 0.6978, 0.6023, 0.7802, 0.3135),
        ("EMB", "Yang et al. (ResNet)", 544, 0.6395, 0.8081, 0.5995, 0.7354, 0.6164, 0.7866, 0.2518),
        ("Ours", "APSE (WEP)", 512, 0.7344, 0.9079, 0.6985, 0.7817, 0.6613, 0.8114, 0.2201),
    ], ("group", "method", "dim")),
}


def _iccv_table1(method: str) -> tuple[float, ...]:
    """The metric values of ICCV Table 1's row `method`, in :data:`PAPER_METRICS` order: TMM Table I
    prints the same numbers for every method the two tables share (under its own labels)."""
    row = next(r for r in ICCV_TABLE1["rows"] if r["method"] == method)
    return tuple(row["values"][m] for m in PAPER_METRICS)

#: Ablation switches, in the order of the tables' columns (ICCV has WEP, TMM has GEP).
ABLATION_FLAGS = ("AT", "N-pair", "EP", "WEP", "GEP", "SA", "HA", "CLB", "SO", "MO")


def _flags(text: str) -> dict[str, bool]:
    on = set(text.split())
    unknown = on - set(ABLATION_FLAGS)
    if unknown:  # pragma: no cover
        raise ValueError(f"unknown ablation flags {sorted(unknown)}")
    return {f: f in on for f in ABLATION_FLAGS}


ICCV_TABLE2: dict[str, Any] = {
    "id": "iccv-table2",
    "title": "ICCV 2019 Table 2: ablation on FI (ResNet-50)",
    "source": "apse-iccv2019.md, Table 2 (section 4.5); check marks and numbers transcribed as printed.",
    "note": "AT = attention loss (two softmax losses, conv3 and conv5); SA = emotion attention on conv5; "
            "HA = hierarchical attention; CLB = cross-level bilinear; SO = last conv layer only; MO = conv3 + "
            "conv5 (concatenated without CLB). Row 1 (AT + SO) repeats Table 1's ResNet (S) numbers.",
    "metrics": PAPER_METRICS,
    "rows": [dict(r, flags=_flags(r.pop("flag_text"))) for r in _rows([
        ("AT", "AT SO", 0.4380, 0.7068, 0.4286, 0.6079, 0.6084, 0.6816, 0.3998),
        ("N-pair", "N-pair SO", 0.5217, 0.8062, 0.4785, 0.7075, 0.5341, 0.7310, 0.3089),
        ("EP", "EP SO", 0.5680, 0.8558, 0.5247, 0.7187, 0.5623, 0.7602, 0.2789),
        ("AT + N-pair", "AT N-pair SO", 0.6225, 0.7816, 0.5779, 0.7255, 0.5975, 0.7451, 0.2623),
        ("AT + EP", "AT EP SO", 0.6430, 0.8241, 0.6036, 0.7485, 0.6110, 0.7863, 0.2551),
        ("AT + EP + MO", "AT EP MO", 0.6680, 0.8325, 0.6365, 0.7504, 0.6278, 0.7885, 0.2421),
        ("AT + EP + SA + MO", "AT EP SA MO", 0.6938, 0.8605, 0.6417, 0.7604, 0.6290, 0.7883, 0.2396),
        ("AT + EP + HA + MO", "AT EP HA MO", 0.7051, 0.8733, 0.6696, 0.7595, 0.6393, 0.7952, 0.2388),
        ("AT + EP + HA + CLB + MO", "AT EP HA CLB MO", 0.7190, 0.8912, 0.6824, 0.7677, 0.6495, 0.8052, 0.2294),
        ("AT + WEP + HA + CLB + MO (APSE)", "AT WEP HA CLB MO",
         0.7344, 0.9079, 0.6985, 0.7817, 0.6613, 0.8114, 0.2201),
    ], ("method", "flag_text"))],
}

# -------------------------------------------------------------------------------------------- TMM
TMM_TABLE1: dict[str, Any] = {
    "id": "tmm-table1",
    "title": "TMM 2020 Table I: retrieval performance on FI",
    "source": "apse-tmm2020.txt, Table I (lines ~938-1080). The extraction prints the table column "
              "by column; each column has exactly one value per method, so the table is complete.",
    "note": "Rows shared with ICCV Table 1 have identical values. New rows: Gabor, center loss, binomial "
            "deviance, ArcFace, SphereFace, FastAP, SoftTriple; 'Yang et al.' here is the ResNet-50 "
            "re-implementation (544-d). 'Old APSE' = ICCV (WEP), 'New APSE' = TMM (GEP).",
    "metrics": PAPER_METRICS,
    "rows": _rows([
        ("TRA", "SIFT", 1000, *_iccv_table1("SIFT")),
        ("TRA", "HOG", 1000, *_iccv_table1("HOG")),
        ("TRA", "Gabor", 1000, 0.1724, 0.5942, 0.1768, 0.3395, 0.2641, 0.4434, 0.6770),
        ("TRA", "SentiBank", 1200, *_iccv_table1("Sentibank")),
        ("CNN", "DeepSentiBank", 2089, *_iccv_table1("DeepSentiBank")),
        ("CNN", "MVSO", 4342, *_iccv_table1("MVSO")),
        ("CNN", "AlexNet (S)", 4096, *_iccv_table1("AlexNet (S)")),
        ("CNN", "VGGNet (S)", 4096, *_iccv_table1("VggNet (S)")),
        ("CNN", "GoogLeNet (S)", 2048, *_iccv_table1("GoogleNet (S)")),
        ("CNN", "ResNet (S)", 2048, *_iccv_table1("ResNet (S)")),
        ("CNN", "WSCNet", 2048, *_iccv_table1("WSCNet")),  # ICCV prints 4096-d
        ("EMB", "Contrastive loss", 2048, *_iccv_table1("Contrastive loss (ResNet)")),
        ("EMB", "Triplet loss", 2048, *_iccv_table1("Triplet loss (ResNet)")),
        ("EMB", "N-pair loss", 2048, *_iccv_table1("N-pair loss (ResNet)")),
        ("EMB", "Center loss", 2048, 0.5021, 0.6943, 0.4982, 0.6082, 0.5431, 0.6789, 0.3621),
        ("EMB", "Binomial deviance", 2048, 0.5421, 0.7352, 0.4781, 0.7112, 0.5371, 0.7031, 0.3398),
        ("EMB", "ArcFace", 2048, 0.5308, 0.6910, 0.5366, 0.6675, 0.6187, 0.7232, 0.3123),
        ("EMB", "SphereFace", 2048, 0.4987, 0.6689, 0.4032, 0.6023, 0.6065, 0.6755, 0.3604),
        ("EMB", "FastAP", 2048, 0.5639, 0.7123, 0.5578, 0.6822, 0.6112, 0.7209, 0.3179),
        ("EMB", "SoftTriple", 2048, 0.5712, 0.7746, 0.5431, 0.6921, 0.6210, 0.7312, 0.3064),
        ("EMB", "Yang et al.", 544, *_iccv_table1("Yang et al. (ResNet)")),
        ("Ours", "Old APSE (WEP)", 512, *_iccv_table1("APSE (WEP)")),
        ("Ours", "New APSE (GEP)", 512, 0.7433, 0.9030, 0.7075, 0.7994, 0.6755, 0.8250, 0.2106),
    ], ("group", "method", "dim")),
}

TMM_TABLE2: dict[str, Any] = {
    "id": "tmm-table2",
    "title": "TMM 2020 Table II: ablation on FI (ResNet-50)",
    "source": "apse-tmm2020.txt, Table II (lines ~1355-1480). The 12 rows of numbers are complete "
              "(each of the 7 metric columns has 12 values).",
    "note": "The check-mark columns are scrambled by the extraction (39 marks survive, in an order "
            "that cannot be mapped to cells), and the row letters come out as (a)(b)(c)(d)(f)(e)(g)...; "
            "so the switch settings below are INFERRED, not read: the 10 rows with ICCV Table 2's "
            "numbers take ICCV's switches (WEP -> GEP for the last row); the two new rows are inferred "
            "from the text: '(e)' = AT + N-pair + MO (the multi-level output that recovers mAP2, "
            "'shown in (e) and (g)') and '(j)' = AT + GEP + HA + MO (concatenation; CLB 'shown in "
            "(k) and (l)' improves over it). Those two rows' configurations are a best reading.",
    "metrics": PAPER_METRICS,
    "rows": [dict(r, flags=_flags(r.pop("flag_text"))) for r in _rows([
        ("(a)", "AT", "AT SO", 0.4380, 0.7068, 0.4286, 0.6079, 0.6084, 0.6816, 0.3998),
        ("(b)", "N-pair", "N-pair SO", 0.5217, 0.8062, 0.4785, 0.7075, 0.5341, 0.7310, 0.3089),
        ("(c)", "EP", "EP SO", 0.5680, 0.8558, 0.5247, 0.7187, 0.5623, 0.7602, 0.2789),
        ("(d)", "AT + N-pair", "AT N-pair SO", 0.6225, 0.7816, 0.5779, 0.7255, 0.5975, 0.7451, 0.2623),
        ("(f)", "AT + EP", "AT EP SO", 0.6430, 0.8241, 0.6036, 0.7485, 0.6110, 0.7863, 0.2551),
        ("(e)", "AT + N-pair + MO (inferred)", "AT N-pair MO",
         0.6387, 0.7969, 0.5924, 0.7322, 0.6027, 0.7739, 0.2568),
        ("(g)", "AT + EP + MO", "AT EP MO", 0.6680, 0.8325, 0.6365, 0.7504, 0.6278, 0.7885, 0.2421),
        ("(h)", "AT + EP + SA + MO", "AT EP SA MO", 0.6938, 0.8605, 0.6417, 0.7604, 0.6290, 0.7883, 0.2396),
        ("(i)", "AT + EP + HA + MO", "AT EP HA MO", 0.7051, 0.8733, 0.6696, 0.7595, 0.6393, 0.7952, 0.2388),
        ("(j)", "AT + GEP + HA + MO (inferred)", "AT GEP HA MO",
         0.7289, 0.8923, 0.6990, 0.7834, 0.6571, 0.8120, 0.2221),
        ("(k)", "AT + EP + HA + CLB + MO", "AT EP HA CLB MO",
         0.7190, 0.8912, 0.6824, 0.7677, 0.6495, 0.8052, 0.2294),
        ("(l)", "AT + GEP + HA + CLB + MO (APSE)", "AT GEP HA CLB MO",
         0.7433, 0.9030, 0.7075, 0.7994, 0.6755, 0.8250, 0.2106),
    ], ("label", "method", "flag_text"))],
}

TMM_TABLE3: dict[str, Any] = {
    "id": "tmm-table3",
    "title": "TMM 2020 Table III: fixed beta vs adaptive beta (GEP), FI",
    "source": "apse-tmm2020.txt, Table III (lines ~1446-1470); only mAP8 and mAP2 are printed.",
    "note": "beta = None is the adaptive beta_ij = exp(-w_ij) ('ours'), equal to Table I's New APSE.",
    "metrics": ("mAP8", "mAP2"),
    "rows": _rows([
        (0.0, "beta = 0", 0.7303, 0.8870),
        (0.2, "beta = 0.2", 0.7321, 0.8885),
        (0.4, "beta = 0.4", 0.7320, 0.8923),
        (0.6, "beta = 0.6", 0.7347, 0.8972),
        (0.8, "beta = 0.8", 0.7266, 0.8867),
        (None, "adaptive (ours)", 0.7433, 0.9030),
    ], ("beta", "method"), ("mAP8", "mAP2")),
}

TMM_TABLE4: dict[str, Any] = {
    "id": "tmm-table4",
    "title": "TMM 2020 Table IV: combinations of stages, FI",
    "source": "apse-tmm2020.txt, Table IV (lines ~1659-1740); 8 rows x 7 columns, complete.",
    "note": "'p' = polarity-specific attended features, 'e' = emotion-specific; the high level is always "
            "conv5 (e). conv3 (p) + conv5 (e) is APSE (best on six of seven metrics; conv5 (e) + conv5 (e) "
            "has the best DCG).",
    "metrics": PAPER_METRICS,
    "rows": _rows([
        ("conv2", "polarity", "conv2 (p) + conv5 (e)", 0.7351, 0.8989, 0.6890, 0.7912, 0.6589, 0.8152, 0.2209),
        ("conv2", "emotion", "conv2 (e) + conv5 (e)", 0.7304, 0.8901, 0.6934, 0.7881, 0.6623, 0.8136, 0.2253),
        ("conv3", "polarity", "conv3 (p) + conv5 (e)", 0.7433, 0.9030, 0.7075, 0.7994, 0.6755, 0.8250, 0.2106),
        ("conv3", "emotion", "conv3 (e) + conv5 (e)", 0.7352, 0.8928, 0.6951, 0.7892, 0.6661, 0.8179, 0.2191),
        ("conv4", "polarity", "conv4 (p) + conv5 (e)", 0.7335, 0.9012, 0.6982, 0.7912, 0.6682, 0.8185, 0.2146),
        ("conv4", "emotion", "conv4 (e) + conv5 (e)", 0.7356, 0.8981, 0.6868, 0.7739, 0.6622, 0.8046, 0.2130),
        ("conv5", "polarity", "conv5 (p) + conv5 (e)", 0.7316, 0.8969, 0.6922, 0.7877, 0.6626, 0.8069, 0.2250),
        ("conv5", "emotion", "conv5 (e) + conv5 (e)", 0.7380, 0.8912, 0.7012, 0.7920, 0.6678, 0.8271, 0.2163),
    ], ("low_stage", "low_attention", "method")),
}

#: The lambda curves are figures only: no per-lambda numbers can be read from either paper.
LAMBDA_FIGURE: dict[str, Any] = {
    "id": "lambda-figure",
    "title": "ICCV Fig. 5 / TMM Fig. 6: mAP8 and mAP2 vs lambda (0.1..0.9), FI",
    "source": "apse-iccv2019.md section 4.6 and apse-tmm2020.txt section IV-H (Fig. 6 axis ticks only).",
    "note": "No per-lambda values are printed (the figures did not survive extraction; TMM Fig. 6 keeps "
            "only its axis ticks: mAP8 0.60-0.76, mAP2 0.88-0.92). What the text says: both metrics peak "
            "at lambda = 0.5; mAP8 is more sensitive to lambda than mAP2; (TMM) mAP8 'descends "
            "dramatically' for lambda > 0.6. Only the lambda = 0.5 points are known, from the tables.",
    "metrics": ("mAP8", "mAP2"),
    "best_lambda": 0.5,
    "rows": _rows([
        (0.5, "ICCV (WEP), lambda = 0.5", 0.7344, 0.9079),
        (0.5, "TMM (GEP), lambda = 0.5", 0.7433, 0.9030),
    ], ("lam", "method"), ("mAP8", "mAP2")),
}

TABLES: dict[str, dict[str, Any]] = {t["id"]: t for t in (ICCV_TABLE1, ICCV_TABLE2, TMM_TABLE1, TMM_TABLE2,
                                                            TMM_TABLE3, TMM_TABLE4, LAMBDA_FIGURE)}


def paper_row(table: str | dict, method: str) -> dict[str, Any]:
    """The row of ``table`` (an id of :data:`TABLES` or a table dict) whose ``method`` is ``method``."""
    tab = TABLES[table] if isinstance(table, str) else table
    for row in tab["rows"]:
        if row["method"] == method:
            return row
    raise KeyError(f"no row {method!r} in {tab['id']}; rows are: {', '.join(r['method'] for r in tab['rows'])}")


def row_values(table: str | dict, method: str) -> dict[str, float]:
    """The metric values of one row (see :func:`paper_row`)."""
    return dict(paper_row(table, method)["values"])
