"""Fault injection: kill -9 at seeded random points of a run, inside its atomic writes (teachers,
checkpoints, results), while the MLflow store is created, and during a sweep; each time the command is
run again until it finishes. The final results equal an uninterrupted run's (test metrics and history),
nothing corrupt is used, and nothing is left behind: no temporary files, no checkpoint, no RUNNING MLflow
run (docs/safety.md). Children are forked from one pre-imported server (tests/faultkit.py)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import yaml

from mbrec.services.store import store_problem

import faultkit
from conftest import TINY

RUN = [*TINY, "balancer=ckd", "balancer.gd_samples=16", "balancer.teachers.train.max_epochs=2"]  # every kind of write
SWEEP = ["-m", "hparams_search=paper_grid", *TINY, "train.max_epochs=3", "optimizer.lr=choice(1e-3,5e-3)",
         "train.l2=1e-5"]
KILLED = -9


def _argv(d: Path, base: list[str] = RUN) -> list[str]:
    return [*base, f"paths.cache_dir={d / 'cache'}", f"mlflow.tracking_uri=sqlite:///{d / 'mlflow.db'}",
            f"hydra.run.dir={d / 'out'}", f"hydra.sweep.dir={d / 'sweep'}"]


def _essence(results: dict) -> dict:
    """What must not change: the test metrics, the history, the best epoch and value, the teachers' metrics."""
    teachers = {m: t["test"] for m, t in (results.get("balancer") or {}).get("teachers", {}).items()}
    return {k: results[k] for k in ("test", "history", "best_epoch", "best_valid_value")} | {"teachers": teachers}


def _assert_clean(d: Path) -> None:
    assert faultkit.leftovers(d) == [], "temporary files left behind"
    assert not list((d / "cache" / "checkpoints").glob("*")), "a checkpoint was left behind"
    assert faultkit.running_runs(d / "mlflow.db") == [], "an MLflow run is still RUNNING"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A fresh MLflow store to copy into each case (creating one takes seconds)."""
    from mbrec.services.store import ensure_store

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    ensure_store(f"sqlite:///{db}")
    return db


def _case(tmp_path: Path, store: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    shutil.copy(store, d / "mlflow.db")
    return d


@pytest.fixture(scope="module")
def reference(tmp_path_factory, store) -> tuple[dict, int, int]:
    """The uninterrupted run: its results, its number of training epochs (teachers and student) and of
    checkpoint writes."""
    d = _case(tmp_path_factory.mktemp("ref"), store, "ref")
    code = faultkit.run(_argv(d), str(d / "log"), {"count": "checkpoints"})
    assert code == 0, (d / "log").read_text()[-3000:]
    _assert_clean(d)
    results = json.loads((d / "out" / "results.json").read_text())
    epochs, checkpoints = (int(Path(str(d / "log") + suffix).read_text()) for suffix in (".epochs", ".count"))
    return _essence(results), epochs, checkpoints


def _finish(d: Path, attempt: int) -> dict:
    """Run the same command again to its end; the results it leaves."""
    code = faultkit.run(_argv(d), str(d / f"log{attempt}"))
    assert code == 0, (d / f"log{attempt}").read_text()[-3000:]
    return json.loads((d / "out" / "results.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_at_random_points_then_rerun_gives_the_same_results(seed, tmp_path, store, reference) -> None:
    """Two kills at seeded points (a random epoch of any fit, a random delay of up to 0.25 s into it), then
    the run to its end."""
    ref, epochs, _ = reference
    rng = random.Random(seed)
    d = _case(tmp_path, store, f"s{seed}")
    kills = 0
    for attempt, last in enumerate((epochs, max(1, epochs // 2))):  # a resumed run has fewer epochs left
        fault = {"epoch": rng.randint(1, last), "delay": rng.uniform(0.0, 0.25)}
        code = faultkit.run(_argv(d), str(d / f"log{attempt}"), fault)
        assert code in (KILLED, 0), (d / f"log{attempt}").read_text()[-3000:]
        kills += code == KILLED
        print(f"seed {seed}: {fault} -> {'killed' if code == KILLED else 'finished first'}")
    assert kills >= 1
    assert _essence(_finish(d, 9)) == ref
    _assert_clean(d)


@pytest.mark.slow
@pytest.mark.parametrize("match, nth, frac", [
    ("teachers", 1, 0.0),      # the first teacher file, before its first byte
    ("teachers", 1, 0.5),      # the first teacher file, cut in the middle
    ("teachers", 2, 1.0),      # the second, complete but not renamed
    ("checkpoints", 2, 0.3),   # a checkpoint after the first one
    ("results.json", 1, 0.7),  # the results file
])
def test_kill_inside_an_atomic_write_leaves_nothing_used_or_behind(match, nth, frac, tmp_path, store, reference) -> None:
    ref, _, checkpoints = reference
    assert match != "checkpoints" or nth <= checkpoints
    d = _case(tmp_path, store, "w")
    assert faultkit.run(_argv(d), str(d / "log0"), {"write": nth, "match": match, "frac": frac}) == KILLED
    assert faultkit.leftovers(d), "the killed write left no temporary file: the fault missed"
    results = _finish(d, 1)
    assert _essence(results) == ref
    log = (d / "log1").read_text()
    assert "corrupt" not in log and "unusable" not in log  # a cut file is never in place to be used
    _assert_clean(d)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_kill_while_the_mlflow_store_is_created(seed, tmp_path, reference) -> None:
    ref, _, _ = reference
    d = tmp_path / "fresh"  # no store yet: the first run creates it
    d.mkdir()
    statement = random.Random(seed).randint(1, 1600)  # of ~1700 SQL statements the creation runs
    assert faultkit.run(_argv(d), str(d / "log0"), {"store_sql": statement}) == KILLED
    assert not (d / "mlflow.db").exists(), "a half-made store is in place"
    assert faultkit.leftovers(d), "the kill missed the store's creation"
    assert _essence(_finish(d, 1)) == ref
    assert store_problem(d / "mlflow.db") is None
    _assert_clean(d)


@pytest.fixture(scope="module")
def sweep_reference(tmp_path_factory, store) -> tuple[dict, dict, int]:
    """The uninterrupted sweep: its study, its trials' results and its number of training epochs."""
    d = _case(tmp_path_factory.mktemp("sweepref"), store, "ref")
    assert faultkit.run(_argv(d, SWEEP), str(d / "log"), {"count": "finished"}) == 0, (d / "log").read_text()[-3000:]
    return _study(d), _finished(d), int(Path(str(d / "log") + ".epochs").read_text())


