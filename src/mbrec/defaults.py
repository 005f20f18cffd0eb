"""Facts about a run that more than one part of mbrec needs, each stated once.

* which config keys do not change what a run computes (run keys, teacher keys, the sweeper's study
  fingerprint and the reports all ignore them);
* the base row every relative change is measured against, and which report reads which preset's runs;
* where everything a run writes goes — one policy for the CLI, the Python API, the make targets, the
  reports and the UI:

  ``$MBREC_HOME`` if set, else the directory the command runs in, holds ``outputs/`` (single runs),
  ``multirun/`` (sweeps), ``mlflow.db`` (+ ``mlruns/`` artifacts) and ``.cache/mbrec`` (teachers,
  checkpoints, finished-run index). ``$MBREC_CACHE`` and ``$MLFLOW_TRACKING_URI`` move the cache and the
  store on their own; config keys (``paths.*``, ``mlflow.tracking_uri``) and API options win over all.

The training defaults themselves live in :class:`mbrec.training.settings.TrainSettings`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

#: top-level config keys that do not change what a run computes
NON_SEMANTIC_KEYS = ("paths", "mlflow", "hydra", "device", "skip_finished", "threads")
#: ``train`` keys that do not change what a run computes
NON_SEMANTIC_TRAIN_KEYS = ("resume", "eval_batch_size")

#: the balancer of Table 1's base row: every other row's relative change is measured against it
BASE_ROW = "none"

#: ``python -m mbrec.report <report>`` -> the preset (``conf/experiment/<preset>.yaml``) whose runs it reads
REPORT_PRESET = {"table1": "table1", "table2": "table1", "table3": "table3", "figures": "pilot"}


def report_of_preset(preset: str) -> str | None:
    """The report a sweep of ``preset`` is summarised by (the first that reads its runs), or None."""
    return next((report for report, p in REPORT_PRESET.items() if p == preset), None)


def semantic(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config without the keys that do not change the computation."""
    out = {k: v for k, v in resolved.items() if k not in NON_SEMANTIC_KEYS}
    if isinstance(out.get("train"), Mapping):
        out["train"] = semantic_train(out["train"])
    return out


def semantic_train(train: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in train.items() if k not in NON_SEMANTIC_TRAIN_KEYS}


def non_semantic_dotted() -> list[str]:
    """:data:`NON_SEMANTIC_KEYS` and ``train.<key>`` of :data:`NON_SEMANTIC_TRAIN_KEYS` (the sweeper's
    ``fingerprint_ignore``)."""
    return [*NON_SEMANTIC_KEYS, *(f"train.{k}" for k in NON_SEMANTIC_TRAIN_KEYS)]


# ------------------------------------------------------------------------------------------ places
def home() -> Path:
    """``$MBREC_HOME``, else the working directory (relative: ``.``)."""
    return Path(os.environ.get("MBREC_HOME") or ".").expanduser()


def under_home(*parts: str) -> str:
    """``<home>/<parts>``, relative to the working directory when ``$MBREC_HOME`` is unset."""
    return str(home().joinpath(*parts)) if os.environ.get("MBREC_HOME") else str(Path(*parts))


def cache_dir() -> str:
    """``$MBREC_CACHE``, else ``<home>/.cache/mbrec``."""
    return os.environ.get("MBREC_CACHE") or under_home(".cache", "mbrec")


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else ``sqlite:///<home>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{under_home('mlflow.db')}"
