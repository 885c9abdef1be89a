"""The fast path of the metrics: one packed integer sort, and the papers' eight metrics fused.

For float32 (and narrower) distances, :func:`_packed_ranked_labels` ranks a chunk with one int64
sort of packed (distance, index, label) keys, the same ranking as :func:`apse.metrics.rank_order`,
and :func:`_fast_metrics` computes the papers' eight metrics over one cumulative sum of hits, equal
to the per-metric functions of :mod:`apse.metrics.definitions` to 1e-12 (both tested against them).
"""
from __future__ import annotations

import numpy as np
import torch

from apse.metrics.definitions import _dcg_discount, _ranks, _undefined_without_relevant
from apse.metrics.ranking import _relevance_of_ranked

# The fast path packs (distance, gallery index, label) into one int64 sort key: 32 bits of distance
# above ``_FREE_BITS`` bits for the index and the label, so the bits those two need decide whether
# a problem can take it (8 emotions: 3 label bits, galleries up to 2**29 items).
_FREE_BITS = 32


def _packed_bits(n_gallery: int, max_label: int) -> tuple[int, int]:
    """(index bits, label bits) that a gallery of ``n_gallery`` items with labels 0..max_label needs."""
    return (n_gallery - 1).bit_length(), int(max_label).bit_length()


def _packing_fits(n_gallery: int, max_label: int) -> bool:
    return sum(_packed_bits(n_gallery, max_label)) <= _FREE_BITS


def _packed_ranked_labels(dist, g_lab, self_cols):
    """Fast path of :func:`_ranked_labels` for float32 (and narrower) distances: one int64 sort.

    Each key packs, from the top bit down, the distance's bits (mapped to an order-preserving signed
    integer), the gallery index (so ties keep gallery order and every key is unique) and the label.
    numpy sorts those keys without an index array, several times faster than an indexed stable sort,
    and the labels come back in rank order without a gather. Any number of classes works as long as
    index and label bits fit in :data:`_FREE_BITS`; otherwise a ``ValueError`` (callers fall back to
    :func:`_rank_order`).
    """
    c, g = dist.shape
    max_label = int(g_lab.max())
    index_bits, label_bits = _packed_bits(g, max_label)
    if index_bits + label_bits > _FREE_BITS:
        raise ValueError(
            f"cannot pack {g} gallery indices ({index_bits} bits) and labels up to {max_label} "
            f"({label_bits} bits) beside a 32-bit distance in 64 bits; use the stable-sort ranking"
        )
    bits = (dist.float() + 0.0).numpy().view(np.int32)  # + 0.0 turns -0.0 into +0.0 (they tie)
    # IEEE floats order like sign-magnitude integers: flip the magnitude bits of negatives
    np.bitwise_xor(bits, (bits >> 31) & 0x7FFFFFFF, out=bits)
    key = bits.astype(np.int64)
    key <<= 32  # the distance decides first; index and label only below it
    key |= ((np.arange(g, dtype=np.int64) << label_bits) | g_lab.numpy().astype(np.int64))[None, :]
    if self_cols is not None:
        # larger than any real key (distances are not NaN): the self item sorts last, then is cut
        key[np.arange(c), self_cols.numpy()] = np.iinfo(np.int64).max
    key.sort(axis=1)  # keys are unique, so any sort algorithm gives the stable order
    if self_cols is not None:
        key = key[:, : g - 1]
    key &= (1 << label_bits) - 1  # keep the label bits: the labels in rank order
    # uint8 where it holds the labels: comparing 1-byte labels is several times faster than int64
    return torch.from_numpy(key).to(torch.uint8 if label_bits <= 8 else torch.int64)


def _fast_path_applies(dist: torch.Tensor, g_lab: torch.Tensor) -> bool:
    # float64 distances would lose order in the 32 bits of the key; big labels or galleries may not fit
    return dist.dtype != torch.float64 and _packing_fits(dist.shape[1], int(g_lab.max()))


def _fast_metrics(ranked, q_lab, gtm: int, f1_k: int, emotions: bool) -> dict[str, torch.Tensor]:
    """:func:`_readable_metrics` fused (equal to 1e-12, tested): one float64 copy of the relevance
    and one cumulative sum of hits serve every metric, which read them at their cutoffs."""
    rel, rel_pol = _relevance_of_ranked(ranked, q_lab, emotions)
    del ranked
    c, g = rel.shape
    rows, ranks = torch.arange(c), _ranks(g)

    def average_precision_and_hits(r: torch.Tensor):
        relf = r.to(torch.float64)
        hits = relf.cumsum(dim=1)
        n = hits[:, -1].clone()
        return ((hits * relf) @ (1.0 / ranks)) / n, relf, hits, n

    out = {"mAP2": average_precision_and_hits(rel_pol)[0]} if emotions else {}
    ap, relf, hits, n = average_precision_and_hits(rel)
    out["mAP8" if emotions else "mAP2"] = ap
    del rel, rel_pol
    safe = n.long().clamp(min=1)
    out["NN"] = relf[:, 0].clone()
    out["FT"] = hits[rows, safe - 1] / n
    out["ST"] = hits[rows, torch.clamp(2 * safe, max=g) - 1] / n
    discount = _dcg_discount(g)
    out["DCG"] = (relf @ discount) / discount.cumsum(0)[safe - 1]
    k_f1 = min(f1_k, g)
    out["F1"] = 2.0 * hits[:, k_f1 - 1] / (k_f1 + n)
    # ANMRR: sum_{k <= K} k rel_k + 1.25 K (n - hits@K); only the first max(K) columns are needed
    k_anmrr = torch.minimum(4 * n, torch.full_like(n, 2.0 * gtm))
    k_idx = torch.clamp(k_anmrr.long(), min=1, max=g) - 1
    cols = int(k_idx.max()) + 1
    rank_sum = (relf[:, :cols] * ranks[:cols]).cumsum(dim=1)[rows, k_idx]
    avr = (rank_sum + 1.25 * k_anmrr * (n - hits[rows, k_idx])) / n
    out["ANMRR"] = (avr - 0.5 - n / 2) / (1.25 * k_anmrr - 0.5 - n / 2)
    own_n = {"mAP2"} if emotions else set()  # mAP2 at the emotion level is NaN by its own n
    return {name: v if name in own_n else _undefined_without_relevant(v, n) for name, v in out.items()}
