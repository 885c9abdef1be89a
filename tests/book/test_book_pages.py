"""The book's infrastructure: bibliography, offline MathJax, script dedupe, and the browser page check.

The page check (``.ci/check_pages.py``) is tested on small hand-made pages, one per failure it must
catch, so that a check that silently passes everything is caught here; those tests need Debian's
``chromium`` (``.ci/run`` installs it) and the MathJax wheel, and are skipped without them.
"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_file

ROOT = Path(__file__).resolve().parents[2]
BIB = ROOT / "references.bib"
EXT = ROOT / "book" / "_ext"
CHECKER = ROOT / ".ci" / "check_pages.py"

# Keys other chapters cite (issue #14); the bibliography must keep every one of them.
REQUIRED_KEYS = {
    "yao2019apse", "yao2020apse", "you2016fi", "you2015twitter", "mikels2005emotion", "sohn2016npair",
    "yang2018retrieving", "hadsell2006contrastive", "schroff2015facenet", "wen2016center", "yi2014binomial",
    "deng2019arcface", "liu2017sphereface", "cakir2019fastap", "qian2019softtriple", "he2016resnet",
    "tan2019efficientnet", "lin2015bilinear", "gao2016compact", "manjunath2001anmrr", "jarvelin2002dcg",
    "kumar2022finetuning",
}


def _bib_entries():
    from pybtex.database import parse_file

    return parse_file(str(BIB)).entries


# --------------------------------------------------------------------------------------------------
# bibliography
# --------------------------------------------------------------------------------------------------
def test_bibliography_parses_and_has_the_required_keys():
    entries = _bib_entries()
    assert REQUIRED_KEYS <= set(entries), sorted(REQUIRED_KEYS - set(entries))
    for key, entry in entries.items():
        assert entry.fields.get("title"), key
        assert entry.fields.get("year", "").isdigit(), key
        assert entry.persons.get("author"), key


def test_bibliography_details_of_the_two_papers():
    entries = _bib_entries()
    iccv, tmm = entries["yao2019apse"], entries["yao2020apse"]
    assert "Affective Image Retrieval" in iccv.fields["title"] and "ICCV" in iccv.fields["booktitle"]
    assert "Emotion-Based Image Retrieval" in tmm.fields["title"]
    assert tmm.fields["journal"] == "IEEE Transactions on Multimedia"
    assert tmm.fields["doi"] == "10.1109/TMM.2020.3042664"  # printed on every page of the TMM text
    assert str(iccv.persons["author"][0]) == "Yao, Xingxu"


def _cited_keys() -> dict[str, set[str]]:
    """{page: keys} for every {cite...}`a,b` role in the book's Markdown and notebook cells."""
    role = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "book").glob("*")):
        if path.suffix == ".md":
            texts = [path.read_text()]
        elif path.suffix == ".ipynb":
            cells = json.loads(path.read_text()).get("cells", [])
            texts = ["".join(c.get("source", "")) for c in cells if c.get("cell_type") == "markdown"]
        else:
            continue
        keys = {k.strip() for t in texts for m in role.finditer(t) for k in m.group(1).split(",")}
        if keys:
            found[path.name] = keys
    return found


def test_every_cited_key_is_in_the_bibliography():
    known = set(_bib_entries())
    missing = {page: sorted(keys - known) for page, keys in _cited_keys().items() if keys - known}
    assert not missing, f"cited but not in references.bib: {missing}"


def test_appendix_cites_every_baseline():
    keys = _cited_keys()["appendix_baselines.md"]
    for key in ("hadsell2006contrastive", "schroff2015facenet", "sohn2016npair", "wen2016center",
                "yi2014binomial", "deng2019arcface", "liu2017sphereface", "cakir2019fastap",
                "qian2019softtriple", "yang2018retrieving", "he2016resnet"):
        assert key in keys, key


