"""Reports from MLflow runs made by hand in a tmp sqlite store (tags, params flattened with dots, test
metrics, histories, results.json) with exactly the values each test controls: runs that differ in more
than the seed are kept apart, the paired n, provenance, smoke marking, registry-driven rows (with a toy
balancer), the LaTeX paper layout and the figures."""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mbrec.report import rows
from mbrec.report.__main__ import build_table
from mbrec.report.__main__ import main as report_main
from mbrec.report.latex import to_latex
from mbrec.report.runs import infer_scale, load_runs
from mbrec.report.tables import cell_table, markdown_document, provenance

#: params of a default-scale run (a few of the resolved config's keys, as the pipeline logs them)
DEFAULT_PARAMS = {
    "dataset.name": "synthetic", "dataset.synthetic.n_users": "2000", "dataset.synthetic.n_items": "1000",
    "dataset.synthetic.mean_interactions": "20", "train.batch_size": "1024", "train.max_epochs": "1000",
    "train.eval_every": "5", "train.patience": "10", "train.l2": "1e-05", "optimizer.lr": "0.001",
    # settings that do not change a run's numbers: never split a row
    "train.resume": "True", "train.eval_batch_size": "4096", "device": "auto", "skip_finished": "auto",
}
#: conf/scale/smoke.yaml's settings
SMOKE_PARAMS = {**DEFAULT_PARAMS, "dataset.synthetic.n_users": "80", "dataset.synthetic.n_items": "60",
                "dataset.synthetic.mean_interactions": "10", "train.batch_size": "64", "train.max_epochs": "2",
                "train.eval_every": "1", "train.patience": "1"}
_clock = itertools.count(int(time.time() * 1000))


class Store:
    """One sqlite MLflow store; ``student`` logs a finished student run into it."""

    def __init__(self, root: Path) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.client = MlflowClient(self.uri)
        self.experiment = self.client.create_experiment("report-tests", artifact_location=(root / "art").as_uri())

    def student(self, case: str, balancer: str, seed: int, metrics: dict[str, float], *,
                backbone: str = "vbpr", dataset: str = "synthetic", fingerprint: str = "f" * 16,
                params: dict[str, str] | None = None, tags: dict[str, str] | None = None,
                results: dict[str, Any] | None = None, histories: dict[str, list[float]] | None = None) -> str:
        """A FINISHED student run tagged ``testcase=<case>`` (the tests' filter); its params are
        ``DEFAULT_PARAMS`` updated by ``params``, plus ``seed``; ``histories``: per-step metric values."""
        from mlflow.entities import Metric, Param

        all_tags = {"testcase": case, "mbrec.stage": "student", "mbrec.dataset": dataset, "mbrec.backbone": backbone,
                    "mbrec.balancer": balancer, "mbrec.seed": str(seed), "mbrec.data_fingerprint": fingerprint,
                    "mbrec.run_key": f"{case}-{balancer}-{seed}", "mlflow.source.git.commit": "0123456789abcdef",
                    "mbrec.git_dirty": "false", **(tags or {})}
        run = self.client.create_run(self.experiment, start_time=next(_clock), tags=all_tags)
        rid = run.info.run_id
        merged = {**DEFAULT_PARAMS, **(params or {}), "seed": str(seed), "paths.cache_dir": f"/tmp/{case}/{seed}"}
        now = next(_clock)
        points = [Metric(k, v, now, 0) for k, v in metrics.items()]
        for key, values in (histories or {}).items():
            points += [Metric(key, v, now, step) for step, v in enumerate(values, 1)]
        self.client.log_batch(rid, metrics=points, params=[Param(k, v) for k, v in merged.items()])
        if results is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "results.json"
                path.write_text(json.dumps(results))
                self.client.log_artifact(rid, str(path))
        self.client.set_terminated(rid, "FINISHED")
        return rid

    def plain(self, histories: dict[str, list[float]]) -> str:
        """A finished non-student run (a teacher) with metric histories."""
        from mlflow.entities import Metric

        run = self.client.create_run(self.experiment, start_time=next(_clock), tags={"mbrec.stage": "teacher"})
        now = next(_clock)
        self.client.log_batch(run.info.run_id, metrics=[Metric(k, v, now, s) for k, vs in histories.items()
                                                        for s, v in enumerate(vs, 1)])
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id


