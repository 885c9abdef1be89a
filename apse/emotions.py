"""Mikels' eight emotions, their two polarities, and the colours the book plots them in.

The order is the papers' (positive emotions first). FI is distributed as one folder per emotion, and
an alphabetical listing of those folders is *not* this order, so every label in `apse` goes through
:func:`emotion_index` by name, never by position.
"""
from __future__ import annotations

import torch

EMOTIONS: tuple[str, ...] = (
    "amusement", "contentment", "awe", "excitement",  # positive
    "fear", "anger", "disgust", "sadness",             # negative
)
POLARITIES: tuple[str, ...] = ("positive", "negative")
NUM_EMOTIONS = len(EMOTIONS)
NUM_POLARITIES = len(POLARITIES)
POSITIVE, NEGATIVE = 0, 1

#: What a data set's labels can be, each level with its classes in label order: the eight emotions
#: (FI, FlickrLDL) or the two polarities themselves (Twitter I). The metrics, the tuple losses and
#: the attention loss read a batch's classes and their polarities from its level (:func:`classes_of`,
#: :func:`class_polarities`) instead of assuming eight emotions.
LEVELS: dict[str, tuple[str, ...]] = {"emotion": EMOTIONS, "polarity": POLARITIES}

# One hue family per polarity (warm = positive, cool = negative) so plots read at a glance.
EMOTION_COLORS: dict[str, str] = {
    "amusement": "#f4a300", "contentment": "#e8d34a", "awe": "#f06b3c", "excitement": "#d62f5b",
    "fear": "#4b3f8f", "anger": "#2f6db5", "disgust": "#2b9a8c", "sadness": "#5b6770",
}
POLARITY_COLORS: dict[str, str] = {"positive": "#f06b3c", "negative": "#2f6db5"}


def emotion_index(name: str) -> int:
    """Index of an emotion in the papers' order; case and surrounding spaces are ignored."""
    key = str(name).strip().lower()
    try:
        return EMOTIONS.index(key)
    except ValueError:
        raise ValueError(
            f"unknown emotion {name!r}; valid names are: {', '.join(EMOTIONS)}"
        ) from None


def emotion_name(index: int) -> str:
    """Name of the emotion at `index` (0..7)."""
    if not 0 <= int(index) < NUM_EMOTIONS:
        raise ValueError(f"emotion index must be in 0..{NUM_EMOTIONS - 1}, got {index}")
    return EMOTIONS[int(index)]


def polarity_of(emotion: int | str) -> int:
    """Polarity (0 = positive, 1 = negative) of an emotion given by index or name."""
    index = emotion_index(emotion) if isinstance(emotion, str) else int(emotion)
    emotion_name(index)  # validates the range
    return POSITIVE if index < NUM_EMOTIONS // 2 else NEGATIVE


def polarity_labels(labels: torch.Tensor) -> torch.Tensor:
    """Polarity labels (0/1, long) for a tensor of emotion indices in the papers' order."""
    labels = torch.as_tensor(labels)
    if labels.numel() and (labels.min() < 0 or labels.max() >= NUM_EMOTIONS):
        raise ValueError(f"emotion labels must lie in 0..{NUM_EMOTIONS - 1}")
    return (labels >= NUM_EMOTIONS // 2).long()


def classes_of(level: str) -> tuple[str, ...]:
    """The class names of a label level (:data:`LEVELS`), in label order."""
    try:
        return LEVELS[level]
    except KeyError:
        raise ValueError(f"unknown label level {level!r}; valid: {', '.join(LEVELS)}") from None


def class_polarities(level: str) -> torch.Tensor:
    """The polarity (0 = positive, 1 = negative) of each class of a label level, as a long tensor
    indexed by label: ``(0, 0, 0, 0, 1, 1, 1, 1)`` for the emotions, ``(0, 1)`` for the polarities."""
    names = classes_of(level)
    if level == "polarity":
        return torch.arange(NUM_POLARITIES)
    return torch.tensor([polarity_of(i) for i in range(len(names))])


def emotion_color(emotion: int | str) -> str:
    """Hex colour of an emotion given by index or name."""
    name = emotion_name(emotion_index(emotion) if isinstance(emotion, str) else emotion)
    return EMOTION_COLORS[name]
