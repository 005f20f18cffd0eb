"""``python -m mbrec [overrides]``: compose conf/ with Hydra and run the pipeline (``--help``: every group
and key, one line each).

A ConfigError or DataError ends the run (or the whole multirun) with its message alone, exit status 2;
a diverged run (DivergedError) exits with status 3; ``HYDRA_FULL_ERROR=1`` shows the traceback. In an
Optuna study a diverged trial is closed as FAILED in MLflow and the study goes on. Log lines go around
the progress bar."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mbrec.cli_help import register_help
from mbrec.config import hydra_config_path, register_schemas

register_schemas()  # before Hydra composes: the schemas of the root and of every backbone/balancer
register_help()     # ${mbrec.help:...}, the --help text (conf/hydra/help/mbrec.yaml)


@hydra.main(version_base="1.3", config_path=hydra_config_path(), config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from mbrec.errors import ConfigError, DataError, DivergedError, Interrupted, place_problem
    from mbrec.experiment import run
    from mbrec.progress import console, report_error

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    sweep_dir = hydra_cfg.sweep.dir if multirun else None
    try:
        with console():
            return run(cfg, hydra_cfg.runtime.output_dir, multirun=multirun, sweep_dir=sweep_dir,
                       choices=dict(hydra_cfg.runtime.choices), overrides=list(hydra_cfg.overrides.task))
    except (ConfigError, DataError) as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        report_error(err)
        if multirun:  # the other trials would fail the same way: stop the sweep, close its parent run
            _fail_sweep_parent(cfg, sweep_dir)
        sys.exit(2)
    except KeyboardInterrupt as stop:  # Ctrl-C: one line, runs KILLED, the checkpoints stay for the re-run
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"\n{stop if isinstance(stop, Interrupted) else Interrupted()}", file=sys.stderr, flush=True)
        if multirun:
            _fail_sweep_parent(cfg, sweep_dir, "KILLED")
        sys.exit(130)
    except DivergedError:
        # The pipeline logged the one-line message and closed the MLflow run as FAILED (mbrec.failure=diverged).
        # A study gets the worst value and goes on (the Optuna sweeper aborts on a raised trial, or crashes
        # when the grid's last point fails); any other multirun stops; a single run exits with code 3.
        worst = worst_value(hydra_cfg.sweeper) if multirun else None
        if worst is not None:
            return worst
        if multirun or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.exit(3)
    except Exception as err:  # noqa: BLE001 - a read-only or full place is one line, anything else a traceback
        line = place_problem(err, str(cfg.mlflow.tracking_uri))
        if line is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        report_error(ConfigError(line))
        if multirun:
            _fail_sweep_parent(cfg, sweep_dir)
        sys.exit(2)


def worst_value(sweeper: DictConfig | None) -> float | None:
    """The worst objective for a study's single ``direction`` (-inf to maximize, +inf to minimize); None
    for a sweeper without one (Hydra's basic sweeper) or with several objectives."""
    direction = sweeper.get("direction") if sweeper is not None else None
    if direction is None or not isinstance(direction, str) and not hasattr(direction, "name"):
        return None
    name = str(getattr(direction, "name", direction)).lower()
    return float("-inf") if name == "maximize" else float("inf") if name == "minimize" else None


def _fail_sweep_parent(cfg: DictConfig, sweep_dir: str | None, status: str = "FAILED") -> None:
    """Mark the sweep's MLflow parent run FAILED (or KILLED: the callback that would close it never runs;
    the same command adopts it again)."""
    from mbrec.services.tracking import client_for, close_parent, parent_run_id

    run_id = parent_run_id(sweep_dir)
    if run_id and sweep_dir and cfg.mlflow.enabled:
        try:  # a parent no trial trained under is deleted, not left empty
            close_parent(client_for(str(cfg.mlflow.tracking_uri)), run_id, Path(sweep_dir), status)
        except Exception:  # noqa: BLE001 - the error the user must see is the one already printed
            pass


if __name__ == "__main__":
    main()
