"""Run ``python -m mbrec`` in child processes and kill them with SIGKILL at chosen points.

Children are forked from one forkserver that imported mbrec, torch, Hydra and MLflow once, so a child
starts in a fraction of a second; each runs the real command line (``mbrec.__main__.main``) with its
output in a log file. A fault is armed in the child before the command starts:

* ``{"after": s}``: SIGKILL after ``s`` seconds;
* ``{"epoch": n, "delay": s}``: SIGKILL ``s`` seconds after the ``n``-th training epoch (of any fit:
  teachers, student) began: an arbitrary point of training, validation, checkpointing or recording that
  does not depend on the machine's load the way a wall-clock delay does;
* ``{"write": n, "match": m, "frac": f}``: in the ``n``-th atomic write whose target path contains ``m``,
  cut the temporary file to a fraction ``f`` of its bytes and SIGKILL before the rename;
* ``{"store_sql": n}``: SIGKILL at the ``n``-th SQL statement of the MLflow store's creation (about 1700
  in all: tables, then the schema migrations);
* ``{"count": m}``: no kill; the number of atomic writes whose target contains ``m`` is written to
  ``<log>.count`` (and the number of training epochs to ``<log>.epochs``);
* ``{"pause": [[prefix, file, text], ...]}``: no kill; the first training epoch of a fit whose name starts
  with ``prefix`` waits until ``file`` contains ``text`` (orders concurrent runs without timing).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

PRELOAD = ["faultkit", "torch", "mbrec.__main__", "mbrec.experiment", "mbrec.services.store", "mlflow.tracking",
           "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.db.utils", "alembic.command",
           "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper", "optuna"]
_CTX: Any = None


def _context():
    global _CTX
    if _CTX is None:
        _CTX = multiprocessing.get_context("forkserver")
        _CTX.set_forkserver_preload(PRELOAD)
    return _CTX


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(fault: dict[str, Any], log: str) -> None:
    if "after" in fault:
        timer = threading.Timer(float(fault["after"]), _die)
        timer.daemon = True
        timer.start()
    if "store_sql" in fault:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        import mbrec.services.store as store

        create, seen = store._create, [0]

        def count(*args, **kwargs):
            seen[0] += 1
            if seen[0] == int(fault["store_sql"]):
                _die()

        def killing_create(*args, **kwargs):
            event.listen(Engine, "before_cursor_execute", count)
            return create(*args, **kwargs)

        store._create = killing_create
    if "write" in fault or "count" in fault:
        match = str(fault.get("match") or fault.get("count"))
        replace, seen = os.replace, [0]

        def counting_replace(src, dst, *args, **kwargs):
            if match in str(dst) and str(src).endswith(".tmp"):
                seen[0] += 1
                if "count" in fault:
                    Path(log + ".count").write_text(str(seen[0]))
                elif seen[0] == int(fault["write"]):
                    size = os.path.getsize(src)
                    os.truncate(src, int(size * float(fault["frac"])))
                    _die()
            return replace(src, dst, *args, **kwargs)

        os.replace = counting_replace


def _pause(pauses: list[list[str]]) -> None:
    from mbrec.training.trainer import Trainer

    train_epoch, pending = Trainer._train_epoch, [list(p) for p in pauses]

    def waiting_train_epoch(self, *args, **kwargs):
        for pause in [p for p in pending if self.desc.startswith(p[0])]:
            pending.remove(pause)
            deadline = time.monotonic() + 120
            while pause[2] not in (Path(pause[1]).read_text() if Path(pause[1]).exists() else ""):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{pause[1]} never said {pause[2]!r}")
                time.sleep(0.05)
        return train_epoch(self, *args, **kwargs)

    Trainer._train_epoch = waiting_train_epoch


def _epochs(fault: dict[str, Any], log: str) -> None:
    from mbrec.training.trainer import Trainer

    train_epoch, seen = Trainer._train_epoch, [0]

    def counting_train_epoch(self, *args, **kwargs):
        seen[0] += 1
        if "count" in fault:
            Path(log + ".epochs").write_text(str(seen[0]))
        elif seen[0] == int(fault["epoch"]):
            timer = threading.Timer(float(fault["delay"]), _die)
            timer.daemon = True
            timer.start()
        return train_epoch(self, *args, **kwargs)

    Trainer._train_epoch = counting_train_epoch


def _child(argv: list[str], log: str, fault: dict[str, Any]) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    import torch

    torch.set_num_threads(1)
    _arm(fault, log)
    if "pause" in fault:
        _pause(fault["pause"])
    if "epoch" in fault or "count" in fault:
        _epochs(fault, log)
    sys.argv = ["mbrec", *argv]
    from mbrec.__main__ import main

    main()


def _noop() -> None:
    pass


def warm() -> None:
    """Start the forkserver (it imports PRELOAD once) so that later timings measure runs, not imports."""
    proc = _context().Process(target=_noop)
    proc.start()
    proc.join()


def start(argv: list[str], log: str | Path, fault: dict[str, Any] | None = None):
    """Start ``python -m mbrec <argv>`` in a child; returns the Process."""
    proc = _context().Process(target=_child, args=(list(argv), str(log), dict(fault or {})))
    proc.start()
    return proc


def run(argv: list[str], log: str | Path, fault: dict[str, Any] | None = None, timeout: float = 300) -> int:
    """Run it to the end (or its kill); the exit code, -9 when killed."""
    proc = start(argv, log, fault)
    proc.join(timeout)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        raise TimeoutError(f"mbrec {' '.join(argv)} did not end in {timeout}s; log: {log}")
    return proc.exitcode


def leftovers(root: Path) -> list[Path]:
    """Temporary files of atomic writes (and SQLite journals of them) under ``root``."""
    return sorted(p for p in root.rglob(".*") if ".tmp" in p.name)


def running_runs(db: Path) -> list[str]:
    """Ids of MLflow runs still RUNNING in the store ``db``."""
    from mbrec.services.tracking import client_for

    client = client_for(f"sqlite:///{db}")
    exps = [e.experiment_id for e in client.search_experiments()]
    return [r.info.run_id for r in client.search_runs(exps, "attributes.status = 'RUNNING'")]
