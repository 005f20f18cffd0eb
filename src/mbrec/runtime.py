"""Thread policy: how many intra-op threads torch may use in this process (config key ``threads``).

``threads: auto`` shares the CPUs this process may run on (its affinity mask, capped by a cgroup CPU
quota) evenly among the trials the Hydra launcher runs at the same time, caps the share at the
launcher's ``cpus_per_task`` when one is set, and gives a small problem one thread. ``threads: N``
takes N as given. Either way the result is applied with :func:`torch.set_num_threads`.

Why it matters: torch's OpenMP workers spin while they wait for each other. When the process has more
threads than free cores (parallel trials, a busy laptop, CI), a worker that lost its core stalls every
parallel region and an epoch takes several times longer. ``mbrec/__init__.py`` therefore also sets
``OMP_WAIT_POLICY=PASSIVE`` (unless the user set it) before torch is imported. The numbers behind the
defaults are in docs/performance.md (``benchmarks/bench_threads.py``).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping

from mbrec.errors import ConfigError

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")

#: directory names under which cgroup v1 mounts the ``cpu`` controller
_V1_CPU_MOUNTS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


#: ``threads: auto`` runs a problem whose item features hold fewer values than this (items x summed
#: feature widths) on one thread: its steps are too small for a second thread to pay for waking it.
#: Measured in docs/performance.md: the default synthetic data (0.2 M values) and the Baby
#: interactions with 768 feature dimensions (5.4 M) train as fast or faster on one thread, quiet or with
#: a core busy; with Baby's real widths (36 M) a CKD student gains from two.
SMALL_PROBLEM_FEATURE_VALUES = 8_000_000


class ThreadsError(ConfigError):
    """A ``threads`` value that is neither ``auto`` nor a positive integer."""


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _ancestors(base: Path, rel: str) -> list[Path]:
    """``base/rel`` and every parent directory up to and including ``base`` (limits are inherited)."""
    parts = [p for p in rel.strip("/").split("/") if p and p != ".."]
    return [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _v2_limit(folder: Path) -> float | None:
    """``cpu.max`` is ``<quota> <period>`` in microseconds, or ``max <period>`` for no limit."""
    text = _read(folder / "cpu.max")
    if not text:
        return None
    fields = text.split()
    if fields[0] == "max":
        return None
    try:
        quota, period = float(fields[0]), float(fields[1]) if len(fields) > 1 else 100_000.0
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_limit(folder: Path) -> float | None:
    """``cpu.cfs_quota_us`` (-1 = no limit) over ``cpu.cfs_period_us``."""
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    try:
        q, p = float(quota or "-1"), float(period or "100000")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """This process's cgroup v2 path and cgroup v1 ``cpu`` path from ``/proc/self/cgroup``."""
    v2 = v1 = None
    for line in (_read(proc_cgroup) or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def cgroup_cpu_limit(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs granted by the CPU bandwidth quota of this process's cgroup and its ancestors (cgroup v2
    ``cpu.max`` or v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``), the tightest one; ``None`` when
    there is no quota or it cannot be read. Inside a container the cgroup namespace usually makes
    the own cgroup the mount's root, which is always looked at too."""
    v2_path, v1_path = _cgroup_paths(proc_cgroup)
    limits: list[float] = []
    for folder in _ancestors(cgroup_root, v2_path or ""):
        if (lim := _v2_limit(folder)) is not None:
            limits.append(lim)
    for mount in _V1_CPU_MOUNTS:
        base = cgroup_root / mount
        if not base.is_dir():
            continue
        for folder in _ancestors(base, v1_path or ""):
            if (lim := _v1_limit(folder)) is not None:
                limits.append(lim)
        break
    return min(limits) if limits else None


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (cpusets, ``taskset``, SLURM binding); all CPUs where the
    platform has no affinity call."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def available_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP,
                   affinity: int | None = None) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup quota rounded down (a
    1.5-CPU quota gives 1: with a second thread both would be throttled at every barrier), at least 1."""
    n = affinity_cpus() if affinity is None else int(affinity)
    quota = cgroup_cpu_limit(cgroup_root, proc_cgroup)
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def parse_threads(spec: Any) -> int | None:
    """``auto`` (any case) -> ``None``; a positive integer (or its string) -> that integer."""
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "auto":
            return None
        if text.isdigit():
            spec = int(text)
    if isinstance(spec, int) and not isinstance(spec, bool) and spec >= 1:
        return spec
    raise ThreadsError(
        f"threads={spec!r} in the config: use threads=auto (share this machine's CPUs among parallel "
        f"trials) or a positive integer, e.g. threads=1")


def resolve_threads(spec: Any, parallel_trials: int = 1, cpus_per_trial: int | None = None,
                    cpus: int | None = None, feature_values: int | None = None) -> int:
    """The number of intra-op threads for ``spec``: N as given, or for ``auto`` the available CPUs
    (``cpus``, default :func:`available_cpus`) divided by ``parallel_trials`` (rounded down), capped at
    ``cpus_per_trial`` when the launcher requests one, at least 1 — and 1 for a small problem: a dataset
    whose item features hold fewer than :data:`SMALL_PROBLEM_FEATURE_VALUES` values (``feature_values``,
    unknown before the data is loaded)."""
    n = parse_threads(spec)
    if n is not None:
        return n
    if feature_values is not None and feature_values < SMALL_PROBLEM_FEATURE_VALUES:
        return 1
    if int(parallel_trials) < 1:
        raise ThreadsError(f"parallel_trials={parallel_trials!r}: must be at least 1")
    share = (available_cpus() if cpus is None else int(cpus)) // int(parallel_trials)
    if cpus_per_trial is not None and int(cpus_per_trial) >= 1:
        share = min(share, int(cpus_per_trial))
    return max(1, share)


#: torch's intra-op threads when mbrec first found them (set by the user, by OMP_NUM_THREADS, or torch's
#: default of one per physical core), and what mbrec last set
_CEILING: int | None = None
_LAST: int | None = None


def apply_threads(spec: Any = "auto", parallel_trials: int = 1, cpus_per_trial: int | None = None,
                  feature_values: int | None = None) -> int:
    """Resolve ``spec`` (see :func:`resolve_threads`) and apply it with :func:`torch.set_num_threads`;
    return the number of threads. ``auto`` never exceeds ``OMP_NUM_THREADS`` (how a job is usually pinned)
    nor the threads torch had before mbrec set them (a ``torch.set_num_threads`` by the user, or torch's
    default of one per physical core). The inter-op pool is left alone: mbrec never runs inter-op parallel
    work, and torch refuses to resize that pool once any parallel work has started."""
    import torch

    global _CEILING, _LAST
    n = resolve_threads(spec, parallel_trials, cpus_per_trial, feature_values=feature_values)
    if parse_threads(spec) is None:  # auto: never more than the user gave torch before mbrec
        if _LAST is None or torch.get_num_threads() != _LAST:  # set by someone else since mbrec last did
            _CEILING = torch.get_num_threads()
        caps = [c for c in (_CEILING, _positive(os.environ.get("OMP_NUM_THREADS"))) if c is not None]
        ceiling = min(caps) if caps else n
        if n > ceiling:
            log.info("threads=auto: %d -> %d (OMP_NUM_THREADS=%s, torch threads before mbrec %d)", n, ceiling,
                     os.environ.get("OMP_NUM_THREADS", "unset"), _CEILING)
            n = ceiling
    torch.set_num_threads(n)
    _LAST = n
    log.info("threads=%s -> %d intra-op threads (parallel trials %d, cpus_per_task %s, item feature values %s, "
             "OMP_WAIT_POLICY=%s)", spec, n, parallel_trials, cpus_per_trial,
             "unknown" if feature_values is None else f"{feature_values:,}", os.environ.get("OMP_WAIT_POLICY", "unset"))
    return n


def _get(cfg: Any, key: str) -> Any:
    try:
        return cfg.get(key) if isinstance(cfg, Mapping) or hasattr(cfg, "get") else None
    except Exception:  # omegaconf raises on missing interpolation targets; treat as unset
        return None


def _positive(value: Any) -> int | None:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if n >= 1 else None


def parallelism(hydra_cfg: Any) -> tuple[int, int | None]:
    """``(parallel_trials, cpus_per_trial)`` for the trial described by a Hydra config (the ``hydra``
    node). A single run and the basic launcher run one trial at a time. submitit's local launcher
    (``hydra/launcher=local_parallel``) runs a sweeper batch at once (``hydra.sweeper.n_jobs`` for
    Optuna, ``max_batch_size`` for the basic sweeper) and caps each at ``cpus_per_task``; joblib runs
    ``hydra.launcher.n_jobs`` workers; on SLURM each trial has its own allocation of
    ``cpus_per_task``. Unknown launchers are assumed to run the sweeper batch on this machine."""
    mode = str(_get(hydra_cfg, "mode") or "")
    launcher = _get(hydra_cfg, "launcher") or {}
    sweeper = _get(hydra_cfg, "sweeper") or {}
    target = str(_get(launcher, "_target_") or "")
    cpus_per_task = _positive(_get(launcher, "cpus_per_task"))
    if not mode.endswith("MULTIRUN") or not target or target.endswith("BasicLauncher"):
        return 1, None
    batch = _positive(_get(sweeper, "n_jobs")) or _positive(_get(sweeper, "max_batch_size"))
    if target.endswith("SlurmLauncher"):
        return 1, cpus_per_task
    if target.endswith("JoblibLauncher"):
        n_jobs = int(_get(launcher, "n_jobs") or 1)
        if n_jobs < 0:  # joblib: -1 = all CPUs, -2 = all but one, ...
            n_jobs = max(1, (os.cpu_count() or 1) + 1 + n_jobs)
        return max(1, min(n_jobs, batch) if batch else n_jobs), None
    # submitit local and unknown launchers: the whole batch shares this machine; an unbounded batch
    # (basic sweeper, max_batch_size null) counts as one trial per CPU.
    return batch or available_cpus(), cpus_per_task


def hydra_parallelism() -> tuple[int, int | None]:
    """:func:`parallelism` of the running Hydra job; ``(1, None)`` outside Hydra (library use, tests)."""
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:  # pragma: no cover - hydra is a dependency
        return 1, None
    if not HydraConfig.initialized():
        return 1, None
    return parallelism(HydraConfig.get())


def feature_values(dataset: Any) -> int:
    """Values in a dataset's item feature matrices (items x summed feature widths): the size measure
    of :data:`SMALL_PROBLEM_FEATURE_VALUES`."""
    return sum(int(f.shape[0]) * int(f.shape[1]) for f in dataset.features.values())
