"""Files and folders mbrec creates honour the user's umask (mkstemp/mkdtemp alone would make them
0600/0700, unreadable to a lab group sharing results, caches and prepared data)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from mbrec.data.prepare.amazon import convert_lattice, prepare_amazon
from mbrec.data.prepare.features import HashingEncoder
from mbrec.utils import atomic_write_bytes, atomic_write_json, atomic_write_text, current_umask

from prepare_raw import write_raw


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_without_changing(umask) -> None:
    assert current_umask() == umask and current_umask() == umask


def test_atomic_writes_honour_the_umask(umask, tmp_path) -> None:
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_json(tmp_path / "sub" / "results.json", {"a": 1})
    atomic_write_bytes(tmp_path / "c.pt", b"payload")
    for f in ("a.txt", "sub/results.json", "c.pt"):
        assert mode(tmp_path / f) == 0o666 & ~umask, f
    if umask == 0o022:
        assert mode(tmp_path / "a.txt") == 0o644
    atomic_write_text(tmp_path / "a.txt", "y")  # replacing keeps honouring it
    assert mode(tmp_path / "a.txt") == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "c.pt", "sub"]  # no temporary file left


def test_prepared_folder_honours_the_umask(umask, tmp_path) -> None:
    raw = write_raw(tmp_path / "raw")
    out = tmp_path / "data" / "baby"
    prepare_amazon(raw["reviews"], raw["meta"], raw["images"], out, text_model=HashingEncoder(8))
    assert mode(out) == 0o777 & ~umask
    assert {p.name: mode(p) for p in out.iterdir()} == {p.name: 0o666 & ~umask for p in out.iterdir()}
    if umask == 0o022:
        assert mode(out) == 0o755 and mode(out / "baby.inter") == 0o644


def test_converted_folder_honours_the_umask_not_the_source_modes(umask, tmp_path) -> None:
    src = tmp_path / "lat"
    (src / "5-core").mkdir(parents=True)
    for f in ("train.json", "val.json", "test.json"):
        (src / "5-core" / f).write_text('{"0": [0, 1], "1": [1]}' if f == "train.json" else {"val.json": '{"0": [2]}', "test.json": '{"1": [2]}'}[f])
    np.save(src / "image_feat.npy", np.ones((3, 4), dtype=np.float32))
    (src / "image_feat.npy").chmod(0o600)  # a private source file: the copy follows the umask, not this
    out = tmp_path / "mm" / "ckd"
    convert_lattice(src, out, "ckd")
    assert mode(out) == 0o777 & ~umask
    assert {p.name: mode(p) for p in out.iterdir()} == {p.name: 0o666 & ~umask for p in out.iterdir()}
