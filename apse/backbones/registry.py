"""The backbone registry: every backbone by name, with its native resolution; :func:`build_backbone`.

:data:`BACKBONE_REGISTRY` maps a name to a :class:`BackboneEntry` whose factory is called as
``factory(pretrained=..., stages=..., **kwargs)`` and returns a :class:`~apse.backbones.base.Backbone`;
:func:`register_backbone` adds one (as timm's ``@register_model``). The config's ``backbone`` and the
command line read the names from here; :data:`BACKBONES` lists those apse itself registers.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from apse.backbones.base import Backbone
from apse.backbones.lite import LITE_VARIANTS, Lite0Backbone, LiteBackbone
from apse.backbones.resnet import ResNet50Backbone
from apse.registry import Registry

__all__ = ["BackboneEntry", "BACKBONE_REGISTRY", "register_backbone", "backbone_names", "canonical_backbone",
           "build_backbone", "native_resolution", "BACKBONES", "NATIVE_RESOLUTION"]


@dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone: ``factory(pretrained, stages, **kwargs) -> Backbone``, the input
    resolution it was trained at (any size works), and other names it answers to."""

    name: str
    factory: Callable[..., Backbone]
    native_resolution: int = 224
    aliases: tuple[str, ...] = ()


#: name -> :class:`BackboneEntry`, weakest ImageNet accuracy last but ResNet-50 (the papers') first;
#: names are read as every apse registry reads them (:mod:`apse.registry`: aliases, any case, ``-``/``_``).
BACKBONE_REGISTRY: Registry[BackboneEntry] = Registry("backbone")


def register_backbone(name: str, factory: Callable[..., Backbone] | None = None, *, native_resolution: int = 224,
                      aliases: tuple[str, ...] = ()):
    """Add a backbone to :data:`BACKBONE_REGISTRY`; usable as a decorator or called directly."""
    return BACKBONE_REGISTRY.register(name, factory, aliases=aliases, wrap=lambda fn: BackboneEntry(
        name, fn, int(native_resolution), tuple(aliases)))


def backbone_names() -> tuple[str, ...]:
    """The names of every registered backbone (built-in and added)."""
    return BACKBONE_REGISTRY.names()


def canonical_backbone(name: str) -> str:
    """The registered name of ``name`` (case, ``-``/``_`` and aliases such as ``lite0`` tolerated);
    ValueError listing the valid names otherwise."""
    return BACKBONE_REGISTRY.canonical(name)


def native_resolution(name: str) -> int:
    """The input resolution backbone ``name`` was trained on (ImageNet)."""
    return BACKBONE_REGISTRY[name].native_resolution


def build_backbone(name: str = "resnet50", pretrained=True, stages=("conv3", "conv5"), **kwargs) -> Backbone:
    """Build a backbone by name: one of :func:`backbone_names` (``"lite0"``..``"lite2"`` work too).

    ``pretrained``: True / ``"imagenet"`` (ResNet-50: torchvision download, needs internet or the
    torch hub cache; Lite0/1/2: their local PyPI package), a path to a local state_dict file, or
    False/None (random).
    ``stages``: the stage maps ``forward`` returns; layers past the deepest are dropped.
    """
    return BACKBONE_REGISTRY[name].factory(pretrained=pretrained, stages=stages, **kwargs)


register_backbone("resnet50", ResNet50Backbone, native_resolution=224)
register_backbone("efficientnet_lite0", Lite0Backbone, native_resolution=LITE_VARIANTS["efficientnet_lite0"].resolution,
                  aliases=("lite0",))
for _name, _variant in LITE_VARIANTS.items():
    if _name != "efficientnet_lite0":
        register_backbone(_name, functools.partial(LiteBackbone, _name), native_resolution=_variant.resolution,
                          aliases=(f"lite{_name[-1]}",))

#: The backbones apse registers itself, and their native resolutions.
BACKBONES: tuple[str, ...] = backbone_names()
NATIVE_RESOLUTION: dict[str, int] = {n: e.native_resolution for n, e in BACKBONE_REGISTRY.items()}
