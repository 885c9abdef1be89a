"""No chapter is longer than a reader can take in one sitting: ~3,500 words of prose (issue #23).

Prose is what the page shows as running text: the markdown cells (and the introduction's .md),
without formulas, fenced code (the solutions' snippets), link targets and glued values, which
count as one word each. Code cells are not prose.
"""
import json
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[2] / "book"
LIMIT = 3500


def prose_words(markdown: str) -> int:
    text = re.sub(r"^(```|~~~).*?^\1", " ", markdown, flags=re.S | re.M)   # fenced code
    text = re.sub(r"^:::.*$", " ", text, flags=re.M)                        # directive fences
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)                    # display maths
    text = re.sub(r"\$[^$\n]+\$", " ", text)                                # inline maths
    text = re.sub(r"\{glue:\w+\}`[^`]*`", "N", text)                        # a glued number
    text = re.sub(r"\]\([^)]*\)", "]", text)                                # link targets
    text = re.sub(r"<[^>]+>", " ", text)                                    # html tags
    return sum(1 for token in text.split() if re.search(r"\w", token))


def chapter_words(path: Path) -> int:
    if path.suffix == ".md":
        return prose_words(path.read_text())
    cells = json.loads(path.read_text())["cells"]
    return sum(prose_words("".join(c["source"])) for c in cells if c["cell_type"] == "markdown")


def test_prose_words_counts_words_not_code_or_maths():
    text = ("The loss $L = \\sum_i x_i$ is small.\n\n```python\nprint('not prose')\n```\n"
            "$$\na + b\n$$\nSee [chapter 3](03_metrics.ipynb): {glue:text}`map8` here.\n")
    # The, loss, is, small. / See, [chapter, 3]:, N, here.
    assert prose_words(text) == 9


CHAPTERS = sorted(BOOK.glob("[0-9]*.ipynb")) + sorted(BOOK.glob("[0-9]*.md"))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_is_within_the_length_limit(path):
    words = chapter_words(path)
    assert words <= LIMIT, f"{path.name}: {words} words of prose (limit {LIMIT}): split or cut it"
