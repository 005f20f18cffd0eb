"""Thread policy: seconds per training epoch by intra-op threads x OpenMP wait policy x machine load.

Workloads (``--workloads``): ``vbpr`` and ``ckd`` (a VBPR student with stand-in teachers) on the real
Amazon Baby interactions with random features of the real shapes (``--data DIR`` or
``$MBREC_BENCH_DATA``); ``narrow`` (VBPR on the same interactions with 512-d visual and 256-d text
features, a middle-sized problem) and ``synthetic`` (VBPR on the default embedded synthetic dataset,
a small problem). Each configuration runs in a fresh subprocess, since OpenMP reads ``OMP_WAIT_POLICY``
once when torch loads: ``unset`` is torch's own behaviour (torch imported before mbrec, no variable),
``active``/``passive`` set the variable, ``spinN`` sets PASSIVE and libgomp's ``GOMP_SPINCOUNT=N``
(spin about N/100 microseconds before sleeping). ``busy`` runs one pure-Python busy loop (a process
this benchmark starts and stops) next to the measured process, as a parallel trial or any other
program would. Every configuration reports its epochs, one validation (overall + one pass per modality) and
the CPU time other processes on the machine used meanwhile (``/proc/stat``), so a noisy "quiet" run
shows. On CUDA the workloads run on the GPU and also report peak GPU memory.

Prints a Markdown table, checks the default (``threads: auto`` for the workload's size with mbrec's
PASSIVE waiting) against the best setting of each workload and load (target: within 1.3x with one core
busy), and writes all numbers as JSON (``--out``).
"""

from __future__ import annotations

import os
import sys

# A child measuring torch's own wait policy must load torch (and its OpenMP) before mbrec sets the
# variable: decide before anything else is imported.
if "--child" in sys.argv and os.environ.get("MBREC_BENCH_WAIT") == "unset":
    import torch  # noqa: F401

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import date  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
WAITS = ("unset", "active", "passive")
TARGET = 1.3
BUSY_LOOP = "while True:\n    pass\n"


# --- child: one configuration ----------------------------------------------------------------------

