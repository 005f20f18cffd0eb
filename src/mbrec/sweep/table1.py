"""The Table 1 driver: tune every row of a (dataset, backbone) cell on validation, then run every row x
seed at its tuned settings. ``python -m mbrec.sweep table1 --dataset D --backbone B``."""

from __future__ import annotations

import importlib.util
import itertools
import logging
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from mbrec.balancers import ROWS, in_paper, paper_rows
from mbrec.config import conf_dir
from mbrec.defaults import BASE_ROW
from mbrec.record import Tag
from mbrec.sweep.budget import study_budget
from mbrec.sweep.tuned import read_study, write_settings, write_tuned
from mbrec.utils import atomic_write_text, stable_hash

log = logging.getLogger(__name__)

SMOKE = ["scale=smoke"]  # conf/scale/smoke.yaml: tiny synthetic data, 2 epochs
#: distinct configurations per row under --budget equal (the paper's lr x L2 grid has 16 points)
EQUAL_TRIALS = 16
POINT_GROUP = "budget_point"  # the config group of an equal-budget study's sampled points
#: the budget label of a row with nothing to tune (no study runs; budget.trials = budget.epochs = 0)
NO_STUDY = "none (nothing to tune: trains no student)"


def _mbrec(args: list[str]) -> None:
    print("+ python -m mbrec " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "mbrec", *args], check=True)


def parallel(jobs: int, sweeper_key: str) -> list[str]:
    """The overrides that run ``jobs`` trials at once on this machine (submitit's local executor):
    ``sweeper_key`` is the Optuna sweeper's ``n_jobs`` (a new trial starts when one ends) or the basic
    sweeper's ``max_batch_size`` (the final runs, ``jobs`` at a time)."""
    return [] if jobs <= 1 else ["hydra/launcher=local_parallel", f"hydra.sweeper.{sweeper_key}={jobs}"]


def _choices(text: str) -> list[Any]:
    """``choice(1e-4, 5e-4)`` -> ``[0.0001, 0.0005]`` (the value sets of conf/hparams_search/*.yaml)."""
    inner = str(text).strip()
    if not (inner.startswith("choice(") and inner.endswith(")")):
        raise ValueError(f"not a choice(...) sweep: {text}")
    return [_value(v.strip()) for v in inner[len("choice("):-1].split(",")]


def _value(text: str) -> Any:
    """A grid value as Hydra reads it (``1e-4`` is a float, which YAML 1.1 would keep as a string)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def _search_params(name: str) -> dict[str, list[Any]]:
    """``hydra.sweeper.params`` of ``conf/hparams_search/<name>.yaml`` as key -> values."""
    node = yaml.safe_load((conf_dir() / "hparams_search" / f"{name}.yaml").read_text()) or {}
    params = ((node.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    return {k: _choices(v) for k, v in params.items()}


def has_dropout(backbone: str) -> bool:
    """Whether ``backbone`` takes a ``dropout`` key (its registered constructor; conf/backbone/<name>.yaml)."""
    from mbrec.backbones import BACKBONES
    from mbrec.registry import accepted_keys

    return backbone in BACKBONES and "dropout" in accepted_keys(BACKBONES.get_class(backbone))


def backbone_grid(backbone: str) -> dict[str, list[Any]]:
    """The backbone's own grid (``Backbone.search_space``, from its reference config) when it declares
    one; else the paper's: lr x L2 (``paper_grid``), x dropout {0.0, ..., 0.8} (``paper_grid_dropout``)
    for backbones that have it."""
    from mbrec.backbones import BACKBONES

    own = BACKBONES.get_class(backbone).search_space if backbone in BACKBONES else {}
    if own:
        return {k: list(v) for k, v in own.items()}
    grid = _search_params("paper_grid")
    if has_dropout(backbone):
        grid.update(_search_params("paper_grid_dropout"))
    return grid


def row_grid(balancer: str, backbone: str) -> dict[str, list[Any]]:
    """The grid of one Table 1 row: the backbone's (:func:`backbone_grid`) x the balancer's own
    ``Row.search_space``; only the latter for a row that trains no student (``Row.trains_student``)."""
    grid = backbone_grid(backbone) if ROWS[balancer].trains_student else {}
    grid.update({f"balancer.{k}": list(v) for k, v in ROWS[balancer].search_space.items()})
    return grid


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every point of ``grid`` (its Cartesian product), in a fixed order."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def sample_points(grid: dict[str, list[Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` DISTINCT points of ``grid``, drawn without replacement by a seeded shuffle (all of them
    when the grid is smaller)."""
    points = grid_points(grid)
    random.Random(seed).shuffle(points)
    return points[:n]


def _render(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def write_points(folder: Path, points: list[dict[str, Any]]) -> list[str]:
    """One ``<folder>/budget_point/pNN.yaml`` (``@package _global_``) per point; returns their names."""
    names = []
    for i, point in enumerate(points):
        name = f"p{i:03d}"
        nested: dict[str, Any] = {}
        for dotted, value in point.items():
            *parents, leaf = dotted.split(".")
            node = nested
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        atomic_write_text(folder / POINT_GROUP / f"{name}.yaml", "# @package _global_\n" + yaml.safe_dump(nested))
        names.append(name)
    return names


def study_space(balancer: str, backbone: str, budget: str, sweep_dir: Path, trials: int | None,
                seed: int = 0, epochs_per_row: int | None = None) -> tuple[list[str], str, dict[str, dict[str, Any]]]:
    """The overrides that set up one row's study, its budget label, and (equal) point name -> settings.

    ``paper`` (default): the paper's protocol: the row's full grid (:func:`row_grid`) with the grid
    sampler. ``equal``: ``trials`` (default :data:`EQUAL_TRIALS`) distinct points of the row's own grid,
    sampled without replacement (seeded), run as a grid over those points: no point runs twice; with
    ``epochs_per_row`` the study launches no more points once its trials have trained that many epochs
    (teachers and G-Blend probes included; ``hydra.sweeper.max_cost``, trials in flight finish)."""
    grid = row_grid(balancer, backbone)
    study = [f"hydra.sweeper.study_name={sweep_dir.parent.name}-{sweep_dir.name}-{budget}"]
    if not grid:  # nothing to tune (a row that trains no student and has no keys of its own)
        return [], NO_STUDY, {}
    if budget == "paper" and not ROWS[balancer].trains_student:  # its own keys only, not the paper's lr x L2
        dims = [f"{k}=choice({','.join(_render(v) for v in values)})" for k, values in grid.items()]
        return ["hparams_search=grid", *study, *dims], f"grid ({len(grid_points(grid))} points)", {}
    if budget == "paper":
        dims = [f"{k}=choice({','.join(_render(v) for v in values)})" for k, values in grid.items()
                if k not in _search_params("paper_grid")]
        size = len(grid_points(grid))
        return ["hparams_search=paper_grid", *study, *dims], f"paper-grid ({size} points)", {}
    points = sample_points(grid, trials or EQUAL_TRIALS, seed)
    folder = sweep_dir / "points"
    names = write_points(folder, points)
    cap = [f"hydra.sweeper.max_cost={int(epochs_per_row)}"] if epochs_per_row else []
    label = f"equal ({len(points)} of {len(grid_points(grid))} points" + (f", <= {epochs_per_row} epochs)" if cap else ")")
    return (["hparams_search=grid", *study, f"hydra.searchpath=[file://{folder.resolve()}]", *cap,
             f"+{POINT_GROUP}=choice({','.join(names)})"], label, dict(zip(names, points)))


def tuning_id(cell: str, label: str, best: dict[str, Any]) -> str:
    """The id of one tuning of a row (its cell, budget and tuned point): ``budget.tuning`` on its runs,
    ``budget.base`` on the runs of every row tuned against it (the report pairs rows by it)."""
    return stable_hash({"cell": cell, "budget": label, "best": {k: str(v) for k, v in sorted(best.items())}})[:12]


def best_settings(sweep_dir: Path, points: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The study's best point as dotted settings (an equal-budget study's point name -> its settings)."""
    best = dict(read_study(sweep_dir)[2])
    name = best.pop(f"+{POINT_GROUP}", best.pop(POINT_GROUP, None))
    return {**(points.get(str(name)) or {}), **best} if name is not None else best


def table1(dataset: str, backbone: str, balancers: list[str], seeds: list[int], root: Path,
           budget: str = "paper", trials: int | None = None, extra: list[str] | None = None,
           tuned_conf: Path | None = None, sample_seed: int = 0, epochs_per_row: int | None = None,
           jobs: int = 1) -> None:
    """Tune every (dataset, backbone, balancer) row on validation (the base row first), write its
    tuned/ file (with the study's budget and tuning ids as MLflow tags), then run all rows x seeds at the
    tuned settings in one multirun (MLflow tag mbrec_experiment=table1).

    ``tuned_conf``: where ``tuned/<cell>.yaml`` goes; default the repository's ``conf/`` (every later
    run of the cell picks it up); another folder is added to the final run's Hydra search path only.
    ``jobs``: trials (then final runs) at once on this machine."""
    extra = list(extra or [])
    final_extra = [] if tuned_conf is None else [f"hydra.searchpath=[file://{Path(tuned_conf).resolve()}]"]
    order = sorted(balancers, key=lambda b: b != BASE_ROW)  # the base row first: the others use its point
    base_dir = root / "tune" / f"{dataset}_{backbone}_{BASE_ROW}"
    base_id = ""
    for balancer in order:
        cell = f"{dataset}_{backbone}_{balancer}"
        sweep_dir = root / "tune" / cell
        space, label, points = study_space(balancer, backbone, budget, sweep_dir, trials, sample_seed, epochs_per_row)
        fixed: dict[str, Any] = {}
        if balancer != BASE_ROW and (base_dir / "optimization_results.yaml").is_file():
            base_points = _saved_points(base_dir)
            base_best = best_settings(base_dir, base_points)
            base_id = base_id or tuning_id(base_dir.name, _saved_label(base_dir), base_best)
            fixed = ROWS[balancer].settings_for(base_best)
            if fixed:
                print(f"{balancer}: fixed for the study from the base row's tuned point: {fixed}")
        _save_points(sweep_dir, points, label)
        if space:
            _mbrec(["-m", *space[:1], f"dataset={dataset}", f"backbone={backbone}", f"balancer={balancer}",
                    f"hydra.sweep.dir={sweep_dir}", *extra, *space[1:], *(f"++{k}={v}" for k, v in fixed.items()),
                    *parallel(jobs, "n_jobs")])
            best = best_settings(sweep_dir, points)
            spent = study_budget(sweep_dir)
        else:
            best, spent = {}, {"trials": 0, "epochs": 0}
        own_id = tuning_id(cell, label, best)
        if balancer == BASE_ROW:
            base_id = own_id
        tags = {Tag.BUDGET_SEARCH: label, Tag.BUDGET_TRIALS: spent["trials"], Tag.BUDGET_EPOCHS: spent["epochs"],
                Tag.BUDGET_TUNING: own_id, Tag.BUDGET_BASE: base_id or "unknown"}
        written = (write_tuned(sweep_dir, cell, tuned_conf, fixed, tags, best) if space
                   else write_settings(cell, fixed, tuned_conf, tags, f"no study ({label})"))
        print(f"tuned: {written} ({label}, {spent['trials']} distinct configurations, {spent['epochs']} epochs)")
    _mbrec(["-m", f"dataset={dataset}", f"backbone={backbone}", f"balancer={','.join(balancers)}",
            f"seed={','.join(map(str, seeds))}", f"+mlflow.tags.{Tag.PRESET}=table1",
            f"hydra.sweep.dir={root / 'final'}", *final_extra, *extra, *parallel(jobs, "max_batch_size")])


def _save_points(sweep_dir: Path, points: dict[str, dict[str, Any]], label: str) -> None:
    atomic_write_text(sweep_dir / "points" / "points.yaml", yaml.safe_dump({"label": label, "points": points}))


def _saved_points(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    path = sweep_dir / "points" / "points.yaml"
    return (yaml.safe_load(path.read_text()) or {}).get("points") or {} if path.is_file() else {}


def _saved_label(sweep_dir: Path) -> str:
    path = sweep_dir / "points" / "points.yaml"
    return str((yaml.safe_load(path.read_text()) or {}).get("label", "")) if path.is_file() else ""


def check_balancers(text: str) -> list[str]:
    """``--balancers``: the comma list, each a registered balancer with a ``conf/balancer/<name>.yaml``
    (listed once, in the given order); else one line naming the bad ones and the registry (exit 2)."""
    names = list(dict.fromkeys(b.strip() for b in text.split(",") if b.strip()))
    unknown = [b for b in names if b not in ROWS]
    no_yaml = [b for b in names if b in ROWS and not (conf_dir() / "balancer" / f"{b}.yaml").is_file()]
    if unknown or no_yaml or not names:
        what = (f"unknown {', '.join(unknown)}" if unknown else
                f"{', '.join(no_yaml)} has no conf/balancer/<name>.yaml" if no_yaml else "empty")
        raise SystemExit(f"--balancers: {what}; registered: {','.join(paper_rows())} (the paper's: "
                         f"{','.join(b for b in paper_rows() if in_paper(b))})")
    return names


def main(argv: list[str] | None = None) -> None:
    """``python -m mbrec.sweep table1 --dataset D --backbone B [--smoke] [extra overrides]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mbrec.sweep")
    parser.add_argument("command", choices=["table1"])
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--backbone", default="vbpr")
    parser.add_argument("--balancers", default=",".join(b for b in paper_rows() if in_paper(b)),
                        help="comma list of registered balancers (rows of Table 1), e.g. "
                        f"{','.join(paper_rows())}; default: the paper's rows")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--budget", choices=["paper", "equal"], default="paper",
                        help="paper: the paper's protocol, every row's full grid (lr x L2 x dropout where the "
                        "backbone has it x the row's own keys), grid sampler (default) | equal: the same number "
                        "of distinct configurations per row, sampled without replacement from its own grid")
    parser.add_argument("--trials", type=int, help=f"--budget equal: distinct configurations per row (default "
                        f"{EQUAL_TRIALS})")
    parser.add_argument("--sample-seed", type=int, default=0, help="--budget equal: the seed of the sampling")
    parser.add_argument("--epochs-per-row", type=int, help="--budget equal: stop a row's study once its trials "
                        "trained this many epochs (teachers and G-Blend probes included); default: no cap")
    parser.add_argument("--root", default="multirun/table1", help="sweep dirs go under here")
    parser.add_argument("--tuned-dir", help="write tuned/<cell>.yaml under this folder instead of the "
                        "repository's conf/ (used by this table only; --smoke: <root>/conf)")
    parser.add_argument("--smoke", action="store_true", help="tiny data and budgets, --budget equal with 2 "
                        "configurations per row (CI)")
    parser.add_argument("--jobs", type=int, default=1, help="trials at once on this machine (each its own "
                        "process; needs the cluster extra); the final runs go this many at a time")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_intermixed_args(argv)  # overrides may follow the options
    extra = (SMOKE if args.smoke else []) + args.overrides
    balancers = check_balancers(args.balancers)
    dataset = "synthetic" if args.smoke else args.dataset
    root = Path(args.root) / dataset
    trials = args.trials or (2 if args.smoke else None)
    # smoke tuned/ files must not land in conf/tuned/: they would silently change every later synthetic run
    tuned_dir = Path(args.tuned_dir) if args.tuned_dir else (root / "conf" if args.smoke else None)
    budget = "equal" if args.smoke else args.budget
    if args.epochs_per_row is not None and (budget != "equal" or args.epochs_per_row < 1):
        parser.error("--epochs-per-row takes a positive number of epochs, with --budget equal (the paper's "
                     "protocol runs every point of every grid)")
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: use a positive number of trials at once")
    if any(o.startswith(("hydra/launcher=", "hydra.sweeper.n_jobs=")) for o in extra):
        parser.error("trials in parallel: use --jobs N (it sets the launcher and each study's n_jobs, and runs the "
                     "final runs N at a time), not hydra/launcher or hydra.sweeper.n_jobs")
    if args.jobs > 1 and importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        parser.error(f"--jobs {args.jobs} runs trials through hydra/launcher=local_parallel, which needs the cluster "
                     "extra: pip install -e '.[cluster]'")
    try:
        table1(dataset, args.backbone, balancers, [int(s) for s in args.seeds.split(",")], root, budget,
               trials, extra, tuned_dir, args.sample_seed, args.epochs_per_row, args.jobs)
    except subprocess.CalledProcessError as err:  # the run's own error is printed above; no traceback here
        print(f"table1: stopped: the last `+ python -m mbrec ...` above exited {err.returncode} (its error is above "
              "it); re-running this command continues where it stopped", file=sys.stderr)
        raise SystemExit(err.returncode) from None

if __name__ == "__main__":
    main()
