"""Report: Table 1 numbers equal the runs' results.json; the paired test matches a hand computation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import compose

from mbrec.report.__main__ import main as report_main
from mbrec.report.tables import cell_table, load_runs, paired_test


def test_paired_test_matches_closed_form() -> None:
    base, other = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}, {0: 1.5, 1: 2.1, 2: 3.9, 3: 4.2}
    d = np.array([0.5, 0.1, 0.9, 0.2])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(4))
    theta = math.atan(t / math.sqrt(3))  # Student t with 3 d.o.f. has a closed-form CDF
    p = 1.0 - (2.0 / math.pi) * (theta + math.sin(theta) * math.cos(theta))
    assert t == pytest.approx(2.3650684, rel=1e-6)
    assert paired_test(base, other) == pytest.approx(p, rel=1e-9)
    assert paired_test({0: 1.0}, {0: 2.0}) != paired_test({0: 1.0}, {0: 2.0})  # NaN with one pair


def test_table_from_mlflow_equals_results_json(tmp_path: Path, capsys) -> None:
    from mbrec.experiment import run

    results = {}
    for balancer in ("none", "ckd"):
        for seed in (0, 1):
            out = tmp_path / f"{balancer}-{seed}"
            cfg = compose([f"balancer={balancer}", f"seed={seed}", "+mlflow.tags.mbrec_experiment=smoke"], tmp_path)
            run(cfg, out)
            results[balancer, seed] = json.loads((out / "results.json").read_text())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    table = cell_table(load_runs(uri, "tags.mbrec_experiment = 'smoke'")).set_index("balancer")
    assert list(table.index) == ["none", "ckd"]
    for bal in ("none", "ckd"):
        values = [results[bal, s]["test"]["recall@20"] for s in (0, 1)]
        assert table.loc[bal, "test/recall_at_20:mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert table.loc[bal, "test/recall_at_20:std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    base = {s: results["none", s]["test"]["recall@20"] for s in (0, 1)}
    ckd = {s: results["ckd", s]["test"]["recall@20"] for s in (0, 1)}
    assert table.loc["ckd", "test/recall_at_20:p"] == pytest.approx(paired_test(base, ckd), nan_ok=True)

    report_main(["smoke", "--tracking-uri", uri, "--out", str(tmp_path / "rep")])
    md = (tmp_path / "rep" / "table1.md").read_text()
    assert f"{np.mean([results['none', s]['test']['recall@20'] for s in (0, 1)]):.4f}" in md
    assert (tmp_path / "rep" / "table1.tex").read_text().startswith(r"\begin{tabular}")
    assert (tmp_path / "rep" / "table1.csv").is_file()