R20 = "test/recall_at_20"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("report-store"))


def _table(store: Store, case: str, metrics=(R20,), base_row: str = "none") -> pd.DataFrame:
    return cell_table(load_runs(store.uri, f"tags.testcase = '{case}'"), metrics, base_row)


# ---------------------------------------------------------------- rows never mix
def test_runs_differing_beyond_the_seed_are_split_into_labelled_rows(store) -> None:
    """A 2x2 sweep over lr x lambda_kd is four CKD rows (not one "seeds 1" row); the settings that never
    change a run (paths, device, resume, the seed) split nothing."""
    for seed in (0, 1):
        store.student("split", "none", seed, {R20: 0.10 + seed / 100})
        for lr in ("0.001", "0.0005"):
            for kd in ("0.01", "0.1"):
                store.student("split", "ckd", seed, {R20: 0.12 + seed / 100 + float(kd)},
                              params={"optimizer.lr": lr, "balancer.lambda_kd": kd})
    table = _table(store, "split").set_index("split")
    ckd = table[table["balancer"] == "ckd"]
    assert sorted(ckd.index) == [f"balancer.lambda_kd={kd}, optimizer.lr={lr}"
                                 for kd in ("0.01", "0.1") for lr in ("0.0005", "0.001")]
    assert list(ckd["n_seeds"]) == [2, 2, 2, 2]
    assert table.loc["", "n_seeds"] == 2  # the base row is one row: paths and the seed differ only
    row = ckd.loc["balancer.lambda_kd=0.1, optimizer.lr=0.001"]
    assert row[f"{R20}:impr%"] == pytest.approx(100 * (np.mean([0.22, 0.23]) / np.mean([0.10, 0.11]) - 1))
    assert row[f"{R20}:n"] == 2
    md = markdown_document("table1", _table(store, "split"), (R20,))
    assert "+CKD (balancer.lambda_kd=0.1, optimizer.lr=0.001)" in md and "kept apart" in md


def test_split_base_is_matched_by_its_settings(store) -> None:
    """Every row swept over L2: each is compared with the base row of the same L2."""
    for seed in (0, 1, 2):
        for l2, shift in (("1e-05", 0.0), ("0.001", 0.05)):
            store.student("split-base", "none", seed, {R20: 0.10 + shift + seed / 100}, params={"train.l2": l2})
            store.student("split-base", "gb", seed, {R20: 0.11 + shift + seed / 50}, params={"train.l2": l2})
    table = _table(store, "split-base").set_index(["balancer", "split"])
    for l2, shift in (("1e-05", 0.0), ("0.001", 0.05)):
        gb = table.loc[("gb", f"train.l2={l2}")]
        base = [0.10 + shift + s / 100 for s in range(3)]
        other = [0.11 + shift + s / 50 for s in range(3)]
        assert gb[f"{R20}:impr%"] == pytest.approx(100 * (np.mean(other) / np.mean(base) - 1))
        assert gb["base"] == f"base (train.l2={l2})"


