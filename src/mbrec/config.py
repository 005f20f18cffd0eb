"""The config's schemas and its strict check, and where ``conf/`` lives.

* Hydra structured-config schemas in the ConfigStore: ``mbrec_schema`` (the root: seed, train, paths,
  mlflow, the dataset group's keys) and ``schema_<name>`` in the ``backbone`` and ``balancer`` groups,
  derived from each registered class's constructor (``conf/<group>/<name>.yaml`` starts with
  ``defaults: [schema_<name>, _self_]``), so Hydra checks types while composing.
* :func:`check_config`: Hydra lets ``+key=value`` append keys that no schema has, so every run checks
  the composed config once more before any data is loaded and refuses unknown keys in one line.
* Where ``conf/`` lives (repository clone or installed wheel). What a config key means for a run's
  identity and where a run writes are stated once, in :mod:`mbrec.defaults`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from omegaconf import MISSING

from mbrec.defaults import cache_dir, non_semantic_dotted, tracking_uri, under_home
from mbrec.errors import ConfigError
from mbrec.registry import _field, check_keys, optimizer_keys


# ------------------------------------------------------------------------------------------ schemas
def _dataclass_from(func: Any, name: str, skip: tuple[str, ...] = ()) -> type:
    """A dataclass whose fields are ``func``'s keyword arguments (types and defaults)."""
    hints = typing.get_type_hints(func)
    fields = [(p.name, *_field(hints.get(p.name, Any), p.default))
              for p in inspect.signature(func).parameters.values() if p.name not in skip]
    return dataclasses.make_dataclass(name, fields)


def _train_schema() -> type:
    from mbrec.training.settings import TrainSettings

    hints, defaults = typing.get_type_hints(TrainSettings), TrainSettings()
    fields = [(f.name, *_field(hints[f.name], getattr(defaults, f.name))) for f in dataclasses.fields(TrainSettings)]
    return dataclasses.make_dataclass("TrainConfig", fields)


def _synthetic_schema() -> type:
    from mbrec.data.synthetic import make_synthetic

    return _dataclass_from(make_synthetic, "SyntheticConfig", skip=("name",))


@dataclass
class PathsConfig:
    data_dir: str = "data"
    cache_dir: str = dataclasses.field(default_factory=cache_dir)


@dataclass
class MlflowConfig:
    enabled: bool = True
    tracking_uri: str = dataclasses.field(default_factory=tracking_uri)
    experiment: str = "mbrec"
    tags: Dict[str, Any] = field(default_factory=dict)
    log_model: bool = True  # the best model's weights as an MLflow logged model (mbrec.load_model)


def root_schema() -> type:
    """The schema of the composed config (the group options that select a class have their own)."""
    train, synthetic = _train_schema(), _synthetic_schema()
    dataset = dataclasses.make_dataclass("DatasetConfig", [
        ("name", str, field(default=MISSING)),
        ("source", str, field(default="files")),
        ("path", Optional[str], field(default=None)),
        ("synthetic", Optional[synthetic], field(default=None)),
    ])
    return dataclasses.make_dataclass("RootConfig", [
        ("seed", int, field(default=123)),
        ("device", str, field(default="auto")),
        ("threads", Any, field(default="auto")),
        ("skip_finished", Any, field(default="auto")),
        ("train", train, field(default_factory=train)),
        ("paths", PathsConfig, field(default_factory=PathsConfig)),
        ("mlflow", MlflowConfig, field(default_factory=MlflowConfig)),
        ("dataset", dataset, field(default=MISSING)),
        ("backbone", Any, field(default=None)),
        ("balancer", Any, field(default=None)),
        ("optimizer", Any, field(default=None)),
    ])


