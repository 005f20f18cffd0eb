"""The second round of faults (issue: "nothing lost, nothing executed, nothing silently wrong"): each
case is a reproduction of a failure a hostile user or machine caused, now refused in one line or
handled. Cheap cases only; the expensive ones are in tests/test_faults.py (marked slow)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mbrec.errors import ConfigError, DataError, DivergedError

from conftest import TINY, compose, run_pipeline

REPO = Path(__file__).resolve().parents[1]


def _mbrec(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m mbrec`` in a child (no MLflow: creating its store costs seconds)."""
    import os

    flags = [a for a in args if a.startswith("-")]
    args = tuple(a for a in args if not a.startswith("-"))
    argv = [sys.executable, "-m", "mbrec", *flags, *TINY, f"paths.cache_dir={tmp_path / 'cache'}",
            "mlflow.enabled=false", f"hydra.run.dir={tmp_path / 'out'}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *args]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})


# ------------------------------------------------------------------------- silently wrong results
@pytest.mark.parametrize("epochs, every", [(3, 5), (2, 50), (1, 1)])
def test_the_last_epoch_always_validates(epochs, every, tmp_path) -> None:
    _, results = run_pipeline([f"train.max_epochs={epochs}", f"train.eval_every={every}", "train.patience=3",
                               "mlflow.enabled=false"], tmp_path)
    assert results["best_epoch"] == epochs - 1 and math.isfinite(results["best_valid_value"])
    assert "val/" + results["metric"] in results["history"][-1]


def test_a_run_whose_validations_are_never_finite_is_an_error(tmp_path, monkeypatch) -> None:
    from mbrec.training import evaluation

    real = evaluation.Evaluator.evaluate

    def nan_valid(self, model, split, *args, **kwargs):
        out = real(self, model, split, *args, **kwargs)
        return {k: float("nan") for k in out} if split == "valid" else out

    monkeypatch.setattr(evaluation.Evaluator, "evaluate", nan_valid)
    with pytest.raises(DivergedError, match="no validation gave a usable recall@20"):
        run_pipeline(["train.max_epochs=2", "mlflow.enabled=false"], tmp_path)
    assert not list((tmp_path / "cache").glob("finished/*.json"))


@pytest.mark.parametrize("override, match", [
    ("train.max_epochs=0", "train.max_epochs=0"),
    ("train.batch_size=0", "train.batch_size=0"),
    ("train.batch_size=-5", "train.batch_size=-5"),
    ("train.eval_every=0", "train.eval_every=0"),
    ("train.eval_batch_size=0", "train.eval_batch_size=0"),
    ("train.patience=-3", "train.patience=-3"),
    ("train.topk=[0]", r"train.topk\[0\]=0"),
    ("train.topk=[-5,20]", r"train.topk\[0\]=-5"),
    ("train.topk=[]", r"train.topk=\[\]"),
    ("train.topk=[1000000000]", r"train.topk\[0\]=1000000000"),
    ("train.l2=nan", "train.l2=nan"),
    ("optimizer.lr=nan", "optimizer.lr=nan"),
    ("optimizer.lr=-1", "optimizer.lr=-1"),
    ("optimizer.lr=inf", "optimizer.lr=inf"),
    ("device=tpu", "device='tpu'"),
    ("device=cuda:7", "device='cuda:7'"),
    ("+optimizer.lr={_target_:os.getcwd}", "optimizer.lr._target_"),
])
def test_bad_values_are_a_config_error_before_the_data(override, match, tmp_path, monkeypatch) -> None:
    from mbrec import experiment

    monkeypatch.setattr(experiment.Pipeline, "load_data", lambda self: pytest.fail("the data was read"))
    cfg = compose([o for o in [override] if not o.startswith("+")] + ["mlflow.enabled=false"], tmp_path)
    if override.startswith("+"):
        from omegaconf import OmegaConf, open_dict

        with open_dict(cfg):
            cfg.optimizer.lr = OmegaConf.create({"_target_": "os.getcwd"})
    with pytest.raises(ConfigError, match=match):
        experiment.run(cfg, tmp_path / "out")


def test_a_topk_above_the_items_is_said_and_allocates_nothing_beyond_them(tmp_path, caplog) -> None:
    _, results = run_pipeline(["train.topk=[20,500]", "mlflow.enabled=false", "train.max_epochs=1"], tmp_path)
    assert "train.topk=[20, 500]: cut-offs >= the dataset's 60 items" in caplog.text
    assert results["test"]["recall@500"] == pytest.approx(1.0)


def test_bad_values_on_the_command_line_are_one_line_exit_2(tmp_path) -> None:
    proc = _mbrec(tmp_path, "train.batch_size=0")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "train.batch_size=0" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------- data files
def _toy(folder: Path, rows, n_items: int = 4, header: str = "userID\titemID\tx_label") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "toy.inter").write_text("\n".join([header] + ["\t".join(map(str, r)) for r in rows]) + "\n")
    np.save(folder / "image_feat.npy", np.random.default_rng(0).random((n_items, 3)).astype(np.float32))
    return folder


