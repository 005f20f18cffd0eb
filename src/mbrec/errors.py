"""Errors a user can act on: each names the file or key, the problem and the fix."""

from __future__ import annotations

import errno
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


#: errors of a place (folder, file, database) that cannot be written: read-only, full, not permitted
PLACE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}


def place_problem(err: BaseException, tracking_uri: str = "",
                  elsewhere: str = "hydra.run.dir, paths.cache_dir, MBREC_HOME, mlflow.tracking_uri") -> str | None:
    """One line for an error whose cause is a place that cannot be written (a read-only folder or
    database, a full disk): the place, the problem and the fix (``elsewhere``: the options that choose
    another place); None for any other error."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in PLACE_ERRNOS:
            where = e.filename or "a file"
            return (f"{where}: {e.strerror or e}. Fix: free space or give write permission there, or choose "
                    f"another place ({elsewhere})")
        text = str(e).lower()
        if type(e).__name__ == "OperationalError" and ("readonly" in text or "disk is full" in text
                                                       or "unable to open database" in text):
            return (f"{tracking_uri}: the MLflow store cannot be written ({str(e).splitlines()[0][:120]}). Fix: give "
                    "write permission to the database and its folder, free space, or set mlflow.tracking_uri elsewhere")
        e = e.__cause__ or e.__context__
    return None
