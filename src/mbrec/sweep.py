"""Idempotent trials: an index of finished runs keyed by ``mbrec.experiment.run_key``.

A sweep re-run (Optuna's in-memory storage cannot resume, and optuna 2.10's SQLite storage fails under
SQLAlchemy 2) asks the same trials again;
a trial whose exact resolved config (minus paths/logging/device) already finished returns its stored
``results.json`` at once instead of training.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from mbrec.utils import atomic_write_json

log = logging.getLogger(__name__)

#: how a sweep's MLflow parent run id reaches its trials (mbrec.callbacks.MlflowSweepParent)
PARENT_ENV = "MBREC_MLFLOW_PARENT_RUN"
PARENT_FILE = "mlflow_parent_run_id"


def parent_run_id(output_dir: str | Path) -> str | None:
    """The MLflow parent run of the sweep this trial belongs to: env var, else the file the callback
    wrote in the sweep dir (the trial's output dir is a subdir of it); None outside a sweep."""
    if os.environ.get(PARENT_ENV):
        return os.environ[PARENT_ENV]
    path = Path(output_dir).resolve().parent / PARENT_FILE
    return path.read_text().strip() or None if path.is_file() else None


def index_path(cache_dir: str | Path, key: str) -> Path:
    """Where the finished result of run ``key`` is stored."""
    return Path(cache_dir) / "finished" / f"{key}.json"


def lookup(cache_dir: str | Path, key: str) -> dict[str, Any] | None:
    """The stored results of a finished run with this key, or None (also when the file is unreadable)."""
    path = index_path(cache_dir, key)
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        log.warning("ignoring unreadable finished-run index %s (%s); the run is recomputed", path, err)
        return None
    return results if "best_valid_value" in results else None


def record(cache_dir: str | Path, key: str, results: dict[str, Any]) -> None:
    """Remember a finished run (atomic write)."""
    atomic_write_json(index_path(cache_dir, key), results)


def replay(cache_dir: str | Path, key: str, output_dir: str | Path) -> float | None:
    """If run ``key`` already finished: copy its results.json to ``output_dir``, say so, and return
    its objective (best validation metric); otherwise None."""
    results = lookup(cache_dir, key)
    if results is None:
        return None
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", {**results, "replayed_from": str(index_path(cache_dir, key))})
    msg = (f"already finished (run key {key[:12]}): returning the stored result "
           f"{results['metric']} = {results['best_valid_value']:.4f} without training")
    log.info(msg)
    return float(results["best_valid_value"])


# ---------------------------------------------------------------- presets: which runs a report reads
#: the ``mlflow.tags`` key a preset (conf/experiment/) sets; reports select runs by it
PRESET_TAG = "mbrec_experiment"


def preset_marker(preset: str) -> str:
    """The tag ``mbrec.preset.<name>`` (value ``true``) every run of a preset carries. Unlike the single
    ``mbrec_experiment`` value, a run can carry several: a replayed run joins the replaying preset too."""
    return f"mbrec.preset.{preset}"


def preset_tags(tags: dict[str, Any]) -> dict[str, str]:
    """The marker tags for a run whose ``mlflow.tags`` are ``tags`` (empty outside a preset)."""
    preset = tags.get(PRESET_TAG)
    return {preset_marker(str(preset)): "true"} if preset else {}


def join_preset(results: dict[str, Any], mlflow_cfg: Any) -> None:
    """A replayed run belongs to the preset that replays it: mark its stored MLflow run, so e.g. the
    ``ablation=full`` row of Table 3 (identical to Table 1's CKD runs) is found by ``report table3``."""
    tags = preset_tags(dict(mlflow_cfg.get("tags") or {}))
    run_id = results.get("mlflow_run_id")
    if not (tags and run_id and mlflow_cfg.get("enabled", True)):
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(str(mlflow_cfg.tracking_uri))
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
    except Exception as err:  # noqa: BLE001 - the result is still valid; only the report's view is affected
        log.warning("could not mark replayed MLflow run %s with %s (%s)", run_id, tags, err)


# ---------------------------------------------------------------- Table 1: tune each cell, then seeds
SMOKE = ["scale=smoke"]  # conf/scale/smoke.yaml: tiny synthetic data, 2 epochs


def conf_dir() -> Path:
    """The repository's ``conf/`` (tuned/ files are written there)."""
    return Path(__file__).resolve().parents[2] / "conf"


def read_study(sweep_dir: str | Path) -> tuple[Path, Any, dict[str, Any]]:
    """``<sweep_dir>/optimization_results.yaml``: (its path, best value, best point as dotted keys)."""
    import yaml

    from mbrec.errors import DataError

    source = Path(sweep_dir) / "optimization_results.yaml"
    if not source.is_file():
        raise DataError(str(source), "optimization_results.yaml", "missing (the sweep did not finish)",
                        "re-run the hparams_search multirun for this cell; finished trials are not recomputed")
    study = yaml.safe_load(source.read_text()) or {}
    return source, study.get("best_value"), study["best_params"]


def teacher_settings(base_best: dict[str, Any]) -> dict[str, Any]:
    """The base row's tuned lr, L2 and backbone keys as the CKD teachers' settings, so that a CKD
    study trains its teachers once (they are cached by these settings) instead of once per lr x L2 point."""
    return {f"balancer.teachers.{dotted}": value for dotted, value in base_best.items()
            if dotted in ("optimizer.lr", "train.l2") or dotted.startswith("backbone.")}


def write_tuned(sweep_dir: str | Path, cell: str, conf: str | Path | None = None,
                fixed: dict[str, Any] | None = None) -> Path:
    """Turn ``<sweep_dir>/optimization_results.yaml`` into ``conf/tuned/<cell>.yaml`` (the optional
    ``tuned`` default of config.yaml), so later runs of that cell use its best hyper-parameters.
    ``fixed``: further dotted settings the study ran with (e.g. the CKD teachers'), written alongside."""
    import yaml

    from mbrec.utils import atomic_write_text

    source, best_value, best = read_study(sweep_dir)
    lines = ["# @package _global_", f"# best of {source} (best_value={best_value})"]
    nested: dict[str, Any] = {}
    for dotted, value in {**best, **(fixed or {})}.items():  # "optimizer.lr" -> {optimizer: {lr: ...}}
        *parents, leaf = dotted.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    target = Path(conf or conf_dir()) / "tuned" / f"{cell}.yaml"
    atomic_write_text(target, "\n".join(lines) + "\n" + yaml.safe_dump(nested, sort_keys=True))
    return target


def _mbrec(args: list[str]) -> None:
    import subprocess
    import sys

    print("+ python -m mbrec " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "mbrec", *args], check=True)


