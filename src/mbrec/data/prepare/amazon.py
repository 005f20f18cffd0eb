"""Amazon 2014 (McAuley) raw files -> an MMRec-layout folder; and LATTICE folder -> MMRec layout."""

from __future__ import annotations

import logging
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mbrec.data.files import MAX_TABLE_LINE_BYTES, check_id_range, check_line_lengths, open_regular, require_regular
from mbrec.data.prepare.core import index_ids, k_core
from mbrec.data.prepare.features import Encoder, item_categories, make_encoder, read_image_features, sentence
from mbrec.data.prepare.raw import read_meta, read_reviews
from mbrec.data.prepare.write import check_apart, check_name, check_output, finish, sha256, staging, write_mmrec
from mbrec.data.split import split_per_user
from mbrec.errors import DataError

log = logging.getLogger(__name__)

MAX_SEED = 2**32 - 1  # the range every numpy/torch seeding accepts
MAX_IMAGE_WIDTH = 1 << 16


def _source(path: Path) -> dict[str, Any]:
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": sha256(path)}


SENTENCE_RULE = ("title, brand, the names of the first category path, description — in this order, joined by one "
                 "space; a missing or empty field contributes nothing; items without metadata get ''")
CATEGORY_RULE = "leaf (last name) of the item's first category path; '<unknown>' without metadata or path"


def prepare_amazon(reviews: str | Path, meta: str | Path, images: str | Path, out: str | Path,
                   name: str | None = None, split: str = "mmrec", seed: int = 999,
                   text_model: str | Encoder = "all-MiniLM-L6-v2", k: int = 5, image_width: int = 4096,
                   overwrite: bool = False) -> dict[str, Any]:
    """Build ``out`` from one category's three raw files; return the manifest (also ``manifest.json``).

    Steps: parse reviews (duplicates dropped) -> iterative k-core -> ids by first appearance -> per-user
    split (``split_per_user``, seeded) -> metadata of the kept items -> text sentences encoded ->
    image features (missing -> mean) -> item categories -> write + validate with mbrec's reader.
    Everything happens inside a temporary folder beside ``out`` that is renamed into place at the end.
    """
    reviews, meta, images, out = Path(reviews), Path(meta), Path(images), Path(out)
    name = check_name(out.name if name is None else name, "--name" if name is not None else "--out (its last part names the dataset)")
    # refuse before the slow work
    for path, flag in ((reviews, "--reviews"), (meta, "--meta"), (images, "--images")):
        require_regular(path, "file", f"pass the downloaded file as {flag}")
    check_apart(out, input_files=(reviews, meta, images))
    check_output(out, overwrite)
    if split not in ("mmrec", "lattice"):
        raise DataError("--split", "split", f"unknown rule {split!r}", "use mmrec or lattice")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise DataError("--seed", "value", f"{seed!r} is not an integer in 0..{MAX_SEED}", "pass e.g. --seed 999 (the default)")
    if k < 1 or not 1 <= image_width <= MAX_IMAGE_WIDTH:
        raise DataError("--k/--image-width", "value", f"k={k}, image width={image_width}",
                        f"k must be >= 1 and the image width in 1..{MAX_IMAGE_WIDTH}")
    encoder = make_encoder(text_model) if isinstance(text_model, str) else text_model  # fail early if missing
    seconds: dict[str, float] = {}
    t = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal t
        now = time.perf_counter()
        seconds[step], t = now - t, now

    with staging(out, overwrite) as tmp:  # an unwritable location fails here, before the slow work
        raw_users, raw_items, extra, counts = read_reviews(reviews)
        lap("parse_reviews")
        raw_users_a, raw_items_a = np.asarray(raw_users, dtype=object), np.asarray(raw_items, dtype=object)
        u_codes, _ = index_ids(raw_users_a)
        i_codes, _ = index_ids(raw_items_a)
        keep, core_steps = k_core(u_codes, i_codes, k)
        if not keep.any():
            raise DataError(reviews, f"{k}-core", f"no interactions are left after the {k}-core filter "
                            f"({len(raw_users)} reviews in, {counts['reviewers']} reviewers, {counts['reviewed_items']} items)",
                            f"use a category with enough reviews (every user and item needs >= {k}), or lower --k")
        users, user_raw = index_ids(raw_users_a[keep])
        items, item_raw = index_ids(raw_items_a[keep])
        lap("k_core")
        labels = split_per_user(users, np.random.default_rng(seed), split)
        lap("split")
        metas, meta_counts = read_meta(meta, set(item_raw))
        lap("parse_meta")
        item_meta = [metas.get(a) for a in item_raw]
        sentences = [sentence(m) if m else "" for m in item_meta]
        text = np.asarray(encoder.encode(sentences), dtype=np.float32)
        if text.ndim != 2 or text.shape[0] != len(item_raw):
            raise DataError(encoder.name, "text features", f"the encoder returned shape {text.shape} for "
                            f"{len(item_raw)} sentences", "check the text model (--text-model)")
        bad = np.flatnonzero(~np.isfinite(text).all(axis=1))
        if bad.size:
            raise DataError(encoder.name, f"text features of item {item_raw[bad[0]]}", f"NaN/Inf in {bad.size} "
                            f"sentence vectors (first: {sentences[bad[0]][:60]!r})", "check the text model (--text-model)")
        lap("encode_text")
        image, image_counts = read_image_features(images, list(item_raw), image_width)
        lap("image_features")
        categories, category_names = item_categories(item_meta)
        columns = {"rating": pd.array(np.asarray(extra["rating"], dtype=object)[keep], dtype="Float64"),
                   "timestamp": pd.array(np.asarray(extra["timestamp"], dtype=object)[keep], dtype="Int64")}
        write_mmrec(tmp, name, users, items, labels, {"image": image, "text": text}, user_raw, item_raw, categories, columns)
        lap("write")
        sources = {"reviews": _source(reviews), "meta": _source(meta), "images": _source(images)}
        lap("checksums")
        manifest: dict[str, Any] = {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": "amazon",
            "sources": sources,
            "counts": {**counts, "k": k, "k_core_steps": core_steps, "users": len(user_raw), "items": len(item_raw),
                       "interactions": int(keep.sum()),
                       "per_split": {s: int((labels == i).sum()) for i, s in enumerate(("train", "valid", "test"))},
                       **meta_counts, "items_with_empty_sentence": sum(not x for x in sentences),
                       **image_counts, "categories": len(category_names)},
            "split": {"rule": split, "seed": seed, "function": "mbrec.data.split.split_per_user"},
            "text": {"model": encoder.name, "loaded_from": getattr(encoder, "path", None),
                     "found_in": getattr(encoder, "found_in", "given encoder object"), "dim": int(text.shape[1]),
                     "sentence": SENTENCE_RULE},
            "image": {"width": image_width, "missing": "mean of the available vectors"},
            "categories": {"rule": CATEGORY_RULE, "names": category_names},
            "seconds": seconds,
        }
        manifest = finish(tmp, name, manifest)
    log.info("prepared %s: %s", out, manifest["counts"])
    return manifest


