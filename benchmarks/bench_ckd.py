"""CKD student speed on the real Amazon Baby interactions with features of the real shapes (issue: CKD).

Teachers are stand-ins with the right shapes (their training is a plain VBPR run, see bench_vbpr.py);
what is timed is the student epoch through the real trainer: the full pass + one uni-modal pass per
modality over the batch's triples and 5,000 generic (u, j, k) samples, the re-weighting, backward and
fused Adam; and the validation with its three passes. The CKD authors' code took 35.6–38.0 s per VBPR
student epoch on this CPU (measured by us; README, "Measured performance").
"""

from __future__ import annotations

import argparse
import time

import torch

from common import load_baby, machine, time_epochs

from mbrec.backbones import build_backbone
from mbrec.balancers import build_balancer
from mbrec.balancers.teachers import Teacher
from mbrec.training.evaluation import Evaluator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--reweight", default="paper")
    args, _ = ap.parse_known_args()
    torch.manual_seed(0)
    ds = load_baby()
    print(f"data: {ds.n_users} users, {ds.n_items} items, {ds.train.nnz} train; {machine()}")
    model = build_backbone({"name": "vbpr", "embedding_dim": 64}, ds)
    ckd = build_balancer({"name": "ckd", "reweight": args.reweight})
    ckd.teachers = {m: Teacher(m, torch.randn(ds.n_users, 192) * 0.1, torch.randn(ds.n_items, 192) * 0.1, {})
                    for m in ds.modalities}
    ckd.active_users = torch.nonzero(torch.as_tensor(ds.train.indptr[1:] - ds.train.indptr[:-1]) > 0).flatten()
    ckd.n_items = ds.n_items
    ckd.generator = torch.Generator().manual_seed(0)
    epochs = time_epochs(ds, model, ckd, args.epochs)
    t = time.perf_counter()
    Evaluator(ds, (10, 20), torch.device("cpu")).evaluate(model, "valid")
    val = time.perf_counter() - t
    epoch = min(epochs)
    print("\n| CKD student, VBPR on Baby | mbrec | CKD authors' code | speed-up |")
    print("|---|---|---|---|")
    print(f"| training epoch ({ds.train.nnz // 1024 + 1} steps of 1,024 + 5,000 generic samples) | {epoch:.2f} s | 35.6–38.0 s | {36.8 / epoch:.1f}× |")
    print(f"| validation, 3 passes | {val:.2f} s | 31.5–33.9 s | {32.7 / val:.1f}× |")


if __name__ == "__main__":
    main()
