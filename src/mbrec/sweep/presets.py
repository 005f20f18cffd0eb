"""Presets (conf/experiment/): the tags that say which runs a report reads."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: the ``mlflow.tags`` key a preset (conf/experiment/) sets; reports select runs by it
PRESET_TAG = "mbrec_experiment"


def preset_marker(preset: str) -> str:
    """The tag ``mbrec.preset.<name>`` (value ``true``) every run of a preset carries. Unlike the single
    ``mbrec_experiment`` value, a run can carry several: a replayed run joins the replaying preset too."""
    return f"mbrec.preset.{preset}"


def preset_tags(tags: dict[str, Any]) -> dict[str, str]:
    """The marker tags for a run whose ``mlflow.tags`` are ``tags`` (empty outside a preset)."""
    preset = tags.get(PRESET_TAG)
    return {preset_marker(str(preset)): "true"} if preset else {}


def join_preset(results: dict[str, Any], mlflow_cfg: Any) -> None:
    """A replayed run belongs to the preset that replays it: mark its stored MLflow run, so e.g. the
    ``ablation=full`` row of Table 3 (identical to Table 1's CKD runs) is found by ``report table3``."""
    tags = preset_tags(dict(mlflow_cfg.get("tags") or {}))
    run_id = results.get("mlflow_run_id")
    if not (tags and run_id and mlflow_cfg.get("enabled", True)):
        return
    try:
        from mbrec.tracking import client_for

        client = client_for(str(mlflow_cfg.tracking_uri))
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
    except Exception as err:  # noqa: BLE001 - the result is still valid; only the report's view is affected
        log.warning("could not mark replayed MLflow run %s with %s (%s)", run_id, tags, err)
