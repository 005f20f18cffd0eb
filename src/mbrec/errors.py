"""Errors a user can act on: each names the file or key, the problem and the fix."""

from __future__ import annotations

from typing import Any, Iterable, TypeVar

T = TypeVar("T")


class DataError(ValueError):
    """Bad or missing input data. The message says where, what, and how to fix it."""

    def __init__(self, path: object, field: str, problem: str, fix: str) -> None:
        self.path, self.field, self.problem, self.fix = str(path), field, problem, fix
        super().__init__(f"{path}: {field}: {problem}. Fix: {fix}")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key and the fix."""


class StoreError(ConfigError):
    """The MLflow store that ``mlflow.tracking_uri`` names cannot be used; the message names the file and the fix."""


class DivergedError(FloatingPointError):
    """Training diverged (docs/safety.md, "Divergence"): the run stops as failed. The message names the
    run, the epoch, the rule that fired and the fix (``optimizer.lr``). In a study the trial is recorded as
    failed and the study goes on."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a fit, with where it happened: ``python -m mbrec`` prints the one line
    ``interrupted at epoch N of <fit>; run the same command to resume`` and the MLflow runs end KILLED."""

    def __init__(self, fit: str = "", epoch: int | None = None) -> None:
        self.fit, self.epoch = fit, epoch
        where = f" at epoch {epoch}" if epoch is not None else ""
        super().__init__(f"interrupted{where}{f' of {fit}' if fit else ''}; run the same command to resume")


def one_of(key: str, value: T, allowed: Iterable[Any]) -> T:
    """``value`` if it is one of ``allowed``, else a ConfigError naming ``key`` and the choices."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: use one of {', '.join(map(str, allowed))}")
    return value
