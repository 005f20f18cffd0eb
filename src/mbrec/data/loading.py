"""One function from the ``dataset`` config to a Dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from mbrec.data.dataset import Dataset
from mbrec.data.readers import read_dataset
from mbrec.data.synthetic import make_synthetic


def load_dataset(cfg: Mapping[str, Any], data_dir: str | Path = "data") -> Dataset:
    """``cfg`` is the ``dataset`` config group: ``source: synthetic`` (with a ``synthetic`` block) or
    ``source: files`` (with ``name`` and an optional ``path``, default ``<data_dir>/<name>``)."""
    source = cfg.get("source", "files")
    if source == "synthetic":
        params = dict(cfg.get("synthetic") or {})
        return make_synthetic(name=cfg.get("name", "synthetic"), **params)
    if source == "files":
        folder = Path(cfg.get("path") or Path(data_dir) / cfg["name"])
        return read_dataset(folder, cfg["name"])
    raise ValueError(f"dataset.source={source!r}: use 'synthetic' or 'files'")
