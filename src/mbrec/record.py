"""The record of a run: every MLflow tag mbrec writes or reads, and the schema of ``results.json``.

Writers (the pipeline, the fit service, balancers, the sweep parent) and readers (reports, the sweep
summary, the finished-run index, the Table 1 driver) take the names from here, so a rename is one edit
and a reader can never silently look for a key nobody writes (``tests/test_record.py`` reads back what
a run writes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping


class Tag:
    """MLflow run tags (names only; values are strings)."""

    # what a run is
    DATASET = "mbrec.dataset"
    BACKBONE = "mbrec.backbone"
    BALANCER = "mbrec.balancer"
    SEED = "mbrec.seed"
    STAGE = "mbrec.stage"              #: ``student``, ``sweep``, or the tag of a nested fit (``teacher-text``)
    SCALE = "mbrec.scale"              #: the ``scale`` group's choice (``default`` when none)
    ABLATE = "mbrec.ablate"            #: nested fits: the modalities ablated throughout
    MODALITY = "mbrec.modality"        #: nested fits: the modalities kept
    DEVICE = "mbrec.device"            #: the device the run trained on (``cpu``, ``cuda:0``)
    # identity and provenance
    RUN_KEY = "mbrec.run_key"          #: hash of the semantic config + data (one lock, one MLflow run)
    FIT_KEY = "mbrec.fit_key"          #: identity of a nested fit (a teacher's cache key)
    DATA_FINGERPRINT = "mbrec.data_fingerprint"
    DATA_USERS = "mbrec.data.users"
    DATA_ITEMS = "mbrec.data.items"
    DATA_INTERACTIONS = "mbrec.data.interactions"
    GENERATOR = "mbrec.generator"      #: dataset input: where the data came from
    GIT_COMMIT = "mlflow.source.git.commit"
    GIT_DIRTY = "mbrec.git_dirty"
    OUTPUT_DIR = "mbrec.output_dir"
    CACHE_DIR = "mbrec.cache_dir"      #: stale RUNNING runs are ended only by runs of the same cache
    PARENT = "mlflow.parentRunId"
    # outcome
    FAILURE = "mbrec.failure"          #: ``diverged``
    FAILURE_MESSAGE = "mbrec.failure.message"
    PRUNED = "mbrec.pruned"
    PRUNED_REASON = "mbrec.pruned_reason"
    # presets and sweeps
    PRESET = "mbrec_experiment"        #: the ``mlflow.tags`` key a preset (conf/experiment/) sets
    SWEEP_DIR = "hydra.sweep.dir"
    MODEL_LOGGED = "mbrec.model_logged"  # the run's best model is logged (a resumed run does not log it again)
    #: a sweep parent whose best was computed while these trials (of another sweep on the study) still ran
    SWEEP_STILL_RUNNING = "mbrec.sweep_still_running"
    SWEEP_OWNER = "mbrec.sweep_owner"  # host:pid of the sweep process (a dead one's RUNNING parent is KILLED)
    SWEEP_OVERRIDES = "hydra.overrides"
    STUDY = "optuna.study_name"
    BUDGET_TRIALS = "budget.trials"    #: set by the Table 1 driver on a row's seed runs
    BUDGET_EPOCHS = "budget.epochs"
    BUDGET_SEARCH = "budget.search"
    BUDGET_TUNING = "budget.tuning"    #: id of the tuning (cell, budget, tuned point) whose settings the run uses
    BUDGET_BASE = "budget.base"        #: the base row's tuning id this row was tuned and is compared against
    MAX_EPOCHS_HIT = "mbrec.max_epochs_hit"  #: ``true``: stopped at train.max_epochs while still improving

    @staticmethod
    def teacher_run(modality: str) -> str:
        """A student run's tag holding the MLflow run id of its ``modality`` teacher."""
        return f"mbrec.teacher.{modality}.run_id"

    @staticmethod
    def teacher_cached(modality: str) -> str:
        """A student run's tag: ``true`` if its ``modality`` teacher came from the cache."""
        return f"mbrec.teacher.{modality}.cached"

    @staticmethod
    def teacher_modalities(tags: Mapping[str, str]) -> list[str]:
        """The modalities whose teacher run ids a student run's ``tags`` carry."""
        return sorted(k.split(".")[2] for k in tags if k.startswith("mbrec.teacher.") and k.endswith(".run_id"))

    @staticmethod
    def preset_marker(preset: str) -> str:
        """``mbrec.preset.<name>`` (value ``true``): unlike the single :attr:`PRESET` value a run can carry
        several (a replayed run joins the preset that replays it)."""
        return f"mbrec.preset.{preset}"

    @staticmethod
    def sweep_marker(sweep_id: str) -> str:
        """``mbrec.sweep.<id>`` (value ``true``): the runs of one sweep folder, trained or replayed (a
        replayed run can belong to several sweeps; ``mbrec.services.tracking.sweep_marker``)."""
        return f"mbrec.sweep.{sweep_id}"


