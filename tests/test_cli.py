"""`python -m mbrec` as a user meets it: --help, one-message errors (also under -m), the missing-dataset
message, progress lines, the multirun summary, quiet `make setup`."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mbrec.cli_help import GROUPS, help_text, key_comments
from mbrec.data.loading import load_dataset
from mbrec.errors import DataError

from conftest import CONF_DIR, TINY

REPO = Path(__file__).resolve().parents[1]


def _mbrec(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mbrec", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **env})


def _help_for(*overrides: str) -> str:
    from hydra import compose, initialize_config_dir

    from mbrec.config import register_schemas

    register_schemas()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    return help_text(cfg).replace("$$", "$")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


# ------------------------------------------------------------------------------------------- --help
@pytest.mark.parametrize("backbone", _options("backbone"))
def test_help_has_one_line_per_group_and_key(backbone: str) -> None:
    balancer = {"vbpr": "ckd", "mmgcn": "gb", "grcn": "ogm"}.get(backbone, "none")
    text = _help_for(f"backbone={backbone}", f"balancer={balancer}")
    lines = text.splitlines()
    for group in GROUPS:
        (line,) = [ln for ln in lines if ln.startswith(f"  {group}=")]
        assert all(option in line for option in _options(group)), line
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose("config", overrides=[f"backbone={backbone}", f"balancer={balancer}"])
    for group in ("backbone", "balancer", "optimizer", "dataset", "train", "paths", "mlflow"):
        for key in _leaf_keys(OmegaConf.to_container(cfg[group], resolve=True), f"{group}."):
            assert sum(ln.startswith(f"  {key}=") for ln in lines) == 1, key
    assert f"backbone={backbone} keys" in text and f"balancer={balancer} keys" in text


def _leaf_keys(node, prefix: str) -> list[str]:
    if isinstance(node, dict) and node and not prefix.endswith("teachers.train."):
        return [k for key, value in node.items() for k in _leaf_keys(value, f"{prefix}{key}.")]
    return [prefix[:-1]]


def test_every_key_of_config_yaml_has_a_description() -> None:
    """--help shows the comment beside each key of conf/config.yaml (train keys: beside each field of
    TrainSettings, where their defaults are): a key without one is undocumented."""
    notes = key_comments()
    text = _help_for()
    for line in text.split("Keys (key=value")[1].split("\n\ndataset=")[0].splitlines()[1:]:
        key = line.strip().split("=", 1)[0]
        assert notes.get(key), f"conf/config.yaml: {key} has no comment (it is its --help description)"


def test_python_m_mbrec_help(tmp_path: Path) -> None:
    proc = _mbrec(["--help", "backbone=mgcn"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "backbone=mgcn" in out and "  backbone.n_layers=" in out and "$MBREC_CACHE" in out
    assert "Powered by Hydra" not in out and not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------- errors
def _assert_missing_sports_message(err: str, folder: Path) -> None:
    assert err.count("error: ") == 1 and "Traceback" not in err
    err = err[err.index("error: "):]  # (MLflow may log its database creation before)
    assert f"{folder}: dataset 'sports': folder does not exist" in err
    assert f"MMRec:        {folder}/sports.inter" in err and f"CKD/LATTICE:  {folder}/5-core/train.json" in err
    assert f"python -m mbrec.data.prepare lattice path/to/lattice/data/sports --out {folder}" in err
    assert ("python -m mbrec.data.prepare amazon --reviews raw/reviews_Sports_and_Outdoors_5.json.gz "
            "--meta raw/meta_Sports_and_Outdoors.json.gz --images raw/image_features_Sports_and_Outdoors.b "
            f"--out {folder}") in err
    assert "docs/data.md" in err


@pytest.mark.slow
def test_missing_dataset_is_one_message_naming_folder_layouts_and_commands(tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = ["dataset=sports", "backbone=egogcn", "balancer=ckd", f"paths.data_dir={data}", "mlflow.enabled=false",
            f"hydra.run.dir={tmp_path / 'out'}"]
    proc = _mbrec(args, tmp_path)
    assert proc.returncode == 2
    _assert_missing_sports_message(proc.stderr.strip(), data / "sports")
    assert "folder does not exist" in (tmp_path / "out" / "mbrec.log").read_text()  # the log file says it too

    full = _mbrec(args, tmp_path, HYDRA_FULL_ERROR="1")
    assert full.returncode != 0 and "Traceback" in full.stderr and "DataError" in full.stderr


@pytest.mark.slow
def test_missing_dataset_under_multirun_is_one_message_and_fails_the_sweep_run(tmp_path: Path) -> None:
    data, db = tmp_path / "data", tmp_path / "m.db"
    proc = _mbrec(["-m", "dataset=sports", "seed=1,2", f"paths.data_dir={data}", f"mlflow.tracking_uri=sqlite:///{db}",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert proc.returncode == 2
    _assert_missing_sports_message(proc.stderr.strip(), data / "sports")
    from mlflow.tracking import MlflowClient

    # no trial trained: the sweep's parent run is deleted, not left empty (or RUNNING)
    assert not (tmp_path / "sweep" / "mlflow_parent_run_id").exists()
    client = MlflowClient(f"sqlite:///{db}")
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_folder_without_a_layout_and_a_given_path(tmp_path: Path) -> None:
    folder = tmp_path / "baby"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    with pytest.raises(DataError) as err:
        load_dataset({"name": "baby", "source": "files", "path": str(folder)})
    message = str(err.value)
    assert "holds neither layout" in message and "fix dataset.path" in message
    assert "reviews_Baby_5.json.gz" in message and f"--out {folder}" in message
    with pytest.raises(DataError, match=r"reviews_<Category>_5.json.gz"):
        load_dataset({"name": "mine", "source": "files"}, tmp_path / "nowhere")


# ------------------------------------------------------------------------------- progress, summary
@pytest.mark.slow
def test_multirun_prints_a_line_per_validation_and_ends_with_a_summary(tmp_path: Path) -> None:
    db, sweep = tmp_path / "m.db", tmp_path / "sweep"
    proc = _mbrec(["-m", *TINY, "train.max_epochs=2", "optimizer.lr=1e-3,5e-4", f"hydra.sweep.dir={sweep}",
                   f"paths.cache_dir={tmp_path / 'cache'}", f"mlflow.tracking_uri=sqlite:///{db}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    # stdout is a pipe: no progress bar, one log line per validation (2 trials x 2 epochs)
    assert len(re.findall(r"vbpr\+none epoch \d: loss [\d.]+, valid recall@20", out)) == 4
    assert "\r" not in out and "it/s" not in out + proc.stderr
    summary = out[out.index("Sweep done"):]
    assert summary.startswith(f"Sweep done: 2 trials, 2 finished — {sweep}")
    best = max((json.loads(p.read_text()) for p in sweep.glob("*/results.json")), key=lambda r: r["best_valid_value"])
    assert f"best valid recall@20 = {best['best_valid_value']:.4f}" in summary
    assert re.search(r"at optimizer\.lr=(0\.001|0\.0005)\n", summary)
    parent = (sweep / "mlflow_parent_run_id").read_text().strip()
    from mbrec.services.tracking import sweep_marker

    command = f"python -m mbrec.report table1 --runs \"tags.{sweep_marker(sweep)} = 'true'\""
    assert f"report: {command} --tracking-uri 'sqlite:///{db}' --out reports" in summary

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    children = client.search_runs([client.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.info.run_name for r in children) == [
        "vbpr+none batch_size=64 max_epochs=2 eval_every=1 patience=1 lr=1e-3 s123",
        "vbpr+none batch_size=64 max_epochs=2 eval_every=1 patience=1 lr=5e-4 s123"]
    for run in children:
        assert "mbrec.log" in {a.path for a in client.list_artifacts(run.info.run_id)}
    report = subprocess.run([sys.executable, "-m", "mbrec.report", "table1", "--runs", f"tags.{sweep_marker(sweep)} = 'true'",
                             "--tracking-uri", f"sqlite:///{db}", "--out", str(tmp_path / "reports")],
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]


def _fake_sweep(root: Path, values: dict[str, float], preset: str | None = None):
    for n, (lr, value) in enumerate(values.items()):
        trial = root / f"{n}-t"
        (trial / ".hydra").mkdir(parents=True)
        (trial / ".hydra" / "overrides.yaml").write_text(f"- seed=1\n- optimizer.lr={lr}\n")
        if value is not None:
            (trial / "results.json").write_text(json.dumps({"metric": "recall@20", "best_valid_value": value,
                                                             "test": {"recall@20": value / 2}}))
    return OmegaConf.create({"hydra": {"sweep": {"dir": str(root)}}, "train": {"metric": "recall@20"},
                             "mlflow": {"enabled": False, "tracking_uri": "sqlite:///mlflow.db", "experiment": "e",
                                        "tags": {"mbrec_experiment": preset} if preset else {}}})


def test_sweep_summary_names_the_best_point_failures_and_the_preset_report(tmp_path: Path) -> None:
    from mbrec.progress import summarise_sweep

    text = summarise_sweep(_fake_sweep(tmp_path / "s", {"0.1": 0.3, "0.2": 0.5, "0.3": None}, preset="table3"))
    lines = text.splitlines()
    assert lines[0] == f"Sweep done: 3 trials, 2 finished, 1 without results — {tmp_path / 's'}"
    assert lines[1] == "best valid recall@20 = 0.5000 (test 0.2500) at optimizer.lr=0.2"
    assert lines[2].startswith(f"results: {tmp_path / 's' / '1-t' / 'results.json'}")
    assert lines[-1] == "report: python -m mbrec.report table3 --out reports"


def test_console_routes_printing_handlers_through_tqdm_and_adds_none(capsys) -> None:
    from mbrec.progress import console

    root, mbrec_log = logging.getLogger(), logging.getLogger("mbrec")
    printing = logging.StreamHandler(sys.stdout)
    root.addHandler(printing)
    before = list(mbrec_log.handlers)
    try:
        with console():
            assert printing not in root.handlers
            assert [type(h).__name__ for h in root.handlers if h not in before].count("_TqdmLoggingHandler") == 1
            assert mbrec_log.handlers == before  # a logger that printed nothing gets no handler (no doubled lines)
        assert printing in root.handlers
    finally:
        root.removeHandler(printing)


# ------------------------------------------------------------------------------------------ set-up
def _fake_venv(root: Path, pip_status: int) -> Path:
    bin_dir = root / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "pip").write_text(f"#!/bin/sh\nfor i in $(seq 300); do echo \"pip line $i\"; done\nexit {pip_status}\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return root / "venv"


@pytest.mark.parametrize("pip_status", [0, 1])
def test_make_setup_prints_one_line_and_the_log_on_failure(tmp_path: Path, pip_status: int) -> None:
    venv = _fake_venv(tmp_path, pip_status)
    proc = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "setup", f"VENV={venv}"],
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert f"(log: {venv}/setup.log)" in out and (venv / "setup.log").read_text().count("pip line") >= 300
    if pip_status == 0:
        assert proc.returncode == 0 and len(out.strip().splitlines()) == 1 and out.strip().endswith("done")
        assert (venv / ".mbrec-installed").is_file()
    else:
        assert proc.returncode != 0 and "pip line 300" in out and "pip line 200" not in out
        assert f"setup failed: the full log is {venv}/setup.log" in out and not (venv / ".mbrec-installed").exists()


def test_reports_folder_is_git_ignored() -> None:
    proc = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", "reports/table1.md"], timeout=60)
    assert proc.returncode == 0
