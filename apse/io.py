"""Files apse writes and reads back: atomic writes, JSON records, and torch files tagged by format.

Every file is written next to its target and renamed into place (:func:`atomic_write`), so a run
killed mid-write leaves the previous file intact, and two processes writing the same file never
leave a mix of both. Torch files hold plain tensors and containers, read with ``weights_only=True``.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["atomic_write", "atomic_save", "atomic_write_text", "write_json", "read_json", "json_safe",
           "read_apse_file", "atomic_directory"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` through :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike, data: Any, indent: int = 1) -> Path:
    """``data`` as indented JSON plus a final newline, written atomically."""
    return atomic_write_text(json.dumps(data, indent=indent) + "\n", path)


def read_json(path: str | os.PathLike) -> Any | None:
    """The JSON in ``path``, or None when it is missing or not JSON (a cache miss, not an error)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def json_safe(value: Any) -> Any:
    """``value`` with tensors as lists, keys as strings and non-finite floats as None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if torch.is_tensor(value):
        return json_safe(value.tolist())
    return value


def atomic_directory(final: str | os.PathLike, fill: Callable[[Path], None], done: str) -> bool:
    """Fill a fresh temporary folder beside ``final`` with ``fill(tmp)``, then rename it to ``final``.

    ``done`` names the file whose presence in ``final`` means it is complete: when another process
    completed ``final`` first, its folder is kept and this one discarded. Returns True if this call
    produced ``final``.
    """
    final = Path(final)
    if (final / done).is_file():
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        fill(tmp)
        if (final / done).is_file():
            return False
        if final.exists():  # an entry without its `done` file: incomplete, not somebody's result
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / done).is_file():
                raise
            return False
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_apse_file(path: str | os.PathLike, formats: tuple[str, ...], what: str, hint: str) -> dict:
    """``torch.load(weights_only=True)`` of a file apse wrote, checked by its ``format`` tag; one-line
    errors: FileNotFoundError ("{what} not found") or ValueError ("... is not an apse {what} (hint)")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not an apse {what} ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or data.get("format") not in formats:
        raise ValueError(f"{path} is not an apse {what} ({hint})")
    return data
