"""Presets (conf/experiment/): the tags that say which runs a report reads (names in :class:`mbrec.record.Tag`)."""

from __future__ import annotations

import logging
from pathlib import Path
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


#: the presets that run at each cell's tuned settings (conf/tuned/<dataset>_<backbone>_<balancer>.yaml)
TUNED_PRESETS = ("table1", "table2", "table3")


def tuned_file_exists(cell: str) -> bool:
    """Whether ``tuned/<cell>.yaml`` is in one of the running Hydra job's config sources (``conf/``, a
    ``hydra.searchpath`` folder, the packaged configs); True outside Hydra (nothing to check)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return True
    for source in HydraConfig.get().runtime.config_sources:
        scheme, path = str(source.schema), str(source.path)
        if scheme == "file" and (Path(path) / "tuned" / f"{cell}.yaml").is_file():
            return True
        if scheme == "pkg":
            import importlib.resources

            try:
                if importlib.resources.files(path).joinpath("tuned", f"{cell}.yaml").is_file():
                    return True
            except (ModuleNotFoundError, TypeError):
                continue
    return False


def check_tuned(choices: dict[str, Any], dataset: str, backbone: str, balancer: str) -> None:
    """A preset that runs at tuned settings stops (one-line ConfigError naming the command that tunes
    them) when the cell has no tuned file, instead of silently training at the defaults."""
    from mbrec.errors import ConfigError

    preset = choices.get("experiment")
    cell = f"{dataset}_{backbone}_{balancer}"
    if preset not in TUNED_PRESETS or tuned_file_exists(cell):
        return
    raise ConfigError(
        f"experiment={preset} runs at tuned settings, but there is no tuned/{cell}.yaml (conf/tuned/ or the "
        f"search path): tune them first with `python -m mbrec.sweep table1 --dataset {dataset} --backbone {backbone}` "
        f"(after `make table1-smoke` add hydra.searchpath=[file://multirun/table1/synthetic/conf])")
