"""CKD student speed on the real Amazon Baby interactions with features of the real shapes (issue: CKD).

Teachers are stand-ins with the right shapes (their training is a plain VBPR run, see bench_vbpr.py);
what is timed is the student epoch through the real trainer: the full pass + one uni-modal pass per
modality over the batch's triples and 5,000 generic (u, j, k) samples, the re-weighting, backward and
fused Adam; and the validation with its three passes. It prints only what it measures (the authors' code,
measured on the same 2-core CPU, is in docs/performance.md). Runs on CUDA when present and then also
prints the peak GPU memory.
"""

from __future__ import annotations

import argparse

from common import SyncCount, ckd_student, cuda_note, device_arg, load_baby, machine, time_epochs, time_validation  # first: mbrec before torch

import torch

from mbrec.backbones import build_backbone
from mbrec.training.evaluation import Evaluator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--reweight", default="paper")
    args, _ = ap.parse_known_args()
    torch.manual_seed(0)
    ds = load_baby()
    print(f"data: {ds.n_users} users, {ds.n_items} items, {ds.train.nnz} train; {machine()}")
    dev = device_arg()
    model = build_backbone({"name": "vbpr", "embedding_dim": 64}, ds).to(dev)
    ckd = ckd_student(ds, dev, args.reweight)
    with SyncCount(dev) as syncs:
        epochs = time_epochs(ds, model, ckd, args.epochs, device=dev)
    val = time_validation(Evaluator(ds, (10, 20), dev), model)
    epoch = min(epochs)
    print("\n| CKD student, VBPR on Baby | mbrec |")
    print("|---|---|")
    print(f"| training epoch ({ds.train.nnz // 1024 + 1} steps of 1,024 + 5,000 generic samples) | {epoch:.2f} s |")
    print(f"| validation, 3 passes | {val:.2f} s |")
    print("(the CKD authors' code on the same data and machine, and the speed-ups: docs/performance.md, where each "
          "figure says when it was measured; this script prints only what it measures)")
    steps = (ds.train.nnz // 1024 + 1) * len(epochs)
    print(f"host-device syncs during training: {syncs.count} over {steps} steps "
          f"({syncs.count / steps:.3f} per step; {syncs.how})")
    print(cuda_note(dev))


if __name__ == "__main__":
    main()
