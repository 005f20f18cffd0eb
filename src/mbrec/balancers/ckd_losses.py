"""The equations of CKD (docs/method.md; equation numbers are the paper's), as pure tensor functions.

Inputs are pairwise margins: ``dt`` the teacher's Δt, ``ds`` the student's Δs, one value per triple.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

SPECIFIC_LOSSES = ("hinge", "kl", "mse")
REDUCTIONS = ("mean", "sum")
GD_FORMS = ("logsigmoid", "official")
WEIGHT_SCALES = ("authors", "paper")


def reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    raise ValueError(f"reduction={reduction!r}: use 'mean' or 'sum'")


def specific_distillation(dt: torch.Tensor, ds: torch.Tensor, kind: str = "hinge", tau: float = 0.1) -> torch.Tensor:
    """Per-triple specific distillation on observed triples (u, i, j).

    * ``hinge`` (eq. 11): max(Δt − Δs, 0) — the student must do at least as well as the teacher.
    * ``kl`` (Table 3 "repl. KL"): KL(Bern(σ(Δt/τ)) ‖ Bern(σ(Δs/τ))).
    * ``mse`` (Table 3 "repl. MSE"): (Δt − Δs)².
    """
    if kind == "hinge":
        return torch.clamp(dt - ds, min=0.0)
    if kind == "mse":
        return (dt - ds) ** 2
    if kind == "kl":
        pt = torch.sigmoid(dt / tau)
        log_pt, log_1mpt = F.logsigmoid(dt / tau), F.logsigmoid(-dt / tau)
        log_ps, log_1mps = F.logsigmoid(ds / tau), F.logsigmoid(-ds / tau)
        return pt * (log_pt - log_ps) + (1 - pt) * (log_1mpt - log_1mps)
    raise ValueError(f"specific_loss={kind!r}: use 'hinge', 'kl' or 'mse'")


def generic_distillation(dt: torch.Tensor, ds: torch.Tensor, tau: float = 0.1, form: str = "logsigmoid") -> torch.Tensor:
    """Per-sample generic distillation on uniform (u, j, k) (eqs. 12–13):
    −[σ(Δt/τ) log σ(Δs/τ) + (1 − σ(Δt/τ)) log(1 − σ(Δs/τ))].

    ``logsigmoid`` (default) computes the logs as log-sigmoids (exact, never saturates); ``official`` is
    the authors' log(σ(x) + 1e-8) and log(1 − σ(x) + 1e-8), whose gradient vanishes once |Δs/τ| ≳ 17."""
    pt = torch.sigmoid(dt / tau)
    if form == "logsigmoid":
        return -(pt * F.logsigmoid(ds / tau) + (1 - pt) * F.logsigmoid(-ds / tau))
    if form == "official":
        ps = torch.sigmoid(ds / tau)
        return -(pt * torch.log(ps + 1e-8) + (1 - pt) * torch.log(1 - ps + 1e-8))
    raise ValueError(f"gd_form={form!r}: use one of {', '.join(GD_FORMS)}")


def treatment_effect(ds_full: torch.Tensor, ds_without_m: torch.Tensor) -> torch.Tensor:
    """Individual treatment effect of modality m on each triple (eq. 15): δ^m = Δs − Δs̄^(−m)."""
    return ds_full - ds_without_m


def relative_effect(ite: torch.Tensor, denominator: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """ρ^m = γ^m / Σ_batch denominator (eqs. 16–17), with γ^m = mean_batch δ^m (the ATE).

    The denominator is the teacher's margin Δt^m by default (``rho_denominator``). ρ is clamped at
    ``eps`` from below: the paper states no guard, and a negative ρ would push λ outside [0, 1]."""
    return torch.clamp(ite.mean() / denominator.sum(), min=eps)


def modality_weights(rho: Mapping[str, torch.Tensor], scale: str = "authors") -> dict[str, torch.Tensor]:
    """λ_m = 1 − ρ^m / Σ_m' ρ^m' (eq. 18): the weaker modality (lower ρ) gets the larger weight.

    Eq. 18 as printed sums to M − 1 over the M modalities (``scale="paper"``). The authors' code — where
    the paper's tuned λ_kd comes from — weights the two modalities so that they sum to M = 2, the same
    total as "w/o re-weight" (λ_m = 1 each); ``scale="authors"`` (default) multiplies by M/(M − 1) so
    every re-weighting mode distils at the same total strength and differs only in the split."""
    if scale not in WEIGHT_SCALES:
        raise ValueError(f"weight_scale={scale!r}: use one of {', '.join(WEIGHT_SCALES)}")
    total = sum(rho.values())
    n = len(rho)
    factor = n / (n - 1) if scale == "authors" and n > 1 else 1.0
    return {m: factor * (1.0 - r / total) for m, r in rho.items()}


def official_ratios(ite: Mapping[str, torch.Tensor], ds_unimodal: Mapping[str, torch.Tensor],
                    low: float = 1e-8, high: float = 10.0) -> dict[str, torch.Tensor]:
    """The authors' per-triple relative effects c^m_b = clamp(δ^m_b / Δs^m_b, 1e-8, 10) (Δs^m: the
    student's m-only margin; a 0/0 counts as ``low``): the code's ρ^m, logged as ``ckd/rho/<m>``."""
    return {m: torch.clamp(torch.nan_to_num(ite[m] / ds_unimodal[m], nan=low), low, high) for m in ite}


def official_weights(ite: Mapping[str, torch.Tensor], ds_unimodal: Mapping[str, torch.Tensor],
                     low: float = 1e-8, high: float = 10.0) -> dict[str, torch.Tensor]:
    """The CKD authors' per-triple weights (their ``train_kd.py``; docs/method.md, "Re-weighting modes"),
    generalised to M modalities:
    c^m_b = clamp(δ^m_b / Δs^m_b, 1e-8, 10) with Δs^m the student's m-only margin, and
    r^m_b = M/(M−1) · (1 − c^m_b / Σ_m' c^m'_b), which for two modalities is 2c^other/(c^t + c^v)
    and sums to 2 per triple."""
    c = official_ratios(ite, ds_unimodal, low, high)
    total = sum(c.values())
    n = len(c)
    return {m: n / (n - 1) * (1.0 - cm / total) for m, cm in c.items()}