ROWS = [(0, 0, 0), (0, 1, 1), (0, 2, 2), (1, 1, 0), (1, 2, 1), (1, 3, 2), (2, 3, 0), (2, 0, 1), (2, 1, 2)]


def test_a_header_naming_a_column_twice_is_a_data_error(tmp_path) -> None:
    from mbrec.data.readers import read_dataset

    folder = _toy(tmp_path / "toy", [(u, u, i, s) for u, i, s in ROWS], header="userID\tuserID\titemID\tx_label")
    with pytest.raises(DataError, match=r"toy.inter: header: userID: is named twice"):
        read_dataset(folder, "toy")


def test_a_user_with_every_item_is_a_data_error(tmp_path) -> None:
    from mbrec.data.readers import read_dataset

    folder = _toy(tmp_path / "toy", ROWS + [(3, i, 0) for i in range(4)])  # user 3 trains on all 4 items
    with pytest.raises(DataError, match=r"toy.inter: user 3: has every one of the 4 items"):
        read_dataset(folder, "toy")


# ------------------------------------------------------------------------ the finished-run index
@pytest.mark.parametrize("entry, why", [
    ({"best_valid_value": "0.5", "metric": "recall@20"}, "not a finite number"),
    ({"best_valid_value": 0.5}, "no metric name"),
    ({"best_valid_value": float("nan"), "metric": "recall@20"}, "not a finite number"),
])
def test_the_finished_index_ignores_and_reports_what_it_cannot_use(entry, why, tmp_path, caplog) -> None:
    from mbrec.services import finished

    finished.index_path(tmp_path, "k").parent.mkdir(parents=True)
    finished.index_path(tmp_path, "k").write_text(json.dumps(entry))
    assert finished.replay(tmp_path, "k", tmp_path / "out") is None
    assert why in caplog.text and "k.json" in caplog.text


# -------------------------------------------------------------------------------- tuned files
def _study_file(d: Path, **fields) -> Path:
    study = {"best_params": {"optimizer.lr": 0.001}, "best_value": 0.5,
             "search_space": {"optimizer.lr": {"choices": [0.001, 0.005]}}, **fields}
    d.mkdir(parents=True, exist_ok=True)
    (d / "optimization_results.yaml").write_text(yaml.safe_dump(study))
    return d


@pytest.mark.parametrize("fields, match", [
    ({"best_value": float("-inf")}, "best_value: -inf is not a finite number"),
    ({"best_value": None}, "best_value: None"),
    ({"still_running": [3]}, r"still_running: trials \[3\]"),
    ({"best_params": {"optimizer.lr": {"_target_": "mbrec.utils.atomic_write_text"}}}, "not a plain finite value"),
    ({"best_params": {"optimizer.lr": 0.001, "optimizer._target_": "os.system"}}, "not the search space"),
    ({"best_params": {"optimizer.lr": 1e6}}, "outside the search space"),
    ({"best_params": {"optimizer.lr": "${oc.env:HOME}"}, "search_space": None}, "not a plain finite value"),
    ({"best_params": {"optimizer._target_": "os.system"}, "search_space": None}, "not a plain dotted config key"),
])
def test_a_tuned_file_is_only_written_from_plain_values_of_the_space(fields, match, tmp_path) -> None:
    from mbrec.sweep.tuned import write_tuned

    d = _study_file(tmp_path / "sweep", **fields)
    with pytest.raises(DataError, match=match):
        write_tuned(d, "cell", conf=tmp_path / "conf")
    assert not (tmp_path / "conf").exists()