def test_toc_ends_with_the_appendices():
    toc = (ROOT / "_toc.yml").read_text()
    tail = toc[toc.index("caption: Appendices"):]
    assert tail.index("book/appendix_baselines") < tail.index("book/references")


# --------------------------------------------------------------------------------------------------
# Sphinx extensions
# --------------------------------------------------------------------------------------------------
def test_offline_mathjax_finds_the_wheel_or_falls_back():
    mod = load_file(EXT / "offline_mathjax.py")
    assert mod._uses_default_cdn("https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js")
    assert mod._uses_default_cdn(None)
    assert not mod._uses_default_cdn("mathjax/tex-chtml.js")
    es5 = mod.local_mathjax_dir()
    if importlib.util.find_spec("mathjax") is None:
        assert es5 is None
        pytest.skip("django-static-mathjax is not installed: the book uses the CDN")
    assert es5 is not None and (es5 / "tex-mml-chtml.js").is_file()
    assert "3.2" in (es5 / "tex-mml-chtml.js").read_text(errors="replace")[:200000]


class _Config:
    offline_mathjax = True
    mathjax_path = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"


class _App:
    pass


def test_offline_mathjax_sets_a_local_path_only_when_installed_and_not_overridden():
    mod = load_file(EXT / "offline_mathjax.py")
    app, config = _App(), _Config()
    mod._configure(app, config)
    if mod.local_mathjax_dir() is None:
        assert config.mathjax_path.startswith("https://")
    else:
        assert config.mathjax_path == "mathjax/tex-mml-chtml.js"
        assert app._offline_mathjax_source == mod.local_mathjax_dir()
    manual, app = _Config(), _App()
    manual.mathjax_path = "https://example.org/mathjax2/MathJax.js"
    mod._configure(app, manual)
    assert manual.mathjax_path == "https://example.org/mathjax2/MathJax.js" and app._offline_mathjax_source is None
    off, app = _Config(), _App()
    off.offline_mathjax = False
    mod._configure(app, off)
    assert off.mathjax_path.startswith("https://cdn.") and app._offline_mathjax_source is None


def test_page_assets_drops_exact_duplicate_scripts_only():
    from sphinx.builders.html._assets import _JavaScript

    mod = load_file(EXT / "page_assets.py")
    body = 'const THEBE_JS_URL = "x"'
    scripts = [_JavaScript("a.js"), _JavaScript("", body=body), _JavaScript("b.js", **{"async": "async"}),
               _JavaScript("", body=body), _JavaScript("b.js", **{"async": "async"}), _JavaScript("b.js"),
               _JavaScript("", body="other")]
    context = {"script_files": list(scripts)}
    mod._dedupe_scripts(None, "page", "page.html", context, None)
    assert context["script_files"] == [scripts[0], scripts[1], scripts[2], scripts[5], scripts[6]]


# --------------------------------------------------------------------------------------------------
# the browser page check, on hand-made pages
# --------------------------------------------------------------------------------------------------
def _browser():
    return load_file(CHECKER).find_browser()


PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title>{head}</head>
<body><main>{body}</main></body></html>"""
LOCAL_MATHJAX = '<script defer src="_static/mathjax/tex-mml-chtml.js"></script>'
PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    mod = load_file(EXT / "offline_mathjax.py")
    es5 = mod.local_mathjax_dir()
    if _browser() is None or es5 is None:
        pytest.skip("needs Debian's chromium and django-static-mathjax (.ci/run installs both)")
    root = tmp_path_factory.mktemp("site")
    (root / "_static").mkdir()
    (root / "_static" / "mathjax").symlink_to(es5, target_is_directory=True)
    (root / "dot.png").write_bytes(PNG_1x1)
    math = '<p>Inline <span class="math notranslate nohighlight">\\(s_{ij} = f_i^\\top f_j^+\\)</span>.</p>' \
           '<div class="math notranslate nohighlight">\\[\\mathcal{L} = \\log(1 + e^{x})\\]</div>'
    pages = {
        "good.html": PAGE.format(head=LOCAL_MATHJAX, body=math + '<img src="dot.png" alt="">'
                                 '<pre>code may say $$ or \\( freely</pre>'
                                 '<div style="width:300px"><table><tr><td>fits</td></tr></table></div>'),
        "plain.html": PAGE.format(head="", body="<p>No formulas, no images.</p>"),
        "cdn_math.html": PAGE.format(
            head='<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>',
            body=math),
        "broken_image.html": PAGE.format(head="", body='<img src="missing.png" alt="gone">'),
        "js_error.html": PAGE.format(head="", body="<script>undefinedFunction();</script>"),
        "raw_tex.html": PAGE.format(head="", body="<p>Left as text: $$x^2$$ and \\(y\\) oops.</p>"),
        "tex_error.html": PAGE.format(
            head=LOCAL_MATHJAX, body='<span class="math notranslate nohighlight">\\(x^a^b\\)</span>'),
        "undefined_macro.html": PAGE.format(
            head=LOCAL_MATHJAX, body='<span class="math notranslate nohighlight">\\(x \\in \\R\\)</span>'),
        # a code line wider than its column scrolls sideways; the same line in a closed <details>
        # (a hidden-input cell) is not on the page, in an open one (a solution's dropdown) it is
        "wide_code.html": PAGE.format(
            head="", body='<div style="width:300px"><pre style="overflow:auto">' + "w" * 120 + "</pre></div>"),
        # a printed data frame or a prose table wider than its column scrolls sideways as well
        "wide_table.html": PAGE.format(
            head="", body='<div style="width:300px;overflow-x:auto"><table><tr><td>' + "t" * 120
                          + "</td></tr></table></div>"),
        "hidden_code.html": PAGE.format(
            head="", body='<details><summary>input</summary><div style="width:300px">'
                          '<pre style="overflow:auto">' + "h" * 120 + "</pre></div></details>"),
        "dropdown_code.html": PAGE.format(
            head="", body='<details class="sd-dropdown"><summary>Solution</summary><div style="width:300px">'
                          '<pre style="overflow:auto">' + "d" * 120 + "</pre></div></details>"),
    }
    for name, html in pages.items():
        (root / name).write_text(html)
    run = subprocess.run([sys.executable, str(CHECKER), str(root)], capture_output=True, text=True, timeout=300)
    return run


def _block(output: str, page: str) -> str:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[1:2] == [page])
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return "\n".join(lines[start:end])


def test_page_check_fails_overall_and_passes_good_pages(site):
    assert site.returncode == 1, site.stdout + site.stderr
    assert "3 of 12 pages ok, 9 failing" in site.stdout
    for page in ("good.html", "plain.html", "hidden_code.html"):
        assert _block(site.stdout, page).startswith("ok"), _block(site.stdout, page)
    assert "2/2 formulas typeset, 1 images" in _block(site.stdout, "good.html")


@pytest.mark.parametrize("page, message", [
    ("cdn_math.html", "MathJax did not load"),
    ("broken_image.html", "image did not load: missing.png"),
    ("js_error.html", "JavaScript error: ReferenceError: undefinedFunction is not defined"),
    ("raw_tex.html", "raw TeX left in the text"),
    ("tex_error.html", "MathJax error in a formula: Double exponent"),
    ("undefined_macro.html", "MathJax error in a formula: undefined macro \\R"),
    ("wide_code.html", "code scrolls sideways"),
    ("dropdown_code.html", "code scrolls sideways"),
    ("wide_table.html", "table scrolls sideways"),
])
def test_page_check_catches(site, page, message):
    block = _block(site.stdout, page)
    assert block.startswith("FAIL") and message in block, block


def test_page_check_refuses_the_network(site):
    assert "refused (no network): https://cdn.jsdelivr.net/npm/mathjax@3" in _block(site.stdout, "cdn_math.html")
