"""The paper's tables from MLflow runs: mean ± std over seeds, and the change over the base row with a
paired t-test on the seeds both rows share.

A row is one (data fingerprint, scale, backbone, balancer, settings other than the seed). Runs that
differ in anything else than the seed are never averaged together: a block of rows per (dataset,
fingerprint, scale), and inside a (backbone, balancer) the runs are split into rows labelled by the
settings that differ (``docs/reports.md``).

Table 1: one row per balancer (overall Recall/NDCG/Precision@20). Table 2: the same runs' per-modality
recall plus CKD's ``uni-teacher`` row. Table 3: CKD's variants. The CKD-specific rows:
:mod:`mbrec.report.ckd_rows`; labels and order of the others: the balancer registry (:mod:`mbrec.report.rows`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pandas as pd
from scipy import stats

from mbrec.report import rows as R
from mbrec.report.ckd_rows import modalities, table2_runs, table3_runs, variant_label  # noqa: F401 (re-exported)
from mbrec.report.runs import load_runs, with_defaults  # noqa: F401 (re-exported)

#: Table 1's columns; the paper's NDCG is the CKD/LATTICE code's variant (``ndcg_lattice``, the one
#: compared with the paper's value; docs/evaluation.md#metrics), the standard NDCG is shown beside it
METRICS = ("test/recall_at_20", "test/ndcg_at_20", "test/ndcg_lattice_at_20", "test/precision_at_20")
BASE = R.BASE
SIGNIFICANCE = 0.05
#: the paper's dataset and backbone order (others follow alphabetically)
DATASET_ORDER = ("baby", "sports", "clothing", "beauty")
BACKBONE_ORDER = tuple(R.BACKBONE_NAMES)
#: per-row provenance columns of a cell table (the block's data size, code and budget)
PROVENANCE = ("fingerprint", "scale", "users", "items", "interactions", "max_epochs", "patience", "eval_every",
              "commit", "dirty", "trials", "tune_epochs", "search", "device")


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


def paired_change(base: dict[int, float], other: dict[int, float]) -> tuple[float, float, int]:
    """(relative change in %, paired p, n) of ``other`` over ``base`` on the seeds both have."""
    seeds = sorted(set(base) & set(other))
    if not seeds:
        return np.nan, np.nan, 0
    base_mean = float(np.mean([base[s] for s in seeds]))
    impr = 100.0 * (float(np.mean([other[s] for s in seeds])) / base_mean - 1.0) if base_mean else np.nan
    return impr, paired_test(base, other), len(seeds)


def preset_filters(preset: str) -> list[str]:
    """MLflow filters for the runs of a preset: its marker tag (set on every run of the preset and on
    runs it replayed, ``mbrec.record.Tag.preset_marker``) or, for older runs, the ``mbrec_experiment`` tag."""
    from mbrec.record import Tag

    return [f"tags.`{Tag.preset_marker(preset)}` = 'true'", f"tags.{Tag.PRESET} = '{preset}'"]


def _order(values, paper: tuple[str, ...]) -> list:
    return sorted(values, key=lambda v: (paper.index(v) if v in paper else len(paper), str(v)))


def differing_keys(configs: list[tuple]) -> list[str]:
    """The settings whose value is not the same in every one of ``configs`` (absent counts as a value)."""
    dicts = [dict(c) for c in configs]
    return sorted(k for k in set().union(*dicts) if len({d.get(k) for d in dicts}) > 1)


@dataclass
class RowGroup:
    """The runs of one table row."""

    block: tuple  # (dataset, fingerprint, scale)
    backbone: str
    balancer: str
    split: dict[str, str]  # the settings that set this row apart from the balancer's other rows
    config: tuple
    runs: pd.DataFrame  # one per seed, newest first

    @property
    def split_label(self) -> str:
        """``optimizer.lr=0.001, balancer.lambda_kd=0.1`` ("" when the balancer has one row)."""
        return ", ".join(f"{k}={v}" for k, v in self.split.items())


def _block_key(block: tuple) -> tuple:
    dataset, fingerprint, scale = (str(x) for x in block)
    paper = DATASET_ORDER.index(dataset) if dataset in DATASET_ORDER else len(DATASET_ORDER)
    return paper, dataset, scale != "default", scale, fingerprint


def device_kind(device: object) -> str:
    """``cuda:1`` -> ``cuda``, ``cpu`` -> ``cpu``; "" when unknown (runs without the device tag)."""
    text = str(device or "")
    return "" if text in ("", "nan") else text.split(":", 1)[0]


def _row_key(run: pd.Series) -> tuple:
    """What a row is beside its block, backbone and balancer: the settings other than the seed, and the
    kind of device the run trained on (CPU and GPU runs of the same settings are never averaged together)."""
    kind = device_kind(run.get("device", ""))
    return tuple(run["config"]) + ((("device", kind),) if kind else ())


def row_groups(runs: pd.DataFrame) -> Iterator[RowGroup]:
    """The runs of every table row, in the report's order.

    Blocks of rows per (dataset, fingerprint, scale). Inside a (block, backbone, balancer), runs with
    different settings (or devices: ``device=cpu`` / ``device=cuda``) become one row each, labelled by the
    settings that differ; a seed run twice with the same settings counts once (the newest run: ``runs``
    is newest first)."""
    runs = with_defaults(runs)
    blocks = runs.groupby(["dataset", "fingerprint", "scale"], sort=False, dropna=False)
    for block in sorted(blocks.groups, key=_block_key):
        group = blocks.get_group(block)
        for backbone in _order(group["backbone"].unique(), BACKBONE_ORDER):
            cell = group[group["backbone"] == backbone]
            for balancer in sorted(cell["balancer"].unique(), key=R.order_key):
                bal = cell[cell["balancer"] == balancer]
                keys = bal.apply(_row_key, axis=1)
                configs = list(dict.fromkeys(keys))
                differing = differing_keys(configs)
                found = []
                for config in configs:
                    values = dict(config)
                    split = {k: values.get(k, "(unset)") for k in differing}
                    sub = bal[keys.map(lambda c, config=config: c == config)].drop_duplicates("seed")
                    found.append(RowGroup(block, backbone, balancer, split, config, sub))
                yield from sorted(found, key=lambda g: g.split_label)


def _joined(values) -> str:
    """Distinct non-empty values, in order, joined by ``/``."""
    return "/".join(dict.fromkeys(str(v) for v in values if str(v) not in ("", "nan")))


def _base_for(rows: list[dict], row: dict, base_row: str) -> tuple[dict | None, str]:
    """The base row ``row`` is compared with, or None and why (the reason is printed under the table).

    A row the Table 1 driver tuned (``budget.base`` tag) is compared only with the base row of that
    tuning (``budget.tuning`` = the same id): the tuned base of the same dataset, backbone, budget and
    scale; never with a base row of another (e.g. an older) tuning. (With another ``base_row``, Table 3's
    CKD, a row is compared with the reference row of its own tuning.) Any other row: the only base row of
    its block and backbone, or, when the base is split, the one whose differing settings ``row`` shares.
    Nothing is picked when that is not exactly one row."""
    g = row["_group"]
    bases = [b for b in rows if b["balancer"] == base_row and b["_group"].block == g.block
             and b["backbone"] == g.backbone]
    label = R.label(base_row)
    link = "base_tuning" if base_row == BASE else "tuning"  # Table 3: the variants of one CKD tuning
    wanted = _joined(g.runs[link]) if link in g.runs else ""
    if wanted:
        if "/" in wanted:
            return None, f"its seeds were tuned against different {label} tunings ({wanted})"
        bases = [b for b in bases if _joined(b["_group"].runs["tuning"]) == wanted]
        if len(bases) != 1:
            what = "missing" if not bases else f"ambiguous ({len(bases)} rows)"
            return None, f"the tuned {label} row it was tuned against (tuning {wanted}) is {what}"
        kind = dict(bases[0]["_group"].config).get("device")
        if kind and dict(g.config).get("device") not in (None, kind):
            return None, f"the tuned {label} row ran on {kind}, this row on {dict(g.config)['device']}"
        return bases[0], ""
    if not bases:
        return None, f"no {label} row of the same data, scale and backbone"
    if len(bases) > 1:
        config = dict(g.config)
        shared = [b for b in bases if all(config.get(k, "(unset)") == v for k, v in b["_group"].split.items())]
        if len(shared) != 1:
            return None, f"{len(bases)} {label} rows, {len(shared)} with its settings: none picked"
        bases = shared
    return bases[0], ""


def _peer_for(rows: list[dict], row: dict, peer: str) -> dict | None:
    """The ``peer`` row (e.g. CKD) a row beyond the paper is also compared with: the only ``peer`` row of
    its block and backbone tuned against the same base row (``budget.base``), when there is exactly one."""
    g = row["_group"]
    wanted = _joined(g.runs["base_tuning"]) if "base_tuning" in g.runs else ""
    peers = [p for p in rows if p["balancer"] == peer and p["_group"].block == g.block and p["backbone"] == g.backbone
             and (not wanted or _joined(p["_group"].runs["base_tuning"]) == wanted)]
    return peers[0] if len(peers) == 1 else None


def cell_table(runs: pd.DataFrame, metrics: tuple[str, ...] = METRICS, base_row: str = BASE,
               peer: str | None = None) -> pd.DataFrame:
    """One row per (dataset, fingerprint, scale, backbone, balancer, settings but the seed): mean, std and
    seeds, and against ``base_row``: change %, paired p and the number n of paired seeds. ``paper``: the
    row's name in the paper's tables ("" for a row beyond the paper, :func:`beyond_paper`). ``peer``: the
    rows beyond the paper are also compared with this row (``<metric>:impr%:vs``, ``:p:vs``, ``:n:vs``;
    Table 1: CKD, tuned against the same base row)."""
    rows: list[dict[str, Any]] = []
    for g in row_groups(runs):
        sub = g.runs.set_index("seed")
        row: dict[str, Any] = {
            "dataset": g.block[0], "backbone": g.backbone, "balancer": g.balancer, "label": R.label(g.balancer),
            "paper": R.paper_row(g.balancer) or "",
            "split": g.split_label, "n_seeds": len(sub), "seeds": ",".join(map(str, sorted(sub.index))),
            **{col: _joined(sub[col]) for col in PROVENANCE}, "fingerprint": g.block[1], "scale": g.block[2],
            "_group": g, "_values": {m: sub[m].dropna().to_dict() if m in sub else {} for m in metrics},
            "max_epochs_hit": int((sub["max_epochs_hit"].astype(str) == "true").sum()),
        }
        for m in metrics:
            values = pd.Series(row["_values"][m], dtype=float)
            row[f"{m}:mean"] = float(values.mean()) if len(values) else np.nan  # e.g. uni-teacher: no overall
            row[f"{m}:std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan  # one seed: no spread
        rows.append(row)
    for row in rows:
        base, why = _base_for(rows, row, base_row) if row["balancer"] != base_row else (row, "")
        row["base"] = "" if base is None else R.label(base_row) + (f" ({base['split']})" if base["split"] else "")
        row["base_note"] = why
        for m in metrics:
            if base is None or row is base or not row["_values"][m] or not base["_values"][m]:
                continue
            row[f"{m}:impr%"], row[f"{m}:p"], row[f"{m}:n"] = paired_change(base["_values"][m], row["_values"][m])
        other = _peer_for(rows, row, peer) if peer and not row["paper"] and row["balancer"] != peer else None
        row["vs"] = "" if other is None else R.label(peer) + (f" ({other['split']})" if other["split"] else "")
        for m in metrics:
            if other is not None and row["_values"][m] and other["_values"][m]:
                row[f"{m}:impr%:vs"], row[f"{m}:p:vs"], row[f"{m}:n:vs"] = paired_change(other["_values"][m],
                                                                                         row["_values"][m])
    table = pd.DataFrame(rows)
    return table.drop(columns=[c for c in table.columns if c.startswith("_")]) if not table.empty else table


# ---------------------------------------------------------------- text: headers, cells, provenance
def label(metric: str) -> str:
    """A column header: ``test/recall_at_20/text`` -> ``Recall@20 (text only)``."""
    names = {"recall": "Recall", "ndcg": "NDCG", "ndcg_lattice": "NDCG-LATTICE", "precision": "Precision", "hit": "Hit"}
    _, name, *modality = metric.split("/")
    base, k = name.rsplit("_at_", 1)
    return f"{names.get(base, base)}@{k}" + (f" ({modality[0]} only)" if modality else "")


def is_smoke(scale: str) -> bool:
    """A smoke-scale run: its numbers check the pipeline, they are no result."""
    return str(scale) == "smoke"


def scaled(scale: str) -> bool:
    """Any scale other than the default: marked on every row (``[smoke]``)."""
    return str(scale) not in ("default", "", "nan")


def row_name(row: pd.Series) -> str:
    """The row label with the settings that split it: ``+CKD (optimizer.lr=0.001)``."""
    return str(row["label"]) + (f" ({row['split']})" if isinstance(row.get("split"), str) and row["split"] else "")


def dataset_name(row: pd.Series, table: pd.DataFrame) -> str:
    """``synthetic``, with the scale when not the default and the fingerprint when one dataset name
    has several in the table."""
    text = str(row["dataset"])
    if scaled(row.get("scale", "default")):
        text += f" [{row['scale']}]"
    if "fingerprint" in table and table.loc[table["dataset"] == row["dataset"], "fingerprint"].nunique() > 1:
        text += f" {str(row['fingerprint'])[:8]}"
    return text


def budget(row: pd.Series) -> str:
    """A row's tuning budget (``budget.*`` tags of the Table 1 driver), or – when not recorded."""
    parts = [f"{row[c]} {name}" for c, name in (("trials", "trials"), ("tune_epochs", "epochs"))
             if str(row.get(c, "")) not in ("", "nan")]
    if str(row.get("search", "")) not in ("", "nan"):
        parts.append(str(row["search"]))
    return ", ".join(parts) or "–"


