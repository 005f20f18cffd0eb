"""mbrec from Python (notebooks, scripts): :func:`compose`, :func:`train`, :func:`load_model`.

The config groups and keys are those of ``python -m mbrec`` (``python -m mbrec --help``), and so are the
places a run writes (one policy, :mod:`mbrec.defaults`): unless an option or an override says
otherwise, everything goes under :func:`home` (``$MBREC_HOME``, else the working directory). The
working directory is never changed.

* run outputs (``results.json``, ``mbrec.log``, ``.hydra/config.yaml``):
  ``<home>/outputs/<dataset>/<backbone>-<balancer>/<date_time>/`` (``output_dir=``);
* the cache (teachers, checkpoints, finished-run index): ``<home>/.cache/mbrec`` (``cache_dir=``, or
  ``$MBREC_CACHE``, or ``paths.cache_dir=...``);
* MLflow: ``sqlite:///<home>/mlflow.db``, artifacts in ``<home>/mlruns`` (``tracking_uri=``, or
  ``$MLFLOW_TRACKING_URI``, or ``mlflow.tracking_uri=...``);
* data are read from ``<working directory>/data/<name>`` as by the CLI (``data_dir=``,
  ``paths.data_dir=...`` or ``dataset.path=...``).

Open the runs with ``make ui`` from the same directory (or ``mlflow ui --backend-store-uri
sqlite:///<home>/mlflow.db``); :func:`paths` prints the places in use.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:  # torch and the models load on first use: ``import mbrec`` stays fast
    from mbrec.backbones import Backbone
    from mbrec.data import Dataset

log = logging.getLogger(__name__)


def home() -> Path:
    """Where :func:`train` (and ``python -m mbrec``) write by default: ``$MBREC_HOME``, else the working
    directory (absolute)."""
    from mbrec.defaults import home as home_dir

    return home_dir().resolve()


def paths(cache_dir: str | Path | None = None, tracking_uri: str | None = None,
          data_dir: str | Path | None = None) -> dict[str, str]:
    """The places :func:`train` uses with these options: ``outputs``, ``cache_dir``, ``tracking_uri``,
    ``data_dir`` (options first, then ``$MBREC_CACHE``/``$MLFLOW_TRACKING_URI``, then :func:`home`)."""
    root = home()
    cache = cache_dir or os.environ.get("MBREC_CACHE") or root / ".cache" / "mbrec"
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
    return {"outputs": str(root / "outputs"), "cache_dir": str(Path(cache).expanduser().resolve()),
            "tracking_uri": str(uri), "data_dir": str(Path(data_dir or "data").expanduser().resolve())}


def compose(*overrides: str, cache_dir: str | Path | None = None, tracking_uri: str | None = None,
            data_dir: str | Path | None = None) -> DictConfig:
    """The config ``python -m mbrec <overrides>`` would run, with :func:`paths` for the cache, the MLflow
    store and the data (an override such as ``paths.cache_dir=...`` wins over the defaults; an option
    wins over both). ConfigError/DataError and Hydra's errors are raised as such."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from mbrec.config import check_config, conf_dir, register_schemas

    register_schemas()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir()), job_name="mbrec"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    places = paths(cache_dir, tracking_uri, data_dir)
    given = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    for key, value, option in (("paths.cache_dir", places["cache_dir"], cache_dir),
                               ("mlflow.tracking_uri", places["tracking_uri"], tracking_uri),
                               ("paths.data_dir", places["data_dir"], data_dir)):
        if option is not None or key not in given:
            OmegaConf.update(cfg, key, value, merge=False)
    check_config(cfg)
    return cfg


def train(*overrides: str | DictConfig, output_dir: str | Path | None = None, cache_dir: str | Path | None = None,
          tracking_uri: str | None = None, data_dir: str | Path | None = None, verbose: bool = True) -> dict[str, Any]:
    """Train one configuration, as ``python -m mbrec <overrides>`` does, and return its ``results.json``
    (config, dataset, test metrics at the best validation epoch, history, ``mlflow_run_id``) plus
    ``output_dir``. ``overrides`` are Hydra overrides (``"balancer=ckd"``, ``"optimizer.lr=1e-3"``) or
    one config from :func:`compose`. ``verbose`` prints a line per validation and the test table.

    >>> results = mbrec.train("backbone=vbpr", "balancer=ckd", "scale=smoke")   # doctest: +SKIP
    >>> results["test"]["recall@20"]                                          # doctest: +SKIP
    """
    from mbrec.experiment import run
    from mbrec.progress import console

    if len(overrides) == 1 and isinstance(overrides[0], DictConfig):
        cfg, names = overrides[0].copy(), ()
        for key, value in (("paths.cache_dir", cache_dir), ("mlflow.tracking_uri", tracking_uri),
                           ("paths.data_dir", data_dir)):
            if value is not None:
                OmegaConf.update(cfg, key, str(value), merge=False)
    else:
        names = tuple(str(o) for o in overrides)
        cfg = compose(*names, cache_dir=cache_dir, tracking_uri=tracking_uri, data_dir=data_dir)
    out = Path(output_dir).expanduser().resolve() if output_dir else new_output_dir(cfg)
    _write_job_files(out, cfg, names)
    with _run_logging(out / "mbrec.log", verbose), console(), _stdout_if(verbose):
        run(cfg, out, overrides=names)
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return {**results, "output_dir": str(out)}


