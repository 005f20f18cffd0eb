"""Build any enoche/MMRec model by name on an mbrec ``Dataset``, for benchmarks that time the reference
beside mbrec in the same process setting. Nothing of MMRec is copied: its classes are imported from the
checkout the user gives (``--reference DIR``, DIR = the checkout's ``src/``), and MMRec's config and
dataloader are replaced by small stand-ins holding only what its models read (the ``overall.yaml``
values, the model's YAML with the first value of every grid, the interaction matrix, the features).
"""

from __future__ import annotations

import importlib
import re
import sys
import types
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import yaml


def _restore_dok_update() -> None:
    """scipy >= 1.13 removed ``dok_matrix._update``, which MMRec's adjacency builders call: give it back."""
    if not hasattr(sp.dok_matrix, "_update"):
        def _update(self, data):  # noqa: ANN001 - scipy's private signature
            for k, v in data.items():
                self[k] = v
        sp.dok_matrix._update = _update


class _Interactions:
    """What MMRec's models read from its dataset and dataloader objects (one object plays both)."""

    def __init__(self, train: sp.csr_matrix) -> None:
        self.train = train.tocsr()
        self.dataset = self

    def get_user_num(self) -> int:
        return self.train.shape[0]

    def get_item_num(self) -> int:
        return self.train.shape[1]

    def inter_matrix(self, form: str = "coo", value_field: Any = None) -> sp.spmatrix:
        m = sp.coo_matrix(self.train, dtype=np.float32)
        return m.tocsr() if form == "csr" else m


class _Config(dict):
    """MMRec's ``Config``: a missing key reads as None."""

    def __missing__(self, key: str) -> None:
        return None


class _Loader(yaml.SafeLoader):
    """YAML as MMRec's configurator reads it: ``1e-04`` is a float (YAML 1.1 would keep it a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)\.?[0-9_]*(?:[eE][-+]?[0-9]+)$|^[-+]?(?:[0-9][0-9_]*)\.[0-9_]*$"),
    list("-+0123456789."))


def reference_config(src: Path, name: str, data_dir: str, device: str = "cpu") -> dict[str, Any]:
    """MMRec's ``overall.yaml`` + ``model/<Name>.yaml`` (first value of each grid) + the data paths."""
    cfg = yaml.load((src / "configs" / "overall.yaml").read_text(), Loader=_Loader)  # noqa: S506 - a safe loader
    model_yaml = next(p for p in (src / "configs" / "model").glob("*.yaml") if p.stem.lower() == name.lower())
    model_cfg = yaml.load(model_yaml.read_text(), Loader=_Loader) or {}  # noqa: S506 - a safe loader
    grid = set(model_cfg.get("hyper_parameters") or [])
    for k, v in model_cfg.items():
        cfg[k] = v[0] if k in grid and isinstance(v, list) else v
    cfg.update({"device": torch.device(device), "data_path": data_dir + "/", "dataset": "bench", "model": model_yaml.stem,
                "vision_feature_file": "image_feat.npy", "text_feature_file": "text_feat.npy", "end2end": False,
                "is_multimodal_model": True})
    return cfg


def build_reference(src: str | Path, name: str, dataset: Any, device: str = "cpu", **overrides: Any) -> torch.nn.Module:
    """MMRec's model ``name`` (case-insensitive) on ``dataset`` (an mbrec Dataset with ``text`` and
    ``visual`` features), with its reference config; ``overrides`` replace config keys."""
    src = Path(src).resolve()
    if not (src / "models").is_dir():
        raise SystemExit(f"--reference {src}: no models/ folder; give an MMRec checkout's src/ directory")
    _restore_dok_update()
    _scatter_add_if_missing()
    # MMRec's `common` and `utils` are namespace packages, which any module of the same name elsewhere on
    # the path wins over (the benchmarks' common.py): import MMRec's with only its src/ holding those
    # names, then give the caller's modules and path back
    names = ("common", "utils")
    shadowed = {k: sys.modules.pop(k) for k in names if k in sys.modules}
    path = list(sys.path)
    sys.path[:] = [str(src)] + [p for p in path if not any((Path(p or ".") / f"{n}.py").exists() for n in names)]
    try:
        module = importlib.import_module(f"models.{name.lower()}")
    finally:
        sys.path[:] = path
        for k, v in shadowed.items():
            sys.modules[k] = v
    cls = next(v for k, v in vars(module).items() if k.lower() == name.lower() and isinstance(v, type))
    folder = tempfile.mkdtemp(prefix="mmrec-bench-")
    (Path(folder) / "bench").mkdir()
    np.save(Path(folder) / "bench" / "image_feat.npy", np.asarray(dataset.features["visual"]))
    np.save(Path(folder) / "bench" / "text_feat.npy", np.asarray(dataset.features["text"]))
    cfg = _Config({**reference_config(src, name, folder, device), **overrides})
    _cuda_is_identity_without_cuda()
    return cls(cfg, _Interactions(dataset.train)).to(device)


def _scatter_add_if_missing() -> None:
    """MMRec's SMORE imports ``torch_scatter`` for one 1-D ``scatter_add``; without the package, provide
    that function (``index_add_``, same values) so the reference runs."""
    try:
        importlib.import_module("torch_scatter")
    except ImportError:
        shim = types.ModuleType("torch_scatter")
        shim.scatter_add = lambda src, index, dim=0, dim_size=None: torch.zeros(  # type: ignore[attr-defined]
            dim_size if dim_size is not None else int(index.max()) + 1, dtype=src.dtype, device=src.device
        ).index_add_(0, index, src)
        sys.modules["torch_scatter"] = shim


def _cuda_is_identity_without_cuda() -> None:
    """Some MMRec models call ``.cuda()`` unconditionally (LATTICE's graphs); on a machine without CUDA
    make ``Tensor.cuda`` return the tensor itself, so the reference runs on the CPU it is timed on (values
    unchanged)."""
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]


def uses_negatives(src: str | Path, name: str) -> bool:
    """Whether the model's batches carry a sampled negative (MMRec's ``use_neg_sampling``)."""
    src = Path(src).resolve()
    model_yaml = next(p for p in (src / "configs" / "model").glob("*.yaml") if p.stem.lower() == name.lower())
    overall = yaml.safe_load((src / "configs" / "overall.yaml").read_text())
    return bool((yaml.safe_load(model_yaml.read_text()) or {}).get("use_neg_sampling", overall.get("use_neg_sampling", True)))
