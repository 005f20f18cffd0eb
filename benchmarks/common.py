"""Shared benchmark input: the real Amazon Baby interactions with made-up features of the real shapes."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mbrec.data.readers import assemble  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon-baby-5core"


def baby_folder() -> Path | None:
    folder = Path(os.environ.get("MBREC_BENCH_DATA", DEFAULT))
    return folder if (folder / "train.json").is_file() else None


def load_baby(visual_dim: int = 4096, text_dim: int = 1024, seed: int = 0):
    """The Baby split (LATTICE json, flat folder) + random float32 features of the given widths."""
    folder = baby_folder()
    if folder is None:
        raise SystemExit(f"benchmark data not found at {DEFAULT} (set MBREC_BENCH_DATA); nothing measured")
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
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}"


def time_epochs(ds, model, balancer, epochs: int, lr: float = 5e-4) -> list[float]:
    """Seconds of each training epoch through the real trainer (fused Adam as conf/optimizer/adam.yaml;
    CKD batch 1024, no validation inside the timed epochs)."""
    from mbrec.training.trainer import Trainer, TrainSettings

    settings = TrainSettings(batch_size=1024, max_epochs=epochs, eval_every=10**9)
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    trainer = Trainer(ds, settings, torch.device("cpu"), seed=0)
    return trainer.fit(model, opt, balancer).epoch_seconds
