"""``python -m mbrec.data.prepare amazon`` on raw files of Amazon Baby's size, timed per step.

The raw files are made here: the reviews are the real Baby 5-core interactions (../shared/data, ids
turned into reviewerID/ASIN strings) with ~800-character review texts, plus 10 % extra reviews by one- and two-review users and items
that the 5-core filter must remove; metadata (Python-literal lines, as in the 2014 files) for every
item plus nine times as many unreviewed ones (~70k lines, as the real file); 4,096-d image features for 97 % of the items. Text is encoded with
the hashing stand-in (``--text-model`` to time a real sentence-transformers model if installed).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import baby_folder, machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mbrec.data.prepare.amazon import prepare_amazon  # noqa: E402


def interactions(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    folder = baby_folder()
    if folder is None:  # no benchmark data: a random 5-core-ish set of the same size
        return rng.integers(0, 19445, 160792), rng.zipf(1.3, 160792) % 7050
    users, items = [], []
    for fname in ("train.json", "val.json", "test.json"):
        for u, its in json.loads((folder / fname).read_text()).items():
            users += [int(u)] * len(its)
            items += its
    return np.array(users), np.array(items)


def make_raw(folder: Path, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    users, items = interactions(rng)
    n_items = int(items.max()) + 1
    extra = len(users) // 10
    users = np.r_[users, 100_000 + rng.integers(0, extra // 2, extra)]   # sparse users
    items = np.r_[items, np.where(rng.random(extra) < 0.5, rng.integers(0, n_items, extra), 50_000 + rng.integers(0, extra, extra))]
    t = time.perf_counter()
    vocab = np.array([f"word{k}" for k in range(5000)])
    with gzip.open(folder / "reviews_Baby_5.json.gz", "wt", compresslevel=1) as f:
        for u, i in zip(users, items):  # ~800-character review texts, as in the real file
            f.write(json.dumps({"reviewerID": f"A{u:013d}", "asin": f"B{i:09d}", "overall": 5.0,
                                "reviewText": " ".join(vocab[rng.integers(0, 5000, 110)]),
                                "summary": "Works well", "unixReviewTime": 1400000000}) + "\n")
    with gzip.open(folder / "meta_Baby.json.gz", "wt", compresslevel=1) as f:
        for i in range(10 * n_items):  # the real meta_Baby lists ~71k items, most never reviewed
            f.write(repr({"asin": f"B{i:09d}", "title": f"Product {i} for babies", "brand": "Acme",
                          "categories": [["Baby", ["Feeding", "Toys", "Gear"][i % 3], f"Sub {i % 40}"]],
                          "description": "A fine product. " * 8, "price": 9.99}) + "\n")
    with open(folder / "image_features_Baby.b", "wb") as f:
        for i in range(n_items):
            if rng.random() < 0.97:
                f.write(f"B{i:09d}".encode() + rng.random(4096, dtype=np.float32).tobytes())
    print(f"raw files made in {time.perf_counter() - t:.1f} s: " +
          ", ".join(f"{p.name} {p.stat().st_size / 1e6:.0f} MB" for p in sorted(folder.iterdir())), flush=True)
    return {"reviews": folder / "reviews_Baby_5.json.gz", "meta": folder / "meta_Baby.json.gz",
            "images": folder / "image_features_Baby.b"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--text-model", default="hashing:384")
    args, _ = ap.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = make_raw(Path(tmp))
        t = time.perf_counter()
        manifest = prepare_amazon(raw["reviews"], raw["meta"], raw["images"], Path(tmp) / "out" / "baby",
                                  text_model=args.text_model)
        total = time.perf_counter() - t
    c = manifest["counts"]
    print(f"\nBaby-sized raw files: {c['review_lines']:,} review lines -> {c['users']:,} users, {c['items']:,} items, "
          f"{c['interactions']:,} interactions after {len(c['k_core_steps'])} k-core rounds; {machine()}")
    print(f"text model: {manifest['text']['model']}\n")
    print("| step | seconds |\n|---|---:|")
    for step, s in manifest["seconds"].items():
        print(f"| {step} | {s:.1f} |")
    print(f"| total (incl. checksums, validation by the reader, manifest) | {total:.1f} |")


if __name__ == "__main__":
    main()
