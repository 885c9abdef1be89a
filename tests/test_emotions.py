import pytest
import torch

from apse import emotions as em
from apse.plotting import retrieval_tier


def test_order_and_polarity_follow_the_papers():
    assert em.EMOTIONS == ("amusement", "contentment", "awe", "excitement", "fear", "anger", "disgust", "sadness")
    assert [em.polarity_of(e) for e in em.EMOTIONS] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert em.polarity_of("Sadness") == em.NEGATIVE and em.polarity_of(2) == em.POSITIVE


def test_lookup_is_case_insensitive_and_errors_list_valid_names():
    assert em.emotion_index("  AWE ") == 2
    with pytest.raises(ValueError, match="amusement, contentment"):
        em.emotion_index("joy")
    with pytest.raises(ValueError):
        em.emotion_name(8)


def test_alphabetical_folder_order_is_not_the_label_order():
    alphabetical = sorted(em.EMOTIONS)
    assert [em.emotion_index(n) for n in alphabetical] == [0, 5, 2, 1, 6, 3, 4, 7]


def test_polarity_labels_tensor():
    y = torch.tensor([0, 3, 4, 7, 1])
    assert torch.equal(em.polarity_labels(y), torch.tensor([0, 0, 1, 1, 0]))
    with pytest.raises(ValueError):
        em.polarity_labels(torch.tensor([8]))


def test_every_emotion_has_a_distinct_colour_and_tiers():
    assert len(set(em.EMOTION_COLORS[e] for e in em.EMOTIONS)) == 8
    assert retrieval_tier(2, 2) == "same emotion"
    assert retrieval_tier(2, 0) == "same polarity"
    assert retrieval_tier(2, 6) == "opposite polarity"
