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


def report_command(config: DictConfig, sweep_dir: str | Path | None) -> str:
    """The ``python -m mbrec.report`` command for this sweep's runs: a preset's own table, else every run
    of this sweep folder, trained or replayed (the sweep's marker tag, set by ``mbrec.sweep.parent``)."""
    from mbrec.defaults import report_of_preset, tracking_uri
    from mbrec.record import Tag
    from mbrec.services.tracking import sweep_marker

    what = report_of_preset(str((config.mlflow.get("tags") or {}).get(Tag.PRESET) or ""))
    if what:
        cmd = f"python -m mbrec.report {what}"
    elif sweep_dir is not None:
        cmd = f"python -m mbrec.report table1 --runs \"tags.{sweep_marker(sweep_dir)} = 'true'\""
    else:
        return ""
    uri = str(config.mlflow.tracking_uri)
    return cmd + ("" if uri == tracking_uri() else f" --tracking-uri '{uri}'") + " --out reports"


def _says_nothing(override: str) -> bool:
    """An override that changes nothing computed (MLflow tags, paths, device, ...) or is the seed."""
    from mbrec.defaults import non_semantic_dotted

    key = override.lstrip("+~").partition("=")[0]
    return key == "seed" or any(key == k or key.startswith(k + ".") for k in non_semantic_dotted())


def _mean_std(values: list[float]) -> str:
    import statistics

    return f"{statistics.mean(values):.4f}" + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")


def _outcome(trials: list[dict[str, Any]], done: list[dict[str, Any]], metric: str, mode: str) -> tuple[str, Path | None]:
    """The result line, and the results.json it is about (None for several runs): over seeds (mean ± std,
    never a "best" seed) when the sweep varies only seeds, else the best point (its runs averaged) with
    the overrides that set it apart."""
    common = set.intersection(*(set(t["overrides"]) for t in trials)) if len(trials) > 1 else set()
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for t in done:
        point = tuple(o for o in t["overrides"] if o not in common and not _says_nothing(o))
        groups.setdefault(point, []).append(t)

    def line(group: list[dict[str, Any]]) -> str:
        valid = [t["results"].best_valid_value for t in group]
        test = [t["results"].test[metric] for t in group if metric in t["results"].test]
        runs = f" over {len(group)} runs" if len(group) > 1 else ""
        return f"valid {metric} = {_mean_std(valid)}" + (f" (test {_mean_std(test)})" if test else "") + runs

    def where(group: list[dict[str, Any]]) -> Path | None:
        return group[0]["folder"] / "results.json" if len(group) == 1 else None

    if len(groups) == 1:
        group = next(iter(groups.values()))
        return line(group), where(group)
    sign = 1.0 if mode == "max" else -1.0
    point, group = max(groups.items(), key=lambda kv: sign * sum(t["results"].best_valid_value for t in kv[1]) / len(kv[1]))
    return f"best {line(group)} at {' '.join(point) or '(no overrides)'}", where(group)


def summarise_sweep(config: DictConfig) -> str:
    """The text a multirun ends with: trials run and finished, the outcome (mean ± std over seeds, or the
    best point), where the results are, the MLflow parent run and the report command."""
    from mbrec.services.tracking import parent_run_id

    sweep_dir = Path(str(config.hydra.sweep.dir))
    trials = [_trial(d) for d in sorted(sweep_dir.iterdir(), key=lambda p: p.name) if d.is_dir()] if sweep_dir.is_dir() else []
    trials = [t for t in trials if (t["folder"] / ".hydra").is_dir()]
    done = [t for t in trials if t["results"] is not None and t["results"].best_valid_value is not None]
    metric = done[0]["results"].metric or "objective" if done else str(config.train.metric)
    mode = str(config.train.get("metric_mode", "max"))
    replayed = sum(t["results"].replayed_from is not None for t in done)
    lines = [f"Sweep done: {len(trials)} trials, {len(done)} finished"
             + (f" ({replayed} replayed)" if replayed else "")
             + (f", {len(trials) - len(done)} without results" if len(trials) > len(done) else "")
             + f" — {sweep_dir}"]
    if done:
        text, results = _outcome(trials, done, metric, mode)
        lines.append(text)
        lines.append(f"results: {results} (each trial: {sweep_dir}/<trial>/results.json)" if results
                     else f"results: {sweep_dir}/<trial>/results.json")
    optuna = sweep_dir / "optimization_results.yaml"
    if optuna.is_file():
        lines.append(f"study: {optuna}")
    parent = parent_run_id(sweep_dir) if config.mlflow.enabled else None
    if parent and _trained_under(config, parent):
        lines.append(f"MLflow: parent run {parent} in experiment '{config.mlflow.experiment}' ({config.mlflow.tracking_uri}); "
                     "browse with `make ui`")
    command = report_command(config, sweep_dir if config.mlflow.enabled else None)
    if command and done:
        lines.append(f"report: {command}")
    return "\n".join(lines)


def _trained_under(config: DictConfig, parent: str) -> bool:
    """Whether the sweep's parent run has a child (a parent without one is deleted at the end)."""
    from mbrec.services.tracking import client_for, has_children

    try:
        return has_children(client_for(str(config.mlflow.tracking_uri)), parent)
    except Exception:  # noqa: BLE001 - only the summary line is at stake
        return True


class SweepSummary(Callback):
    """Print :func:`summarise_sweep` when a multirun ends (and log it)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            text = summarise_sweep(config)
        except Exception as err:  # noqa: BLE001 - a summary never turns a finished sweep into a failure
            log.warning("could not summarise the sweep (%s)", err)
            return
        print("\n" + text, flush=True)
