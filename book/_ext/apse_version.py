"""Sphinx extension: makes `{{ apse_version }}` state which code the book was built from."""
import subprocess
from pathlib import Path


def _describe() -> str:
    import apse

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown commit"
    return f"apse {apse.__version__} (git {commit})"


def _inject(app, config):
    config.myst_substitutions = {**(config.myst_substitutions or {}), "apse_version": _describe()}


def setup(app):
    app.connect("config-inited", _inject)
    return {"parallel_read_safe": True}
