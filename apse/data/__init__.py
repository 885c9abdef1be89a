"""Data: image files, the emotion datasets, splits, balanced batches, transforms and a feature cache.

One module per job; every public name is importable from ``apse.data`` itself. Which part of the spec
(``../shared/spec/apse-method.md``) each serves:

- :mod:`apse.data.images`: :func:`is_image_file` (by content), :func:`load_rgb` (any mode to RGB),
  :class:`CorruptImageError`, :class:`DataWarning`, and the item protocol the datasets share.
- :mod:`apse.data.folder`: :class:`EmotionImageFolder` reads FI as its authors distribute it (one
  folder per emotion) and the small IAPSa / ArtPhoto / Abstract sets from a CSV manifest
  (:meth:`EmotionImageFolder.from_manifest`, parsed by :mod:`apse.data.manifest`). Labels always go
  through :func:`apse.emotions.emotion_index` by *name* ("Labels": an alphabetical ImageFolder order is
  not the papers' order).
- :mod:`apse.data.locate`: :func:`locate_dataset` finds a dataset from an explicit path, ``$APSE_DATA``
  or the usual places.
- :mod:`apse.data.sources` and :mod:`apse.data.fetch`: the book's three public data sets (FI subset,
  Twitter I, FlickrLDL) as pinned GitHub commits plus shipped manifests, and :func:`get`, which
  downloads and verifies one (``python -m apse data get NAME``, :mod:`apse.data.cli`).
- :mod:`apse.data.splits`: :func:`stratified_split` (FI: random 80 / 5 / 15), :func:`stratified_kfold`
  (IAPSa, ArtPhoto, Abstract: 5-fold) and :func:`save_split` / :func:`load_split`, which store *file
  names*, so a run can be repeated exactly even when the folder listing changes ("Training and
  evaluation protocol").
- :mod:`apse.data.sampler`: :class:`BalancedBatchSampler`, a batch of P x K = 8 x 4 images, 4 of each
  emotion, grouped by class in emotion order, which the losses cut into 2 disjoint N-pair tuples
  ("Losses": a batch of 32); :class:`BatchConfig`, the training config's section of P, K and the
  batches an epoch.
- :mod:`apse.data.transforms`: :func:`build_transforms`, resize to 256 x 256, random 224 crop +
  horizontal flip for training, centre crop for evaluation, ToTensor, Normalize; :class:`ImageConfig`,
  the training config's section of the sizes.
- :mod:`apse.data.features`: :func:`extract_features` / :class:`FeatureDataset` run a *frozen*
  backbone once over a dataset and keep its stage maps (conv3, conv5, ...), so everything after the
  backbone trains on cached maps (a documented deviation for CPU work).
- :mod:`apse.data.loader`: :class:`GatheredBatches`, whole batches gathered from tensors in memory
  (cached maps, images decoded once), the loader of training and of evaluation over them.
- :mod:`apse.data.labelcsv`: what the three label CSV readers (manifest, polarity, votes) share: the
  header in any case, Excel's byte-order mark, blank lines, rows by line number, listed paths.
- :mod:`apse.data.votes`: vote-labelled images (FlickrLDL's ``labels.csv``): the majority emotion,
  ties and polarity conflicts left out and listed (:meth:`EmotionImageFolder.from_manifest` reads it).
- :mod:`apse.data.pooled`: :func:`open_data` opens a data set by path or name, :func:`pool` joins
  several into one whose ``sources`` name each image's data set (folds are drawn within each source).
- :mod:`apse.data.polarity`: :class:`~apse.data.polarity.LabelledImages` (polarity- or emotion-labelled
  images from a CSV or class folders) and Twitter I.
"""
from apse.backbones import IMAGENET_MEAN, IMAGENET_STD
from apse.data.features import FeatureDataset, extract_features
from apse.data.fetch import get
from apse.data.folder import EmotionImageFolder
from apse.data.images import IMAGE_EXTENSIONS, CorruptImageError, DataWarning, is_image_file, load_rgb
from apse.data.locate import FI_REQUEST, locate_dataset
from apse.data.pooled import DATASET_LABELS, dataset_label, open_data, pool
from apse.data.loader import GatheredBatches
from apse.data.sampler import BalancedBatchSampler, BatchConfig
from apse.data.splits import load_split, save_split, stratified_kfold, stratified_split
from apse.data.transforms import ImageConfig, build_transforms

__all__ = [
    "CorruptImageError", "DataWarning", "EmotionImageFolder", "FeatureDataset", "BalancedBatchSampler",
    "build_transforms", "extract_features", "get", "is_image_file", "load_rgb", "load_split", "locate_dataset",
    "save_split", "stratified_kfold", "stratified_split", "open_data", "pool", "dataset_label",
    "DATASET_LABELS", "ImageConfig", "BatchConfig", "GatheredBatches",
    # constants that were importable from the single apse.data module
    "FI_REQUEST", "IMAGE_EXTENSIONS", "IMAGENET_MEAN", "IMAGENET_STD",
]