def _study(d: Path) -> dict:
    study = yaml.safe_load((d / "sweep" / "optimization_results.yaml").read_text())
    return {"best_value": study["best_value"], "best_params": study["best_params"]}


def _finished(d: Path) -> dict:
    return {p.stem: _essence(json.loads(p.read_text())) for p in (d / "cache" / "finished").glob("*.json")}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_kill_a_sweep_then_rerun_it(seed, tmp_path, store, sweep_reference) -> None:
    study, trials, epochs = sweep_reference
    rng = random.Random(100 + seed)
    d = _case(tmp_path, store, "sweep")
    fault = {"epoch": rng.randint(1, epochs), "delay": rng.uniform(0.0, 0.5)}
    killed = faultkit.run(_argv(d, SWEEP), str(d / "log0"), fault) == KILLED
    print(f"sweep seed {seed}: {fault} -> {'killed' if killed else 'finished first'}")
    assert faultkit.run(_argv(d, SWEEP), str(d / "log1")) == 0, (d / "log1").read_text()[-3000:]
    assert _study(d) == study
    assert _finished(d) == trials
    _assert_clean(d)
    from mbrec.services.tracking import client_for

    client = client_for(f"sqlite:///{d / 'mlflow.db'}")
    parent = (d / "sweep" / "mlflow_parent_run_id").read_text().strip()
    assert client.get_run(parent).info.status == "FINISHED"
    sweeps = client.search_runs([client.get_run(parent).info.experiment_id], "tags.`mbrec.stage` = 'sweep'")
    if killed:
        assert [r.info.run_id for r in sweeps] == [parent], "the re-run continues the killed sweep's parent run"


@pytest.mark.slow
def test_a_killed_sweeps_parent_is_marked_killed_by_the_next_sweep(tmp_path, store, sweep_reference) -> None:
    """Issue: a kill -9 of a sweep left its MLflow parent RUNNING forever, one per kill."""
    from mbrec.services.tracking import client_for

    _, _, epochs = sweep_reference
    d = _case(tmp_path, store, "sweep")
    assert faultkit.run(_argv(d, SWEEP), str(d / "log0"), {"epoch": max(1, epochs // 2), "delay": 0.0}) == KILLED
    parent = (d / "sweep" / "mlflow_parent_run_id").read_text().strip()
    client = client_for(f"sqlite:///{d / 'mlflow.db'}")
    assert client.get_run(parent).info.status == "RUNNING"
    other = [a.replace(str(d / "sweep"), str(d / "other")) for a in _argv(d, SWEEP)]  # another sweep folder
    assert faultkit.run(other, str(d / "log1")) == 0, (d / "log1").read_text()[-3000:]
    assert client.get_run(parent).info.status == "KILLED"
    assert faultkit.running_runs(d / "mlflow.db") == []
