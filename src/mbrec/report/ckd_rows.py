"""The report rows that exist only for the paper's method, CKD (all of them, in one place).

* Table 1's Δ row: the relative change of ``PROPOSED`` over the base row.
* Table 2's ``uni-teacher`` row: the test recall of the uni-modal teachers every CKD run logs as
  ``teacher/<m>/test/*``.
* Table 3's variants: CKD runs labelled by the ablation their params select (:func:`variant_label`),
  compared with full CKD.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: the method whose change over the base row is Table 1's Δ row, and Table 3's reference row
PROPOSED = "ckd"
UNI_TEACHER = "uni-teacher"
#: row key -> (label, row order, the paper's row name); CKD itself is a balancer (registry)
CKD_ROWS: dict[str, tuple[str, int, str | None]] = {
    UNI_TEACHER: ("uni-teacher", 35, "uni-teacher"),
    "ckd w/o Gen.": ("w/o Gen.", 31, "w/o. Gen."),
    "ckd w/o re-weight": ("w/o re-weight", 32, "w/o. re-weight"),
    "ckd repl. KL": ("repl. KL", 33, "repl. KL-divergence Loss"),
    "ckd repl. MSE": ("repl. MSE", 34, "repl. MSE Loss"),
}


def variant_label(balancer: str | None, params: dict[str, str]) -> str:
    """Table 3's row key of a run: the CKD ablation its params select (other balancers: their name).
    Combined ablations get a combined key (``ckd w/o Gen., w/o re-weight``), placed after the paper's."""
    if balancer != PROPOSED:
        return str(balancer)
    changes = []
    if float(params.get("balancer.lambda_g", 1.0)) == 0.0:
        changes.append("w/o Gen.")
    if params.get("balancer.reweight", "official") == "none":
        changes.append("w/o re-weight")
    loss = params.get("balancer.specific_loss", "hinge")
    if loss != "hinge":
        changes.append(f"repl. {loss.upper()}")
    return f"{PROPOSED} " + ", ".join(changes) if changes else PROPOSED


def variant_row(key: str) -> tuple[str, int, str | None] | None:
    """Label, order and paper row of a CKD variant key not in :data:`CKD_ROWS` (a combination)."""
    if key.startswith(f"{PROPOSED} ") and key not in CKD_ROWS:
        return key[len(PROPOSED) + 1:], 39, None
    return CKD_ROWS.get(key)


def modalities(runs: pd.DataFrame) -> list[str]:
    """Modality names present as per-modality test recall columns."""
    return sorted({c.rsplit("/", 1)[1] for c in runs.columns if c.startswith("test/recall_at_20/")})


def table2_runs(runs: pd.DataFrame) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Table 2's rows: every run, plus one ``uni-teacher`` row per CKD run whose per-modality recall
    is its teachers' test recall; and the metric columns (overall and per-modality Recall@20)."""
    mods = modalities(runs)
    teachers = runs[runs["balancer"] == PROPOSED].copy()
    if not teachers.empty:
        for m in mods:
            teachers[f"test/recall_at_20/{m}"] = teachers.get(f"teacher/{m}/test/recall_at_20", np.nan)
        teachers["test/recall_at_20"] = np.nan
        teachers["balancer"] = UNI_TEACHER
        runs = pd.concat([runs, teachers], ignore_index=True)
    return runs, ("test/recall_at_20", *(f"test/recall_at_20/{m}" for m in mods))


def table3_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 3's rows: the CKD variants (and the base, if present) keyed by their variant label."""
    return runs.assign(balancer=runs["variant"])
