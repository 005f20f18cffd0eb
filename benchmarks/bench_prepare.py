"""``python -m mbrec.data.prepare amazon`` on raw files of Amazon Baby's size, timed per step.

The raw files are made here: the reviews are the real Baby 5-core interactions (``--data DIR`` or
``$MBREC_BENCH_DATA``, see common.py; ids turned into reviewerID/ASIN strings; a random set of the same
size without it) with ~800-character review texts, plus 10 % extra reviews by one- and two-review users and items that the 5-core filter
must remove; metadata (Python-literal lines, as in the 2014 files) for every item plus nine times as
many unreviewed ones (~70k lines, as the real file), with ~80-word descriptions of everyday product
words; 4,096-d image features for 97 % of all those items (~1.1 GB, as the real file, most of them
never reviewed). Text is encoded with the hashing stand-in; ``--text-model all-MiniLM-L6-v2`` uses a
real encoder (installed, offline) in the whole run, and ``--encode-sample N --text-model ...`` only
times that encoder on N of the items' sentences and extrapolates to all items (a real encoder on 7k
long sentences takes many minutes on 2 cores).
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

WIDTH = 4096
WORDS = np.array(("soft baby bottle easy clean safe warm small light cotton wash dry strap seat car stroller "
                  "toy play bath cup spoon plate bib blanket sleep night cover zip pocket bag travel fold "
                  "adjustable comfortable durable quality color blue pink green size fits newborn toddler "
                  "months years parents love great gift set pack pieces design free bpa plastic silicone "
                  "natural organic gentle skin sensitive leak proof handle grip lid").split())


def meta_record(i: int, rng: np.random.Generator) -> dict:
    """One metadata record as in meta_<Category>.json.gz (2014), with an ~80-word description."""
    return {"asin": f"B{i:09d}", "title": f"Product {i} for babies " + " ".join(rng.choice(WORDS, 4)), "brand": "Acme",
            "categories": [["Baby", ["Feeding", "Toys", "Gear"][i % 3], f"Sub {i % 40}"]],
            "description": " ".join(rng.choice(WORDS, 80)), "price": 9.99}


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
    n_meta = 10 * n_items  # the real meta_Baby lists ~71k items, most never reviewed
    with gzip.open(folder / "meta_Baby.json.gz", "wt", compresslevel=1) as f:
        for i in range(n_meta):
            f.write(repr(meta_record(i, rng)) + "\n")
    record = np.dtype([("asin", "S10"), ("f", "<f4", (WIDTH,))])
    with open(folder / "image_features_Baby.b", "wb") as f:
        for start in range(0, n_meta, 2048):
            ids = np.arange(start, min(start + 2048, n_meta))
            ids = ids[rng.random(ids.size) < 0.97]
            block = np.empty(ids.size, dtype=record)
            block["asin"] = [f"B{i:09d}".encode() for i in ids]
            block["f"] = rng.random((ids.size, WIDTH), dtype=np.float32)
            f.write(block.tobytes())
    print(f"raw files made in {time.perf_counter() - t:.1f} s: " +
          ", ".join(f"{p.name} {p.stat().st_size / 1e6:,.0f} MB" for p in sorted(folder.iterdir())), flush=True)
    return {"reviews": folder / "reviews_Baby_5.json.gz", "meta": folder / "meta_Baby.json.gz",
            "images": folder / "image_features_Baby.b"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--text-model", default="hashing:384")
    ap.add_argument("--encode-sample", type=int, default=0, help="only time --text-model on this many sentences")
    args, _ = ap.parse_known_args()
    if args.encode_sample:
        return encode_sample(args.text_model, args.encode_sample)
    with tempfile.TemporaryDirectory() as tmp:
        raw = make_raw(Path(tmp))
        t = time.perf_counter()
        manifest = prepare_amazon(raw["reviews"], raw["meta"], raw["images"], Path(tmp) / "out" / "baby",
                                  text_model=args.text_model)
        total = time.perf_counter() - t
    c = manifest["counts"]
    print(f"\nBaby-sized raw files: {c['review_lines']:,} review lines, {c['meta_lines']:,} metadata lines, "
          f"{c['image_records']:,} image records -> {c['users']:,} users, {c['items']:,} items, "
          f"{c['interactions']:,} interactions after {len(c['k_core_steps'])} k-core rounds; {machine()}")
    print(f"text model: {manifest['text']['model']} ({manifest['text']['found_in']}), {manifest['text']['dim']}-d\n")
    print("| step | seconds |\n|---|---:|")
    for step, s in manifest["seconds"].items():
        print(f"| {step} | {s:.1f} |")
    print(f"| validation by mbrec's reader, fingerprint, manifest, rename | {total - sum(manifest['seconds'].values()):.1f} |")
    print(f"| **total** | **{total:.1f}** |")


def encode_sample(model: str, n: int, n_items: int = 7050) -> None:
    """Seconds to encode ``n`` of the benchmark items' sentences, extrapolated to ``n_items``."""
    from mbrec.data.prepare.features import make_encoder, sentence

    rng = np.random.default_rng(0)
    sentences = [sentence(meta_record(i, rng)) for i in range(n)]
    encoder = make_encoder(model)
    t = time.perf_counter()
    vectors = encoder.encode(sentences)
    seconds = time.perf_counter() - t
    print(f"\n{model} ({encoder.found_in}), {vectors.shape[1]}-d: {n} sentences of ~{np.mean([len(x.split()) for x in sentences]):.0f} "
          f"words in {seconds:.1f} s = {n / seconds:.1f} sentences/s -> ~{n_items / n * seconds:.0f} s for {n_items:,} items; {machine()}")


if __name__ == "__main__":
    main()
