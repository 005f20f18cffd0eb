"""Readers for both layouts, on small files the tests write, and every validation error."""

from __future__ import annotations

import ast
import io
import json
import logging
import os
import signal
import tracemalloc
from pathlib import Path

import numpy as np
import numpy.lib.format as npformat
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
    assert str(tmp_path / "data" / "baby") in msg and "docs/data.md" in msg


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


# ------------------------------------------------------------------------------ hostile input corpus
# Every case writes a small dataset folder, breaks it, and must get a DataError naming the file, the
# field (or line) and a fix — never a hang, a traceback, a huge allocation or silently changed data.

@pytest.fixture(autouse=True)
def _no_hang():
    """A FIFO or device that a reader blocked on would hang the suite: fail after 60 s instead."""
    def timeout(signum, frame):
        raise TimeoutError("the reader hung")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _inter(text: str):
    return lambda folder: (folder / "toy.inter").write_text(text)


def _inter_rows(*extra: str, header: str = "userID\titemID\trating\ttimestamp\tx_label"):
    base = [f"{u}\t{i}\t5\t0\t{s}" for u, i, s in ROWS]
    return _inter("\n".join([header, *base, *extra]) + "\n")


def _feat(array: np.ndarray, name: str = "text_feat.npy", **save_kw):
    return lambda folder: np.save(folder / name, array, **save_kw)


def _fifo(name: str):
    def make(folder: Path) -> None:
        (folder / name).unlink(missing_ok=True)
        os.mkfifo(folder / name)
    return make


def _symlink(name: str, target: str):
    def make(folder: Path) -> None:
        (folder / name).unlink(missing_ok=True)
        (folder / name).symlink_to(target)
    return make


def _replace_with_folder(name: str):
    def make(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).mkdir()
    return make


def _npy_header_only(shape: tuple[int, ...]):
    """A .npy whose header promises ``shape`` float32 but that holds 8 bytes of data."""
    def make(folder: Path) -> None:
        buf = io.BytesIO()
        npformat.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
        (folder / "text_feat.npy").write_bytes(buf.getvalue() + b"\0" * 8)
    return make


