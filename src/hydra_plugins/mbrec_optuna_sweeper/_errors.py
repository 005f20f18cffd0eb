"""The sweeper's errors a user acts on. Hydra prints a ``CompactHydraException`` as its message alone
(one line, exit status 1) instead of a traceback; ``HYDRA_FULL_ERROR=1`` shows the traceback."""

from __future__ import annotations

from hydra.errors import CompactHydraException


class SweepError(CompactHydraException, ValueError):
    """A sweeper setting, search space or study storage that cannot work; the message names it and the fix."""


class SweepFailed(CompactHydraException, RuntimeError):
    """The sweep ran but has no result to give: too many trials failed, or no trial has a finite objective."""
