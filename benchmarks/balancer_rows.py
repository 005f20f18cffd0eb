"""Every balancer row at its default settings (no tuning) on the synthetic data: overall and per-modality
Recall@20 over seeds, paired p-values against ``none`` and against ``ckd``, and each row's cost.

    python benchmarks/balancer_rows.py --backbone vbpr --seeds 0,1,2 --jobs 2 --threads 1
    python benchmarks/balancer_rows.py --rows none,ckd,umt,ensemble -- train.max_epochs=50

Each (row, seed) is one ``python -m mbrec`` run (MLflow off) in ``<root>/<backbone>/<row>-s<seed>/``,
at most ``--jobs`` at a time; all share one cache, so the uni-modal teachers are trained once per seed
and reused by every row that needs them (ckd, umt, ensemble). A finished run is replayed, not retrained
(``skip_finished=true``), so re-running the script only prints the table. Not part of ``make bench``
(no ``bench_`` prefix): it measures results, not speed. docs/balancers.md has its output for VBPR.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mbrec.balancers import ROWS, paper_rows  # noqa: E402
from mbrec.record import Results  # noqa: E402
from mbrec.report.tables import paired_test  # noqa: E402

METRIC = "recall@20"


def run_all(rows: list[str], seeds: list[int], backbone: str, root: Path, jobs: int, threads: int,
            extra: list[str]) -> dict[tuple[str, int], float]:
    """Run every (row, seed) not yet finished, ``jobs`` at a time; wall seconds per run."""
    # teacher users first within a seed, so the others find its teachers cached rather than wait on its lock
    todo = [(r, s) for s in seeds for r in sorted(rows, key=lambda r: (r != "ckd", ROWS[r].order))]
    running: list[tuple[tuple[str, int], subprocess.Popen, float]] = []
    wall: dict[tuple[str, int], float] = {}
    while todo or running:
        while todo and len(running) < jobs:
            row, seed = todo.pop(0)
            out = root / backbone / f"{row}-s{seed}"
            if (out / "results.json").is_file():
                continue
            cmd = [sys.executable, "-m", "mbrec", "dataset=synthetic", f"backbone={backbone}", f"balancer={row}",
                   f"seed={seed}", f"threads={threads}", "mlflow.enabled=false", "device=cpu",
                   f"paths.cache_dir={root / 'cache'}", f"hydra.run.dir={out}", *extra]
            out.mkdir(parents=True, exist_ok=True)
            log = open(out / "run.log", "w")  # noqa: SIM115 - closed with the process below
            print(f"start {row} seed {seed}", flush=True)
            running.append(((row, seed), subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), time.time()))
        time.sleep(1.0)
        for item in list(running):
            key, proc, t0 = item
            if proc.poll() is not None:
                running.remove(item)
                wall[key] = time.time() - t0
                status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see run.log)"
                print(f"{status} {key[0]} seed {key[1]} in {wall[key]:.0f}s", flush=True)
    return wall


def load(rows: list[str], seeds: list[int], backbone: str, root: Path) -> dict[str, dict[int, Results]]:
    out: dict[str, dict[int, Results]] = {}
    for row in rows:
        for seed in seeds:
            path = root / backbone / f"{row}-s{seed}" / "results.json"
            if path.is_file():
                out.setdefault(row, {})[seed] = Results.from_json(json.loads(path.read_text()))
    return out


def _fmt(values: list[float], digits: int = 4) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def _p(base: dict[int, float] | None, other: dict[int, float]) -> str:
    if base is None or base is other:
        return "–"
    p = paired_test(base, other)
    return "–" if np.isnan(p) else f"{p:.3f}" + ("*" if p <= 0.05 else "")


def _p_pair(by_row: dict[str, dict[int, float]], row: str) -> str:
    """`` [p vs none, p vs ckd]`` of one per-modality column (empty for a row compared with neither)."""
    pair = [_p(by_row.get(ref), by_row[row]) for ref in ("none", "ckd")]
    return "" if pair == ["–", "–"] else f" [{pair[0]}, {pair[1]}]"


def table(results: dict[str, dict[int, Results]], modalities: list[str]) -> str:
    """Markdown: per row mean ± std over seeds, paired p vs none and vs ckd, cost."""
    head = ["row", "paper row", "seeds", "Recall@20", *(f"Recall@20 ({m} only)" for m in modalities),
            "p vs none", "p vs ckd", "s/epoch", "epochs", "teacher epochs", "probe epochs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    overall = {r: {s: res.test[METRIC] for s, res in by.items()} for r, by in results.items()}
    column = {m: {r: {s: res.test.get(f"{METRIC}/{m}", np.nan) for s, res in by.items()} for r, by in results.items()}
              for m in modalities}
    for row in sorted(results, key=lambda r: (ROWS[r].order, r)):
        by = results[row]
        per = [_fmt(list(column[m][row].values())) + _p_pair(column[m], row) for m in modalities]
        spe = [res.seconds_per_epoch for res in by.values() if res.seconds_per_epoch]
        teachers = [sum(int(t.get("epochs_run") or 0) for t in (res.balancer.get("teachers") or {}).values())
                    for res in by.values()]
        lines.append("| " + " | ".join([
            ROWS[row].label, ROWS[row].paper_row or "— (beyond)", str(len(by)), _fmt(list(overall[row].values())), *per,
            _p(overall.get("none"), overall[row]), _p(overall.get("ckd"), overall[row]),
            f"{np.mean(spe):.2f}" if spe else "– (no training)", _fmt([float(res.epochs_run) for res in by.values()], 1),
            _fmt([float(t) for t in teachers], 1) if any(teachers) else "0",
            _fmt([float(res.probe_epochs) for res in by.values()], 1) if any(res.probe_epochs for res in by.values()) else "0",
        ]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="vbpr")
    parser.add_argument("--rows", default=",".join(paper_rows()), help="comma list (default: every registered row)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per run (default 1)")
    parser.add_argument("--root", default="outputs/balancer_rows")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    args = parser.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    if bad := [r for r in rows if r not in ROWS]:
        raise SystemExit(f"--rows: unknown {', '.join(bad)}; registered: {','.join(paper_rows())}")
    seeds = [int(s) for s in args.seeds.split(",")]
    root = Path(args.root)
    t0 = time.time()
    run_all(rows, seeds, args.backbone, root, args.jobs, args.threads, args.overrides)
    results = load(rows, seeds, args.backbone, root)
    if not results:
        raise SystemExit(f"no finished run under {root / args.backbone}")
    first = next(iter(next(iter(results.values())).values()))
    modalities = sorted({k.split("/", 1)[1] for k in first.test if "/" in k})
    print(f"\n{args.backbone} on synthetic ({first.dataset.get('users', '?')} users, {first.dataset.get('items', '?')} "
          f"items), default settings of every row, seeds {args.seeds}, {args.threads} thread(s) per run, "
          f"{args.jobs} runs at a time; wall {time.time() - t0:.0f}s\n")
    print(table(results, modalities))
    print("\np: two-sided paired t-test over seeds on overall Recall@20 (* p ≤ 0.05); in the per-modality columns "
          "[p vs none, p vs ckd] of that column. Teacher epochs: epochs of the teachers the row uses (trained once "
          "per seed, shared by ckd/umt/ensemble). Probe epochs: GB's.")


if __name__ == "__main__":
    main()
