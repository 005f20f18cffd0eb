"""A study's best point -> ``conf/tuned/<cell>.yaml``, the optional ``tuned`` default of config.yaml."""

from __future__ import annotations

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
    return source, study.get("best_value"), study["best_params"]


def write_tuned(sweep_dir: str | Path, cell: str, conf: str | Path | None = None,
                fixed: dict[str, Any] | None = None, tags: dict[str, Any] | None = None,
                best: dict[str, Any] | None = None) -> Path:
    """Turn ``<sweep_dir>/optimization_results.yaml`` into ``conf/tuned/<cell>.yaml`` (the optional
    ``tuned`` default of config.yaml), so later runs of that cell use its best hyper-parameters.
    ``fixed``: further dotted settings the study ran with (e.g. the CKD teachers'), written alongside;
    ``tags``: MLflow tags every later run of the cell carries (e.g. the study's budget), keys kept whole;
    ``best``: the best point as dotted settings when the study's own names are not (an equal-budget study)."""
    source, best_value, study_best = read_study(sweep_dir)
    best = study_best if best is None else best
    lines = ["# @package _global_", f"# best of {source} (best_value={best_value})"]
    nested: dict[str, Any] = {}
    for dotted, value in {**best, **(fixed or {})}.items():  # "optimizer.lr" -> {optimizer: {lr: ...}}
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
