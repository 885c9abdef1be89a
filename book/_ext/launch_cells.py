#!/usr/bin/env python3
"""Write what lets a reader run the book anywhere from one setting: ``repository`` in _config.yml.

    python book/_ext/launch_cells.py           # rewrite the notebooks' first cells and the README
    python book/_ext/launch_cells.py --check   # exit 1 listing what is out of date (a test runs it)

From ``repository.url`` and ``repository.branch`` (the same keys the rocket menu's Colab and Binder
buttons read) and from each notebook's ``metadata.apse.data`` (the data sets the chapter reads), it
writes

* the first cell of every notebook under book/: on Colab only, clone the repository, install apse
  from it and fetch the chapter's data sets; elsewhere it does nothing. It carries the cell tag
  ``remove-cell`` (the rendered book leaves it out) and ``colab-setup`` (how this script finds it);
* two blocks of the README: between ``<!-- launch:begin -->`` and ``<!-- launch:end -->`` the
  clone command and a Colab and a Binder link per chapter; between ``<!-- data:begin -->`` and
  ``<!-- data:end -->`` each data set (from :data:`apse.data.sources.SOURCES`) and the chapters
  that read it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # this checkout's apse, also when another copy is installed
from apse.data.sources import SOURCES  # noqa: E402

TAG = "colab-setup"
CLONE = "/content/apse-book"


def repository(root: Path = ROOT) -> tuple[str, str]:
    """(url, branch) of ``repository`` in _config.yml: the one place the repository is named."""
    config = yaml.safe_load((root / "_config.yml").read_text())
    repo = config.get("repository") or {}
    url, branch = str(repo.get("url", "")).rstrip("/"), str(repo.get("branch", "main"))
    if not url.startswith("https://github.com/"):
        raise SystemExit(f"_config.yml: repository.url must be a https://github.com/OWNER/REPO "
                         f"address (Colab and Binder open GitHub repositories), got {url!r}")
    return url, branch


def notebooks(root: Path = ROOT) -> list[Path]:
    return sorted((root / "book").glob("[0-9]*.ipynb"))


def data_sets(nb: dict) -> list[str]:
    """The data sets a notebook reads, from its ``metadata.apse.data``."""
    return list(nb.get("metadata", {}).get("apse", {}).get("data", []))


def setup_source(url: str, branch: str, sets: list[str]) -> str:
    """The first cell's code: a no-op outside Colab (lines within 79 characters)."""
    fetch = (f"    for name in {json.dumps(sets)}:\n"
             f"        subprocess.run([sys.executable, \"-m\", \"apse\", \"data\", \"get\", name],\n"
             f"                       check=True, cwd=CLONE)\n") if sets else ""
    return (
        "# Colab only: clone the book, install apse and fetch this chapter's data.\n"
        "# Elsewhere (JupyterLab, Binder, CI) this cell does nothing. It is written\n"
        "# by book/_ext/launch_cells.py from _config.yml; edit it there.\n"
        "import sys\n"
        "\n"
        "if \"google.colab\" in sys.modules:\n"
        "    import os\n"
        "    import subprocess\n"
        "\n"
        f"    REPO, BRANCH = {json.dumps(url)}, {json.dumps(branch)}\n"
        f"    CLONE = {json.dumps(CLONE)}\n"
        "    if not os.path.isdir(CLONE):\n"
        "        subprocess.run([\"git\", \"clone\", \"-q\", \"--depth\", \"1\", \"-b\", BRANCH,\n"
        "                        REPO, CLONE], check=True)\n"
        "    # [book]: what the notebooks import beyond apse's own requirements.\n"
        "    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\", \"-e\",\n"
        "                    CLONE + \"[book]\"], check=True)\n"
        f"{fetch}"
        "    # An editable install is seen by the next kernel; this one needs the path.\n"
        "    sys.path.insert(0, CLONE)\n"
        "    os.chdir(CLONE + \"/book\")\n"
    )


def setup_cell(url: str, branch: str, sets: list[str]) -> dict:
    source = setup_source(url, branch, sets)
    return {"cell_type": "code", "execution_count": None, "id": TAG,
            "metadata": {"tags": ["remove-cell", TAG]}, "outputs": [],
            "source": source.splitlines(keepends=True)}


