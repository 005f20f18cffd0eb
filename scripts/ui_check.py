"""Look at the MLflow UI in a real browser: ``make ui-check`` (not part of ``make test``).

Trains a few tiny runs into a fresh store (or, with ``--tracking-uri``, uses an existing one), starts
``mlflow ui`` on it, opens the runs list (model-training layout, mbrec's saved view), one run and its
logged model in headless Chromium, saves a screenshot of each and checks the pages' text: run names
that say what differs, the Dataset and Models columns, metric columns, the run's dataset, metrics,
model and log file. Exit status 1 if a check fails.

Needs Chromium (Debian: ``apt-get install chromium``). Screenshots go to ``outputs/ui-check/``.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

#: tiny runs (seconds each on a CPU)
TINY = ["scale=smoke", "device=cpu"]
RUNS = [["balancer=none"], ["balancer=ckd"], ["balancer=ckd", "optimizer.lr=1e-3", "train.l2=1e-4"]]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=4800,1000"]


def train_runs(store: Path) -> str:
    """A few tiny runs (a baseline, CKD with nested teacher runs, CKD at other settings) and a two-trial
    sweep (a parent run with children) into ``store``; returns its tracking URI."""
    import mbrec

    uri = f"sqlite:///{store / 'mlflow.db'}"
    for overrides in RUNS:
        mbrec.train(*TINY, *overrides, tracking_uri=uri, cache_dir=store / "cache",
                    output_dir=store / "outputs" / "-".join(o.replace("=", "_") for o in overrides), verbose=False)
    sweep = subprocess.run(
        [sys.executable, "-m", "mbrec", "-m", *TINY, "balancer=gb", "optimizer.lr=1e-3,5e-4",
         f"mlflow.tracking_uri={uri}", f"paths.cache_dir={store / 'cache'}", f"hydra.sweep.dir={store / 'multirun'}"],
        capture_output=True, text=True, timeout=1800)
    if sweep.returncode != 0:
        raise SystemExit(f"the sweep failed:\n{sweep.stdout[-3000:]}\n{sweep.stderr[-3000:]}")
    print("the sweep's last lines:\n" + "\n".join(sweep.stdout.strip().splitlines()[-7:]))
    return uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(uri: str, port: int, log_file: Path) -> subprocess.Popen:
    """The UI server of ``make ui`` on ``uri`` in its own process group; returns once it answers (or raises)."""
    from mbrec.services.tracking import ui_command

    cmd, env = ui_command(uri, "127.0.0.1", port)  # the server `make ui` starts
    proc = subprocess.Popen(cmd, env=env, stdout=log_file.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"mlflow ui exited ({proc.returncode}); see {log_file}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(2)
    stop_ui(proc)
    raise SystemExit(f"mlflow ui did not answer within 300 s; see {log_file}")


def stop_ui(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def browse(chromium: str, url: str, png: Path, profile: Path, wait_ms: int) -> str:
    """Screenshot ``url`` into ``png`` and return the page's visible text (after its scripts ran)."""
    base = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={wait_ms}"]
    subprocess.run([*base, f"--screenshot={png}", url], capture_output=True, timeout=300, check=True)
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=300, check=True).stdout
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", help="an existing store to look at (default: a fresh one with tiny runs)")
    parser.add_argument("--experiment", default="mbrec/synthetic")
    parser.add_argument("--out", default="outputs/ui-check", help="where the screenshots go")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    parser.add_argument("--wait-ms", type=int, default=20000, help="virtual time each page gets to load")
    args = parser.parse_args(argv)
    if not shutil.which(args.chromium) and not Path(args.chromium).exists():
        raise SystemExit(f"no Chromium at {args.chromium!r}: apt-get install chromium, or pass --chromium PATH")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="mbrec-ui-check-") as tmp:
        store = Path(tmp)
        uri = args.tracking_uri or train_runs(store)
        from mbrec.services.tracking import client_for, logged_model_of, ui_url

        client = client_for(uri)
        exp = client.get_experiment_by_name(args.experiment)
        if exp is None:
            raise SystemExit(f"no experiment {args.experiment!r} in {uri}")
        runs = client.search_runs([exp.experiment_id], "tags.`mbrec.stage` = 'student'", order_by=["attributes.start_time DESC"])
        top = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]  # nested runs are folded in the list
        run = next(r for r in top if r.outputs and r.outputs.model_outputs)
        model = logged_model_of(client, run.info.run_id)
        port = free_port()
        server = start_ui(uri, port, out / "mlflow-ui.log")
        try:
            base = f"http://127.0.0.1:{port}"
            pages = {
                "runs": (ui_url(base, exp.experiment_id),
                         [r.info.run_name for r in top[:3]] + ["Dataset", "Models", "synthetic (", model.name,
                                                                "best/val/recall_at_20", "test/ndcg_at_10",
                                                                "test/ndcg_lattice_at_20", "backbone.name"]),
                "run": (ui_url(base, exp.experiment_id, run.info.run_id),
                        [run.info.run_name, "synthetic", model.name, "test/recall_at_20", "mbrec.backbone"]),
                "model": (f"{base}/#/experiments/{exp.experiment_id}/models/{model.model_id}?workflowType=machine_learning",
                          [model.name, "Ready", "test/recall_at_20", "synthetic", "backbone.embedding_dim"]),
                "artifacts": (f"{base}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}/artifacts"
                              "?workflowType=machine_learning", ["mbrec.log", "results.json", "hydra"]),
            }
            failed = []
            for name, (url, expected) in pages.items():
                png = out / f"{name}.png"
                text = browse(args.chromium, url, png, store / f"profile-{name}", args.wait_ms)
                (out / f"{name}.txt").write_text(text, encoding="utf-8")
                missing = [e for e in expected if e not in text]
                failed += [f"{name}: {m!r} not on the page" for m in missing]
                print(f"{name:>9}: {png}  {'ok' if not missing else 'MISSING ' + ', '.join(map(repr, missing))}\n"
                      f"           {url}")
        finally:
            stop_ui(server)
    if failed:
        print("ui-check FAILED:\n  " + "\n  ".join(failed))
        return 1
    print(f"ui-check passed: screenshots and page texts in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
