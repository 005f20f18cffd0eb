"""The record of a run (mbrec.record): what a run writes is what the reports, the sweep summary, the
finished-run index and the Table 1 driver read back — and no module spells a tag name of its own."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import mbrec
from mbrec.record import Results, Tag, is_results

from conftest import run_pipeline

SRC = Path(mbrec.__file__).resolve().parent


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, dict]:
    """One tiny CKD run with MLflow on (teachers: nested fits through the fit service)."""
    tmp = tmp_path_factory.mktemp("record")
    _, results = run_pipeline(["balancer=ckd", "balancer.gd_samples=16", "seed=7"], tmp)
    return tmp, results


def test_results_json_is_the_schema(finished_run) -> None:
    tmp, written = finished_run
    parsed = Results.from_json(written)
    assert parsed.to_json() == written and not parsed.extra
    assert parsed.metric == "recall@20" and parsed.best_valid_value == parsed.best_valid[parsed.metric]
    assert set(parsed.balancer["teachers"]) == {"text", "visual"} and parsed.teacher_epochs > 0
    assert is_results(written) and not is_results({"metric": "recall@20"}) and not is_results([1])


def test_reports_read_back_what_a_run_writes(finished_run) -> None:
    from mbrec.report.runs import load_runs

    tmp, written = finished_run
    runs = load_runs(f"sqlite:///{tmp / 'mlflow.db'}", f"tags.`{Tag.SEED}` = '7'")
    assert len(runs) == 1
    row = runs.iloc[0]
    data = written["dataset"]
    assert (row["dataset"], row["backbone"], row["balancer"], row["seed"]) == ("synthetic", "vbpr", "ckd", 7)
    assert row["run_id"] == written["mlflow_run_id"] and row["fingerprint"] == data["fingerprint"][:16]
    assert row["commit"] == written["code"]["commit"] and row["dirty"] == str(written["code"]["dirty"]).lower()
    assert isinstance(written["code"]["dirty"], bool)  # a bool in results.json, "true"/"false" as a tag
    assert int(row["users"]) == data["users"] and int(row["items"]) == data["items"]
    assert int(row["interactions"]) == sum(data[f"{s}_interactions"] for s in ("train", "valid", "test"))
    assert row["test/recall_at_20"] == pytest.approx(written["test"]["recall@20"])


def test_teacher_runs_are_children_with_the_students_tags(finished_run) -> None:
    from mbrec.services.tracking import client_for

    tmp, written = finished_run
    client = client_for(f"sqlite:///{tmp / 'mlflow.db'}")
    student = client.get_run(written["mlflow_run_id"])
    assert Tag.teacher_modalities(student.data.tags) == ["text", "visual"]
    for m in ("text", "visual"):
        teacher = client.get_run(student.data.tags[Tag.teacher_run(m)])
        tags = teacher.data.tags
        assert tags[Tag.PARENT] == student.info.run_id and tags[Tag.MODALITY] == m
        assert (tags[Tag.DATASET], tags[Tag.BACKBONE], tags[Tag.BALANCER], tags[Tag.SEED]) == ("synthetic", "vbpr", "ckd", "7")
        assert tags[Tag.FIT_KEY] and student.data.tags[Tag.teacher_cached(m)] == "false"


def test_sweep_readers_read_the_results(finished_run, tmp_path: Path) -> None:
    from mbrec.progress import _trial
    from mbrec.services import finished
    from mbrec.sweep.budget import study_budget

    tmp, written = finished_run
    trial = _trial(tmp / "out")
    assert isinstance(trial["results"], Results) and trial["results"].best_valid_value == written["best_valid_value"]
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "results.json").write_text(json.dumps(written))
    assert study_budget(tmp_path) == {"trials": 1, "epochs": written["epochs_run"] + Results.from_json(written).teacher_epochs,
                                      "replays": 0}
    finished.record(tmp_path / "cache", "k", written)
    assert finished.replay(tmp_path / "cache", "k", tmp_path / "replay") == written["best_valid_value"]
    replayed = json.loads((tmp_path / "replay" / "results.json").read_text())
    assert replayed.pop("replayed_from") and replayed == written


_TAG_LITERAL = re.compile(r"""["'](mbrec\.(?:dataset|backbone|balancer|seed|stage|scale|run_key|fit_key|"""
                          r"""data\.(?:users|items|interactions)|data_fingerprint|"""
                          r"""git_dirty|output_dir|cache_dir|ablate|modality|failure|pruned\w*|teacher\.|preset\.)[^"']*)["']""")
_NOT_TAGS = ("register_new_resolver", "mbrec.data.split")  # resolver names and module paths look alike


def test_no_module_spells_a_tag_name_of_its_own() -> None:
    """Tag names are written once, in mbrec/record.py; everyone else uses Tag.<NAME>."""
    found = [f"{p.relative_to(SRC)}: {m[1]}" for p in SRC.rglob("*.py") if p.name != "record.py"
             for line in p.read_text().splitlines() if not any(n in line for n in _NOT_TAGS)
             for m in _TAG_LITERAL.finditer(line)]
    assert not found, found