def test_tuned_rows_are_compared_only_with_the_tuned_base_never_a_stale_one(store) -> None:
    """The issue's case: the store still holds the base row of an older tuning (lr 1e-3) next to the
    current one (lr 5e-3). GB, tuned at lr 1e-3 against the current base, shares its settings with the
    stale base but is compared with the tuned one; CKD likewise. A row whose tuned base has no runs
    gets no change and a footnote saying so; nothing else is picked."""
    stale, tuned = [0.05, 0.06, 0.07], [0.20, 0.21, 0.22]
    gb, ckd = [0.18, 0.19, 0.20], [0.22, 0.23, 0.25]
    tag = lambda tuning, base: {"budget.tuning": tuning, "budget.base": base, "budget.search": "paper-grid"}  # noqa: E731
    for seed in range(3):
        store.student("stale", "none", seed, {R20: stale[seed]}, params={"optimizer.lr": "0.001"}, tags=tag("old", "old"))
        store.student("stale", "none", seed, {R20: tuned[seed]}, params={"optimizer.lr": "0.005"}, tags=tag("new", "new"))
        store.student("stale", "gb", seed, {R20: gb[seed]}, params={"optimizer.lr": "0.001"}, tags=tag("g1", "new"))
        store.student("stale", "ckd", seed, {R20: ckd[seed]}, params={"optimizer.lr": "0.005"}, tags=tag("c1", "new"))
        store.student("stale", "ogm", seed, {R20: 0.2}, params={"optimizer.lr": "0.001"}, tags=tag("o1", "gone"))
    table = _table(store, "stale").set_index("balancer")
    assert table.loc["gb", f"{R20}:impr%"] == pytest.approx(100 * (np.mean(gb) / np.mean(tuned) - 1))  # −10 %, not +200 %
    assert table.loc["gb", "base"] == "base (optimizer.lr=0.005)"
    assert table.loc["ckd", f"{R20}:impr%"] == pytest.approx(100 * (np.mean(ckd) / np.mean(tuned) - 1))
    assert pd.isna(table.loc["ogm", f"{R20}:impr%"]) and table.loc["ogm", "base"] == ""
    assert "tuning gone" in table.loc["ogm", "base_note"] and "missing" in table.loc["ogm", "base_note"]
    md = markdown_document("table1", table.reset_index(), (R20,))
    assert "synthetic vbpr +OGM: no change over the base row: the tuned base row it was tuned against (tuning gone) is missing." in md


def test_untagged_rows_with_an_ambiguous_base_get_no_change_and_a_footnote(store) -> None:
    for seed in range(2):
        for lr in ("0.001", "0.005"):
            store.student("ambiguous", "none", seed, {R20: 0.1 + seed / 100}, params={"optimizer.lr": lr})
        store.student("ambiguous", "gb", seed, {R20: 0.1}, params={"optimizer.lr": "0.0005"})
    table = _table(store, "ambiguous").set_index("balancer")
    assert pd.isna(table.loc["gb"].get(f"{R20}:impr%", np.nan))
    assert "none picked" in markdown_document("table1", table.reset_index(), (R20,))


def test_cpu_and_gpu_runs_of_one_row_are_split_and_devices_stated(store) -> None:
    for seed in range(3):
        store.student("device", "none", seed, {R20: 0.1}, tags={"mbrec.device": "cpu"})
        store.student("device", "gb", seed, {R20: 0.1}, tags={"mbrec.device": "cuda:0" if seed == 2 else "cpu"})
    table = _table(store, "device")
    gb = table[table["balancer"] == "gb"].set_index("split")
    assert sorted(gb.index) == ["device=cpu", "device=cuda"] and list(gb.loc[["device=cpu", "device=cuda"], "n_seeds"]) == [2, 1]
    md = markdown_document("table1", table, (R20,))
    assert "devices per row: base cpu; +GB (device=cpu) cpu; +GB (device=cuda) cuda:0" in md


def test_seeds_stopped_at_max_epochs_are_footnoted(store) -> None:
    for seed in range(3):
        store.student("maxep", "none", seed, {R20: 0.1}, tags={"mbrec.max_epochs_hit": "true" if seed else "false"})
    md = markdown_document("table1", _table(store, "maxep"), (R20,))
    assert "synthetic vbpr base: 2 of 3 seeds stopped at train.max_epochs=1000 while still improving" in md


