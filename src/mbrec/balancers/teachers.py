"""Uni-modal teachers (CKD eqs. 8–9, docs/method.md): trained once per configuration and cached on disk.

A teacher for modality m is the run's backbone trained from scratch with every other modality ablated
(at training and inference), early-stopped on its own validation metric. The cache key is a hash of
everything that determines it: dataset content, backbone config, training and optimizer config, seed and
the kept modality. Entries are checksummed tensor files (mbrec.cachefile) written atomically under the
teacher key's lock (mbrec.locks); a corrupt, foreign or incompatible entry is reported, removed and rebuilt,
never used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Mapping

import torch

from mbrec import cachefile, locks
from mbrec.backbones import BACKBONES
from mbrec.backbones.base import Backbone, build_backbone
from mbrec.defaults import semantic_train
from mbrec.errors import ConfigError
from mbrec.record import Tag
from mbrec.registry import accepted_keys, check_keys, optimizer_keys
from mbrec.training.hooks import RunContext
from mbrec.training.objective import inner
from mbrec.training.settings import TrainSettings
from mbrec.utils import stable_hash

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


@dataclass
class TeacherSettings:
    """``balancer.teachers``: the teachers' own settings; a missing or null key takes the student's value."""

    retrain: bool = False                                   # ignore the cache and retrain
    train: Dict[str, Any] = field(default_factory=dict)     # any ``train`` key
    optimizer: Dict[str, Any] = field(default_factory=dict)  # any key of the run's optimizer
    backbone: Dict[str, Any] = field(default_factory=dict)   # any key of the run's backbone


def check_teacher_settings(teachers: Mapping[str, Any], root: Mapping[str, Any]) -> None:
    """Refuse keys the teachers' train/optimizer/backbone overrides cannot take (ConfigError)."""
    check_keys("balancer.teachers", teachers, [f.name for f in fields(TeacherSettings)])
    check_keys("balancer.teachers.train", teachers.get("train") or {}, [f.name for f in fields(TrainSettings)])
    check_keys("balancer.teachers.optimizer", teachers.get("optimizer") or {}, optimizer_keys(root["optimizer"]))
    backbone = BACKBONES.get_class(root["backbone"]["name"])
    check_keys(f"balancer.teachers.backbone (backbone={backbone.name})", teachers.get("backbone") or {},
               accepted_keys(backbone))