def register_schemas() -> None:
    """Put the schemas in Hydra's ConfigStore (idempotent; call before composing)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from mbrec.backbones import BACKBONES
    from mbrec.balancers import BALANCERS, paper_rows

    # ${mbrec.table1_rows:} = every registered balancer in report order (conf/experiment/table1.yaml)
    OmegaConf.register_new_resolver("mbrec.table1_rows", lambda: ",".join(paper_rows()), replace=True)
    # the output policy (mbrec.defaults): conf/config.yaml's paths, MLflow store and Hydra run/sweep dirs
    OmegaConf.register_new_resolver("mbrec.tracking_uri", tracking_uri, replace=True)
    OmegaConf.register_new_resolver("mbrec.cache_dir", cache_dir, replace=True)
    OmegaConf.register_new_resolver("mbrec.home", lambda sub="": under_home(*str(sub).split("/")), replace=True)
    # ${mbrec.sweep_name:${hydra.overrides.task},<study>}: a sweep's folder is its identity, so the same
    # command continues it. Cached: a job resolves it to the launching process's value (its own
    # hydra.overrides.task differ), as Hydra's ${now:} is.
    OmegaConf.register_new_resolver("mbrec.sweep_name", sweep_name, replace=True, use_cache=True)
    # ${mbrec.non_semantic_keys:}: the sweeper presets' hydra.sweeper.fingerprint_ignore
    # (conf/hparams_search/paper_grid.yaml), so a study is identified by the same settings as a run (the
    # plugin imports nothing of mbrec)
    OmegaConf.register_new_resolver("mbrec.non_semantic_keys", non_semantic_dotted, replace=True)
    # ${mbrec.direction:${train.metric_mode}}: the study's direction follows the early-stopping mode
    OmegaConf.register_new_resolver("mbrec.direction", lambda mode: {"max": "maximize", "min": "minimize"}[mode],
                                    replace=True)
    # ${mbrec.fresh_dir:path[,name]}: a run's or a trial's own folder, created atomically (conf/config.yaml)
    OmegaConf.register_new_resolver("mbrec.fresh_dir", fresh_dir, replace=True)
    store = ConfigStore.instance()
    store.store(name="mbrec_schema", node=root_schema())
    for registry in (BACKBONES, BALANCERS):
        for name in registry:
            store.store(group=registry.kind, name=f"schema_{name}", node=registry.schema(name))


_SAFE = re.compile(r"[^A-Za-z0-9._,=+-]+")


def sweep_name(overrides: Any = (), study: Any = "") -> str:
    """A sweep's folder name from its identity: its sorted task overrides (readable, shortened) and a
    hash of them with the sweeper's study name, e.g. ``seed=0,1,2_backbone=mgcn-3f2a9c1d`` (swept keys
    first, each by its last component). The same
    command gives the same name (it continues its folder, study and MLflow parent); two different
    sweeps never share one."""
    from mbrec.utils import stable_hash

    items = sorted(str(o) for o in (overrides or ()))

    def short(override: str) -> str:  # the key's last component: optimizer.lr=1e-3,1e-4 -> lr=1e-3,1e-4
        key, sep, value = override.lstrip("+~").partition("=")
        return f"{key.rsplit('.', 1)[-1]}{sep}{value}"

    # what is swept first (a list or a search space), then the rest
    swept = [o for o in items if "," in o or "(" in o]
    slug = _SAFE.sub("_", "_".join(short(o) for o in swept + [o for o in items if o not in swept]))
    slug = slug.strip("_.")[:80] or "sweep"
    return f"{slug}-{stable_hash({'overrides': items, 'study': str(study or '')}, 8)}"


# ------------------------------------------------------------------------------------ output folders
_FRESH: dict[str, str] = {}  # what this process already created: Hydra resolves a folder more than once


def fresh_dir(path: Any, name: Any = None) -> str:
    """A folder no other run has: ``path`` (or ``path/name``) if it can be created now, else the first
    free ``<it>-2``, ``<it>-3``, ... Created with ``mkdir`` (atomic: of two runs started in the same second,
    even with identical configs, each gets its own). Returns the path, or with ``name`` the name alone
    (Hydra joins ``hydra.sweep.dir`` and ``hydra.sweep.subdir`` itself). The same arguments give the same
    answer within a process. A place that cannot be written ends the process with one line, exit 2 (Hydra
    resolves this before mbrec's error handling runs)."""
    target = Path(str(path)) / str(name) if name is not None else Path(str(path))
    key = str(target)
    if key not in _FRESH:
        try:
            _FRESH[key] = str(_make_fresh(target))
        except OSError as err:
            import sys

            print(f"error: {err.filename or target}: cannot create the output folder ({err.strerror or err}). Fix: "
                  "give write permission or free space there, or set hydra.run.dir / hydra.sweep.dir / MBREC_HOME "
                  "elsewhere", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
    return _FRESH[key] if name is None else Path(_FRESH[key]).name


def _make_fresh(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 100_000):
        candidate = target if n == 1 else target.with_name(f"{target.name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise OSError(f"{target}: 100,000 folders of that name exist")


# ------------------------------------------------------------------------------------- strict check
def _fields(schema: type) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]


def check_config(cfg: Mapping[str, Any]) -> None:
    """Refuse any key that no schema, class or optimizer takes (one line: the option, the key, the
    accepted keys). Runs before any data is loaded."""
    from mbrec.backbones import BACKBONES
    from mbrec.balancers import BALANCERS

    root = root_schema()
    check_keys("config", cfg, _fields(root))
    types = {f.name: f.type for f in dataclasses.fields(root)}
    for key in ("train", "paths", "mlflow"):
        check_keys(key, cfg[key], _fields(types[key]))
    dataset = cfg["dataset"]
    check_keys(f"dataset={dataset.get('name')}", dataset, _fields(types["dataset"]))
    if dataset.get("synthetic") is not None:
        check_keys(f"dataset={dataset.get('name')} synthetic", dataset["synthetic"], _fields(_synthetic_schema()))
    check_keys(f"optimizer ({cfg['optimizer'].get('_target_')})", cfg["optimizer"], optimizer_keys(cfg["optimizer"]))
    BACKBONES.check(cfg["backbone"])
    BALANCERS.check(cfg["balancer"])
    BALANCERS.get_class(cfg["balancer"]["name"]).check_config(cfg["balancer"], cfg)
    check_values(cfg)


#: the one place of a run's config where ``_target_`` (a class Hydra instantiates) may appear
TARGET_KEYS = ("optimizer._target_",)
DEVICE_HELP = "use device=auto, cpu, cuda or cuda:N with N a visible GPU"


def _walk(node: Any, prefix: str = "") -> Any:
    """(dotted key, value) of every entry of a plain nested dict/list, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        key = f"{prefix}.{k}" if prefix else str(k)
        yield key, v
        yield from _walk(v, key)


def check_values(cfg: Mapping[str, Any]) -> None:
    """Values that no run can use, refused before any data is read (one ConfigError naming the key):
    a ``_target_`` anywhere but :data:`TARGET_KEYS` (it would instantiate code: a tuned file or an
    override that smuggles one in), a non-finite or non-positive ``optimizer.lr``, a non-finite optimizer
    number, a ``device`` that is not here, and every ``train`` value (:meth:`TrainSettings.from_config`)."""
    from omegaconf import DictConfig, OmegaConf

    from mbrec.training.settings import TrainSettings

    plain = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else dict(cfg)
    for key, _value in _walk({k: v for k, v in plain.items() if k != "hydra"}):
        if key.rsplit(".", 1)[-1] in ("_target_", "_args_") and key not in TARGET_KEYS:
            raise ConfigError(f"{key}: a class to instantiate is accepted only at {', '.join(TARGET_KEYS)}; "
                              "remove it (a tuned file or an override must hold plain values)")
    for key, value in cfg["optimizer"].items():
        if isinstance(value, float) and not math.isfinite(value) or \
                key == "lr" and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise ConfigError(f"optimizer.{key}={value!r}: use a finite number" + (" > 0 (e.g. 1e-3)" if key == "lr" else ""))
    check_device(str(cfg["device"]))
    TrainSettings.from_config(cfg["train"])


def check_device(spec: str) -> None:
    """``device`` names a device this machine has (auto, cpu, mps, cuda, cuda:N), else a ConfigError."""
    import torch

    if spec in ("auto", "cpu"):
        return
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device={spec!r}: not a device; {DEVICE_HELP}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={spec!r}: CUDA is not available here; use device=auto or device=cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device={spec!r}: this machine has {torch.cuda.device_count()} GPU(s); {DEVICE_HELP}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device={spec!r}: MPS is not available here; {DEVICE_HELP}")
    else:
        raise ConfigError(f"device={spec!r}: mbrec runs on cpu, cuda or mps; {DEVICE_HELP}")


# ----------------------------------------------------------------------------------------- conf dir
def conf_dir() -> Path:
    """The config folder: the repository's top-level ``conf/`` in a clone (editable install), else the
    copy packaged inside the wheel as ``mbrec/conf``."""
    repo = Path(__file__).resolve().parents[2] / "conf"
    if (repo / "config.yaml").is_file():
        return repo
    return Path(__file__).resolve().parent / "conf"


def hydra_config_path() -> str:
    """``config_path`` for ``hydra.main``/``initialize``: the clone's folder or the packaged module."""
    repo = Path(__file__).resolve().parents[2] / "conf"
    return str(repo) if (repo / "config.yaml").is_file() else "pkg://mbrec.conf"
