"""Write an MMRec-layout folder atomically: everything goes to a temporary sibling, then one rename."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

from mbrec.errors import DataError


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an existing output folder unless ``overwrite`` — before any work is done."""
    if out.exists() and not overwrite:
        raise DataError(out, "output folder", "already exists", "choose another --out or pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise DataError(out, "output folder", "exists and is not a folder", "choose another --out")


@contextlib.contextmanager
def staging(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside ``out``; on success it replaces ``out``, on any error it is removed."""
    check_output(out, overwrite)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise DataError(out.parent, "output location", f"cannot be written ({e.strerror})",
                        "choose a writable --out location") from e
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_mmrec(folder: Path, name: str, users: np.ndarray, items: np.ndarray, labels: np.ndarray,
                features: Mapping[str, np.ndarray], user_raw: np.ndarray, item_raw: np.ndarray,
                categories: np.ndarray | None = None) -> None:
    """``<name>.inter`` (userID, itemID, x_label), the id mappings, ``<modality>_feat.npy`` and
    optionally ``item_categories`` into ``folder``."""
    pd.DataFrame({"userID": users, "itemID": items, "x_label": labels}).to_csv(folder / f"{name}.inter", sep="\t", index=False)
    pd.DataFrame({"user_id": user_raw, "userID": np.arange(len(user_raw))}).to_csv(folder / "u_id_mapping.csv", sep="\t", index=False)
    pd.DataFrame({"asin": item_raw, "itemID": np.arange(len(item_raw))}).to_csv(folder / "i_id_mapping.csv", sep="\t", index=False)
    for modality, matrix in features.items():
        np.save(folder / f"{modality}_feat.npy", np.ascontiguousarray(matrix, dtype=np.float32))
    if categories is not None:
        np.savetxt(folder / "item_categories", categories, fmt="%d")


def finish(folder: Path, name: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Load the staged folder with mbrec's own reader (so a bad output never lands), add the content
    fingerprint (the teacher-cache key) and write ``manifest.json``."""
    from mbrec.data.readers import read_dataset

    dataset = read_dataset(folder, name)
    manifest = {**manifest, "dataset": dataset.summary(), "fingerprint": dataset.fingerprint}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest
