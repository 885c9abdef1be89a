"""Scoring: every registered metric of a (queries x gallery) distance matrix, a chunk of queries at a time.

:func:`per_query_metrics` / :func:`retrieval_metrics` validate the inputs once, rank each chunk (the
packed fast path of :mod:`apse.metrics.fast` where it applies, else the stable sort), and compute the
metrics of :data:`apse.metrics.METRICS`: the papers' eight fused on the fast path, any other by its
own function. See :mod:`apse.metrics` for the definitions and the choices the spec leaves open.
"""
from __future__ import annotations

import warnings

import torch
from tqdm.auto import tqdm

from apse.metrics.definitions import METRICS, metric_names
from apse.metrics.fast import _fast_metrics, _fast_path_applies, _packed_ranked_labels
from apse.metrics.ranking import (_as_distances, _as_labels, _check_no_nan, _ranked_labels, _relevance_of_ranked,
                                  _self_columns, pairwise_distances)

__all__ = ["per_query_metrics", "retrieval_metrics", "evaluate_embeddings"]

# Roughly 60-80 bytes of temporaries per (query, gallery) cell while a chunk is scored (int64 sort
# keys, a few float64 rows); 4M cells keep a chunk at about 300 MB whatever the gallery size.
_CELLS_PER_CHUNK = 4_000_000


