"""``balancer=ogm``: OGM-GE (Peng et al., CVPR 2022) adapted to BPR (balancers.md §1.3).

Per batch, while ``modulation_starts <= epoch <= modulation_ends`` (0-based, inclusive):

1. each modality's logit on triple b is its individual treatment effect δ^m_b = Δ_b − Δ_b^{(−m)}
   (full margin minus the margin with m ablated), detached — for VBPR exactly m's additive share;
2. its discrepancy score s^m = Σ_b σ(δ^m_b) (the probability of "i ≻ j" under a two-class softmax
   over (δ, 0), summed over the batch as in the official code);
3. the ratio ρ^m = mean over m' ≠ m of s^m / s^{m'} (= s^t/s^v for two modalities);
4. the coefficient of the OGM paper's eq. 10: k^m = 1 − tanh(α ρ^m) if ρ^m > 1, else 1;
5. between backward and the optimizer step, every gradient owned by m (``Backbone.modality_parameters``,
   tensors with ≥ 2 dimensions by default) becomes k^m·g + ε (GE), ε ~ N(0, (std(g) + 1e-8)²) with
   the std of the unmodulated gradient; shared parameters (ID embeddings, fusion layers) are untouched.

``scope: touched`` (default) draws the GE noise only on the rows that received gradient in this step
(std over those rows), because with Adam dense noise on an embedding table makes every untouched row
take ~lr-sized random steps (balancers.md §1.3); ``scope: dense`` is the official code's literal form.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import torch
from torch import nn

from mbrec.backbones.base import Backbone
from mbrec.balancers.base import Balancer, RunContext, register
from mbrec.training.objective import BatchPass, batch_pass

log = logging.getLogger(__name__)

SCOPES = ("touched", "dense")
FORMS = ("current", "shifted")
CONTRIBUTIONS = ("ite", "unimodal_pass")
PARAMS = ("branch", "encoder")


def discrepancy_ratios(scores: Mapping[str, float]) -> dict[str, float]:
    """ρ^m = mean over m' ≠ m of s^m / s^{m'} (OGM's s^v/s^a for two modalities; BB's OGM_GE3 beyond)."""
    names = list(scores)
    if len(names) < 2:
        return {m: 1.0 for m in names}
    return {m: sum(scores[m] / scores[o] for o in names if o != m) / (len(names) - 1) for m in names}


def coefficient(ratio: float, alpha: float, form: str = "current") -> float:
    """OGM's modulation coefficient: ``current`` = eq. 10 of the paper and the official code since
    a974f3c (1 − tanh(αρ) if ρ > 1 else 1); ``shifted`` = the first release, 1 − tanh(α·relu(ρ − 1))."""
    if form == "current":
        return 1.0 - math.tanh(alpha * ratio) if ratio > 1.0 else 1.0
    if form == "shifted":
        return 1.0 - math.tanh(alpha * max(ratio - 1.0, 0.0))
    raise ValueError(f"balancer.coefficient={form!r}: use one of {FORMS}")


def touched_mask(grad: torch.Tensor) -> torch.Tensor:
    """Which entries of ``grad`` were touched this step: whole rows with any non-zero entry (so an
    embedding row of a batch user counts entirely), or the non-zero entries of a 1-D tensor."""
    if grad.dim() < 2:
        return grad.ne(0)
    return grad.reshape(grad.shape[0], -1).ne(0).any(1)


def modulate_(grad: torch.Tensor, k: float, ge: bool, scope: str, generator: torch.Generator | None) -> None:
    """In place: g ← k·g (+ GE noise N(0, (std(g) + 1e-8)²) with the std of the unmodulated g, on the
    touched rows only or on the whole tensor)."""
    if not ge:
        grad.mul_(k)
        return
    if scope == "dense":
        sigma = float(grad.std()) if grad.numel() > 1 else 0.0
        noise = torch.randn(grad.shape, generator=generator, device=grad.device, dtype=grad.dtype)
        grad.mul_(k).add_(noise.mul_(sigma + 1e-8))
        return
    if scope != "touched":
        raise ValueError(f"balancer.scope={scope!r}: use one of {SCOPES}")
    mask = touched_mask(grad)
    rows = grad[mask]
    if rows.numel() == 0:
        grad.mul_(k)
        return
    sigma = float(rows.std()) if rows.numel() > 1 else 0.0
    noise = torch.randn(rows.shape, generator=generator, device=grad.device, dtype=grad.dtype).mul_(sigma + 1e-8)
    grad.mul_(k)
    grad[mask] += noise


@register("ogm")
class OGM(Balancer):
    label = "+OGM"
    paper_row = "OGM"
    row_order = 20
    passes_per_step = 3  # set to 1 + M in prepare

    def __init__(
        self,
        alpha: float = 0.1,
        modulation_starts: int = 0,
        modulation_ends: int | None = 50,
        ge: bool = True,
        scope: str = "touched",
        coefficient: str = "current",
        contribution: str = "ite",
        id_share: bool = False,
        params: str = "branch",
        include_1d: bool = False,
        **config: Any,
    ) -> None:
        super().__init__(**config)
        for field, value, allowed in (("scope", scope, SCOPES), ("coefficient", coefficient, FORMS),
                                      ("contribution", contribution, CONTRIBUTIONS), ("params", params, PARAMS)):
            if value not in allowed:
                raise ValueError(f"balancer.{field}={value!r}: use one of {allowed}")
        if alpha < 0:
            raise ValueError(f"balancer.alpha={alpha}: must be >= 0 (OGM's α; README default 0.1)")
        self.alpha, self.form, self.contribution = float(alpha), coefficient, contribution
        self.starts = int(modulation_starts)
        self.ends = None if modulation_ends is None else int(modulation_ends)
        self.ge, self.scope, self.id_share = bool(ge), scope, bool(id_share)
        self.params, self.include_1d = params, bool(include_1d)
        self.generator: torch.Generator | None = None
        self._seed = 0
        self._coef: dict[str, float] | None = None  # of the current step, set in loss()
        self._groups: tuple[Backbone, dict[str, list[nn.Parameter]]] | None = None
        self._names: dict[str, list[str]] = {}
        self.steps = 0
        self.coef_sum: dict[str, float] = {}
        self.ratio_sum: dict[str, float] = {}

    # ----------------------------------------------------------------------------------- set-up
    def prepare(self, ctx: RunContext, model: Backbone) -> None:
        self._seed = int(ctx.seed)
        self.passes_per_step = 1 + len(model.modalities) + int(self.id_share)
        groups = self.groups(model)
        names = {id(p): n for n, p in model.named_parameters()}
        self._names = {m: [names.get(id(p), "?") for p in ps] for m, ps in groups.items()}
        if len(model.modalities) < 2:
            log.warning("ogm: %d modality, nothing to balance; training as balancer=none", len(model.modalities))
        for m, ps in groups.items():
            if not ps:
                log.warning("ogm: backbone %s declares no parameters for modality %s; it is never modulated",
                            model.name, m)
        log.info("ogm: modulated parameters %s; window epochs %d..%s", self._names, self.starts,
                 "end" if self.ends is None else self.ends)

    def groups(self, model: Backbone) -> dict[str, list[nn.Parameter]]:
        """The parameters modulated per modality: owned tensors with ≥ 2 dimensions (BB's rule; all of
        them with ``include_1d``); ``params: encoder`` also leaves out user-indexed tables (p_u^m),
        the analogue of OGM never modulating its fusion head."""
        if self._groups is None or self._groups[0] is not model:
            out = {}
            for m, ps in model.modality_parameters().items():
                keep = [p for p in ps if p.requires_grad and (self.include_1d or p.dim() >= 2)]
                if self.params == "encoder":
                    keep = [p for p in keep if not (p.dim() >= 2 and p.shape[0] == model.n_users)]
                out[m] = keep
            self._groups = (model, out)
        return self._groups[1]

    def active(self, epoch: int) -> bool:
        """Whether ``epoch`` (0-based) is inside the inclusive modulation window."""
        return self.starts <= epoch and (self.ends is None or epoch <= self.ends)

    # ----------------------------------------------------------------------------------- per step
    @torch.no_grad()
    def modality_logits(self, model: Backbone, base: BatchPass) -> dict[str, torch.Tensor]:
        """Each modality's detached per-triple logit: its ITE δ^m (default) or its m-only margin,
        plus Δ^id / M with ``id_share`` (the analogue of OGM's b/2)."""
        full = base.margin.detach()
        out = {}
        for m in model.modalities:
            if self.contribution == "ite":
                out[m] = full - batch_pass(model, base.batch, ablate={m}).margin
            else:
                out[m] = batch_pass(model, base.batch, ablate=model.keep_only(m)).margin
        if self.id_share:
            id_margin = batch_pass(model, base.batch, ablate=model.modalities).margin
            out = {m: v + id_margin / len(model.modalities) for m, v in out.items()}
        return out

    def loss(self, model: Backbone, base: BatchPass, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        total = sum(base.terms.values())
        self._coef = None
        if not self.active(epoch) or len(model.modalities) < 2:
            return total, {}
        logits = self.modality_logits(model, base)
        scores = {m: float(torch.sigmoid(v).sum()) for m, v in logits.items()}
        ratios = discrepancy_ratios(scores)
        self._coef = {m: coefficient(r, self.alpha, self.form) for m, r in ratios.items()}
        self.steps += 1
        logs: dict[str, float] = {}
        for m in model.modalities:
            self.coef_sum[m] = self.coef_sum.get(m, 0.0) + self._coef[m]
            self.ratio_sum[m] = self.ratio_sum.get(m, 0.0) + ratios[m]
            logs[f"ogm/coef/{m}"] = self._coef[m]
            logs[f"ogm/ratio/{m}"] = ratios[m]
            logs[f"ogm/score/{m}"] = scores[m] / len(base.batch)
        return total, logs

    def after_backward(self, model: Backbone, epoch: int) -> None:
        if self._coef is None:
            return
        for m, params in self.groups(model).items():
            for p in params:
                if p.grad is not None:
                    modulate_(p.grad, self._coef[m], self.ge, self.scope, self._generator(p.grad.device))
        self._coef = None

    def _generator(self, device: torch.device) -> torch.Generator:
        if self.generator is None or self.generator.device != device:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(self._seed)
        return self.generator

    # ----------------------------------------------------------------------------------- records
    def results(self) -> dict[str, Any]:
        n = max(self.steps, 1)
        return {
            "alpha": self.alpha,
            "window": [self.starts, self.ends],
            "modulated_steps": self.steps,
            "mean_coefficient": {m: v / n for m, v in self.coef_sum.items()},
            "mean_ratio": {m: v / n for m, v in self.ratio_sum.items()},
            "parameters": self._names,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": None if self.generator is None else (str(self.generator.device), self.generator.get_state()),
            "steps": self.steps, "coef_sum": dict(self.coef_sum), "ratio_sum": dict(self.ratio_sum),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state.get("steps", 0))
        self.coef_sum, self.ratio_sum = dict(state.get("coef_sum", {})), dict(state.get("ratio_sum", {}))
        if state.get("generator") is not None:
            device, rng = state["generator"]
            self.generator = torch.Generator(device=device)
            self.generator.set_state(rng.cpu())
