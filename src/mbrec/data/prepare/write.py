"""Write an MMRec-layout folder atomically: everything goes to a temporary sibling, then one rename."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from mbrec.errors import DataError
from mbrec.utils import honour_umask


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an existing output folder unless ``overwrite`` — before any work is done."""
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise DataError(out, "output folder", "already exists", "choose another --out or pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise DataError(out, "output folder", "exists and is not a folder", "choose another --out")


MAX_NAME_CHARS = 200


def check_name(name: str, flag: str = "--name") -> str:
    """A dataset name is one plain file name (it becomes ``<name>.inter`` inside ``--out``): not empty,
    not ``.``/``..``, no ``/`` or ``\\``, no NUL or other unprintable character, at most 200 characters."""
    problem = ("is empty" if not name else "is '.' or '..'" if name in (".", "..")
               else "contains a path separator ('/' or '\\')" if "/" in name or "\\" in name or (os.altsep and os.altsep in name)
               else "contains an unprintable character (NUL, tab, newline, ...)" if not name.isprintable()
               else f"is longer than {MAX_NAME_CHARS} characters" if len(name) > MAX_NAME_CHARS else "")
    if problem:
        raise DataError(flag, "dataset name", f"{name[:60]!r} {problem}",
                        "pass a plain file name such as 'baby' (it becomes <name>.inter inside --out); "
                        "choose the folder with --out")
    return name


def check_apart(out: Path, input_files: Sequence[Path] = (), input_folders: Sequence[Path] = ()) -> None:
    """Refuse an ``--out`` whose replacement could delete or change an input: one that is or contains
    the folder of an input file, or that is, contains or lies inside an input folder (symlinks resolved).
    An ``--out`` beside the input files (e.g. ``raw/baby`` for ``raw/reviews.json.gz``) is fine: only
    ``--out`` itself is ever replaced."""
    target = out.resolve()
    for f in input_files:
        if target in (f.resolve(), f.parent.resolve() / f.name):
            raise DataError(out, "output folder", f"is the input file {f}", "choose an --out outside the folders of the inputs")
        for folder in {f.parent.resolve(), f.resolve().parent}:  # the link's folder and the file's own
            if folder == target or folder.is_relative_to(target):
                raise DataError(out, "output folder", f"{'is' if folder == target else 'contains'} the folder of the input "
                                f"{f} (replacing --out would delete it)", "choose an --out outside the folders of the inputs")
    for d in input_folders:
        folder = d.resolve()
        if folder == target or folder.is_relative_to(target) or target.is_relative_to(folder):
            how = "is" if folder == target else "contains" if folder.is_relative_to(target) else "lies inside"
            raise DataError(out, "output folder", f"{how} the input folder {d} (the input would be changed or deleted)",
                            "choose an --out outside the input folder")


@contextlib.contextmanager
def staging(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside ``out``, made first (an unwritable location fails before the slow
    work). On success it replaces ``out`` with one rename; on any error it is removed, together with
    the parent folders it had to create, and an ``out`` being replaced is left as it was."""
    check_output(out, overwrite)
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]  # deepest first

    def clean() -> None:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        honour_umask(tmp, folder=True)  # mkdtemp makes 0700: a prepared folder is shared data
    except OSError as e:
        clean()
        raise DataError(out.parent, "output location", f"cannot be written ({e.strerror or e}: {e.filename})",
                        "choose a writable --out location (check the folder's permissions)") from e
    try:
        yield tmp
        check_output(out, overwrite)  # it may have appeared while we worked
        if out.exists() or out.is_symlink():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            try:
                tmp.rename(out)
            except BaseException:
                old.rename(out)
                raise
            old.unlink() if old.is_symlink() else shutil.rmtree(old)  # a replaced symlink goes, not its target
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        clean()
        raise


def write_mmrec(folder: Path, name: str, users: np.ndarray, items: np.ndarray, labels: np.ndarray,
                features: Mapping[str, np.ndarray], user_raw: np.ndarray, item_raw: np.ndarray,
                categories: np.ndarray | None = None, extra: Mapping[str, Any] | None = None) -> None:
    """``<name>.inter`` (userID, itemID, [rating, timestamp,] x_label — MMRec's header; only userID,
    itemID and x_label are read), the id mappings, ``<modality>_feat.npy`` and optionally
    ``item_categories`` into ``folder``."""
    inter = pd.DataFrame({"userID": users, "itemID": items, **(extra or {}), "x_label": labels})
    inter.to_csv(folder / f"{name}.inter", sep="\t", index=False)
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
