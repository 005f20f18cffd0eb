"""The Table 1 driver: tune every row of a (dataset, backbone) cell on validation, then run every row x
seed at its tuned settings. ``python -m mbrec.sweep table1 --dataset D --backbone B``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mbrec.balancers import ROWS, paper_rows
from mbrec.config import conf_dir
from mbrec.defaults import BASE_ROW
from mbrec.record import Tag
from mbrec.sweep.tuned import read_study, study_budget, write_tuned

log = logging.getLogger(__name__)

SMOKE = ["scale=smoke"]  # conf/scale/smoke.yaml: tiny synthetic data, 2 epochs
EQUAL_TRIALS = 20  # trials per row under --budget equal (the paper's lr x L2 grid has 16 points)


def _mbrec(args: list[str]) -> None:
    import subprocess
    import sys

    print("+ python -m mbrec " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "mbrec", *args], check=True)


def study_space(balancer: str, budget: str, search: str, trials: int | None) -> tuple[list[str], str]:
    """The overrides that set up one row's study, and its label.

    ``equal`` (default): TPE with the same number of trials for every row, each over lr x L2 (the
    paper's value sets) and the balancer's own ``search_space``. ``paper``: the paper's grids as they
    are (lr x L2 for every row, plus λ_g x λ_kd for CKD: unequal budgets), or TPE with ``search=tpe``."""
    if budget == "equal":
        own = [f"balancer.{k}=choice({','.join(map(str, v))})" for k, v in ROWS[balancer].search_space.items()]
        return ["hparams_search=tpe", f"hydra.sweeper.n_trials={trials or EQUAL_TRIALS}", *own], "equal-tpe"
    space = f"{balancer}_{search}" if (conf_dir() / "hparams_search" / f"{balancer}_{search}.yaml").is_file() \
        else ("paper_grid" if search == "grid" else search)
    return [f"hparams_search={space}", *([f"hydra.sweeper.n_trials={trials}"] if trials else [])], f"paper-{search}"


def table1(dataset: str, backbone: str, balancers: list[str], seeds: list[int], root: Path,
           budget: str = "equal", search: str = "grid", trials: int | None = None,
           extra: list[str] | None = None, tuned_conf: Path | None = None) -> None:
    """Tune every (dataset, backbone, balancer) row on validation, write its tuned/ file (with the
    study's budget as MLflow tags), then run all rows x seeds at the tuned settings in one multirun
    (MLflow tag mbrec_experiment=table1).

    ``tuned_conf``: where ``tuned/<cell>.yaml`` goes; default the repository's ``conf/`` (every later
    run of the cell picks it up); another folder is added to the final run's Hydra search path only."""
    extra = list(extra or [])
    final_extra = [] if tuned_conf is None else [f"hydra.searchpath=[file://{Path(tuned_conf).resolve()}]"]
    for balancer in balancers:
        cell = f"{dataset}_{backbone}_{balancer}"
        space, label = study_space(balancer, budget, search, trials)
        sweep_dir = root / "tune" / cell
        fixed: dict[str, Any] = {}
        base_dir = root / "tune" / f"{dataset}_{backbone}_{BASE_ROW}"
        if balancer != BASE_ROW and (base_dir / "optimization_results.yaml").is_file():
            fixed = ROWS[balancer].settings_for(read_study(base_dir)[2])
            if fixed:
                print(f"{balancer}: fixed for the study from the base row's tuned point: {fixed}")
        _mbrec(["-m", *space[:1], f"dataset={dataset}", f"backbone={backbone}", f"balancer={balancer}",
                f"hydra.sweep.dir={sweep_dir}", *extra, *space[1:], *(f"++{k}={v}" for k, v in fixed.items())])
        spent = study_budget(sweep_dir)
        tags = {Tag.BUDGET_SEARCH: label, Tag.BUDGET_TRIALS: spent["trials"], Tag.BUDGET_EPOCHS: spent["epochs"]}
        print(f"tuned: {write_tuned(sweep_dir, cell, tuned_conf, fixed, tags)} ({label}, {spent['trials']} trials, "
              f"{spent['epochs']} epochs)")
    _mbrec(["-m", f"dataset={dataset}", f"backbone={backbone}", f"balancer={','.join(balancers)}",
            f"seed={','.join(map(str, seeds))}", f"+mlflow.tags.{Tag.PRESET}=table1",
            f"hydra.sweep.dir={root / 'final'}", *final_extra, *extra])


def main(argv: list[str] | None = None) -> None:
    """``python -m mbrec.sweep table1 --dataset D --backbone B [--smoke] [extra overrides]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mbrec.sweep")
    parser.add_argument("command", choices=["table1"])
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--backbone", default="vbpr")
    parser.add_argument("--balancers", default=",".join(paper_rows()),
                        help="comma list (rows of Table 1); default: every registered balancer, in report order")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--budget", choices=["equal", "paper"], default="equal",
                        help="equal: the same number of TPE trials for every row, each over lr, L2 and its own "
                        "hyper-parameters (default) | paper: the paper's grids, unequal (CKD searches 16x more)")
    parser.add_argument("--search", choices=["grid", "tpe"], default="grid", help="--budget paper: grid or TPE")
    parser.add_argument("--trials", type=int, help=f"trials per row (equal: default {EQUAL_TRIALS}; paper: all "
                        "grid points / the preset's TPE trials)")
    parser.add_argument("--root", default="multirun/table1", help="sweep dirs go under here")
    parser.add_argument("--tuned-dir", help="write tuned/<cell>.yaml under this folder instead of the "
                        "repository's conf/ (used by this table only; --smoke: <root>/conf)")
    parser.add_argument("--smoke", action="store_true", help="tiny data and budgets, 2 TPE trials (CI)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_intermixed_args(argv)  # overrides may follow the options
    extra = (SMOKE if args.smoke else []) + args.overrides
    balancers = [b for b in args.balancers.split(",")
                 if b in ROWS and (conf_dir() / "balancer" / f"{b}.yaml").is_file()]
    if missing := set(args.balancers.split(",")) - set(balancers):
        log.warning("skipping balancers without a registered class or conf/balancer/<name>.yaml: %s", sorted(missing))
        print(f"skipping balancers that are not installed: {sorted(missing)}")
    dataset = "synthetic" if args.smoke else args.dataset
    root = Path(args.root) / dataset
    trials = args.trials or (2 if args.smoke else None)
    # smoke tuned/ files must not land in conf/tuned/: they would silently change every later synthetic run
    tuned_dir = Path(args.tuned_dir) if args.tuned_dir else (root / "conf" if args.smoke else None)
    table1(dataset, args.backbone, balancers, [int(s) for s in args.seeds.split(",")], root, args.budget,
           "tpe" if args.smoke else args.search, trials, extra, tuned_dir)


if __name__ == "__main__":
    main()
