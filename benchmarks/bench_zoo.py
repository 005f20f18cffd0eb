"""The modern backbones (FREEDOM, BM3, LATTICE, LGMRec, SMORE; those registered) on the real Amazon Baby
interactions with features of the real shapes, mbrec against MMRec's model of the same name.

Per (implementation, model), each in a fresh subprocess (peak memory is its own) with the same thread
count: seconds per training step, timed over ``--steps`` steps after 2 warm-up steps, and its epoch
(steps x that implementation's steps per epoch: mbrec the model's configured ``train.batch_size`` users a
step, 2,048 for these models as in their reference, MMRec 2,048 interactions; both cover every training
interaction about once), plus the per-epoch work (FREEDOM's edge pruning); seconds
per validation (every validation user ranked over all items, training items masked, top-20; overall
pass only, as MMRec validates); peak resident memory. The reference runs only with ``--reference DIR``
(an MMRec checkout's ``src/``; benchmarks/mmrec_reference.py builds its models). Its step is timed on
pre-sampled batches (its Python negative sampler is not timed), which favours it. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from common import THREADS, backbone_names, child_row, load_baby, machine, require_baby  # first: mbrec before torch

import numpy as np
import torch

ZOO = ("freedom", "bm3", "lattice", "lgmrec", "smore")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed(fn, n: int, warmup: int = 2) -> float:
    times = []
    for k in range(n + warmup):
        t = time.perf_counter()
        fn()
        if k >= warmup:
            times.append(time.perf_counter() - t)
    return sum(times) / len(times)


def measure_mbrec(name: str, steps: int) -> dict:
    from omegaconf import OmegaConf

    from mbrec import compose
    from mbrec.backbones import build_backbone
    from mbrec.data.sampling import BPRSampler
    from mbrec.training.evaluation import Evaluator
    from mbrec.training.objective import base_pass

    ds = load_baby()
    torch.manual_seed(0)
    cfg = compose(f"backbone={name}")
    t = time.perf_counter()
    model = build_backbone(OmegaConf.to_container(cfg.backbone), ds)
    build = time.perf_counter() - t
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # conf/optimizer/adam.yaml
    sampler = BPRSampler(ds.train, int(cfg.train.batch_size), torch.device("cpu"), seed=0)
    model.train()
    epoch_work = _timed(lambda: model.on_epoch_start(0), 1, warmup=0)

    def step() -> None:
        p = base_pass(model, sampler.sample(), 1e-5)
        opt.zero_grad(set_to_none=True)
        sum(p.terms.values()).backward()
        opt.step()

    per_step = _timed(step, steps)
    ev = Evaluator(ds, (20,), torch.device("cpu"), 4096)
    valid = _timed(lambda: ev.evaluate(model, "valid", {"": frozenset()}), 1, warmup=0)
    return {"impl": "mbrec", "name": name, "batch": sampler.batch_size, "build_s": build, "step_s": per_step,
            "steps": sampler.steps_per_epoch,
            "epoch_s": per_step * sampler.steps_per_epoch + epoch_work, "valid_s": valid, "peak_rss_mb": _rss_mb(),
            "data": f"{ds.n_users} users, {ds.n_items} items, {ds.train.nnz} train interactions", "machine": machine()}


def measure_reference(name: str, steps: int, src: str) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from mmrec_reference import build_reference, uses_negatives

    ds = load_baby()
    torch.manual_seed(0)
    t = time.perf_counter()
    model = build_reference(src, name, ds)
    build = time.perf_counter() - t
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)  # MMRec's trainer: torch's default Adam
    coo = ds.train.tocoo()
    rng = np.random.default_rng(0)
    batch_size, negatives = 2048, uses_negatives(src, name)
    model.train()
    epoch_work = _timed(model.pre_epoch_processing, 1, warmup=0)

    def step() -> None:
        pick = rng.integers(0, coo.nnz, batch_size)
        batch = [torch.from_numpy(coo.row[pick].astype(np.int64)), torch.from_numpy(coo.col[pick].astype(np.int64))]
        if negatives:  # uniform items (MMRec rejects training items; the cost difference is not the model's)
            batch.append(torch.from_numpy(rng.integers(0, ds.n_items, batch_size)))
        loss = model.calculate_loss(torch.stack(batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    per_step = _timed(step, steps)
    model.eval()
    valid_users = torch.from_numpy(np.flatnonzero(np.diff(ds.valid.indptr) > 0))
    train = ds.train

    def validate() -> None:
        with torch.no_grad():
            for start in range(0, valid_users.numel(), 4096):
                users = valid_users[start : start + 4096]
                scores = model.full_sort_predict([users])
                sub = train[users.numpy()].tocoo()
                scores[torch.from_numpy(sub.row.astype(np.int64)), torch.from_numpy(sub.col.astype(np.int64))] = -1e10
                torch.topk(scores, 20, dim=-1)

    valid = _timed(validate, 1, warmup=0)
    n_steps = -(-train.nnz // batch_size)
    return {"impl": "MMRec", "name": name, "batch": batch_size, "build_s": build, "step_s": per_step, "steps": n_steps,
            "epoch_s": per_step * n_steps + epoch_work, "valid_s": valid, "peak_rss_mb": _rss_mb()}


def main() -> None:
    from mbrec.backbones import BACKBONES

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbones", default=",".join(n for n in ZOO if n in BACKBONES),
                    help="comma-separated names (default: the modern backbones that are registered)")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps (after 2 warm-up steps)")
    ap.add_argument("--reference", default=None, help="an MMRec checkout's src/ directory: time its models too")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args, _ = ap.parse_known_args()
    names = backbone_names(args.backbones)
    if args.child:
        row = (measure_mbrec(names[0], args.steps) if args.child == "mbrec"
               else measure_reference(names[0], args.steps, args.reference))
        print(json.dumps(row))
        return
    require_baby()
    rows = []
    for name in names:
        for impl in ["mbrec"] + (["MMRec"] if args.reference else []):
            cmd = [sys.executable, __file__, "--child", impl, "--backbones", name, "--steps", str(args.steps)]
            cmd += ["--reference", args.reference] if args.reference else []
            if (row := child_row(cmd, f"{impl} {name}")) is not None:
                rows.append(row)
    if not rows:
        raise SystemExit("nothing measured")
    first = next(r for r in rows if r["impl"] == "mbrec") if any(r["impl"] == "mbrec" for r in rows) else rows[0]
    print(f"\nBaby ({first.get('data', '')}), 4,096-d visual + 1,024-d text features (random, real shapes); "
          f"{first.get('machine', '')}; {THREADS} threads for both")
    print(f"Epochs extrapolated from {args.steps} timed steps (+ the per-epoch work).\n")
    print("| backbone | implementation | build (s) | batch | s / step | steps / epoch | s / epoch | validation (s) | peak RSS (MB) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['impl']} | {r['build_s']:.1f} | {r['batch']:,} | {r['step_s']:.3f} | {r['steps']} | {r['epoch_s']:.1f} | "
              f"{r['valid_s']:.1f} | {r['peak_rss_mb']:,.0f} |")


if __name__ == "__main__":
    main()
