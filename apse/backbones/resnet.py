"""ResNet-50 from torchvision as a :class:`~apse.backbones.base.Backbone`: the papers' backbone.

conv2..conv5 = torchvision's layer1..layer4 (strides 4, 8, 16, 32; channels 256, 512, 1024, 2048).
ImageNet weights come from torchvision's weights API (a download, or the torch hub cache) or from a
local state_dict file; nothing else is fetched.
"""
from __future__ import annotations

import os
from collections import OrderedDict

import torch
from torchvision.models import ResNet50_Weights, resnet50

from apse.backbones.base import IMAGENET_MEAN, IMAGENET_STD, STAGES, Backbone, _load_into, load_state_dict_file

__all__ = ["ResNet50Backbone"]


_RESNET_LAYERS = OrderedDict(conv2="layer1", conv3="layer2", conv4="layer3", conv5="layer4")
_RESNET_IMAGENET = {"imagenet": "IMAGENET1K_V1", "imagenet1k_v1": "IMAGENET1K_V1",
                    "imagenet1k_v2": "IMAGENET1K_V2"}


def _download_resnet50_state_dict(version: str) -> dict[str, torch.Tensor]:
    """Fetch torchvision's ImageNet ResNet-50 weights (or read them from the torch hub cache)."""
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
