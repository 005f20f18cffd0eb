"""The sweep loop of the ``mbrec_optuna`` sweeper (imported lazily: Hydra's plugin scan skips ``_`` modules).

One study per (study_name, fingerprint of what the trials share): its trials live in the storage, so
a re-run of the same command asks only for what is missing. Each trial is one Hydra job; the job
records its own outcome in the storage (:func:`.trial.trial_scope`), the sweeper only fills in
the outcome of jobs that could not.

This package imports nothing of the task it sweeps (mbrec): the task talks to the sweeper through
:mod:`.trial`. Optuna and Hydra are used through their public API, and the few calls beyond it go
through :mod:`._compat`.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import os
import queue
import re
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from . import _compat
from . import _trial as protocol
from ._errors import SweepError, SweepFailed
from ._space import (
    describe_space,
    diff,
    fingerprint,
    fixed_settings,
    hydra_quote,
    in_space,
    param_key,
    parse_space,
    render,
)

log = logging.getLogger(__name__)

DONE = (TrialState.COMPLETE, TrialState.PRUNED)


class _HideTrialSpec(logging.Filter):
    """Drops the trial spec override (``++hydra.job.env_set.MBREC_OPTUNA_TRIAL='{...}'``, hundreds of
    characters of JSON) from what the launchers log about a job; the job still gets it."""

    PATTERN = re.compile(rf" ?\+\+hydra\.job\.env_set\.{protocol.ENV}='[^']*'")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and protocol.ENV in record.getMessage():
            record.msg, record.args = self.PATTERN.sub("", record.getMessage()), ()
        return True


def _hide_trial_spec_in_logs(launcher: Any) -> None:
    """Put :class:`_HideTrialSpec` on the launcher's module logger (where it logs each job's overrides;
    Hydra reconfigures the handlers between jobs, the logger's filters stay)."""
    logger = logging.getLogger(type(launcher).__module__)
    if not any(isinstance(f, _HideTrialSpec) for f in logger.filters):
        logger.addFilter(_HideTrialSpec())


# ---------------------------------------------------------------- the job wrapper (runs in the trial process)
class TrialTask:
    """Wraps the task function: the job runs its Optuna trial (from ``MBREC_OPTUNA_TRIAL``, see
    :mod:`.trial`) and records its outcome; a picklable callable, so submitit and Ray ship it to remote workers."""

    def __init__(self, task_function: TaskFunction) -> None:
        self.task_function = task_function

    def __call__(self, cfg: DictConfig) -> Any:
        with protocol.trial_scope(protocol.TrialSpec.from_env()) as trial:
            value = self.task_function(cfg)
            if trial is not None:
                try:
                    objective = float(value)
                except (TypeError, ValueError):
                    raise TypeError(f"the task returned {value!r}; the sweep objective must be a number") from None
                if objective != objective:
                    raise ValueError("the task returned NaN as the sweep objective")
                trial.finish(TrialState.COMPLETE, objective)
            return value