def test_a_plain_study_result_is_tuned(tmp_path) -> None:
    from mbrec.sweep.tuned import write_tuned

    target = write_tuned(_study_file(tmp_path / "sweep"), "cell", conf=tmp_path / "conf")
    assert yaml.safe_load(target.read_text()) == {"optimizer": {"lr": 0.001}}


# ------------------------------------------------------------------------------------- sweeps
SWEEP = ["-m", "hparams_search=paper_grid", "train.max_epochs=2", "train.l2=1e-5"]


def _sweep(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return _mbrec(tmp_path, *SWEEP, f"hydra.sweeper.storage={tmp_path / 'study.journal'}", "skip_finished=false", *args)


def test_a_study_where_every_point_diverges_has_no_best(tmp_path) -> None:
    proc = _sweep(tmp_path, "optimizer.lr=choice(1e5,1e6)")
    assert proc.returncode != 0
    assert "has no best" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "sweep" / "optimization_results.yaml").exists()


@pytest.mark.slow
def test_foreign_trials_never_become_the_best_and_running_ones_are_named(tmp_path) -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    from mbrec import pruning
    from mbrec.sweep.tuned import write_tuned

    assert _sweep(tmp_path, "optimizer.lr=choice(1e-3,5e-3)").returncode == 0
    storage = pruning.open_storage(str(tmp_path / "study.journal"))
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    lr = CategoricalDistribution([1e-3, 5e-3])
    study.add_trial(create_trial(  # a crafted point: a key outside the space, and a better value
        params={"optimizer.lr": 1e-3, "optimizer._target_": "os.system"}, value=0.99, state=TrialState.COMPLETE,
        distributions={"optimizer.lr": lr, "optimizer._target_": CategoricalDistribution(["os.system"])}))
    study.add_trial(create_trial(params={"optimizer.lr": 1e6}, value=0.98, state=TrialState.COMPLETE,
                                 distributions={"optimizer.lr": CategoricalDistribution([1e6])}))
    running = study.ask({"optimizer.lr": lr})  # another sweep's trial, still training
    proc = _sweep(tmp_path, "optimizer.lr=choice(1e-3,5e-3)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert results["best_value"] < 0.9 and set(results["best_params"]) == {"optimizer.lr"}
    assert results["still_running"] == [running.number]
    assert f"trials [{running.number}] are still running" in proc.stdout + proc.stderr
    assert "ignoring trials [3, 4]" not in proc.stdout and "ignoring trials [2, 3]" in proc.stdout + proc.stderr
    with pytest.raises(DataError, match="had not finished"):
        write_tuned(tmp_path / "sweep", "cell", conf=tmp_path / "conf")


@pytest.mark.parametrize("args, match", [
    (["hydra.sweeper.storage=studies.db", "optimizer.lr=choice(1e-3,5e-3)"], "hydra.sweeper.storage='studies.db'"),
    (["optimizer.lr=interval(1e-3,5e-3)"], "the grid sampler needs discrete values"),
])
def test_bad_sweeper_settings_are_one_line(args, match, tmp_path) -> None:
    proc = _mbrec(tmp_path, *SWEEP, *args)
    assert proc.returncode != 0
    assert match in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]


# ------------------------------------------------------------------------------------ journals
def _journal_with_a_study(path: Path) -> list[bytes]:
    import optuna

    from mbrec import pruning

    study = optuna.create_study(study_name="s", storage=pruning.open_storage(str(path)), direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={"x": 1.0}, value=0.5,
                                              distributions={"x": optuna.distributions.FloatDistribution(0, 2)}))
    return path.read_bytes().splitlines(keepends=True)


