"""Pooling and fusion: global average pooling and cross-level bilinear pooling (CLB).

CLB (ICCV Sec. 3.1, last paragraph; spec section "Network"): average-pool the attended low-level map
F_a1 to the spatial size of the high-level one F_a2, take at each of the L = h2*w2 positions the outer
product of the two channel vectors and sum over positions,

    phi = sum_u F_a1[u]^T F_a2[u]      (a k1 x k2 matrix, flattened),

then "compact" it with a learned linear map to 512 dims, apply the signed square root
sign(x) sqrt(|x| + eps) and l2-normalise.

Channel reductions (a configuration choice the spec leaves open). For ResNet-50, k1 * k2 = 512 * 2048
is about a million, so a 512-d projection would need 537 M weights. :class:`CrossLevelBilinear` first
maps each input with a 1x1 convolution, by default to at most 128 (low) and 256 (high) channels:
128 * 256 = 32,768 bilinear features and a 32,768 x 512 projection (16.8 M weights) for ResNet-50
conv3/conv5; Lite0's 40-channel conv3 is kept as is (40 * 256 = 10,240 -> 5.2 M weights). An input
already at or below its target is not reduced.

The reductions are plain linear 1x1 convs (no bias, no BN, no ReLU) by default. Then phi of the reduced
maps equals W1 phi W2^T, so reduction + projection is exactly a factorised (low-rank) linear
projection of the full bilinear feature: the method is unchanged, only its projection is constrained.
It also keeps every image's embedding independent of the rest of the batch (no BN batch statistics),
which matters for N-pair tuples and for train/eval consistency. ``reduction="bn_relu"`` adds BN + ReLU
after each reduction for anyone who wants the non-linear variant.

No projection has a bias: attended features are small (F * Z * U, with Z summing to 1), so a bias would
put an image-independent offset on top of a tiny signal at initialisation, and after l2 normalisation
the overall scale is irrelevant anyway.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "global_average_pool",
    "pool_to",
    "cross_level_bilinear",
    "signed_sqrt",
    "l2_normalise",
    "CrossLevelBilinear",
    "REDUCTIONS",
    "DEFAULT_REDUCE_LOW",
    "DEFAULT_REDUCE_HIGH",
]

#: Default upper bounds of the 1x1 channel reductions in front of CLB (low, high).
#: The kinds of 1x1 channel reduction before CLB (module docstring).
REDUCTIONS = ("linear", "bn_relu")
DEFAULT_REDUCE_LOW = 128
DEFAULT_REDUCE_HIGH = 256


def global_average_pool(features: torch.Tensor) -> torch.Tensor:
    """GAP: (B, C, h, w) -> (B, C)."""
    if features.dim() != 4:
        raise ValueError(f"expected features of shape (B, C, h, w), got {tuple(features.shape)}")
    return features.mean(dim=(2, 3))


def pool_to(low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Average-pool a map to spatial ``size`` (adaptive, so non-integer ratios work too)."""
    if tuple(low.shape[-2:]) == tuple(size):
        return low
    return F.adaptive_avg_pool2d(low, size)


def cross_level_bilinear(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """phi = sum over positions of the outer products low[u]^T high[u], flattened: (B, k1 * k2).

    ``low`` (B, k1, h1, w1) is first average-pooled to ``high``'s (h2, w2). Row-major flattening: entry
    ``i * k2 + j`` is the (low channel i, high channel j) correlation.
    """
    if low.dim() != 4 or high.dim() != 4 or low.shape[0] != high.shape[0]:
        raise ValueError(f"expected two maps (B, k1, h1, w1) and (B, k2, h2, w2) with the same B, got "
                         f"{tuple(low.shape)} and {tuple(high.shape)}")
    low = pool_to(low, tuple(high.shape[-2:]))
    return torch.einsum("bihw,bjhw->bij", low, high).flatten(1)


def signed_sqrt(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """sign(x) * sqrt(|x| + eps); eps keeps the gradient finite at 0 (and sign(0) = 0 maps 0 to 0)."""
    return torch.sign(x) * torch.sqrt(x.abs() + eps)


def l2_normalise(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rows to unit Euclidean norm."""
    return F.normalize(x, p=2, dim=1, eps=eps)


def _resolve_reduction(value, in_channels: int, default: int) -> int | None:
    """"auto" -> min(in, default); None/0 -> no reduction; int -> that many channels."""
    if value == "auto":
        value = default
    if value in (None, 0, False):
        return None
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a channel reduction of 'auto', None or a positive int, got {value!r}")
    return None if value >= in_channels else value


class CrossLevelBilinear(nn.Module):
    """CLB fusion: [1x1 reductions] -> phi -> linear compaction -> signed sqrt -> l2 (ICCV Sec. 3.1).

    ``CrossLevelBilinear(low_channels, high_channels, embedding_dim=512, reduce_low="auto",
    reduce_high="auto", reduction="linear")``; ``forward(low, high) -> (B, embedding_dim)``, unit norm.
    ``reduce_*``: ``"auto"`` = min(in, 128) low / min(in, 256) high, ``None`` = keep all channels, or an
    int. ``reduction``: ``"linear"`` (plain 1x1 conv, default) or ``"bn_relu"``.
    """

    def __init__(self, low_channels: int, high_channels: int, embedding_dim: int = 512, reduce_low="auto",
                 reduce_high="auto", reduction: str = "linear", eps: float = 1e-8):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"expected reduction among {REDUCTIONS}, got {reduction!r}")
        self.eps = eps
        self.reduce_low = self._reducer(low_channels, _resolve_reduction(reduce_low, low_channels,
                                                                         DEFAULT_REDUCE_LOW), reduction)
        self.reduce_high = self._reducer(high_channels, _resolve_reduction(reduce_high, high_channels,
                                                                           DEFAULT_REDUCE_HIGH), reduction)
        self.low_dim = _resolve_reduction(reduce_low, low_channels, DEFAULT_REDUCE_LOW) or low_channels
        self.high_dim = _resolve_reduction(reduce_high, high_channels, DEFAULT_REDUCE_HIGH) or high_channels
        self.low_channels, self.high_channels = low_channels, high_channels
        self.projection = nn.Linear(self.low_dim * self.high_dim, embedding_dim, bias=False)

    @staticmethod
    def _reducer(in_ch: int, out_ch: int | None, reduction: str) -> nn.Module:
        if out_ch is None:
            return nn.Identity()
        conv = nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False)
        if reduction == "linear":
            return conv
        return nn.Sequential(conv, nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))

    def bilinear_features(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """phi after the channel reductions, (B, low_dim * high_dim), before compaction."""
        if low.shape[1] != self.low_channels or high.shape[1] != self.high_channels:
            raise ValueError(f"expected {self.low_channels} low and {self.high_channels} high channels, got "
                             f"{low.shape[1]} and {high.shape[1]}")
        # Pool before reducing: both are linear (for reduction="linear") so the order does not change
        # phi, and pooling first makes the 1x1 conv run on 16x fewer positions (conv3 -> conv5 size).
        low = pool_to(low, tuple(high.shape[-2:]))
        return cross_level_bilinear(self.reduce_low(low), self.reduce_high(high))

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        phi = self.bilinear_features(low, high)
        return l2_normalise(signed_sqrt(self.projection(phi), self.eps))

    def extra_repr(self) -> str:
        return (f"low {self.low_channels}->{self.low_dim}, high {self.high_channels}->{self.high_dim}, "
                f"phi {self.low_dim * self.high_dim} -> {self.projection.out_features}")
