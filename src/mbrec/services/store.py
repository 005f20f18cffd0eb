"""The MLflow store: a local SQLite database made whole or not at all, checked before use, and runs
of killed processes closed.

* :func:`ensure_store` (called by :func:`mbrec.services.tracking.client_for`, once per process and store):
  a missing database is created under a file lock beside it, as a temporary database that MLflow
  initialises and that is then renamed into place, so a kill never leaves a half-made store and two
  first runs never initialise it twice. Its default experiment keeps artifacts beside the database.
  An existing database is checked (SQLite, a complete schema of this MLflow's version); a broken one is a
  :class:`~mbrec.errors.StoreError` naming the file and the fix.
* :func:`end_stale_runs`: RUNNING runs of a killed attempt at the same work are marked KILLED.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

from mbrec.errors import StoreError
from mbrec.locks import file_lock, process_alive, remove_tmp_of
from mbrec.record import STAGE_SWEEP, Tag

log = logging.getLogger(__name__)

_READY: set[Path] = set()


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///<path>`` tracking URI; None for other stores and in-memory."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    rest = tracking_uri[len(prefix):].split("?", 1)[0]
    return None if rest in ("", ":memory:") else Path(rest)


def ensure_store(tracking_uri: str) -> None:
    """Create the SQLite store of ``tracking_uri`` if missing (locked, atomic) and check it; a no-op for
    other stores. Raises StoreError (one line: the file, the problem, the fix) for a broken store."""
    db = sqlite_file(tracking_uri)
    if db is None or db.resolve() in _READY:
        return
    if not db.exists():
        with file_lock(db.parent / f".{db.name}.lock"):
            if not db.exists():
                _create(db, tracking_uri)
    problem = store_problem(db)
    if problem:
        raise StoreError(
            f"{db}: this MLflow store cannot be used ({problem}). Fix: move it aside (mv {db} {db}.broken) and "
            f"run again to create a new one; if it holds runs you need and an older MLflow wrote it, back it up "
            f"and run: mlflow db upgrade sqlite:///{db.resolve()}")
    _READY.add(db.resolve())


def artifact_location(tracking_uri: str) -> str | None:
    """For a local SQLite store, keep artifacts beside the database (``<db dir>/mlruns``) instead of
    MLflow's default ``./mlruns`` under whatever directory the run was started from."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return (Path(tracking_uri[len(prefix):]).resolve().parent / "mlruns").as_uri()


def _create(db: Path, tracking_uri: str) -> None:
    """Initialise a temporary database and rename it to ``db`` (the caller holds the store's lock)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    remove_tmp_of(db)  # a creation killed earlier, and its journal
    for journal in db.parent.glob(f".{db.name}.*.tmp-journal"):
        journal.unlink(missing_ok=True)
    tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    uri = f"sqlite:///{tmp.resolve()}"
    log.info("MLflow: creating the store %s (once; takes a few seconds)", db)
    try:
        store = SqlAlchemyStore(uri, artifact_location(tracking_uri))
        store.engine.dispose()
        getattr(SqlAlchemyStore, "_engine_map", {}).pop(uri, None)  # MLflow caches engines per URI
        os.replace(tmp, db)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _head_revision() -> str | None:
    """The schema version this MLflow writes (None if MLflow no longer exposes it)."""
    try:
        from mlflow.store.db.utils import _get_latest_schema_revision

        return str(_get_latest_schema_revision())
    except Exception:  # noqa: BLE001 - then only completeness is checked
        return None


def store_problem(db: Path) -> str | None:
    """Why the SQLite file ``db`` is not a complete MLflow store of this MLflow's version; None if it is."""
    try:
        with open(db, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                return "not an SQLite database"
        # read-write: SQLite rolls back the journal of a writer killed mid-transaction when it opens the file
        con = sqlite3.connect(db, timeout=60)
    except (OSError, sqlite3.Error) as err:
        return f"cannot open it: {err}"
    try:
        rows = con.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error as err:
        if "no such table" not in str(err):
            return f"cannot read it: {err}"
        rows = []
    finally:
        con.close()
    if len(rows) != 1:
        return "it has no schema version: its creation was interrupted"
    head = _head_revision()
    if head is not None and rows[0][0] != head:
        return (f"schema version {rows[0][0]}, this MLflow needs {head}: another MLflow version wrote it, "
                "or its creation was interrupted")
    return None


def end_stale_runs(client: Any, experiment_id: str, tag: str, value: str, keep: str | None = None,
                   cache_dir: str | None = None) -> list[str]:
    """Mark KILLED every RUNNING run tagged ``tag`` = ``value`` other than ``keep``, and the RUNNING
    child runs of those and of ``keep``. Call only while holding the lock of that work (mbrec.locks):
    no live process is then running it. With ``cache_dir``, runs tagged with another cache (another lock
    domain) are left alone. Returns the ids marked."""
    running = "attributes.status = 'RUNNING'"
    stale = [r for r in client.search_runs([experiment_id], f"tags.`{tag}` = '{value}' and {running}")
             if r.info.run_id != keep and (cache_dir is None or r.data.tags.get(Tag.CACHE_DIR, cache_dir) == cache_dir)]
    parents = [r.info.run_id for r in stale] + ([keep] if keep else [])
    children = [c for p in parents
                for c in client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{p}' and {running}")]
    ended = []
    for run in stale + children:
        client.set_terminated(run.info.run_id, status="KILLED")
        ended.append(run.info.run_id)
    if ended:
        log.info("MLflow: marked %d run(s) of a killed earlier attempt KILLED: %s", len(ended), ", ".join(ended))
    return ended


def end_stale_parents(client: Any, experiment_id: str, keep: str | None = None) -> list[str]:
    """Mark KILLED every RUNNING sweep parent run (:data:`STAGE_SWEEP`) of the experiment whose sweep
    process (:attr:`Tag.SWEEP_OWNER`) is gone from this host, other than ``keep``: a killed sweep never
    leaves its parent RUNNING past the next sweep's start. Returns the ids marked."""
    running = "attributes.status = 'RUNNING'"
    ended = []
    for run in client.search_runs([experiment_id], f"tags.`{Tag.STAGE}` = '{STAGE_SWEEP}' and {running}"):
        owner = run.data.tags.get(Tag.SWEEP_OWNER)
        if run.info.run_id != keep and owner and not process_alive(owner):
            client.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
    if ended:
        log.info("MLflow: marked %d sweep parent run(s) of killed sweeps KILLED: %s", len(ended), ", ".join(ended))
    return ended