def convert_lattice(source: str | Path, out: str | Path, name: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """A LATTICE/CKD folder (``5-core/{train,val,test}.json`` + ``*_feat.npy``) -> MMRec layout, ids kept."""
    from mbrec.data.readers import read_features, read_lattice

    source, out = Path(source), Path(out)
    name = check_name(out.name if name is None else name, "--name" if name is not None else "--out (its last part names the dataset)")
    check_apart(out, input_folders=(source,))
    check_output(out, overwrite)
    if not (source / "5-core" / "train.json").exists():
        raise DataError(source / "5-core" / "train.json", "file", "not found: this is not a LATTICE/CKD folder",
                        "pass the folder that holds 5-core/{train,val,test}.json and *_feat.npy")
    accepted: dict[str, int] = {}
    users, items, labels, files = read_lattice(source, accepted)
    if users.size == 0:
        raise DataError(files[0], "interactions", "the split files hold no interactions", "pass a complete LATTICE folder")
    features = read_features(source)  # validate the feature files before anything is written
    n_rows = min(f.shape[0] for f in features.values())
    if int(items.max()) >= n_rows:  # bound the ids before anything is allocated by id
        raise DataError(files[int(labels[int(np.argmax(items))])], "item id", f"{int(items.max())} is out of range: "
                        f"the feature files have {n_rows} rows", "fix the ids or the feature files")
    check_id_range(users, files[0], "user id", "number users contiguously from 0")
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    user_raw, item_raw = _lattice_ids(source / "5-core" / "user_list.txt", n_users), _lattice_ids(source / "5-core" / "item_list.txt", n_items)
    manifest = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": "lattice",
                "sources": {f.name: _source(f) for f in [*files.values(), *sorted(source.glob("*_feat.npy"))]},
                "counts": {"users": n_users, "items": n_items, "interactions": int(users.size),
                           "per_split": {s: int((labels == i).sum()) for i, s in enumerate(("train", "valid", "test"))},
                           **accepted},
                "split": {"rule": "as given (LATTICE folder)"}}
    with staging(out, overwrite) as tmp:
        write_mmrec(tmp, name, users, items, labels, {}, user_raw, item_raw)
        for f in [*sorted(source.glob("*_feat.npy")), *sorted(source.glob("item_categories*"))]:
            with open_regular(f, "file", "keep only regular files named *_feat.npy / item_categories") as src, \
                    open(tmp / f.name, "wb") as dst:  # content only: the copy's mode follows the umask
                shutil.copyfileobj(src, dst, 1 << 20)
        manifest = finish(tmp, name, manifest)
    return manifest


def _lattice_ids(path: Path, n: int) -> np.ndarray:
    """Raw ids from LATTICE's ``<raw> <int>`` list (one pair per line), or the integer ids themselves when
    the list is absent. Each integer id at most once, below ``n``; raw ids printable (they are written
    into the tab-separated id mappings)."""
    raw = np.arange(n).astype(str).astype(object)
    if not (path.exists() or path.is_symlink()):
        return raw
    fix = "fix or delete the id list (ids are then kept as integers)"
    with open_regular(path, "id list", fix) as fh:
        check_line_lengths(fh, path, MAX_TABLE_LINE_BYTES, fix)
        data = fh.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(path, "contents", f"is not UTF-8 ({e.reason} at byte {e.start})", fix) from None
    line_of: dict[int, int] = {}
    for lineno, line in enumerate(text.split("\n"), start=1):
        parts = line.rstrip("\r").split()
        if not parts:
            continue
        if len(parts) != 2 or not (parts[1].isascii() and parts[1].isdigit()) or len(parts[1]) > 18 or int(parts[1]) >= n:
            raise DataError(path, f"line {lineno}", f"is not '<raw id> <int id < {n}>': {line[:60]!r}", fix)
        if not parts[0].isprintable():
            raise DataError(path, f"line {lineno}", f"the raw id {parts[0][:40]!r} holds an unprintable character", fix)
        i = int(parts[1])
        if i in line_of:
            raise DataError(path, f"line {lineno}", f"id {i} is listed twice (first on line {line_of[i]})", fix)
        line_of[i] = lineno
        raw[i] = parts[0]
    return raw
