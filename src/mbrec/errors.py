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


def one_of(key: str, value: T, allowed: Iterable[Any]) -> T:
    """``value`` if it is one of ``allowed``, else a ConfigError naming ``key`` and the choices."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: use one of {', '.join(map(str, allowed))}")
    return value