def test_a_default_run_never_joins_smoke_rows(store) -> None:
    """The issue's case: one default-size base run added to a smoke-scale set. It is a block of its own
    (other fingerprint and scale); the smoke rows and GB's change stay what the smoke runs say."""
    base, gb = [0.10, 0.12, 0.11], [0.11, 0.125, 0.118]
    for seed, (b, g) in enumerate(zip(base, gb)):
        store.student("smoke", "none", seed, {R20: b}, params=SMOKE_PARAMS, fingerprint="a" * 16)
        store.student("smoke", "gb", seed, {R20: g}, params=SMOKE_PARAMS, fingerprint="a" * 16)
    store.student("smoke", "none", 3, {R20: 0.30}, fingerprint="b" * 16)  # default scale, other data
    table = _table(store, "smoke")
    smoke = table[table["scale"] == "smoke"].set_index("balancer")
    assert list(smoke["n_seeds"]) == [3, 3]
    assert smoke.loc["gb", f"{R20}:impr%"] == pytest.approx(100 * (np.mean(gb) / np.mean(base) - 1))
    default = table[table["scale"] == "default"]
    assert list(default["balancer"]) == ["none"] and list(default["n_seeds"]) == [1]
    md = markdown_document("table1", table, (R20,))
    assert md.startswith("## SMOKE SCALE")
    rows_md = [line for line in md.splitlines() if line.startswith("| synthetic")]
    assert len(rows_md) == 3 and sum("[smoke]" in line for line in rows_md) == 2  # every smoke row marked
    tex = to_latex(table, (R20,))
    assert "SMOKE SCALE" in tex and r"Synthetic" not in tex and "synthetic (smoke)" in tex
    assert "\nVBPR [smoke] & " in tex and "\n+GB [smoke] & " in tex  # rows with smoke values: marked


def test_scale_from_tag_or_inferred_from_params() -> None:
    assert infer_scale(SMOKE_PARAMS) == "smoke"
    assert infer_scale(DEFAULT_PARAMS) == "default"
    assert infer_scale({**SMOKE_PARAMS, "train.max_epochs": "50"}) == "default"


def test_tagged_scale_wins_and_any_other_scale_is_marked_but_not_called_smoke(store) -> None:
    store.student("scale-tag", "none", 0, {R20: 0.1}, tags={"mbrec.scale": "smoke"})
    assert list(load_runs(store.uri, "tags.testcase = 'scale-tag'")["scale"]) == ["smoke"]
    store.student("scale-large", "none", 0, {R20: 0.1}, tags={"mbrec.scale": "large"})
    md = markdown_document("table1", _table(store, "scale-large"), (R20,))
    assert "| synthetic [large] |" in md and "SMOKE" not in md


# ---------------------------------------------------------------- paired seeds
def test_change_and_p_use_the_paired_seeds_and_show_n(store) -> None:
    base = {0: 0.30, 1: 0.10, 2: 0.12, 3: 0.11}  # seed 0 has no GB partner and must not move the change
    gb = {1: 0.11, 2: 0.125, 3: 0.118}
    for seed, v in base.items():
        store.student("paired", "none", seed, {R20: v})
    for seed, v in gb.items():
        store.student("paired", "gb", seed, {R20: v})
    table = _table(store, "paired").set_index("balancer")
    paired = [base[s] for s in gb]
    assert table.loc["gb", f"{R20}:n"] == 3
    assert table.loc["gb", f"{R20}:impr%"] == pytest.approx(100 * (np.mean(list(gb.values())) / np.mean(paired) - 1))
    assert table.loc["none", f"{R20}:mean"] == pytest.approx(np.mean(list(base.values())))  # own mean: all seeds
    assert table.loc["gb", f"{R20}:p"] == pytest.approx(0.0341, abs=1e-4)
    md = markdown_document("table1", table.reset_index(), (R20,))
    assert "(+7.0%, p=0.034*, n=3)" in md
    assert "seeds per row: base 0,1,2,3; +GB 1,2,3" in md


