"""Report: Tables 1–3 and the figures from smoke runs; their numbers equal the runs' results.json;
the paired test matches a hand computation; presets compose."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import compose

from mbrec.report.__main__ import build_table, main as report_main
from mbrec.report.paper import paper_value
from mbrec.report.tables import cell_table, load_runs, paired_test, variant_label


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
    for balancer, extra in (("none", []), ("ckd", []), ("wo_gen", ["balancer=ckd", "ablation=wo_gen"])):
        for seed in (0, 1):
            out = tmp_path / f"{balancer}-{seed}"
            over = extra or [f"balancer={balancer}"]
            cfg = compose([*over, f"seed={seed}", "balancer.gd_samples=32", "+mlflow.tags.mbrec_experiment=smoke"]
                          if "ckd" in over[0] else [*over, f"seed={seed}", "+mlflow.tags.mbrec_experiment=smoke"], tmp_path)
            run(cfg, out)
            results[balancer, seed] = json.loads((out / "results.json").read_text())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = load_runs(uri, "tags.mbrec_experiment = 'smoke'")
    table = cell_table(runs[runs["variant"] != "ckd w/o Gen."]).set_index("balancer")
    assert list(table.index) == ["none", "ckd"]
    for bal in ("none", "ckd"):
        values = [results[bal, s]["test"]["recall@20"] for s in (0, 1)]
        assert table.loc[bal, "test/recall_at_20:mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert table.loc[bal, "test/recall_at_20:std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    base = {s: results["none", s]["test"]["recall@20"] for s in (0, 1)}
    ckd = {s: results["ckd", s]["test"]["recall@20"] for s in (0, 1)}
    assert table.loc["ckd", "test/recall_at_20:p"] == pytest.approx(paired_test(base, ckd), nan_ok=True)

    report_main(["table1", "--runs", "smoke", "--tracking-uri", uri, "--out", str(tmp_path / "rep")])
    md = (tmp_path / "rep" / "table1.md").read_text()
    assert f"{np.mean([results['none', s]['test']['recall@20'] for s in (0, 1)]):.4f}" in md
    assert (tmp_path / "rep" / "table1.tex").read_text().startswith(r"\begin{tabular}")
    assert (tmp_path / "rep" / "table1.csv").is_file()

    # Table 2: per-modality recall of the runs, and the uni-teacher row from the CKD runs' teachers
    table2, _ = build_table("table2", runs[runs["variant"] != "ckd w/o Gen."])
    table2 = table2.set_index("balancer")
    assert list(table2.index) == ["none", "ckd", "uni-teacher"]
    for m in ("text", "visual"):
        ours = [results["none", s]["test"][f"recall@20/{m}"] for s in (0, 1)]
        assert table2.loc["none", f"test/recall_at_20/{m}:mean"] == pytest.approx(np.mean(ours), abs=1e-12)
        teacher = [results["ckd", s]["balancer"]["teachers"][m]["test"]["recall@20"] for s in (0, 1)]
        assert table2.loc["uni-teacher", f"test/recall_at_20/{m}:mean"] == pytest.approx(np.mean(teacher), abs=1e-12)
    assert np.isnan(table2.loc["uni-teacher", "test/recall_at_20:mean"])

    # Table 3: the ablation is labelled from its params and compared with full CKD
    table3, _ = build_table("table3", runs[runs["balancer"] == "ckd"])
    table3 = table3.set_index("balancer")
    assert list(table3.index) == ["ckd", "ckd w/o Gen."]
    wo_gen = {s: results["wo_gen", s]["test"]["recall@20"] for s in (0, 1)}
    assert table3.loc["ckd w/o Gen.", "test/recall_at_20:mean"] == pytest.approx(np.mean(list(wo_gen.values())), abs=1e-12)
    assert table3.loc["ckd w/o Gen.", "test/recall_at_20:p"] == pytest.approx(paired_test(ckd, wo_gen), nan_ok=True)

    # Figure 1 and the λ/ρ traces for every CKD run
    report_main(["figures", "--runs", "smoke", "--tracking-uri", uri, "--out", str(tmp_path / "fig")])
    pngs = sorted(p.name for p in (tmp_path / "fig").glob("*.png"))
    assert len(pngs) == 8 and all((tmp_path / "fig" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_variant_labels_and_paper_values() -> None:
    assert variant_label("ckd", {"balancer.lambda_g": "5", "balancer.reweight": "paper"}) == "ckd"
    assert variant_label("ckd", {"balancer.lambda_g": "0"}) == "ckd w/o Gen."
    assert variant_label("ckd", {"balancer.reweight": "none"}) == "ckd w/o re-weight"
    assert variant_label("ckd", {"balancer.specific_loss": "mse"}) == "ckd repl. MSE"
    assert variant_label("gb", {}) == "gb"
    assert paper_value(1, "baby", "vbpr", "none", "test/recall_at_20") == pytest.approx(0.0462)
    assert paper_value(3, "baby", "vbpr", "ckd", "test/recall_at_20") == pytest.approx(0.0568)
    assert paper_value(1, "synthetic", "vbpr", "none", "test/recall_at_20") is None


@pytest.mark.parametrize("preset", ["table1", "table2", "table3", "pilot"])
def test_presets_compose(preset, tmp_path) -> None:
    cfg = compose([f"experiment={preset}"], tmp_path)
    assert cfg.mlflow.tags.mbrec_experiment in {"table1", "table3", "pilot"}
    if preset in ("table3", "pilot"):
        assert cfg.balancer.name == "ckd"
    if preset == "pilot":
        assert cfg.balancer.lambda_kd == 0.0
