"""``balancer=ogm``: OGM-GE (Peng et al., CVPR 2022) adapted to BPR (docs/balancers.md#ogm-ge-balancerogm).

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
take ~lr-sized random steps; ``scope: dense`` is the official code's literal form.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from mbrec.backbones.base import Backbone
from mbrec.balancers.base import Balancer, Row, RunContext, register
from mbrec.errors import ConfigError, one_of
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


def coefficient(ratio: float | torch.Tensor, alpha: float, form: str = "current") -> float | torch.Tensor:
    """OGM's modulation coefficient: ``current`` = eq. 10 of the paper and the official code since
    a974f3c (1 − tanh(αρ) if ρ > 1 else 1); ``shifted`` = the first release, 1 − tanh(α·relu(ρ − 1)).
    A tensor ratio gives a tensor (computed on its device: no read-back inside a training step)."""
    if torch.is_tensor(ratio):
        if form == "current":
            return torch.where(ratio > 1.0, 1.0 - torch.tanh(alpha * ratio), torch.ones_like(ratio))
        if form == "shifted":
            return 1.0 - torch.tanh(alpha * torch.clamp(ratio - 1.0, min=0.0))
    elif form == "current":
        return 1.0 - math.tanh(alpha * ratio) if ratio > 1.0 else 1.0
    elif form == "shifted":
        return 1.0 - math.tanh(alpha * max(ratio - 1.0, 0.0))
    raise ConfigError(f"balancer.coefficient={form!r}: use one of {', '.join(FORMS)}")


def touched_mask(grad: torch.Tensor) -> torch.Tensor:
    """Which entries of ``grad`` were touched this step: whole rows with any non-zero entry (so an
    embedding row of a batch user counts entirely), or the non-zero entries of a 1-D tensor."""
    if grad.dim() < 2:
        return grad.ne(0)
    return grad.reshape(grad.shape[0], -1).ne(0).any(1)


def modulate_(grad: torch.Tensor, k: float | torch.Tensor, ge: bool, scope: str,
              generator: torch.Generator | None) -> None:
    """In place: g ← k·g (+ GE noise N(0, (std(g) + 1e-8)²) with the std of the unmodulated g, on the
    touched rows only or on the whole tensor). Everything stays on the device: the touched-rows std is
    a masked std, and the noise is drawn for every entry and masked (no data-dependent shapes)."""
    if not ge:
        grad.mul_(k)
        return
    if scope == "dense":
        sigma = grad.std() if grad.numel() > 1 else torch.zeros((), device=grad.device, dtype=grad.dtype)
        noise = torch.randn(grad.shape, generator=generator, device=grad.device, dtype=grad.dtype)
        grad.mul_(k).add_(noise.mul_(sigma + 1e-8))
        return
    one_of("balancer.scope", scope, SCOPES)
    mask = touched_mask(grad)
    entries = mask.reshape(mask.shape + (1,) * (grad.dim() - mask.dim())).expand_as(grad).to(grad.dtype)
    n = entries.sum()
    mean = (grad * entries).sum() / n.clamp(min=1.0)
    var = (((grad - mean) * entries) ** 2).sum() / (n - 1.0).clamp(min=1.0)
    sigma = torch.where(n > 1, var.sqrt(), torch.zeros_like(var))
    noise = torch.randn(grad.shape, generator=generator, device=grad.device, dtype=grad.dtype)
    grad.mul_(k).add_(noise.mul_(sigma + 1e-8).mul_(entries))


@register("ogm", Row(label="+OGM", order=20, paper_row="OGM", search_space={"alpha": [0.1, 0.3, 0.5, 0.8, 1.0]}))  # OGM-GE's grid
class OGM(Balancer):

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
    ) -> None:
        for field, value, allowed in (("scope", scope, SCOPES), ("coefficient", coefficient, FORMS),
                                      ("contribution", contribution, CONTRIBUTIONS), ("params", params, PARAMS)):
            one_of(f"balancer.{field}", value, allowed)
        if alpha < 0:
            raise ConfigError(f"balancer.alpha={alpha}: must be >= 0 (OGM's α; default 0.1)")
        self.alpha, self.form, self.contribution = float(alpha), coefficient, contribution
        self.starts = int(modulation_starts)
        self.ends = None if modulation_ends is None else int(modulation_ends)
        self.ge, self.scope, self.id_share = bool(ge), scope, bool(id_share)
        self.params, self.include_1d = params, bool(include_1d)
        self.generator: torch.Generator | None = None
        self._seed = 0
        self._coef: dict[str, torch.Tensor] | None = None  # of the current step, set in loss()
        self._groups: tuple[Backbone, dict[str, list[nn.Parameter]]] | None = None
        self._names: dict[str, list[str]] = {}
        self.steps = 0
        self.coef_sum: dict[str, torch.Tensor | float] = {}  # on the device while training
        self.ratio_sum: dict[str, torch.Tensor | float] = {}

    def passes_per_step(self, modalities: Sequence[str]) -> int:
        return 1 + len(modalities) + int(self.id_share)

    # ----------------------------------------------------------------------------------- set-up
    def prepare(self, ctx: RunContext, model: Backbone) -> None:
        self._seed = int(ctx.seed)
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
        scores = {m: torch.sigmoid(v).sum() for m, v in logits.items()}
        ratios = discrepancy_ratios(scores)
        self._coef = {m: coefficient(r, self.alpha, self.form) for m, r in ratios.items()}
        self.steps += 1
        logs: dict[str, torch.Tensor] = {}
        for m in model.modalities:
            self.coef_sum[m] = self.coef_sum.get(m, 0.0) + self._coef[m].detach()
            self.ratio_sum[m] = self.ratio_sum.get(m, 0.0) + ratios[m].detach()
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
            "mean_coefficient": {m: float(v) / n for m, v in self.coef_sum.items()},
            "mean_ratio": {m: float(v) / n for m, v in self.ratio_sum.items()},
            "parameters": self._names,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": None if self.generator is None else (str(self.generator.device), self.generator.get_state()),
            "steps": self.steps, "coef_sum": {m: float(v) for m, v in self.coef_sum.items()},
            "ratio_sum": {m: float(v) for m, v in self.ratio_sum.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state.get("steps", 0))
        self.coef_sum, self.ratio_sum = dict(state.get("coef_sum", {})), dict(state.get("ratio_sum", {}))
        if state.get("generator") is not None:
            device, rng = state["generator"]
            self.generator = torch.Generator(device=device)
            self.generator.set_state(rng.cpu())
