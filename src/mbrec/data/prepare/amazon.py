"""Amazon 2014 (McAuley) raw files -> an MMRec-layout folder; and LATTICE folder -> MMRec layout."""

from __future__ import annotations

import logging
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mbrec.data.prepare.core import index_ids, k_core
from mbrec.data.prepare.features import Encoder, item_categories, make_encoder, read_image_features, sentence
from mbrec.data.prepare.raw import read_meta, read_reviews
from mbrec.data.prepare.write import check_output, finish, sha256, staging, write_mmrec
from mbrec.data.split import split_per_user
from mbrec.errors import DataError

log = logging.getLogger(__name__)


def _source(path: Path) -> dict[str, Any]:
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": sha256(path)}


def prepare_amazon(reviews: str | Path, meta: str | Path, images: str | Path, out: str | Path,
                   name: str | None = None, split: str = "mmrec", seed: int = 999,
                   text_model: str | Encoder = "all-MiniLM-L6-v2", k: int = 5, image_width: int = 4096,
                   overwrite: bool = False) -> dict[str, Any]:
    """Build ``out`` from one category's three raw files; return the manifest (also ``manifest.json``).

    Steps: parse reviews (duplicates dropped) -> iterative k-core -> ids by first appearance -> per-user
    split (``split_per_user``, seeded) -> metadata of the kept items -> text sentences encoded ->
    image features (missing -> mean) -> item categories -> write + validate with mbrec's reader.
    """
    reviews, meta, images, out = Path(reviews), Path(meta), Path(images), Path(out)
    name = name or out.name
    check_output(out, overwrite)  # refuse before the slow work
    if split not in ("mmrec", "lattice"):
        raise DataError("--split", "split", f"unknown rule {split!r}", "use mmrec or lattice")
    encoder = make_encoder(text_model) if isinstance(text_model, str) else text_model  # fail early if missing
    seconds: dict[str, float] = {}
    t = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal t
        now = time.perf_counter()
        seconds[step], t = now - t, now

    raw_users, raw_items, counts = read_reviews(reviews)
    lap("parse_reviews")
    raw_users_a, raw_items_a = np.asarray(raw_users, dtype=object), np.asarray(raw_items, dtype=object)
    u_codes, _ = index_ids(raw_users_a)
    i_codes, _ = index_ids(raw_items_a)
    keep, core_steps = k_core(u_codes, i_codes, k)
    if not keep.any():
        raise DataError(reviews, f"{k}-core", f"no interactions are left after the {k}-core filter "
                        f"({len(raw_users)} reviews in)", f"use a category with enough reviews (every user and item needs >= {k})")
    users, user_raw = index_ids(raw_users_a[keep])
    items, item_raw = index_ids(raw_items_a[keep])
    lap("k_core")
    labels = split_per_user(users, np.random.default_rng(seed), split)
    lap("split")
    metas, meta_counts = read_meta(meta, set(item_raw))
    lap("parse_meta")
    item_meta = [metas.get(a) for a in item_raw]
    text = encoder.encode([sentence(m) if m else "" for m in item_meta])
    if text.shape[0] != len(item_raw) or not np.isfinite(text).all():
        raise DataError(encoder.name, "text features", "the encoder returned a wrong shape or non-finite values",
                        "check the text model")
    lap("encode_text")
    image, image_counts = read_image_features(images, list(item_raw), image_width)
    lap("image_features")
    categories, category_names = item_categories(item_meta)
    manifest: dict[str, Any] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "amazon",
        "sources": {"reviews": _source(reviews), "meta": _source(meta), "images": _source(images)},
        "counts": {**counts, "k": k, "k_core_steps": core_steps, "users": len(user_raw), "items": len(item_raw),
                   "interactions": int(keep.sum()),
                   "per_split": {s: int((labels == i).sum()) for i, s in enumerate(("train", "valid", "test"))},
                   **meta_counts, **image_counts, "categories": len(category_names)},
        "split": {"rule": split, "seed": seed},
        "text": {"model": encoder.name, "dim": int(text.shape[1]),
                 "sentence": "title, brand, first category path, description (space-joined; missing fields skipped)"},
        "image": {"width": image_width, "missing": "mean of the available vectors"},
        "categories": {"rule": "leaf of the first category path; '<unknown>' when absent", "names": category_names},
    }
    with staging(out, overwrite) as tmp:
        write_mmrec(tmp, name, users, items, labels, {"image": image, "text": text}, user_raw, item_raw, categories)
        lap("write")
        manifest["seconds"] = seconds
        manifest = finish(tmp, name, manifest)
    log.info("prepared %s: %s", out, manifest["counts"])
    return manifest


def convert_lattice(source: str | Path, out: str | Path, name: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """A LATTICE/CKD folder (``5-core/{train,val,test}.json`` + ``*_feat.npy``) -> MMRec layout, ids kept."""
    from mbrec.data.readers import read_features, read_lattice

    source, out = Path(source), Path(out)
    name = name or out.name
    check_output(out, overwrite)
    users, items, labels, files = read_lattice(source)
    read_features(source)  # validate the feature files before anything is written
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    user_raw, item_raw = _lattice_ids(source / "5-core" / "user_list.txt", n_users), _lattice_ids(source / "5-core" / "item_list.txt", n_items)
    manifest = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": "lattice",
                "sources": {f.name: _source(f) for f in [*files.values(), *sorted(source.glob("*_feat.npy"))]},
                "counts": {"interactions": int(users.size),
                           "per_split": {s: int((labels == i).sum()) for i, s in enumerate(("train", "valid", "test"))}},
                "split": {"rule": "as given (LATTICE folder)"}}
    with staging(out, overwrite) as tmp:
        write_mmrec(tmp, name, users, items, labels, {}, user_raw, item_raw)
        for f in sorted(source.glob("*_feat.npy")):
            shutil.copy2(f, tmp / f.name)
        manifest = finish(tmp, name, manifest)
    return manifest


def _lattice_ids(path: Path, n: int) -> np.ndarray:
    """Raw ids from LATTICE's ``<raw>\\t<int>`` list, or the integer ids themselves when absent."""
    raw = np.arange(n).astype(str).astype(object)
    if path.is_file():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= n:
                raise DataError(path, f"line {lineno}", f"is not '<raw id> <int id < {n}>': {line[:60]!r}",
                                "fix or delete the id list (ids are then kept as integers)")
            raw[int(parts[1])] = parts[0]
    return raw
