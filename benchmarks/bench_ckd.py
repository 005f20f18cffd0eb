"""CKD student speed on the real Amazon Baby interactions with features of the real shapes (issue: CKD).

Teachers are stand-ins with the right shapes (their training is a plain VBPR run, see bench_vbpr.py);
what is timed is the student: the full pass + one uni-modal pass per modality over the batch's triples
and 5,000 generic (u, j, k) samples, the re-weighting, backward and fused Adam; and the validation with
its three passes. The CKD authors' code takes 35.6–38.0 s per VBPR student epoch on this CPU.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import load_baby, machine

from mbrec.backbones import build_backbone
from mbrec.balancers import build_balancer
from mbrec.balancers.teachers import Teacher
from mbrec.data.sampling import BPRSampler
from mbrec.training.evaluation import Evaluator
from mbrec.training.objective import base_pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=0, help="time this many steps and extrapolate (0 = a full epoch)")
    ap.add_argument("--reweight", default="paper")
    args, _ = ap.parse_known_args()
    torch.manual_seed(0)
    ds = load_baby()
    print(f"data: {ds.n_users} users, {ds.n_items} items, {ds.train.nnz} train; {machine()}")
    dev = torch.device("cpu")
    model = build_backbone({"name": "vbpr", "embedding_dim": 64}, ds).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, fused=True)
    ckd = build_balancer({"name": "ckd", "reweight": args.reweight})
    ckd.teachers = {m: Teacher(m, torch.randn(ds.n_users, 192) * 0.1, torch.randn(ds.n_items, 192) * 0.1, {})
                    for m in ds.modalities}
    ckd.active_users = torch.nonzero(torch.as_tensor(ds.train.indptr[1:] - ds.train.indptr[:-1]) > 0).flatten()
    ckd.n_items = ds.n_items
    ckd.generator = torch.Generator().manual_seed(0)
    sampler = BPRSampler(ds.train, 1024, dev, seed=0)
    steps = args.steps or sampler.steps_per_epoch
    for _ in range(2):  # warm-up
        total, _ = ckd.loss(model, base_pass(model, sampler.sample(), 1e-5), 0)
    t = time.perf_counter()
    for _ in range(steps):
        total, _ = ckd.loss(model, base_pass(model, sampler.sample(), 1e-5), 0)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    per_step = (time.perf_counter() - t) / steps
    epoch = per_step * sampler.steps_per_epoch
    t = time.perf_counter()
    Evaluator(ds, (10, 20), dev).evaluate(model, "valid")
    val = time.perf_counter() - t
    note = "" if steps == sampler.steps_per_epoch else f" (extrapolated from {steps} steps)"
    print("\n| CKD student, VBPR on Baby | mbrec | CKD authors' code | speed-up |")
    print("|---|---|---|---|")
    print(f"| training epoch ({sampler.steps_per_epoch} steps){note} | {epoch:.2f} s | 35.6–38.0 s | {36.8 / epoch:.1f}× |")
    print(f"| validation, 3 passes | {val:.2f} s | 31.5–33.9 s | {32.7 / val:.1f}× |")


if __name__ == "__main__":
    main()
