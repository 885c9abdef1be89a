"""The retrieval explorer's non-widget logic: search (self excluded), model agreement, tables, uploads,
rendering. Tiny synthetic images only (no FI image is used or copied)."""
from __future__ import annotations

import io
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from apse.emotions import EMOTIONS, polarity_of  # noqa: E402
from apse.explorer import UNKNOWN_TIER_COLOR, RetrievalExplorer, load_upload  # noqa: E402
from apse.metrics import pairwise_distances  # noqa: E402
from apse.plotting import TIER_COLORS, retrieval_tier  # noqa: E402
from apse.retrieval import RetrievalIndex  # noqa: E402


class MeanColour(torch.nn.Module):
    """Stub model: embedding = l2-normalised (mean R, G, B, 1) of the image."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.eye(4))
        self.backbone = SimpleNamespace(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

    def forward(self, x):
        feats = torch.cat([x.mean(dim=(2, 3)), torch.ones(len(x), 1)], dim=1) @ self.w
        return SimpleNamespace(embedding=torch.nn.functional.normalize(feats, dim=1))


def _png_bytes(colour, size=20):
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def gallery(tmp_path):
    """16 small solid-colour images, two per emotion folder."""
    g = torch.Generator().manual_seed(0)
    for e, name in enumerate(EMOTIONS):
        (tmp_path / name).mkdir()
        for j in range(2):
            colour = tuple(int(c) for c in torch.randint(0, 256, (3,), generator=g))
            (tmp_path / name / f"{j}.png").write_bytes(_png_bytes(colour))
    return tmp_path


def _random_index(paths, labels, seed):
    emb = torch.nn.functional.normalize(torch.randn(len(paths), 6, generator=torch.Generator().manual_seed(seed)), dim=1)
    return RetrievalIndex(emb, paths, labels)


def test_search_by_gallery_position_matches_brute_force_and_excludes_self(tmp_path):
    paths = [str(tmp_path / f"{i}.jpg") for i in range(12)]
    labels = [i % 8 for i in range(12)]
    index = _random_index(paths, labels, 1)
    app = RetrievalExplorer({"A": index}, k=4)
    d = pairwise_distances(index.embeddings, index.embeddings)
    for q in range(12):
        order = [int(i) for i in torch.sort(d[q], stable=True).indices if int(i) != q][:4]
        res = app.search(q)["A"]
        assert [paths.index(r.path) for r in res] == order
        assert [r.rank for r in res] == [1, 2, 3, 4]
        assert all(abs(r.distance - float(d[q, paths.index(r.path)])) < 1e-5 for r in res)
        # a gallery path is the same query as its position
        assert [r.path for r in app.search(paths[q])["A"]] == [r.path for r in res]


def test_models_must_share_the_gallery(tmp_path):
    paths = [str(tmp_path / f"{i}.jpg") for i in range(8)]
    a = _random_index(paths, list(range(8)), 1)
    b = _random_index(paths[::-1], list(range(8)), 2)
    with pytest.raises(ValueError, match="same gallery"):
        RetrievalExplorer({"A": a, "B": b})
    app = RetrievalExplorer([a, _random_index(paths, list(range(8)), 3)], names=["A", "B"])
    assert app.names == ["A", "B"] and len(app) == 8


def test_table_and_tier_counts(tmp_path):
    paths = [str(tmp_path / f"{i}.jpg") for i in range(16)]
    labels = [i % 8 for i in range(16)]
    app = RetrievalExplorer({"A": _random_index(paths, labels, 4), "B": _random_index(paths, labels, 5)}, k=5)
    table = app.table(3)
    assert list(table.columns) == ["model", "rank", "emotion", "polarity", "tier", "distance", "file"]
    assert len(table) == 10
    for _, row in table.iterrows():
        assert row["tier"] == retrieval_tier(labels[3], EMOTIONS.index(row["emotion"]))
    counts = app.tier_counts(3)
    assert list(counts.index) == ["A", "B"] and list(counts.columns) == list(TIER_COLORS)
    assert (counts.sum(axis=1) == 5).all()
    assert [label for label, _ in app.query_options("awe")] == [app.describe(2), app.describe(10)]
    with pytest.raises(IndexError):
        app.search(16)


def test_load_upload_formats():
    data = _png_bytes((10, 200, 30))
    for value in (data, ({"name": "x.png", "content": memoryview(data)},), {"x.png": {"content": data}}):
        img = load_upload(value)
        assert img.size == (20, 20) and img.getpixel((3, 3)) == (10, 200, 30)
    assert load_upload(()) is None
    with pytest.raises(ValueError, match="not an image"):
        load_upload(b"not an image")


def test_model_over_a_folder_uploads_and_render(gallery):
    app = RetrievalExplorer(MeanColour(), gallery=gallery, names=["stub"], k=3, thumb_size=16)
    assert len(app) == 16
    # an uploaded copy of gallery image 5 finds image 5 first, at distance ~0
    upload = ({"name": "q.png", "content": memoryview(open(app.paths[5], "rb").read())},)
    res = app.search(upload)["stub"]
    assert res[0].path == app.paths[5] and res[0].distance < 1e-4
    assert app.query_label(upload) is None
    with pytest.raises(ValueError, match="tiers need"):
        app.tier_counts(upload)
    # told the upload's emotion, the tiers are those of that emotion
    assert app.tier_counts(upload, label=EMOTIONS[5 // 2]).loc["stub", "same emotion"] >= 1
    assert list(app.table(upload, label="Awe")["tier"])[0] == "same emotion"
    # static rendering: one row, query + k thumbnails, frames by tier (grey for an upload)
    fig = app.render(2)
    axes = fig.axes
    assert len(axes) == 4
    label = app.labels[2]
    for ax, r in zip(axes[1:], app.search(2)["stub"]):
        expected = TIER_COLORS[retrieval_tier(label, EMOTIONS.index(r.emotion))]
        assert matplotlib.colors.to_hex(ax.spines["left"].get_edgecolor()) == expected
    plt.close(fig)
    fig = app.render(upload)
    assert matplotlib.colors.to_hex(fig.axes[1].spines["left"].get_edgecolor()) == UNKNOWN_TIER_COLOR
    plt.close(fig)
    assert polarity_of(app.search(2)["stub"][0].emotion) in (0, 1)


def test_widget_builds_headless(tmp_path):
    pytest.importorskip("ipywidgets")
    paths = [str(tmp_path / f"{i}.jpg") for i in range(8)]
    for p in paths:
        Image.new("RGB", (12, 12), (100, 50, 25)).save(p)
    app = RetrievalExplorer({"A": _random_index(paths, list(range(8)), 6)}, k=3, thumb_size=8)
    w = app.widget()
    assert w is app.widget()  # built once
    emotion, picker = w.children[0].children
    emotion.value = "fear"                      # filters the query picker
    assert [v for _, v in picker.options] == [4]
    # displayed, it is the live widget, with the explorer's short repr as its text stand-in
    from unittest import mock

    with mock.patch("IPython.display.display") as shown:
        app._ipython_display_()
    (bundle,), kwargs = shown.call_args
    assert kwargs == {"raw": True} and bundle["text/plain"] == repr(app)
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == w.model_id
    plt.close("all")


def test_figure_to_jpeg_is_a_jpeg_of_the_figure():
    from apse.plotting import figure_to_jpeg

    fig, ax = plt.subplots(figsize=(2, 1), dpi=50)
    ax.imshow(torch.rand(8, 8, 3).numpy())
    data = figure_to_jpeg(fig, quality=70)
    plt.close(fig)
    img = Image.open(io.BytesIO(data))
    assert data[:3] == b"\xff\xd8\xff" and img.format == "JPEG" and img.size == (100, 50)
