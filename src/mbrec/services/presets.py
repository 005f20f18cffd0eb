"""Presets (conf/experiment/): the tags that say which runs a report reads (names in :class:`mbrec.record.Tag`)."""

from __future__ import annotations

import logging
from typing import Any

from mbrec.record import Tag

log = logging.getLogger(__name__)

def preset_tags(tags: dict[str, Any]) -> dict[str, str]:
    """The marker tags for a run whose ``mlflow.tags`` are ``tags`` (empty outside a preset)."""
    preset = tags.get(Tag.PRESET)
    return {Tag.preset_marker(str(preset)): "true"} if preset else {}


def join_preset(results: dict[str, Any], mlflow_cfg: Any) -> None:
    """A replayed run belongs to the preset that replays it: mark its stored MLflow run, so e.g. the
    ``ablation=full`` row of Table 3 (identical to Table 1's CKD runs) is found by ``report table3``."""
    tags = preset_tags(dict(mlflow_cfg.get("tags") or {}))
    run_id = results.get("mlflow_run_id")
    if not (tags and run_id and mlflow_cfg.get("enabled", True)):
        return
    try:
        from mbrec.services.tracking import client_for

        client = client_for(str(mlflow_cfg.tracking_uri))
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
    except Exception as err:  # noqa: BLE001 - the result is still valid; only the report's view is affected
        log.warning("could not mark replayed MLflow run %s with %s (%s)", run_id, tags, err)