def child(args: argparse.Namespace) -> None:
    wait_at_import = os.environ.get("OMP_WAIT_POLICY", "unset")
    import common  # noqa: F401  (imports mbrec, then torch)
    import torch
    from common import ckd_student, load_baby, time_epochs, time_validation

    from mbrec.backbones import build_backbone
    from mbrec.balancers import build_balancer
    from mbrec.data.loading import load_dataset
    from mbrec.runtime import apply_threads, feature_values, resolve_threads
    from mbrec.training.evaluation import Evaluator

    threads = apply_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    torch.manual_seed(0)
    t = time.perf_counter()
    if args.workload == "synthetic":
        from omegaconf import OmegaConf

        ds = load_dataset(OmegaConf.load(HERE.parent / "conf" / "dataset" / "synthetic.yaml"))
    elif args.workload == "narrow":
        ds = load_baby(visual_dim=512, text_dim=256)
    else:
        ds = load_baby()
    load_s = time.perf_counter() - t
    model = build_backbone({"name": "vbpr", "embedding_dim": 64}, ds).to(device)
    balancer = ckd_student(ds, device) if args.workload == "ckd" else build_balancer({"name": "none"})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    epochs = time_epochs(ds, model, balancer, args.epochs, device=device)
    valid_s = time_validation(Evaluator(ds, (10, 20), device), model)
    out = {"epoch_seconds": epochs, "valid_seconds": valid_s, "load_seconds": load_s, "threads_applied": threads,
           "auto_threads": resolve_threads("auto", feature_values=feature_values(ds)),
           "torch_threads": torch.get_num_threads(), "omp_wait_policy_at_torch_import": wait_at_import,
           "gomp_spincount": os.environ.get("GOMP_SPINCOUNT", "unset"),
           "device": str(device), "steps_per_epoch": ds.train.nnz // 1024 + 1}
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    print("RESULT " + json.dumps(out), flush=True)


# --- parent: the matrix ----------------------------------------------------------------------------

def _cpu_busy_seconds() -> float | None:
    """Non-idle CPU seconds of the whole machine so far (all CPUs), or None without /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def other_load(seconds: float = 2.0) -> float | None:
    """Cores the rest of the machine keeps busy, sampled over ``seconds`` (None without /proc/stat)."""
    c0, t0 = _cpu_busy_seconds(), time.perf_counter()
    time.sleep(seconds)
    c1 = _cpu_busy_seconds()
    return None if c0 is None or c1 is None else (c1 - c0) / (time.perf_counter() - t0)


def wait_for_quiet(below: float, patience: float) -> float | None:
    """Wait (at most ``patience`` seconds) until other processes use fewer than ``below`` cores; return
    the last sample. Shared machines (CI, a busy laptop) otherwise make the "quiet" rows noisy."""
    deadline = time.monotonic() + patience
    while True:
        load = other_load()
        if load is None or load < below or time.monotonic() >= deadline:
            return load
        time.sleep(3.0)


def wait_env(wait: str) -> dict[str, str]:
    """Environment of a wait setting: ``unset`` (nothing), ``active``, ``passive``, or ``spinN``
    (PASSIVE plus ``GOMP_SPINCOUNT=N``: libgomp spins N times, about N/100 microseconds, then sleeps)."""
    if wait == "unset":
        return {}
    if wait.startswith("spin"):
        return {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": wait[4:]}
    if wait in {"active", "passive"}:
        return {"OMP_WAIT_POLICY": wait.upper()}
    raise SystemExit(f"--waits: {wait!r} is not unset, active, passive or spinN (e.g. spin10k)")


def run_one(workload: str, threads: str, wait: str, busy: bool, args: argparse.Namespace) -> dict:
    """One configuration in a fresh interpreter (with a busy-loop neighbour when ``busy``)."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"}}
    env.update(MBREC_BENCH_WAIT=wait, TQDM_DISABLE="1")
    env.update(wait_env(wait))
    if args.data:
        env["MBREC_BENCH_DATA"] = args.data
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--workload", workload, "--threads", threads,
           "--epochs", str(args.synthetic_epochs if workload == "synthetic" else args.epochs), "--device", args.device]
    row = {"workload": workload, "threads": threads, "wait": wait, "load": "busy" if busy else "quiet"}
    if args.quiet_below > 0:
        before = wait_for_quiet(args.quiet_below, args.quiet_patience)
        row["other_load_before"] = None if before is None else round(before, 2)
    hog = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if busy else None
    cpu0, kids0, t0 = _cpu_busy_seconds(), _children_cpu(), time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=HERE, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        proc = None
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    wall = time.perf_counter() - t0
    cpu1, kids1 = _cpu_busy_seconds(), _children_cpu()
    if cpu0 is not None and cpu1 is not None:
        # CPU time of everything else on the machine, in cores (ours = the child and the busy loop)
        row["other_load_cores"] = round(max(0.0, (cpu1 - cpu0) - (kids1 - kids0)) / wall, 2)
    row["wall_seconds"] = round(wall, 1)
    if proc is None:
        row["error"] = f"timeout after {args.timeout} s"
        return row
    results = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not results:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        if any("benchmark data not found" in ln for ln in tail):
            raise SystemExit(tail[-1])
        row["error"] = " | ".join(tail)
        return row
    row.update(json.loads(results[-1][len("RESULT "):]))
    row["epoch"] = min(row["epoch_seconds"])
    return row


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def defaults(rows: list[dict]) -> dict[str, tuple[str, str]]:
    """Per workload, the setting a run would use: ``threads: auto`` for that problem's size (reported by
    the children) with mbrec's PASSIVE waiting."""
    return {r["workload"]: (str(r["auto_threads"]), "passive") for r in rows if "auto_threads" in r}


