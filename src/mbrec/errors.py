"""Errors a user can act on: each names the file, the field and the fix."""


class DataError(ValueError):
    """Bad or missing input data. The message says where, what, and how to fix it."""

    def __init__(self, path: object, field: str, problem: str, fix: str) -> None:
        self.path, self.field, self.problem, self.fix = str(path), field, problem, fix
        super().__init__(f"{path}: {field}: {problem}. Fix: {fix}")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key and the fix."""
