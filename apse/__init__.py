"""apse: Attention-aware Polarity Sensitive Embedding for affective image retrieval.

A from-scratch reference implementation of Yao et al. (ICCV 2019, IEEE TMM 2020), and the code under
the APSE Book. One module (or package) per concept: `emotions`, `registry` (the one registry type),
`data` (images, splits, data sets by name, pooled sets, the fetcher), `backbones`, `attention`,
`pooling`, `fusion`, `model`, `losses`, `metrics`, `config` (the training config, composed of the
sections its consumers own: `model`, `losses`, `optim`, `data`, `protocol`; `checks` holds their
error), `training` (the one training loop, with `training_data`, `checkpoints`, `rng`, `distributed`,
`provenance`: the run's record), `runs` (which config fields decide a result, and the keys of cached
results), `evaluation`, `retrieval`, `explorer`, `plotting`, `diagrams`, `transfer` (other data
sets, trained by the same loop), `experiments` (the papers' tables, re-run) and `notebook` (the
book's helpers).
"""
from apse.emotions import EMOTIONS, POLARITIES, emotion_index, polarity_of, polarity_labels

__version__ = "0.1.0"

__all__ = ["EMOTIONS", "POLARITIES", "emotion_index", "polarity_of", "polarity_labels", "__version__"]
