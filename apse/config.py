"""Training configuration: one dataclass, loaded from YAML and adjusted with ``key=value`` overrides.

:class:`TrainConfig` is the only place a training run's settings live, in one section per concern:
:class:`ModelConfig` (APSENet's arguments), :class:`LossConfig`, :class:`OptimConfig`,
:class:`BatchConfig`, :class:`ImageConfig`, :class:`RunConfig` and :class:`ProtocolConfig`, joined
into one flat dataclass (so that YAML files, ``key=value`` overrides and stored configs stay one
mapping of names to values; ``config.section("model")`` gives one on its own). A section lives beside
the code that consumes it and checks its own fields there: the model's in :mod:`apse.model`
(``check_model``; ``APSENet.from_config`` builds from it), the loss's in :mod:`apse.losses`
(``check_loss``; :func:`apse.losses.build_configured_loss`), the optimisation's in :mod:`apse.optim`
(``check_optim``; :func:`apse.optim.build_optimizer`), the batches' in :mod:`apse.data.sampler`
(``check_batches``; ``BalancedBatchSampler.from_config``), the protocol's in :mod:`apse.protocol`
(``check_protocol``; :func:`apse.training_data.split_indices`), the image sizes' in
:mod:`apse.data.transforms` (``check_image``). This module imports none of their option lists; it
keeps the run section (how a run executes, which the trainer reads: ``check_run``) and the one rule
that spans sections (a frozen, cached backbone is not fine-tuned). A registered name (backbone, fusion,
loss, metric) is read by its registry's own lookup (``"lite0"``, ``"GEP"``: :mod:`apse.registry`'s
one rule) and stored as the registry spells it (``"efficientnet_lite0"``, ``"gep"``). Its defaults
are the papers' protocol (spec, "Training and evaluation protocol"): ResNet-50 pretrained on
ImageNet, SGD with lr 1e-3, momentum 0.9, weight decay 5e-4, lr x0.1 every 40 epochs, 100 epochs,
batches of 8 emotions x 4 images, 256 px resize and 224 px crops, the GEP loss plus the attention
loss with lambda = 0.5.

A YAML file may hold only what differs from another: ``base: other.yaml`` (relative to its folder)
reads that file first, then the file's own keys over it (:func:`load_config`; :func:`config_delta`
gives those keys alone: ``configs/fi-subset-finetune-cpu.yaml`` is the fine-tuning regime on
``configs/fi-subset-cpu.yaml``).

A config round-trips through plain Python containers (:meth:`TrainConfig.to_dict` /
:meth:`TrainConfig.from_dict`), so it can be stored inside a checkpoint that loads with
``torch.load(..., weights_only=True)`` and inside ``results.json``.

Loss and attention loss (spec, "Losses", total objective ``L = lam L_emb + (1 - lam) L_att``):

* ``loss="apse"`` is the TMM method: the GEP loss plus the attention loss.
* ``attention_loss`` decides whether ``L_att`` (cross-entropy of the attention confidences, ICCV
  Eq. 2; the "AT" column of the ablation tables) is added. ``None`` (the default) means "automatic":
  on for the APSE family of losses (``apse``, ``gep``, ``wep``, ``ep``) when the model has attention
  heads, off otherwise. ``True`` switches it on for any embedding loss (the ablation rows "AT +
  N-pair") and is an error when the model has no attention heads; ``False`` switches it off.
* With the attention loss on, the objective is ``lam * L_emb + (1 - lam) * L_att``; with it off the
  objective is ``L_emb`` alone (``lam`` is ignored rather than silently scaling the learning rate).

Frozen or fine-tuned backbone:

* ``cache_features=True``: the backbone is frozen and its stage maps are extracted once and cached;
  only the new layers train (what two CPU cores afford; ``configs/fi-subset-cpu.yaml``).
* ``cache_features=False``: every layer trains on images, as in the papers. Three settings the papers
  do not need (one lr for all, 23k images) help a fresh head on a small dataset
  (``configs/fi-subset-finetune-cpu.yaml``): ``backbone_lr`` (the pretrained layers' own lr),
  ``freeze_bn`` (BatchNorm keeps its ImageNet statistics; batches of 32 hold 4 images a class) and
  ``warmup_epochs`` (the first epochs train the new layers only).
* ``probe_epochs``: before the end-to-end epochs, the new layers train alone for this many epochs on
  cached features of the frozen backbone (centre crops and their mirror images), at ``probe_lr``:
  "linear probing, then fine-tuning" (Kumar et al., ICLR 2022). It is a warm-up that costs seconds
  instead of epochs of images, so the fine-tuning starts from a trained head rather than a random
  one, whose large early gradients would otherwise reach the pretrained layers.
"""
from __future__ import annotations