def beyond_paper(row: pd.Series) -> bool:
    """A row the paper's tables do not have (``Row.paper_row`` None: UMT, the teacher ensemble, ...)."""
    return "paper" in row and str(row["paper"]) in ("", "nan")


#: the mark of a row beyond the paper (Markdown, long layout and the paper layout's row names)
BEYOND = "†"


def _p_text(p: float) -> str:
    return "p –" if pd.isna(p) else f"p={p:.3f}{'*' if p <= SIGNIFICANCE else ''}"


def row_cells(row: pd.Series, metrics: tuple[str, ...], table: pd.DataFrame) -> list[str]:
    """The text cells of one row of the long layout (Markdown and ``--layout long``)."""
    name = row_name(row) + (f" {BEYOND}" if beyond_paper(row) else "")
    cells = [dataset_name(row, table), str(row["backbone"]), name, str(row["n_seeds"])]
    for m in metrics:
        if pd.isna(row[f"{m}:mean"]):
            cells.append("–")
            continue
        text = f"{row[f'{m}:mean']:.4f}" + (f" ± {row[f'{m}:std']:.4f}" if pd.notna(row[f"{m}:std"]) else "")
        if pd.notna(row.get(f"{m}:impr%", np.nan)):
            text += f" ({row[f'{m}:impr%']:+.1f}%, {_p_text(row[f'{m}:p'])}, n={int(row[f'{m}:n'])})"
        if pd.notna(row.get(f"{m}:impr%:vs", np.nan)):
            text += (f" (vs {row['vs']}: {row[f'{m}:impr%:vs']:+.1f}%, {_p_text(row[f'{m}:p:vs'])}, "
                     f"n={int(row[f'{m}:n:vs'])})")
        if pd.notna(row.get(f"{m}:paper", np.nan)):
            text += f" [paper {row[f'{m}:paper']:.4f}]"
        cells.append(text)
    cells.append(budget(row))
    return cells


