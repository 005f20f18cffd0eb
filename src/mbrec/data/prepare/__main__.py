"""``python -m mbrec.data.prepare {amazon,lattice} ...`` — see README "Preparing the Amazon datasets"."""

from __future__ import annotations

import argparse
import json
import logging
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
    a.add_argument("--seed", type=int, default=999, help="split seed (MMRec's notebooks use 999)")
    a.add_argument("--text-model", default="all-MiniLM-L6-v2",
                   help="sentence-transformers model name or local folder (offline only), or hashing:<dim>")
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
    print(json.dumps({"out": args.out, "counts": manifest["counts"], "fingerprint": manifest["fingerprint"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