import functools
import os
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional, Union

from apse.checks import NULLS, ConfigError
from apse.data.sampler import BatchConfig
from apse.data.transforms import ImageConfig
from apse.losses import LossConfig, loss_names
from apse.model import ModelConfig
from apse.optim import OPTIMIZERS, OptimConfig
from apse.protocol import PROTOCOLS, ProtocolConfig



@dataclass
class RunConfig:
    """How a run executes: seed, device, feature cache, precision, workers."""

    seed: int = 0
    device: str = "auto"                       # "auto" = CUDA when available, else CPU
    cache_features: bool = False               # frozen backbone: train the head on cached stage maps
    feature_flips: bool = False                # also cache horizontally flipped training images
    feature_cache: Optional[str] = None        # cache folder; None = $APSE_CACHE or ~/.cache/apse
    amp: Optional[bool] = None                 # mixed precision; None = on for CUDA
    channels_last: Optional[bool] = None       # None = on for CUDA
    deterministic: bool = False                # torch.use_deterministic_algorithms (slower on CUDA)
    num_workers: int = 2                       # DataLoader workers in image mode
    batch_size_eval: int = 64                  # batch size for embedding evaluation sets

    def check_run(self) -> None:
        """Check the run fields (ConfigError with one sentence)."""
        if self.batch_size_eval < 1:
            raise ConfigError(f"batch_size_eval must be a positive integer, got {self.batch_size_eval}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")


# The sections are joined by inheritance, not nested as config.model, config.optim, ...: the flat
# names are the public interface (YAML files, key=value overrides, stored configs, the notebooks'
# config.lr), and "loss" names both a section and its field. Each section is still owned and checked
# by its module, and a builder is handed its own alone (config.section("optim")). A dataclass lists
# its bases' fields first, deepest base first, so the reversed order below keeps the fields (and so
# to_dict and stored configs) in the order model, loss, optimisation, batches, images, run, protocol
# (run keys hash the fields by name).
@dataclass
class TrainConfig(ProtocolConfig, RunConfig, ImageConfig, BatchConfig, OptimConfig, LossConfig, ModelConfig):
    """Every setting of a training run, one section per concern (see the module docstring for the loss
    switches); :meth:`section` gives one section on its own, e.g. ``config.section("model")``."""

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> "TrainConfig":
        """Check every value; raise :class:`ConfigError` with one sentence on the first bad one."""
        types_ = _field_types()
        for f in fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), types_[f.name]))
        self.check_model()  # the model section, checked by its owner (apse.model.ModelConfig)
        self.check_loss()   # the loss section, by its owner (apse.losses.LossConfig)
        self.check_optim()  # the optimisation section, by its owner (apse.optim.OptimConfig)
        self.check_protocol()  # the protocol section, by its owner (apse.protocol.ProtocolConfig)
        self.check_image()     # the image section, by its owner (apse.data.transforms.ImageConfig)
        self.check_batches()   # the batches, by their owner (apse.data.sampler.BatchConfig)
        self.check_run()       # the run section, here
        # the one rule across sections: the run section against the optimisation's
        if self.cache_features and self.fine_tunes_backbone():
            raise ConfigError("backbone_lr, freeze_bn, warmup_epochs and probe_epochs fine-tune the "
                              "backbone; with cache_features=true it is frozen: set cache_features=false")
        return self

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (safe for JSON and for ``torch.load(weights_only=True)``)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build a config from a dict; unknown keys are an error that lists the valid ones."""
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a mapping of key: value, got {type(data).__name__}")
        unknown = [k for k in data if k not in _field_types()]
        if unknown:
            raise ConfigError(_unknown_message(unknown[0]))
        return cls(**dict(data))

    def section(self, name: str):
        """The ``model``, ``loss``, ``optim``, ``batch``, ``image``, ``run`` or ``protocol`` settings as their own
        dataclass (:class:`ModelConfig`, ...), e.g. to pass the model's to :class:`apse.model.APSENet`."""
        cls = SECTIONS.get(name)
        if cls is None:
            raise ConfigError(f"unknown config section {name!r}; the sections are: {', '.join(SECTIONS)}")
        return cls(**{f.name: getattr(self, f.name) for f in fields(cls)})

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})


#: The config's sections by name.
SECTIONS = {"model": ModelConfig, "loss": LossConfig, "optim": OptimConfig, "batch": BatchConfig,
            "image": ImageConfig, "run": RunConfig, "protocol": ProtocolConfig}


