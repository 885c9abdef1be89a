"""Visible code and printed output of every chapter stay within 79 characters.

At 1280 px the book's code column shows 79 characters (PEP 8's limit); a longer line scrolls
sideways and the reader loses its end. This reads each notebook's JSON as the built page shows it:
the source of every code cell whose input is shown (not ``hide-input``, ``remove-input`` or
``remove-cell``), and every output shown as text (streams, and ``text/plain`` results that have no
HTML or image form). Markdown and rendered tables are not checked here; the page check in
``.ci/check_pages.py`` sees those.
"""
import json
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[2] / "book"
WIDTH = 79
HIDDEN_INPUT = {"hide-input", "remove-input", "remove-cell"}
HIDDEN_OUTPUT = {"remove-output", "remove-cell"}
# Chapters not yet brought within the width (issue #23). Strict: a chapter that fits fails here
# until it is taken off the list.
PENDING: set[str] = set()
# A live widget renders itself on the page (its text/plain stand-in is never shown).
RICH = ("text/html", "image/png", "image/svg+xml", "text/markdown", "text/latex",
        "application/vnd.jupyter.widget-view+json")


def _text(value):
    return "".join(value) if isinstance(value, list) else str(value)


def long_lines(path, width=WIDTH):
    """``(cell index, 'code' | 'output', line)`` for each visible line wider than ``width``."""
    found = []
    for index, cell in enumerate(json.loads(Path(path).read_text())["cells"]):
        if cell["cell_type"] != "code":
            continue
        tags = set(cell.get("metadata", {}).get("tags", []))
        if not tags & HIDDEN_INPUT:
            found += [(index, "code", line) for line in _text(cell["source"]).splitlines()
                      if len(line) > width]
        if tags & HIDDEN_OUTPUT:
            continue
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream":
                text = _text(output["text"])
            elif output["output_type"] in ("execute_result", "display_data"):
                data = output.get("data", {})
                if any(kind in data for kind in RICH):
                    continue
                text = _text(data.get("text/plain", ""))
            else:
                text = _text(output.get("traceback", ""))
            # A progress bar redraws itself with carriage returns; the page shows the last state.
            found += [(index, "output", line.split("\r")[-1]) for line in text.splitlines()
                      if len(line.split("\r")[-1]) > width]
    return found


def test_long_lines_finds_a_wide_code_line_and_a_wide_output(tmp_path):
    wide = "x" * 80
    cells = [
        {"cell_type": "code", "metadata": {}, "source": [wide],
         "outputs": [{"output_type": "stream", "name": "stdout", "text": ["ok\n", wide]}]},
        {"cell_type": "code", "metadata": {"tags": ["hide-input"]}, "source": [wide],
         "outputs": [{"output_type": "execute_result", "data": {"text/html": wide,
                                                                "text/plain": wide}}]},
        {"cell_type": "markdown", "metadata": {}, "source": [wide]},
    ]
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": cells}))
    assert long_lines(path) == [(0, "code", wide), (0, "output", wide)]


@pytest.mark.parametrize("name", [
    pytest.param(p.name, marks=pytest.mark.xfail(strict=True, reason="issue #23: not yet 79"))
    if p.stem in PENDING else p.name for p in sorted(BOOK.glob("*.ipynb"))])
def test_visible_lines_fit_the_page(name):
    lines = long_lines(BOOK / name)
    shown = "\n".join(f"cell {i} ({kind}, {len(line)} chars): {line[:60]}..."
                      for i, kind, line in lines[:10])
    assert not lines, f"{len(lines)} visible line(s) over {WIDTH} characters:\n{shown}"


# Code blocks in the prose: the page's code column at 79 characters, a solution's dropdown (an
# indented card) at 71 (book/_ext/static/apse.css sets the padding both widths assume).
DROPDOWN_WIDTH = 71


def markdown_code_lines(markdown: str):
    """``(width limit, line)`` for each line of each fenced code block of ``markdown``, with the
    fence's own indentation removed (a block inside a list item is indented in the source, not on
    the page); the limit is :data:`DROPDOWN_WIDTH` inside a ``:::{dropdown}`` directive. A
    backtick fence whose info string is ``{name}`` is a directive's (``{bibliography}``): its body
    is not code."""
    out, fence, indent, code, depth = [], None, 0, True, []
    for raw in markdown.splitlines():
        text = raw.strip()
        if fence is None:
            if text.startswith(":::"):  # a colon directive opens (:::{name}) or closes (:::)
                if text.strip(":"):
                    depth.append("dropdown" in text)
                else:
                    depth = depth[:-1]
            elif text.startswith(("```", "~~~")):
                fence, indent = text[:3], len(raw) - len(raw.lstrip())
                code = not text[3:].lstrip().startswith("{")
            continue
        if text.startswith(fence) and text.strip("`~") == "":
            fence = None
            continue
        if code:
            line = raw[indent:] if raw[:indent].strip() == "" else raw.lstrip()
            out.append((DROPDOWN_WIDTH if any(depth) else WIDTH, line))
    return out


def test_markdown_code_lines_strip_the_fence_indent_and_know_dropdowns():
    text = ("1. Do it:\n\n   ```python\n   x = 1\n       y = 2\n   ```\n"
            ":::{dropdown} Solution\n```bash\nls -l\n```\n:::\n```\nafter\n```\n")
    assert markdown_code_lines(text) == [(79, "x = 1"), (79, "    y = 2"), (71, "ls -l"),
                                         (79, "after")]
    # a backtick directive's body is not code, and its closing fence opens nothing
    text = "```{bibliography}\n:all:\n```\n```python\nz = 3\n```\n"
    assert markdown_code_lines(text) == [(79, "z = 3")]


PROSE = sorted(BOOK.glob("*.ipynb")) + sorted(BOOK.glob("*.md"))


@pytest.mark.parametrize("path", PROSE, ids=lambda p: p.name)
def test_code_blocks_in_the_prose_fit_the_page(path):
    if path.suffix == ".md":
        texts = [path.read_text()]
    else:
        texts = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                 if c["cell_type"] == "markdown"]
    wide = [(limit, line) for text in texts for limit, line in markdown_code_lines(text)
            if len(line) > limit]
    shown = "\n".join(f"({len(line)} > {limit}) {line[:70]}" for limit, line in wide[:10])
    assert not wide, f"{len(wide)} code line(s) in the prose too wide:\n{shown}"
