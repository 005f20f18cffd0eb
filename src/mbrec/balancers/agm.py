"""``balancer=agm``: Adaptive Gradient Modulation (Li et al., ICCV 2023) adapted to BPR
(docs/balancers.md#agm-balanceragm).

Per batch:

1. **mono-modal response** of m on triple b (the official code's Shapley form): with f(S) the pairwise
   margin of the pass that keeps only the modalities S (f(all) = the full margin Δ_b),
   φᵐ_b = Σ_{S ⊆ M∖{m}} |S|!(M−|S|−1)!/M! · [f(S ∪ {m}) − f(S)] + f(∅)/M, so that Σ_m φᵐ_b = Δ_b
   (two modalities: φᵃ = ½(f(av) − f(v) + f(a)), the official ``Modality_Audio``); f(∅) cancels, so
   2^M − 2 extra passes (:func:`shapley_coefficients`);
2. **score** sᵐ = mean_b −ln σ(φᵐ_b), each term capped at −ln 1e-8 (the official cross-entropy of the
   true class, with the official floor);
3. **coefficient** (:func:`agm_coefficients`) kᵐ = exp(α · min(r̂ᵐ − rᵐ, 10)) with
   rᵐ = exp(M/(M−1) · (s̄ − sᵐ)) from this batch and r̂ᵐ the same from the running averages T (the
   official ``ratio`` / ``optimal_ratio``; M = 2: rᵃ = exp(sᵛ − sᵃ));
4. **running average**, after the coefficients: Tᵐ ← Tᵐ (t−1)/t + sᵐ/t over every step t since the
   start (:func:`update_running`);
5. **modulated backward**: the BPR of the fused margin Σ_m φᵐ (= Δ) with the gradient through φᵐ
   multiplied by kᵐ (the official backward hooks; here Σ_m [kᵐ φᵐ + (1 − kᵐ) sg(φᵐ)], whose value is Δ).

Inside ``modulation_starts ≤ epoch ≤ modulation_ends`` only (coefficients 1 outside it); the running
averages are updated at every step, as in the official code.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from mbrec.backbones.base import Backbone
from mbrec.balancers.base import Balancer, Row, RunContext, register
from mbrec.errors import ConfigError
from mbrec.training.objective import BatchPass, batch_pass

log = logging.getLogger(__name__)

SCORE_CAP = -math.log(1e-8)  # the official floor of the true-class probability, 1e-8


def shapley_coefficients(modalities: Sequence[str]) -> dict[str, dict[frozenset[str], float]]:
    """φᵐ = Σ_T c_m(T) f(T) over the non-empty kept sets T: c_m(T) = w(|T|−1) if m ∈ T, −w(|T|) if
    not, with w(s) = s!(M−s−1)!/M!; the f(∅) terms of the Shapley value cancel with the f(∅)/M share."""
    mods = list(modalities)
    n = len(mods)

    def w(s: int) -> float:
        return math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)

    out: dict[str, dict[frozenset[str], float]] = {m: {} for m in mods}
    for size in range(1, n + 1):
        for kept in itertools.combinations(mods, size):
            t = frozenset(kept)
            for m in mods:
                out[m][t] = w(size - 1) if m in t else -w(size)
    return out


def agm_coefficients(scores: Mapping[str, torch.Tensor], running: Mapping[str, torch.Tensor],
                     alpha: float, cap: float = 10.0) -> dict[str, torch.Tensor]:
    """kᵐ = exp(α · min(r̂ᵐ − rᵐ, cap)), rᵐ = exp(M/(M−1)(s̄ − sᵐ)), r̂ᵐ the same from the running
    averages (scores are losses: lower = better, so the modality ahead of its usual standing is slowed)."""
    n = len(scores)
    if n < 2:
        return {m: torch.ones_like(s) for m, s in scores.items()}
    factor = n / (n - 1)
    s_mean = sum(scores.values()) / n
    t_mean = sum(running.values()) / n
    out = {}
    for m in scores:
        ratio = torch.exp(factor * (s_mean - scores[m]))
        optimal = torch.exp(factor * (t_mean - running[m]))
        out[m] = torch.exp(alpha * torch.clamp(optimal - ratio, max=cap))
    return out


def update_running(running: torch.Tensor, score: torch.Tensor, step: int) -> torch.Tensor:
    """The official cumulative mean: T ← T (t−1)/t + s/t at the t-th step (1-based) since the start."""
    return running * ((step - 1) / step) + score / step


def response_score(phi: torch.Tensor) -> torch.Tensor:
    """sᵐ = mean_b min(−ln σ(φᵐ_b), −ln 1e-8): φᵐ read as the logit of "i above j"."""
    return torch.clamp(-F.logsigmoid(phi), max=SCORE_CAP).mean()


@register("agm", Row(label="+AGM", order=60, paper_row=None,
                     search_space={"alpha": [0.1, 0.5, 1.0, 2.5]}))  # around the official values (1.0 default, 2.5 README, 0.1 BB)
class AGM(Balancer):
    def __init__(self, alpha: float = 1.0, modulation_starts: int = 0, modulation_ends: int | None = 19,
                 cap: float = 10.0) -> None:
        if alpha < 0:
            raise ConfigError(f"balancer.alpha={alpha}: must be >= 0 (AGM's α; official default 1.0)")
        self.alpha, self.cap = float(alpha), float(cap)
        self.starts = int(modulation_starts)
        self.ends = None if modulation_ends is None else int(modulation_ends)
        self.iteration = 0
        self.running: dict[str, torch.Tensor | float] = {}
        self.coef_sum: dict[str, torch.Tensor | float] = {}
        self.modulated = 0
        self._coefs: dict[str, dict[frozenset[str], float]] | None = None

    def passes_per_step(self, modalities: Sequence[str]) -> int:
        return 2 ** len(modalities) - 1  # every non-empty kept set; the full pass is the base pass

    def prepare(self, ctx: RunContext, model: Backbone) -> None:
        if len(model.modalities) < 2:
            log.warning("agm: %d modality, nothing to balance; training as balancer=none", len(model.modalities))

    def active(self, epoch: int) -> bool:
        return self.starts <= epoch and (self.ends is None or epoch <= self.ends)

    def responses(self, model: Backbone, base: BatchPass) -> dict[str, torch.Tensor]:
        """φᵐ per triple (with gradient), from the full pass and one pass per proper non-empty kept set."""
        if self._coefs is None:
            self._coefs = shapley_coefficients(model.modalities)
        every = frozenset(model.modalities)
        margins = {}
        for kept in next(iter(self._coefs.values())):
            margins[kept] = base.margin if kept == every else batch_pass(model, base.batch, every - kept).margin
        return {m: sum(c * margins[t] for t, c in cs.items()) for m, cs in self._coefs.items()}

    def loss(self, model: Backbone, base: BatchPass, epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if len(model.modalities) < 2:
            return sum(base.terms.values()), {}
        phi = self.responses(model, base)
        scores = {m: response_score(v.detach()) for m, v in phi.items()}
        running = {m: torch.as_tensor(self.running.get(m, 0.0), dtype=s.dtype, device=s.device) for m, s in scores.items()}
        active = self.active(epoch)
        coef = agm_coefficients(scores, running, self.alpha, self.cap) if active else \
            {m: torch.ones_like(s) for m, s in scores.items()}
        self.iteration += 1
        self.running = {m: update_running(running[m], scores[m], self.iteration) for m in scores}
        fused = sum(coef[m] * v + (1 - coef[m]) * v.detach() for m, v in phi.items())
        total = sum(v for k, v in base.terms.items() if k != "bpr") - F.logsigmoid(fused).mean()
        logs: dict[str, torch.Tensor] = {}
        for m in model.modalities:
            logs[f"agm/score/{m}"] = scores[m]
            logs[f"agm/running/{m}"] = self.running[m]
            if active:
                logs[f"agm/coef/{m}"] = coef[m]
                self.coef_sum[m] = self.coef_sum.get(m, 0.0) + coef[m].detach()
        self.modulated += int(active)
        return total, logs

    # ----------------------------------------------------------------------------------- records
    def results(self) -> dict[str, Any]:
        n = max(self.modulated, 1)
        return {"alpha": self.alpha, "window": [self.starts, self.ends], "modulated_steps": self.modulated,
                "mean_coefficient": {m: float(v) / n for m, v in self.coef_sum.items()},
                "running_score": {m: float(v) for m, v in self.running.items()}}

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "modulated": self.modulated,
                "running": {m: float(v) for m, v in self.running.items()},
                "coef_sum": {m: float(v) for m, v in self.coef_sum.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration, self.modulated = int(state.get("iteration", 0)), int(state.get("modulated", 0))
        self.running = dict(state.get("running", {}))
        self.coef_sum = dict(state.get("coef_sum", {}))
