"""``balancer=inforeg``: InfoReg (Huang et al., CVPR 2025) adapted to BPR (docs/balancers.md#inforeg-balancerinforeg).

The official code's mechanism, per modality m (its own parameters θᵐ, ``Backbone.modality_parameters``):

* **objective**: the multimodal base loss plus each modality's uni-modal BPR L^m (its m-only pass;
  the official code trains the fused cross-entropy plus both uni-modal ones);
* **information trace** of m in epoch e: trᵐ_e = Σ_{tensors p of θᵐ with ≥ 2 dims} mean(Σ_steps g_p²)
  (the official diagonal-Fisher trace of the encoder's weights), accumulated on the device;
* **prime learning window**: at the start of epoch e, kᵐ = (t̄₁ − t̄₂) / t̄₁ with t̄₁ = Σ(last 10 traces)/10
  and t̄₂ the same one epoch earlier (kᵐ = 1 at the first epoch); m is in its window while kᵐ > 0.05
  (:func:`window_indicator`): its information is still growing fast;
* **dominance** on a batch: score sᵐ = Σ_b σ(Δ^(m)_b) (the official sum of true-class probabilities,
  with the m-only margin as the logit); the modality with the highest score is dominant;
* **regulation** (:func:`regulation_coefficients`): while the dominant modality d is in its window,
  its gradient gets the proximal term β_d (θᵈ − θᵈ_anchor), θ_anchor = θᵈ at the epoch's start, with
  β_d = β · exp(tanh(sᵈ − max_{m≠d} sᵐ)); every other modality is left alone.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mbrec.backbones.base import Backbone
from mbrec.balancers.base import Balancer, Row, RunContext, register
from mbrec.errors import ConfigError
from mbrec.training.objective import BatchPass, batch_pass

log = logging.getLogger(__name__)


def window_indicator(trace: Sequence[float], span: int = 10) -> float:
    """The official k: (t̄₁ − t̄₂)/t̄₁, t̄₁ = sum(trace[-span:])/span, t̄₂ = sum(trace[-span-1:-1])/span
    (both divided by ``span`` even when fewer epochs exist); 1 before the first trace."""
    if not trace:
        return 1.0
    t1 = sum(trace[-span:]) / span
    t2 = sum(trace[-span - 1:-1]) / span
    return (t1 - t2) / t1 if t1 != 0 else 0.0


def regulation_coefficients(scores: Mapping[str, torch.Tensor], beta: float,
                            in_window: Mapping[str, bool]) -> dict[str, torch.Tensor]:
    """βᵐ = β · exp(tanh(sᵐ − max_{m'≠m} sᵐ')) for the strictly dominant modality when it is in its
    window, else 0 (the official ``beta = 0.95 * exp(tanh(score_a − score_v))``; ties regulate no one)."""
    out = {}
    for m, s in scores.items():
        others = [v for o, v in scores.items() if o != m]
        if not others or not in_window.get(m, False):
            out[m] = torch.zeros_like(s)
            continue
        gap = s - torch.stack(others).max()
        out[m] = torch.where(gap > 0, beta * torch.exp(torch.tanh(gap)), torch.zeros_like(s))
    return out


@register("inforeg", Row(label="+InfoReg", order=70, paper_row=None,
                         search_space={"beta": [0.1, 0.5, 0.95, 2.0]}))  # around the official 0.95 (dominant) / 0.1
class InfoReg(Balancer):
    def __init__(self, beta: float = 0.95, threshold: float = 0.05, span: int = 10, unimodal_loss: bool = True) -> None:
        if beta < 0:
            raise ConfigError(f"balancer.beta={beta}: must be >= 0 (InfoReg's proximal strength; official 0.95)")
        if int(span) < 1:
            raise ConfigError(f"balancer.span={span}: must be >= 1 (epochs averaged by the window test; official 10)")
        self.beta, self.threshold, self.span = float(beta), float(threshold), int(span)
        self.unimodal_loss = bool(unimodal_loss)
        self.traces: dict[str, list[float]] = {}
        self.windows: dict[str, list[float]] = {}  # kᵐ per epoch
        self.regulated_sum: dict[str, torch.Tensor | float] = {}
        self.steps = 0
        self._epoch: int | None = None
        self._in_window: dict[str, bool] = {}
        self._anchor: dict[int, torch.Tensor] = {}
        self._fisher: dict[str, torch.Tensor] = {}
        self._beta: dict[str, torch.Tensor] | None = None
        self._groups: tuple[Backbone, dict[str, list[nn.Parameter]]] | None = None

    def passes_per_step(self, modalities: Sequence[str]) -> int:
        return 1 + len(modalities)

    def prepare(self, ctx: RunContext, model: Backbone) -> None:
        if len(model.modalities) < 2:
            log.warning("inforeg: %d modality, nothing to balance", len(model.modalities))

    def groups(self, model: Backbone) -> dict[str, list[nn.Parameter]]:
        """θᵐ: the trainable parameters each modality owns."""
        if self._groups is None or self._groups[0] is not model:
            self._groups = (model, {m: [p for p in ps if p.requires_grad]
                                    for m, ps in model.modality_parameters().items()})
        return self._groups[1]

    def _start_epoch(self, model: Backbone, epoch: int) -> None:
        """At an epoch's first step: the window test from the traces so far, the anchor θ_anchor."""
        self._epoch = epoch
        self._in_window = {}
        for m in model.modalities:
            k = window_indicator(self.traces.get(m, []), self.span)
            self.windows.setdefault(m, []).append(k)
            self._in_window[m] = k > self.threshold
        self._anchor = {id(p): p.detach().clone() for ps in self.groups(model).values() for p in ps}
        self._fisher = {}

    def loss(self, model: Backbone, base: BatchPass, epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self._epoch != epoch:
            self._start_epoch(model, epoch)
        margins = {m: batch_pass(model, base.batch, model.keep_only(m)).margin for m in model.modalities}
        scores = {m: torch.sigmoid(v.detach()).sum() for m, v in margins.items()}
        self._beta = regulation_coefficients(scores, self.beta, self._in_window)
        total = sum(base.terms.values())
        if self.unimodal_loss:
            total = total + sum(-F.logsigmoid(v).mean() for v in margins.values())
        logs: dict[str, torch.Tensor] = {}
        for m in model.modalities:
            logs[f"inforeg/beta/{m}"] = self._beta[m]
            logs[f"inforeg/score/{m}"] = scores[m] / len(base.batch)
            self.regulated_sum[m] = self.regulated_sum.get(m, 0.0) + (self._beta[m] > 0).double()
        self.steps += 1
        return total, logs

    def after_backward(self, model: Backbone, epoch: int) -> None:
        """Add the proximal gradient βᵐ(θᵐ − θᵐ_anchor), then accumulate the information trace."""
        if self._beta is None:
            return
        for m, ps in self.groups(model).items():
            for p in ps:
                if p.grad is None:
                    continue
                if self._in_window.get(m, False):  # a Python bool fixed for the epoch: no read-back
                    p.grad.add_(self._beta[m].to(p.dtype) * (p.detach() - self._anchor[id(p)]))
                if p.dim() >= 2:
                    sq = p.grad.pow(2).mean()
                    self._fisher[m] = self._fisher[m] + sq if m in self._fisher else sq
        self._beta = None

    def on_epoch_end(self, model: Backbone, epoch: int) -> dict[str, float]:
        out = {}
        for m in model.modalities:
            value = float(self._fisher[m]) if m in self._fisher else 0.0  # one read per modality per epoch
            self.traces.setdefault(m, []).append(value)
            out[f"inforeg/trace/{m}"] = value
            if self.windows.get(m):
                out[f"inforeg/window/{m}"] = self.windows[m][-1]
        self._fisher, self._epoch = {}, None  # the next step starts a new epoch (window test, anchor)
        return out

    # ----------------------------------------------------------------------------------- records
    def results(self) -> dict[str, Any]:
        n = max(self.steps, 1)
        return {"beta": self.beta, "threshold": self.threshold, "traces": self.traces, "window_k": self.windows,
                "regulated_fraction": {m: float(v) / n for m, v in self.regulated_sum.items()}}

    def state_dict(self) -> dict[str, Any]:
        return {"traces": {m: list(v) for m, v in self.traces.items()},
                "windows": {m: list(v) for m, v in self.windows.items()}, "steps": self.steps,
                "regulated_sum": {m: float(v) for m, v in self.regulated_sum.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.traces = {m: [float(x) for x in v] for m, v in state.get("traces", {}).items()}
        self.windows = {m: [float(x) for x in v] for m, v in state.get("windows", {}).items()}
        self.steps = int(state.get("steps", 0))
        self.regulated_sum = dict(state.get("regulated_sum", {}))
        self._epoch = None
