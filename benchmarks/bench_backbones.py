"""Every registered backbone on the real Amazon Baby interactions with features of the real shapes.

Per backbone (its conf/backbone/<name>.yaml defaults; each in a fresh subprocess so peak memory is its
own): model build time (graphs, kNN), seconds per training step of the trainer's step (BPRSampler batch
of 1,024 users + ``objective.base_pass`` incl. the auxiliary loss + backward + fused Adam), timed over
``--steps`` steps after 2 warm-up steps and extrapolated to a full epoch; seconds per validation
(``Evaluator.evaluate``: all validation users, full ranking, overall + one pass per modality); and
peak resident memory (``resource.getrusage``), also minus the RSS after loading the data.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

from common import backbone_names, child_row, cuda_note, device_arg, load_baby, machine, require_baby, time_validation  # first: mbrec before torch

import torch

def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(name: str, steps: int, evals: int) -> dict:
    """Build, train ``steps`` steps and validate one backbone; return the numbers."""
    from omegaconf import OmegaConf

    from mbrec import compose  # the backbone's YAML as a run composes it (schema defaults included)
    from mbrec.backbones import build_backbone
    from mbrec.data.sampling import BPRSampler
    from mbrec.training.evaluation import Evaluator
    from mbrec.training.objective import base_pass

    ds = load_baby()
    rss_data = _rss_mb()
    dev = device_arg()
    torch.manual_seed(0)
    t = time.perf_counter()
    model = build_backbone(OmegaConf.to_container(compose(f"backbone={name}").backbone), ds).to(dev)
    build = time.perf_counter() - t
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, fused=True)
    sampler = BPRSampler(ds.train, 1024, dev, seed=0)
    model.train()
    step_times = []
    for step in range(steps + 2):
        t = time.perf_counter()
        p = base_pass(model, sampler.sample(), 1e-5)
        opt.zero_grad(set_to_none=True)
        sum(p.terms.values()).backward()
        opt.step()
        if step >= 2:  # warm-up: first calls allocate and pick kernels
            step_times.append(time.perf_counter() - t)
    ev = Evaluator(ds, (10, 20), dev)
    val_times = []
    for _ in range(evals):
        val_times.append(time_validation(ev, model))
    per_step = sum(step_times) / len(step_times)
    return {
        "name": name,
        "params": sum(p.numel() for p in model.parameters()),
        "build_s": build,
        "step_s": per_step,
        "steps_per_epoch": sampler.steps_per_epoch,
        "epoch_s": per_step * sampler.steps_per_epoch,
        "valid_s": min(val_times),
        "peak_rss_mb": _rss_mb(),
        "model_rss_mb": _rss_mb() - rss_data,
        "data": f"{ds.n_users} users, {ds.n_items} items, {ds.train.nnz} train interactions",
        "machine": machine(),
        "gpu": cuda_note(dev),
    }


def main() -> None:
    from mbrec.backbones import BACKBONES

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbones", default=",".join(sorted(BACKBONES)), help="comma-separated names (default: all registered)")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per backbone (after 2 warm-up steps)")
    ap.add_argument("--evals", type=int, default=1, help="timed validations per backbone (best is reported)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args, _ = ap.parse_known_args()
    names = backbone_names(args.backbones)
    if args.child:
        print(json.dumps(measure(names[0], args.steps, args.evals)))
        return
    require_baby()
    rows = []
    for name in names:
        cmd = [sys.executable, __file__, "--child", "--backbones", name, "--steps", str(args.steps), "--evals", str(args.evals),
               f"--device={args.device}"]
        if (row := child_row(cmd, name)) is not None:
            rows.append(row)
    if not rows:
        raise SystemExit("nothing measured")
    print(f"\nBaby ({rows[0]['data']}), 4,096-d visual + 1,024-d text features (random, real shapes); {rows[0]['machine']}")
    print(f"Training epoch = {rows[0]['steps_per_epoch']} steps of 1,024 users, extrapolated from {args.steps} timed steps.\n")
    print("| backbone | parameters | build (s) | s / step | s / epoch "
        "| validation (s, overall + per modality) | peak RSS (MB) | RSS over data (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['params']:,} | {r['build_s']:.1f} | {r['step_s']:.3f} | {r['epoch_s']:.1f} | "
              f"{r['valid_s']:.1f} | {r['peak_rss_mb']:,.0f} | {r['model_rss_mb']:,.0f} |")
        if r.get("gpu"):
            print(f"  {r['name']}: {r['gpu']}")


if __name__ == "__main__":
    main()
