"""Checksummed tensor files: the format of every cached or checkpointed file (teachers, checkpoints).

A file is one header line, ``MBREC-TENSORS 1 sha256=<64 hex digits>``, followed by the bytes that
``torch.save`` wrote. :func:`load` checks that the file is a regular file, that the header is there
and that the payload's SHA-256 matches it, and only then reads the payload with
``torch.load(weights_only=True)``: tensors and plain containers (dict, list, tuple, str, int, float,
bool, None) come back, anything else is refused without running it. :func:`save` writes atomically
(temporary file + rename) and refuses, before writing, any value that such a load would refuse.

The checksum catches damage (a truncated copy, a flipped bit, a file written by an older mbrec); it
is not a signature: whoever can write the cache can also write a well-formed file with other weights.
What ``weights_only=True`` guarantees is that no file, well-formed or not, runs code. docs/safety.md.
"""

from __future__ import annotations

import copy
import hashlib
import io
import stat
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbrec.utils import atomic_write_bytes

MAGIC = b"MBREC-TENSORS 1 sha256="
_HEADER = len(MAGIC) + 64 + 1  # magic, hex digest, newline
_SCALARS = (str, int, float, bool, type(None))
_TORCH = (torch.Tensor, torch.Size, torch.dtype, torch.device)


class UnusableFile(Exception):
    """A cache file that must not be used. The message is one line saying why."""


def plain(obj: Any, where: str = "") -> Any:
    """``obj`` with numpy scalars as Python scalars (exact; containers are copied only where one
    changed). A TypeError naming the entry for any value ``torch.load(weights_only=True)`` would refuse,
    e.g. a dataclass (store ``dataclasses.asdict`` of it) or a numpy array (store a tensor)."""
    if isinstance(obj, _TORCH) or type(obj) in _SCALARS:
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        for k in obj:
            if type(k) not in _SCALARS:
                raise TypeError(f"cache entry{where}: key {k!r} is not a string or a number")
        items = {k: plain(v, f"{where}.{k}") for k, v in obj.items()}
        if all(items[k] is obj[k] for k in obj):
            return obj
        out = copy.copy(obj)  # keeps the type (OrderedDict) and a state_dict's _metadata
        out.update(items)
        return out
    if type(obj) in (list, tuple):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return obj if all(a is b for a, b in zip(items, obj)) else type(obj)(items)
    raise TypeError(f"cache entry{where or ' (root)'}: {type(obj).__name__} is not a tensor or a plain "
                    "container; store tensors, numbers, strings, lists and dicts only")


def save(obj: Any, path: str | Path) -> None:
    """Write ``obj`` (tensors and plain containers) with its checksum header, atomically."""
    buffer = io.BytesIO()
    torch.save(plain(obj), buffer)
    payload = buffer.getvalue()
    atomic_write_bytes(path, MAGIC + hashlib.sha256(payload).hexdigest().encode("ascii") + b"\n" + payload)


def load(path: str | Path, map_location: Any = None) -> Any:
    """The object :func:`save` wrote to ``path``; :class:`UnusableFile` (one line, why) if the file is
    missing, not a regular file, has no valid header, fails its checksum or holds anything but tensors
    and plain containers. Nothing in the file is ever executed."""
    path = Path(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise UnusableFile("not a regular file")
        data = path.read_bytes()
    except OSError as err:
        raise UnusableFile(f"cannot read it ({err.strerror or err})") from None
    if len(data) < _HEADER or not data.startswith(MAGIC) or data[_HEADER - 1 : _HEADER] != b"\n":
        raise UnusableFile("no mbrec checksum header (not written by this mbrec version, or truncated)")
    payload = memoryview(data)[_HEADER:]
    if hashlib.sha256(payload).hexdigest().encode("ascii") != data[len(MAGIC) : _HEADER - 1]:
        raise UnusableFile("checksum mismatch (the file was damaged or modified after it was written)")
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure means the same: do not use the file
        if "weights only" in str(err).lower():
            raise UnusableFile("refused by torch.load(weights_only=True): it holds Python objects other than "
                               "tensors and plain containers, which could run code") from None
        raise UnusableFile(f"unreadable payload ({type(err).__name__})") from None