# ---------------------------------------------------------------- provenance
def test_provenance_from_tags_params_and_results_json(store) -> None:
    budget = {"budget.trials": "20", "budget.epochs": "400", "budget.search": "equal-tpe"}
    size = {"mbrec.data.users": "80", "mbrec.data.items": "60", "mbrec.data.interactions": "812"}
    for seed in (0, 1):
        store.student("prov", "none", seed, {R20: 0.1}, params=SMOKE_PARAMS, tags={**budget, **size})
        store.student("prov", "ckd", seed, {R20: 0.1}, params=SMOKE_PARAMS,
                      tags={**size, "budget.trials": "20", "budget.search": "equal-tpe", "mbrec.git_dirty": "true"})
    lines = provenance(_table(store, "prov"))
    assert lines[0] == ("synthetic [smoke]: 80 users, 60 items, 812 interactions; data fingerprint ffffffffffffffff; "
                        "training ≤ 2 epochs (validation every 1, patience 1); seeds 0,1 in every row; "
                        "tuning budget: base 20 trials, 400 epochs, equal-tpe; +CKD 20 trials, equal-tpe; "
                        "code 012345678 (with uncommitted changes)")
    # no tags: the size from the run's results.json; no budget tags: "–"
    results = {"dataset": {"users": 70, "items": 50, "train_interactions": 500, "valid_interactions": 70,
                           "test_interactions": 70}}
    store.student("prov-artifact", "none", 0, {R20: 0.1}, results=results)
    line = provenance(_table(store, "prov-artifact"))[0]
    assert "70 users, 50 items, 640 interactions" in line and "tuning budget per row: –" in line
    # neither: the synthetic generator's counts, interactions unknown
    store.student("prov-params", "none", 0, {R20: 0.1})
    assert "2000 users, 1000 items, – interactions" in provenance(_table(store, "prov-params"))[0]


# ---------------------------------------------------------------- rows from the registry
def test_rows_come_from_the_registry_including_a_toy_balancer(store) -> None:
    from mbrec.balancers import BALANCERS, ROWS, Balancer, Row, register

    @register("toyrow", Row(label="+Toy", order=25))
    class Toy(Balancer):
        pass

    @register("toy_plain")
    class ToyPlain(Balancer):
        pass

    try:
        for seed in (0, 1):
            for i, bal in enumerate(("toy_plain", "ckd", "toyrow", "none", "gb")):
                store.student("toy", bal, seed, {R20: 0.1 + i / 100 + seed / 1000})
        table = _table(store, "toy")
        assert list(table["balancer"]) == ["none", "gb", "toyrow", "ckd", "toy_plain"]
        assert list(table["label"]) == ["base", "+GB", "+Toy", "+CKD", "toy_plain"]
        tex = to_latex(table, (R20,), delta="ckd")
        assert r"+Toy$^{\dagger}$ & " in tex and r"toy\_plain$^{\dagger}$ & " in tex and "\nVBPR & " in tex
        assert rows.paper_row("toyrow") is None and rows.paper_row("gb") == "GB"
    finally:
        for name in ("toyrow", "toy_plain"):
            BALANCERS.pop(name)
            ROWS.pop(name)


def test_extended_table_marks_rows_beyond_the_paper_and_compares_them_with_ckd(store) -> None:
    """Rows from the registry (UMT, the ensemble) after the paper's, marked †, each compared with the base
    row AND with CKD (paired over seeds); the paper's rows are compared with the base row only."""
    from mbrec.report.tables import markdown_document, paired_test

    values = {"none": [0.10, 0.12, 0.11], "ckd": [0.20, 0.21, 0.23], "umt": [0.15, 0.19, 0.18],
              "ensemble": [0.30, 0.31, 0.35], "gb": [0.11, 0.13, 0.12]}
    for bal, vs in values.items():
        for seed, v in enumerate(vs):
            store.student("extended", bal, seed, {R20: v})
    table = cell_table(load_runs(store.uri, "tags.testcase = 'extended'"), (R20,), "none", peer="ckd")
    assert list(table["balancer"]) == ["none", "gb", "ckd", "umt", "ensemble"]
    assert list(table["paper"]) == ["base", "GB", "CKD", "", ""]
    by = table.set_index("balancer")
    assert by.loc["umt", f"{R20}:p"] == pytest.approx(paired_test(dict(enumerate(values["none"])), dict(enumerate(values["umt"]))))
    assert by.loc["umt", f"{R20}:p:vs"] == pytest.approx(paired_test(dict(enumerate(values["ckd"])), dict(enumerate(values["umt"]))))
    assert by.loc["ensemble", f"{R20}:impr%:vs"] == pytest.approx(100 * (np.mean(values["ensemble"]) / np.mean(values["ckd"]) - 1))
    assert pd.isna(by.loc["gb", f"{R20}:p:vs"]) and by.loc["umt", "vs"] == "+CKD"
    md = markdown_document("table1", table, (R20,))
    assert "| +UMT † |" in md and "| +GB |" in md and "vs +CKD:" in md and "†: a row beyond the paper" in md
    tex = to_latex(table, (R20,), delta="ckd")
    lines = tex.splitlines()
    delta = next(i for i, line in enumerate(lines) if line.startswith(r"$\Delta$"))
    assert lines[delta - 1].startswith("+CKD & ") and lines[delta + 1].startswith(r"\cmidrule(l)")
    assert lines[delta + 2].startswith(r"+UMT$^{\dagger}$ & ") and "#: p" in tex