def to_markdown(table: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> str:
    """The table in Markdown, one line per row; change, paired p and n vs the base row in brackets."""
    head = ["dataset", "backbone", "row", "seeds", *map(label, metrics), "tuning budget"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row_cells(r, metrics, table)) + " |" for _, r in table.iterrows()]
    return "\n".join(lines) + "\n"


TITLES = {
    "table1": "Table 1: top-20 test metrics of each backbone with each balancer",
    "table2": "Table 2: test Recall@20 of each modality alone (the other's input ablated), with CKD's teachers",
    "table3": "Table 3: test Recall@20 of CKD's ablations",
}
SMOKE_TITLE = "SMOKE SCALE (tiny data and budgets: a check that the pipeline runs, not a result)"


def title(what: str, table: pd.DataFrame) -> str:
    """The table's title, marked when any of its rows are smoke-scale runs."""
    text = TITLES.get(what, what)
    return f"{SMOKE_TITLE} — {text}" if "scale" in table and table["scale"].map(is_smoke).any() else text


def _short(commit: str) -> str:
    return "/".join(c[:9] for c in str(commit).split("/")) if commit else "unknown"


def provenance(table: pd.DataFrame, how_to_read: bool = True) -> list[str]:
    """One line per block (dataset, fingerprint, scale) of the table: data size and fingerprint, epoch
    budget, seeds, tuning budget per row and code version; and (``how_to_read``) what the cells hold."""
    lines = []
    for (dataset, fingerprint, scale), block in table.groupby(["dataset", "fingerprint", "scale"], sort=False,
                                                               dropna=False):
        first = block.iloc[0]
        size = ", ".join(f"{first[c] if str(first[c]) not in ('', 'nan') else '–'} {c}"
                         for c in ("users", "items", "interactions"))
        epochs = _joined(block["max_epochs"]) or "–"
        seeds = _joined(block["seeds"])
        seed_text = f"seeds {seeds} in every row" if block["seeds"].nunique() == 1 else "seeds per row: " + "; ".join(
            f"{row_name(r)} {r['seeds']}" for _, r in block.iterrows())
        budgets = block.apply(budget, axis=1)
        budget_text = (f"tuning budget per row: {budgets.iloc[0]}" if budgets.nunique() == 1
                       else "tuning budget: " + "; ".join(f"{row_name(r)} {b}" for (_, r), b in zip(block.iterrows(), budgets)))
        dirty = " (with uncommitted changes)" if "true" in _joined(block["dirty"]).split("/") else ""
        devices = block["device"] if "device" in block else pd.Series([""] * len(block))
        device_text = ("" if not _joined(devices) else f"; device {_joined(devices)}" if devices.nunique() == 1 else
                       "; devices per row: " + "; ".join(f"{row_name(r)} {d or 'not recorded'}"
                                                        for (_, r), d in zip(block.iterrows(), devices)))
        mark = f" [{scale}]" if scaled(scale) else ""
        lines.append(
            f"{dataset}{mark}: {size}; data fingerprint {fingerprint or 'unknown'}; training ≤ {epochs} epochs "
            f"(validation every {_joined(block['eval_every']) or '–'}, patience {_joined(block['patience']) or '–'}); "
            f"{seed_text}; {budget_text}{device_text}; code {_short(_joined(block['commit']))}{dirty}")
    lines += row_notes(table)
    if how_to_read:
        lines.append("Cells: mean ± std over seeds; (change, p, n) = relative change over the base row and two-sided "
                     f"paired t-test on the n seeds both rows share (* p ≤ {SIGNIFICANCE}).")
    if "paper" in table and table.apply(beyond_paper, axis=1).any():
        vs = _joined(table["vs"]) if "vs" in table else ""
        lines.append(f"{BEYOND}: a row beyond the paper (its tables have no such row)"
                     + (f"; its cells also give the change and paired p against {vs} of the same tuning (vs ...)."
                        if vs else "."))
    if "split" in table and (table["split"].astype(str) != "").any():
        lines.append("Rows with settings in brackets: runs of one balancer that differ in more than the seed, kept "
                     "apart; each is compared with the base row of the same settings where there is exactly one.")
    return lines


def row_notes(table: pd.DataFrame) -> list[str]:
    """Footnotes on single rows: a row without a change because its base row is missing or ambiguous
    (never compared with another), and seeds that stopped at ``train.max_epochs`` while still improving."""
    lines = []
    for _, r in table.iterrows():
        where = f"{dataset_name(r, table)} {r['backbone']} {row_name(r)}"
        if str(r.get("base_note", "") or "") not in ("", "nan"):
            lines.append(f"{where}: no change over the base row: {r['base_note']}.")
        hit = int(r.get("max_epochs_hit", 0) or 0)
        if hit:
            lines.append(f"{where}: {hit} of {r['n_seeds']} seeds stopped at train.max_epochs={r['max_epochs']} "
                         "while still improving (the budget bound, not early stopping; raise train.max_epochs).")
    return lines


def markdown_document(what: str, table: pd.DataFrame, metrics: tuple[str, ...]) -> str:
    """Title, table and provenance as one Markdown document."""
    return (f"## {title(what, table)}\n\n" + to_markdown(table, metrics) + "\n"
            + "".join(f"- {line}\n" for line in provenance(table)))
