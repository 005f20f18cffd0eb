"""The paper's tables from MLflow runs: mean ± std over seeds, relative improvement over the base row,
paired t-test over seeds.

Table 1: one row per balancer (overall Recall/NDCG@20). Table 2: the same runs' per-modality recall
plus a ``uni-teacher`` row (the teachers' test recall every CKD run logs as ``teacher/<m>/test/*``).
Table 3: CKD variants, labelled from their params (``variant_label``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

#: Table 1's columns; the paper's NDCG is the CKD/LATTICE code's variant (docs/evaluation.md#metrics), so
#: ``ndcg_lattice`` is the one compared with the paper's value, the standard NDCG is shown beside it
METRICS = ("test/recall_at_20", "test/ndcg_at_20", "test/ndcg_lattice_at_20", "test/precision_at_20")
BASE = "none"
# the paper's rows: base, +GB, +OGM, +CKD (Table 2: uni-teacher last; Table 3: the ablations); others after
ROW_ORDER = ("none", "gb", "ogm", "ckd", "uni-teacher", "ckd w/o Gen.", "ckd w/o re-weight", "ckd repl. KL", "ckd repl. MSE")


def paired_test(base: dict[int, float], other: dict[int, float]) -> float:
    """Two-sided paired t-test over the seeds both runs share; NaN with fewer than two pairs, 1 when the
    runs are identical, 0 when every seed differs by the same amount (zero variance, |t| infinite)."""
    seeds = sorted(set(base) & set(other))
    if len(seeds) < 2:
        return float("nan")
    a, b = np.array([base[s] for s in seeds]), np.array([other[s] for s in seeds])
    d = b - a
    if np.allclose(d, 0.0, rtol=0.0, atol=1e-15):
        return 1.0
    if np.allclose(d, d[0], rtol=1e-9, atol=0.0):  # the same shift on every seed: |t| = inf
        return 0.0
    return float(stats.ttest_rel(b, a).pvalue)


def preset_filters(preset: str) -> list[str]:
    """MLflow filters for the runs of a preset: its marker tag (set on every run of the preset and on
    runs it replayed, ``mbrec.sweep.preset_marker``) or, for older runs, the ``mbrec_experiment`` tag."""
    from mbrec.sweep import PRESET_TAG, preset_marker

    return [f"tags.`{preset_marker(preset)}` = 'true'", f"tags.{PRESET_TAG} = '{preset}'"]


def load_runs(tracking_uri: str, filter_string: str | list[str]) -> pd.DataFrame:
    """Finished student runs matching ``filter_string`` (all experiments; a list = their union) as one
    row per run, newest first."""
    from mbrec.tracking import client_for

    client = client_for(tracking_uri)  # a missing store is created whole (mbrec.store), a broken one named
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    filt = "tags.`mbrec.stage` = 'student' and attributes.status = 'FINISHED'"
    found: dict[str, Any] = {}
    for extra in [filter_string] if isinstance(filter_string, str) else filter_string:
        for r in client.search_runs(exp_ids, f"{filt} and {extra}" if extra else filt, max_results=50000,
                                    order_by=["attributes.start_time DESC"]):
            found.setdefault(r.info.run_id, r)
    runs = sorted(found.values(), key=lambda r: -r.info.start_time)
    rows = [{"dataset": r.data.tags.get("mbrec.dataset"), "backbone": r.data.tags.get("mbrec.backbone"),
             "balancer": r.data.tags.get("mbrec.balancer"), "seed": int(r.data.tags.get("mbrec.seed", -1)),
             "run_id": r.info.run_id, "variant": variant_label(r.data.tags.get("mbrec.balancer"), r.data.params),
             **r.data.metrics} for r in runs]
    return pd.DataFrame(rows)


def variant_label(balancer: str | None, params: dict[str, str]) -> str:
    """Table 3's row name of a run: the CKD ablation its params select (balancers other than ckd: their name)."""
    if balancer != "ckd":
        return str(balancer)
    changes = []
    if float(params.get("balancer.lambda_g", 1.0)) == 0.0:
        changes.append("w/o Gen.")
    if params.get("balancer.reweight", "paper") == "none":
        changes.append("w/o re-weight")
    loss = params.get("balancer.specific_loss", "hinge")
    if loss != "hinge":
        changes.append(f"repl. {loss.upper()}")
    return "ckd " + ", ".join(changes) if changes else "ckd"


def modalities(runs: pd.DataFrame) -> list[str]:
    """Modality names present as per-modality test recall columns."""
    return sorted({c.rsplit("/", 1)[1] for c in runs.columns if c.startswith("test/recall_at_20/")})