# ---------------------------------------------------------------- LaTeX in the paper's layout
def test_paper_layout_bold_best_compact_marks_and_delta(store) -> None:
    values = {"none": [0.10, 0.12, 0.11], "gb": [0.11, 0.125, 0.118], "ckd": [0.20, 0.21, 0.40]}
    for dataset, fp in (("baby", "1" * 16), ("sports", "2" * 16)):
        for bal, vs in values.items():
            for seed, v in enumerate(vs):
                store.student("latex", bal, seed, {R20: v, "test/ndcg_at_20": {"none": v / 2, "gb": v, "ckd": v / 4}[bal]},
                              dataset=dataset, fingerprint=fp)
    table = _table(store, "latex", (R20, "test/ndcg_at_20"))
    tex = to_latex(table, (R20, "test/ndcg_at_20"), delta="ckd")
    assert tex.startswith(r"\begin{tabular}{lrrrr}")
    assert r"\multicolumn{2}{c}{Baby} & \multicolumn{2}{c}{Sports}" in tex
    assert r"Model & R@20 & NDCG@20 & R@20 & NDCG@20" in tex
    body = {line.split(" & ")[0]: line.split(" & ")[1:] for line in tex.splitlines() if " & " in line}
    # best of each column in bold: CKD's recall, GB's NDCG; ± without the leading zero
    assert body["+CKD"][0] == r"\textbf{0.2700}{\scriptsize$\pm$.1127}"  # not significant: no mark
    assert body["+GB"][1] == r"\textbf{0.1177}{\scriptsize$\pm$.0075}$^{*}$"
    assert body["+GB"][0] == r"0.1177{\scriptsize$\pm$.0075}$^{*}$"  # p = 0.034 against the base
    assert body["VBPR"][0] == r"0.1100{\scriptsize$\pm$.0100}"
    assert body[r"$\Delta$ Improv."][0] == r"+145.45\%"
    assert "n = 3 seeds both share" in tex and "code 012345678" in tex
    long = to_latex(table, (R20,), layout="long")
    assert long.startswith(r"\begin{tabular}{llllrl}") and "n=3)" in long


def test_report_cli_writes_all_outputs_and_compiles(store, tmp_path) -> None:
    out = tmp_path / "rep"
    args = ["table1", "--tracking-uri", store.uri, "--runs", "tags.testcase = 'latex'", "--out", str(out)]
    report_main(args)
    assert (out / "table1.tex").read_text().startswith(r"\begin{tabular}{lrrrrrrrr}")
    csv = pd.read_csv(out / "table1.csv")
    assert {"fingerprint", "scale", "seeds", "commit", f"{R20}:n"} <= set(csv.columns)
    report_main([*args, "--layout", "long", "--out", str(out / "long")])
    assert r"\begin{tabular}{llll" in (out / "long" / "table1.tex").read_text()
    import shutil

    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed")
    report_main([*args, "--pdf"])
    assert (out / "table1-standalone.pdf").read_bytes()[:4] == b"%PDF"