# ---------------------------------------------------------------- the sweeper
class SweeperImpl:
    def __init__(self, sampler: Any, direction: str, study_name: str, storage: str | None, n_trials: int,
                 n_jobs: int, max_failure_rate: float, max_cost: float | None, pruner: str, pruners: Any, fingerprint_ignore: list[str],
                 heartbeat_seconds: float, stale_after_seconds: float, params: Any) -> None:
        if direction not in ("maximize", "minimize"):
            raise SweepError(f"hydra.sweeper.direction={direction!r}: use maximize or minimize")
        if not 0.0 <= max_failure_rate <= 1.0:
            raise SweepError(f"hydra.sweeper.max_failure_rate={max_failure_rate}: use a value in [0, 1]")
        if n_jobs < 1 or n_trials < 1:
            raise SweepError("hydra.sweeper.n_jobs and hydra.sweeper.n_trials must be >= 1")
        if max_cost is not None and not float(max_cost) > 0:
            raise SweepError(f"hydra.sweeper.max_cost={max_cost}: use a positive number, or null for no cap")
        self.max_cost = None if max_cost is None else float(max_cost)
        self.cap_said = False  # the "max_cost spent" line is printed once
        self.sampler, self.direction, self.base_name = sampler, direction, str(study_name)
        self.storage_arg = None if storage in (None, "", "memory", "null") else str(storage)
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.pruner = str(pruner)
        self.pruner_settings = dict(OmegaConf.to_container(pruners[self.pruner], resolve=True)) \
            if pruners is not None and self.pruner in pruners else {}
        protocol.make_pruner(self.pruner, self.pruner_settings)  # fail early on a bad name/setting
        self.ignore = list(fingerprint_ignore or [])
        self.heartbeat, self.stale_after = float(heartbeat_seconds), float(stale_after_seconds)
        self.params = params
        self._lock = threading.RLock()
        for problem in _compat.unchecked_versions():
            log.warning("mbrec_optuna sweeper: %s; its _compat module was not checked against this version", problem)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=TrialTask(task_function))
        _hide_trial_spec_in_logs(self.launcher)

    # ------------------------------------------------------------ study
    def _storage_url(self) -> str | None:
        if self.storage_arg is None:
            return None
        if self.storage_arg.endswith(".journal"):
            return str(Path(self.storage_arg).expanduser().resolve())  # workers may start elsewhere
        return self.storage_arg

    def _open_study(self, space: dict[str, BaseDistribution], grid: bool) -> optuna.Study:
        searched = set(space)
        settings = fixed_settings(self.config, searched, self.ignore)
        fp = fingerprint(settings, space, self.direction)
        self.study_name = f"{self.base_name}-{fp}"
        self.storage_url = self._storage_url()
        self.storage = protocol.open_storage(self.storage_url)
        if self.storage_url is None and type(self.launcher).__name__ != "BasicLauncher":
            raise SweepError("hydra.sweeper.storage=null keeps the study in this process only; with "
                             f"{type(self.launcher).__name__} the trials run elsewhere: set a .journal path or a URL")
        try:
            return self._open_study_in(space, grid, settings)
        except SweepError:
            raise
        except Exception as err:  # noqa: BLE001 - a journal that replays but cannot hold a study is damaged
            if self.storage_url is None or not self.storage_url.endswith(".journal"):
                raise
            raise SweepError(protocol.journal_damaged(self.storage_url, err)) from None

    @contextlib.contextmanager
    def _journal_checked(self) -> Iterator[None]:
        """A journal damaged while the sweep runs (by another writer, a torn copy, a disk) surfaces as
        whatever Optuna's replay raises; if the journal no longer replays from the start, say so in one
        line naming it (any other error is raised as it is)."""
        try:
            yield
        except (ValueError, TypeError, AssertionError, OSError):
            if self.storage_url is None or not self.storage_url.endswith(".journal"):
                raise
            protocol.open_storage(self.storage_url)  # replays it anew: one SweepError line if it is damaged
            raise

    def _open_study_in(self, space: dict[str, BaseDistribution], grid: bool, settings: dict[str, Any]) -> optuna.Study:
        existing = {s.study_name: s for s in optuna.get_all_study_summaries(self.storage, include_best_trial=False)}
        sampler = self.sampler({k: list(d.choices) for k, d in space.items()}) if grid else \
            self._reseeded(existing[self.study_name].n_trials if self.study_name in existing else 0)
        if self.study_name not in existing:
            for other in (s for n, s in existing.items() if n.startswith(self.base_name + "-")):
                log.info("new study %s: study %s in the same storage ran with other settings (%s)",
                         self.study_name, other.study_name,
                         diff(other.user_attrs.get("mbrec.settings", {}), settings) or "search space or direction")
        study = optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=sampler,
                                    direction=self.direction, load_if_exists=True)
        self.study_id = _compat.study_id(self.storage, self.study_name)
        if self.study_name not in existing:
            study.set_user_attr("mbrec.settings", settings)
            study.set_user_attr("mbrec.space", {k: optuna.distributions.distribution_to_json(d) for k, d in space.items()})
        # tells go through a handle with a neutral sampler (the grid sampler's hook needs Study.optimize)
        self.teller = optuna.load_study(study_name=self.study_name, storage=self.storage,
                                        sampler=optuna.samplers.RandomSampler())
        return study

    def _reseeded(self, n_existing: int) -> Any:
        """The sampler, its seed moved on by the trials the study already has: a resumed seeded TPE or
        random sampler would otherwise start its random draws again and repeat the first trials' points."""
        cfg = OmegaConf.select(self.config, "hydra.sweeper.sampler")
        if not n_existing or cfg is None or cfg.get("seed") is None:
            return self.sampler
        return instantiate(OmegaConf.merge(cfg, {"seed": int(cfg.seed) + n_existing}))

    def _trials(self, study: optuna.Study, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return _compat.trials(study, states)

    def _trial_id(self, number: int) -> int:
        return _compat.trial_id(self.storage, self.study_id, number)

    def _recover(self, study: optuna.Study, space: dict[str, BaseDistribution]) -> None:
        """Trials left RUNNING by a dead process become FAIL; every failed point not yet tried again is
        queued once more (it resumes from its checkpoint, if the task keeps one)."""
        now = time.time()
        for t in self._trials(study, (TrialState.RUNNING,)):
            attrs = t.system_attrs
            beat = attrs.get(protocol.HEARTBEAT_ATTR) or (t.datetime_start.timestamp() if t.datetime_start else now)
            owners_dead = protocol.is_dead(attrs.get(protocol.SWEEPER_ATTR)) and (
                protocol.WORKER_ATTR not in attrs or protocol.is_dead(attrs[protocol.WORKER_ATTR]))
            if owners_dead or now - beat > self.stale_after:
                why = "its processes are gone" if owners_dead else f"no heartbeat for {now - beat:.0f}s"
                log.warning("trial %d %s was left running (%s): marking it failed, to be retried", t.number, t.params, why)
                self.storage.set_trial_system_attr(self._trial_id(t.number), "mbrec:stale", why)
                self.teller.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        taken = {param_key(t.params) for t in self._trials(
            study, (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING))}
        for t in self._trials(study, (TrialState.FAIL,)):
            key = param_key(t.params)
            if key not in taken and _compat.sampled_from(t, space):
                log.info("retrying failed trial %d: %s", t.number, t.params)
                study.enqueue_trial(t.params, user_attrs={"mbrec.retry_of": t.number})
                taken.add(key)

    def spent(self, study: optuna.Study) -> float:
        """The costs the study's ended trials recorded (:func:`trial.record_cost`)."""
        ended = self._trials(study, (*DONE, TrialState.FAIL))
        return sum(float(t.user_attrs.get(protocol.COST_ATTR, 0.0)) for t in ended)

    def _to_launch(self, study: optuna.Study, grid_points: list[str] | None) -> int:
        """How many more trials this sweep should start now (none once ``max_cost`` is spent)."""
        if self.max_cost is not None and (spent := self.spent(study)) >= self.max_cost:
            if not self.cap_said:
                self.cap_said = True
                log.info("study %s: %g of hydra.sweeper.max_cost=%g spent: no more trials",
                         self.study_name, spent, self.max_cost)
            return 0
        if grid_points is not None:
            busy = {param_key(t.params) for t in self._trials(study, (*DONE, TrialState.RUNNING))}
            return sum(p not in busy for p in grid_points)
        return self.n_trials - len(self._trials(study, (*DONE, TrialState.RUNNING)))

    # ------------------------------------------------------------ one trial
    def _ask(self, study: optuna.Study, space: dict[str, BaseDistribution], keys: dict[str, str],
             fixed: list[str]) -> tuple[optuna.trial.Trial, list[str], int]:
        with self._lock:
            trial = study.ask(fixed_distributions=space)
            trial_id = self._trial_id(trial.number)
            self.storage.set_trial_system_attr(trial_id, protocol.SWEEPER_ATTR, protocol.process_id())
            self.storage.set_trial_system_attr(trial_id, protocol.HEARTBEAT_ATTR, time.time())
            spec = protocol.TrialSpec(storage=self.storage_url, study=self.study_name, number=trial.number,
                                     pruner=self.pruner, pruner_settings=self.pruner_settings,
                                     heartbeat_seconds=self.heartbeat)
            overrides = [f"{keys[k]}={render(v)}" for k, v in trial.params.items()] + fixed
            overrides.append(f"++hydra.job.env_set.{protocol.ENV}={hydra_quote(spec.to_env())}")
            if isinstance(OmegaConf.select(self.config, "mlflow.tags"), DictConfig):  # mbrec: find the trial in MLflow
                overrides += [f"++mlflow.tags.optuna_study={render(self.study_name)}",
                              f"++mlflow.tags.optuna_trial={trial.number}"]
            # the job number is the trial number: a re-run in the same sweep folder (the same command)
            # never writes a trial into another trial's folder
            idx = trial.number
            self._in_flight[trial_id] = trial.number
        return trial, overrides, idx

    def _launch(self, overrides: list[str], idx: int) -> JobReturn | BaseException:
        try:
            return self.launcher.launch([overrides], initial_job_idx=idx)[0]
        except Exception as err:  # noqa: BLE001 - the launcher itself failed: the trial failed
            return err

    def _settle(self, trial: optuna.trial.Trial, ret: JobReturn | BaseException) -> tuple[TrialState, BaseException | None]:
        """The trial's final state; record it if the job could not (crash before or after the task)."""
        with self._lock:
            trial_id = self._trial_id(trial.number)
            self._in_flight.pop(trial_id, None)
            error = ret if isinstance(ret, BaseException) else _compat.job_error(ret)
            frozen = self.storage.get_trial(trial_id)
            if frozen.state == TrialState.RUNNING:
                if error is None:
                    try:
                        self.teller.tell(trial.number, float(ret.return_value), skip_if_finished=True)
                    except (TypeError, ValueError) as err:
                        error = err
                        self.teller.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
                else:
                    state = TrialState.PRUNED if isinstance(error, optuna.TrialPruned) else TrialState.FAIL
                    self.teller.tell(trial.number, state=state, skip_if_finished=True)
                frozen = self.storage.get_trial(trial_id)
            state = frozen.state
            shown = ", ".join(f"{k}={v}" for k, v in trial.params.items())
            if state == TrialState.COMPLETE:
                log.info("trial %d [%s]: %.6g", trial.number, shown, frozen.value)
            elif state == TrialState.PRUNED:
                last = max(frozen.intermediate_values) if frozen.intermediate_values else None
                log.info("trial %d [%s]: pruned at step %s", trial.number, shown, last)
            else:
                log.warning("trial %d [%s]: %s (%s)", trial.number, shown, state.name, error)
            return state, (error if state == TrialState.FAIL else None)

    def _beat(self, stop: threading.Event) -> None:
        """Keep the heartbeat of trials waiting in a queue (their job has not started yet)."""
        while not stop.wait(self.heartbeat):
            with self._lock:
                ids = list(self._in_flight)
            for trial_id in ids:
                try:
                    self.storage.set_trial_system_attr(trial_id, protocol.HEARTBEAT_ATTR, time.time())
                except Exception:  # noqa: BLE001 - finished meanwhile
                    pass

    # ------------------------------------------------------------ the sweep
    def sweep(self, arguments: list[str]) -> None:
        grid = isinstance(self.sampler, functools.partial) and self.sampler.func is optuna.samplers.GridSampler
        preset = [f"{k}={v}" for k, v in (self.params or {}).items()]
        space, keys, fixed = parse_space(preset + list(arguments), grid)
        if not space:
            raise SweepError("the mbrec_optuna sweeper found no search space: set hydra.sweeper.params "
                             "(e.g. hparams_search=paper_grid) or sweep a key on the command line (lr=choice(...))")
        fixed_keys = {o.split("=", 1)[0].lstrip("+~") for o in fixed}
        space = {k: d for k, d in space.items() if k not in fixed_keys}  # a fixed CLI value wins
        study = self._open_study(space, grid)
        self._claim_folder()
        n_jobs = self.n_jobs
        if n_jobs > 1 and type(self.launcher).__name__ == "BasicLauncher":
            log.warning("hydra.sweeper.n_jobs=%d with the in-process launcher runs one trial at a time; "
                        "use a parallel launcher (hydra/launcher=local_parallel, slurm) for trials in flight", n_jobs)
            n_jobs = 1
        grid_points = None
        if grid:
            names = list(space)
            grid_points = [param_key(dict(zip(names, combo)))
                           for combo in itertools.product(*(space[n].choices for n in names))]
        log.info("study %s in %s: %s sampler, pruner %s, %s, %d in flight", self.study_name,
                 self.storage_url or "memory", type(study.sampler).__name__, self.pruner,
                 f"grid of {len(grid_points)} points" if grid_points is not None else f"{self.n_trials} trials",
                 n_jobs)
        with self._lock, self._journal_checked():
            self._recover(study, space)
        done_before = len(self._trials(study, DONE))
        self._in_flight: dict[int, int] = {}
        stop_beat = threading.Event()
        beat = threading.Thread(target=self._beat, args=(stop_beat,), name="sweeper-heartbeat", daemon=True)
        beat.start()
        try:
            with self._journal_checked():
                failures, finished = self._run(study, space, keys, fixed, grid_points, n_jobs)
        finally:
            stop_beat.set()
        launched = len(finished)
        log.info("%d trials run now (%d pruned, %d failed), %d finished before", launched,
                 sum(s == TrialState.PRUNED for s in finished), len(failures), done_before)
        if failures and len(failures) / max(launched, 1) > self.max_failure_rate:
            raise SweepFailed(f"{len(failures)} of {launched} trials failed (hydra.sweeper.max_failure_rate="
                               f"{self.max_failure_rate}); re-running the same command retries them") from failures[0]
        with self._journal_checked():
            self._write_results(study, space)

    def _run(self, study: optuna.Study, space: dict[str, BaseDistribution], keys: dict[str, str], fixed: list[str],
             grid_points: list[str] | None, n_jobs: int) -> tuple[list[BaseException], list[TrialState]]:
        failures: list[BaseException] = []
        finished: list[TrialState] = []

        def give_up() -> bool:
            return bool(failures) and len(failures) / max(len(finished), 1) > self.max_failure_rate

        if n_jobs == 1:  # in this thread: the in-process launcher is not thread-safe
            while not give_up() and self._to_launch(study, grid_points) > 0:
                trial, overrides, idx = self._ask(study, space, keys, fixed)
                state, err = self._settle(trial, self._launch(overrides, idx))
                finished.append(state)
                failures += [err] if err is not None else []
            return failures, finished

        results: queue.Queue = queue.Queue()
        running = 0
        while True:
            while running < n_jobs and not give_up() and self._to_launch(study, grid_points) > 0:
                trial, overrides, idx = self._ask(study, space, keys, fixed)
                worker = threading.Thread(target=lambda t=trial, o=overrides, i=idx: results.put((t, self._launch(o, i))),
                                          name=f"trial-{trial.number}", daemon=True)
                worker.start()
                running += 1
            if running == 0:
                return failures, finished
            trial, ret = results.get()
            running -= 1
            state, err = self._settle(trial, ret)
            finished.append(state)
            failures += [err] if err is not None else []

    def _claim_folder(self) -> None:
        """One study per sweep folder: its trial folders are named by trial number and its results file
        and MLflow parent are the folder's, so a different study given the same ``hydra.sweep.dir`` is
        refused (a re-run of the same study, e.g. with more trials, continues it)."""
        out = Path(str(self.config.hydra.sweep.dir))
        mark = out / ".study"
        try:
            owner = mark.read_text().strip() if mark.is_file() else ""
        except OSError:
            owner = ""
        if owner and owner != self.study_name:
            raise SweepError(f"hydra.sweep.dir={out} holds the sweep of study {owner}; this sweep is study "
                             f"{self.study_name} (other settings or search space). Fix: give it its own "
                             "hydra.sweep.dir, or leave it unset (each sweep's folder is named by its overrides)")
        if not owner:
            out.mkdir(parents=True, exist_ok=True)
            tmp = out / f".study.{os.getpid()}.tmp"
            tmp.write_text(self.study_name + "\n")
            os.replace(tmp, mark)

    def _write_results(self, study: optuna.Study, space: dict[str, BaseDistribution]) -> None:
        """``<sweep dir>/optimization_results.yaml``: the study's best point over its finished trials with a
        finite objective (all its trials, not only this run's). A study none of whose trials has a finite
        value (every point diverged) has no best: no file, an error. Trials still RUNNING (another sweep
        on the same storage) are named in the file (``still_running``) and in a warning: the best may change."""
        out = Path(str(self.config.hydra.sweep.dir))
        out.mkdir(parents=True, exist_ok=True)
        counts = {s.name.lower(): len(self._trials(study, (s,))) for s in (*DONE, TrialState.FAIL, TrialState.RUNNING)}
        complete = self._trials(study, (TrialState.COMPLETE,))
        foreign = [t.number for t in complete if not in_space(t.params, space)]
        if foreign:
            log.warning("study %s: ignoring trials %s: their parameters are not points of this search space "
                        "(written into %s by something else)", self.study_name, foreign, self.storage_url)
        finite = [t for t in complete if t.number not in foreign and t.value is not None and math.isfinite(t.value)]
        stale = out / "optimization_results.yaml"
        if not finite:
            stale.unlink(missing_ok=True)  # an earlier best of this folder is not this study's
            why = (f"all {len(complete)} completed trials have a non-finite objective (diverged)" if complete
                   else "no trial completed")
            raise SweepFailed(f"study {self.study_name} has no best: {why} ({counts}); no optimization_results.yaml "
                              "is written. Fix: narrow the search space (e.g. smaller optimizer.lr values) and run again")
        sign = -1.0 if self.direction == "maximize" else 1.0
        best = min(finite, key=lambda t: (sign * t.value, t.number))  # ties: the earliest trial
        running = sorted(t.number for t in self._trials(study, (TrialState.RUNNING,)))
        results = {"name": "mbrec_optuna", "study_name": self.study_name, "storage": self.storage_url or "memory",
                   "best_params": dict(best.params), "best_value": best.value, "best_trial": best.number,
                   "n_trials": counts, "still_running": running, "search_space": describe_space(space)}
        text = OmegaConf.to_yaml(OmegaConf.create(results))
        tmp = out / ".optimization_results.yaml.tmp"
        tmp.write_text(text)
        tmp.replace(stale)
        log.info("best of study %s: %s = %.6g (trial %d)", self.study_name, best.params, best.value, best.number)
        if running:
            log.warning("study %s: trials %s are still running (another sweep on %s): the best above is over "
                        "the finished trials only; run the same command again when they end for the final best",
                        self.study_name, running, self.storage_url)

