"""Shared fixtures: a tiny synthetic dataset and a way to run the whole pipeline on it."""

from __future__ import annotations

# first, as `python -m mbrec` does: mbrec sets OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP; with torch
# first, its threads spin while they wait and in-process training runs up to 7x slower on a loaded machine
import mbrec  # noqa: F401  # isort: skip
import json
import resource
from pathlib import Path
from typing import Any

import pytest
import torch

from mbrec.config import register_schemas
from mbrec.data.synthetic import make_synthetic

register_schemas()  # every test that composes conf/ sees the schemas, as `python -m mbrec` does

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

#: overrides that make a whole run take a second or two on CPU
TINY = [
    "dataset.synthetic.n_users=80",
    "dataset.synthetic.n_items=60",
    "dataset.synthetic.mean_interactions=10",
    "train.batch_size=64",
    "train.max_epochs=4",
    "train.eval_every=1",
    "train.patience=1",
    "device=cpu",
]


#: an unmarked test that uses more CPU than this (seconds, its process and the subprocesses it waits for, setup to
#: teardown) is named at the end of the fast tier as a candidate for @pytest.mark.slow; CPU time, not wall time,
#: so that a loaded machine does not raise false alarms. A hint, not a failure.
FAST_TIER_HINT_CPU_S = 20.0
_cpu: dict[str, float] = {}


def _cpu_seconds() -> float:
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    start = _cpu_seconds()
    yield
    _cpu[item.nodeid] = _cpu_seconds() - start


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """After the fast tier (``make test``, ``-m "not slow ..."``): how to run the rest (docs/testing.md)."""
    if "not slow" not in (config.getoption("markexpr", "") or ""):
        return
    for cpu, nodeid in sorted(((c, n) for n, c in _cpu.items() if c > FAST_TIER_HINT_CPU_S), reverse=True):
        terminalreporter.write_line(f"fast tier: {nodeid} used {cpu:.0f} s of CPU: mark it slow? (tests/conftest.py)")
    skipped = len(terminalreporter.stats.get("deselected", []))
    terminalreporter.write_line(f"fast tier only ({skipped} slow/cluster tests deselected): `make test-full` runs "
                                "everything, `make test-cluster` the Slurm test (docs/testing.md)", bold=True)


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture
def tiny_dataset():
    return make_synthetic(n_users=60, n_items=40, n_factors=8, mean_interactions=10, seed=1)


def slow_except(values, fast) -> list:
    """Parameters for ``pytest.mark.parametrize``: every value, those not in ``fast`` marked slow (``make
    test-full`` only). Tuples are argument tuples. New registry entries (not in either list) stay fast."""
    return [v if v in fast else pytest.param(*(v if isinstance(v, tuple) else (v,)), marks=pytest.mark.slow)
            for v in values]


def unit_context(dataset, seed: int = 0, cache_dir: str = ""):
    """A RunContext for balancer unit tests: default TrainSettings, Adam(lr=5e-4), nothing tracked; its fit
    service trains a given model (GB's probes) but no fresh backbone (no backbone config)."""
    from mbrec.services.fitting import FitService
    from mbrec.services.tracking import Tracker
    from mbrec.training.hooks import RunContext
    from mbrec.training.settings import TrainSettings

    device, settings, tracker = torch.device("cpu"), TrainSettings(), Tracker(False, "", "", "")
    configs = {"optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 5e-4}}
    fit = FitService(dataset, device, seed, settings, configs, tracker, cache_dir)
    return RunContext(dataset, device, seed, cache_dir, settings, configs, fit=fit, tracker=tracker)


def compose(overrides: list[str], tmp_path: Path):
    """The resolved config for ``overrides`` (plus TINY and tmp paths), as ``python -m mbrec`` sees it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from mbrec.config import register_schemas

    register_schemas()

    real_data = any(o.startswith("dataset=") and o != "dataset=synthetic" for o in overrides)
    tiny = [o for o in TINY if not (real_data and o.startswith("dataset.synthetic."))]
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        return hydra_compose(
            config_name="config",
            overrides=tiny + [
                f"paths.cache_dir={tmp_path / 'cache'}",
                f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            ] + overrides,
        )


def run_pipeline(overrides: list[str], tmp_path: Path) -> tuple[float, dict[str, Any]]:
    """Run the pipeline in-process on a tiny synthetic dataset; return (objective, results.json)."""
    from mbrec.experiment import run

    cfg = compose(overrides, tmp_path)
    out = tmp_path / "out"
    value = run(cfg, out)
    return value, json.loads((out / "results.json").read_text())