@dataclass
class Teacher:
    """A frozen uni-modal teacher: its full user/item representations, computed once."""

    modality: str
    user: torch.Tensor
    item: torch.Tensor
    info: dict[str, Any]

    def margin(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """Δt_uij = t̂_ui − t̂_uj."""
        return (self.user[users] * (self.item[pos] - self.item[neg])).sum(-1)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return inner(self.user[users], self.item[items])


def _merge(base: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    out = dict(base)
    for k, v in (override or {}).items():
        if v is None:  # null = inherit the student's value
            continue
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def teacher_configs(ctx: RunContext, overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The teachers' backbone, train and optimizer configs: the student's, with ``teachers.*`` overrides."""
    return {k: _merge(ctx.configs[k], overrides.get(k)) for k in ("backbone", "train", "optimizer")}


def teacher_key(ctx: RunContext, configs: Mapping[str, Mapping[str, Any]], modality: str) -> dict[str, Any]:
    """Everything that determines teacher ``modality`` (hashed into the cache key)."""
    return {"format": CACHE_FORMAT, "data": ctx.dataset.fingerprint, "backbone": configs["backbone"],
            "train": semantic_train(configs["train"]), "optimizer": configs["optimizer"], "seed": ctx.seed, "keep": modality,
            "modalities": list(ctx.dataset.modalities)}


def checkpoint_path(cache_dir: str | Path, key: str) -> Path:
    """Where teacher ``key`` checkpoints while it trains: ``<cache>/checkpoints/teacher-<key>.pt``."""
    return Path(cache_dir) / "checkpoints" / f"teacher-{key}.pt"


def _representations(model: Backbone, ablate: frozenset[str]) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        u, i = model(ablate=ablate)
    return u.detach(), i.detach()


def load_or_train(ctx: RunContext, modality: str, overrides: Mapping[str, Any], retrain: bool = False) -> Teacher:
    """Teacher ``modality`` from the cache, or trained (through the run's trainer) and cached. Under the
    teacher key's lock: a second process that needs the same teacher waits for the first's file."""
    configs = teacher_configs(ctx, overrides)
    key_fields = teacher_key(ctx, configs, modality)
    key = stable_hash(key_fields, 24)
    path = Path(ctx.cache_dir) / "teachers" / str(configs["backbone"]["name"]) / f"{modality}-{key}.pt"
    ablate = frozenset(ctx.dataset.modalities) - {modality}
    with locks.hold(ctx.cache_dir, "teacher", key, f"teacher[{modality}] {key[:12]}"):
        if path.exists() and not retrain:
            teacher = _load(ctx, path, modality, key_fields, configs, ablate)
            if teacher is not None:
                return teacher
        elif retrain and path.exists():
            log.info("teacher[%s]: balancer.teachers.retrain=true, retraining", modality)
        log.info("teacher[%s]: training (every other modality ablated)", modality)
        # a teacher killed half-way resumes from here (the student's checkpoints are beside it)
        checkpoint = checkpoint_path(ctx.cache_dir, key)
        model, info = ctx.fit(
            f"teacher-{modality}", ablate=ablate, backbone_cfg=configs["backbone"],
            settings=TrainSettings.from_config(configs["train"]), optimizer_cfg=configs["optimizer"], key=key,
            checkpoint=checkpoint,
        )
        info = {**info, "modality": modality, "key_hash": key}
        cachefile.save({"key": key_fields, "state_dict": model.state_dict(), "info": info}, path)
        checkpoint.unlink(missing_ok=True)  # cached: nothing left to resume
    u, i = _representations(model, ablate)
    return Teacher(modality, u, i, {**info, "cached": False, "cache_path": str(path)})


def _load(ctx: RunContext, path: Path, modality: str, key_fields: Mapping[str, Any],
          configs: Mapping[str, Any], ablate: frozenset[str]) -> Teacher | None:
    """The cached teacher at ``path``; None (reported in one line, file removed) if it is unusable."""
    model = build_backbone(configs["backbone"], ctx.dataset).to(ctx.device)
    try:
        entry = cachefile.load(path, map_location=ctx.device)
        if entry.get("key") != key_fields:
            raise ValueError("the stored key does not match this configuration")
        model.load_state_dict(entry["state_dict"])
        u, i = _representations(model, ablate)
        if not (torch.isfinite(u).all() and torch.isfinite(i).all()):
            raise ValueError("non-finite representations")
        log.info("teacher[%s]: reusing cached %s (test %s)", modality, path,
                 {k: round(v, 4) for k, v in entry["info"]["test"].items() if k.startswith("recall@")})
        return Teacher(modality, u, i, {**entry["info"], "cached": True, "cache_path": str(path)})
    except Exception as e:  # noqa: BLE001 - any unusable entry is rebuilt, never used
        log.warning("teacher[%s]: cache entry %s is corrupt or incompatible (%s); retraining it", modality, path, e)
        path.unlink(missing_ok=True)
        return None


#: the teacher fields a student's results.json carries (the "uni-teacher" row of Table 2; budgets count their epochs)
RESULT_FIELDS = ("test", "best_valid", "best_epoch", "cached", "cache_path", "mlflow_run_id", "seconds_per_epoch",
                 "epochs_run")


def prepare_teachers(ctx: RunContext, teacher_cfg: Mapping[str, Any], balancer: str) -> dict[str, Teacher]:
    """One frozen teacher per modality (:func:`load_or_train`), for every balancer that uses them (CKD,
    UMT, the teacher ensemble: same settings, same cache entries); tags the run with the teachers' MLflow
    runs and logs their test metrics as ``teacher/<m>/test/*``."""
    modalities = ctx.dataset.modalities
    if len(modalities) < 2:
        raise ConfigError(f"balancer={balancer} needs at least two modalities; the dataset has {list(modalities)}")
    overrides = {k: teacher_cfg.get(k) for k in ("backbone", "train", "optimizer")}
    retrain = bool(teacher_cfg.get("retrain", False))
    teachers = {m: load_or_train(ctx, m, overrides, retrain) for m in modalities}
    tags, metrics = {}, {}
    for m, t in teachers.items():
        tags[Tag.teacher_run(m)] = t.info.get("mlflow_run_id") or ""
        tags[Tag.teacher_cached(m)] = str(t.info["cached"]).lower()
        metrics.update({f"teacher/{m}/test/{k}": v for k, v in t.info["test"].items()})
    ctx.tracker.set_tags(tags)
    ctx.tracker.log_metrics(metrics)
    return teachers


def teacher_results(teachers: Mapping[str, Teacher]) -> dict[str, Any]:
    """``results.json``'s ``balancer.teachers``: each teacher's record (:data:`RESULT_FIELDS`)."""
    return {"teachers": {m: {k: t.info.get(k) for k in RESULT_FIELDS} for m, t in teachers.items()}}
