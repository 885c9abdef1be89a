"""apse: Attention-aware Polarity Sensitive Embedding for affective image retrieval.

A from-scratch reference implementation of Yao et al. (ICCV 2019, IEEE TMM 2020), and the code under
the APSE Book. One module per concept: `emotions`, `losses`, `metrics`, `backbones`, `attention`,
`pooling`, `model`, `data`, `training`, `evaluation`, `retrieval`, `plotting`.
"""
from apse.emotions import EMOTIONS, POLARITIES, emotion_index, polarity_of, polarity_labels

__version__ = "0.1.0"

__all__ = ["EMOTIONS", "POLARITIES", "emotion_index", "polarity_of", "polarity_labels", "__version__"]