def test_a_torn_last_line_is_cut_off_with_a_warning_and_appends_go_on(tmp_path, caplog) -> None:
    import optuna

    from mbrec import pruning

    path = tmp_path / "study.journal"
    lines = _journal_with_a_study(path)
    with path.open("ab") as f:
        f.write(lines[-1][: len(lines[-1]) // 2])  # a write cut short by a full disk or a kill
    storage = pruning.open_storage(str(path))
    assert "torn last line" in caplog.text and str(path) in caplog.text
    study = optuna.load_study(study_name="s", storage=storage)
    study.add_trial(optuna.trial.create_trial(params={"x": 1.5}, value=0.7,
                                              distributions={"x": optuna.distributions.FloatDistribution(0, 2)}))
    again = optuna.load_study(study_name="s", storage=pruning.open_storage(str(path)))
    assert [t.value for t in again.trials] == [0.5, 0.7] and again.best_value == 0.7


def test_a_full_disk_while_appending_is_one_line_naming_the_journal(tmp_path, monkeypatch) -> None:
    import errno
    import os

    import optuna

    from mbrec import pruning

    path = tmp_path / "study.journal"
    _journal_with_a_study(path)
    storage = pruning.open_storage(str(path))
    real_open = open

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 3])
            self.f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def full_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return Full(f) if str(file) == str(path) and mode == "ab" else f

    import builtins

    monkeypatch.setattr(builtins, "open", full_open)
    with pytest.raises(ValueError, match=f"{path}: cannot append to the study journal .No space left on device."):
        optuna.create_study(study_name="t", storage=storage)
    monkeypatch.setattr(builtins, "open", real_open)
    assert path.read_bytes().endswith(b"\n")  # the partial line was cut off at once
    assert optuna.load_study(study_name="s", storage=pruning.open_storage(str(path))).best_value == 0.5


@pytest.mark.parametrize("damage", ["garbage", "unknown op", "list", "binary", "folder"])
def test_a_damaged_journal_is_one_line_naming_it_and_the_fix(damage, tmp_path) -> None:
    from mbrec import pruning

    path = tmp_path / "study.journal"
    if damage == "folder":
        path.mkdir()
    else:
        lines = _journal_with_a_study(path)
        bad = {"garbage": b"this is not json\n", "unknown op": b'{"op_code": 99, "worker_id": "w"}\n',
               "list": b"[1, 2, 3]\n", "binary": b"\xff\xfe\x00\x81garbage\n"}[damage]
        path.write_bytes(b"".join(lines[:1]) + bad + b"".join(lines[1:]))
    with pytest.raises(ValueError, match=f"^{path}: ") as err:
        pruning.open_storage(str(path))
    assert "\n" not in str(err.value) and "Fix:" in str(err.value)


# ------------------------------------------------------------------------------- output folders
def test_fresh_dir_gives_each_caller_its_own_folder(tmp_path, monkeypatch) -> None:
    from mbrec import config

    first = config.fresh_dir(tmp_path / "out" / "t")
    assert config.fresh_dir(tmp_path / "out" / "t") == first  # Hydra resolves it again: same answer
    monkeypatch.setattr(config, "_FRESH", {})  # another process, same second, same config
    second = config.fresh_dir(tmp_path / "out" / "t")
    assert (first, second) == (str(tmp_path / "out" / "t"), str(tmp_path / "out" / "t-2"))
    assert config.fresh_dir(tmp_path / "sweep", "0-job") == "0-job"
    monkeypatch.setattr(config, "_FRESH", {})
    assert config.fresh_dir(tmp_path / "sweep", "0-job") == "0-job-2"


def test_the_default_run_folders_are_fresh_and_trial_folders_are_their_trials() -> None:
    """A single run always gets a new folder; a trial's folder is named by its trial number (the sweeper
    makes the job number the trial number), inside a sweep folder named by the sweep's identity: a re-run
    of the same sweep continues its trials' folders, two different sweeps never share one."""
    conf = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())
    assert conf["hydra"]["run"]["dir"].startswith("${mbrec.fresh_dir:")
    assert conf["hydra"]["sweep"]["subdir"].startswith("${hydra.job.num}-")
    assert "${mbrec.sweep_name:" in conf["hydra"]["sweep"]["dir"]


@pytest.mark.slow
def test_two_runs_given_one_folder_keep_their_own_results(tmp_path) -> None:
    for lkd in ("0.01", "0.1"):
        proc = _mbrec(tmp_path, "train.max_epochs=1", f"hydra.run.dir=${{mbrec.fresh_dir:{tmp_path / 'same'}}}",
                      f"optimizer.lr={lkd}")
        assert proc.returncode == 0, proc.stderr[-2000:]
    lrs = [json.loads((tmp_path / d / "results.json").read_text())["config"]["optimizer"]["lr"] for d in ("same", "same-2")]
    assert lrs == [0.01, 0.1]


