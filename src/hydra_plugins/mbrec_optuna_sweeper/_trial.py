"""The trial side of an ``mbrec_optuna`` sweep; its public face is :mod:`.trial` (see there).

Kept in a ``_`` module because Hydra's plugin scan executes every other module of ``hydra_plugins``
again even when it is already imported: that would re-create :class:`TrialPruned` (an ``except``
written against the first class would miss the second) and empty the in-memory storages. The scan
skips ``_`` modules, so this one is executed once, and the scan does not pay for importing Optuna.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from . import _compat
from ._errors import SweepError

__all__ = ["ENV", "TrialSpec", "TrialPruned", "TrialGone", "ActiveTrial", "current", "report", "record_cost", "trial_scope",
           "open_storage", "make_pruner", "PRUNERS", "process_id", "is_dead",
           "SWEEPER_ATTR", "WORKER_ATTR", "STARTED_ATTR", "HEARTBEAT_ATTR", "COST_ATTR"]

log = logging.getLogger(__name__)

ENV = "MBREC_OPTUNA_TRIAL"
#: trial system attributes: who runs the trial (``host:pid``), when its job started (after any queue
#: wait) and when it last said it was alive
SWEEPER_ATTR, WORKER_ATTR = "mbrec:sweeper", "mbrec:worker"
STARTED_ATTR, HEARTBEAT_ATTR = "mbrec:started", "mbrec:heartbeat"
#: the trial user attribute a task's :func:`record_cost` writes (``hydra.sweeper.max_cost`` sums it)
COST_ATTR = "cost"

PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "threshold": optuna.pruners.ThresholdPruner,  # stop a trial whose value leaves [lower, upper]
}

#: in-memory studies of this process (``storage: null``), shared by the sweeper and in-process jobs
_MEMORY: dict[str, optuna.storages.BaseStorage] = {}


class TrialPruned(optuna.TrialPruned):
    """The pruner stopped this trial (its validation curve is not promising)."""


class TrialGone(RuntimeError):
    """The trial is no longer running in its study (finished or retried elsewhere): do not train it."""


def open_storage(storage: str | None) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL, a path ending in ``.journal`` (journal file, created with its
    folder), or ``None``/``"memory"`` (this process only)."""
    if storage is None or storage == "memory":
        return _MEMORY.setdefault("memory", optuna.storages.InMemoryStorage())
    if str(storage).endswith(".journal"):
        path = Path(storage).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = _Journal(path)
            journal = optuna.storages.JournalStorage(backend)
            journal.get_all_studies()  # every line replayed now: a damaged journal is named here
        except SweepError:
            raise
        except OSError as err:
            raise SweepError(f"{path}: cannot use the study journal ({err.strerror or err}). Fix: "
                             "free space or give write permission there, or set another hydra.sweeper.storage") from None
        except Exception as err:  # noqa: BLE001 - any replay failure is a damaged journal
            raise SweepError(journal_damaged(path, err)) from None
        return journal
    if "://" not in str(storage):
        raise SweepError(f"hydra.sweeper.storage={storage!r}: use an Optuna storage URL "
                         "(e.g. sqlite:///studies.db, postgresql://host/db), a path ending in .journal, or null")
    return optuna.storages.get_storage(str(storage))


def journal_damaged(path: str | Path, err: BaseException) -> str:
    """The one line for a journal Optuna cannot replay."""
    return (f"{path}: the study journal is damaged ({type(err).__name__}: {str(err)[:120]}). Fix: move it aside "
            f"(mv {path} {path}.damaged) and run the same command again: finished trials replay from the "
            "finished-run index, the rest run again")


class _Journal(JournalFileBackend):
    """Optuna's journal file, made safe to append to after a crash or a full disk: a torn last line (a
    write cut short) is cut off, with a warning naming the file, before this process reads or appends,
    so that the next append is never glued onto it; a failed append (disk full) is cut off the same way
    and named in one line. Repairs hold the journal's own lock, so no other writer is mid-append."""

    def __init__(self, path: Path) -> None:
        if path.exists() and not path.is_file():
            raise SweepError(f"{path}: the study journal is not a regular file. Fix: move it aside or set "
                             "hydra.sweeper.storage to a file path ending in .journal")
        self.path = path
        self.lock = JournalFileSymlinkLock(str(path))
        super().__init__(str(path), self.lock)
        self.repair()

    def repair(self) -> None:
        """Cut a torn last line (bytes after the last newline) off the journal, under its lock."""
        self.lock.acquire()
        try:
            with open(self.path, "rb+") as f:
                size = f.seek(0, os.SEEK_END)
                end = size
                while end > 0:  # back to the last newline, a block at a time
                    start = max(0, end - 65536)
                    f.seek(start)
                    block = f.read(end - start)
                    cut = block.rfind(b"\n")
                    if cut >= 0:
                        end = start + cut + 1
                        break
                    end = start
                if end < size:
                    f.truncate(end)
                    f.flush()
                    os.fsync(f.fileno())
                    log.warning("%s: cut off a torn last line (%d bytes of a write cut short by a crash or a "
                                "full disk); the study goes on from the complete lines", self.path, size - end)
        finally:
            self.lock.release()

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        try:
            super().append_logs(logs)
        except OSError as err:
            try:
                self.repair()
            except OSError:
                pass  # the next process to open the journal repairs it
            raise SweepError(f"{self.path}: cannot append to the study journal ({err.strerror or err}). Fix: free "
                             "space or give write permission there, then run the same command again "
                             "(finished trials are kept)") from None