def new_output_dir(cfg: DictConfig) -> Path:
    """A fresh ``<home>/outputs/<dataset>/<backbone>-<balancer>/<date_time>[-N]`` (created)."""
    parent = home() / "outputs" / str(cfg.dataset.name) / f"{cfg.backbone.name}-{cfg.balancer.name}"
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    for n in range(1000):
        folder = parent / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent}: no free output folder for {stamp}")


def _write_job_files(out: Path, cfg: DictConfig, overrides: tuple[str, ...]) -> None:
    """``.hydra/config.yaml`` and ``.hydra/overrides.yaml``, as the CLI leaves them (logged to MLflow)."""
    from mbrec.utils import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / ".hydra" / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write_text(out / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides))))


@contextlib.contextmanager
def _run_logging(log_file: Path, verbose: bool) -> Iterator[None]:
    """The ``mbrec`` loggers at INFO into ``log_file`` (the run's log, logged to MLflow) and, if
    ``verbose`` and nothing else prints them, onto stdout; everything is restored afterwards."""
    from mbrec.progress import LOG_FORMAT

    logger = logging.getLogger("mbrec")
    file_handler = logging.FileHandler(log_file, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    added: list[logging.Handler] = [file_handler]
    printing = any(type(h) is logging.StreamHandler for h in logging.getLogger().handlers + logger.handlers)
    if verbose and not printing:
        stream = logging.StreamHandler(sys.stdout)
        stream.setFormatter(logging.Formatter("%(message)s"))
        added.append(stream)
    level = logger.level
    logger.setLevel(logging.INFO)
    for handler in added:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for handler in added:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(level)


@contextlib.contextmanager
def _stdout_if(verbose: bool) -> Iterator[None]:
    """Without ``verbose``, the printed test table goes nowhere (results are in the returned dict)."""
    if verbose:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """Environment variables set for the duration (restored after)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ------------------------------------------------------------------------------------ trained models
@dataclass
class TrainedModel:
    """A model logged by a run (:func:`load_run`): the backbone with its best weights, the dataset it was
    trained on (re-read from the run's config) and that config."""

    model: Backbone
    dataset: Dataset
    config: DictConfig
    run_id: str
    model_id: str

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Ranking metrics on ``split`` (and per modality), as results.json's ``test``."""
        from mbrec.training.evaluation import Evaluator

        device = next(self.model.parameters()).device
        train = self.config.train
        return Evaluator(self.dataset, train.topk, device, int(train.eval_batch_size)).evaluate(self.model, split)


def load_run(run_id: str, tracking_uri: str | None = None, data_dir: str | Path | None = None,
             device: str = "cpu") -> TrainedModel:
    """The model MLflow run ``run_id`` logged, rebuilt: the backbone from the run's config and its
    dataset (read again from ``data_dir``, default the run's ``paths.data_dir``; its content must match
    the run's fingerprint), with the logged weights. ``tracking_uri`` defaults as for :func:`train`."""
    import torch
    from mlflow.artifacts import download_artifacts

    from mbrec.backbones import build_backbone
    from mbrec.data import load_dataset
    from mbrec.errors import DataError
    from mbrec.services.tracking import MODEL_CONFIG, MODEL_INFO, MODEL_WEIGHTS, client_for, logged_model_of
    from mbrec.utils import resolve_device

    uri = tracking_uri or paths()["tracking_uri"]
    logged = logged_model_of(client_for(uri), run_id)
    with tempfile.TemporaryDirectory(prefix="mbrec-load-") as tmp, _env(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"):
        folder = Path(download_artifacts(artifact_uri=logged.artifact_location, dst_path=tmp, tracking_uri=uri))
        config = OmegaConf.create((folder / MODEL_CONFIG).read_text(encoding="utf-8"))
        info = json.loads((folder / MODEL_INFO).read_text(encoding="utf-8"))
        state = torch.load(folder / MODEL_WEIGHTS, map_location="cpu", weights_only=True)
    dataset = load_dataset(config.dataset, data_dir or config.paths.data_dir)
    if dataset.fingerprint != info["dataset"]["fingerprint"]:
        raise DataError(dataset.source or dataset.name, "content", f"differs from the data run {run_id} trained on "
                        f"(fingerprint {dataset.fingerprint[:16]}, expected {info['dataset']['fingerprint'][:16]})",
                        "point data_dir= at the dataset the run used")
    model = build_backbone(config.backbone, dataset)
    model.load_state_dict(state)
    model = model.to(resolve_device(device)).eval()
    return TrainedModel(model, dataset, config, run_id, logged.model_id)


def load_model(run_id: str, tracking_uri: str | None = None, data_dir: str | Path | None = None,
               device: str = "cpu") -> Backbone:
    """The trained backbone of MLflow run ``run_id`` (best validation epoch, eval mode); see :func:`load_run`,
    which also returns the dataset and config (and ``evaluate()``)."""
    return load_run(run_id, tracking_uri, data_dir, device).model
