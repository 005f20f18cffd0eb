"""Readers for the two on-disk layouts users have, with validation that names file, field and fix.

* MMRec: ``<name>.inter`` (tab-separated, header with ``userID``, ``itemID``, ``x_label`` 0/1/2),
  ``image_feat.npy``, ``text_feat.npy`` (any ``<modality>_feat.npy``; ``image`` is called ``visual``).
* CKD/LATTICE: ``5-core/{train,val,test}.json`` (user id -> list of item ids) and the same feature files.

Nothing is written by a reader; a failed read leaves no trace.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np
import numpy.lib.format as npformat
import pandas as pd

from mbrec.data.dataset import Dataset, interactions_to_csr
from mbrec.data.files import (
    MAX_ID_DIGITS,
    MAX_JSON_BYTES,
    MAX_TABLE_LINE_BYTES,
    PLAIN_IDS,
    IdParseError,
    check_id_range,
    check_line_lengths,
    id_problem,
    open_regular,
    parse_ids,
)
from mbrec.errors import DataError

log = logging.getLogger(__name__)

DATA_HELP = "see the 'Data' section of README.md for the expected layout and how to prepare it"
MODALITY_ALIASES = {"image": "visual", "img": "visual", "txt": "text"}
LATTICE_FILES = {"train": "train.json", "valid": "val.json", "test": "test.json"}


def detect_layout(folder: Path, name: str) -> str:
    """Return ``"mmrec"`` or ``"lattice"``; raise a DataError that says where we looked otherwise."""
    if not folder.is_dir():
        raise DataError(folder, "dataset folder", "does not exist", DATA_HELP)
    if (folder / f"{name}.inter").exists() or list(folder.glob("*.inter")):
        return "mmrec"
    if (folder / "5-core" / "train.json").exists():
        return "lattice"
    raise DataError(
        folder,
        "layout",
        f"found neither '{name}.inter' (MMRec layout) nor '5-core/train.json' (CKD/LATTICE layout)",
        DATA_HELP,
    )


MAX_FEATURE_MAGNITUDE = 1e6  # |x| above this is refused: such features make training diverge or overflow
FEATURE_KINDS = {"f": "float", "i": "integer", "u": "unsigned integer"}


def _feature_header(f: Path, fh, size: int) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a .npy header, checked before any data is read or allocated."""
    resave = "re-create it with numpy.save(path, features.astype('float32'))"
    try:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = npformat.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = npformat.read_array_header_2_0(fh)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]} (only structured arrays use it)")
    except Exception as e:  # noqa: BLE001 - any unreadable header gets the same clear message
        raise DataError(f, "array", f"cannot be read as a .npy array ({e})", resave) from None
    if dtype.kind not in FEATURE_KINDS:
        what = {"c": "complex", "O": "object (pickled Python objects, never loaded)", "V": "structured",
                "b": "boolean", "U": "text", "S": "bytes"}.get(dtype.kind, dtype.kind)
        raise DataError(f, "dtype", f"is {dtype} ({what}), expected real numbers", resave)
    if len(shape) != 2 or shape[1] == 0:
        raise DataError(f, "shape", f"is {shape}, expected (n_items, width)", "save a 2-d items x width array")
    expected = shape[0] * shape[1] * dtype.itemsize
    if size - fh.tell() != expected:
        raise DataError(f, "size", f"the header says {shape} {dtype} ({expected:,} bytes of data) but the file holds "
                        f"{size - fh.tell():,}: it is truncated or not a .npy file", resave)
    return shape, dtype


