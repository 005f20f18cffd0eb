"""Structured configs of the ``mbrec_optuna`` sweeper, registered in Hydra's ConfigStore.

Select it with ``override /hydra/sweeper: mbrec_optuna`` (the ``hparams_search`` presets do) and a
sampler with ``override /hydra/sweeper/sampler: grid|tpe|random``.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class GridSamplerConfig:
    """Every point of the grid once. The visiting order is a fixed shuffle (seed 0) on purpose: the
    sampler identifies grid points by their position in that order, so a resumed study must see the
    same order."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True  # the grid is filled in from ``params`` at sweep time


@dataclass
class TPESamplerConfig:
    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    constant_liar: bool = True  # trials in flight count as provisional results (parallel workers)


@dataclass
class RandomSamplerConfig:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None


@dataclass
class PrunerSettings:
    """Settings of each pruner (Optuna's constructor arguments); only the chosen one is used.
    Steps are epochs: a trial reports its validation value at step = epochs trained so far.
    No pruner decides before epoch 10 by default (Optuna's defaults decide from the first report):
    on the synthetic VBPR grid, median pruning from epoch 2 stopped the eventual best point."""

    median: Dict[str, Any] = field(default_factory=lambda: {
        "n_startup_trials": 5, "n_warmup_steps": 10, "interval_steps": 1, "n_min_trials": 1})
    successive_halving: Dict[str, Any] = field(default_factory=lambda: {
        "min_resource": 10, "reduction_factor": 4, "min_early_stopping_rate": 0, "bootstrap_count": 0})
    hyperband: Dict[str, Any] = field(default_factory=lambda: {
        "min_resource": 10, "max_resource": "auto", "reduction_factor": 3, "bootstrap_count": 0})
    threshold: Dict[str, Any] = field(default_factory=lambda: {
        "lower": None, "upper": None, "n_warmup_steps": 10, "interval_steps": 1})


@dataclass
class MbrecOptunaSweeperConf:
    _target_: str = "hydra_plugins.mbrec_optuna_sweeper.mbrec_optuna_sweeper.MbrecOptunaSweeper"
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: Any = MISSING
    direction: str = "maximize"  # maximize | minimize: what to do with the task's return value
    # The study's name in its storage; a short hash of the run settings that are not searched is
    # appended, so one name never mixes trials run with different fixed settings.
    study_name: str = "${hydra.job.name}"
    # An Optuna storage URL (sqlite:///x.db, postgresql://...), a path ending in .journal (Optuna's
    # journal file storage, safe for several processes) or null (in memory, in-process launcher only).
    storage: Optional[str] = "${oc.select:paths.cache_dir,.cache}/studies/${.study_name}.journal"
    # Total finished (complete or pruned) trials the study should reach; a grid stops at its size.
    n_trials: int = 20
    n_jobs: int = 1  # trials in flight at once through the launcher
    max_failure_rate: float = 0.0  # stop the sweep once failed/finished trials of this run exceed it
    # Stop launching trials once the costs the finished trials recorded (trial.record_cost: mbrec
    # records epochs trained) sum to at least this; null: no cap. Trials in flight finish.
    max_cost: Optional[float] = None
    pruner: str = "none"  # none | median | successive_halving | hyperband | threshold
    pruners: PrunerSettings = field(default_factory=PrunerSettings)
    # Keys of the job config left out of the study's identity: settings that do not change what a
    # trial computes (paths, logging, device, threads...; a key covers its sub-keys). The task knows
    # which they are: mbrec's hparams_search presets set ${mbrec.non_semantic_keys:}.
    fingerprint_ignore: List[str] = field(default_factory=list)
    heartbeat_seconds: float = 30.0  # how often a running trial says it is alive
    stale_after_seconds: float = 300.0  # a running trial silent this long is taken as dead (retried)
    params: Optional[Dict[str, str]] = None  # search space: key -> choice(...) | range(...) | interval(...)


_cs = ConfigStore.instance()
_cs.store(group="hydra/sweeper", name="mbrec_optuna", node=MbrecOptunaSweeperConf, provider="mbrec")
for _name, _node in {"grid": GridSamplerConfig, "tpe": TPESamplerConfig, "random": RandomSamplerConfig}.items():
    _cs.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="mbrec")
