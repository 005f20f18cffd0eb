"""mbrec: modality-balanced multimedia recommendation (CKD, GB, OGM) on eight backbones.

From Python: ``mbrec.train(*overrides) -> dict`` (one run, its results.json), ``mbrec.compose(*overrides)``
(the config a run would use), ``mbrec.load_model(run_id)`` / ``mbrec.load_run(run_id)`` (a trained model
back from MLflow), ``mbrec.paths()`` (where runs, cache and MLflow go). See ``mbrec.api``.
"""

import os as _os

# Before anything imports torch (OpenMP reads it once, when the library loads): waiting OpenMP workers
# sleep instead of spinning. Spinning workers make epochs 1.7-3.4x slower as soon as another process
# wants a core (a busy laptop, CI; more on a more loaded machine); see mbrec.runtime and docs/performance.md.
# A value the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

__all__ = ["TrainedModel", "compose", "home", "load_model", "load_run", "paths", "train"]


def __getattr__(name: str):
    """The API lives in ``mbrec.api``, imported on first use (it pulls in Hydra, torch and MLflow)."""
    if name in __all__:
        from mbrec import api

        return getattr(api, name)
    raise AttributeError(f"module 'mbrec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