def table2_runs(runs: pd.DataFrame) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Table 2's rows: every run, plus one ``uni-teacher`` row per CKD run whose per-modality recall
    is its teachers' test recall; and the metric columns (overall and per-modality Recall@20)."""
    mods = modalities(runs)
    teachers = runs[runs["balancer"] == "ckd"].copy()
    if not teachers.empty:
        for m in mods:
            teachers[f"test/recall_at_20/{m}"] = teachers.get(f"teacher/{m}/test/recall_at_20", np.nan)
        teachers["test/recall_at_20"] = np.nan
        teachers["balancer"] = "uni-teacher"
        runs = pd.concat([runs, teachers], ignore_index=True)
    return runs, ("test/recall_at_20", *(f"test/recall_at_20/{m}" for m in mods))


def table3_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 3's rows: the CKD variants (and the base, if present) keyed by their variant label."""
    return runs.assign(balancer=runs["variant"])


def cell_table(runs: pd.DataFrame, metrics: tuple[str, ...] = METRICS, base_row: str = BASE) -> pd.DataFrame:
    """One row per (dataset, backbone, balancer): mean, std, n over seeds, improvement % and p vs ``base_row``.

    If a seed was run twice the later row wins (runs are unique per run_key, re-runs replay)."""
    out: list[dict[str, Any]] = []
    for (dataset, backbone), group in runs.groupby(["dataset", "backbone"], sort=True):
        per = {bal: g.drop_duplicates("seed", keep="first").set_index("seed") for bal, g in group.groupby("balancer")}
        order = sorted(per, key=lambda b: (ROW_ORDER.index(b) if b in ROW_ORDER else len(ROW_ORDER), b))
        for bal in order:
            row: dict[str, Any] = {"dataset": dataset, "backbone": backbone, "balancer": bal,
                                   "n_seeds": len(per[bal])}
            for m in metrics:
                values = per[bal][m].dropna() if m in per[bal] else pd.Series(dtype=float)
                if values.empty:  # e.g. the uni-teacher row has no overall recall
                    row[f"{m}:mean"], row[f"{m}:std"] = np.nan, np.nan
                    continue
                row[f"{m}:mean"] = float(values.mean())
                row[f"{m}:std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan  # one seed: no spread
                if base_row in per and bal != base_row and m in per[base_row]:
                    base = per[base_row][m].dropna()
                    base_mean = float(base.mean()) if not base.empty else np.nan
                    row[f"{m}:impr%"] = 100.0 * (row[f"{m}:mean"] / base_mean - 1.0) if base_mean else np.nan
                    row[f"{m}:p"] = paired_test(base.to_dict(), values.to_dict())
            out.append(row)
    return pd.DataFrame(out)


def label(metric: str) -> str:
    """A column header: ``test/recall_at_20/text`` -> ``Recall@20 (text only)``."""
    names = {"recall": "Recall", "ndcg": "NDCG", "ndcg_lattice": "NDCG-LATTICE", "precision": "Precision", "hit": "Hit"}
    _, name, *modality = metric.split("/")
    base, k = name.rsplit("_at_", 1)
    return f"{names.get(base, base)}@{k}" + (f" ({modality[0]} only)" if modality else "")


def _fmt(row: pd.Series, metrics: tuple[str, ...]) -> list[str]:
    cells = [str(row["dataset"]), str(row["backbone"]), str(row["balancer"]), str(row["n_seeds"])]
    for m in metrics:
        if pd.isna(row[f"{m}:mean"]):
            cells.append("–")
            continue
        text = f"{row[f'{m}:mean']:.4f}" + (f" ± {row[f'{m}:std']:.4f}" if pd.notna(row[f"{m}:std"]) else "")
        if pd.notna(row.get(f"{m}:impr%", np.nan)):
            p = row[f"{m}:p"]
            text += f" ({row[f'{m}:impr%']:+.1f}%, p={p:.3f}{'*' if p <= 0.05 else ''})"
        if pd.notna(row.get(f"{m}:paper", np.nan)):
            text += f" [paper {row[f'{m}:paper']:.4f}]"
        cells.append(text)
    return cells


def to_markdown(table: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> str:
    """Markdown; improvement and paired-test p vs the base row in brackets, * where p ≤ 0.05."""
    head = ["dataset", "backbone", "balancer", "seeds", *map(label, metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(r, metrics)) + " |" for _, r in table.iterrows()]
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> str:
    """A tabular environment (booktabs)."""
    head = ["dataset", "backbone", "balancer", "seeds", *(label(m) for m in metrics)]
    lines = [r"\begin{tabular}{llll" + "r" * len(metrics) + "}", r"\toprule", " & ".join(head) + r" \\", r"\midrule"]
    for _, r in table.iterrows():
        cells = [c.replace("±", r"$\pm$").replace("%", r"\%").replace("_", r"\_") for c in _fmt(r, metrics)]
        lines.append(" & ".join(cells) + r" \\")
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"
