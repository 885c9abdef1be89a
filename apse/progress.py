"""Progress reporting, decided in one place: bars on a terminal, one line per phase anywhere else.

Every long loop of the package (training epochs, feature extraction, embedding for evaluation,
image checks) asks :func:`progress_bar` for its progress display:

* ``enabled=False`` (``--quiet``, ``progress=False``): nothing at all;
* standard error is a terminal (or a Jupyter kernel): a ``tqdm`` bar, as before;
* otherwise (``> train.log 2>&1``, CI, a cluster job): no bar and no carriage-return refreshes; the
  phase writes one line to standard error when it ends, ``"extracting features: 602 img in 95.3 s"``
  (loops that report themselves, like the trainer's one line per epoch, ask for no line).

:func:`bars_enabled` is the one test of "is this a terminal".
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, Optional

__all__ = ["bars_enabled", "progress_bar", "PhaseLine"]


def bars_enabled(stream: Any = None) -> bool:
    """Whether progress bars are drawn: ``stream`` (default: standard error, where tqdm draws) is
    a terminal or a Jupyter kernel's output."""
    stream = sys.stderr if stream is None else stream
    if type(stream).__module__.startswith("ipykernel"):
        return True  # a notebook: tqdm.auto draws a widget, which never floods a file
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class PhaseLine:
    """Stand-in for a tqdm bar off a terminal: counts silently and, if ``report``, writes one line
    to standard error when closed (or when its iterable is exhausted).

    Supports what the package uses of a bar: iteration, ``update``, ``set_postfix``, ``close``, and
    use as a context manager.
    """

    def __init__(self, iterable: Optional[Iterable] = None, desc: str = "",
                 total: Optional[int] = None, unit: str = "it", report: bool = True):
        self.iterable, self.desc, self.total = iterable, desc, total
        self.unit, self.report = unit, report
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self._t0 = time.time()
        self._closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable if self.iterable is not None else ():
            yield item
            self.n += 1
        self.close()

    def __len__(self) -> int:
        return len(self.iterable) if self.iterable is not None else int(self.total or 0)

    def __enter__(self) -> "PhaseLine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict: Optional[dict] = None, refresh: bool = True,
                    **kwargs) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.report:
            extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
            seconds = time.time() - self._t0
            print(f"{self.desc or 'done'}: {self.n} {self.unit} in {seconds:.1f} s{extra}",
                  file=sys.stderr, flush=True)


def progress_bar(iterable: Optional[Iterable] = None, *, desc: str = "",
                 total: Optional[int] = None, unit: str = "it", leave: bool = True,
                 enabled: bool = True, line: bool = True):
    """The progress display of one phase: a tqdm bar on a terminal, else a :class:`PhaseLine`
    (one line at the end when ``line``; nothing when ``enabled`` is False)."""
    if enabled and bars_enabled():
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave)
    return PhaseLine(iterable, desc=desc, total=total, unit=unit, report=enabled and line)