def test_build_table_for_table2_and_table3_keeps_ckd_rows(store) -> None:
    for seed in (0, 1):
        store.student("t23", "none", seed, {R20: 0.1, f"{R20}/text": 0.05, f"{R20}/visual": 0.04})
        store.student("t23", "ckd", seed, {R20: 0.2, f"{R20}/text": 0.08, f"{R20}/visual": 0.07,
                                           f"teacher/text/{R20}": 0.09, f"teacher/visual/{R20}": 0.06})
        store.student("t23", "ckd", seed, {R20: 0.15}, params={"balancer.lambda_g": "0"})
    runs = load_runs(store.uri, "tags.testcase = 't23'")
    t2, _ = build_table("table2", runs[runs["variant"] != "ckd w/o Gen."])
    assert list(t2["label"]) == ["base", "+CKD", "uni-teacher"]
    t3, _ = build_table("table3", runs[runs["balancer"] == "ckd"])
    assert list(t3["label"]) == ["+CKD", "w/o Gen."] and t3["split"].tolist() == ["", ""]
    assert t3.set_index("label").loc["w/o Gen.", f"{R20}:impr%"] == pytest.approx(-25.0)


# ---------------------------------------------------------------- figures
def _ckd_runs(store: Store, case: str, seeds=(0, 1)) -> list[str]:
    ids = []
    for seed in seeds:
        teachers = {m: store.plain({f"val/{R20[5:]}".replace("test/", ""): [0.05 + 0.01 * e + seed / 100 for e in range(6)]})
                    for m in ("text", "visual")}
        curve = [0.04 + 0.012 * e + seed / 100 for e in range(6)]
        hist = {"val/recall_at_20": curve, "val/recall_at_20/text": [c * 0.8 for c in curve],
                "val/recall_at_20/visual": [c * 0.5 for c in curve],
                "ckd/lambda/text": [0.3] * 6, "ckd/lambda/visual": [0.7] * 6,
                "ckd/rho/text": [0.9] * 6, "ckd/rho/visual": [0.4] * 6}
        ids.append(store.student(case, "ckd", seed, {R20: 0.1}, histories=hist, params=SMOKE_PARAMS,
                                 tags={f"mbrec.teacher.{m}.run_id": t for m, t in teachers.items()}))
    return ids


def test_figures_200_dpi_titled_banded_legend_clear_of_the_axes(store, tmp_path) -> None:
    from PIL import Image

    from mbrec.report import figures

    ids = _ckd_runs(store, "fig")
    fig = figures.pilot(store.client, ids, "synthetic / VBPR")
    assert fig._suptitle.get_text() == "synthetic / VBPR — mean ± std over 2 seeds"
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    for ax in fig.axes:
        assert not legend.overlaps(ax.get_tightbbox(renderer)), "the legend covers a panel"
        assert len(ax.collections) == 3  # a ± band per curve (two seeds)
    figures.save(fig, tmp_path / "x.png")
    # the CLI: one figure pair per row of CKD runs, at 200 dpi
    report_main(["figures", "--tracking-uri", store.uri, "--runs", "tags.testcase = 'fig'", "--out", str(tmp_path)])
    for name in ("pilot-synthetic-vbpr-smoke.png", "traces-synthetic-vbpr-smoke.png"):
        with Image.open(tmp_path / name) as img:
            assert img.info["dpi"] == pytest.approx((200, 200), abs=0.1)
            assert img.size[0] >= 1800


def test_report_into_a_place_that_cannot_be_written_is_one_line(store, tmp_path, monkeypatch) -> None:
    """A read-only or full ``--out`` ends the report with one line naming the file and the option to
    change (injected: the tests may run as root, for whom no folder is read-only)."""
    import errno
    import os

    import mbrec.report.__main__ as report_cli

    def read_only(path, text):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(report_cli, "atomic_write_text", read_only)
    out = tmp_path / "ro"
    with pytest.raises(SystemExit) as stop:
        report_main(["table1", "--tracking-uri", store.uri, "--runs", "tags.testcase = 'latex'", "--out", str(out)])
    line = str(stop.value)
    assert line.startswith(f"{out / 'table1.md'}: {os.strerror(errno.EROFS)}. Fix:") and "--out" in line
    assert "\n" not in line
