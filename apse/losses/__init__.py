"""Embedding and attention losses of APSE, and the baselines the papers compare against.

One module per job: :mod:`~apse.losses.functional` (the maths of one N-pair tuple: N-pair, EP, WEP,
GEP, the attention loss), :mod:`~apse.losses.tuples` (those as modules over a balanced batch),
:mod:`~apse.losses.baselines` (softmax, contrastive, triplet, center, ... over any batch),
:mod:`~apse.losses.base` (:class:`EmbeddingLoss`, the base class whose attributes say what a loss
needs, and the one rule of the automatic attention loss), :mod:`~apse.losses.registry` (every loss
by name: :func:`build_loss`, :func:`register_loss`), :mod:`~apse.losses.config` (the loss section of
a training config, :class:`LossConfig`, and :func:`build_configured_loss`) and
:mod:`~apse.losses.objective` (the total ``lam L_emb + (1 - lam) L_att``).

Every loss module is called as ``loss(embeddings, labels, polarity_confidence=None,
emotion_confidence=None)`` and returns a scalar (as in pytorch-metric-learning, one call signature
for all), so the trainer and the notebooks can swap one for another by name.
"""
from apse.losses.base import EmbeddingLoss, automatic_attention_loss, constructor_keywords
from apse.losses.baselines import (ArcFaceLoss, BinomialDevianceLoss, CenterLoss, ContrastiveLoss, FastAPLoss,
                                   SoftmaxLoss, SoftTripleLoss, SphereFaceLoss, TripletLoss, YangLoss)
from apse.losses.functional import (apse_objective, attention_loss, ep_loss, generate_negatives, gep_loss,
                                    inter_polarity_loss, intra_polarity_loss, npair_loss, split_into_tuples,
                                    wep_loss, wep_weights)
from apse.losses.objective import APSEObjective
from apse.losses.registry import (ALIASES, LOSS_NAMES, LOSSES, LossEntry, build_loss, canonical_loss, loss_entry,
                                  register_loss)
from apse.losses.config import LossConfig, build_configured_loss, loss_names
from apse.losses.tuples import EPLoss, GEPLoss, NPairLoss, WEPLoss

__all__ = [
    "npair_loss", "inter_polarity_loss", "intra_polarity_loss", "ep_loss", "wep_weights", "wep_loss",
    "generate_negatives", "gep_loss", "attention_loss", "split_into_tuples", "apse_objective",
    "NPairLoss", "EPLoss", "WEPLoss", "GEPLoss", "SoftmaxLoss", "ContrastiveLoss", "TripletLoss",
    "CenterLoss", "BinomialDevianceLoss", "ArcFaceLoss", "SphereFaceLoss", "FastAPLoss",
    "SoftTripleLoss", "YangLoss", "build_loss", "build_configured_loss", "register_loss", "loss_entry",
    "LossEntry", "LOSSES", "ALIASES", "LOSS_NAMES", "APSEObjective", "EmbeddingLoss",
    "automatic_attention_loss", "constructor_keywords", "canonical_loss", "LossConfig", "loss_names",
]
