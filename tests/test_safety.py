"""Safety under hostile files, concurrency and divergence (docs/safety.md): cache files are checksummed
and never unpickled, the MLflow store is made whole or not at all and a broken one is named, identical
runs wait for each other and teachers are trained once, leftovers of killed processes are removed, and a
diverging run fails with a message naming optimizer.lr without stopping a study."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import pickle
import re
import shutil
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mbrec import cachefile, locks
from mbrec.errors import DivergedError, StoreError
from mbrec.services.store import end_stale_runs, ensure_store, store_problem
from mbrec.training.divergence import BPR_LIMIT, check_divergence

import faultkit
from conftest import TINY, run_pipeline

SRC = Path(__file__).resolve().parents[1] / "src" / "mbrec"
CKD = ["balancer=ckd", "balancer.gd_samples=16"]
SHORT_CKD = [*CKD, "train.max_epochs=2"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One MLflow store, created once; each test copies it (creating one takes seconds)."""
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    ensure_store(f"sqlite:///{db}")
    return db


def _with_store(store: Path, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(store, d / "mlflow.db")
    return d / "mlflow.db"


def _client(db: Path):
    from mbrec.services.tracking import client_for

    return client_for(f"sqlite:///{db}")


def _essence(results: dict) -> dict:
    teachers = {m: t["test"] for m, t in (results.get("balancer") or {}).get("teachers", {}).items()}
    return {k: results[k] for k in ("test", "history", "best_epoch", "best_valid_value")} | {"teachers": teachers}


# ------------------------------------------------------------------------------------- cache files
def test_cache_file_round_trip_keeps_tensors_and_state_dict_metadata(tmp_path) -> None:
    model = torch.nn.Linear(3, 2)
    obj = {"model": model.state_dict(), "n": 3, "x": 0.5, "names": ["a", None], "pair": (1, torch.ones(2)),
           "np": np.float64(0.25)}
    cachefile.save(obj, tmp_path / "f.pt")
    back = cachefile.load(tmp_path / "f.pt")
    assert isinstance(back["model"], OrderedDict) and hasattr(back["model"], "_metadata")
    assert torch.equal(back["model"]["weight"], model.weight) and back["names"] == ["a", None]
    assert back["np"] == 0.25 and type(back["np"]) is float
    assert not list(tmp_path.glob(".*.tmp"))


@dataclass
class _Result:
    value: float = 0.0


@pytest.mark.parametrize("bad", [_Result(), np.zeros(2), {"k": {1, 2}}])
def test_cache_file_refuses_to_write_what_a_safe_load_would_refuse(bad, tmp_path) -> None:
    with pytest.raises(TypeError, match="tensor or a plain container"):
        cachefile.save({"entry": bad}, tmp_path / "f.pt")
    assert not (tmp_path / "f.pt").exists()


def test_damaged_foreign_or_special_cache_files_are_refused_in_one_line(tmp_path) -> None:
    good = tmp_path / "good.pt"
    cachefile.save({"w": torch.arange(100.0)}, good)
    data = good.read_bytes()
    cases = {
        "flipped": data[:-50] + bytes([data[-50] ^ 1]) + data[-49:],
        "truncated": data[: len(data) // 2],
        "no header": data[data.index(b"\n") + 1 :],
        "empty": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    os.mkfifo(tmp_path / "fifo")  # would block a reader forever
    (tmp_path / "folder").mkdir()
    for name in [*cases, "fifo", "folder", "missing"]:
        with pytest.raises(cachefile.UnusableFile) as err:
            cachefile.load(tmp_path / name)
        assert "\n" not in str(err.value)
    with pytest.raises(cachefile.UnusableFile, match="checksum mismatch"):
        cachefile.load(tmp_path / "flipped")


class _Evil:
    """Unpickling this creates the marker file: what an attacker's cache entry would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _poisons(marker: Path) -> dict[str, bytes]:
    """A plain pickle, and a torch file holding the object with a valid mbrec header and checksum."""
    buffer = io.BytesIO()
    torch.save({"model": _Evil(marker), "state_dict": _Evil(marker)}, buffer)
    payload = buffer.getvalue()
    header = cachefile.MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    return {"pickle": pickle.dumps(_Evil(marker)), "checksummed torch file": header + payload}


def test_the_poison_works_when_unpickled(tmp_path) -> None:
    """The check that the poisoned-cache test means something: unpickling the poison does run code."""
    marker = tmp_path / "marker"
    pickle.loads(_poisons(marker)["pickle"])  # noqa: S301 - deliberately, on our own bytes
    assert marker.exists()


@pytest.mark.slow  # 5 CKD runs; the refusal of each poison is in the fast tier (cache-file tests above)
def test_poisoned_teacher_and_checkpoint_never_run_code_and_are_rebuilt(tmp_path, store, caplog) -> None:
    _with_store(store, tmp_path)
    _, first = run_pipeline(SHORT_CKD, tmp_path)
    [key] = [p.stem for p in (tmp_path / "cache" / "finished").glob("*.json")]
    teachers = [Path(t["cache_path"]) for t in first["balancer"]["teachers"].values()]
    checkpoint = tmp_path / "cache" / "checkpoints" / f"{key}.pt"
    marker = tmp_path / "marker"
    for name, poison in _poisons(marker).items():
        for path in [*teachers, checkpoint]:
            path.write_bytes(poison)
        caplog.clear()
        _, again = run_pipeline(SHORT_CKD, tmp_path)
        assert not marker.exists(), f"a {name} in the cache ran code"
        assert _essence(again) == _essence(first)
        assert not any(t["cached"] for t in again["balancer"]["teachers"].values())
        for path in [*teachers, checkpoint]:
            lines = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
            assert len(lines) == 1 and "\n" not in lines[0], (name, path, lines)
    # a damaged teacher (one flipped bit) is rebuilt too
    data = teachers[0].read_bytes()
    teachers[0].write_bytes(data[:-10] + bytes([data[-10] ^ 1]) + data[-9:])
    caplog.clear()
    _, again = run_pipeline(SHORT_CKD, tmp_path)
    assert "checksum mismatch" in caplog.text and _essence(again) == _essence(first)


def test_nothing_in_the_package_unpickles_a_file() -> None:
    forbidden = re.compile(r"\bpickle\b|weights_only\s*=\s*False|allow_pickle\s*=\s*True|"
                           r"^\s*(import|from)\s+(joblib|dill|cloudpickle)\b", re.M)
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert not forbidden.search(text), f"{path}: {forbidden.search(text)[0]}"
        for call in _calls(text, "torch.load("):
            assert "weights_only=True" in call, f"{path}: {call}"
        for call in _calls(text, "np.load("):
            assert "allow_pickle=False" in call, f"{path}: {call}"


def _calls(text: str, opening: str) -> list[str]:
    """Every ``opening...)`` call in ``text``, up to its matching parenthesis."""
    calls = []
    for match in re.finditer(re.escape(opening), text):
        depth, i = 1, match.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        calls.append(text[match.start() : i])
    return calls


# -------------------------------------------------------------------------------------- the store
def test_a_broken_store_is_named_with_the_fix_in_one_line(tmp_path) -> None:
    half = tmp_path / "half.db"  # what a kill during MLflow's own initialisation leaves
    con = sqlite3.connect(half)
    con.execute("CREATE TABLE assessments (id INTEGER)")
    con.close()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all")
    for db in (half, garbage):
        with pytest.raises(StoreError) as err:
            ensure_store(f"sqlite:///{db}")
        message = str(err.value)
        assert "\n" not in message and str(db) in message and f"mv {db} {db}.broken" in message


def test_a_store_of_another_schema_version_says_how_to_upgrade(tmp_path, store) -> None:
    db = _with_store(store, tmp_path)
    con = sqlite3.connect(db)
    con.execute("UPDATE alembic_version SET version_num = 'abc123'")
    con.commit()
    con.close()
    assert "schema version abc123" in store_problem(db)
    with pytest.raises(StoreError, match=re.escape(f"mlflow db upgrade sqlite:///{db.resolve()}")):
        ensure_store(f"sqlite:///{db}")


def test_experiments_keep_artifacts_beside_the_database(tmp_path, store) -> None:
    """The default experiment of a store mbrec creates, a run's experiment and a sweep's (parent callback)."""
    from omegaconf import OmegaConf

    from mbrec.sweep.parent import MlflowSweepParent

    db = tmp_path / "sub" / "new.db"
    ensure_store(f"sqlite:///{db}")
    beside = (db.parent / "mlruns").resolve().as_uri()
    client = _client(db)
    assert client.get_experiment("0").artifact_location.startswith(beside)
    cfg = OmegaConf.create({"mlflow": {"enabled": True, "tracking_uri": f"sqlite:///{db}", "experiment": "sweep-first"},
                            "hydra": {"sweep": {"dir": str(tmp_path / "sw")}, "sweeper": {}, "overrides": {"task": []}}})
    MlflowSweepParent().on_multirun_start(cfg)
    assert client.get_experiment_by_name("sweep-first").artifact_location.startswith(beside)


@pytest.mark.slow  # two concurrent runs in forked processes
def test_two_first_runs_at_once_create_the_store_once(tmp_path) -> None:
    args = [*TINY, "train.max_epochs=1", f"paths.cache_dir={tmp_path / 'cache'}",
            f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    procs = [faultkit.start([*args, f"seed={s}", f"hydra.run.dir={tmp_path / f'o{s}'}"], tmp_path / f"log{s}")
             for s in (1, 2)]
    for p in procs:
        p.join(300)
    logs = [(tmp_path / f"log{s}").read_text() for s in (1, 2)]
    assert [p.exitcode for p in procs] == [0, 0], logs
    assert sum(log.count("creating the store") for log in logs) == 1
    assert store_problem(tmp_path / "mlflow.db") is None and faultkit.leftovers(tmp_path) == []


# ------------------------------------------------------------------------ locks and leftovers
@pytest.mark.slow  # three concurrent CKD runs in forked processes
def test_identical_runs_wait_and_a_shared_teacher_is_trained_once(tmp_path, store) -> None:
    """A trains (teachers, then the student). C (another run key, same teachers) starts while A trains
    the text teacher, B (A's config) while A runs: C waits for A's teacher files, B for A's whole run.
    Pauses in A order this without timing: A goes on only once the other has said it waits."""
    db = _with_store(store, tmp_path)
    base = [*TINY, *CKD, "train.max_epochs=6", "train.patience=10", f"paths.cache_dir={tmp_path / 'cache'}",
            f"mlflow.tracking_uri=sqlite:///{db}"]
    logs = {n: tmp_path / f"log{n}" for n in "ABC"}
    a = faultkit.start([*base, f"hydra.run.dir={tmp_path / 'A'}"], logs["A"], {"pause": [
        ["teacher-text", str(logs["C"]), "waiting for it to finish"],
        ["vbpr+ckd", str(logs["B"]), "waiting for it to finish"]]})
    deadline = time.monotonic() + 120
    while "teacher[text]: training" not in (logs["A"].read_text() if logs["A"].exists() else ""):
        assert time.monotonic() < deadline and a.exitcode is None, "A never started its teacher"
        time.sleep(0.05)
    c = faultkit.start([*base, "balancer.lambda_kd=0.1", f"hydra.run.dir={tmp_path / 'C'}"], logs["C"])
    b = faultkit.start([*base, f"hydra.run.dir={tmp_path / 'B'}"], logs["B"])
    for p in (a, b, c):
        p.join(300)
    text = {n: path.read_text() for n, path in logs.items()}
    assert [p.exitcode for p in (a, b, c)] == [0, 0, 0], text
    assert re.search(r"teacher\[text\] \w+ is already being computed by pid \d+", text["C"])
    assert re.search(r"run \w+ \(vbpr\+ckd, seed 123\) is already being computed by pid \d+", text["B"])
    assert sum(t.count("]: training (every other modality ablated)") for t in text.values()) == 2

    res = {n: json.loads((tmp_path / n / "results.json").read_text()) for n in "AB"}
    assert _essence(res["A"]) == _essence(res["B"]) and res["A"]["mlflow_run_id"] != res["B"]["mlflow_run_id"]
    assert all(t["cached"] for t in res["B"]["balancer"]["teachers"].values())
    client = _client(db)
    for n in "AB":  # each run has its own MLflow run, every metric logged once per epoch
        run = client.get_run(res[n]["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "loss/bpr")) == len(res[n]["history"])
    exp = run.info.experiment_id
    assert len(client.search_runs([exp], "tags.`mbrec.stage` LIKE 'teacher%'")) == 2
    assert faultkit.leftovers(tmp_path) == [] and faultkit.running_runs(db) == []


def test_stale_temporary_files_go_only_when_their_key_is_not_held(tmp_path) -> None:
    cache = tmp_path / "cache"
    files = {
        "dead checkpoint": cache / "checkpoints" / ".k1.pt.abc123.tmp",
        "dead index": cache / "finished" / ".k1.json.x_y.tmp",
        "dead teacher": cache / "teachers" / "vbpr" / ".text-t1.pt.q1.tmp",
        "dead owner": cache / "locks" / ".run-k1.owner.z.tmp",
        "live checkpoint": cache / "checkpoints" / ".k2.pt.abc123.tmp",
        "live teacher": cache / "teachers" / "vbpr" / ".visual-t2.pt.q2.tmp",
        "not ours": cache / "checkpoints" / ".notes.txt.tmp",
    }
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("partial")
    from filelock import FileLock

    live = [FileLock(locks.lock_path(cache, "run", "k2")), FileLock(locks.lock_path(cache, "teacher", "t2"))]
    for lock in live:  # held by this process = by a live writer (flock: another descriptor conflicts)
        lock.acquire()
    try:
        removed = locks.remove_stale_tmp(cache)
    finally:
        for lock in live:
            lock.release()
    assert sorted(removed) == sorted(v for k, v in files.items() if k.startswith("dead"))
    assert all(v.exists() for k, v in files.items() if not k.startswith("dead"))


def test_running_runs_of_a_killed_attempt_are_marked_killed(tmp_path, store) -> None:
    db = _with_store(store, tmp_path)
    client = _client(db)
    exp = client.create_experiment("e")
    old = client.create_run(exp, tags={"mbrec.run_key": "K"}).info.run_id
    child = client.create_run(exp, tags={"mlflow.parentRunId": old}).info.run_id
    resumed = client.create_run(exp, tags={"mbrec.run_key": "K"}).info.run_id
    other = client.create_run(exp, tags={"mbrec.run_key": "K", "mbrec.cache_dir": "/elsewhere"}).info.run_id
    assert sorted(end_stale_runs(client, exp, "mbrec.run_key", "K", keep=resumed, cache_dir="/here")) == sorted([old, child])
    status = {r: client.get_run(r).info.status for r in (old, child, resumed, other)}
    assert status == {old: "KILLED", child: "KILLED", resumed: "RUNNING", other: "RUNNING"}


# ------------------------------------------------------------------------------------- divergence
def test_divergence_rule() -> None:
    adam = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e6)
    check_divergence("x", 0, {"loss/bpr": BPR_LIMIT * 0.99, "loss/l2": 1e9}, adam)  # L2 alone is no divergence
    for logs in ({"loss/bpr": BPR_LIMIT * 1.01}, {"loss/bpr": 0.5, "loss/kd": float("nan")},
                 {"loss/total": float("inf")}):
        with pytest.raises(DivergedError, match=r"lower optimizer\.lr \(it was 1e\+06\)"):
            check_divergence("vbpr+none", 3, logs, adam)
    with pytest.raises(DivergedError, match=r"balancer\.teachers\.optimizer\.lr"):
        check_divergence("teacher-text", 0, {"loss/bpr": 1e15}, adam)


@pytest.mark.parametrize("balancer, where", [("none", "vbpr+none"), ("ckd", "teacher-")])
def test_adam_at_lr_1e6_fails_as_diverged(balancer, where, tmp_path, store) -> None:
    db = _with_store(store, tmp_path)
    with pytest.raises(DivergedError) as err:
        run_pipeline([f"balancer={balancer}", "balancer.gd_samples=16" if balancer == "ckd" else "seed=123",
                      "optimizer.lr=1e6"], tmp_path)
    message = str(err.value)
    assert message.startswith(where) and "optimizer.lr" in message and "1e+06" in message and "\n" not in message
    client = _client(db)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert {r.info.status for r in runs} == {"FAILED"}
    student = [r for r in runs if r.data.tags.get("mbrec.stage") == "student"]
    assert student[0].data.tags["mbrec.failure"] == "diverged"
    assert not list((tmp_path / "cache" / "checkpoints").glob("*")) and not (tmp_path / "out" / "results.json").exists()


def test_a_diverged_command_exits_3_with_one_line(tmp_path) -> None:
    argv = [*TINY, "optimizer.lr=1e6", "mlflow.enabled=false", f"paths.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / 'out'}"]
    assert faultkit.run(argv, tmp_path / "log") == 3
    log = (tmp_path / "log").read_text()
    errors = [line for line in log.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "training diverged" in errors[0] and "optimizer.lr" in errors[0]
    assert "Traceback" not in log


@pytest.mark.parametrize("sampler", ["grid", pytest.param("tpe", marks=pytest.mark.slow)])  # a sweep each
def test_a_diverged_trial_is_recorded_as_failed_and_the_study_goes_on(sampler, tmp_path, store) -> None:
    """The current sweeper (hydra-optuna-sweeper): the diverged trial's MLflow run is FAILED
    (mbrec.failure=diverged), the study is told the worst value (-inf when maximising) and runs every
    other point; the grid order is random, so the diverged point may come last."""
    db = _with_store(store, tmp_path)
    space = ["hparams_search=paper_grid", "optimizer.lr=choice(1e6,1e-3)"] if sampler == "grid" else \
        ["hparams_search=tpe", "hydra.sweeper.n_trials=3", "optimizer.lr=choice(1e6,1e-3)"]
    argv = ["-m", *space, *TINY, "train.max_epochs=2", "train.l2=1e-5", f"paths.cache_dir={tmp_path / 'cache'}",
            f"mlflow.tracking_uri=sqlite:///{db}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    assert faultkit.run(argv, tmp_path / "log") == 0, (tmp_path / "log").read_text()[-3000:]
    assert "training diverged" in (tmp_path / "log").read_text()
    study = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert study["best_params"]["optimizer.lr"] == 0.001 and study["best_value"] > 0
    client = _client(db)
    parent = client.get_run((tmp_path / "sweep" / "mlflow_parent_run_id").read_text().strip())
    trials = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert parent.info.status == "FINISHED"
    outcomes = {(r.data.params["optimizer.lr"], r.info.status, r.data.tags.get("mbrec.failure")) for r in trials}
    assert outcomes == {("0.001", "FINISHED", None), ("1000000.0", "FAILED", "diverged")}
