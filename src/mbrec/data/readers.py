"""Readers for the two on-disk layouts users have, with validation that names file, field and fix.

* MMRec: ``<name>.inter`` (tab-separated, header with ``userID``, ``itemID``, ``x_label`` 0/1/2),
  ``image_feat.npy``, ``text_feat.npy`` (any ``<modality>_feat.npy``; ``image`` is called ``visual``).
* CKD/LATTICE: ``5-core/{train,val,test}.json`` (user id -> list of item ids) and the same feature files.

Nothing is written by a reader; a failed read leaves no trace.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mbrec.data.dataset import Dataset, interactions_to_csr
from mbrec.errors import DataError

log = logging.getLogger(__name__)

DATA_HELP = "see the 'Data' section of README.md for the expected layout and how to prepare it"
MODALITY_ALIASES = {"image": "visual", "img": "visual", "txt": "text"}
LATTICE_FILES = {"train": "train.json", "valid": "val.json", "test": "test.json"}


def detect_layout(folder: Path, name: str) -> str:
    """Return ``"mmrec"`` or ``"lattice"``; raise a DataError that says where we looked otherwise."""
    if not folder.is_dir():
        raise DataError(folder, "dataset folder", "does not exist", DATA_HELP)
    if (folder / f"{name}.inter").is_file() or list(folder.glob("*.inter")):
        return "mmrec"
    if (folder / "5-core" / "train.json").is_file():
        return "lattice"
    raise DataError(
        folder,
        "layout",
        f"found neither '{name}.inter' (MMRec layout) nor '5-core/train.json' (CKD/LATTICE layout)",
        DATA_HELP,
    )


def read_features(folder: Path) -> dict[str, np.ndarray]:
    """Every ``<modality>_feat.npy`` in ``folder``; names sorted, ``image`` mapped to ``visual``."""
    files = sorted(folder.glob("*_feat.npy"))
    if not files:
        raise DataError(folder, "features", "no '<modality>_feat.npy' files (e.g. image_feat.npy, text_feat.npy)", DATA_HELP)
    feats: dict[str, np.ndarray] = {}
    for f in files:
        stem = f.name[: -len("_feat.npy")]
        modality = MODALITY_ALIASES.get(stem, stem)
        try:
            arr = np.load(f, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
            raise DataError(f, "array", f"cannot be read as a .npy array ({e})", "re-create it with numpy.save") from e
        if arr.ndim != 2 or arr.shape[1] == 0:
            raise DataError(f, "shape", f"is {arr.shape}, expected (n_items, width)", "save a 2-d items x width array")
        if not np.issubdtype(arr.dtype, np.number):
            raise DataError(f, "dtype", f"is {arr.dtype}, expected a float array", "save float32 features")
        arr = arr.astype(np.float32, copy=False)
        bad = ~np.isfinite(arr)
        if bad.any():
            rows = np.unique(np.nonzero(bad)[0])
            raise DataError(
                f, "values", f"{bad.sum()} NaN/Inf values in {rows.size} rows (first rows: {rows[:5].tolist()})",
                "replace missing features, e.g. by the mean of the other items' features",
            )
        feats[modality] = arr
    return feats


def read_mmrec(folder: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, Path]:
    """(users, items, labels, file) from ``<name>.inter``."""
    path = folder / f"{name}.inter"
    if not path.is_file():
        candidates = sorted(folder.glob("*.inter"))
        if len(candidates) != 1:
            raise DataError(path, "interactions file", "not found", f"name it '{name}.inter' ({DATA_HELP})")
        path = candidates[0]
    try:
        df = pd.read_csv(path, sep="\t", usecols=lambda c: c in {"userID", "itemID", "x_label"})
    except Exception as e:  # noqa: BLE001
        raise DataError(path, "contents", f"cannot be parsed as tab-separated text ({e})", DATA_HELP) from e
    for col in ("userID", "itemID", "x_label"):
        if col not in df.columns:
            raise DataError(path, col, "column missing from the header", "the header must name userID, itemID and x_label (tab-separated)")
        if not pd.api.types.is_integer_dtype(df[col]):
            bad = pd.to_numeric(df[col], errors="coerce")
            row = int(np.flatnonzero(bad.isna() | (bad % 1 != 0))[0]) if (bad.isna() | (bad % 1 != 0)).any() else 0
            raise DataError(path, col, f"holds a non-integer value {df[col].iloc[row]!r} on data row {row + 1}", "ids and x_label must be integers")
    labels = df["x_label"].to_numpy(np.int64)
    bad = ~np.isin(labels, (0, 1, 2))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(path, "x_label", f"value {labels[row]} on data row {row + 1} is not 0, 1 or 2", "use 0 = train, 1 = validation, 2 = test")
    return df["userID"].to_numpy(np.int64), df["itemID"].to_numpy(np.int64), labels, path


def read_lattice(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, Path]]:
    """(users, items, labels, files per label) from ``5-core/{train,val,test}.json``."""
    users, items, labels, files = [], [], [], {}
    for label, (split, fname) in enumerate(LATTICE_FILES.items()):
        path = folder / "5-core" / fname
        files[label] = path
        if not path.is_file():
            raise DataError(path, split, "file not found", DATA_HELP)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(path, split, f"is not valid UTF-8 JSON ({e})", "write a JSON object {\"<user id>\": [item ids]}") from e
        if not isinstance(data, dict):
            raise DataError(path, split, "is not a JSON object", "write a JSON object {\"<user id>\": [item ids]}")
        for key, its in data.items():
            try:
                u = int(key)
            except ValueError:
                raise DataError(path, f"user {key!r}", "is not an integer id", "keys must be integer user ids") from None
            if not isinstance(its, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in its):
                raise DataError(path, f"user {key}", "value is not a list of integer item ids", "write [item id, ...]")
            users.append(np.full(len(its), u, dtype=np.int64))
            items.append(np.asarray(its, dtype=np.int64))
            labels.append(np.full(len(its), label, dtype=np.int64))
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64)  # noqa: E731
    return cat(users), cat(items), cat(labels), files


def assemble(
    name: str,
    folder: Path,
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    features: dict[str, np.ndarray],
    files: dict[int, Path],
    item_categories: np.ndarray | None = None,
    source: str = "",
) -> Dataset:
    """Validate raw interactions + features and build the Dataset. ``files`` maps label -> file for messages."""
    split_names = {0: "train", 1: "validation", 2: "test"}
    for arr, what in ((users, "user id"), (items, "item id")):
        if arr.size and arr.min() < 0:
            row = int(np.argmin(arr))
            raise DataError(files[int(labels[row])], what, f"negative value {arr[row]}", "ids must be contiguous integers starting at 0")
    for label, split in split_names.items():
        if not (labels == label).any():
            raise DataError(files[label], split, "split is empty", "every split needs interactions; re-split the data")
    pair = users * (int(items.max()) + 1) + items
    uniq, first, counts = np.unique(pair, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = int(first[np.argmax(counts > 1)])
        raise DataError(
            files[int(labels[dup])], "interactions",
            f"{int((counts - 1).sum())} duplicated (user, item) pairs, e.g. user {users[dup]} item {items[dup]}",
            "keep each (user, item) pair once, in one split",
        )
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    for m, f in features.items():
        fname = "image_feat.npy" if m == "visual" else f"{m}_feat.npy"
        if f.shape[0] < n_items:
            row = int(np.argmax(items))
            raise DataError(
                files[int(labels[row])], "item id",
                f"{items[row]} is out of range: {fname} has only {f.shape[0]} rows",
                f"make {fname} hold one row per item id 0..{n_items - 1}, or fix the ids",
            )
        if f.shape[0] > n_items:
            raise DataError(
                folder / fname, "rows",
                f"{f.shape[0]} feature rows but the interactions mention only {n_items} items (ids 0..{n_items - 1})",
                "keep one feature row per item id, in id order",
            )
    if item_categories is not None and len(item_categories) != n_items:
        raise DataError(folder / "item_categories", "rows", f"{len(item_categories)} rows for {n_items} items", "one category id per item")
    # Users with validation/test items but no training items cannot be scored: drop them (as MMRec does).
    has_train = np.zeros(n_users, dtype=bool)
    has_train[users[labels == 0]] = True
    cold = ~has_train[users]
    if cold.any():
        log.warning(
            "%s: dropping %d validation/test interactions of %d users with no training items",
            name, int(cold.sum()), np.unique(users[cold]).size,
        )
        users, items, labels = users[~cold], items[~cold], labels[~cold]
        for label, split in split_names.items():
            if not (labels == label).any():
                raise DataError(files[label], split, "split is empty after dropping users without training items", "re-split the data")
    mats = [interactions_to_csr(users[labels == k], items[labels == k], n_users, n_items) for k in range(3)]
    return Dataset(name=name, train=mats[0], valid=mats[1], test=mats[2], features=features,
                   item_categories=item_categories, source=source)


def read_item_categories(folder: Path) -> np.ndarray | None:
    """Optional ``item_categories`` (or ``item_categories.txt``): one integer category per item, in id order."""
    for fname in ("item_categories", "item_categories.txt"):
        path = folder / fname
        if path.is_file():
            try:
                cats = np.loadtxt(path, dtype=np.int64, ndmin=1)
            except ValueError as e:
                raise DataError(path, "category", f"not one integer per line ({e})", "write one integer category id per item line") from e
            if cats.size and cats.min() < 0:
                raise DataError(path, "category", "negative category id", "category ids must be >= 0")
            return cats
    return None


def read_dataset(folder: str | Path, name: str) -> Dataset:
    """Read a dataset folder in either layout (detected), validated."""
    folder = Path(folder)
    layout = detect_layout(folder, name)
    features = read_features(folder)
    if layout == "mmrec":
        users, items, labels, path = read_mmrec(folder, name)
        files = {0: path, 1: path, 2: path}
    else:
        users, items, labels, files = read_lattice(folder)
    if users.size == 0:
        raise DataError(files[0], "interactions", "no interactions", DATA_HELP)
    return assemble(name, folder, users, items, labels, features, files, read_item_categories(folder),
                    source=f"{layout}:{folder}")
