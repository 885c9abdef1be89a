"""Sphinx extension: each page loads every script once, and the book's own style sheet.

``static/apse.css`` (added to every page) narrows the padding of code blocks so that a line of 79
characters fits the code column at 1280 px (see the file).

sphinx-thebe 0.3.1 registers its inline configuration (``const THEBE_JS_URL = ...``) and
``sphinx-thebe.js`` twice under jupyter-book 1.0.4 / Sphinx 7.4, so every page throws
"SyntaxError: Identifier 'THEBE_JS_URL' has already been declared" in the browser
(``.ci/check_pages.py`` fails on it). This drops exact duplicates (same file or inline body, same
attributes) from each page's script list, keeping the first, and leaves everything else alone.
"""
from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"


def _key(script) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    return (getattr(script, "filename", str(script)) or "", tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    if len(unique) != len(scripts):
        context["script_files"] = unique


def _add_static(app, config):
    config.html_static_path.append(str(STATIC))


def setup(app):
    app.connect("config-inited", _add_static)
    app.add_css_file("apse.css")
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
