"""What a finished study cost: its distinct configurations and the epochs their training took.

Read from the study's job folders (``<sweep dir>/<n>[-<dataset>-<backbone>-<balancer>]/``), whatever each job's outcome:

* a finished or replayed job: its ``results.json`` (the student's ``epochs_run``, its teachers, its
  G-Blend probes);
* a pruned job: the pruner's line in its log (``trial N pruned at step S``: S epochs trained);
* a diverged job: the divergence line in its log (``<fit>: training diverged at epoch E``: E + 1 epochs
  of that fit), plus the probes its log says were estimated before.

Each distinct configuration (its semantic config, :func:`mbrec.defaults.semantic`) counts once: a job
that replays or retries a configuration already counted adds nothing (``budget.epochs`` never counts a
replay again). A diverged or pruned configuration counts as a trial. Each distinct teacher (its cache
file) counts once, with the epochs it trained, whether a job trained it or found it in the cache.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from mbrec.defaults import semantic
from mbrec.record import Results
from mbrec.utils import stable_hash

_PRUNED = re.compile(r"trial \d+ pruned at step (\d+)")
_DIVERGED = re.compile(r"(\S+): training diverged at epoch (\d+)")
_PROBED = re.compile(r"gb: weights at epoch \d+")
_JOB = re.compile(r"^(\d+)(?:-|$)")  # a job folder: <n> or <n>-<dataset>-<backbone>-<balancer>


def _config_key(config: dict[str, Any]) -> str:
    return stable_hash(semantic(config))


def _log_text(job: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(job.glob("*.log")))


def _job_config(job: Path) -> dict[str, Any] | None:
    path = job / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(yaml.safe_load(path.read_text()) or {})
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - resolvers of the run (mbrec.*) are not registered here
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def _probe_epochs(config: dict[str, Any], estimates: int) -> int:
    """Epochs of ``estimates`` G-Blend estimations of a job without results.json (from its config)."""
    balancer = config.get("balancer") or {}
    modalities = ((config.get("dataset") or {}).get("synthetic") or {}).get("modalities") or {}
    heads = 1 + max(len(modalities), 2)
    return estimates * int(balancer.get("estimate_epochs") or 0) * heads


def job_cost(job: Path) -> dict[str, Any] | None:
    """One job's outcome, configuration key, student/probe epochs and teachers (cache path -> epochs);
    None for a folder that is no job or a job that never started training."""
    results_file = job / "results.json"
    if results_file.is_file():
        results = Results.from_json(json.loads(results_file.read_text()))
        teachers = (results.balancer or {}).get("teachers") or {}
        return {"outcome": "replayed" if results.replayed_from else "finished",
                "key": _config_key(results.config), "epochs": int(results.epochs_run or 0) + results.probe_epochs,
                "teachers": {str(t.get("cache_path") or m): int(t.get("epochs_run") or 0) for m, t in teachers.items()}}
    config = _job_config(job)
    if config is None:
        return None
    text = _log_text(job)
    probes = _probe_epochs(config, len(_PROBED.findall(text))) if (config.get("balancer") or {}).get("name") == "gb" else 0
    if m := _PRUNED.search(text):
        return {"outcome": "pruned", "key": _config_key(config), "epochs": int(m.group(1)) + probes, "teachers": {}}
    if m := _DIVERGED.search(text):
        return {"outcome": "diverged", "key": _config_key(config), "epochs": int(m.group(2)) + 1 + probes,
                "teachers": {}}
    return None  # killed before it trained, or still running


def study_budget(sweep_dir: str | Path) -> dict[str, int]:
    """``trials``: the distinct configurations the study ran (finished, replayed, pruned or diverged);
    ``epochs``: the epochs they trained, each configuration and each teacher counted once;
    ``replays``: jobs that repeated a configuration already counted (they cost nothing)."""
    seen: dict[str, int] = {}
    teachers: dict[str, int] = {}
    replays = 0
    jobs = sorted((p for p in Path(sweep_dir).iterdir() if p.is_dir() and _JOB.match(p.name)),
                  key=lambda p: int(_JOB.match(p.name).group(1))) if Path(sweep_dir).is_dir() else []  # type: ignore[union-attr]
    costs = [c for c in map(job_cost, jobs) if c is not None]
    costs.sort(key=lambda c: c["outcome"] == "replayed")  # a configuration's own training counts first
    for cost in costs:
        if cost["key"] in seen:
            replays += 1
            continue
        seen[cost["key"]] = cost["epochs"]
        for path, epochs in cost["teachers"].items():
            teachers.setdefault(path, epochs)
    return {"trials": len(seen), "epochs": sum(seen.values()) + sum(teachers.values()), "replays": replays}
