"""A run's identity: which config fields decide its numbers, and the hash that names its cached result.

Every cache of the package that is keyed by a :class:`~apse.config.TrainConfig` asks this module which
fields count, so that "a field that cannot change a result" is decided once:

* the experiments' run records ``results/<experiment>/runs/*-<key>.json`` (:func:`run_key`);
* the FI-trained models of :mod:`apse.transfer` (``fi-models/<variant>-<key>``; their folder names are
  in turn part of the keys of ``results/twitter1/runs``);
* the notebooks' trained models (``models/<key>``; chapters 8, 11 and 12 print the key).

Fields added to the config after results were cached must not rename those results: each is listed in
:data:`ADDED_FIELDS`, in the order it was added, with the value that reproduces the runs made before
it; a key leaves such a field out while it holds that value. A kind of key that was defined when some
of them already existed names the newest one it knew (``as_of``), so that it keeps those fields and
drops only the later ones. A field added from now on goes at the end of :data:`ADDED_FIELDS`.

The keys of the files in ``results/`` must never change: tests/experiments/test_experiments_keys.py recomputes
each one from the config its record stores.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

__all__ = ["NOT_IN_RESULT", "ADDED_FIELDS", "RUNNER_VERSION", "short_hash", "result_fields", "run_key"]

#: Config fields that cannot change a run's numbers (where it runs, where files go, worker counts).
NOT_IN_RESULT = ("device", "num_workers", "feature_cache", "batch_size_eval")

#: Config fields added after results were cached, oldest first, each with the value that reproduces
#: the results made before it existed.
ADDED_FIELDS: tuple[tuple[str, Any], ...] = (
    ("attention_mask_scale", "sum"), ("attention_lr", None), ("backbone_lr", None), ("freeze_bn", False),
    ("warmup_epochs", 0), ("probe_epochs", 0), ("probe_lr", None), ("train_fraction", 1.0))

#: Bump when a change of the experiments' runner (protocol, what a run computes) invalidates cached runs.
RUNNER_VERSION = 1


def short_hash(payload: Any, n: int = 12) -> str:
    """The first ``n`` hex digits of the SHA-256 of ``payload`` as sorted-key JSON: every cache key's
    hash (changing it renames every cached result)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:n]


def result_fields(config: Mapping[str, Any], *, leave_out: tuple[str, ...] = NOT_IN_RESULT,
                  as_of: str | None = None) -> dict[str, Any]:
    """The fields of a config mapping (:meth:`TrainConfig.to_dict`) that a key hashes, in name order.

    ``leave_out``: fields that cannot change the result (:data:`NOT_IN_RESULT`). ``as_of``: the newest
    field of :data:`ADDED_FIELDS` that existed when this kind of key was defined (None: before all of
    them); every later one is left out while it holds the value that reproduces the older results.
    """
    names = [name for name, _ in ADDED_FIELDS]
    if as_of is not None and as_of not in names:
        raise ValueError(f"as_of must name a field of ADDED_FIELDS, got {as_of!r}")
    later = dict(ADDED_FIELDS[names.index(as_of) + 1:] if as_of is not None else ADDED_FIELDS)
    return {k: v for k, v in sorted(config.items())
            if k not in leave_out and not (k in later and v == later[k])}


def run_key(config: Mapping[str, Any], fold: int, seed: int, untrained: bool = False,
            extra: Mapping[str, Any] | None = None) -> str:
    """The key of an experiment run: 12 hex digits of a hash of everything that decides its numbers (the
    config's :func:`result_fields`, the held-out fold, the seed, whether it trains, the runner's
    version and ``extra``: e.g. the data set of experiments on another one)."""
    return short_hash({"config": result_fields(config), "fold": int(fold), "seed": int(seed),
                       "untrained": bool(untrained), "runner_version": RUNNER_VERSION, **(extra or {})})
