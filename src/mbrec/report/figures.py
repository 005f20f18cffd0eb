"""PNG figures from MLflow metric histories: the paper's Figure 1 (pilot) and CKD's λ_m / ρ^m traces.

Each figure shows one table row (dataset, backbone, settings but the seed): with several seeds, the mean
curve and a ± std band over the seeds present at each epoch (early stopping ends seeds at different
epochs). Titled with dataset and backbone; one legend under the panels, clear of the curves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from mbrec.record import Tag  # noqa: E402

DPI = 200
_COLORS = {"multimodal": "black", "only": "tab:blue", "uni": "tab:orange"}


def _history(client, run_id: str, key: str) -> tuple[list[int], list[float]]:
    points = sorted(client.get_metric_history(run_id, key), key=lambda p: p.step)
    return [p.step for p in points], [p.value for p in points]


def _modalities(run) -> list[str]:
    return Tag.teacher_modalities(run.data.tags)


def mean_band(curves: Sequence[tuple[list[int], list[float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, std, count) over the curves present at each step (std NaN where count < 2)."""
    by_step: dict[int, list[float]] = {}
    for steps, values in curves:
        for s, v in zip(steps, values):
            by_step.setdefault(int(s), []).append(float(v))
    steps = np.array(sorted(by_step), dtype=int)
    vals = [by_step[s] for s in steps]
    mean = np.array([np.mean(v) for v in vals])
    std = np.array([np.std(v, ddof=1) if len(v) > 1 else np.nan for v in vals])
    return steps, mean, std, np.array([len(v) for v in vals])


def _plot(ax, curves, label: str, **style) -> None:
    curves = [c for c in curves if c[0]]
    if not curves:
        return
    steps, mean, std, count = mean_band(curves)
    (line,) = ax.plot(steps, mean, label=label, **style)
    band = count > 1
    if band.any():
        ax.fill_between(steps, mean - np.nan_to_num(std), mean + np.nan_to_num(std), where=band,
                        color=line.get_color(), alpha=0.18, linewidth=0)


def _seeds_text(runs) -> str:
    return f"mean ± std over {len(runs)} seeds" if len(runs) > 1 else f"seed {runs[0].data.tags.get(Tag.SEED, '?')}"


def _finish(fig: Figure, axes, title: str) -> Figure:
    handles, labels = {}, {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
            labels[lab] = lab
    fig.suptitle(title)
    fig.legend(list(handles.values()), list(labels), loc="outside lower center", ncol=min(3, len(labels)),
               frameon=False)
    return fig


def pilot(client, run_ids: str | Sequence[str], title: str = "", metric: str = "recall_at_20") -> Figure:
    """Figure 1 as a matplotlib Figure: per modality m, the validation recall over epochs of the
    multimodal model, of its m-only pass (dashed, as in the paper) and of the uni-modal model of m (the
    run's teacher, ``mbrec.teacher.<m>.run_id``)."""
    runs = [client.get_run(r) for r in ([run_ids] if isinstance(run_ids, str) else run_ids)]
    mods = _modalities(runs[0])
    if not mods:
        raise ValueError(f"run {runs[0].info.run_id} has no teachers (tags mbrec.teacher.<m>.run_id): "
                         "run the pilot preset")
    # one x-range for every panel (teachers and student stop at different epochs)
    fig, axes = plt.subplots(1, len(mods), figsize=(4.6 * len(mods), 3.8), squeeze=False, layout="constrained",
                             sharex=True)
    for ax, m in zip(axes[0], mods):
        ids = [r.info.run_id for r in runs]
        _plot(ax, [_history(client, i, f"val/{metric}") for i in ids], "multimodal", color=_COLORS["multimodal"])
        _plot(ax, [_history(client, i, f"val/{metric}/{m}") for i in ids], "multimodal, this modality only",
              color=_COLORS["only"], linestyle="--")
        teachers = [r.data.tags.get(Tag.teacher_run(m)) for r in runs]
        _plot(ax, [_history(client, t, f"val/{metric}") for t in teachers if t], "uni-modal model (teacher)",
              color=_COLORS["uni"])
        ax.set(title=f"{m} modality", xlabel="epoch", ylabel=f"validation {metric.replace('_at_', '@')}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish(fig, axes[0], f"{title} — {_seeds_text(runs)}" if title else _seeds_text(runs))


def traces(client, run_ids: str | Sequence[str], title: str = "") -> Figure:
    """The per-epoch re-weighting λ_m and ratio ρ^m of CKD runs, one line per modality."""
    runs = [client.get_run(r) for r in ([run_ids] if isinstance(run_ids, str) else run_ids)]
    mods = _modalities(runs[0])
    fig, axes = plt.subplots(1, 2, figsize=(9.2, 3.8), layout="constrained")
    for ax, name, key in ((axes[0], r"$\lambda_m$", "ckd/lambda"), (axes[1], r"$\rho^m$", "ckd/rho")):
        for m in mods:
            _plot(ax, [_history(client, r.info.run_id, f"{key}/{m}") for r in runs], m)
        ax.set(title=f"{name} (epoch mean)", xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish(fig, axes, f"{title} — {_seeds_text(runs)}" if title else _seeds_text(runs))


#: the vector formats written beside every PNG (for papers: no resampling)
VECTOR_FORMATS = ("pdf", "svg")


def save(fig: Figure, out: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as PNG at ``dpi`` and, beside it, as PDF and SVG (each atomically: temp + rename);
    close it and return the PNG's path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for target in (out, *(out.with_suffix(f".{fmt}") for fmt in VECTOR_FORMATS)):
        tmp = target.with_name(f"{target.stem}.tmp{target.suffix}")
        fig.savefig(tmp, dpi=dpi)
        tmp.replace(target)
    plt.close(fig)
    return out


def pilot_figure(client, run_ids: str | Sequence[str], out: str | Path, title: str = "",
                 metric: str = "recall_at_20", dpi: int = DPI) -> Path:
    """Figure 1 of ``run_ids`` (one row's seeds) written to ``out``."""
    return save(pilot(client, run_ids, title, metric), out, dpi)


def ckd_traces(client, run_ids: str | Sequence[str], out: str | Path, title: str = "", dpi: int = DPI) -> Path:
    """The λ_m / ρ^m traces of ``run_ids`` (one row's seeds) written to ``out``."""
    return save(traces(client, run_ids, title), out, dpi)
