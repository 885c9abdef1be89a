"""A 2-D toy world for the loss chapters: eight emotion clusters, two polarities, a tiny network.

The inputs are Gaussian clusters around class centres drawn at random in `dim` dimensions, so the
input space carries *no* polarity structure: whatever polarity grouping appears in the learned
embedding was put there by the loss. The network maps inputs to a 2-D l2-normalised embedding (a
point on the unit circle, easy to draw) and, like APSENet, also predicts polarity and emotion
confidences, which WEP and GEP need.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from apse.emotions import NUM_EMOTIONS, NUM_POLARITIES, polarity_labels


def make_toy_data(n_per_class: int = 48, dim: int = 16, spread: float = 0.9, seed: int = 0):
    """Return (X, y): `n_per_class` points per emotion around random unit-scale centres."""
    if n_per_class < 4:
        raise ValueError("n_per_class must be at least 4 (one balanced batch needs 4 per emotion)")
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(NUM_EMOTIONS, dim, generator=g) * 1.5
    y = torch.arange(NUM_EMOTIONS).repeat_interleave(n_per_class)
    X = centres[y] + spread * torch.randn(len(y), dim, generator=g)
    return X, y


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
              lam: float = 0.5, seed: int = 0) -> ToyRun:
    """Train a ToyNet with `loss_fn` (an `apse.losses` module) on balanced batches.

    When the loss needs confidences (WEP, GEP), the confidence heads are trained with the attention
    loss and the objective is lam * L_emb + (1 - lam) * L_att, as in the papers; otherwise the heads
    are left out and only the embedding loss is optimised.
    """
    from apse.losses import attention_loss

    torch.manual_seed(seed)
    model = ToyNet(in_dim=X.shape[1])
    params = list(model.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    run = ToyRun(model=model)
    batches = balanced_batches(y, seed=seed)
    for _ in range(steps):
        idx = next(batches)
        emb, pc, ec = model(X[idx])
        labels = y[idx]
        if getattr(loss_fn, "needs_confidences", False):
            l_att = attention_loss(pc, polarity_labels(labels)) + attention_loss(ec, labels)
            loss = lam * loss_fn(emb, labels, pc, ec) + (1 - lam) * l_att
        else:
            loss = loss_fn(emb, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.losses.append(loss.item())
    model.eval()
    return run
