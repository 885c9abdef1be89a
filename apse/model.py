"""The APSE network (TMM Fig. 3 and 4, ICCV Fig. 2; spec section "Network").

    images -> backbone -> {low_stage: F1, high_stage: F2}
           -> attention heads (polarity on F1, emotion on F2)  -> confidences, attention maps, F_a1, F_a2
           -> fusion (CLB of F_a1 and F_a2 | concatenated GAPs | GAP of F_a2)  -> 512-d, l2-normalised

Switches (ICCV Table 2 / TMM Table II, TMM Table IV):

- ``attention="hierarchical"`` (HA): a K = 2 polarity head on ``low_stage`` and a K = 8 emotion head on
  ``high_stage``. ``low_attention="emotion"`` supervises the low head with emotions instead (Table IV's
  "conv_k (e) + conv5 (e)" rows); its outputs go to ``low_emotion_confidence`` / ``low_emotion_map``.
- ``attention="emotion"`` (SA): the emotion head on ``high_stage`` only; the low level (if used) is raw.
- ``attention="none"``: raw backbone features everywhere.
- ``fusion``: how the two levels become the embedding, a name of :data:`apse.fusion.FUSIONS`: ``"clb"``
  (CLB), ``"concat"`` (MO without CLB), ``"concat_raw"`` (not in the papers) or ``"single"`` (SO: the
  high level only; with ``attention="hierarchical"`` the low head still runs, its confidences feed the
  losses).

``low_stage`` may be any of conv2..conv5, including ``high_stage`` itself (Table IV's "conv5 + conv5").
The model never sees labels; the polarity label is derived from the emotion label by the losses' caller.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Iterator, Mapping, Union

import torch
from torch import nn

from apse.attention import MASK_SCALES, NORMS, AttentionHead
from apse.backbones import STAGES, Backbone, backbone_names, build_backbone, canonical_backbone
from apse.checks import NULLS, ConfigError, choice, registered
from apse.emotions import NUM_EMOTIONS, NUM_POLARITIES
from apse.fusion import FUSIONS, build_fusion
from apse.pooling import REDUCTIONS

__all__ = ["APSEOutput", "APSENet", "ModelConfig", "ATTENTIONS", "LOW_ATTENTIONS"]

#: The attention switch: both heads (HA), the emotion head only (SA), or none.
ATTENTIONS = ("hierarchical", "emotion", "none")
#: What supervises the low head under HA: polarities (the papers) or emotions (TMM Table IV).
LOW_ATTENTIONS = ("polarity", "emotion")


@dataclass
class ModelConfig:
    """The network: :class:`APSENet`'s keyword arguments, one field each (a test checks it), as a config
    file holds them (``clb_reduce_*`` and ``attention_temperature`` as text); the model section of
    :class:`apse.config.TrainConfig`. :meth:`model_kwargs` converts them, :meth:`APSENet.from_config`
    builds the network, and :meth:`check_model` checks them here, where they are consumed: a backbone
    or fusion by its registry's own lookup (stored as the registry spells it), the switches against
    this module's lists."""

    backbone: str = "resnet50"                 # a registered backbone (apse.backbones.register_backbone)
    pretrained: Union[bool, str] = True        # True = ImageNet weights, False = random, or a weights file
    low_stage: str = "conv3"                   # low level of the hierarchy (spec: conv3 = layer2)
    high_stage: str = "conv5"                  # high level (spec: conv5 = layer4)
    attention: str = "hierarchical"            # "hierarchical" (HA) | "emotion" (SA) | "none"
    low_attention: str = "polarity"            # low head supervised by "polarity" or "emotion" (TMM Tab. IV)
    fusion: str = "clb"                        # "clb" | "concat" (MO) | "concat_raw" | "single" (SO)
    attention_norm: str = "minmax"             # norm of the output-head map U: minmax|softmax|l1|none
    attention_temperature: str = "std"         # spatial softmax Z: "std" (standardised map) or a number (1 = papers')
    attention_mask_scale: str = "sum"          # mask applied at sum 1 ("sum" = papers') or mean 1 ("mean")
    embedding_dim: int = 512
    clb_reduce_low: str = "auto"               # CLB 1x1 reduction of the low level: auto | none | channels
    clb_reduce_high: str = "auto"              # same for the high level
    clb_reduction: str = "linear"              # "linear" | "bn_relu" (see apse.pooling)

    def __post_init__(self) -> None:
        self.check_model()

    def check_model(self) -> None:
        """Check every model field (ConfigError with one sentence on the first bad one); a backbone or
        fusion name is stored as its registry spells it (``"lite0"`` -> ``"efficientnet_lite0"``)."""
        self.backbone = registered("backbone", self.backbone, canonical_backbone, backbone_names())
        choice("attention", self.attention, ATTENTIONS)
        choice("low_attention", self.low_attention, LOW_ATTENTIONS)
        choice("clb_reduction", self.clb_reduction, REDUCTIONS)
        for name in ("clb_reduce_low", "clb_reduce_high"):
            self.model_kwargs_value(name)  # validates
        self.temperature_value()
        self.fusion = registered("fusion", self.fusion, FUSIONS.canonical, FUSIONS.names())
        choice("low_stage", self.low_stage, STAGES)
        choice("high_stage", self.high_stage, STAGES)
        if STAGES.index(self.low_stage) > STAGES.index(self.high_stage):
            raise ConfigError(f"low_stage ({self.low_stage}) must not be deeper than high_stage ({self.high_stage})")
        choice("attention_norm", self.attention_norm, NORMS)
        choice("attention_mask_scale", self.attention_mask_scale, MASK_SCALES)
        if self.embedding_dim < 1:
            raise ConfigError(f"embedding_dim must be a positive integer, got {self.embedding_dim}")

    def model_kwargs_value(self, name: str) -> Any:
        """``clb_reduce_*`` as APSENet expects it: "auto", None (no reduction) or a channel count."""
        text = str(getattr(self, name)).strip().lower()
        if text == "auto":
            return "auto"
        if text in NULLS or text == "0":
            return None
        if text.isdigit():
            return int(text)
        raise ConfigError(f"{name} must be 'auto', 'none' or a number of channels, got {getattr(self, name)!r}")

    def temperature_value(self) -> float | str:
        """``attention_temperature`` as APSENet expects it: ``"std"`` or a positive float."""
        text = str(self.attention_temperature).strip().lower()
        if text == "std":
            return "std"
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise ConfigError(f"attention_temperature must be 'std' or a positive number, got "
                              f"{self.attention_temperature!r}")
        return value

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`APSENet`: the model fields (APSENet's keywords, a test checks
        it), with the three stored as text converted."""
        kwargs = {f.name: getattr(self, f.name) for f in fields(ModelConfig)}
        kwargs.update(clb_reduce_low=self.model_kwargs_value("clb_reduce_low"),
                      clb_reduce_high=self.model_kwargs_value("clb_reduce_high"),
                      attention_temperature=self.temperature_value())
        return kwargs


@dataclass
class APSEOutput:
    """What :class:`APSENet` returns.

    embedding: (B, D), l2-normalised. polarity_confidence: (B, 2) softmax probabilities of the low
    (polarity) head, or None. emotion_confidence: (B, 8) of the high (emotion) head, or None.
    polarity_map / emotion_map: the heads' attention maps U (B, h, w), or None.
    low_emotion_confidence / low_emotion_map: the low head's outputs when it is an emotion head
    (``low_attention="emotion"``), else None.
    """

    embedding: torch.Tensor
    polarity_confidence: torch.Tensor | None = None
    emotion_confidence: torch.Tensor | None = None
    polarity_map: torch.Tensor | None = None
    emotion_map: torch.Tensor | None = None
    low_emotion_confidence: torch.Tensor | None = None
    low_emotion_map: torch.Tensor | None = None

    def attention_terms(self) -> list[tuple[str, torch.Tensor]]:
        """[(level, confidences)] for the attention loss (ICCV Eq. 2): level is "polarity" or "emotion",
        i.e. which labels supervise that confidence. Empty when the model has no attention head."""
        terms = []
        if self.polarity_confidence is not None:
            terms.append(("polarity", self.polarity_confidence))
        if self.low_emotion_confidence is not None:
            terms.append(("emotion", self.low_emotion_confidence))
        if self.emotion_confidence is not None:
            terms.append(("emotion", self.emotion_confidence))
        return terms

    def detach(self) -> "APSEOutput":
        return APSEOutput(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).detach())
                             for f in fields(self)})


class APSENet(nn.Module):
    """APSE: backbone + hierarchical attention + cross-level fusion -> l2-normalised embedding.

    ``APSENet(backbone="resnet50", pretrained=True, low_stage="conv3", high_stage="conv5",
    attention="hierarchical", fusion="clb", embedding_dim=512, attention_norm="minmax",
    low_attention="polarity", clb_reduce_low="auto", clb_reduce_high="auto", clb_reduction="linear",
    attention_temperature="std", attention_mask_scale="sum")``.

    ``attention_temperature="std"`` standardises the channel-sum map before the spatial softmax (a
    documented deviation, see :mod:`apse.attention`); ``1.0`` is the papers' formula exactly.
    ``attention_mask_scale="mean"`` applies the spatial mask at mean 1 instead of the papers' sum 1,
    which lets the heads' confidences learn at ordinary learning rates (see :mod:`apse.attention`).

    ``backbone`` is a name for :func:`apse.backbones.build_backbone` (built with exactly the stages the
    head consumes) or an already built :class:`apse.backbones.Backbone` whose stages include them
    (``pretrained`` is then ignored).
    Parameters are split into ``backbone`` and the head (everything else): see
    :meth:`head_parameters`, :meth:`attention_parameters`, :meth:`freeze_backbone`.
    """

    def __init__(self, backbone: str | Backbone = "resnet50", pretrained=True, low_stage: str = "conv3",
                 high_stage: str = "conv5", attention: str = "hierarchical", fusion: str = "clb",
                 embedding_dim: int = 512, attention_norm: str = "minmax", low_attention: str = "polarity",
                 clb_reduce_low="auto", clb_reduce_high="auto", clb_reduction: str = "linear",
                 attention_temperature: float | str = "std", attention_mask_scale: str = "sum"):
        super().__init__()
        for value, allowed, what in ((attention, ATTENTIONS, "attention"), (fusion, tuple(FUSIONS), "fusion"),
                                     (low_attention, LOW_ATTENTIONS, "low_attention"),
                                     (low_stage, STAGES, "low_stage"), (high_stage, STAGES, "high_stage")):
            if value not in allowed:
                raise ValueError(f"expected {what} among {allowed}, got {value!r}")
        if STAGES.index(low_stage) > STAGES.index(high_stage):
            raise ValueError(f"expected low_stage at or below high_stage, got {low_stage} above {high_stage}")
        if embedding_dim <= 0:
            raise ValueError(f"expected a positive embedding_dim, got {embedding_dim}")
        self.low_stage, self.high_stage = low_stage, high_stage
        self.attention, self.fusion, self.low_attention = attention, fusion, low_attention
        self.embedding_dim, self.attention_norm = embedding_dim, attention_norm

        uses_low = FUSIONS[fusion].uses_low or attention == "hierarchical"
        self.stages = tuple(s for s in STAGES if s == high_stage or (uses_low and s == low_stage))

        if isinstance(backbone, str):
            backbone = build_backbone(backbone, pretrained=pretrained, stages=self.stages)
        elif not isinstance(backbone, nn.Module) or not set(self.stages) <= set(getattr(backbone, "stages", ())):
            raise ValueError(f"expected a backbone name or a Backbone module providing stages {self.stages}")
        self.backbone = backbone
        c_low, c_high = backbone.channels[low_stage], backbone.channels[high_stage]

        head = dict(norm=attention_norm, temperature=attention_temperature, mask_scale=attention_mask_scale)
        self.low_head = None
        self.high_head = None
        if attention == "hierarchical":
            k_low = NUM_POLARITIES if low_attention == "polarity" else NUM_EMOTIONS
            self.low_head = AttentionHead(c_low, k_low, **head)
        if attention in ("hierarchical", "emotion"):
            self.high_head = AttentionHead(c_high, NUM_EMOTIONS, **head)

        self.fuse = build_fusion(fusion, c_low, c_high, embedding_dim, reduce_low=clb_reduce_low,
                                 reduce_high=clb_reduce_high, reduction=clb_reduction)
        self._backbone_frozen = False
        self._bn_frozen = False

    @classmethod
    def from_config(cls, config: ModelConfig, **changes: Any) -> "APSENet":
        """The network a model section describes (a :class:`ModelConfig`, or a training config, which
        holds one); ``changes`` override its keywords, e.g. ``pretrained=False``."""
        return cls(**{**config.model_kwargs(), **changes})

    # ------------------------------------------------------------------------------------------------
    def forward_features(self, features: Mapping[str, torch.Tensor]) -> APSEOutput:
        """Everything after the backbone, from ``{stage: map}`` (e.g. cached frozen-backbone features)."""
        missing = [s for s in self.stages if s not in features]
        if missing:
            raise ValueError(f"expected feature maps for stages {self.stages}, missing {missing}")
        out = APSEOutput(embedding=None)  # filled below
        high = features[self.high_stage]
        if self.high_head is not None:
            res = self.high_head(high)
            high, out.emotion_confidence, out.emotion_map = res.features, res.confidences, res.attention_map
        low = features.get(self.low_stage)
        if self.low_head is not None:
            res = self.low_head(low)
            low = res.features
            if self.low_attention == "polarity":
                out.polarity_confidence, out.polarity_map = res.confidences, res.attention_map
            else:
                out.low_emotion_confidence, out.low_emotion_map = res.confidences, res.attention_map

        out.embedding = self.fuse(low, high)
        return out

    def forward(self, inputs: torch.Tensor | Mapping[str, torch.Tensor]) -> APSEOutput:
        """From images ``(B, 3, H, W)``, or from ``{stage: map}`` (cached backbone features): one call
        for both kinds of batch, so that training and evaluation code need not know which it holds."""
        if isinstance(inputs, Mapping):
            return self.forward_features(inputs)
        return self.forward_features(self.backbone(inputs))

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, embedding_dim) l2-normalised embeddings in eval mode, no autograd; restores the mode."""
        was_training = self.training
        self.eval()
        try:
            return self(images).embedding
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------------------------------------
    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Everything but the backbone: attention heads, reductions, projection."""
        for name, p in self.named_parameters():
            if not name.startswith("backbone."):
                yield p

    def attention_parameters(self) -> Iterator[nn.Parameter]:
        """The attention heads' 1x1 convs (a part of :meth:`head_parameters`)."""
        for head in (self.low_head, self.high_head):
            if head is not None:
                yield from head.parameters()

    def freeze_backbone(self, frozen: bool = True) -> "APSENet":
        """Stop gradients into the backbone and keep its BatchNorm statistics fixed (eval mode) even
        while the model trains; ``freeze_backbone(False)`` undoes it."""
        self._backbone_frozen = frozen
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)
        return self

    def freeze_batchnorm(self, frozen: bool = True) -> "APSENet":
        """Keep the backbone's BatchNorm layers in eval mode while the model trains: they normalise
        with their (ImageNet) running statistics, which batches of 32 no longer change; their affine
        weights still train. ``freeze_batchnorm(False)`` undoes it."""
        self._bn_frozen = frozen
        self.train(self.training)
        return self

    def train(self, mode: bool = True) -> "APSENet":
        super().train(mode)
        if self._backbone_frozen:
            self.backbone.eval()
        elif self._bn_frozen:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts: backbone, attention heads, fusion/projection, total."""
        count = lambda ps: sum(p.numel() for p in ps)  # noqa: E731
        heads = [h for h in (self.low_head, self.high_head) if h is not None]
        n = dict(backbone=count(self.backbone.parameters()),
                 heads=sum(count(h.parameters()) for h in heads),
                 projection=count(self.fuse.parameters()))
        n["total"] = sum(n.values())
        return n

    def extra_repr(self) -> str:
        return (f"stages={self.stages}, attention={self.attention!r}, low_attention={self.low_attention!r}, "
                f"fusion={self.fusion!r}, embedding_dim={self.embedding_dim}")
