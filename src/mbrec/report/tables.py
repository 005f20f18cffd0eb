"""Table 1 from MLflow runs: mean ± std over seeds, relative improvement over the base row, paired t-test."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

METRICS = ("test/recall_at_20", "test/ndcg_at_20")
BASE = "none"


def paired_test(base: dict[int, float], other: dict[int, float]) -> float:
    """Two-sided paired t-test over the seeds both runs share; NaN with fewer than two pairs."""
    seeds = sorted(set(base) & set(other))
    if len(seeds) < 2:
        return float("nan")
    a, b = np.array([base[s] for s in seeds]), np.array([other[s] for s in seeds])
    if np.allclose(a - b, 0.0):
        return 1.0
    return float(stats.ttest_rel(b, a).pvalue)


def load_runs(tracking_uri: str, filter_string: str) -> pd.DataFrame:
    """Finished student runs matching ``filter_string`` (all experiments) as one row per run."""
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri)
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    filt = "tags.`mbrec.stage` = 'student' and attributes.status = 'FINISHED'"
    runs = client.search_runs(exp_ids, f"{filt} and {filter_string}" if filter_string else filt, max_results=50000)
    rows = [{"dataset": r.data.tags.get("mbrec.dataset"), "backbone": r.data.tags.get("mbrec.backbone"),
             "balancer": r.data.tags.get("mbrec.balancer"), "seed": int(r.data.tags.get("mbrec.seed", -1)),
             "run_id": r.info.run_id, **r.data.metrics} for r in runs]
    return pd.DataFrame(rows)


def cell_table(runs: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> pd.DataFrame:
    """One row per (dataset, backbone, balancer): mean, std, n over seeds, improvement % and p vs base.

    If a seed was run twice the later row wins (runs are unique per run_key, re-runs replay)."""
    out: list[dict[str, Any]] = []
    for (dataset, backbone), group in runs.groupby(["dataset", "backbone"], sort=True):
        per = {bal: g.drop_duplicates("seed", keep="first").set_index("seed") for bal, g in group.groupby("balancer")}
        order = [BASE] + sorted(b for b in per if b != BASE) if BASE in per else sorted(per)
        for bal in order:
            row: dict[str, Any] = {"dataset": dataset, "backbone": backbone, "balancer": bal,
                                   "n_seeds": len(per[bal])}
            for m in metrics:
                values = per[bal][m].dropna()
                row[f"{m}:mean"] = float(values.mean())
                row[f"{m}:std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
                if BASE in per and bal != BASE:
                    base = per[BASE][m].dropna()
                    row[f"{m}:impr%"] = 100.0 * (row[f"{m}:mean"] / float(base.mean()) - 1.0)
                    row[f"{m}:p"] = paired_test(base.to_dict(), values.to_dict())
            out.append(row)
    return pd.DataFrame(out)


def _fmt(row: pd.Series, metrics: tuple[str, ...]) -> list[str]:
    cells = [str(row["dataset"]), str(row["backbone"]), str(row["balancer"]), str(row["n_seeds"])]
    for m in metrics:
        text = f"{row[f'{m}:mean']:.4f} ± {row[f'{m}:std']:.4f}"
        if pd.notna(row.get(f"{m}:impr%", np.nan)):
            p = row[f"{m}:p"]
            text += f" ({row[f'{m}:impr%']:+.1f}%, p={p:.3f}{'*' if p <= 0.05 else ''})"
        cells.append(text)
    return cells


def to_markdown(table: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> str:
    """Markdown; improvement and paired-test p vs the base row in brackets, * where p ≤ 0.05."""
    head = ["dataset", "backbone", "balancer", "seeds", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(r, metrics)) + " |" for _, r in table.iterrows()]
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> str:
    """A tabular environment (booktabs)."""
    head = ["dataset", "backbone", "balancer", "seeds", *(m.replace("_", r"\_") for m in metrics)]
    lines = [r"\begin{tabular}{llll" + "r" * len(metrics) + "}", r"\toprule", " & ".join(head) + r" \\", r"\midrule"]
    for _, r in table.iterrows():
        cells = [c.replace("±", r"$\pm$").replace("%", r"\%").replace("_", r"\_") for c in _fmt(r, metrics)]
        lines.append(" & ".join(cells) + r" \\")
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"
