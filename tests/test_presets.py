"""Each experiment preset at smoke scale, as a user runs it (``python -m mbrec [-m] experiment=...``),
then the report built from its MLflow runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("presets")


def _run(args: list[str], store: Path) -> str:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'm.db'}",
           "MBREC_CACHE": str(store / "cache")}
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


SMOKE = [*TINY, "train.max_epochs=2"]  # teachers inherit the student's training settings


def test_table1_and_table2_presets(store: Path) -> None:
    out = _run(["-m", "mbrec", "-m", "experiment=table1", *SMOKE, "balancer=none,ckd", "seed=0,1",
                f"hydra.sweep.dir={store / 't1'}"], store)
    assert out.count("Test metrics") == 4
    md = _run(["-m", "mbrec.report", "table2", "--tracking-uri", f"sqlite:///{store / 'm.db'}", "--out", str(store / "rep")], store)
    assert "| synthetic | vbpr | uni-teacher | 2 |" in md and "test/recall_at_20/visual" in md


def test_table3_preset(store: Path) -> None:
    out = _run(["-m", "mbrec", "-m", "experiment=table3", *SMOKE, "ablation=full,wo_gen", "seed=0",
                "balancer.gd_samples=32", f"hydra.sweep.dir={store / 't3'}"], store)
    assert out.count("Test metrics") == 2
    md = _run(["-m", "mbrec.report", "table3", "--tracking-uri", f"sqlite:///{store / 'm.db'}", "--out", str(store / "rep")], store)
    assert "| ckd w/o Gen. |" in md.replace("synthetic | vbpr ", "")


def test_pilot_preset_and_figures(store: Path) -> None:
    _run(["-m", "mbrec", "experiment=pilot", *SMOKE, "balancer.gd_samples=32", f"hydra.run.dir={store / 'pilot'}"], store)
    out = _run(["-m", "mbrec.report", "figures", "--tracking-uri", f"sqlite:///{store / 'm.db'}", "--out", str(store / "fig")], store)
    assert len(list((store / "fig").glob("pilot-*.png"))) == 1 and len(list((store / "fig").glob("traces-*.png"))) == 1
    assert "pilot-" in out