#: The key of a config file that names the file it changes (a path relative to its own folder): such a
#: file holds only what differs, e.g. configs/fi-subset-finetune-cpu.yaml on configs/fi-subset-cpu.yaml.
BASE_KEY = "base"


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a :class:`TrainConfig` from a YAML file (missing keys keep their defaults; with a
    ``base: other.yaml`` key, that file's values instead, changed by this file's own keys)."""
    path = Path(path)
    data = _file_values(path)  # its errors name the file they are in
    try:
        return TrainConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def config_delta(path: str | os.PathLike) -> dict[str, Any]:
    """The keys a config file sets itself (not those of its ``base`` file), with the values its loaded
    config holds (typed, as :meth:`TrainConfig.to_dict` writes them), in the file's order."""
    own = [k for k in _read_yaml(Path(path)) if k != BASE_KEY]
    values = load_config(path).to_dict()
    return {k: values[k] for k in own}


def _read_yaml(path: Path) -> dict[str, Any]:
    """One config file's own mapping, its ``base`` key included."""
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of key: value, got {type(data).__name__}")
    return data


def _file_values(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's values: its base file's (recursively), then its own keys over them."""
    data = dict(_read_yaml(path))
    base = data.pop(BASE_KEY, None)
    unknown = [k for k in data if k not in _field_types()]
    if unknown:
        raise ConfigError(f"{path}: {_unknown_message(unknown[0])}")
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: {BASE_KEY} must name a config file, got {base!r}")
    base_path, seen = (path.parent / base.strip()).resolve(), (*seen, path.resolve())
    if base_path in seen:
        raise ConfigError(f"{path}: {BASE_KEY} files form a circle through {base_path.name}")
    return {**_file_values(base_path, seen), **data}


def apply_overrides(config: TrainConfig, overrides: list[str] | tuple[str, ...]) -> TrainConfig:
    """Return a copy of ``config`` with ``["key=value", ...]`` applied.

    Values are converted to the field's type (``lr=1e-4``, ``pretrained=false``,
    ``batches_per_epoch=null``, ``split=70/10/20``, ``loss_options={margin: 0.3}``).
    """
    import yaml

    data = config.to_dict()
    types_ = _field_types()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key not in types_:
            raise ConfigError(_unknown_message(key))
        value: Any = raw.strip()
        if _is_dict_type(types_[key]):
            try:
                value = yaml.safe_load(raw) or {}
            except yaml.YAMLError:
                raise ConfigError(f"{key} expects a mapping such as {{margin: 0.3}}, got {raw!r}") from None
        data[key] = value
    return TrainConfig.from_dict(data)


# ---------------------------------------------------------------------- helpers
@functools.lru_cache(maxsize=None)
def _field_types() -> dict[str, Any]:
    # get_type_hints evaluates every annotation (~10 ms); it was called once per field on every validation
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}


def _unknown_message(key: str) -> str:
    return f"unknown config key {key!r}; valid keys are: {', '.join(_field_types())}"


def _is_dict_type(tp: Any) -> bool:
    return tp is dict or typing.get_origin(tp) is dict


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (possibly a string from the command line or YAML) to the type ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args:
            if value is None or (isinstance(value, str) and value.strip().lower() in NULLS):
                return None
            args = tuple(a for a in args if a is not type(None))
        if len(args) == 1:
            return _coerce(name, value, args[0])
        # Union[bool, str] (``pretrained``): booleans first, anything else is a path.
        if bool in args and str in args:
            if isinstance(value, bool):
                return value
            text = str(value).strip()
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            return text
        raise ConfigError(f"{name}: unsupported type {tp}")  # pragma: no cover
    if _is_dict_type(tp):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{name} expects a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{name} expects true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name} expects an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            as_float = float(str(value).strip())
        except ValueError:
            raise ConfigError(f"{name} expects an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{name} expects an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name} expects a number, got {value!r}")
        try:
            return float(str(value).strip()) if not isinstance(value, (int, float)) else float(value)
        except ValueError:
            raise ConfigError(f"{name} expects a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (list, tuple)):  # e.g. ``split: [80, 5, 15]`` in YAML
            return "/".join(str(v) for v in value)
        if value is None or isinstance(value, (dict, bool)):
            raise ConfigError(f"{name} expects a string, got {value!r}")
        return str(value).strip()
    return value  # pragma: no cover


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


__all__ = ["TrainConfig", "ConfigError", "load_config", "config_delta", "BASE_KEY", "apply_overrides", "loss_names",
           "OPTIMIZERS", "PROTOCOLS", "SECTIONS", "ModelConfig", "LossConfig", "OptimConfig", "ImageConfig",
           "BatchConfig", "RunConfig", "ProtocolConfig"]
