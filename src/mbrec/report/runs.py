"""Finished MLflow runs as one table row per run, with what a report needs to keep runs apart and to
state where its numbers come from: the data (fingerprint, size), the scale, the settings other than
the seed, the tuning budget and the code version."""

from __future__ import annotations

import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from mbrec.record import STAGE_STUDENT, Tag
from mbrec.report.ckd_rows import variant_label

#: settings a row ignores beside those that never change a run (``mbrec.defaults.NON_SEMANTIC_KEYS`` and
#: ``NON_SEMANTIC_TRAIN_KEYS``): the seed is what a row averages over; retraining a cached teacher
#: gives the same teacher
IGNORED_PARAMS = ("seed", "balancer.teachers.retrain")
#: run tags read when present (the Table 1 driver's budget, the scale choice, the data size)
BUDGET_TAGS = {"trials": Tag.BUDGET_TRIALS, "tune_epochs": Tag.BUDGET_EPOCHS, "search": Tag.BUDGET_SEARCH,
               "tuning": Tag.BUDGET_TUNING, "base_tuning": Tag.BUDGET_BASE}
DATA_TAGS = {"users": Tag.DATA_USERS, "items": Tag.DATA_ITEMS, "interactions": Tag.DATA_INTERACTIONS}
#: columns a run table has beside its metrics (defaults for tables built by hand, e.g. in tests)
DEFAULTS: dict[str, Any] = {
    "fingerprint": "", "scale": "default", "config": (), "commit": "", "dirty": "", "trials": "", "tune_epochs": "",
    "search": "", "tuning": "", "base_tuning": "", "users": "", "items": "", "interactions": "", "max_epochs": "",
    "patience": "", "eval_every": "", "device": "", "max_epochs_hit": "",
}


def semantic_config(params: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """Every setting of a run that can change its numbers, except the seed: a row's identity."""
    from mbrec.defaults import NON_SEMANTIC_KEYS, NON_SEMANTIC_TRAIN_KEYS

    ignored = set(IGNORED_PARAMS) | {f"train.{k}" for k in NON_SEMANTIC_TRAIN_KEYS}
    return tuple(sorted((k, v) for k, v in params.items()
                        if k.split(".", 1)[0] not in NON_SEMANTIC_KEYS and k not in ignored))


def _conf_dir() -> Path | None:
    """The configs the runs were composed from: the repository's ``conf/`` or the wheel's ``mbrec/conf``."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[3] / "conf", here.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    return None


def _flat(obj: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flat(val, f"{prefix}{key}.").items()}
    return {prefix[:-1]: str(obj)}


@lru_cache(maxsize=1)
def scale_presets() -> dict[str, dict[str, str]]:
    """``conf/scale/<name>.yaml`` as flat dotted settings (they are ``@package _global_``)."""
    import yaml

    conf = _conf_dir()
    if conf is None:
        return {}
    return {p.stem: _flat(yaml.safe_load(p.read_text()) or {}) for p in sorted((conf / "scale").glob("*.yaml"))}


def infer_scale(params: dict[str, str]) -> str:
    """The scale of a run without the ``mbrec.scale`` tag: the first ``conf/scale`` option whose every
    setting the run's params carry, else ``default``."""
    for name, settings in scale_presets().items():
        if settings and all(params.get(k) == v for k, v in settings.items()):
            return name
    return "default"


def _row(run) -> dict[str, Any]:
    tags, params = run.data.tags, run.data.params
    return {
        "dataset": tags.get(Tag.DATASET), "backbone": tags.get(Tag.BACKBONE),
        "balancer": tags.get(Tag.BALANCER), "seed": int(tags.get(Tag.SEED, params.get("seed", -1))),
        "run_id": run.info.run_id, "variant": variant_label(tags.get(Tag.BALANCER), params),
        "fingerprint": tags.get(Tag.DATA_FINGERPRINT, ""),
        "scale": tags.get(Tag.SCALE) or infer_scale(params),
        "config": semantic_config(params),
        "commit": tags.get(Tag.GIT_COMMIT, ""), "dirty": tags.get(Tag.GIT_DIRTY, ""),
        **{col: tags.get(tag, "") for col, tag in BUDGET_TAGS.items()},
        **{col: tags.get(tag, "") for col, tag in DATA_TAGS.items()},
        "max_epochs": params.get("train.max_epochs", ""), "patience": params.get("train.patience", ""),
        "eval_every": params.get("train.eval_every", ""),
        "device": tags.get(Tag.DEVICE, ""), "max_epochs_hit": tags.get(Tag.MAX_EPOCHS_HIT, ""),
        **run.data.metrics,
    }


def _data_size_from_artifact(client, run_id: str) -> dict[str, str]:
    """users / items / interactions from the run's ``results.json`` artifact (empty if it has none)."""
    quiet = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # no progress bar in the report's output
    saved = {k: os.environ.get(k) for k in quiet}
    os.environ.update(quiet)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            summary = json.loads(Path(client.download_artifacts(run_id, "results.json", tmp)).read_text())["dataset"]
    except Exception:  # noqa: BLE001 - no artifact (MLflow off, deleted store): the size shows as "–"
        return {}
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    total = sum(int(summary.get(f"{s}_interactions", 0)) for s in ("train", "valid", "test"))
    return {"users": str(summary["users"]), "items": str(summary["items"]), "interactions": str(total)}


def _fill_data_sizes(client, runs: pd.DataFrame, params: dict[str, dict[str, str]]) -> pd.DataFrame:
    """Data size per (dataset, fingerprint): the ``mbrec.data.*`` tags, else one run's results.json, else
    (synthetic data) the generator's user and item counts from the params."""
    for _, group in runs.groupby(["dataset", "fingerprint"], dropna=False):
        if (group["users"] != "").all():
            continue
        size: dict[str, str] = {}
        for run_id in group["run_id"]:
            if size := _data_size_from_artifact(client, run_id):
                break
        if not size:
            p = params[group["run_id"].iloc[0]]
            size = {"users": p.get("dataset.synthetic.n_users", ""), "items": p.get("dataset.synthetic.n_items", "")}
        for col, value in size.items():
            runs.loc[group.index[group[col] == ""], col] = value
    return runs


def load_runs(tracking_uri: str, filter_string: str | Iterable[str]) -> pd.DataFrame:
    """Finished student runs matching ``filter_string`` (all experiments; several filters = their union)
    as one row per run, newest first."""
    from mbrec.services.tracking import client_for

    client = client_for(tracking_uri)  # a missing store is created whole (mbrec.services.store), a broken one named
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    filt = f"tags.`{Tag.STAGE}` = '{STAGE_STUDENT}' and attributes.status = 'FINISHED'"
    found: dict[str, Any] = {}
    for extra in [filter_string] if isinstance(filter_string, str) else filter_string:
        for r in client.search_runs(exp_ids, f"{filt} and {extra}" if extra else filt, max_results=50000,
                                    order_by=["attributes.start_time DESC"]):
            found.setdefault(r.info.run_id, r)
    runs = sorted(found.values(), key=lambda r: -r.info.start_time)
    table = pd.DataFrame([_row(r) for r in runs])
    if table.empty:
        return table
    return _fill_data_sizes(client, table, {r.info.run_id: r.data.params for r in runs})


def with_defaults(runs: pd.DataFrame) -> pd.DataFrame:
    """The run table with every provenance column (defaults where a hand-built table lacks one)."""
    runs = runs.copy()
    for col, default in DEFAULTS.items():
        if col not in runs:
            runs[col] = [default] * len(runs)
    runs["fingerprint"] = runs["fingerprint"].fillna("")
    return runs