# ------------------------------------------------------------------- places that cannot be written
def test_a_symlinked_lock_is_refused_and_its_target_untouched(tmp_path) -> None:
    from mbrec import locks
    from mbrec.services.store import ensure_store

    target = tmp_path / "precious"
    target.write_text("keep me")
    (tmp_path / "cache" / "locks").mkdir(parents=True)
    locks.lock_path(tmp_path / "cache", "run", "k").symlink_to(target)
    with pytest.raises(ConfigError, match=r"run-k.lock: the lock file is a symbolic link .*Fix: remove it"):
        with locks.hold(tmp_path / "cache", "run", "k", "run k"):
            pass
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / ".mlflow.db.lock").symlink_to(target)
    with pytest.raises(ConfigError, match=r".mlflow.db.lock: the lock file is a symbolic link"):
        ensure_store(f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}")
    assert target.read_text() == "keep me"


def test_a_cache_that_cannot_be_written_is_one_line_exit_2(tmp_path) -> None:
    (tmp_path / "afile").write_text("")
    proc = _mbrec(tmp_path, "train.max_epochs=1", f"paths.cache_dir={tmp_path / 'afile'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"{tmp_path / 'afile'}" in proc.stderr and "Fix:" in proc.stderr


def test_an_output_folder_that_cannot_be_made_is_one_line_exit_2(tmp_path) -> None:
    (tmp_path / "afile").write_text("")
    proc = _mbrec(tmp_path, "train.max_epochs=1", f"hydra.run.dir=${{mbrec.fresh_dir:{tmp_path / 'afile' / 'x'}}}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "cannot create the output folder" in proc.stderr


def test_read_only_or_full_places_are_named_in_one_line() -> None:
    import errno
    import os
    import sqlite3

    from mbrec.errors import place_problem

    for code in (errno.EROFS, errno.ENOSPC, errno.EACCES):
        wrapped = RuntimeError("while saving")
        wrapped.__cause__ = OSError(code, os.strerror(code), "/ro/out/results.json")
        line = place_problem(wrapped)
        assert line.startswith(f"/ro/out/results.json: {os.strerror(code)}. Fix:") and "\n" not in line
    db = place_problem(sqlite3.OperationalError("attempt to write a readonly database"), "sqlite:////ro/mlflow.db")
    assert db.startswith("sqlite:////ro/mlflow.db: the MLflow store cannot be written")
    assert place_problem(ValueError("something else")) is None


# ------------------------------------------------------------------------------ MLflow leftovers
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from mbrec.services.store import ensure_store

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    ensure_store(f"sqlite:///{db}")
    return db


def _client(tmp_path: Path, store: Path):
    import shutil

    from mbrec.services.tracking import client_for

    shutil.copy(store, tmp_path / "mlflow.db")
    return client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_parents_of_killed_sweeps_are_marked_killed(tmp_path, store) -> None:
    import os
    import socket

    from mbrec.record import STAGE_SWEEP, Tag
    from mbrec.services.store import end_stale_parents

    client = _client(tmp_path, store)
    exp = client.create_experiment("e")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    killed = client.create_run(exp, tags={Tag.STAGE: STAGE_SWEEP, Tag.SWEEP_OWNER: f"{host}:{dead.stdout.strip()}"})
    alive = client.create_run(exp, tags={Tag.STAGE: STAGE_SWEEP, Tag.SWEEP_OWNER: f"{host}:{os.getpid()}"})
    adopted = client.create_run(exp, tags={Tag.STAGE: STAGE_SWEEP, Tag.SWEEP_OWNER: f"{host}:{dead.stdout.strip()}"})
    assert end_stale_parents(client, exp, keep=adopted.info.run_id) == [killed.info.run_id]
    status = {r: client.get_run(r.info.run_id).info.status for r in (killed, alive, adopted)}
    assert list(status.values()) == ["KILLED", "RUNNING", "RUNNING"]


def test_a_run_killed_after_recording_does_not_log_its_results_twice(tmp_path, store, monkeypatch) -> None:
    from mbrec.record import Tag
    from mbrec.services import finished

    client = _client(tmp_path, store)
    real = finished.record

    def killed(*args, **kwargs):  # the kill point: results printed and logged, the index not yet written
        raise KeyboardInterrupt

    monkeypatch.setattr(finished, "record", killed)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(["train.max_epochs=2"], tmp_path)
    monkeypatch.setattr(finished, "record", real)
    _, results = run_pipeline(["train.max_epochs=2"], tmp_path)
    run = client.get_run(results["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags.get(Tag.MODEL_LOGGED) == "true"
    ref_client = _client(tmp_path / "ref", store) if (tmp_path / "ref").mkdir() is None else None
    _, ref = run_pipeline(["train.max_epochs=2"], tmp_path / "ref")
    for key in ("test/recall_at_20", "best_epoch", "best/val/recall_at_20"):  # as many entries as an uninterrupted run
        assert len(client.get_metric_history(run.info.run_id, key)) == \
            len(ref_client.get_metric_history(ref["mlflow_run_id"], key)), key
    assert len(run.outputs.model_outputs) == 1


# ---------------------------------------------------------------------------------------- threads
def test_threads_auto_honours_omp_num_threads_and_the_users_torch_setting(monkeypatch) -> None:
    import torch

    from mbrec import runtime

    monkeypatch.setattr(runtime, "available_cpus", lambda: 8)
    monkeypatch.setattr(runtime, "_LAST", None)
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert runtime.apply_threads("auto") == 1 and torch.get_num_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    torch.set_num_threads(2)  # the user, between two runs
    assert runtime.apply_threads("auto") == 2
    assert runtime.apply_threads("auto") == 2  # mbrec's own setting is not mistaken for the user's
    assert runtime.apply_threads(4) == 4  # a number is taken as given
    torch.set_num_threads(2)


# ------------------------------------------------------------------------------ sparse user ids
def test_sparse_user_ids_are_renumbered_counted_and_mapped(tmp_path) -> None:
    from mbrec.data.readers import read_dataset

    sparse = [(u * 1000 + 7, i, s) for u, i, s in ROWS]  # ids 7, 1007, 2007: a filtered subset
    plain = read_dataset(_toy(tmp_path / "plain", ROWS), "toy")
    ds = read_dataset(_toy(tmp_path / "sparse", sparse), "toy")
    assert ds.n_users == 3 and list(ds.meta["user_ids"]) == [7, 1007, 2007]
    assert ds.summary()["accepted"] == {"user_ids_renumbered": 3}
    assert all((getattr(ds, s) != getattr(plain, s)).nnz == 0 for s in ("train", "valid", "test"))


def test_absurd_user_ids_are_still_refused(tmp_path) -> None:
    from mbrec.data.readers import read_dataset

    rows = ROWS + [(1_400_000_000, 0, 0)]  # a timestamp in the user column
    with pytest.raises(DataError, match=r"user id: the largest id is 1400000000 but there are only 4 distinct"):
        read_dataset(_toy(tmp_path / "toy", rows), "toy")


def test_a_run_on_sparse_user_ids_writes_the_mapping_beside_its_results(tmp_path) -> None:
    rng = np.random.default_rng(0)
    rows = [(u, i, s) for u in range(30) for i, s in zip(rng.choice(20, 6, replace=False), (0, 0, 0, 0, 1, 2))]
    folder = _toy(tmp_path / "data" / "toy", [(u * 10 + 3, i, s) for u, i, s in rows], n_items=20)
    _, results = run_pipeline(["dataset=synthetic", "dataset.name=toy", "dataset.source=files", f"dataset.path={folder}",
                               "dataset.synthetic=null", "mlflow.enabled=false", "train.topk=[5,10]",
                               "train.metric=recall@10", "train.max_epochs=1"], tmp_path)
    assert results["dataset"]["accepted"]["user_ids_renumbered"] == 30
    mapping = (tmp_path / "out" / "user_ids.tsv").read_text().splitlines()
    assert mapping[0] == "user\toriginal_user_id" and mapping[1:3] == ["0\t3", "1\t13"] and len(mapping) == 31


def test_stale_tmp_cleanup_never_deletes_through_a_symlinked_folder(tmp_path) -> None:
    from mbrec import locks

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / ".text-abc.pt.123.tmp"  # looks like a teacher's temporary file
    victim.write_text("not mbrec's")
    (tmp_path / "cache" / "teachers").mkdir(parents=True)
    (tmp_path / "cache" / "teachers" / "vbpr").symlink_to(elsewhere)
    locks.remove_stale_tmp(tmp_path / "cache")
    assert victim.exists()


DAMAGE_AFTER_FIRST_TRIAL = """
import os
import mbrec.experiment as e
_run = e.run
def run(*args, **kwargs):
    value = _run(*args, **kwargs)
    with open(os.environ["JOURNAL"], "ab") as f:  # another writer's garbage, while the sweep runs
        f.write(b"this is not a journal line\\n")
    return value
e.run = run
"""


@pytest.mark.slow
def test_a_journal_damaged_during_the_sweep_is_one_line(tmp_path) -> None:
    """A journal that stops replaying while the sweep runs ends it with one line naming the journal and
    the fix, no traceback (at open, the same line is tested above)."""
    journal = tmp_path / "study.journal"
    code = DAMAGE_AFTER_FIRST_TRIAL + "\nfrom mbrec.__main__ import main\nmain()\n"
    args = ["-m", "hparams_search=paper_grid", "optimizer.lr=choice(1e-3,5e-3)", "train.l2=choice(1e-4)",
            "dataset.synthetic.n_users=80", "dataset.synthetic.n_items=60", "train.max_epochs=1", "train.eval_every=1",
            f"hydra.sweep.dir={tmp_path / 's'}", f"hydra.sweeper.storage={journal}",
            f"paths.cache_dir={tmp_path / 'cache'}", "mlflow.enabled=false"]
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "JOURNAL": str(journal), "PYTHONWARNINGS": "ignore"})
    assert proc.returncode != 0 and "the study journal is damaged" in proc.stderr, proc.stderr[-3000:]
    assert str(journal) in proc.stderr and "Traceback" not in proc.stderr


def test_a_best_computed_while_other_trials_ran_is_tagged_on_the_sweep_parent(tmp_path) -> None:
    """The MLflow parent of a sweep whose study had trials of another sweep still running carries them
    in a tag (the best over finished trials may still move)."""
    from omegaconf import OmegaConf

    from mbrec.record import Tag
    from mbrec.services.tracking import client_for
    from mbrec.sweep.parent import MlflowSweepParent

    client = client_for(f"sqlite:///{tmp_path / 'm.db'}")
    exp = client.create_experiment("x")
    parent = client.create_run(exp, tags={Tag.STAGE: "sweep"}).info.run_id
    client.create_run(exp, tags={Tag.PARENT: parent})  # one trial trained under it
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / "optimization_results.yaml").write_text(
        "best_params:\n  optimizer.lr: 0.001\nbest_value: 0.5\nstill_running: [3, 7]\n")
    callback = MlflowSweepParent()
    callback.client, callback.run_id = client, parent
    callback.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}}))
    run = client.get_run(parent)
    assert run.data.tags[Tag.SWEEP_STILL_RUNNING] == "3,7" and run.info.status == "FINISHED"


