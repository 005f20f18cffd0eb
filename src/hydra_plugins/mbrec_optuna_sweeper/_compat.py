"""Every call of the sweeper into Optuna and Hydra that is not plainly their documented API.

The rest of the plugin reads no ``_``-attribute of an Optuna or Hydra object
(``tests/test_sweeper_compat.py`` checks the source); what it needs beyond ``ask``/``tell`` goes
through a named function here, so an upgrade that breaks one breaks here, in one place, and the
same test exercises each function on a real in-memory study.

Replaced by public APIs (no longer private): ``study._storage`` (the sweeper opens the storage itself;
``Trial.storage``), ``study._study_id`` (:func:`study_id`), ``trial._trial_id`` and
``FrozenTrial._trial_id`` (:func:`trial_id`), ``storage.get_all_trials(study._study_id, ...)``
(:func:`trials`), ``distribution._contains`` (:func:`sampled_from`),
``Override._get_value_element_as_str`` (:func:`render_value`). Still private: ``JobReturn._return_value``
(:func:`job_error`).

:data:`CHECKED` holds the versions this module was checked against (the test asserts the installed
ones are inside; the sweeper logs a warning when they are not).
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any, Iterable

import optuna
from hydra.core.override_parser.types import Transformer
from hydra.core.utils import JobReturn, JobStatus
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

#: distribution -> [lowest checked, first unchecked) release
CHECKED: dict[str, tuple[str, str]] = {"optuna": ("5.0", "6"), "hydra-core": ("1.3.8", "1.3.9")}


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0])[:3])


def unchecked_versions() -> list[str]:
    """The installed distributions of :data:`CHECKED` outside their checked range (as messages)."""
    out = []
    for dist, (low, high) in CHECKED.items():
        try:
            have = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out.append(f"{dist} is not installed")
            continue
        if not _release(low) <= _release(have) < _release(high):
            out.append(f"{dist} {have} (checked: >={low},<{high})")
    return out


# ---------------------------------------------------------------- Optuna: ids of studies and trials
def study_id(storage: optuna.storages.BaseStorage, study_name: str) -> int:
    """The storage's id of a study. Public (``BaseStorage.get_study_id_from_name``) instead of
    ``Study._study_id``: the storage methods that write system attributes take ids, not names."""
    return storage.get_study_id_from_name(study_name)


def trial_id(storage: optuna.storages.BaseStorage, study_id: int, number: int) -> int:
    """The storage's id of trial ``number`` of a study. Public (``BaseStorage.
    get_trial_id_from_study_id_trial_number``) instead of ``Trial._trial_id``/``FrozenTrial._trial_id``:
    Optuna has no public trial id on either object, and the storage API (system attributes, a trial
    by id) takes ids. A process that did not ask the trial (the job, a later sweep) only knows its number."""
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def trials(study: optuna.Study, states: Iterable[TrialState] | None = None) -> list[FrozenTrial]:
    """The study's trials in ``states`` without copying them. Public (``Study.get_trials``), the same
    storage call the sweeper made before through ``study._storage.get_all_trials(study._study_id, ...)``."""
    return study.get_trials(deepcopy=False, states=None if states is None else tuple(states))


def running_trial(study: optuna.Study, trial_id: int) -> optuna.trial.Trial:
    """A :class:`optuna.trial.Trial` for a trial that already exists and is RUNNING (asked by the
    sweeper, run by this job), so the job can ``report`` to it and ask ``should_prune``.
    ``Study.ask`` only creates trials (or pops WAITING ones); Optuna's documented way to get a
    ``Trial`` object is the constructor, which its docs say users normally leave to ``optimize``."""
    return optuna.trial.Trial(study, trial_id)


def sampled_from(trial: FrozenTrial, space: dict[str, BaseDistribution]) -> bool:
    """Whether ``trial`` has a value for exactly the keys of ``space``, each drawn from the same
    distribution. Public (``FrozenTrial.distributions``, distribution equality) instead of
    ``BaseDistribution._contains``, Optuna's private membership test: a trial's parameters are in the
    distributions it records (``Study.ask`` checks enqueued values with ``_contains``), so equal
    distributions imply the values are in ``space``."""
    return set(trial.params) == set(space) and all(trial.distributions.get(k) == d for k, d in space.items())


# ---------------------------------------------------------------- Hydra
def render_value(value: Any) -> str:
    """``value`` as the right-hand side of a Hydra override, quoted and escaped so that Hydra parses
    it back to ``value``. Public (``Transformer.str``, the transformer of ``Override.sweep_iterator``)
    instead of the static ``Override._get_value_element_as_str`` it wraps: the public
    ``Override.get_value_element_as_str`` only renders the value of a parsed override."""
    return Transformer.str(value)


def job_error(ret: JobReturn) -> BaseException | None:
    """The exception of a failed job, or None. Private (``JobReturn._return_value``): the public
    ``JobReturn.return_value`` re-raises it and first writes "Error executing job with overrides" to
    stderr, while the sweeper only wants to record the trial as failed (or pruned) and go on."""
    return ret._return_value if ret.status == JobStatus.FAILED else None