class _Boom:
    """Unpickling this would create a file: proof that nothing unpickles."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _pickled_features(folder: Path) -> None:
    arr = np.empty((4, 1), dtype=object)
    arr[:] = [[_Boom(str(folder.parent / "PWNED"))] for _ in range(4)]
    np.save(folder / "text_feat.npy", arr, allow_pickle=True)


def _lattice_file(fname: str, text: str):
    return lambda folder: (folder / "5-core" / fname).write_text(text)


def _train_json(obj_text: str):
    return _lattice_file("train.json", obj_text)


LATTICE_OK_TRAIN = '{"0": [0, 1], "1": [1, 2], "2": [3]}'

# case -> (layout, how to break the folder, file the message names, what it must say)
READER_CORPUS = {
    "header-only .inter": ("mmrec", _inter("userID\titemID\trating\ttimestamp\tx_label\n"), "toy.inter", "header but no interaction lines"),
    "empty .inter (0 bytes)": ("mmrec", _inter(""), "toy.inter", "the file is empty"),
    "user id 2**40 among 3 users": ("mmrec", _inter_rows(f"{2**40}\t0\t5\t0\t0"), "toy.inter", f"largest id is {2**40}"),
    "user id 10**8 among 3 users": ("mmrec", _inter_rows(f"{10**8}\t0\t5\t0\t0"), "toy.inter", "only 4 distinct users"),
    "item id 2**40": ("mmrec", _inter_rows(f"0\t{2**40}\t5\t0\t0"), "toy.inter", "out of range"),
    "user and item id 10**17 (product overflows)": ("mmrec", _inter_rows(f"{10**17}\t{10**17}\t5\t0\t0"), "toy.inter", "out of range"),
    "FIFO named text_feat.npy": ("mmrec", _fifo("text_feat.npy"), "text_feat.npy", "named pipe (FIFO), not a regular file"),
    "FIFO named toy.inter": ("mmrec", _fifo("toy.inter"), "toy.inter", "named pipe"),
    "image_feat.npy -> /dev/zero": ("mmrec", _symlink("image_feat.npy", "/dev/zero"), "image_feat.npy", "character device"),
    "toy.inter -> /dev/urandom": ("mmrec", _symlink("toy.inter", "/dev/urandom"), "toy.inter", "character device"),
    "dangling symlink toy.inter": ("mmrec", _symlink("toy.inter", "/nonexistent/toy.inter"), "toy.inter", "does not exist"),
    "toy.inter is a folder": ("mmrec", _replace_with_folder("toy.inter"), "toy.inter", "is a folder"),
    "complex64 features": ("mmrec", _feat(np.ones((4, 3), np.complex64)), "text_feat.npy", "complex"),
    "object (pickled) features": ("mmrec", _pickled_features, "text_feat.npy", "object (pickled"),
    "structured features": ("mmrec", _feat(np.zeros(4, dtype=[("a", "<f4"), ("b", "<f4")])), "text_feat.npy", "structured"),
    "boolean features": ("mmrec", _feat(np.ones((4, 3), bool)), "text_feat.npy", "boolean"),
    "string features": ("mmrec", _feat(np.array([["a"] * 3] * 4)), "text_feat.npy", "text"),
    "features of 3e38": ("mmrec", _feat(np.full((4, 3), 3e38, np.float32)), "text_feat.npy", "12 values beyond +-1e+06"),
    "one feature of -2e6": ("mmrec", _feat(np.array([[0, 0, 0]] * 3 + [[0, -2e6, 0]], np.float32)), "text_feat.npy", "first rows: [3]"),
    "float64 features of 1e39 (inf as float32)": ("mmrec", _feat(np.full((4, 3), 1e39)), "text_feat.npy", "beyond +-1e+06"),
    "int64 features of 2**62": ("mmrec", _feat(np.full((4, 3), 2**62, np.int64)), "text_feat.npy", "beyond +-1e+06"),
    "-inf feature": ("mmrec", _feat(np.array([[0, 0, -np.inf]] + [[0, 0, 0]] * 3, np.float32)), "text_feat.npy", "NaN/Inf"),
    "1-d features": ("mmrec", _feat(np.zeros(4, np.float32)), "text_feat.npy", "expected (n_items, width)"),
    "0-wide features": ("mmrec", _feat(np.zeros((4, 0), np.float32)), "text_feat.npy", "expected (n_items, width)"),
    ".npy truncated": ("mmrec", lambda f: (f / "text_feat.npy").write_bytes((f / "text_feat.npy").read_bytes()[:-5]), "text_feat.npy", "truncated"),
    ".npy header promising 2**40 x 4096": ("mmrec", _npy_header_only((2**40, 4096)), "text_feat.npy", "truncated"),
    "text file named .npy": ("mmrec", lambda f: (f / "text_feat.npy").write_text("1,2,3\n"), "text_feat.npy", "cannot be read as a .npy"),
    "empty .npy": ("mmrec", lambda f: (f / "text_feat.npy").write_bytes(b""), "text_feat.npy", "cannot be read as a .npy"),
    "feature file without modality (_feat.npy)": ("mmrec", _feat(np.zeros((4, 2), np.float32), "_feat.npy"), "_feat.npy", "names no modality"),
    "image_feat.npy and visual_feat.npy": ("mmrec", _feat(np.zeros((4, 2), np.float32), "visual_feat.npy"), "visual_feat.npy", "given twice"),
    "id 1.5": ("mmrec", _inter_rows("0\t1.5\t5\t0\t0"), "toy.inter", "line 13: itemID"),
    "id 1e3": ("mmrec", _inter_rows("1e3\t1\t5\t0\t0"), "toy.inter", "'1e3' is not an integer"),
    "id -1": ("mmrec", _inter_rows("-1\t1\t5\t0\t0"), "toy.inter", "'-1' is negative"),
    "id 0x10": ("mmrec", _inter_rows("0x10\t1\t5\t0\t0"), "toy.inter", "not an integer"),
    "quoted id": ("mmrec", _inter_rows('"3"\t1\t5\t0\t0'), "toy.inter", "not an integer"),
    "5000-digit id": ("mmrec", _inter_rows("9" * 5000 + "\t1\t5\t0\t0"), "toy.inter", "more than 18 digits"),
    "19-digit id (beyond int64)": ("mmrec", _inter_rows("9" * 19 + "\t1\t5\t0\t0"), "toy.inter", "more than 18 digits"),
    "2 MB line": ("mmrec", _inter_rows("0\t1\t" + "5" * (2 << 20) + "\t0\t0"), "toy.inter", "line 13"),
    "empty itemID field": ("mmrec", _inter_rows("0\t\t5\t0\t0"), "toy.inter", "itemID: '' is empty"),
    "short row (no x_label)": ("mmrec", _inter_rows("0\t1"), "toy.inter", "x_label: '' is empty"),
    "row with too many fields": ("mmrec", _inter_rows("0\t1\t5\t0\t0\t7"), "toy.inter", "cannot be parsed"),
    "non-UTF-8 .inter": ("mmrec", lambda f: (f / "toy.inter").write_bytes(b"userID\titemID\tx_label\n\xff\xfe\t1\t0\n"),
                         "toy.inter", "cannot be parsed"),
    "x_label 3": ("mmrec", _inter_rows("0\t3\t5\t0\t3"), "toy.inter", "line 13: x_label"),
    "categories: 5000 digits": ("mmrec", lambda f: (f / "item_categories").write_text("0\n1\n" + "9" * 5000 + "\n0\n"), "item_categories", "line 3"),
    "categories: id 10**12": ("mmrec", lambda f: (f / "item_categories").write_text(f"0\n1\n{10**12}\n0\n"), "item_categories", "largest id"),
    "categories: not integers": ("mmrec", lambda f: (f / "item_categories").write_text("0\nshoes\n1\n0\n"), "item_categories", "line 2"),
    "categories: FIFO": ("mmrec", _fifo("item_categories"), "item_categories", "named pipe"),
    "categories: too few": ("mmrec", lambda f: (f / "item_categories").write_text("0\n1\n"), "item_categories", "2 rows for 4 items"),
    "LATTICE: empty train split": ("lattice", _train_json("{}"), "train.json", "split is empty"),
    "LATTICE: 5000-digit item": ("lattice", _train_json('{"0": [0, 1], "1": [' + "9" * 5000 + "]}"), "train.json", "more than 18 digits"),
    "LATTICE: 5000-digit user": ("lattice", _train_json('{"' + "9" * 5000 + '": [0]}'), "train.json", "more than 18 digits"),
    "LATTICE: item 1e400": ("lattice", _train_json('{"0": [0, 1e400]}'), "train.json", "'1e400' is not an integer"),
    "LATTICE: item 1.5": ("lattice", _train_json('{"0": [0, 1.5]}'), "train.json", "user 0: item 2"),
    "LATTICE: item NaN": ("lattice", _train_json('{"0": [0, NaN]}'), "train.json", "'NaN' is not an integer"),
    "LATTICE: item Infinity": ("lattice", _train_json('{"0": [Infinity]}'), "train.json", "not an integer"),
    "LATTICE: item -1": ("lattice", _train_json('{"0": [-1]}'), "train.json", "is negative"),
    "LATTICE: item as string": ("lattice", _train_json('{"0": ["3"]}'), "train.json", "is a string"),
    "LATTICE: item null": ("lattice", _train_json('{"0": [null]}'), "train.json", "is null"),
    "LATTICE: item true": ("lattice", _train_json('{"0": [true]}'), "train.json", "is true/false"),
    "LATTICE: items an object": ("lattice", _train_json('{"0": {"1": 2}}'), "train.json", "not a list"),
    "LATTICE: user listed twice": ("lattice", _train_json('{"0": [0], "1": [1], "0": [2]}'), "train.json", "appears twice"),
    "LATTICE: user '1' and '01'": ("lattice", _train_json('{"1": [0], "01": [2]}'), "train.json", "appears twice"),
    "LATTICE: user ' 1'": ("lattice", _train_json('{"x1": [0]}'), "train.json", "not an integer"),
    "LATTICE: user 2**40": ("lattice", _train_json(LATTICE_OK_TRAIN[:-1] + f', "{2**40}": [0]}}'), "train.json", "largest id"),
    "LATTICE: deeply nested": ("lattice", _train_json('{"0": ' + "[" * 100_000 + "]" * 100_000 + "}"), "train.json", "nested too deeply"),
    "LATTICE: invalid JSON": ("lattice", _train_json('{"0": [0, 1,]}'), "train.json", "line 1 column"),
    "LATTICE: not an object": ("lattice", _train_json("[[0, 1]]"), "train.json", "not a JSON object"),
    "LATTICE: not UTF-8": ("lattice", lambda f: (f / "5-core" / "train.json").write_bytes(b'{"0": [0], "\xff": [1]}'), "train.json", "not UTF-8"),
    "LATTICE: FIFO val.json": ("lattice", lambda f: ((f / "5-core" / "val.json").unlink(),
                                                    os.mkfifo(f / "5-core" / "val.json")), "val.json", "named pipe"),
}


@pytest.mark.parametrize("case", list(READER_CORPUS))
def test_reader_corpus_gives_a_clear_data_error(case, tmp_path):
    layout, break_it, fname, says = READER_CORPUS[case]
    folder = (write_mmrec if layout == "mmrec" else write_lattice)(tmp_path / "toy")
    break_it(folder)
    before = _listing(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as err:
            read_dataset(folder, "toy")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(err.value)
    assert says in message, message
    assert fname in err.value.path and "Fix: " in message and err.value.field, message
    assert peak < 200 << 20, f"{peak / 2**20:.0f} MiB allocated before refusing"  # nothing sized by a bad id or header
    assert _listing(tmp_path) == before and not (tmp_path / "PWNED").exists()


def test_json_size_limit(tmp_path, monkeypatch):
    import mbrec.data.readers as readers

    monkeypatch.setattr(readers, "MAX_JSON_BYTES", 20)
    folder = write_lattice(tmp_path / "toy")
    with pytest.raises(DataError, match=r"train.json: train: is \d+ bytes, above the limit of 20"):
        read_dataset(folder, "toy")


# case -> (layout, change, the counts Dataset.meta["accepted"] must show)
READER_ACCEPTED = {
    "ids written as 1.0": ("mmrec", _inter("userID\titemID\tx_label\n" + "\n".join(f"{u}.0\t{i}\t{s}" for u, i, s in ROWS) + "\n"),
                           {"ids_written_as_float": len(ROWS)}),
    "x_label written as 2.0": ("mmrec", _inter("userID\titemID\tx_label\n" + "\n".join(f"{u}\t{i}\t{s}.0" for u, i, s in ROWS) + "\n"),
                               {"ids_written_as_float": len(ROWS)}),
    "blank lines": ("mmrec", _inter("userID\titemID\tx_label\n\n" + "\n\n".join(f"{u}\t{i}\t{s}" for u, i, s in ROWS) + "\n\n"),
                    {"blank_lines_skipped": len(ROWS) + 1}),
    "CRLF line ends": ("mmrec", lambda f: (f / "toy.inter").write_bytes(
        ("userID\titemID\tx_label\r\n" + "".join(f"{u}\t{i}\t{s}\r\n" for u, i, s in ROWS)).encode()), {}),
    "LATTICE ids written as 1.0": ("lattice", lambda f: (f / "5-core" / "test.json").write_text('{"0": [3.0], "1": [3], "2.0": [1.00]}'),
                                   {"ids_written_as_float": 3}),
    "UTF-8 byte-order mark": ("mmrec", lambda f: (f / "toy.inter").write_bytes(b"\xef\xbb\xbf" + (f / "toy.inter").read_bytes()), {}),
    "lone CR as the last line": ("mmrec", lambda f: (f / "toy.inter").write_bytes((f / "toy.inter").read_bytes() + b"\r"),
                                 {"blank_lines_skipped": 1}),
    "categories written as 1.0": ("mmrec", lambda f: (f / "item_categories").write_text("0\n1.0\n1\n0\n"), {"ids_written_as_float": 1}),
}


@pytest.mark.parametrize("case", list(READER_ACCEPTED))
def test_odd_but_unambiguous_input_is_accepted_and_counted(case, tmp_path, caplog):
    layout, change, expected = READER_ACCEPTED[case]
    reference = read_dataset((write_mmrec if layout == "mmrec" else write_lattice)(tmp_path / "ref"), "toy")
    folder = (write_mmrec if layout == "mmrec" else write_lattice)(tmp_path / "toy")
    change(folder)
    with caplog.at_level(logging.WARNING):
        ds = read_dataset(folder, "toy")
    for s in ("train", "valid", "test"):
        assert (ds.split(s) != reference.split(s)).nnz == 0  # the same data as written plainly
    assert dict(ds.meta.get("accepted", {})) == expected
    assert ds.summary().get("accepted", {}) == expected
    if expected:
        assert "accepted odd input" in caplog.text


def test_numpy_never_unpickles():
    """No np.load in the package may allow pickles, and nothing imports pickle to load files."""
    import mbrec

    root = Path(mbrec.__file__).parent
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in ("np", "numpy"):
                kw = {k.arg: k.value for k in node.keywords}
                assert isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is False, \
                    f"{path}:{node.lineno}: np.load without allow_pickle=False"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                assert not {"pickle", "cPickle", "dill", "cloudpickle", "joblib"} & set(names), f"{path}:{node.lineno}"
