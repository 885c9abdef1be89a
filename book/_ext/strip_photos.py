#!/usr/bin/env python3
"""Keep the data sets' photographs out of the notebooks' stored outputs (and so out of the book).

    python book/_ext/strip_photos.py           # strip them (run it after executing a notebook)
    python book/_ext/strip_photos.py --check   # exit 1 listing what would change (a test runs it)

FI, Twitter I and FlickrLDL are released for research use only: their images must never be
committed to this repository or published (see each data set's README). The notebooks are committed
with their outputs and the book renders those outputs as they are (``execute_notebooks: "off"``),
so a figure of dataset photographs stored in a notebook would be both. The rule:

* a code cell whose figure shows dataset photographs carries the cell tag ``dataset-photos``; its
  stored image outputs are replaced by one short note (what it shows appears when a reader runs
  the notebook with the data, in JupyterLab or on Colab, as before);
* images stored in widget state (chapter 14's explorer shows its hits in an Output widget) are
  always photographs: they are replaced by the same note;
* an untagged cell that calls one of :data:`PHOTO_CALLS` and stores an image is an error of the
  check: tag it (or, if its figure holds no photograph, say so by calling none of them).

The rule is about what is stored, not what runs: CI executes every cell, photographs included.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TAG = "dataset-photos"
#: The package's functions that draw a data set's images (a cell calling one draws photographs).
PHOTO_CALLS = ("load_rgb", "image_grid", "plot_retrievals", "overlay_attention", "show_jpeg",
               "to_image", "Image.open")
NOTE = ("*Not published: this output shows photographs from the data set, which are for research "
        "use only. Run the notebook with the data to see it.*")
NOTE_TEXT = ("[photographs from the data set: not published (research use only);\n"
             " run the notebook with the data to see them]")
_CALLS = re.compile("|".join(r"(?<!\w)" + re.escape(c) + r"\s*\(" for c in PHOTO_CALLS))


def notebooks(root: Path = ROOT) -> list[Path]:
    return sorted((root / "book").glob("[0-9]*.ipynb"))


def _has_image(output: dict) -> bool:
    return any(mime.startswith("image/") for mime in output.get("data", {}))


def _is_note(output: dict) -> bool:
    return output.get("data", {}).get("text/markdown") == NOTE


def note_output() -> dict:
    return {"output_type": "display_data", "metadata": {},
            "data": {"text/markdown": NOTE, "text/plain": NOTE_TEXT}}


def _strip(outputs: list) -> list:
    """``outputs`` with its image outputs replaced by one note (at the first one's place)."""
    kept, noted = [], any(_is_note(o) for o in outputs)
    for out in outputs:
        if _has_image(out):
            if not noted:
                kept.append(note_output())
                noted = True
        else:
            kept.append(out)
    return kept


def fix_notebook(nb: dict) -> tuple[list[str], list[str]]:
    """Strip ``nb`` in place. Returns ``(stripped, untagged)``: the places whose photographs were
    replaced by the note (``"cell 3"``, ``"widget <id>"``), and the untagged cells that call one of
    :data:`PHOTO_CALLS` and store an image (left as they are: they need the tag)."""
    stripped, untagged = [], []
    for i, cell in enumerate(nb.get("cells", [])):
        outputs = cell.get("outputs", [])
        if cell.get("cell_type") != "code" or not any(_has_image(o) for o in outputs):
            continue
        if TAG in cell.get("metadata", {}).get("tags", []):
            cell["outputs"] = _strip(outputs)
            stripped.append(f"cell {i}")
        elif _CALLS.search("".join(cell.get("source", ""))):
            untagged.append(f"cell {i}")
    states = nb.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json",
                                                             {}).get("state", {})
    for key, widget in states.items():
        outputs = widget.get("state", {}).get("outputs")
        if isinstance(outputs, list) and any(_has_image(o) for o in outputs):
            widget["state"]["outputs"] = _strip(outputs)
            stripped.append(f"widget {key}")
    return stripped, untagged


def sync(write: bool = True, root: Path = ROOT) -> tuple[list[str], list[str]]:
    """Strip every notebook (written back when ``write``): ``(stripped, untagged)`` of
    :func:`fix_notebook` over all of them, each place prefixed by its notebook's name."""
    stripped, untagged = [], []
    for path in notebooks(root):
        nb = json.loads(path.read_text())
        done, missing = fix_notebook(nb)
        stripped += [f"{path.name}: {place}" for place in done]
        untagged += [f"{path.name}: {place}" for place in missing]
        if write and done:
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return stripped, untagged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything would")
    args = parser.parse_args(argv)
    stripped, untagged = sync(write=not args.check)
    for place in stripped:
        print(f"{place}: stored photographs ({'to strip' if args.check else 'stripped'})")
    for place in untagged:
        print(f"{place}: calls one of {', '.join(PHOTO_CALLS)} and stores an image: tag it {TAG!r}")
    return 1 if (untagged or (args.check and stripped)) else 0


if __name__ == "__main__":
    sys.exit(main())