def summarise(rows: list[dict], default: dict[str, tuple[str, str]]) -> tuple[str, list[dict]]:
    """Markdown table (median over repeats of each configuration's best epoch) and the default's
    ratio to the best configuration per workload and load."""
    import statistics

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["workload"], r["load"], r["threads"], r["wait"]), []).append(r)
    lines = ["| workload | load | threads | OMP wait | s / epoch (range) | validation s | other load (cores) | note |",
             "|---|---|---:|---|---:|---:|---:|---|"]
    best: dict[tuple, float] = {}
    cells: dict[tuple, float] = {}
    for key, rs in groups.items():
        ok = [r for r in rs if "epoch" in r]
        epoch = statistics.median(r["epoch"] for r in ok) if ok else None
        valid = statistics.median(r["valid_seconds"] for r in ok) if ok else None
        other = statistics.median(r.get("other_load_cores", 0.0) for r in rs)
        gpu = f"peak GPU {max(r['peak_gpu_mb'] for r in ok):.0f} MB" if ok and "peak_gpu_mb" in ok[0] else ""
        note = "; ".join(filter(None, ["**default**" if key[2:] == default.get(key[0]) else "", gpu,
                                       *(r["error"] for r in rs if "error" in r)]))
        spread = f" ({_fmt(min(r['epoch'] for r in ok))}–{_fmt(max(r['epoch'] for r in ok))})" if len(ok) > 1 else ""
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {_fmt(epoch)}{spread} | {_fmt(valid)} | "
                     f"{other:.2f} | {note} |")
        if epoch is not None:
            cells[key] = epoch
            best[key[:2]] = min(best.get(key[:2], float("inf")), epoch)
    verdicts = []
    for (workload, load), b in best.items():
        d = cells.get((workload, load, *default[workload])) if workload in default else None
        ratio = d / b if d else None
        verdicts.append({"workload": workload, "load": load, "default": default.get(workload),
                         "best_epoch": b, "default_epoch": d,
                         "default_over_best": ratio, "within_target": ratio is not None and ratio <= TARGET})
    return "\n".join(lines), verdicts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="folder with the Baby split (default: $MBREC_BENCH_DATA)")
    ap.add_argument("--workloads", default="vbpr,ckd,synthetic")
    ap.add_argument("--threads", default=None, help="comma-separated thread counts (default: 1,2 and all usable CPUs)")
    ap.add_argument("--waits", default=",".join(WAITS),
                    help="comma-separated: unset, active, passive, spinN (PASSIVE + GOMP_SPINCOUNT=N, e.g. spin10k)")
    ap.add_argument("--loads", default="quiet,busy")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per Baby configuration (the best one counts)")
    ap.add_argument("--synthetic-epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1, help="run the whole matrix this many times (median)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds before a configuration is given up")
    ap.add_argument("--quiet-below", type=float, default=0.25,
                    help="before each configuration wait until other processes use fewer cores than this (0: don't)")
    ap.add_argument("--quiet-patience", type=float, default=60, help="longest wait for that, in seconds")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")
    ap.add_argument("--out", default="outputs/bench/threads.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--workload", help=argparse.SUPPRESS)
    args, _ = ap.parse_known_args()
    if args.child:
        return child(args)

    sys.path.insert(0, str(HERE.parent / "src"))
    from mbrec.runtime import available_cpus, resolve_threads

    workloads = [w for w in args.workloads.split(",") if w]
    if any(w != "synthetic" for w in workloads):
        from common import require_baby

        args.data = str(require_baby([f"--data={args.data}"] if args.data else []))
    cpus = available_cpus()
    threads = args.threads.split(",") if args.threads else sorted({"1", "2", str(cpus)}, key=int)
    auto = str(resolve_threads("auto"))
    configs = [(t, w) for t in threads for w in args.waits.split(",") if t != "1" or w == "passive"]
    import torch

    info = {"date": date.today().isoformat(), "machine": f"{os.uname().machine}, {os.cpu_count()} CPUs "
            f"({cpus} usable), torch {torch.__version__}, CUDA {torch.cuda.is_available()}",
            "epochs": args.epochs, "synthetic_epochs": args.synthetic_epochs, "repeats": args.repeats,
            "auto_threads_large_problem": int(auto), "default_wait": "passive"}
    print(f"{info['machine']}; threads=auto -> {auto} (1 for a small problem); {len(configs)} settings x {len(workloads)} workloads "
          f"x {args.loads} x {args.repeats} repeat(s)", flush=True)
    rows: list[dict] = []
    for rep in range(args.repeats):
        for load in args.loads.split(","):
            for workload in workloads:
                for t, w in (configs if rep % 2 == 0 else configs[::-1]):  # alternate the order: drifts cancel
                    row = run_one(workload, t, w, load == "busy", args) | {"repeat": rep}
                    rows.append(row)
                    print(f"  {workload:9s} {load:5s} threads={t} wait={w:7s} epoch={_fmt(row.get('epoch'))} s "
                          f"valid={_fmt(row.get('valid_seconds'))} s other={row.get('other_load_cores', '?')} "
                          f"{row.get('error', '')}", flush=True)
    table, verdicts = summarise(rows, defaults(rows))
    print("\nthreads=1 has no OpenMP team, so its wait policy does not matter (run once, with PASSIVE).")
    print(table)
    print()
    for v in verdicts:
        ok = "meets" if v["within_target"] else "MISSES"
        threads = v["default"][0] if v["default"] else "?"
        print(f"{v['workload']} {v['load']}: default (threads={threads}, PASSIVE) {_fmt(v['default_epoch'])} s vs best "
              f"{_fmt(v['best_epoch'])} s = {_fmt(v['default_over_best'])}x ({ok} the {TARGET}x target)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({**info, "rows": rows, "verdicts": verdicts, "table": table}, f, indent=1)
    os.replace(tmp, out)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
