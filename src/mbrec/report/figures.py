"""PNG figures from MLflow metric histories: the paper's Figure 1 (pilot) and CKD's λ_m / ρ^m traces."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _history(client, run_id: str, key: str) -> tuple[list[int], list[float]]:
    points = sorted(client.get_metric_history(run_id, key), key=lambda p: p.step)
    return [p.step for p in points], [p.value for p in points]


def _modalities(run) -> list[str]:
    return sorted(k.split(".")[2] for k in run.data.tags if k.startswith("mbrec.teacher.") and k.endswith(".run_id"))


def pilot_figure(client, run_id: str, out: str | Path, metric: str = "recall_at_20") -> Path:
    """Figure 1: per modality, the validation recall over epochs of the multimodal model (all modalities,
    and its m-only pass, dashed as in the paper) next to the uni-modal model of m (the run's teacher,
    found through ``mbrec.teacher.<m>.run_id``)."""
    run = client.get_run(run_id)
    mods = _modalities(run)
    if not mods:
        raise ValueError(f"run {run_id} has no teachers (tags mbrec.teacher.<m>.run_id): run the pilot preset")
    fig, axes = plt.subplots(1, len(mods), figsize=(4.5 * len(mods), 3.4), squeeze=False)
    for ax, m in zip(axes[0], mods):
        ax.plot(*_history(client, run_id, f"val/{metric}"), label="multimodal", color="black")
        ax.plot(*_history(client, run_id, f"val/{metric}/{m}"), label=f"multimodal, {m} only", linestyle="--")
        teacher = run.data.tags.get(f"mbrec.teacher.{m}.run_id")
        if teacher:
            ax.plot(*_history(client, teacher, f"val/{metric}"), label=f"uni-modal ({m} only)")
        ax.set(title=m, xlabel="epoch", ylabel=f"validation {metric.replace('_at_', '@')}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    fig.tight_layout()
    return _save(fig, out)


def ckd_traces(client, run_id: str, out: str | Path) -> Path:
    """The per-epoch re-weighting λ_m and ratio ρ^m of a CKD run, one line per modality."""
    run = client.get_run(run_id)
    mods = _modalities(run)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, name, key in ((axes[0], r"$\lambda_m$", "ckd/lambda"), (axes[1], r"$\rho^m$", "ckd/rho")):
        for m in mods:
            ax.plot(*_history(client, run_id, f"{key}/{m}"), label=m)
        ax.set(title=f"{name} (epoch mean)", xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    fig.tight_layout()
    return _save(fig, out)


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(out)
    return out
