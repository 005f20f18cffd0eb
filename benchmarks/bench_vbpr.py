"""VBPR speed on the real Amazon Baby interactions with features of the real shapes (issue: foundation).

Prints seconds per training epoch (sampler + forward + backward + fused dense Adam, through the trainer, CKD batch 1024) and per
full validation (all users, full ranking; overall + one pass per modality): only what it measures (the
CKD authors' code, measured on the same 2-core CPU, is in docs/performance.md). Runs on CUDA when present
and then also prints the peak GPU memory.
"""

from __future__ import annotations

import argparse
import time

from common import SyncCount, cuda_note, device_arg, load_baby, machine, time_epochs, time_validation  # first: mbrec before torch

import torch

from mbrec.backbones import build_backbone
from mbrec.balancers import build_balancer
from mbrec.training.evaluation import Evaluator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--evals", type=int, default=2)
    args, _ = ap.parse_known_args()
    torch.manual_seed(0)
    t = time.perf_counter()
    ds = load_baby()
    print(f"data: {ds.n_users} users, {ds.n_items} items, {ds.train.nnz} train; loaded in {time.perf_counter() - t:.1f}s; {machine()}")
    dev = device_arg()
    model = build_backbone({"name": "vbpr", "embedding_dim": 64}, ds).to(dev)
    with SyncCount(dev) as syncs:
        epoch_times = time_epochs(ds, model, build_balancer({"name": "none"}), args.epochs, device=dev)
    ev = Evaluator(ds, (10, 20), dev)
    one, three = [], []
    for _ in range(args.evals):
        one.append(time_validation(ev, model, {"": frozenset()}))
        three.append(time_validation(ev, model))
    best = min
    print("\n| VBPR on Baby (4,096-d visual, 1,024-d text) | mbrec (best of runs) |")
    print("|---|---|")
    print(f"| training epoch ({ds.train.nnz // 1024 + 1} steps of 1,024) | {best(epoch_times):.2f} s |")
    print(f"| one validation pass (all users) | {best(one):.2f} s |")
    print(f"| validation, overall + 2 per-modality passes | {best(three):.2f} s |")
    print("(the CKD authors' code on the same data and machine, and the speed-ups: docs/performance.md, where each "
          "figure says when it was measured; this script prints only what it measures)")
    print(f"\nall epoch times: {[round(x, 2) for x in epoch_times]}; validation: {[round(x, 2) for x in three]}")
    steps = (ds.train.nnz // 1024 + 1) * len(epoch_times)
    print(f"host-device syncs during training: {syncs.count} over {steps} steps "
          f"({syncs.count / steps:.3f} per step; {syncs.how})")
    print(cuda_note(dev))


if __name__ == "__main__":
    main()
