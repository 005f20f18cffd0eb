"""What a run prints: log lines routed around the progress bar, one-message errors, and the summary a
multirun ends with (a Hydra callback, ``conf/config.yaml: hydra.callbacks.summary``).

The trainer's tqdm bar shows on a terminal only (``disable=None``); every validation is also one log
line (``mbrec.training.trainer``), so a redirected or piped run prints a line per validation instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Iterator

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

#: the log format of ``python -m mbrec`` (Hydra's default job logging), also used by ``mbrec.train``
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


@contextlib.contextmanager
def console() -> Iterator[None]:
    """Route the console log handlers through tqdm while training, so a log line is printed above the
    progress bar instead of into it."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    # only loggers that print: tqdm adds its handler to every logger it is given
    loggers = [lg for lg in (logging.getLogger(), logging.getLogger("mbrec")) if any(_prints(h) for h in lg.handlers)]
    with logging_redirect_tqdm(loggers=loggers):
        yield


def _prints(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (sys.stdout, sys.stderr)


def report_error(err: BaseException) -> None:
    """One message on stderr (``error: ...``, no traceback) and the same line in the run's log files."""
    print(f"error: {err}", file=sys.stderr, flush=True)
    record = logging.LogRecord("mbrec", logging.ERROR, __file__, 0, "%s", (err,), None)
    for handler in logging.getLogger().handlers + logging.getLogger("mbrec").handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


# ----------------------------------------------------------------------------------- sweep summary
def _trial(folder: Path) -> dict[str, Any]:
    """One trial folder of a sweep: its overrides and, if it finished, its results.json (a Results)."""
    import yaml

    from mbrec.record import Results

    overrides_file = folder / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    results_file = folder / "results.json"
    try:
        results = Results.from_json(json.loads(results_file.read_text())) if results_file.is_file() else None
    except (OSError, ValueError, KeyError, TypeError):
        results = None
    return {"folder": folder, "overrides": overrides or [], "results": results}


def report_command(config: DictConfig, parent_run_id: str | None) -> str:
    """The ``python -m mbrec.report`` command for this sweep's runs: a preset's own table, else the
    runs of this sweep (its MLflow parent run)."""
    from mbrec.defaults import report_of_preset, tracking_uri
    from mbrec.record import Tag

    what = report_of_preset(str((config.mlflow.get("tags") or {}).get(Tag.PRESET) or ""))
    if what:
        cmd = f"python -m mbrec.report {what}"
    elif parent_run_id:
        cmd = f"python -m mbrec.report table1 --runs \"tags.mlflow.parentRunId = '{parent_run_id}'\""
    else:
        return ""
    uri = str(config.mlflow.tracking_uri)
    return cmd + ("" if uri == tracking_uri() else f" --tracking-uri '{uri}'") + " --out reports"


def summarise_sweep(config: DictConfig) -> str:
    """The text a multirun ends with: trials run and finished, the best one (value and overrides), where
    the results are, the MLflow parent run and the report command."""
    from mbrec.services.tracking import parent_run_id

    sweep_dir = Path(str(config.hydra.sweep.dir))
    trials = [_trial(d) for d in sorted(sweep_dir.iterdir(), key=lambda p: p.name) if d.is_dir()] if sweep_dir.is_dir() else []
    trials = [t for t in trials if (t["folder"] / ".hydra").is_dir()]
    done = [t for t in trials if t["results"] is not None and t["results"].best_valid_value is not None]
    metric = done[0]["results"].metric or "objective" if done else str(config.train.metric)
    mode = str(config.train.get("metric_mode", "max"))
    lines = [f"Sweep done: {len(trials)} trials, {len(done)} finished"
             + (f", {len(trials) - len(done)} without results" if len(trials) > len(done) else "")
             + f" — {sweep_dir}"]
    if done:
        pick = max if mode == "max" else min
        best = pick(done, key=lambda t: t["results"].best_valid_value)
        res = best["results"]
        test = res.test.get(metric)
        # the point: the overrides that vary between trials (the ones all trials share say nothing)
        common = set.intersection(*(set(t["overrides"]) for t in trials)) if len(trials) > 1 else set()
        point = [o for o in best["overrides"] if o not in common] or best["overrides"]
        lines.append(f"best valid {metric} = {res.best_valid_value:.4f}"
                     + (f" (test {test:.4f})" if test is not None else "")
                     + f" at {' '.join(point) or '(no overrides)'}")
        lines.append(f"results: {best['folder'] / 'results.json'} (each trial: {sweep_dir}/<trial>/results.json)")
    optuna = sweep_dir / "optimization_results.yaml"
    if optuna.is_file():
        lines.append(f"study: {optuna}")
    parent = parent_run_id(sweep_dir) if config.mlflow.enabled else None
    if parent:
        lines.append(f"MLflow: parent run {parent} in experiment '{config.mlflow.experiment}' ({config.mlflow.tracking_uri}); "
                     "browse with `make ui`")
    command = report_command(config, parent)
    if command and done:
        lines.append(f"report: {command}")
    return "\n".join(lines)


class SweepSummary(Callback):
    """Print :func:`summarise_sweep` when a multirun ends (and log it)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            text = summarise_sweep(config)
        except Exception as err:  # noqa: BLE001 - a summary never turns a finished sweep into a failure
            log.warning("could not summarise the sweep (%s)", err)
            return
        print("\n" + text, flush=True)
