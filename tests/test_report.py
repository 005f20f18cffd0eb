"""Report units: the paired test and the table's statistics against hand computations, row labels,
the paper's values, presets compose. (Tables 1–3 and the figures from real smoke runs: test_presets.py.)"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mbrec.report.latex import to_latex
from mbrec.report.paper import paper_value
from mbrec.report.tables import cell_table, label, paired_test, to_markdown, variant_label

from conftest import compose


def test_paired_test_matches_closed_form() -> None:
    base, other = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}, {0: 1.5, 1: 2.1, 2: 3.9, 3: 4.2}
    d = np.array([0.5, 0.1, 0.9, 0.2])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(4))
    theta = math.atan(t / math.sqrt(3))  # Student t with 3 d.o.f. has a closed-form CDF
    p = 1.0 - (2.0 / math.pi) * (theta + math.sin(theta) * math.cos(theta))
    assert t == pytest.approx(2.3650684, rel=1e-6)
    assert paired_test(base, other) == pytest.approx(p, rel=1e-9)
    assert paired_test({0: 1.0}, {0: 2.0}) != paired_test({0: 1.0}, {0: 2.0})  # NaN with one pair
    assert paired_test({0: 0.04, 1: 0.05}, {0: 0.04, 1: 0.05}) == 1.0
    assert paired_test({0: 0.04, 1: 0.05}, {0: 0.05, 1: 0.06}) == 0.0  # constant shift: zero variance


def _runs(values: dict[str, list[float]]) -> pd.DataFrame:
    """A run table as load_runs returns it: one row per (balancer, seed)."""
    return pd.DataFrame([{"dataset": "synthetic", "backbone": "vbpr", "balancer": bal, "seed": seed,
                          "test/recall_at_20": v} for bal, vs in values.items() for seed, v in enumerate(vs)])


def test_cell_table_mean_std_improvement_and_hand_computed_p() -> None:
    """Three seeds: the paired t statistic has 2 d.o.f., whose two-sided p is 1 - |t|/sqrt(t² + 2)."""
    base, gb, ckd = [0.10, 0.12, 0.11], [0.11, 0.125, 0.118], [0.20, 0.21, 0.40]
    table = cell_table(_runs({"ckd": ckd, "none": base, "gb": gb}), ("test/recall_at_20",)).set_index("balancer")
    assert list(table.index) == ["none", "gb", "ckd"]  # the paper's row order
    for name, vs in (("gb", gb), ("ckd", ckd)):
        d = np.array(vs) - np.array(base)
        t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
        assert table.loc[name, "test/recall_at_20:p"] == pytest.approx(1 - abs(t) / math.sqrt(t * t + 2), rel=1e-9)
        assert table.loc[name, "test/recall_at_20:mean"] == pytest.approx(np.mean(vs))
        assert table.loc[name, "test/recall_at_20:std"] == pytest.approx(np.std(vs, ddof=1))
        assert table.loc[name, "test/recall_at_20:impr%"] == pytest.approx(100 * (np.mean(vs) / np.mean(base) - 1))
    assert table.loc["gb", "test/recall_at_20:p"] == pytest.approx(0.0341, abs=1e-4)   # significant
    assert table.loc["ckd", "test/recall_at_20:p"] == pytest.approx(0.1331, abs=1e-4)  # not significant
    md = to_markdown(table.reset_index(), ("test/recall_at_20",))
    assert "| Recall@20 |" in md.splitlines()[0]
    assert "p=0.034*, n=3)" in md and "p=0.133, n=3)" in md
    tex = to_latex(table.reset_index(), ("test/recall_at_20",), layout="long")
    assert r"$\pm$" in tex and r"\%" in tex


def test_variant_labels_and_paper_values() -> None:
    assert variant_label("ckd", {"balancer.lambda_g": "5", "balancer.reweight": "paper"}) == "ckd"
    assert variant_label("ckd", {"balancer.lambda_g": "0"}) == "ckd w/o Gen."
    assert variant_label("ckd", {"balancer.reweight": "none"}) == "ckd w/o re-weight"
    assert variant_label("ckd", {"balancer.specific_loss": "mse"}) == "ckd repl. MSE"
    assert variant_label("gb", {}) == "gb"
    assert paper_value(1, "baby", "vbpr", "none", "test/recall_at_20") == pytest.approx(0.0462)
    assert paper_value(3, "baby", "vbpr", "ckd", "test/recall_at_20") == pytest.approx(0.0568)
    assert paper_value(1, "synthetic", "vbpr", "none", "test/recall_at_20") is None
    # the paper's NDCG is LATTICE's variant: compared with ndcg_lattice only
    assert paper_value(1, "baby", "vbpr", "none", "test/ndcg_lattice_at_20") == pytest.approx(0.0208)
    assert paper_value(1, "baby", "vbpr", "none", "test/ndcg_at_20") is None
    assert paper_value(2, "baby", "vbpr", "uni-teacher", "test/recall_at_20/text") is not None
    assert label("test/recall_at_20/visual") == "Recall@20 (visual only)"
    assert label("test/ndcg_lattice_at_20") == "NDCG-LATTICE@20"


@pytest.mark.parametrize("preset", ["table1", "table2", "table3", "pilot"])
def test_presets_compose(preset, tmp_path) -> None:
    cfg = compose([f"experiment={preset}"], tmp_path)
    assert cfg.mlflow.tags.mbrec_experiment in {"table1", "table3", "pilot"}
    if preset in ("table3", "pilot"):
        assert cfg.balancer.name == "ckd"
    if preset == "pilot":
        assert cfg.balancer.lambda_kd == 0.0


def test_paper_values_beside_ours() -> None:
    from mbrec.report.paper import add_paper_columns

    runs = _runs({"none": [0.04, 0.05], "ckd": [0.05, 0.07]}).assign(dataset="baby")
    table = add_paper_columns(cell_table(runs, ("test/recall_at_20",)), 1, ("test/recall_at_20",))
    md = to_markdown(table, ("test/recall_at_20",))
    assert "0.0450 ± 0.0071 [paper 0.0462]" in md and "[paper 0.0568]" in md


def test_one_seed_has_no_spread() -> None:
    """A cell run with one seed shows its mean alone: no '± 0.0000' that would read as zero variance."""
    table = cell_table(_runs({"none": [0.04], "ckd": [0.05, 0.07]}), ("test/recall_at_20",))
    md = to_markdown(table, ("test/recall_at_20",))
    assert "| 0.0400 |" in md and "0.0600 ± 0.0141" in md
    assert math.isnan(table.set_index("balancer").loc["none", "test/recall_at_20:std"])


def test_paper_layout_writes_n_per_cell_when_the_pairs_differ() -> None:
    """GB shares 3 seeds with the base, CKD 4: each significance cell carries its own n."""
    runs = pd.DataFrame([{"dataset": "baby", "backbone": "vbpr", "balancer": bal, "seed": s, "test/recall_at_20": v}
                         for bal, vs in (("none", {0: 0.10, 1: 0.12, 2: 0.11, 3: 0.13}),
                                         ("gb", {1: 0.13, 2: 0.125, 3: 0.14}),
                                         ("ckd", {0: 0.2, 1: 0.21, 2: 0.22, 3: 0.24}))
                         for s, v in vs.items()])
    tex = to_latex(cell_table(runs, ("test/recall_at_20",)), ("test/recall_at_20",), delta="ckd")
    rows = {line.split(" & ")[0]: line.split(" & ")[1] for line in tex.splitlines() if " & " in line}
    assert rows["+GB"].endswith("$_{n=3}$ \\\\") and rows["+CKD"].endswith("$^{*}$$_{n=4}$ \\\\")
    assert rows[r"$\Delta$ Improv."].startswith("+89.13\\%$^{*}$$_{n=4}$")
    assert "(subscript)" in tex
