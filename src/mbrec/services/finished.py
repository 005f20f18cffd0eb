"""Idempotent trials: an index of finished runs keyed by ``mbrec.experiment.run_key``.

A sweep re-run asks the same trials again; a trial whose exact resolved config (minus the keys that do
not change the computation, ``mbrec.defaults.NON_SEMANTIC_KEYS``) already finished returns its stored
``results.json`` at once instead of training.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from mbrec.record import Results, is_results
from mbrec.utils import atomic_write_json

log = logging.getLogger(__name__)


def index_path(cache_dir: str | Path, key: str) -> Path:
    """Where the finished result of run ``key`` is stored."""
    return Path(cache_dir) / "finished" / f"{key}.json"


def lookup(cache_dir: str | Path, key: str) -> dict[str, Any] | None:
    """The stored results of a finished run with this key, or None (also when the file is unreadable)."""
    path = index_path(cache_dir, key)
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        log.warning("ignoring unreadable finished-run index %s (%s); the run is recomputed", path, err)
        return None
    problem = unusable(results)
    if problem:
        log.warning("ignoring finished-run index %s (%s); the run is recomputed", path, problem)
        return None
    return results


def unusable(results: Any) -> str | None:
    """Why a finished-run index entry cannot be replayed (None if it can): not a results.json, no
    ``metric`` name, or a ``best_valid_value`` that is not a finite number."""
    if not isinstance(results, dict):
        return "not a results.json"
    value = results.get("best_valid_value")
    if not isinstance(results.get("metric"), str) or not results.get("metric"):
        return "no metric name"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"best_valid_value {str(value)[:40]!r} is not a finite number"
    return None if is_results(results) else "not a results.json"


def record(cache_dir: str | Path, key: str, results: dict[str, Any]) -> None:
    """Remember a finished run (atomic write)."""
    atomic_write_json(index_path(cache_dir, key), results)


def replay(cache_dir: str | Path, key: str, output_dir: str | Path) -> float | None:
    """If run ``key`` already finished: copy its results.json to ``output_dir``, say so, and return
    its objective (best validation metric); otherwise None."""
    stored = lookup(cache_dir, key)
    if stored is None:
        return None
    results = Results.from_json(stored)
    results.replayed_from = str(index_path(cache_dir, key))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results.to_json())
    msg = (f"already finished (run key {key[:12]}): returning the stored result "
           f"{results.metric} = {results.best_valid_value:.4f} without training")
    log.info(msg)
    return float(results.best_valid_value)
