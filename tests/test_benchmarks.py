"""`make bench` does not rot: every benchmark script runs end to end on a tiny Baby-format folder the
test writes itself (LATTICE json; the real data is never read here) and prints its table. Speeds are
not checked (targets live in the benchmarks, never in tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# every test here runs a benchmark script in its own interpreter (torch imported each time): make test-full only
pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def baby(tmp_path_factory) -> Path:
    """30 users x 24 items in the LATTICE layout: train.json / val.json / test.json, user -> items."""
    folder = tmp_path_factory.mktemp("baby")
    rng = np.random.default_rng(0)
    splits: dict[str, dict[str, list[int]]] = {"train.json": {}, "val.json": {}, "test.json": {}}
    for u in range(30):
        items = rng.choice(24, size=7, replace=False).tolist()
        splits["train.json"][str(u)] = items[:5]
        splits["val.json"][str(u)] = items[5:6]
        splits["test.json"][str(u)] = items[6:]
    for name, content in splits.items():
        (folder / name).write_text(json.dumps(content))
    return folder


def _bench(script: str, baby: Path, *args: str, timeout: float = 300) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MBREC_BENCH_DATA"}
    proc = subprocess.run([sys.executable, str(BENCH / script), "--data", str(baby), *args], cwd=BENCH, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_bench_vbpr_and_ckd_print_their_tables_and_the_syncs(baby):
    out = _bench("bench_vbpr.py", baby, "--epochs", "1", "--evals", "1")
    assert "| training epoch" in out and "validation, overall + 2 per-modality passes" in out
    assert "host-device syncs during training" in out
    out = _bench("bench_ckd.py", baby)
    assert "| training epoch" in out and "host-device syncs during training" in out


def test_bench_backbones_measures_every_backbone(baby):
    from mbrec.backbones import BACKBONES

    out = _bench("bench_backbones.py", baby, "--steps", "1")
    for name in BACKBONES:
        assert f"| {name} |" in out, f"{name} missing from:\n{out}"


def test_bench_threads_runs_a_configuration(baby, tmp_path):
    out = _bench("bench_threads.py", baby, "--workloads", "vbpr", "--threads", "1", "--waits", "passive",
                 "--loads", "quiet", "--epochs", "1", "--quiet-below", "0", "--out", str(tmp_path / "t.json"))
    assert "| vbpr | quiet | 1 | passive |" in out
    assert json.loads((tmp_path / "t.json").read_text())["rows"][0]["auto_threads"] == 1  # a tiny problem


def test_bench_zoo_measures_the_registered_modern_backbones(baby):
    """Without --reference only mbrec is measured; every registered modern backbone gets a row."""
    from mbrec.backbones import BACKBONES

    out = _bench("bench_zoo.py", baby, "--steps", "1")
    names = [n for n in ("freedom", "bm3", "lattice", "lgmrec", "smore") if n in BACKBONES]
    assert names
    for name in names:
        assert f"| {name} | mbrec |" in out, f"{name} missing from:\n{out}"
