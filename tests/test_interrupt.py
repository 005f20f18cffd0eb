"""Ctrl-C: one line naming the fit and epoch and how to resume, no traceback, exit 130, the MLflow runs
KILLED (not FAILED); a teacher interrupted half-way resumes from its checkpoint (removed once cached)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mbrec.errors import Interrupted

CMD = [sys.executable, "-m", "mbrec", "scale=smoke", "balancer=ckd", "train.max_epochs=40", "train.patience=1000",
       "train.eval_every=1"]


def test_interrupted_says_where_and_how_to_resume() -> None:
    assert str(Interrupted("teacher-text", 3)) == "interrupted at epoch 3 of teacher-text; run the same command to resume"
    assert str(Interrupted()) == "interrupted; run the same command to resume"
    assert isinstance(Interrupted(), KeyboardInterrupt)


@pytest.mark.slow
def test_ctrl_c_during_a_teacher_is_one_line_killed_and_resumes(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MBREC_HOME": str(tmp_path)}
    proc = subprocess.Popen(CMD, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = tmp_path / ".cache" / "mbrec" / "checkpoints"
    while not list(checkpoints.glob("teacher-*.pt")):  # the teacher validated (and checkpointed) once
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted at epoch ") and last.endswith(
        " of teacher-text; run the same command to resume"), err[-2000:]
    [checkpoint] = checkpoints.glob("teacher-*.pt")

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = {r.info.run_name: r for r in client.search_runs(exps)}
    assert {name.split()[1] if name.startswith("vbpr ") else "student": r.info.status for name, r in runs.items()} == \
        {"teacher-text": "KILLED", "student": "KILLED"}
    teacher_run = runs["vbpr teacher-text s123"].info.run_id

    again = subprocess.run(CMD, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"teacher-text: resumed from {checkpoint}" in again.stdout + again.stderr
    assert not list(checkpoints.glob("teacher-*.pt"))  # cached: the checkpoint is gone
    assert client.get_run(teacher_run).info.status == "FINISHED"  # the same MLflow run, continued
