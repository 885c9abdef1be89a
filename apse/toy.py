"""A 2-D toy world for the loss chapters: eight emotion clusters, two polarities, a tiny network.

The inputs are Gaussian clusters around class centres drawn at random in `dim` dimensions, so the
input space carries *no* polarity structure: whatever polarity grouping appears in the learned
embedding was put there by the loss. The network maps inputs to a 2-D l2-normalised embedding (a
point on the unit circle, easy to draw) and, like APSENet, also predicts polarity and emotion
confidences, which WEP and GEP need.

The book's chapters 4-7 share everything here: the data (`make_toy_data`, `toy_split`), the
training loop (`train_toy`) and the two ways of reading the circle (`circle_order`,
`polarity_boundaries`), so that every chapter trains and measures the toy in exactly the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from apse.emotions import NUM_EMOTIONS, NUM_POLARITIES, polarity_of
from apse.losses import APSEObjective, automatic_attention_loss


def make_toy_data(n_per_class: int = 48, dim: int = 16, spread: float = 0.9, seed: int = 0):
    """Return (X, y): `n_per_class` points per emotion around random unit-scale centres."""
    if n_per_class < 4:
        raise ValueError("n_per_class must be at least 4 (one balanced batch needs 4 per emotion)")
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(NUM_EMOTIONS, dim, generator=g) * 1.5
    y = torch.arange(NUM_EMOTIONS).repeat_interleave(n_per_class)
    X = centres[y] + spread * torch.randn(len(y), dim, generator=g)
    return X, y


def toy_split(seed: int = 0, n_train: int = 48, spread: float = 0.9, dim: int = 16):
    """Return (X_train, y_train, X_test, y_test): `n_train` training and `n_train` held-out points
    per emotion.

    Draws ``make_toy_data(n_per_class=2 * n_train, dim=dim, spread=spread, seed=seed)`` and holds out
    the second half of each emotion's points. One seed fixes centres and points, so the training and
    held-out sets share the clusters (like a random split of one dataset) and are disjoint.
    """
    if n_train < 4:
        raise ValueError(f"n_train must be at least 4 (one balanced batch needs 4 per emotion), got {n_train}")
    X, y = make_toy_data(n_per_class=2 * n_train, dim=dim, spread=spread, seed=seed)
    # make_toy_data lists the emotions one after the other, so position within the emotion is index % 2n
    held = torch.arange(len(y)) % (2 * n_train) >= n_train
    return X[~held], y[~held], X[held], y[held]


def _check_circle_inputs(embeddings, labels):
    e = torch.as_tensor(embeddings).detach()
    y = torch.as_tensor(labels).detach()
    if e.ndim != 2 or e.shape[1] != 2 or e.shape[0] != len(y):
        raise ValueError(f"expected (N, 2) embeddings with N = len(labels), got {tuple(e.shape)} and {len(y)} labels")
    missing = [k for k in range(NUM_EMOTIONS) if not (y == k).any()]
    if missing:
        raise ValueError(f"every emotion 0..{NUM_EMOTIONS - 1} needs at least one point; missing {missing}")
    return e, y


def circle_order(embeddings, labels) -> list[int]:
    """The emotions in the order they sit around the circle: sorted by the angle (counter-clockwise
    from the positive x-axis, in (-pi, pi]) of each emotion's mean 2-D embedding.

    The N-pair loss is blind to which emotion sits next to which; this order is what shows whether a
    loss grouped the polarities (chapters 4-5 of the book).
    """
    e, y = _check_circle_inputs(embeddings, labels)
    mean = torch.stack([e[y == k].mean(0) for k in range(NUM_EMOTIONS)])
    return torch.atan2(mean[:, 1], mean[:, 0]).argsort().tolist()


def polarity_boundaries(embeddings, labels) -> int:
    """How many times the polarity changes going once round the circle (in `circle_order`).

    2 when the four positive and the four negative emotions each occupy one arc, 8 when they
    alternate; a random arrangement of 4 + 4 gives 8 * 4 / 7 ~ 4.6 on average. Always even.
    """
    pattern = [polarity_of(k) for k in circle_order(embeddings, labels)]
    return sum(pattern[k] != pattern[(k + 1) % NUM_EMOTIONS] for k in range(NUM_EMOTIONS))


class ToyNet(nn.Module):
    """Two-layer MLP -> 2-D unit embedding, plus polarity and emotion confidence heads."""

    def __init__(self, in_dim: int = 16, hidden: int = 64, embedding_dim: int = 2):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.embed = nn.Linear(hidden, embedding_dim)
        self.polarity_head = nn.Linear(hidden, NUM_POLARITIES)
        self.emotion_head = nn.Linear(hidden, NUM_EMOTIONS)

    def forward(self, x):
        h = self.body(x)
        return (F.normalize(self.embed(h), dim=1),
                self.polarity_head(h).softmax(dim=1), self.emotion_head(h).softmax(dim=1))


def balanced_batches(y: torch.Tensor, per_class: int = 4, seed: int = 0):
    """Endless balanced batches (8 emotions x `per_class`), grouped by emotion, as indices."""
    g = torch.Generator().manual_seed(seed)
    pools = [torch.nonzero(y == e).flatten() for e in range(NUM_EMOTIONS)]
    while True:
        yield torch.cat([p[torch.randperm(len(p), generator=g)[:per_class]] for p in pools])


@dataclass
class ToyRun:
    model: ToyNet
    losses: list = field(default_factory=list)


def train_toy(loss_fn: nn.Module, X: torch.Tensor, y: torch.Tensor, steps: int = 300, lr: float = 0.01,
              lam: float = 0.5, seed: int = 0, attention: bool | None = None) -> ToyRun:
    """Train a ToyNet with `loss_fn` (an `apse.losses` module) on balanced batches.

    With the attention loss (ICCV Eq. 2) the confidence heads are trained too, and the objective is
    lam * L_emb + (1 - lam) * L_att, as in the papers; without it only the embedding loss is optimised
    and the heads keep their initial weights. `attention=None` (default) is a training run's rule
    (:func:`apse.losses.automatic_attention_loss`): on for the APSE family (EP, WEP, GEP), as in the
    papers' method, off for the baselines. `attention=True` or `False` forces it either way: chapters
    5-7 train EP and fixed-beta GEP with ``attention=False`` to see the loss alone, and
    ``train_toy(EPLoss(), X, y, attention=True)`` is the control "EP + attention loss" that separates
    the effect of training the heads (which shape the shared hidden layers) from the effect of using
    their confidences in the loss.

    The confidences are passed to the loss only when it needs them (`loss_fn.needs_confidences`);
    the losses that use them detach them, so the heads learn from the attention loss alone.
    Deterministic for a given `seed` (initial weights and batches), so ``steps=k`` reproduces step k
    of a longer run.
    """
    if attention is not None and not isinstance(attention, bool):
        raise ValueError(f"attention must be None, True or False, got {attention!r}")
    needs_conf = bool(getattr(loss_fn, "needs_confidences", False))
    if attention is None:  # the toy has both heads
        attention = automatic_attention_loss(loss_fn, model_has_heads=True)
    objective = APSEObjective(loss_fn, attention, lam)

    torch.manual_seed(seed)
    model = ToyNet(in_dim=X.shape[1])
    params = list(model.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    run = ToyRun(model=model)
    batches = balanced_batches(y, seed=seed)
    for _ in range(steps):
        idx = next(batches)
        emb, pc, ec = model(X[idx])
        confidences = (pc, ec) if needs_conf else (None, None)
        loss, _, _ = objective(emb, y[idx], *confidences, attention_terms=[("polarity", pc), ("emotion", ec)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.losses.append(loss.item())
    model.eval()
    return run
