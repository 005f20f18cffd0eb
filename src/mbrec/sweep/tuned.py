"""A study's best point -> ``conf/tuned/<cell>.yaml``, the optional ``tuned`` default of config.yaml."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from mbrec.config import conf_dir
from mbrec.errors import DataError
from mbrec.utils import atomic_write_text


def read_study(sweep_dir: str | Path) -> tuple[Path, Any, dict[str, Any]]:
    """``<sweep_dir>/optimization_results.yaml``: (its path, best value, best point as dotted keys)."""
    source = Path(sweep_dir) / "optimization_results.yaml"
    if not source.is_file():
        raise DataError(str(source), "optimization_results.yaml", "missing (the sweep did not finish)",
                        "re-run the hparams_search multirun for this cell; finished trials are not recomputed")
    study = yaml.safe_load(source.read_text()) or {}
    if not isinstance(study, dict) or not isinstance(study.get("best_params"), dict):
        raise DataError(str(source), "best_params", "missing or not a mapping",
                        "re-run the hparams_search multirun for this cell; finished trials are not recomputed")
    return source, study.get("best_value"), study["best_params"]


#: the values a tuned file may hold: plain scalars (a mapping could carry ``_target_`` and instantiate code)
PLAIN = (str, int, float, bool)


def check_study(source: Path, study: dict[str, Any], best: dict[str, Any] | None = None) -> None:
    """Refuse to tune from a study result a later run must not trust (DataError naming ``source``): no
    finite best value; trials still running; a best parameter that is not a plain value, has a key part
    starting with ``_`` (``_target_``), an interpolation, or is not a point of the study's search space.
    ``best``: the best point as dotted settings when the study's own names are not (an equal-budget
    study's point index): those are checked as plain values; the point came from the driver's own grid."""
    fix = "re-run the hparams_search multirun for this cell (finished trials are not recomputed)"
    value = study.get("best_value")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(source, "best_value", f"{value!r} is not a finite number (every trial diverged?)", fix)
    if study.get("still_running"):
        raise DataError(source, "still_running", f"trials {study['still_running']} had not finished",
                        "wait for the other sweep on this study to end, then " + fix)
    space = study.get("search_space") if best is None else None
    best = study["best_params"] if best is None else best
    if isinstance(space, dict) and set(space) != set(best):
        raise DataError(source, "best_params", f"keys {sorted(best)} are not the search space's {sorted(space)}", fix)
    for key, val in best.items():
        where = f"best_params.{key}"
        if not isinstance(key, str) or any(not p.isidentifier() or p.startswith("_") for p in key.split(".")) \
                or key.split(".")[0] == "hydra":
            raise DataError(source, where, "is not a plain dotted config key", fix)
        if not isinstance(val, PLAIN) or isinstance(val, str) and "${" in val or \
                isinstance(val, float) and not math.isfinite(val):
            raise DataError(source, where, f"{str(val)[:60]!r} is not a plain finite value", fix)
        dim = space.get(key) if isinstance(space, dict) else None
        if isinstance(dim, dict) and "choices" in dim and val not in dim["choices"] or \
                isinstance(dim, dict) and "low" in dim and not (isinstance(val, (int, float)) and dim["low"] <= val <= dim["high"]):
            raise DataError(source, where, f"{val!r} is outside the search space {dim}", fix)


def write_tuned(sweep_dir: str | Path, cell: str, conf: str | Path | None = None,
                fixed: dict[str, Any] | None = None, tags: dict[str, Any] | None = None,
                best: dict[str, Any] | None = None) -> Path:
    """Turn ``<sweep_dir>/optimization_results.yaml`` into ``conf/tuned/<cell>.yaml`` (the optional
    ``tuned`` default of config.yaml), so later runs of that cell use its best hyper-parameters.
    ``fixed``: further dotted settings the study ran with (e.g. the CKD teachers'), written alongside;
    ``tags``: MLflow tags every later run of the cell carries (e.g. the study's budget), keys kept whole;
    ``best``: the best point as dotted settings when the study's own names are not (an equal-budget study)."""
    source, best_value, study_best = read_study(sweep_dir)
    check_study(source, yaml.safe_load(source.read_text()), best)
    best = study_best if best is None else best
    return write_settings(cell, {**best, **(fixed or {})}, conf, tags, f"best of {source} (best_value={best_value})")


def write_settings(cell: str, settings: dict[str, Any], conf: str | Path | None = None,
                   tags: dict[str, Any] | None = None, comment: str = "") -> Path:
    """``conf/tuned/<cell>.yaml`` holding dotted ``settings`` and MLflow ``tags`` (:func:`write_tuned`
    for a study's best point; the Table 1 driver directly for a row with nothing to tune)."""
    lines = ["# @package _global_", f"# {comment}"]
    nested: dict[str, Any] = {}
    for dotted, value in settings.items():  # "optimizer.lr" -> {optimizer: {lr: ...}}
        *parents, leaf = dotted.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    if tags:
        nested.setdefault("mlflow", {}).setdefault("tags", {}).update({k: str(v) for k, v in tags.items()})
    target = Path(conf or conf_dir()) / "tuned" / f"{cell}.yaml"
    atomic_write_text(target, "\n".join(lines) + "\n" + yaml.safe_dump(nested, sort_keys=True))
    return target
