"""No photograph of a research-only data set in a committed notebook (book/_ext/strip_photos.py).

The committed notebooks are checked as they are, and the stripping rule is checked on small
made-up notebooks: a tagged figure loses its image for one note, a plain figure keeps its image,
an untagged cell that draws photographs is reported, and so are images stored in widget state.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

from conftest import load_file

REPO = Path(__file__).resolve().parents[2]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nnot really").decode()


strip = load_file(REPO / "book/_ext/strip_photos.py")


def _cell(source, tags=(), outputs=()):
    return {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": source,
            "outputs": list(outputs), "execution_count": 1}


def _image():
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": PNG, "text/plain": "<Figure size 640x480 with 1 Axes>"}}


def _stream(text):
    return {"output_type": "stream", "name": "stdout", "text": text}


def test_committed_notebooks_store_no_photographs():
    assert strip.sync(write=False) == ([], []), "run python book/_ext/strip_photos.py (and tag photo cells)"


def test_committed_photo_cells_are_tagged_and_hold_the_note():
    tagged = 0
    for path in strip.notebooks():
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if strip.TAG in cell.get("metadata", {}).get("tags", []):
                tagged += 1
                assert any(strip._is_note(o) for o in cell.get("outputs", [])), path.name
    assert tagged >= 8  # chapters 2, 8, 11, 12, 14 and 15 show photographs


def test_a_tagged_figure_keeps_its_text_and_gets_one_note():
    nb = {"cells": [_cell("plot_retrievals(q)\n", [strip.TAG],
                          [_stream("top 5\n"), _image(), _image()])]}
    outputs_before = list(nb["cells"][0]["outputs"])
    assert strip.fix_notebook(nb) == (["cell 0"], [])
    outputs = nb["cells"][0]["outputs"]
    assert outputs != outputs_before
    assert outputs[0] == _stream("top 5\n")
    assert len(outputs) == 2 and strip._is_note(outputs[1])
    assert not any(strip._has_image(o) for o in outputs)
    # idempotent: a second pass finds nothing and adds no second note
    assert strip.fix_notebook(nb) == ([], []) and nb["cells"][0]["outputs"] == outputs


def test_a_plain_figure_is_left_alone_and_an_untagged_photo_cell_is_reported():
    plain = _cell("plt.plot([1, 2])\n", outputs=[_image()])
    photo = _cell("img = load_rgb(path)\nplt.imshow(img)\n", outputs=[_image()])
    nb = {"cells": [plain, photo]}
    assert strip.fix_notebook(nb) == ([], ["cell 1"])
    assert nb["cells"][0]["outputs"] == [_image()]          # a chart: no photograph in it
    assert nb["cells"][1]["outputs"] == [_image()]          # reported, not silently changed
    # a name that only contains a photo call's name is not one
    assert strip.fix_notebook({"cells": [_cell("n = my_load_rgb(x)\nplt.plot([n])\n",
                                                outputs=[_image()])]}) == ([], [])


def test_images_in_widget_state_are_stripped():
    state = {"w1": {"model_name": "OutputModel", "state": {"outputs": [_image()]}},
             "w2": {"model_name": "HTMLModel", "state": {"value": "<b>3 hits</b>"}}}
    nb = {"cells": [], "metadata": {"widgets": {
        "application/vnd.jupyter.widget-state+json": {"state": state}}}}
    assert strip.fix_notebook(nb) == (["widget w1"], [])
    outputs = state["w1"]["state"]["outputs"]
    assert len(outputs) == 1 and strip._is_note(outputs[0])
    assert state["w2"]["state"] == {"value": "<b>3 hits</b>"}