def table1(dataset: str, backbone: str, balancers: list[str], seeds: list[int], root: Path,
           search: str = "grid", extra: list[str] | None = None, tune_extra: list[str] | None = None,
           tuned_conf: Path | None = None) -> None:
    """Tune every (dataset, backbone, balancer) cell on validation, write its tuned/ file, then run
    all cells x seeds at the tuned settings in one multirun (MLflow tag mbrec_experiment=table1).

    ``tuned_conf``: where ``tuned/<cell>.yaml`` goes; default the repository's ``conf/`` (every later
    run of the cell picks it up); another folder is added to the final run's Hydra search path only."""
    extra = list(extra or [])
    final_extra = [] if tuned_conf is None else [f"hydra.searchpath=[file://{Path(tuned_conf).resolve()}]"]
    for balancer in balancers:
        cell = f"{dataset}_{backbone}_{balancer}"
        space = f"{balancer}_{search}" if (conf_dir() / "hparams_search" / f"{balancer}_{search}.yaml").is_file() \
            else ("paper_grid" if search == "grid" else search)
        sweep_dir = root / "tune" / cell
        fixed: dict[str, Any] = {}
        base_dir = root / "tune" / f"{dataset}_{backbone}_none"
        if balancer == "ckd" and (base_dir / "optimization_results.yaml").is_file():
            fixed = teacher_settings(read_study(base_dir)[2])
            print(f"CKD teachers at the base row's tuned settings (trained once for the study): {fixed}")
        _mbrec(["-m", f"hparams_search={space}", f"dataset={dataset}", f"backbone={backbone}",
                f"balancer={balancer}", f"hydra.sweep.dir={sweep_dir}", *extra, *(tune_extra or []),
                *(f"++{k}={v}" for k, v in fixed.items())])
        print(f"tuned: {write_tuned(sweep_dir, cell, tuned_conf, fixed)}")
    _mbrec(["-m", f"dataset={dataset}", f"backbone={backbone}", f"balancer={','.join(balancers)}",
            f"seed={','.join(map(str, seeds))}", f"+mlflow.tags.{PRESET_TAG}=table1",
            f"hydra.sweep.dir={root / 'final'}", *final_extra, *extra])


def main(argv: list[str] | None = None) -> None:
    """``python -m mbrec.sweep table1 --dataset D --backbone B [--smoke] [extra overrides]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mbrec.sweep")
    parser.add_argument("command", choices=["table1"])
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--backbone", default="vbpr")
    parser.add_argument("--balancers", default="none,gb,ogm,ckd", help="comma list (rows of Table 1)")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--search", choices=["grid", "tpe"], default="grid")
    parser.add_argument("--trials", type=int, help="trials per study (TPE default 20/30; grid: all points)")
    parser.add_argument("--root", default="multirun/table1", help="sweep dirs go under here")
    parser.add_argument("--tuned-dir", help="write tuned/<cell>.yaml under this folder instead of the "
                        "repository's conf/ (used by this table only; --smoke: <root>/conf)")
    parser.add_argument("--smoke", action="store_true", help="tiny data and budgets, 2 TPE trials (CI)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_intermixed_args(argv)  # overrides may follow the options
    extra = (SMOKE if args.smoke else []) + args.overrides
    balancers = [b for b in args.balancers.split(",") if (conf_dir() / "balancer" / f"{b}.yaml").is_file()]
    if missing := set(args.balancers.split(",")) - set(balancers):
        log.warning("skipping balancers without conf/balancer/<name>.yaml: %s", sorted(missing))
        print(f"skipping balancers that are not installed: {sorted(missing)}")
    dataset = "synthetic" if args.smoke else args.dataset
    root = Path(args.root) / dataset
    trials = args.trials or (2 if args.smoke else None)
    # smoke tuned/ files must not land in conf/tuned/: they would silently change every later synthetic run
    tuned_dir = Path(args.tuned_dir) if args.tuned_dir else (root / "conf" if args.smoke else None)
    table1(dataset, args.backbone, balancers, [int(s) for s in args.seeds.split(",")], root,
           "tpe" if args.smoke else args.search, extra,
           [f"hydra.sweeper.n_trials={trials}"] if trials else [], tuned_dir)


if __name__ == "__main__":
    main()
