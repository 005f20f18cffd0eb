"""Counting host-device synchronisations: what the sync-free training steps are checked with.

On CUDA, torch's sync debug mode warns at every synchronising call and :class:`SyncCount` counts the
warnings (the real number). On CPU nothing waits, so it counts the proxy instead: Python reads of
tensor values (:data:`READS`), each of which would be a sync on a GPU. Used by the tests (every
backbone × balancer: the count per epoch must not grow with the steps) and by ``make bench``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

#: tensor methods that read values back to Python: on a GPU each one waits for the device
READS = ("item", "__float__", "__int__", "__bool__", "tolist", "numpy", "cpu")


class SyncCount:
    """``with SyncCount(device) as syncs: ...`` then ``syncs.count``; ``syncs.how`` says what was counted."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.count = 0
        self.how = "CUDA sync debug mode" if self.device.type == "cuda" else "proxy: Python reads of tensors"
        self._undo: list[tuple[str, Any]] = []
        self._recorder: Any = None
        self._records: list[warnings.WarningMessage] = []

    def __enter__(self) -> SyncCount:
        if self.device.type == "cuda":
            self._recorder = warnings.catch_warnings(record=True)
            self._records = self._recorder.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            return self
        for name in READS:
            original = getattr(torch.Tensor, name)

            def counted(tensor: torch.Tensor, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
                self.count += 1
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, counted)
            self._undo.append((name, original))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._recorder is not None:
            torch.cuda.set_sync_debug_mode("default")
            self.count = sum("synchroniz" in str(w.message) for w in self._records)
            self._recorder.__exit__(*exc)
            self._recorder = None
        for name, original in reversed(self._undo):
            setattr(torch.Tensor, name, original)
        self._undo.clear()
