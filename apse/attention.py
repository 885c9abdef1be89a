"""Attention head and output head of APSE (ICCV Sec. 3.1 / Fig. 3, Eq. 1; spec section "Network").

On a feature map F (B, c, h, w) with K classes (K = 2 polarities at the low level, 8 emotions at the
high level):

1. ``A = sum_n F_n``                        :func:`channel_sum`        -> (B, h, w)
2. ``Z = softmax_{h*w}(A / T)``             :func:`spatial_softmax`    -> spatial mask, sums to 1 (T: see below)
3. ``F_hat = F * Z``                        :func:`apply_spatial_mask` -> (B, c, h, w) (or F * h w Z; see below)
4. ``S = conv1x1(F_hat)``                   the only learned layer     -> (B, K, h, w)
5. ``c = softmax(GAP(S))``                  :func:`class_confidences`  -> (B, K), rows sum to 1

Output head (ICCV Eq. 1): ``U = norm(sum_j c_j S_j)`` (:func:`combine_class_maps`, :func:`normalise_map`)
and the attended features ``F_a = F_hat * U``.

``norm`` is left open by the papers; :data:`NORMS` are the project's options (spec): ``"minmax"``
(default; per image to [0, 1], a soft mask, the one the book plots), ``"softmax"`` over the h*w
positions, ``"l1"`` (divide by the sum of absolute values: sums to 1 for a non-negative map) and
``"none"``.

Deviation from the spec (step 2), and why. Taken literally, Z = softmax(A) is a one-hot mask on
pretrained features: A sums hundreds or thousands of channels, so it varies by tens to hundreds of
units between positions (measured on 32 FI images with ImageNet Lite0 at 224 px: the spatial std of A
is 36 at conv3 and 199 at conv5, and the largest Z is 1.000 at every stage). F_hat is then zero
everywhere but at the argmax of A, S is the conv bias elsewhere, and U can only rescale that single
position: the attention head no longer shapes the embedding (with l2 normalisation a rescaling is
invisible), and whenever U is ~0 there the attended features underflow (12 of those 32 embeddings are
exactly zero with HA + CLB). So the default spatial softmax is taken over the *standardised* map,
``temperature="std"``: Z = softmax((A - mean A) / std A), per image. That is a temperature equal to A's
own spread: it does not depend on the backbone, the stage or the channel count, it keeps the ranking of
positions (the same peaks are attended), and it gives a soft mask (median 1 / sum Z^2, the effective
number of attended positions: 159 of 784 at conv3, 16 of 49 at conv5) with no dead embeddings.
``temperature=1.0`` is the papers' formula exactly, and any positive number is a fixed temperature;
the book's attention chapter can show all three.

The scale of the mask (step 3): an option, not a deviation. Z sums to 1, so F_hat = F * Z is about
1/(h w) of F, and so are the class maps S and their GAP: the confidence logits are
``W (sum_p Z_p F_p) / (h w) + b``, an attention-pooled feature shrunk by 1/784 at conv3 (224 px) and
1/49 at conv5. The 1x1 conv needs weights h*w times larger than a plain linear classifier's to reach
confident logits, and its gradients are h*w times smaller; at the learning rates that suit the rest of
the network the confidences hardly leave uniform (FI subset, frozen Lite0, after training: polarity
confidences 0.497-0.503 for every image, emotion top confidence ~0.16), and WEP weights and GEP's
adaptive beta, computed from them, stay nearly constant. ``mask_scale="mean"`` applies the mask as
``h*w*Z`` (mean 1 over the positions) instead: F_hat keeps F's scale and GAP(S) = W (attention-weighted
mean of F) + b. That is a re-parametrisation, not a new model (the papers' head with weights h*w*W
computes the same S for a fixed input size); only the conditioning of training changes, and the heads
then want a linear classifier's learning rate (``TrainConfig.attention_lr``). The default stays the
papers' ``"sum"``: on the FI subset with a frozen backbone, heads that learn did not retrieve better
(``python -m apse.experiments attention``, chosen on validation; chapter 8). The projections after the
heads have no bias and end in l2 normalisation, so the embedding does not see the scale either way.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "NORMS",
    "MASK_SCALES",
    "channel_sum",
    "spatial_softmax",
    "scale_spatial_mask",
    "apply_spatial_mask",
    "class_confidences",
    "combine_class_maps",
    "normalise_map",
    "AttentionResult",
    "AttentionHead",
]

NORMS = ("minmax", "softmax", "l1", "none")
MASK_SCALES = ("sum", "mean")


def _check_map(x: torch.Tensor, name: str, dims: int = 4) -> None:
    if x.dim() != dims:
        shape = "(B, C, h, w)" if dims == 4 else "(B, h, w)"
        raise ValueError(f"expected {name} of shape {shape}, got {tuple(x.shape)}")


def channel_sum(features: torch.Tensor) -> torch.Tensor:
    """Step 1: aggregation map ``A = sum over channels of F``; (B, c, h, w) -> (B, h, w)."""
    _check_map(features, "features")
    return features.sum(dim=1)


def spatial_softmax(aggregation: torch.Tensor, temperature: float | str = 1.0, eps: float = 1e-6) -> torch.Tensor:
    """Step 2: spatial mask ``Z = softmax over the h*w positions of A / T``; (B, h, w), sums to 1.

    ``temperature`` T: a positive number (1 = the papers' formula), or ``"std"``: per image, T = the
    standard deviation of A over positions (+ eps), i.e. the softmax of the standardised map
    (A - mean) / std (the mean cancels in the softmax). See the module docstring for why.
    """
    _check_map(aggregation, "aggregation map", dims=3)
    b, h, w = aggregation.shape
    flat = aggregation.reshape(b, h * w)
    if temperature == "std":
        # correction=0: a 1x1 map (tiny inputs) has std 0, not NaN; a constant map gives a uniform Z.
        flat = (flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True, correction=0) + eps)
    elif isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature > 0:
        flat = flat / temperature
    else:
        raise ValueError(f"expected a positive temperature or 'std', got {temperature!r}")
    return flat.softmax(dim=1).reshape(b, h, w)


def scale_spatial_mask(mask: torch.Tensor, scale: str = "sum") -> torch.Tensor:
    """The mask step 3 applies: ``"mean"`` -> h*w*Z (averages 1 over positions), ``"sum"`` -> Z itself.

    ``"sum"`` is the papers' formula (the default of :class:`AttentionHead`); ``"mean"`` keeps the
    masked features at the scale of F (see the module docstring for when that matters).
    """
    _check_map(mask, "mask", dims=3)
    if scale == "mean":
        return mask * (mask.shape[1] * mask.shape[2])
    if scale == "sum":
        return mask
    raise ValueError(f"expected a mask scale among {MASK_SCALES}, got {scale!r}")


def apply_spatial_mask(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Step 3 (and the output head's ``F_hat * U``): Hadamard product broadcast over channels."""
    _check_map(features, "features")
    _check_map(mask, "mask", dims=3)
    return features * mask.unsqueeze(1)


def class_confidences(class_maps: torch.Tensor) -> torch.Tensor:
    """Step 5: ``c = softmax(GAP(S))``; (B, K, h, w) -> (B, K), each row sums to 1."""
    _check_map(class_maps, "class maps")
    return class_maps.mean(dim=(2, 3)).softmax(dim=1)


def combine_class_maps(class_maps: torch.Tensor, confidences: torch.Tensor) -> torch.Tensor:
    """Output head, inside the norm of ICCV Eq. 1: ``sum_j c_j S_j``; -> (B, h, w)."""
    _check_map(class_maps, "class maps")
    if confidences.shape != class_maps.shape[:2]:
        raise ValueError(f"expected confidences of shape {tuple(class_maps.shape[:2])}, got "
                         f"{tuple(confidences.shape)}")
    return torch.einsum("bk,bkhw->bhw", confidences, class_maps)


def normalise_map(attention: torch.Tensor, method: str = "minmax", eps: float = 1e-6) -> torch.Tensor:
    """The ``norm`` of ICCV Eq. 1, per image, on a (B, h, w) map.

    ``"minmax"``: (M - min + eps) / (max - min + eps), in (0, 1] with the maximum at exactly 1. The eps
    in the numerator too makes a constant map (e.g. a 1x1 conv5 map of a tiny input) all ones, "no
    spatial preference", instead of all zeros, which would zero the attended features.
    ``"softmax"``: softmax over the h*w positions; ``"l1"``: M / (sum |M| + eps); ``"none"``: M.
    """
    _check_map(attention, "attention map", dims=3)
    b, h, w = attention.shape
    flat = attention.reshape(b, h * w)
    if method == "minmax":
        lo = flat.min(dim=1, keepdim=True).values
        hi = flat.max(dim=1, keepdim=True).values
        out = (flat - lo + eps) / (hi - lo + eps)
    elif method == "softmax":
        out = flat.softmax(dim=1)
    elif method == "l1":
        out = flat / (flat.abs().sum(dim=1, keepdim=True) + eps)
    elif method == "none":
        out = flat
    else:
        raise ValueError(f"expected an attention norm among {NORMS}, got {method!r}")
    return out.reshape(b, h, w)


@dataclass
class AttentionResult:
    """What :class:`AttentionHead` returns (every intermediate the book wants to show).

    features: attended features F_a = F_hat * U (B, c, h, w); confidences: c (B, K);
    attention_map: U (B, h, w); spatial_mask: the mask step 3 applied, Z with ``mask_scale="sum"``
    (sums to 1) or h*w*Z with ``"mean"`` (mean 1), (B, h, w); class_maps: S (B, K, h, w);
    logits: GAP(S) (B, K), the pre-softmax scores.
    """

    features: torch.Tensor
    confidences: torch.Tensor
    attention_map: torch.Tensor
    spatial_mask: torch.Tensor
    class_maps: torch.Tensor
    logits: torch.Tensor


class AttentionHead(nn.Module):
    """Attention head + output head at one level (ICCV Sec. 3.1, Fig. 3, Eq. 1).

    ``AttentionHead(in_channels, num_classes, norm="minmax", temperature="std", mask_scale="sum")``;
    ``forward(F)`` returns an :class:`AttentionResult`. The 1x1 conv (with bias) is the only parameter.
    ``temperature=1.0, mask_scale="sum"`` is the papers' head exactly (see the module docstring).
    """

    def __init__(self, in_channels: int, num_classes: int, norm: str = "minmax", temperature: float | str = "std",
                 mask_scale: str = "sum", eps: float = 1e-6):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"expected an attention norm among {NORMS}, got {norm!r}")
        spatial_softmax(torch.zeros(1, 1, 1), temperature)  # validates temperature with a clear error
        scale_spatial_mask(torch.ones(1, 1, 1), mask_scale)  # and the mask scale
        self.in_channels, self.num_classes = in_channels, num_classes
        self.norm, self.temperature, self.mask_scale, self.eps = norm, temperature, mask_scale, eps
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def forward(self, features: torch.Tensor) -> AttentionResult:
        _check_map(features, "features")
        if features.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} feature channels, got {features.shape[1]}")
        z = scale_spatial_mask(spatial_softmax(channel_sum(features), self.temperature), self.mask_scale)
        f_hat = apply_spatial_mask(features, z)                                # step 3
        s = self.classifier(f_hat)                                             # step 4
        logits = s.mean(dim=(2, 3))
        c = class_confidences(s)                                               # step 5: softmax(logits)
        u = normalise_map(combine_class_maps(s, c), self.norm, self.eps)       # Eq. 1
        return AttentionResult(features=apply_spatial_mask(f_hat, u), confidences=c, attention_map=u,
                               spatial_mask=z, class_maps=s, logits=logits)

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}, temperature={self.temperature}, mask_scale={self.mask_scale!r}"