@pytest.mark.slow
def test_two_different_sweeps_never_share_one_folder(tmp_path) -> None:
    """A second sweep of another study given the first one's hydra.sweep.dir is refused in one line
    (its trial folders, results file and MLflow parent would mix with the first's); the same sweep
    again continues the folder."""
    assert _sweep(tmp_path, "optimizer.lr=choice(1e-3,5e-3)").returncode == 0
    again = _sweep(tmp_path, "optimizer.lr=choice(1e-3,5e-3)")
    assert again.returncode == 0, again.stderr[-2000:]
    other = _sweep(tmp_path, "optimizer.lr=choice(1e-2,5e-2)")
    assert other.returncode != 0 and "holds the sweep of study" in other.stderr, other.stderr[-2000:]
    assert "Traceback" not in other.stderr and len(list((tmp_path / "sweep").glob("*/results.json"))) == 2


@pytest.mark.slow
def test_a_refused_sweep_leaves_the_folders_mlflow_parent_as_it_was(tmp_path) -> None:
    """With MLflow on, the parent-run callback reopens the folder's parent before the sweeper refuses a
    different study; at exit the refused sweep, which trained nothing, puts it back (not RUNNING, so
    never later marked KILLED)."""
    import mlflow

    store = [f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}", "++mlflow.enabled=true"]
    assert _sweep(tmp_path, "optimizer.lr=choice(1e-3,5e-3)", *store).returncode == 0
    parent = (tmp_path / "sweep" / "mlflow_parent_run_id").read_text().strip()
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    assert client.get_run(parent).info.status == "FINISHED"
    other = _sweep(tmp_path, "optimizer.lr=choice(1e-2,5e-2)", *store)
    assert other.returncode != 0 and "holds the sweep of study" in other.stderr, other.stderr[-2000:]
    assert client.get_run(parent).info.status == "FINISHED"
