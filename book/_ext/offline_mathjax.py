"""Sphinx extension: serve MathJax 3 from the built book itself, so formulas render offline.

Sphinx loads MathJax from a CDN by default, so a reader without network (or a CI browser check
without network) sees raw ``$$ ... $$``. When the PyPI package ``django-static-mathjax`` is installed
(it ships the MathJax 3.2.2 distribution, ``mathjax/static/mathjax/es5``), this extension copies
that ``es5`` folder to ``_static/mathjax`` of the HTML output and points ``mathjax_path`` at
``_static/mathjax/tex-mml-chtml.js``, the same MathJax 3 component the CDN default serves, so the
book's ``mathjax3_config`` (the macros in ``_config.yml``) applies unchanged. Fonts and TeX
extensions are loaded relative to that file, so they come from the local copy too.

Falls back to Sphinx's CDN default, with an info line, when the package is missing, when
``mathjax_path`` was set by hand, or when ``offline_mathjax = False`` (``sphinx: config:`` in
``_config.yml``).
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

PACKAGE = "django-static-mathjax"
ENTRY = "tex-mml-chtml.js"           # Sphinx 7's CDN default is mathjax@3/es5/tex-mml-chtml.js
TARGET = "mathjax"                   # under _static/
_CDN_PREFIXES = ("https://cdn.jsdelivr.net/npm/mathjax@3", "https://cdnjs.cloudflare.com/ajax/libs/mathjax")


def local_mathjax_dir() -> Path | None:
    """The installed MathJax 3 ``es5`` folder, or None when the package is not installed."""
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        es5 = Path(location) / "static" / "mathjax" / "es5"
        if (es5 / ENTRY).is_file() and (es5 / "output" / "chtml" / "fonts").is_dir():
            return es5
    return None


def _uses_default_cdn(path: str | None) -> bool:
    return not path or path.startswith(_CDN_PREFIXES)


def _configure(app, config):
    app._offline_mathjax_source = None  # type: ignore[attr-defined]
    if not config.offline_mathjax:
        logger.info("offline_mathjax: disabled; MathJax from %s", config.mathjax_path)
        return
    if not _uses_default_cdn(getattr(config, "mathjax_path", None)):
        logger.info("offline_mathjax: mathjax_path set by hand (%s); left as it is", config.mathjax_path)
        return
    source = local_mathjax_dir()
    if source is None:
        logger.info("offline_mathjax: %s not installed; MathJax from the CDN (%s)", PACKAGE, config.mathjax_path)
        return
    config.mathjax_path = f"{TARGET}/{ENTRY}"   # relative paths are relative to _static
    app._offline_mathjax_source = source  # type: ignore[attr-defined]
    logger.info("offline_mathjax: MathJax served from _static/%s (copied from %s)", TARGET, source)


def _copy(app, exception):
    source = getattr(app, "_offline_mathjax_source", None)
    if exception is not None or source is None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / TARGET
    stamp = target / ".source"
    # Copy once per source: the folder is about 24 MB, incremental rebuilds need not redo it.
    if stamp.is_file() and stamp.read_text() == str(source) and (target / ENTRY).is_file():
        return
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    stamp.write_text(str(source))


def setup(app):
    app.add_config_value("offline_mathjax", True, "html", types=[bool])
    # After sphinx.ext.mathjax registered mathjax_path (priority 500), before its pages are written.
    app.connect("config-inited", _configure, priority=800)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