def _readable_metrics(ranked, q_lab, gtm: int, f1_k: int, emotions: bool,
                      names: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """Per-query values of the registered metrics ``names`` (default: all at this level) for one chunk
    of ranked labels, each by its own function over the relevance matrix (the reference path)."""
    rel, rel_pol = _relevance_of_ranked(ranked, q_lab, emotions)
    context = {"f1_k": f1_k, "gtm": gtm}
    out = {}
    for name in names if names is not None else metric_names("emotion" if emotions else "polarity"):
        m = METRICS[name]
        kwargs = {arg: context[option] for arg, option in m.options.items()}
        out[name] = m.per_query(rel_pol if m.relevance == "polarity" else rel, **kwargs)
    return out


def per_query_metrics(distances, query_labels, gallery_labels, *, exclude_self: bool = False,
                      f1_k: int = 32, chunk_size: int | None = None, progress: bool = False,
                      level: str = "emotion") -> dict[str, torch.Tensor]:
    """Per-query values of every metric: dict name -> float64 tensor (Q,), NaN where undefined.

    Same arguments as :func:`retrieval_metrics`; "mAP8" is each query's AP (for AP distributions),
    "ANMRR" its NMRR. Entries are NaN for queries without a relevant item (see the module docstring).
    At ``level="polarity"`` the keys are :data:`POLARITY_METRIC_NAMES`.
    """
    dist = _as_distances(distances)
    n_q, n_g = dist.shape
    names = metric_names(level)
    q_lab = _as_labels(query_labels, "query_labels", n_q, level)
    g_lab = _as_labels(gallery_labels, "gallery_labels", n_g, level)
    self_cols = _self_columns(n_q, n_g) if exclude_self else None
    if exclude_self and not torch.equal(q_lab, g_lab):
        raise ValueError("exclude_self=True needs query_labels == gallery_labels (same items, same order)")
    f1_k = int(f1_k)
    if f1_k < 1:
        raise ValueError(f"f1_k must be a positive integer, got {f1_k}")
    if chunk_size is None:
        chunk_size = max(1, _CELLS_PER_CHUNK // n_g)
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")

    # n per query without ranking: ANMRR's GTM is a max over *all* queries, needed before chunk 1
    n_rel = torch.bincount(g_lab, minlength=int(q_lab.max()) + 1)[q_lab] - int(exclude_self)
    if int((n_rel > 0).sum()) == 0:
        raise ValueError(f"no query has a relevant (same-{level}) gallery item; metrics are "
                         "undefined")
    gtm = int(n_rel.max())
    emotions = level == "emotion"

    parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    starts = range(0, n_q, chunk_size)
    for s in tqdm(starts, desc="metrics", disable=not progress, leave=False):
        e = min(s + chunk_size, n_q)
        _check_no_nan(dist[s:e])  # per chunk, to keep memory flat
        chunk, own = dist[s:e], None if self_cols is None else self_cols[s:e]
        if _fast_path_applies(chunk, g_lab):
            ranked = _packed_ranked_labels(chunk, g_lab, own)
            values = _fast_metrics(ranked, q_lab[s:e], gtm, f1_k, emotions)
        else:
            ranked, values = _ranked_labels(chunk, g_lab, own), {}
        rest = tuple(n for n in names if n not in values)  # all, or those registered beyond the papers'
        if rest:
            values.update(_readable_metrics(ranked, q_lab[s:e], gtm, f1_k, emotions, rest))
        for name in names:
            parts[name].append(values[name])
    return {name: torch.cat(parts[name]) for name in names}


def retrieval_metrics(distances, query_labels, gallery_labels, *, exclude_self: bool = False,
                      f1_k: int = 32, chunk_size: int | None = None, return_per_query: bool = False,
                      progress: bool = False, level: str = "emotion"):
    """The papers' eight retrieval metrics, each a mean over queries (formulas in the module docstring).

    Args:
        distances: (Q, G) distances (numpy or torch); smaller = more similar. Ties are broken by
            gallery order.
        query_labels, gallery_labels: emotion indices 0..7 in the papers' order (Q,) and (G,).
        exclude_self: leave-one-out; queries and gallery are the same items in the same order, and
            query i's own column is removed from its ranking (needs Q == G).
        f1_k: F1 cutoff, K = min(f1_k, G).
        chunk_size: queries ranked at a time (default keeps temporaries near 300 MB).
        return_per_query: also return :func:`per_query_metrics`' dict.
        progress: show a tqdm bar over chunks.
        level: ``"emotion"`` (labels 0..7, eight metrics) or ``"polarity"`` (labels 0 = positive,
            1 = negative; relevance = same polarity; :data:`POLARITY_METRIC_NAMES`, no mAP8).

    Returns:
        dict with keys :data:`METRIC_NAMES` -> python float (ANMRR lower is better, the rest higher),
        or ``(that dict, per-query dict)`` when ``return_per_query``. Queries without a relevant item
        are left out of the means, with a ``RuntimeWarning``.
    """
    per_query = per_query_metrics(
        distances, query_labels, gallery_labels,
        exclude_self=exclude_self, f1_k=f1_k, chunk_size=chunk_size, progress=progress, level=level,
    )
    names = metric_names(level)
    first = "mAP8" if level == "emotion" else "mAP2"
    n_missing = int(torch.isnan(per_query[first]).sum())
    if n_missing:
        left_out = [m for m in names if m != "mAP2"] if level == "emotion" else list(names)
        warnings.warn(
            f"{n_missing} of {per_query[first].numel()} queries have no same-{level} item in their "
            f"gallery; they are left out of the means of {', '.join(left_out[:-1])} and {left_out[-1]}",
            RuntimeWarning,
            stacklevel=2,
        )
    means = {name: float(torch.nanmean(per_query[name])) for name in names}
    return (means, per_query) if return_per_query else means


def evaluate_embeddings(query_emb, query_labels, gallery_emb=None, gallery_labels=None,
                        exclude_self: bool = False, **kw):
    """Embed-then-evaluate: :func:`pairwise_distances` then :func:`retrieval_metrics`.

    With ``gallery_emb=None`` every query searches all the other queries (leave-one-out,
    ``exclude_self=True``), as in the papers' IAPSa/ArtPhoto/Abstract protocol. Extra keywords go to
    :func:`retrieval_metrics`.
    """
    if gallery_emb is None:
        if gallery_labels is not None:
            raise ValueError("gallery_labels given without gallery_emb; pass both, or neither for leave-one-out")
        gallery_emb, gallery_labels, exclude_self = query_emb, query_labels, True
    elif gallery_labels is None:
        raise ValueError("gallery_emb given without gallery_labels; pass both")
    distances = pairwise_distances(query_emb, gallery_emb)
    return retrieval_metrics(distances, query_labels, gallery_labels, exclude_self=exclude_self, **kw)
