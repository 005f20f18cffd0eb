"""Shared benchmark input: the real Amazon Baby interactions with made-up features of the real shapes.

The Baby split (LATTICE-format ``train.json``/``val.json``/``test.json`` in one folder) is not part of
the repository: pass ``--data DIR`` to a benchmark (``make bench ARGS="--data DIR"``) or set
``MBREC_BENCH_DATA=DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import mbrec  # noqa: E402,F401  (sets OMP_WAIT_POLICY before torch is imported, as `python -m mbrec` does)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mbrec.data.readers import assemble  # noqa: E402
from mbrec.runtime import apply_threads  # noqa: E402
from mbrec.training.syncs import SyncCount  # noqa: E402,F401  (used by the bench scripts)

ENV = "MBREC_BENCH_DATA"
#: the project's default thread policy, as a run applies it (``MBREC_BENCH_THREADS`` overrides)
THREADS = apply_threads(os.environ.get("MBREC_BENCH_THREADS", "auto"))


def data_arg(argv: list[str] | None = None) -> str | None:
    """``--data DIR`` from the command line, else ``$MBREC_BENCH_DATA``, else None."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--data")
    given = ap.parse_known_args(argv)[0].data
    return given or os.environ.get(ENV) or None


if _given := data_arg():  # children (fresh subprocesses) inherit --data through the environment
    os.environ[ENV] = _given


def baby_folder(argv: list[str] | None = None) -> Path | None:
    """The benchmark's Baby folder when one was given and holds ``train.json``; else None."""
    given = data_arg(argv)
    folder = Path(given) if given else None
    return folder if folder is not None and (folder / "train.json").is_file() else None


def require_baby(argv: list[str] | None = None) -> Path:
    """:func:`baby_folder`, or exit with a message saying what is missing and how to give it."""
    folder = baby_folder(argv)
    if folder is not None:
        return folder
    given = data_arg(argv)
    where = (f"{given!r} has no train.json" if given else
             f"no data folder given (neither --data DIR nor ${ENV})")
    raise SystemExit(f"benchmark data not found: {where}. Give the Amazon Baby 5-core split in LATTICE "
                     f"format (a folder with train.json, val.json, test.json) with --data DIR, "
                     f"e.g. make bench ARGS=\"--data DIR\", or set {ENV}=DIR; nothing measured")


def load_baby(visual_dim: int = 4096, text_dim: int = 1024, seed: int = 0):
    """The Baby split (LATTICE json, flat folder) + random float32 features of the given widths."""
    folder = require_baby()
    users, items, labels = [], [], []
    for label, fname in enumerate(("train.json", "val.json", "test.json")):
        for u, its in json.loads((folder / fname).read_text()).items():
            users.append(np.full(len(its), int(u)))
            items.append(np.asarray(its, dtype=np.int64))
            labels.append(np.full(len(its), label))
    users, items, labels = (np.concatenate(x).astype(np.int64) for x in (users, items, labels))
    n_items = int(items.max()) + 1
    rng = np.random.default_rng(seed)
    feats = {
        "text": rng.standard_normal((n_items, text_dim), dtype=np.float32),
        "visual": np.abs(rng.standard_normal((n_items, visual_dim), dtype=np.float32)),
    }
    files = {k: folder / f for k, f in enumerate(("train.json", "val.json", "test.json"))}
    return assemble("baby-bench", folder, users, items, labels, feats, files, source=f"bench:{folder}")


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"threads {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")


def device_arg(argv: list[str] | None = None) -> torch.device:
    """``--device auto|cpu|cuda[:N]`` (default auto: CUDA when present)."""
    from mbrec.utils import resolve_device

    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--device", default="auto")
    device = resolve_device(ap.parse_known_args(argv)[0].device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return device


def cuda_note(device: torch.device) -> str:
    """Peak GPU memory since :func:`device_arg` on CUDA; empty on CPU."""
    if device.type != "cuda":
        return ""
    return (f"{torch.cuda.get_device_name(device)}: peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MB "
            f"allocated, {torch.cuda.max_memory_reserved(device) / 2**20:,.0f} MB reserved")


def time_epochs(ds, model, balancer, epochs: int, lr: float = 5e-4,
                device: torch.device | None = None) -> list[float]:
    """Seconds of each training epoch through the real trainer (fused Adam as conf/optimizer/adam.yaml;
    CKD batch 1024, no validation inside the timed epochs). ``model`` must already be on ``device``."""
    from mbrec.training.trainer import Trainer, TrainSettings

    settings = TrainSettings(batch_size=1024, max_epochs=epochs, eval_every=10**9)
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    trainer = Trainer(ds, settings, device or torch.device("cpu"), seed=0)
    return trainer.fit(model, opt, balancer).epoch_seconds


def time_validation(evaluator, model, ablations=None) -> float:
    """Seconds of one validation, ``evaluator.evaluate(model, "valid", ablations)`` (default: the full
    pass and one per modality); it ends with a read-back, so device work is included."""
    import time

    t = time.perf_counter()
    evaluator.evaluate(model, "valid", ablations)
    if evaluator.device.type == "cuda":
        torch.cuda.synchronize(evaluator.device)
    return time.perf_counter() - t


def ckd_student(ds, device: torch.device | None = None, reweight: str = "paper"):
    """A CKD balancer ready to train a student on ``ds``: stand-in teachers of the right shapes (their
    training is a plain VBPR run, timed by bench_vbpr.py) instead of ``prepare``'s trained ones."""
    from mbrec.balancers import build_balancer
    from mbrec.balancers.teachers import Teacher

    device = device or torch.device("cpu")
    ckd = build_balancer({"name": "ckd", "reweight": reweight})
    ckd.teachers = {m: Teacher(m, (torch.randn(ds.n_users, 192) * 0.1).to(device),
                               (torch.randn(ds.n_items, 192) * 0.1).to(device), {})
                    for m in ds.modalities}
    degree = torch.as_tensor(ds.train.indptr[1:] - ds.train.indptr[:-1])
    ckd.active_users = torch.nonzero(degree > 0).flatten().to(device)
    ckd.n_items = ds.n_items
    ckd.generator = torch.Generator(device=device).manual_seed(0)
    return ckd



def child_row(cmd: list[str], label: str) -> dict | None:
    """Run one measurement in a fresh interpreter (its peak memory is its own); its last stdout line is a
    JSON row. A failure is reported on stderr with its tail and gives None."""
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"{label}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    row = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{label}: {row['epoch_s']:.1f} s/epoch", file=sys.stderr, flush=True)
    return row


def backbone_names(given: str) -> list[str]:
    """``--backbones a,b``: the names, each a registered backbone (else stop in one line listing them)."""
    from mbrec.backbones import BACKBONES

    names = [n for n in given.split(",") if n]
    unknown = sorted(set(names) - set(BACKBONES))
    if unknown:
        raise SystemExit(f"--backbones: unknown {unknown}; registered: {sorted(BACKBONES)}")
    return names