#: values of :attr:`Tag.STAGE`
STAGE_STUDENT = "student"
STAGE_SWEEP = "sweep"


@dataclass
class Results:
    """``results.json``: everything a finished run reports (also the finished-run index entry).

    Field order is the file's key order. Readers use :meth:`from_json` (:data:`REQUIRED` must be there;
    unknown keys are kept in ``extra``, other missing ones take the defaults)."""

    config: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    device: str = ""
    threads: int | None = None
    code: dict[str, Any] = field(default_factory=dict)  #: ``commit`` (str) and ``dirty`` (bool, None outside git)
    best_epoch: int = -1
    best_valid: dict[str, float] = field(default_factory=dict)
    epochs_run: int = 0
    stopped_early: bool = False
    max_epochs_hit: bool = False        #: ended by ``train.max_epochs`` before early stopping (still improving)
    seconds_per_epoch: float | None = None
    seconds_per_eval: float | None = None
    metric: str = ""                    #: ``train.metric``: the early-stopping metric and sweep objective
    best_valid_value: float = float("nan")  #: its value at ``best_epoch`` (the sweep objective)
    test: dict[str, float] = field(default_factory=dict)  #: test metrics at ``best_epoch``
    test_seconds: float = 0.0
    balancer: dict[str, Any] = field(default_factory=dict)  #: ``Balancer.results()`` (CKD: teachers; GB: weights)
    mlflow_run_id: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    replayed_from: str | None = None    #: set when an identical finished run was replayed, not trained
    extra: dict[str, Any] = field(default_factory=dict)  #: keys of other versions, kept as they are

    #: keys every reader relies on (a file without them is not a finished run's record)
    REQUIRED = ("metric", "best_valid_value")

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra", "replayed_from")}
        if self.replayed_from is not None:
            out["replayed_from"] = self.replayed_from
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Results:
        """Parse a results.json mapping; ``KeyError`` names the first required key it lacks."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]
        for key in cls.REQUIRED:
            if key not in data:
                raise KeyError(key)
        return cls(**{k: data[k] for k in names if k in data},
                   extra={k: v for k, v in data.items() if k not in names})

    @property
    def teacher_epochs(self) -> int:
        """Epochs trained for this run's teachers (cached ones cost nothing here)."""
        return teacher_epochs(self.balancer)

    @property
    def probe_epochs(self) -> int:
        """Epochs trained by Gradient Blending's probes for this run."""
        return probe_epochs(self.balancer)


def teacher_epochs(balancer: Mapping[str, Any] | None) -> int:
    """Epochs a run trained for its teachers, from its ``Balancer.results()`` (cached teachers: 0)."""
    teachers = (balancer or {}).get("teachers") or {}
    return sum(int(t.get("epochs_run") or 0) for t in teachers.values() if not t.get("cached"))


def probe_epochs(balancer: Mapping[str, Any] | None) -> int:
    """Epochs a run trained for Gradient Blending's probes, from its ``Balancer.results()``."""
    return sum(int(e.get("probe_epochs") or 0) for e in (balancer or {}).get("estimates") or [])


def is_results(data: Any) -> bool:
    """True if ``data`` parses as :class:`Results`."""
    if not isinstance(data, Mapping):
        return False
    try:
        Results.from_json(data)
    except (KeyError, TypeError):
        return False
    return True
