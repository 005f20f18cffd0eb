"""Raw Amazon-2014-format files for the data-preparation tests (written by the tests, a few dozen rows)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

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
    """Python-literal lines (as in the 2014 files): every item, with brand on two thirds, plus one
    item no review mentions."""
    lines = []
    for i in range(N_ITEMS):
        rec = {"asin": asin(i), "title": f"thing {i}", "categories": [["Baby", "Feeding" if i % 2 else "Toys"]]}
        if i % 3:
            rec["brand"] = "Acme"
        lines.append(repr(rec))
    lines.append(repr({"asin": "B999999999", "title": "not reviewed"}))
    return lines


def write_gz(path: Path, lines: list[str] | bytes) -> Path:
    data = lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode()
    with gzip.open(path, "wb") as f:
        f.write(data)
    return path


def write_images(path: Path, asins: list[str], width: int = WIDTH, cut: int = 0, nan_at: int | None = None) -> Path:
    """McAuley's binary: per record a 10-byte ASIN then ``width`` little-endian float32; ``cut``
    bytes removed from the end, a NaN in record ``nan_at``."""
    rng = np.random.default_rng(0)
    blob = bytearray()
    for k, a in enumerate(asins):
        v = rng.random(width, dtype=np.float32)
        if nan_at == k:
            v[3] = np.nan
        blob += a.encode() + v.astype("<f4").tobytes()
    path.write_bytes(bytes(blob[: len(blob) - cut]))
    return path


def write_raw(folder: Path) -> dict[str, Path]:
    """The standard raw files: two duplicated reviews, item 4 without an image record, one image
    record of an ASIN no review mentions, one metadata line of an unreviewed item."""
    folder.mkdir(parents=True, exist_ok=True)
    imgs = [asin(i) for i in range(N_ITEMS) if i != 4] + ["B777777777"]
    lines = review_lines()
    return {"reviews": write_gz(folder / "reviews_Baby_5.json.gz", [*lines, lines[0], lines[7]]),
            "meta": write_gz(folder / "meta_Baby.json.gz", meta_lines()),
            "images": write_images(folder / "image_features_Baby.b", imgs)}


def tree(root: Path) -> list[str]:
    """Every path under ``root`` (relative), for 'nothing was left behind' checks."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))
