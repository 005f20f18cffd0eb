"""Every experiment preset at smoke scale, as a user runs it (``python -m mbrec [-m] experiment=...``),
then Tables 1–3 and the figures built by ``python -m mbrec.report`` from their MLflow runs; the tables'
numbers equal the runs' ``results.json``.

One module-scoped set of runs (one MLflow store, one teacher cache) serves every test: Table 1 preset
(base and CKD x 2 seeds), Table 3 preset (full CKD — replayed from Table 1's CKD runs — and w/o Gen.),
the pilot preset (teachers from the cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mbrec.report.__main__ import main as report_main
from mbrec.report.tables import paired_test

# one module-scoped set of preset runs, each `python -m mbrec` in its own interpreter: make test-full only
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["scale=smoke", "device=cpu"]  # as a user runs a preset at smoke scale (= TINY, 2 epochs)
SEEDS = (0, 1)


def _mbrec(args: list[str], store: Path) -> str:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'm.db'}",
           "MBREC_CACHE": str(store / "cache")}
    proc = subprocess.run([sys.executable, "-m", "mbrec", *args, *SMOKE], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _results(sweep_dir: Path) -> dict[tuple[str, int], dict]:
    """results.json of every job of a multirun, keyed by (row label, seed)."""
    out = {}
    for path in sweep_dir.glob("*/results.json"):
        res = json.loads(path.read_text())
        bal = res["config"]["balancer"]
        label = bal["name"] if bal["name"] != "ckd" or bal["lambda_g"] != 0 else "ckd w/o Gen."
        out[label, res["config"]["seed"]] = res
    return out


@pytest.fixture(scope="module")
def presets(tmp_path_factory) -> dict:
    store = tmp_path_factory.mktemp("presets")
    # the tables' presets run at tuned settings: tuned files (here: the defaults) on the search path, as
    # `python -m mbrec.sweep table1 --tuned-dir DIR` writes them
    for row in ("none", "ckd"):
        (store / "conf" / "tuned").mkdir(parents=True, exist_ok=True)
        (store / "conf" / "tuned" / f"synthetic_vbpr_{row}.yaml").write_text("# @package _global_\n{}\n")
    tuned = f"hydra.searchpath=[file://{store / 'conf'}]"
    logs = {
        "table1": _mbrec(["-m", "experiment=table1", "balancer=none,ckd", "seed=0,1", tuned,
                          f"hydra.sweep.dir={store / 't1'}"], store),
        "table3": _mbrec(["-m", "experiment=table3", "ablation=full,wo_gen", "seed=0,1", tuned,
                          f"hydra.sweep.dir={store / 't3'}"], store),
        "pilot": _mbrec(["experiment=pilot", "seed=0", f"hydra.run.dir={store / 'pilot'}"], store),
    }
    uri = f"sqlite:///{store / 'm.db'}"
    for what in ("table1", "table2", "table3", "figures"):
        report_main([what, "--tracking-uri", uri, "--out", str(store / "rep")])
    tables = {}
    for what in ("table1", "table2", "table3"):
        import pandas as pd

        tables[what] = pd.read_csv(store / "rep" / f"{what}.csv").set_index("balancer")
    return {"store": store, "logs": logs, "tables": tables, "t1": _results(store / "t1"),
            "t3": _results(store / "t3")}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1))


def test_table1_equals_results_json(presets) -> None:
    assert presets["logs"]["table1"].count("Test metrics") == 4
    table, res = presets["tables"]["table1"], presets["t1"]
    assert list(table.index) == ["none", "ckd"] and list(table["n_seeds"]) == [2, 2]
    for bal in ("none", "ckd"):
        for metric in ("recall@20", "ndcg@20", "ndcg_lattice@20", "precision@20"):
            mean, std = _mean_std([res[bal, s]["test"][metric] for s in SEEDS])
            col = "test/" + metric.replace("@", "_at_")
            assert table.loc[bal, f"{col}:mean"] == pytest.approx(mean, abs=1e-12)
            assert table.loc[bal, f"{col}:std"] == pytest.approx(std, abs=1e-12)
    base = {s: res["none", s]["test"]["recall@20"] for s in SEEDS}
    ckd = {s: res["ckd", s]["test"]["recall@20"] for s in SEEDS}
    assert table.loc["ckd", "test/recall_at_20:p"] == pytest.approx(paired_test(base, ckd), nan_ok=True)
    impr = 100 * (np.mean(list(ckd.values())) / np.mean(list(base.values())) - 1)
    assert table.loc["ckd", "test/recall_at_20:impr%"] == pytest.approx(impr)
    rep = presets["store"] / "rep"
    assert f"{np.mean(list(base.values())):.4f} ±" in (rep / "table1.md").read_text()
    assert (rep / "table1.tex").read_text().startswith(r"\begin{tabular}")


def test_table2_per_modality_and_teachers_equal_results_json(presets) -> None:
    table, res = presets["tables"]["table2"], presets["t1"]
    assert list(table.index) == ["none", "ckd", "uni-teacher"]
    for m in ("text", "visual"):
        col = f"test/recall_at_20/{m}:mean"
        for bal in ("none", "ckd"):
            assert table.loc[bal, col] == pytest.approx(np.mean([res[bal, s]["test"][f"recall@20/{m}"] for s in SEEDS]))
        teachers = [res["ckd", s]["balancer"]["teachers"][m]["test"]["recall@20"] for s in SEEDS]
        assert table.loc["uni-teacher", col] == pytest.approx(np.mean(teachers), abs=1e-12)
    assert np.isnan(table.loc["uni-teacher", "test/recall_at_20:mean"])


def test_table3_full_row_replayed_from_table1(presets) -> None:
    # full CKD at the same settings is exactly Table 1's CKD run: replayed, yet part of Table 3
    assert presets["logs"]["table3"].count("already finished") == 2
    table, t1, t3 = presets["tables"]["table3"], presets["t1"], presets["t3"]
    assert list(table.index) == ["ckd", "ckd w/o Gen."] and list(table["n_seeds"]) == [2, 2]
    full = {s: t1["ckd", s]["test"]["recall@20"] for s in SEEDS}
    assert {s: t3["ckd", s]["test"]["recall@20"] for s in SEEDS} == full
    wo_gen = {s: t3["ckd w/o Gen.", s]["test"]["recall@20"] for s in SEEDS}
    assert table.loc["ckd", "test/recall_at_20:mean"] == pytest.approx(np.mean(list(full.values())), abs=1e-12)
    assert table.loc["ckd w/o Gen.", "test/recall_at_20:mean"] == pytest.approx(np.mean(list(wo_gen.values())), abs=1e-12)
    assert table.loc["ckd w/o Gen.", "test/recall_at_20:p"] == pytest.approx(paired_test(full, wo_gen), nan_ok=True)


def test_figures_written(presets) -> None:
    """Figure 1 and the λ/ρ traces, for the pilot run (the default selection of ``report figures``)."""
    fig = presets["store"] / "rep"
    pngs = sorted(fig.glob("*.png"))
    assert [p.name.split("-")[0] for p in pngs] == ["pilot", "traces"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size > 10_000 for p in pngs)
    for png in pngs:  # vector copies beside every PNG
        assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
        assert b"<svg" in png.with_suffix(".svg").read_bytes()[:2000]
    assert "Test metrics" in presets["logs"]["pilot"]


def test_a_tuned_preset_without_tuned_files_stops_naming_the_command(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MBREC_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "mbrec", "-m", "experiment=table3", "backbone=mgcn", *SMOKE],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: experiment=table3 runs at tuned settings, but there is no tuned/synthetic_mgcn_ckd.yaml (conf/tuned/ "
        "or the search path): tune them first with `python -m mbrec.sweep table1 --dataset synthetic --backbone mgcn` "
        "(after `make table1-smoke` add hydra.searchpath=[file://multirun/table1/synthetic/conf])")
    assert not list((tmp_path / "multirun").glob("*/*/results.json"))  # nothing trained
