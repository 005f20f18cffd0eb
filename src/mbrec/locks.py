"""Locks that keep concurrent runs apart, and removal of the temporary files killed runs leave.

* One lock per run key (``run``) and per teacher key (``teacher``) under ``<cache_dir>/locks/``: a second
  process that wants the same key says so once and waits until the first is done (docs/safety.md), so two
  identical runs never share a checkpoint or an MLflow run and a teacher is trained once.
* An atomic write (mbrec.utils) goes through ``.<name>.<random>.tmp`` beside its target; a kill -9 leaves that
  file behind. Every such file in ``checkpoints/``, ``finished/``, ``teachers/<backbone>/`` and ``locks/``
  belongs to a key; :func:`remove_stale_tmp` removes it when nobody holds that key's lock, i.e. when the
  process that wrote it is gone.

The locks are ``flock`` locks (the ``filelock`` library): the kernel drops them when their process dies, so a
kill -9 never leaves a key locked. Their empty ``.lock`` files stay (removing them would race with waiters).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from mbrec.errors import ConfigError
from mbrec.utils import atomic_write_json

log = logging.getLogger(__name__)

#: the kinds of keys that have locks
KINDS = ("run", "teacher")
#: ``.<target name>.<anything>.tmp``: the temporary file of an atomic write of <target name>
_TMP = re.compile(r"^\.(?P<name>.+?\.(?:pt|json|owner))\..+\.tmp$")


def lock_path(cache_dir: str | Path, kind: str, key: str) -> Path:
    return Path(cache_dir) / "locks" / f"{kind}-{key}.lock"


def _owner_path(cache_dir: str | Path, kind: str, key: str) -> Path:
    return Path(cache_dir) / "locks" / f"{kind}-{key}.owner"


def _owner(cache_dir: str | Path, kind: str, key: str) -> str:
    """Who holds the lock, as the holder wrote it (best effort: it may be gone already)."""
    try:
        info = json.loads(_owner_path(cache_dir, kind, key).read_text())
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def file_lock(path: Path) -> FileLock:
    """A ``FileLock`` on ``path`` (its folder created); a symbolic link there is refused (ConfigError): a
    lock must never open, create or truncate whatever a link points to."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{path.parent}: cannot create the lock folder ({err.strerror or err}). Fix: give write "
                          "permission or free space there, or choose another place") from None
    if path.is_symlink():
        raise ConfigError(f"{path}: the lock file is a symbolic link (to {os.readlink(path)}); mbrec does not "
                          f"follow links for locks. Fix: remove it (rm {path}) if no mbrec process is running")
    return FileLock(path)


@contextmanager
def hold(cache_dir: str | Path, kind: str, key: str, what: str) -> Iterator[None]:
    """Hold the lock of ``kind``/``key`` while the block runs. If another process holds it, log one
    line naming ``what`` and that process, and wait for it. Once held, temporary files of this key left
    by killed processes are removed."""
    path = lock_path(cache_dir, kind, key)
    lock = file_lock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("%s is already being computed by %s; waiting for it to finish (lock file %s)",
                    what, _owner(cache_dir, kind, key), path)
        t0 = time.monotonic()
        lock.acquire()
        log.info("%s: the other process is done after %.0fs; continuing", what, time.monotonic() - t0)
    except OSError as err:  # after Timeout: filelock's Timeout is an OSError too
        raise ConfigError(f"{path}: cannot take the lock ({err.strerror or err}). Fix: give write permission or "
                          "free space there, or set paths.cache_dir elsewhere") from None
    owner = _owner_path(cache_dir, kind, key)
    try:
        remove_stale_tmp(cache_dir, held=(kind, key))
        atomic_write_json(owner, {"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def _tmp_owner(folder: str, name: str) -> tuple[str, str] | None:
    """(kind, key) of the lock that covers ``name`` in cache sub-folder ``folder``; None if unknown."""
    stem, _, ext = name.rpartition(".")
    if folder in ("checkpoints", "finished") and ext in ("pt", "json"):
        return "run", stem
    if folder == "teachers" and ext == "pt" and "-" in stem:
        return "teacher", stem.rsplit("-", 1)[1]  # <modality>-<key>.pt
    if folder == "locks" and ext == "owner" and "-" in stem:
        kind, key = stem.split("-", 1)
        return (kind, key) if kind in KINDS else None
    return None


#: the cache sub-folders whose files are written under a key's lock, and where their temporary files are
_FOLDERS = {"checkpoints": ".*.tmp", "finished": ".*.tmp", "locks": ".*.tmp", "teachers": "*/.*.tmp"}


def _tmp_files(cache_dir: Path) -> Iterator[tuple[Path, tuple[str, str]]]:
    """The temporary files of the cache's sub-folders; never through a symbolic link (a linked
    ``teachers/<backbone>`` would otherwise let the cleanup delete files in the link's target)."""
    for folder, pattern in _FOLDERS.items():
        if (cache_dir / folder).is_symlink():
            continue
        for tmp in (cache_dir / folder).glob(pattern):
            if tmp.is_symlink() or tmp.parent.is_symlink():
                continue
            match = _TMP.match(tmp.name)
            owner = _tmp_owner(folder, match["name"]) if match else None
            if owner is not None:
                yield tmp, owner


def remove_stale_tmp(cache_dir: str | Path, held: tuple[str, str] | None = None) -> list[Path]:
    """Remove the temporary files of atomic writes whose process is gone: those of key ``held`` (whose
    lock the caller holds) or, without ``held``, of every key whose lock nobody holds. Returns them."""
    removed = []
    for tmp, owner in _tmp_files(Path(cache_dir)):
        if held is not None:
            if owner == held:
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
            continue
        lock = FileLock(lock_path(cache_dir, *owner))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue  # its process is alive and may still rename it into place
        try:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
        finally:
            lock.release()
    if removed:
        log.info("removed %d temporary file(s) left by killed runs: %s", len(removed), ", ".join(map(str, removed)))
    return removed


def remove_tmp_of(target: str | Path) -> list[Path]:
    """Remove the temporary files of atomic writes of ``target`` (``.<name>.*.tmp`` beside it). Only
    for a caller that alone writes ``target`` (it holds the lock that covers it)."""
    target = Path(target)
    removed = [p for p in target.parent.glob(f".{_glob_escape(target.name)}.*.tmp")]
    for p in removed:
        p.unlink(missing_ok=True)
    if removed:
        log.info("removed %d temporary file(s) left by a killed process: %s", len(removed), ", ".join(map(str, removed)))
    return removed


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def process_owner() -> str:
    """``host:pid`` of this process (who holds a sweep's MLflow parent run)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def process_alive(owner: str | None) -> bool:
    """False only when ``owner`` (``host:pid``) names a process on this host that no longer exists
    (another host's process, or an unreadable owner, counts as alive). The sweeper plugin has its own
    ``is_dead`` for its trials: it imports nothing from mbrec."""
    if not owner or ":" not in owner:
        return True
    host, pid = owner.rsplit(":", 1)
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True
