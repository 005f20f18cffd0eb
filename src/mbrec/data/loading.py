"""One function from the ``dataset`` config to a Dataset, and the message for a dataset not there yet."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from mbrec.data.dataset import Dataset
from mbrec.data.readers import read_dataset
from mbrec.data.synthetic import make_synthetic
from mbrec.errors import DataError

#: the file-name category of McAuley's 2014 Amazon files for each dataset name of conf/dataset/
AMAZON_CATEGORIES = {"baby": "Baby", "sports": "Sports_and_Outdoors", "clothing": "Clothing_Shoes_and_Jewelry",
                     "beauty": "Beauty"}


def load_dataset(cfg: Mapping[str, Any], data_dir: str | Path = "data") -> Dataset:
    """``cfg`` is the ``dataset`` config group: ``source: synthetic`` (with a ``synthetic`` block) or
    ``source: files`` (with ``name`` and an optional ``path``, default ``<data_dir>/<name>``)."""
    source = cfg.get("source", "files")
    if source == "synthetic":
        params = dict(cfg.get("synthetic") or {})
        return make_synthetic(name=cfg.get("name", "synthetic"), **params)
    if source == "files":
        folder = Path(cfg.get("path") or Path(data_dir) / cfg["name"])
        if not _has_layout(folder, cfg["name"]):
            raise missing_dataset(folder, cfg["name"], given_path=bool(cfg.get("path")))
        return read_dataset(folder, cfg["name"])
    raise ValueError(f"dataset.source={source!r}: use 'synthetic' or 'files'")


def _has_layout(folder: Path, name: str) -> bool:
    return folder.is_dir() and ((folder / f"{name}.inter").is_file() or any(folder.glob("*.inter"))
                                or (folder / "5-core" / "train.json").is_file())


def missing_dataset(folder: Path, name: str, given_path: bool = False) -> DataError:
    """The DataError for a dataset folder that is missing or holds neither layout: the folder, the two
    layouts mbrec reads, and the commands that make the folder (docs/data.md)."""
    shown = str(folder) if folder.is_absolute() else f"{folder} (under {Path.cwd()})"
    problem = "folder does not exist" if not folder.exists() else "holds neither layout mbrec reads"
    category = AMAZON_CATEGORIES.get(name, "<Category>")
    fix = "\n".join([
        f"put dataset '{name}' at {folder} in one of the two layouts mbrec reads:",
        f"    MMRec:        {folder}/{name}.inter, image_feat.npy, text_feat.npy",
        f"    CKD/LATTICE:  {folder}/5-core/train.json, val.json, test.json, image_feat.npy, text_feat.npy",
        "  from MMRec's release (Google Drive, linked in docs/data.md): copy its "
        f"'{name}' folder to {folder}",
        "  from the CKD/LATTICE data: use the folder as is, or convert it to the MMRec layout:",
        f"    python -m mbrec.data.prepare lattice path/to/lattice/data/{name} --out {folder}",
        "  from McAuley's 2014 Amazon files (reviews 5-core, metadata, image features):",
        f"    python -m mbrec.data.prepare amazon --reviews raw/reviews_{category}_5.json.gz "
        f"--meta raw/meta_{category}.json.gz --images raw/image_features_{category}.b --out {folder}",
        "  or read it from elsewhere: " + ("fix dataset.path" if given_path else
                                           f"dataset.path=/path/to/{name} or paths.data_dir=/path/to/data"),
        "  (where to download each: docs/data.md, 'Where to get the datasets')",
    ])
    return DataError(shown, f"dataset '{name}'", problem, fix)
