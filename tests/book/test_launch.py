"""The reader paths outside this machine: Colab's setup cell, the README's launch block, Binder.

The setup cell is executed for real, twice: as every kernel but Colab's sees it (it must do
nothing) and with a stand-in ``google.colab`` module, where the commands it would run are recorded
instead of run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import yaml
from conftest import load_file

REPO = Path(__file__).resolve().parents[2]


launch_cells = load_file(REPO / "book/_ext/launch_cells.py")


def test_notebooks_and_readme_are_written_from_the_config():
    assert launch_cells.sync(write=False) == [], "run python book/_ext/launch_cells.py"
    url = yaml.safe_load((REPO / "_config.yml").read_text())["repository"]["url"]
    readme = (REPO / "README.md").read_text()
    assert f"git clone {url}" in readme
    for path in launch_cells.notebooks():
        first = json.loads(path.read_text())["cells"][0]
        assert {"remove-cell", "colab-setup"} <= set(first["metadata"]["tags"])
        assert url in "".join(first["source"])
        assert max(map(len, "".join(first["source"]).splitlines())) <= 79
        colab = launch_cells.launch_block(url, "main").split(path.name)[0]
        assert colab.endswith(f"/blob/main/book/")  # each chapter's Colab link names its file


def _run_setup(source: str, colab: bool, monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(list(cmd)))
    monkeypatch.setattr(os, "chdir", lambda path: calls.append(["chdir", path]))
    monkeypatch.setattr(sys, "path", list(sys.path))
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(source, "<setup cell>", "exec"), {})
    return calls


def test_the_setup_cell_does_nothing_outside_colab_and_installs_on_colab(monkeypatch):
    url, branch = launch_cells.repository()
    nb = json.loads((REPO / "book/15_beyond_fi.ipynb").read_text())
    source = "".join(nb["cells"][0]["source"])
    assert _run_setup(source, colab=False, monkeypatch=monkeypatch) == []

    calls = _run_setup(source, colab=True, monkeypatch=monkeypatch)
    clone = launch_cells.CLONE
    assert calls[0][:2] == ["git", "clone"] and calls[0][-2:] == [url, clone]
    assert calls[0][calls[0].index("-b") + 1] == branch
    assert calls[1][-2:] == ["-e", clone + "[book]"]
    fetched = [c[-1] for c in calls if c[1:4] == ["-m", "apse", "data"]]
    assert fetched == nb["metadata"]["apse"]["data"] == ["fi-subset", "twitter1"]
    assert calls[-1] == ["chdir", clone + "/book"] and sys.path[0] == clone


def test_every_data_set_a_notebook_names_exists_and_the_book_extra_covers_its_imports():
    from apse.data.sources import SOURCES
    for path in launch_cells.notebooks():
        assert set(launch_cells.data_sets(json.loads(path.read_text()))) <= set(SOURCES)
    extra = yaml.safe_load("x: " + (REPO / "pyproject.toml").read_text().split("book = ", 1)[1]
                           .split("]", 1)[0] + "]")["x"]
    for module, package in [("matplotlib", "matplotlib"), ("seaborn", "seaborn"),
                            ("pandas", "pandas"), ("ipywidgets", "ipywidgets"),
                            ("skimage", "scikit-image"), ("scipy", "scipy")]:
        used = any(f"import {module}" in p.read_text() or f"from {module}" in p.read_text()
                   for p in list((REPO / "apse").rglob("*.py")) + launch_cells.notebooks())
        assert not used or package in extra, package


def test_binder_installs_the_package_and_a_failed_fetch_does_not_stop_the_launch(tmp_path):
    requirements = (REPO / "binder/requirements.txt").read_text().split()
    assert "-r" in requirements and (REPO / "binder" / requirements[requirements.index("-r") + 1]
                                     ).resolve() == REPO / "requirements.txt"
    for script in ("postBuild", "start"):
        assert os.access(REPO / "binder" / script, os.X_OK)
        assert subprocess.run(["bash", "-n", REPO / "binder" / script]).returncode == 0
    assert "pip install --no-deps -e ." in (REPO / "binder/postBuild").read_text()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    env = {**os.environ, "APSE_DATA": str(blocker), "PYTHONPATH": str(REPO)}
    done = subprocess.run([REPO / "binder/start", "echo", "server started"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("server started")
    assert "cannot write to" in done.stderr and "python -m apse data get all" in done.stderr


def test_data_get_help_names_each_set_and_the_exit_statuses():
    out = subprocess.run([sys.executable, "-m", "apse", "data", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120).stdout
    from apse.data.fetch import EXIT_CODES
    from apse.data.sources import SOURCES
    assert all(name in out for name in SOURCES)
    assert all(f"{code:>3}  {text}" in out for code, text in EXIT_CODES.items())