def make_pruner(name: str, settings: Mapping[str, Any] | None = None) -> optuna.pruners.BasePruner:
    """Optuna's pruner ``name`` (none | median | successive_halving | hyperband | threshold) with ``settings``."""
    if name not in PRUNERS:
        raise SweepError(f"hydra.sweeper.pruner={name!r}: choose one of {', '.join(PRUNERS)}")
    try:
        return PRUNERS[name](**dict(settings or {}))
    except TypeError as err:
        raise SweepError(f"hydra.sweeper.pruners.{name}: {err}; see optuna.pruners.{PRUNERS[name].__name__}") from err


def process_id() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def is_dead(ident: str | None) -> bool:
    """True only when ``ident`` (``host:pid``) names a process on this host that no longer exists."""
    if not ident or ":" not in ident:
        return False
    host, pid = ident.rsplit(":", 1)
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


@dataclass(frozen=True)
class TrialSpec:
    """Which trial a job runs, and how to judge it; serialised into :data:`ENV`."""

    storage: str | None
    study: str
    number: int
    pruner: str = "none"
    pruner_settings: dict[str, Any] = field(default_factory=dict)
    heartbeat_seconds: float = 30.0

    def to_env(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrialSpec | None:
        """The spec in :data:`ENV` of ``environ`` (default: this process's environment), or None."""
        raw = (os.environ if environ is None else environ).get(ENV)
        return cls(**json.loads(raw)) if raw else None


class ActiveTrial:
    """The Optuna trial this process runs: report, prune, heartbeat, and the final state."""

    def __init__(self, spec: TrialSpec) -> None:
        self.spec = spec
        self.storage = open_storage(spec.storage)
        # a neutral sampler: the study's real sampler lives in the sweeper (and a grid sampler's
        # after_trial hook cannot run outside Study.optimize)
        self.study = optuna.load_study(study_name=spec.study, storage=self.storage,
                                       sampler=optuna.samplers.RandomSampler(),
                                       pruner=make_pruner(spec.pruner, spec.pruner_settings))
        self.trial_id = _compat.trial_id(self.storage, _compat.study_id(self.storage, spec.study), spec.number)
        state = self.storage.get_trial(self.trial_id).state
        if state != optuna.trial.TrialState.RUNNING:
            raise TrialGone(f"trial {spec.number} of study {spec.study} is {state.name}, not RUNNING "
                            "(finished or retried by another sweep): not training it")
        self.trial = _compat.running_trial(self.study, self.trial_id)
        self.storage.set_trial_system_attr(self.trial_id, WORKER_ATTR, process_id())
        self.storage.set_trial_system_attr(self.trial_id, STARTED_ATTR, time.time())
        self._stop = threading.Event()
        self.beat()
        self._thread = threading.Thread(target=self._heartbeat, name="optuna-heartbeat", daemon=True)
        self._thread.start()

    def beat(self) -> None:
        """Say the trial is alive (the sweeper retries a running trial that stays silent too long)."""
        self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT_ATTR, time.time())

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.spec.heartbeat_seconds):
            try:
                self.beat()
            except Exception as err:  # noqa: BLE001 - e.g. the trial was finished elsewhere
                log.warning("optuna trial %d: heartbeat stopped (%s)", self.spec.number, err)
                return

    def report(self, value: float, step: int) -> None:
        """Record ``value`` at ``step``; raise :class:`TrialPruned` if the pruner stops the trial."""
        self.trial.report(float(value), int(step))
        if self.trial.should_prune():
            raise TrialPruned(f"trial {self.spec.number} pruned at step {step} (value {value:.6g})")

    def record_cost(self, units: float) -> None:
        """What this trial cost, in the task's own units (mbrec: epochs trained)."""
        self.storage.set_trial_user_attr(self.trial_id, COST_ATTR, float(units))

    def finish(self, state: optuna.trial.TrialState, value: float | None = None) -> None:
        """Record the outcome (a pruned trial's value is its last reported one)."""
        self.study.tell(self.spec.number, value, state=state, skip_if_finished=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


_active: ActiveTrial | None = None


def current() -> ActiveTrial | None:
    """The trial this process runs under the ``mbrec_optuna`` sweeper, or None."""
    return _active


def report(value: float, step: int) -> None:
    """Report the validation value at ``step`` (e.g. epochs trained) to the current trial, if any;
    raises :class:`TrialPruned` when the trial should stop."""
    if _active is not None:
        _active.report(value, step)


def record_cost(units: float) -> None:
    """Record what the current trial cost (e.g. epochs trained), if any: ``hydra.sweeper.max_cost``
    stops launching trials once the study's recorded costs reach it. Call it before the task returns."""
    if _active is not None:
        _active.record_cost(units)


@contextlib.contextmanager
def trial_scope(spec: TrialSpec | None) -> Iterator[ActiveTrial | None]:
    """Make ``spec``'s trial the current one for the duration of a job; record how the job ended
    (pruned or failed) unless the caller already did (a complete trial: :meth:`ActiveTrial.finish`
    with its value, inside the scope). ``spec=None`` (not in a sweep): nothing happens."""
    global _active
    if spec is None:
        yield None
        return
    trial = ActiveTrial(spec)
    _active = trial
    try:
        yield trial
    except optuna.TrialPruned:
        trial.finish(optuna.trial.TrialState.PRUNED)
        raise
    except BaseException:
        trial.finish(optuna.trial.TrialState.FAIL)
        raise
    finally:
        _active = None
        trial.close()
