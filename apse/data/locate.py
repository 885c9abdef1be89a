"""Finding a dataset on disk: an explicit path, ``$APSE_DATA``, or the usual places beside the repository."""
from __future__ import annotations

import os
from pathlib import Path

from apse.emotions import EMOTIONS

_REPO_ROOT = Path(__file__).resolve().parents[2]  # module-level so tests can point it elsewhere

FI_REQUEST = (
    "FI (You, Luo, Jin and Yang, 'Building a large scale dataset for image emotion recognition: the fine "
    "print and the benchmark', AAAI 2016; 23,308 images in 8 emotion folders) is distributed by its "
    "authors for research use: request it from them, unpack it as one folder per emotion and pass its "
    "path or set APSE_DATA. See data/README.md in the apse repository."
)


def usual_places(name: str) -> tuple[Path, Path]:
    """``<repo>/data/<name>`` and ``<repo>/../shared/data/<name>``, in the order they are searched."""
    return _REPO_ROOT / "data" / name, _REPO_ROOT.parent / "shared" / "data" / name


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

    Raises FileNotFoundError listing every place it looked and how to obtain FI.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"dataset path {str(p)!r} does not exist. {FI_REQUEST}")
        return p
    looked: list[str] = []
    env = os.environ.get("APSE_DATA")
    if env:
        base = Path(env).expanduser()
        looked.append(f"$APSE_DATA/{name} = {base / name}")
        if (base / name).is_dir():
            return base / name
        looked.append(f"$APSE_DATA = {base} (as a dataset itself)")
        if _looks_like_dataset(base):
            return base
    else:
        looked.append("$APSE_DATA (not set)")
    for candidate in usual_places(name):
        looked.append(str(candidate))
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"dataset {name!r} not found; looked in: " + "; ".join(looked) + f". {FI_REQUEST}"
    )