def sync_notebook(path: Path, url: str, branch: str, write: bool) -> bool:
    """Bring one notebook's setup cell up to date; True when it was (or would be) changed."""
    text = path.read_text()
    nb = json.loads(text)
    cell = setup_cell(url, branch, data_sets(nb))
    first = nb["cells"][0] if nb["cells"] else {}
    if TAG in first.get("metadata", {}).get("tags", []):
        if first == cell:
            return False
        nb["cells"][0] = cell
    else:
        nb["cells"].insert(0, cell)
    if write:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return True


def _title(nb: dict) -> str:
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def _chapter(path: Path) -> str:
    """``book/08b_attention_design.ipynb`` -> ``8b``."""
    return path.name.split("_", 1)[0].lstrip("0")


def data_block(root: Path = ROOT) -> str:
    """The README's data table: each set, what it is, and the chapters that read it."""
    readers: dict[str, list[str]] = {name: [] for name in SOURCES}
    for path in notebooks(root):
        for name in data_sets(json.loads(path.read_text())):
            if name not in readers:
                raise SystemExit(f"{path.name}: metadata.apse.data names {name!r}, which is not "
                                 f"a data set of apse.data.sources ({', '.join(SOURCES)})")
            readers[name].append(_chapter(path))
    rows = [f"| `{name}` | {source.title} | {', '.join(readers[name]) or 'none yet'} |"
            for name, source in SOURCES.items()]
    return "\n".join(["| set | what | chapters that read it |", "|---|---|---|", *rows])


def launch_block(url: str, branch: str, root: Path = ROOT) -> str:
    """The README's launch block: clone, then per-chapter Colab / Binder links and data sets."""
    slug = url.removeprefix("https://github.com/")
    rows = []
    for path in notebooks(root):
        nb = json.loads(path.read_text())
        rel = path.relative_to(root).as_posix()
        colab = f"https://colab.research.google.com/github/{slug}/blob/{branch}/{rel}"
        binder = f"https://mybinder.org/v2/gh/{slug}/{branch}?urlpath=lab/tree/{rel}"
        sets = ", ".join(f"`{s}`" for s in data_sets(nb)) or "none (toy data, results/)"
        rows.append(f"| {_title(nb)} | [Colab]({colab}) | [Binder]({binder}) | {sets} |")
    return "\n".join([
        "```bash",
        f"git clone {url} && cd {slug.split('/')[1]}",
        "pip install -r requirements.txt && pip install -e .",
        "python -m apse data get all        # the three data sets, about 225 MB",
        "```",
        "",
        "| chapter | Colab | Binder | data sets it reads |",
        "|---|---|---|---|",
        *rows,
    ])


def sync_readme(url: str, branch: str, write: bool, root: Path = ROOT) -> bool:
    path = root / "README.md"
    text = new = path.read_text()
    for name, block in (("launch", launch_block(url, branch, root)), ("data", data_block(root))):
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        if begin not in new or end not in new:
            raise SystemExit(f"README.md has no {begin} ... {end} block")
        head, rest = new.split(begin, 1)
        note = ("<!-- Written by book/_ext/launch_cells.py (from _config.yml and the notebooks' "
                "metadata.apse.data); edit there. -->")
        new = head + begin + "\n" + note + "\n" + block + "\n" + end + rest.split(end, 1)[1]
    if new == text:
        return False
    if write:
        path.write_text(new)
    return True


def sync(write: bool, root: Path = ROOT) -> list[str]:
    """Update (or, without ``write``, only list) every file that is out of date."""
    url, branch = repository(root)
    stale = [p.relative_to(root).as_posix() for p in notebooks(root)
             if sync_notebook(p, url, branch, write)]
    if sync_readme(url, branch, write, root):
        stale.append("README.md")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    stale = sync(write=not args.check)
    if args.check and stale:
        print("out of date (run python book/_ext/launch_cells.py): " + ", ".join(stale))
        return 1
    print(("updated: " + ", ".join(stale)) if stale and not args.check else "up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
