"""Where a run came from, written so that it means the same on another machine: portable paths
(the repository, the data root, the cache folder), the dataset fingerprint and the git commit; and
:class:`RunRecord`, the record of a run that carries them.
"""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

__all__ = ["cache_root", "portable_path", "portable_config", "portable_source", "dataset_fingerprint",
           "git_commit", "code_hash", "environment", "machine", "RunRecord"]


def dataset_fingerprint(samples: Sequence[tuple[str, int]]) -> str:
    """Hash of the image list (relative paths, labels, file sizes): keys the feature cache."""
    h = hashlib.sha256()
    paths = [Path(p) for p, _ in samples]
    root = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path(".")
    for (p, label), path in zip(samples, paths):
        try:
            size = path.stat().st_size
        except OSError:
            size = -1
        h.update(f"{path.relative_to(root) if root in path.parents else path}|{label}|{size}\n".encode())
    return h.hexdigest()


def cache_root() -> Path:
    """apse's cache folder, outside the repository: ``$APSE_CACHE``, else ``~/.cache/apse``."""
    return Path(os.environ.get("APSE_CACHE", Path.home() / ".cache" / "apse")).expanduser()


#: The checkout this package runs from: record paths inside it are kept relative to it.
_REPO_ROOT = Path(__file__).resolve().parents[1]


def portable_path(path: str | os.PathLike | None,
                  data_root: str | os.PathLike | None = None) -> str | None:
    """Write ``path`` for a record that must mean the same on another machine.

    A relative path is kept as given. An absolute one becomes relative to, in this order: the data
    root (``"<data>/..."``), the repository (a plain relative path), the apse cache folder
    (``$APSE_CACHE`` or ``~/.cache/apse``: ``"<cache>/..."``) or the home folder (``"~/..."``);
    anything else keeps only its name (``"<elsewhere>/NAME"``).
    """
    if path is None:
        return None
    p = Path(os.fspath(path)).expanduser()
    if not p.is_absolute():
        return p.as_posix()
    p = p.resolve()
    anchors = [("<data>", data_root)] if data_root is not None else []
    anchors += [("", _REPO_ROOT), ("<cache>", cache_root()), ("~", Path.home())]
    for label, base in anchors:
        base = Path(base).expanduser().resolve()
        if p == base or base in p.parents:
            rel = p.relative_to(base).as_posix()
            return rel if not label else (label if rel == "." else f"{label}/{rel}")
    return f"<elsewhere>/{p.name}"


def portable_config(config: dict[str, Any],
                    data_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """A config dict (:meth:`TrainConfig.to_dict`) with every absolute path in it
    (``feature_cache``, a ``pretrained`` weights file) made portable by :func:`portable_path`."""
    return {k: portable_path(v, data_root) if isinstance(v, str) and os.path.isabs(v) else v
            for k, v in config.items()}


def portable_source(source: str, data_root: str | os.PathLike | None = None) -> str:
    # weights_source "file:/abs/weights.pth" -> "file:<elsewhere>/weights.pth"; others unchanged
    if source.startswith("file:"):
        return "file:" + str(portable_path(source[len("file:"):], data_root))
    return source


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The git commit of the checkout holding ``path`` (default: this package), ``+dirty`` if modified."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        if not commit:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def code_hash() -> str:
    """12 hex digits of a hash of the code a run's numbers come from: the source file of every module of
    the apse package loaded in this process (what the run imported), in module-name order. A run record
    keeps it (``code_hash``); it is no part of a run's key."""
    h = hashlib.sha256()
    loaded = [(name, getattr(module, "__file__", None)) for name, module in list(sys.modules.items())
              if name == "apse" or name.startswith("apse.")]
    for name, path in sorted(loaded, key=lambda item: item[0]):
        if path and os.path.isfile(path):
            h.update(f"{name}\n".encode())
            h.update(Path(path).read_bytes())
    return h.hexdigest()[:12]


def environment() -> dict[str, str | None]:
    """The versions a run record keeps: torch, python, apse and the git commit of the checkout."""
    import apse  # the package's own __init__ (its version): imported here, where it is complete

    return {"torch_version": torch.__version__, "python_version": platform.python_version(),
            "apse_version": getattr(apse, "__version__", None), "git_commit": git_commit()}


def machine() -> dict[str, Any]:
    """:func:`environment` and where a run's numbers were computed: its torch threads and the CPU.
    An experiment's run record keeps it (``machine``), no part of its key: the same key on another
    torch build, CPU or thread count can give other last digits, and rows that train attention heads
    carry those through 20 epochs to the third decimal of mAP8 (chapter 13 measured it)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {**environment(), "threads": torch.get_num_threads(), "cpu": cpu}


@dataclass(frozen=True)
class RunRecord(Mapping):
    """The record of one run, what :meth:`apse.training.Trainer.fit` and
    :meth:`~apse.training.Trainer.evaluate_untrained` both return and write as ``results.json``
    (:meth:`to_dict`, in this field order); an untrained run is one with ``chosen_epoch`` 0, an empty
    history and ``selection["on"] == "untrained"``. A read-only mapping too, so that
    ``record["test_metrics"]`` reads as the dict it replaces."""

    config: dict                               # portable_config(TrainConfig.to_dict())
    data: dict                                 # name, fingerprint, images, split sizes, fold, folds
    history: list                              # one entry per trained epoch
    probe: Optional[dict]                      # the probe stage (probe_epochs), if any
    selection: dict                            # metric, on ("val" | "untrained" | "last epoch ..."), lower_is_better
    chosen_epoch: int
    val_metrics: Optional[dict]
    test_protocol: str
    test_metrics: Optional[dict]
    test_metrics_by_source: Optional[dict]
    attention_loss_used: bool
    weights_source: str
    wall_time_s: float                         # setup + feature extraction + training + test
    train_time_s: float
    test_time_s: float
    feature_extraction_s: Optional[float]
    feature_cache: Optional[str]
    device: str
    world_size: int
    amp: bool
    environment: dict = field(default_factory=environment)   # torch, python, apse versions, git commit

    @property
    def untrained(self) -> bool:
        """Whether the record scores a model never trained (the experiments' random-projection floor)."""
        return self.selection.get("on") == "untrained"

    def to_dict(self) -> dict[str, Any]:
        """The record as ``results.json`` holds it: the fields in order, the environment's keys last."""
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "environment"}
        return {**record, **self.environment}

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())
