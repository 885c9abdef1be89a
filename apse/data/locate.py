"""Finding a dataset on disk: an explicit path, ``$APSE_DATA``, or the usual places beside the repository.

The usual places are where ``python -m apse data get`` puts a data set (:func:`default_data_root`):
``<repo>/data`` in a checkout of the repository, else the user's data folder
(``$XDG_DATA_HOME/apse``, by default ``~/.local/share/apse``); and ``<repo>/../shared/data``,
where the book's data sets lie beside the repository it was written in.
"""
from __future__ import annotations

import os
from pathlib import Path

from apse.data.sources import INCOMPLETE, SOURCES, WORK_DIR
from apse.emotions import EMOTIONS

_REPO_ROOT = Path(__file__).resolve().parents[2]  # module-level so tests can point it elsewhere

#: The one command that fetches a public data set of the book (named first in "not found" errors).
GET_COMMAND = "python -m apse data get {name}"

FI_REQUEST = (
    "The full FI (You, Luo, Jin and Yang, 'Building a large scale dataset for image emotion recognition: the fine "
    "print and the benchmark', AAAI 2016; 23,308 images in 8 emotion folders) is distributed by its "
    "authors for research use: request it from them, unpack it as one folder per emotion and pass its "
    "path or set APSE_DATA. See data/README.md in the apse repository."
)


class IncompleteDatasetError(FileNotFoundError):
    """A data set folder whose download has not finished (``.apse-download/INCOMPLETE`` in it)."""


def _in_checkout() -> bool:
    """Whether the package runs from a checkout of the repository (not an installed copy)."""
    return (_REPO_ROOT / "pyproject.toml").is_file() and (_REPO_ROOT / "apse").is_dir()


def user_data_root() -> Path:
    """``$XDG_DATA_HOME/apse``, by default ``~/.local/share/apse``: data sets of an installed apse."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base).expanduser() / "apse"


def default_data_root() -> Path:
    """Where ``python -m apse data get`` puts data sets when no ``--dest`` is given:
    ``$APSE_DATA``, else ``<repo>/data`` in a checkout, else :func:`user_data_root`."""
    env = os.environ.get("APSE_DATA")
    if env:
        return Path(env).expanduser()
    return _REPO_ROOT / "data" if _in_checkout() else user_data_root()


def usual_places(name: str) -> tuple[Path, ...]:
    """``<repo>/data/<name>``, ``<repo>/../shared/data/<name>`` and the user data folder's
    ``<name>``, in the order they are searched."""
    return (_REPO_ROOT / "data" / name, _REPO_ROOT.parent / "shared" / "data" / name,
            user_data_root() / name)


def check_complete(path: Path, name: str) -> Path:
    """``path``, unless a download into it has not finished: then IncompleteDatasetError."""
    if (path / WORK_DIR / INCOMPLETE).exists():
        raise IncompleteDatasetError(
            f"dataset {name!r} in {str(path)!r} is incomplete: its download has not finished (or "
            f"failed). Run `{GET_COMMAND.format(name=name)}` again to finish it "
            f"(it fetches only what is missing).")
    return path


def not_found_hint(name: str) -> str:
    """How to obtain ``name``: the fetch command for the book's public sets, FI's request else."""
    if name in SOURCES:
        return (f"Fetch it with `{GET_COMMAND.format(name=name)}` (or pass its path or set "
                f"APSE_DATA). {FI_REQUEST if name == 'fi-subset' else ''}").strip()
    return FI_REQUEST


def _looks_like_dataset(path: Path) -> bool:
    """A folder with at least one emotion-named sub-folder, or a CSV manifest."""
    if not path.is_dir():
        return False
    for entry in path.iterdir():
        if entry.is_dir() and entry.name.strip().lower() in EMOTIONS:
            return True
        if entry.is_file() and entry.suffix.lower() == ".csv":
            return True
    return False


def locate_dataset(path: str | os.PathLike | None = None, name: str = "fi-subset") -> Path:
    """Find a dataset folder and return its path. The first that exists wins:

    1. `path`, when given (it must exist: an explicit path is never silently replaced);
    2. ``$APSE_DATA/<name>``, or ``$APSE_DATA`` itself when it is a dataset (emotion folders or a CSV
       manifest in it), so ``APSE_DATA`` may name either a folder of datasets or one dataset;
    3. ``<repo>/data/<name>``;
    4. ``<repo>/../shared/data/<name>`` (where the FI subset lives beside the repository).

    5. the user data folder's ``<name>`` (:func:`user_data_root`, where an installed apse fetches).

    Raises FileNotFoundError listing every place it looked and naming ``python -m apse data get``
    first; IncompleteDatasetError when the folder found holds an unfinished download.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"dataset path {str(p)!r} does not exist. {not_found_hint(name)}")
        return check_complete(p, name)
    looked: list[str] = []
    env = os.environ.get("APSE_DATA")
    if env:
        base = Path(env).expanduser()
        looked.append(f"$APSE_DATA/{name} = {base / name}")
        if (base / name).is_dir():
            return check_complete(base / name, name)
        looked.append(f"$APSE_DATA = {base} (as a dataset itself)")
        if _looks_like_dataset(base):
            return check_complete(base, name)
    else:
        looked.append("$APSE_DATA (not set)")
    for candidate in usual_places(name):
        looked.append(str(candidate))
        if candidate.is_dir():
            return check_complete(candidate, name)
    raise FileNotFoundError(
        f"dataset {name!r} not found. {not_found_hint(name)} Looked in: " + "; ".join(looked) + "."
    )

