"""The public trial API of the ``mbrec_optuna`` sweeper: what a task (mbrec) uses to run one trial.

The sweeper passes each job the trial to run in the :data:`ENV` environment variable (set through
``hydra.job.env_set``, so it reaches local, submitit and Ray workers alike and stays out of the job's
config); :meth:`TrialSpec.from_env` reads it. The sweeper's job wrapper runs the task function inside
:func:`trial_scope`, which opens the same storage, says the trial is alive (heartbeat) while it runs
and records the trial's own outcome, so a finished trial is kept even if the sweeper itself died.

A task needs two names, and both do nothing outside such a sweep:

* :func:`report` (``report(value, step)``) after every validation: records the value at ``step`` and
  raises :class:`TrialPruned` when the study's pruner stops the trial;
* :class:`TrialPruned`: clean up and let it propagate; the trial becomes ``PRUNED``.

and, optionally, :func:`record_cost` (``record_cost(units)``) before it returns or raises: what the trial
cost in the task's units, which ``hydra.sweeper.max_cost`` caps for the whole study.

:func:`current` is the running :class:`ActiveTrial` (or None), :func:`open_storage` opens a study's
storage as the sweeper does (to look at a study). The remaining names (pruners, process ids, system
attribute names) are the protocol shared with the sweeper.

Dependencies run one way: the task imports this module; the plugin imports nothing of the task.
The names resolve lazily from ``_trial`` (Hydra's plugin scan imports this module on every start and
executes it again if it is already imported: this module must stay cheap and hold no state).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ENV", "TrialSpec", "TrialPruned", "TrialGone", "ActiveTrial", "current", "report", "record_cost",
           "trial_scope", "COST_ATTR",
           "open_storage", "make_pruner", "PRUNERS", "process_id", "is_dead",
           "SWEEPER_ATTR", "WORKER_ATTR", "STARTED_ATTR", "HEARTBEAT_ATTR"]

if TYPE_CHECKING:
    from ._trial import (  # noqa: F401
        COST_ATTR,
        ENV,
        HEARTBEAT_ATTR,
        PRUNERS,
        STARTED_ATTR,
        SWEEPER_ATTR,
        WORKER_ATTR,
        ActiveTrial,
        TrialGone,
        TrialPruned,
        TrialSpec,
        current,
        is_dead,
        make_pruner,
        open_storage,
        process_id,
        record_cost,
        report,
        trial_scope,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import _trial

        return getattr(_trial, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