def read_feature_file(f: Path) -> np.ndarray:
    """One ``<modality>_feat.npy`` as float32, validated: a regular file, a real-valued 2-d array whose
    size matches its header, finite, and |x| <= MAX_FEATURE_MAGNITUDE. Never unpickles."""
    with open_regular(f, "feature file", "point it to a .npy file written by numpy.save") as fh:
        size = os.fstat(fh.fileno()).st_size
        _feature_header(f, fh, size)
        fh.seek(0)
        try:
            arr = np.load(fh, allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise DataError(f, "array", f"cannot be read as a .npy array ({e})", "re-create it with numpy.save") from e
    bad = ~np.isfinite(arr) if arr.dtype.kind == "f" else np.zeros(arr.shape, bool)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise DataError(
            f, "values", f"{bad.sum()} NaN/Inf values in {rows.size} rows (first rows: {rows[:5].tolist()})",
            "replace missing features, e.g. by the mean of the other items' features",
        )
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if max(abs(float(lo)), abs(float(hi))) > MAX_FEATURE_MAGNITUDE:
            big = np.abs(arr.astype(np.float64, copy=False)) > MAX_FEATURE_MAGNITUDE
            rows = np.unique(np.nonzero(big)[0])
            raise DataError(
                f, "values", f"{int(big.sum())} values beyond +-{MAX_FEATURE_MAGNITUDE:g} in {rows.size} rows (range "
                f"{float(lo):.3g} .. {float(hi):.3g}; first rows: {rows[:5].tolist()})",
                "scale the features (e.g. standardise them or divide by their largest absolute value)",
            )
    return arr.astype(np.float32, copy=False)


def read_features(folder: Path) -> dict[str, np.ndarray]:
    """Every ``<modality>_feat.npy`` in ``folder``; names sorted, ``image`` mapped to ``visual``."""
    files = sorted(folder.glob("*_feat.npy"))
    if not files:
        raise DataError(folder, "features", "no '<modality>_feat.npy' files (e.g. image_feat.npy, text_feat.npy)", DATA_HELP)
    feats: dict[str, np.ndarray] = {}
    for f in files:
        stem = f.name[: -len("_feat.npy")]
        if not stem:
            raise DataError(f, "file name", "names no modality", "name feature files <modality>_feat.npy, e.g. text_feat.npy")
        modality = MODALITY_ALIASES.get(stem, stem)
        if modality in feats:
            raise DataError(f, "modality", f"{modality!r} is given twice (image_feat.npy and visual_feat.npy?)",
                            "keep one feature file per modality")
        feats[modality] = read_feature_file(f)
    return feats


INTER_COLUMNS = ("userID", "itemID", "x_label")
INTER_FIX = "write integer ids (plain digits) and x_label 0/1/2, tab-separated, one interaction per line"


def read_mmrec(folder: Path, name: str, counts: dict[str, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, Path]:
    """(users, items, labels, file) from ``<name>.inter``. Blank lines and ids written as integral
    floats (``12.0``) are accepted and counted in ``counts``."""
    counts = {} if counts is None else counts
    path = folder / f"{name}.inter"
    if not path.exists() and not path.is_symlink():
        candidates = sorted(folder.glob("*.inter"))
        if len(candidates) != 1:
            raise DataError(path, "interactions file", "not found", f"name it '{name}.inter' ({DATA_HELP})")
        path = candidates[0]
    with open_regular(path, "interactions file", f"name a regular file '{name}.inter' ({DATA_HELP})") as fh:
        blank_lines = check_line_lengths(fh, path, MAX_TABLE_LINE_BYTES,
                                         "the file is not an interactions table or is corrupt; " + INTER_FIX)
        try:  # every field as the text written (object dtype), one row per line (no quoting, blank lines kept)
            df = pd.read_csv(fh, sep="\t", dtype=object, keep_default_na=False,
                             na_filter=False, skip_blank_lines=False, quoting=csv.QUOTE_NONE, encoding="utf-8")
        except pd.errors.EmptyDataError:
            raise DataError(path, "contents", "the file is empty", "write a header line (userID, itemID, x_label) and "
                            "one interaction per line") from None
        except Exception as e:  # noqa: BLE001
            raise DataError(path, "contents", f"cannot be parsed as tab-separated text ({e})", DATA_HELP) from e
    for col in INTER_COLUMNS:
        if col not in df.columns:
            raise DataError(path, col, "column missing from the header", "the header must name userID, itemID and x_label (tab-separated)")
        # pandas renames a repeated header name to <name>.1, <name>.2, ...: which one is meant is unknowable
        if any(str(c).startswith(col + ".") and str(c)[len(col) + 1:].isdigit() for c in df.columns):
            raise DataError(path, f"header: {col}", "is named twice", "name each column once (userID, itemID, x_label)")
    if 1 in blank_lines:
        raise DataError(path, "line 1", "is blank", "the first line must be the header (userID, itemID, x_label)")
    blank = np.zeros(len(df), dtype=bool)
    rows = np.asarray(blank_lines, dtype=np.int64) - 2  # file line -> data row: the header is line 1
    blank[rows[rows < len(df)]] = True
    lines = np.flatnonzero(~blank) + 2
    df = df.loc[~blank, list(INTER_COLUMNS)]
    if blank.any():
        counts["blank_lines_skipped"] = counts.get("blank_lines_skipped", 0) + int(blank.sum())
    if df.empty:
        raise DataError(path, "interactions", "the file has a header but no interaction lines",
                        "add one line per interaction (userID, itemID, x_label), or point to the right file")
    out = {}
    for col in INTER_COLUMNS:
        try:
            out[col], floats = parse_ids(df[col])
        except IdParseError as e:
            raise DataError(path, f"line {lines[e.index]}: {col}", f"{e.value!r} {e.problem}", INTER_FIX) from None
        if floats:
            counts["ids_written_as_float"] = counts.get("ids_written_as_float", 0) + floats
    labels = out["x_label"]
    bad = ~np.isin(labels, (0, 1, 2))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(path, f"line {lines[row]}: x_label", f"value {labels[row]} is not 0, 1 or 2", "use 0 = train, 1 = validation, 2 = test")
    return out["userID"], out["itemID"], labels, path


class _Number(str):
    """A JSON number exactly as written (never converted by json, so 1e400 or 5,000 digits cannot hurt)."""


class _Pairs(list):
    """A JSON object as its (key, value) pairs, so that repeated keys are seen, not silently merged."""


def _json_id(text: str, path: Path, where: str, counts: dict[str, int]) -> int:
    """An id from a JSON number or object key, as written: plain digits, or an integral float (counted)."""
    if text.isascii() and text.isdigit() and len(text) <= MAX_ID_DIGITS:
        return int(text)
    problem = id_problem(text)
    if problem:
        raise DataError(path, where, f"{str(text)[:40]!r} {problem}", LATTICE_FIX)
    if "." in text:
        counts["ids_written_as_float"] = counts.get("ids_written_as_float", 0) + 1
    return int(text.strip().split(".", 1)[0])


LATTICE_FIX = "write a JSON object {\"<user id>\": [item id, ...]} with plain integer ids"


def read_lattice(folder: Path, counts: dict[str, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, Path]]:
    """(users, items, labels, files per label) from ``5-core/{train,val,test}.json``. Ids written as
    integral floats (``12.0``) are accepted and counted in ``counts``."""
    counts = {} if counts is None else counts
    users, items, labels, files = [], [], [], {}
    for label, (split, fname) in enumerate(LATTICE_FILES.items()):
        path = folder / "5-core" / fname
        files[label] = path
        if not path.exists() and not path.is_symlink():
            raise DataError(path, split, "file not found", DATA_HELP)
        with open_regular(path, split, f"make 5-core/{fname} a regular JSON file ({DATA_HELP})") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_JSON_BYTES:
                raise DataError(path, split, f"is {size:,} bytes, above the limit of {MAX_JSON_BYTES:,}",
                                "this is not a LATTICE split file; check the path")
            raw = fh.read()
        try:
            data = json.loads(raw.decode("utf-8"), parse_int=_Number, parse_float=_Number, parse_constant=_Number,
                              object_pairs_hook=_Pairs)
        except UnicodeDecodeError as e:
            raise DataError(path, split, f"is not UTF-8 ({e.reason} at byte {e.start})", LATTICE_FIX) from None
        except json.JSONDecodeError as e:
            raise DataError(path, f"line {e.lineno} column {e.colno}", f"is not valid JSON ({e.msg})", LATTICE_FIX) from None
        except RecursionError:
            raise DataError(path, split, "is nested too deeply to be a split file", LATTICE_FIX) from None
        if not isinstance(data, _Pairs):
            raise DataError(path, split, "is not a JSON object", LATTICE_FIX)
        seen: dict[int, str] = {}
        for key, its in data:
            u = _json_id(key, path, f"user {key[:40]!r}", counts)
            if u in seen:
                raise DataError(path, f"user {key[:40]!r}", f"appears twice (also as {seen[u][:40]!r})",
                                "list each user once per split file")
            seen[u] = key
            if not isinstance(its, list) or isinstance(its, _Pairs):
                raise DataError(path, f"user {key}", "value is not a list of integer item ids", "write [item id, ...]")
            if all(type(i) is _Number for i in its) and PLAIN_IDS.fullmatch("\n".join(its)):
                row = np.array(its, dtype=np.int64)  # the usual case: plain digits, checked in one pass
            else:
                row = np.array([_json_id(i, path, f"user {key}: item {k + 1}", counts) if isinstance(i, _Number) else
                                _bad_item(i, path, key, k) for k, i in enumerate(its)], dtype=np.int64)
            users.append(np.full(len(row), u, dtype=np.int64))
            items.append(row)
            labels.append(np.full(len(row), label, dtype=np.int64))
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64)  # noqa: E731
    return cat(users), cat(items), cat(labels), files


def _bad_item(value: object, path: Path, key: str, k: int) -> int:
    kind = "a string" if isinstance(value, str) else "null" if value is None else "true/false" if isinstance(value, bool) \
        else "a list" if isinstance(value, list) else type(value).__name__
    raise DataError(path, f"user {key}: item {k + 1}", f"is {kind}, not an integer item id", "write [item id, ...] with plain integers")


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
    accepted: dict[str, int] | None = None,
) -> Dataset:
    """Validate raw interactions + features and build the Dataset. ``files`` maps label -> file for messages;
    ``accepted`` counts odd-but-accepted input (kept in ``Dataset.meta["accepted"]`` and logged)."""
    split_names = {0: "train", 1: "validation", 2: "test"}
    accepted = {} if accepted is None else accepted
    for arr, what in ((users, "user id"), (items, "item id")):
        if arr.size and arr.min() < 0:
            row = int(np.argmin(arr))
            raise DataError(files[int(labels[row])], what, f"negative value {arr[row]}", "ids must be contiguous integers starting at 0")
    for label, split in split_names.items():
        if not (labels == label).any():
            raise DataError(files[label], split, "split is empty", "every split needs interactions; re-split the data")
    # Everything below allocates by id: first bound the ids by the feature rows (items) and by the
    # number of distinct ids (users), so that one stray huge id is an error, not a terabyte allocation.
    n_rows = min(f.shape[0] for f in features.values()) if features else None
    if n_rows is not None and items.size and int(items.max()) >= n_rows:
        row = int(np.argmax(items))
        short = min(features, key=lambda m: features[m].shape[0])
        fname = "image_feat.npy" if short == "visual" else f"{short}_feat.npy"
        raise DataError(
            files[int(labels[row])], "item id",
            f"{items[row]} is out of range: {fname} has only {n_rows} rows",
            f"make {fname} hold one row per item id 0..{int(items.max())}, or fix the ids",
        )
    first_user_file = files[int(labels[int(np.argmax(users))])] if users.size else files[0]
    users, user_ids = renumber_users(users, first_user_file, accepted)
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    pair = users * n_items + items
    uniq, first, counts = np.unique(pair, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = int(first[np.argmax(counts > 1)])
        raise DataError(
            files[int(labels[dup])], "interactions",
            f"{int((counts - 1).sum())} duplicated (user, item) pairs, e.g. user {users[dup]} item {items[dup]}",
            "keep each (user, item) pair once, in one split",
        )
    for m, f in features.items():
        fname = "image_feat.npy" if m == "visual" else f"{m}_feat.npy"
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
    accepted = {k: v for k, v in (accepted or {}).items() if v}
    meta: dict[str, object] = {"accepted": accepted} if accepted else {}
    if user_ids is not None:
        meta["user_ids"] = user_ids
    if accepted:
        log.warning("%s: accepted odd input (see docs/data-validation.md): %s", name, accepted)
    mats = [interactions_to_csr(users[labels == k], items[labels == k], n_users, n_items) for k in range(3)]
    full = np.flatnonzero(np.diff(mats[0].indptr) >= n_items)
    if full.size:  # BPR draws a negative (an item the user has not trained on) for every training pair
        user = int(full[0]) if user_ids is None else int(user_ids[full[0]])
        raise DataError(files[0], f"user {user}", f"has every one of the {n_items} items in training "
                        f"({full.size} such user(s)): no negative item can be sampled",
                        "drop these users or move some of their interactions to validation/test")
    return Dataset(name=name, train=mats[0], valid=mats[1], test=mats[2], features=features,
                   item_categories=item_categories, source=source, meta=meta)


#: sparse user ids are renumbered; the largest may be at most this many times the distinct users plus
#: USER_ID_SLACK_MIN (a timestamp or a row number read as a user id is refused, not renumbered)
USER_ID_SLACK_FACTOR, USER_ID_SLACK_MIN = 1000, 1_000_000


def renumber_users(users: np.ndarray, path: Path, accepted: dict[str, int] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Contiguous user ids: ids with gaps (a filtered subset of a dataset) become 0..n-1 in id order and
    are counted in ``accepted["user_ids_renumbered"]`` (users whose id changed); returns the new ids and
    the original id of each new one (None when nothing changed). Absurd ids (far beyond the number of
    users) are refused."""
    if users.size == 0:
        return users, None
    uniq, inverse = np.unique(users, return_inverse=True)
    top = int(uniq[-1])
    if top + 1 == uniq.size:
        return users, None
    allowed = USER_ID_SLACK_FACTOR * int(uniq.size) + USER_ID_SLACK_MIN
    if top + 1 > allowed:
        raise DataError(path, "user id", f"the largest id is {top} but there are only {uniq.size:,} distinct users "
                        f"(sparse ids are renumbered up to {allowed:,})", "check that the user column holds user ids "
                        "(not timestamps or row numbers), or number users contiguously from 0")
    if accepted is not None:
        accepted["user_ids_renumbered"] = int((uniq != np.arange(uniq.size)).sum())
    return inverse.astype(users.dtype, copy=False).reshape(users.shape), uniq


CATEGORY_FIX = "write one integer category id (plain digits) per line, one line per item in id order"


def read_item_categories(folder: Path, counts: dict[str, int] | None = None) -> np.ndarray | None:
    """Optional ``item_categories`` (or ``item_categories.txt``): one integer category per item, in id order."""
    counts = {} if counts is None else counts
    for fname in ("item_categories", "item_categories.txt"):
        path = folder / fname
        if path.exists() or path.is_symlink():
            with open_regular(path, "category file", CATEGORY_FIX) as fh:
                check_line_lengths(fh, path, MAX_TABLE_LINE_BYTES, CATEGORY_FIX)
                raw = fh.read()
            try:
                lines = raw.decode("utf-8").split("\n")
            except UnicodeDecodeError as e:
                raise DataError(path, "contents", f"is not UTF-8 ({e.reason} at byte {e.start})", CATEGORY_FIX) from None
            while lines and not lines[-1].strip():  # a final newline (or trailing blank lines)
                lines.pop()
            try:
                cats, floats = parse_ids(pd.Series(lines, dtype=object))
            except IdParseError as e:
                raise DataError(path, f"line {e.index + 1}: category", f"{e.value[:40]!r} {e.problem}", CATEGORY_FIX) from None
            if floats:
                counts["ids_written_as_float"] = counts.get("ids_written_as_float", 0) + floats
            check_id_range(cats, path, "category", "number the categories contiguously from 0")
            return cats
    return None


def read_dataset(folder: str | Path, name: str) -> Dataset:
    """Read a dataset folder in either layout (detected), validated."""
    folder = Path(folder)
    layout = detect_layout(folder, name)
    features = read_features(folder)
    accepted: dict[str, int] = {}
    if layout == "mmrec":
        users, items, labels, path = read_mmrec(folder, name, accepted)
        files = {0: path, 1: path, 2: path}
    else:
        users, items, labels, files = read_lattice(folder, accepted)
    if users.size == 0:
        raise DataError(files[0], "interactions", "no interactions", DATA_HELP)
    return assemble(name, folder, users, items, labels, features, files, read_item_categories(folder, accepted),
                    source=f"{layout}:{folder}", accepted=accepted)
