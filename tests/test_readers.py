"""Readers for both layouts, on small files the tests write, and every validation error."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from mbrec.data.loading import load_dataset
from mbrec.data.readers import read_dataset
from mbrec.errors import DataError

# user, item, split: 3 users x 4 items
ROWS = [(0, 0, 0), (0, 1, 0), (0, 2, 1), (0, 3, 2), (1, 1, 0), (1, 2, 0), (1, 0, 1), (1, 3, 2), (2, 3, 0), (2, 0, 1), (2, 1, 2)]


def write_mmrec(folder: Path, rows=ROWS, n_items=4, text_dim=3, name="toy", header="userID\titemID\trating\ttimestamp\tx_label"):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [header] + [f"{u}\t{i}\t5\t0\t{s}" for u, i, s in rows]
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(0)
    np.save(folder / "image_feat.npy", rng.random((n_items, 5)).astype(np.float32))
    np.save(folder / "text_feat.npy", rng.random((n_items, text_dim)).astype(np.float32))
    return folder


def write_lattice(folder: Path, rows=ROWS, n_items=4):
    (folder / "5-core").mkdir(parents=True, exist_ok=True)
    for label, fname in enumerate(("train.json", "val.json", "test.json")):
        d: dict[str, list[int]] = {}
        for u, i, s in rows:
            if s == label:
                d.setdefault(str(u), []).append(i)
        (folder / "5-core" / fname).write_text(json.dumps(d))
    rng = np.random.default_rng(0)
    np.save(folder / "image_feat.npy", rng.random((n_items, 5)).astype(np.float32))
    np.save(folder / "text_feat.npy", rng.random((n_items, 1024)).astype(np.float32))
    return folder


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_mmrec_layout(tmp_path):
    ds = read_dataset(write_mmrec(tmp_path / "toy"), "toy")
    assert (ds.n_users, ds.n_items) == (3, 4)
    assert ds.train.nnz == 5 and ds.valid.nnz == 3 and ds.test.nnz == 3
    assert ds.modalities == ("visual", "text") or set(ds.modalities) == {"visual", "text"}
    assert ds.features["text"].shape == (4, 3)
    assert ds.train[0].indices.tolist() == [0, 1]


def test_lattice_layout_reads_text_width_from_file(tmp_path):
    ds = read_dataset(write_lattice(tmp_path / "toy"), "toy")
    assert ds.features["text"].shape == (4, 1024)
    assert ds.valid[2].indices.tolist() == [0]
    assert ds.source.startswith("lattice:")


def test_both_layouts_give_the_same_data(tmp_path):
    a = read_dataset(write_mmrec(tmp_path / "a"), "toy")
    b = read_dataset(write_lattice(tmp_path / "b"), "toy")
    for s in ("train", "valid", "test"):
        assert (a.split(s) != b.split(s)).nnz == 0


def test_load_dataset_uses_data_dir(tmp_path):
    write_mmrec(tmp_path / "data" / "toy")
    ds = load_dataset({"name": "toy", "source": "files", "path": None}, tmp_path / "data")
    assert ds.n_items == 4


def test_missing_folder_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset({"name": "baby", "source": "files"}, tmp_path / "data")
    msg = str(e.value)
    assert str(tmp_path / "data" / "baby") in msg and "README" in msg


def test_unknown_layout(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="neither"):
        read_dataset(tmp_path / "x", "x")


@pytest.mark.parametrize(
    "rows, n_items, match",
    [
        (ROWS + [(-1, 0, 0)], 4, "negative"),
        (ROWS + [(0, 7, 0)], 4, "out of range"),
        (ROWS, 6, "feature rows"),
        (ROWS + [(0, 0, 0)], 4, "duplicated"),
        (ROWS + [(0, 0, 2)], 4, "duplicated"),
        ([r for r in ROWS if r[2] != 1], 4, "validation: split is empty"),
        ([(u, i, 0) for u, i, _ in ROWS], 4, "split is empty"),
    ],
)
def test_validation_errors_name_file_field_and_fix(tmp_path, rows, n_items, match):
    folder = write_mmrec(tmp_path / "toy", rows=rows, n_items=n_items)
    before = _listing(folder)
    with pytest.raises(DataError, match=match) as e:
        read_dataset(folder, "toy")
    assert "Fix:" in str(e.value) and str(folder) in str(e.value)
    assert _listing(folder) == before  # nothing written


def test_nan_features(tmp_path):
    folder = write_mmrec(tmp_path / "toy")
    f = np.load(folder / "text_feat.npy")
    f[2, 1] = np.nan
    np.save(folder / "text_feat.npy", f)
    with pytest.raises(DataError, match=r"text_feat.npy.*NaN/Inf.*\[2\]"):
        read_dataset(folder, "toy")


def test_bad_x_label_and_missing_column(tmp_path):
    with pytest.raises(DataError, match="x_label.*not 0, 1 or 2"):
        read_dataset(write_mmrec(tmp_path / "a", rows=ROWS + [(0, 3, 5)]), "toy")
    with pytest.raises(DataError, match="x_label: column missing"):
        read_dataset(write_mmrec(tmp_path / "b", header="userID\titemID\trating\ttimestamp\tsplit"), "toy")


def test_lattice_non_integer_user(tmp_path):
    folder = write_lattice(tmp_path / "toy")
    (folder / "5-core" / "val.json").write_text(json.dumps({"abc": [1]}))
    with pytest.raises(DataError, match="val.json.*'abc'.*not an integer"):
        read_dataset(folder, "toy")


def test_user_with_test_items_but_no_training_items_is_dropped(tmp_path, caplog):
    rows = ROWS + [(3, 2, 1), (3, 0, 2)]  # user 3 never appears in train
    with caplog.at_level(logging.WARNING):
        ds = read_dataset(write_mmrec(tmp_path / "toy", rows=rows), "toy")
    assert "dropping 2 validation/test interactions of 1 users" in caplog.text
    assert ds.valid[3].nnz == 0 and ds.test[3].nnz == 0
    assert ds.valid.nnz == 3


def test_dataset_is_immutable(tmp_path):
    ds = read_dataset(write_mmrec(tmp_path / "toy"), "toy")
    with pytest.raises((ValueError, TypeError)):
        ds.features["text"][0, 0] = 1.0
    with pytest.raises(TypeError):
        ds.features["new"] = np.zeros((4, 1))  # type: ignore[index]
    with pytest.raises(ValueError):
        ds.train.indices[0] = 3
