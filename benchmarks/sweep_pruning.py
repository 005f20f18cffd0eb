"""What pruning and parallel workers buy on one paper-grid cell (not part of ``make bench``: minutes).

    OMP_NUM_THREADS=1 python benchmarks/sweep_pruning.py [--out DIR] [--variants none,median,median-2w] [overrides]

Each variant runs ``python -m mbrec -m hparams_search=paper_grid`` into its own journal, cache and MLflow
store, and reports: wall time, total epochs trained (sum over trials of the last validated epoch),
trials pruned, the selected grid point and the test Recall@20 of that point's run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "none": ["hydra.sweeper.pruner=none"],
    "median": ["hydra.sweeper.pruner=median"],
    "median-2w": ["hydra.sweeper.pruner=median", "hydra/launcher=local_parallel", "hydra.sweeper.n_jobs=2",
                  "hydra.launcher.cpus_per_task=1"],
    "none-2w": ["hydra.sweeper.pruner=none", "hydra/launcher=local_parallel", "hydra.sweeper.n_jobs=2",
                "hydra.launcher.cpus_per_task=1"],
}


def run(variant: str, out: Path, extra: list[str]) -> dict:
    import optuna

    from mbrec import pruning

    root = out / variant
    journal = root / "study.journal"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MBREC_CACHE": str(root / "cache"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    cmd = [sys.executable, "-m", "mbrec", "-m", "hparams_search=paper_grid", f"hydra.sweeper.storage={journal}",
           f"hydra.sweep.dir={root / 'sweep'}", "skip_finished=false", *VARIANTS[variant], *extra]
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(root / "sweep.log", "w") as log:
        subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    wall = time.perf_counter() - t0
    storage = pruning.open_storage(str(journal))
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    best = study.best_trial
    test = None
    for path in (root / "sweep").glob("*/results.json"):
        res = json.loads(path.read_text())
        if str(res["config"]["mlflow"]["tags"].get("optuna_trial")) == str(best.number):
            test = res["test"]["recall@20"]
    states = [t.state.name for t in study.trials]
    return {"variant": variant, "wall_s": round(wall, 1), "trials": len(states), "pruned": states.count("PRUNED"),
            "epochs": sum(max(t.intermediate_values, default=0) for t in study.trials),
            "best_params": best.params, "best_valid": round(best.value, 4),
            "test_recall@20": None if test is None else round(test, 4)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="/tmp/mbrec-sweep-bench")
    parser.add_argument("--variants", default="none,median,median-2w")
    parser.add_argument("overrides", nargs="*", help="e.g. train.max_epochs=30 train.eval_every=2")
    args = parser.parse_args()
    for variant in args.variants.split(","):
        print(json.dumps(run(variant, Path(args.out), args.overrides)), flush=True)


if __name__ == "__main__":
    main()
