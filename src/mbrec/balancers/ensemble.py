"""``balancer=ensemble``: late fusion of the uni-modal teachers, no student trained
(docs/balancers.md#teacher-ensemble-balancerensemble).

The row that asks whether distillation adds anything over the teachers it distils from. The teachers
are CKD's (``balancers/teachers.py``: same settings, same cache entries). Items are ranked for user u by

    s(u, i) = Σ_m w_m · z_m(u, i),   z_m(u, i) = (t_m(u, i) − μ_m(u)) / σ_m(u),   w_m ≥ 0, Σ_m w_m = 1,

where t_m(u, i) = ⟨U_m[u], I_m[i]⟩ is teacher m's score and μ_m(u), σ_m(u) the mean and standard
deviation of u's scores over all items (``standardise: user``, default; ``global``: one μ_m, σ_m over
every (u, i); ``none``: raw scores). The weights are the point of the simplex grid with step
``grid_step`` with the best validation ``train.metric`` (the test split is never looked at), or given
as ``weights``. Since μ_m(u) and σ_m(u) are linear/quadratic forms of U_m[u], s is itself an inner
product of per-user-scaled concatenated teacher representations (:class:`EnsembleModel`), so the one
evaluator ranks it like any backbone; keeping only modality m gives teacher m alone.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, Mapping

import torch

from mbrec.backbones.base import Backbone
from mbrec.balancers.base import Balancer, Row, RunContext, register
from mbrec.balancers.ckd import teachers_at_base_point
from mbrec.balancers.teachers import Teacher, TeacherSettings, check_teacher_settings, prepare_teachers, teacher_results
from mbrec.data.dataset import Dataset
from mbrec.errors import ConfigError, one_of
from mbrec.training.evaluation import Evaluator

log = logging.getLogger(__name__)

STANDARDISE = ("user", "global", "none")


def score_moments(user: torch.Tensor, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per user u: the mean μ(u) and (population) standard deviation σ(u) of ⟨user[u], item[i]⟩ over all
    items, in closed form: μ(u) = ⟨user[u], ī⟩, σ(u)² = user[u]ᵀ C user[u] with C the items' covariance."""
    mean_item = item.mean(0)
    centred = item - mean_item
    cov = centred.T @ centred / item.shape[0]
    return user @ mean_item, ((user @ cov) * user).sum(1).clamp(min=0.0).sqrt()


def standardisation(user: torch.Tensor, item: torch.Tensor, how: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale) per user such that z(u, i) = (⟨user[u], item[i]⟩ − shift[u]) / scale[u]:
    ``user``: μ(u), σ(u); ``global``: the mean and std over every (u, i), repeated; ``none``: 0, 1.
    A scale of 0 (a user whose scores are all equal) becomes 1."""
    one_of("balancer.standardise", how, STANDARDISE)
    if how == "none":
        return torch.zeros(user.shape[0], device=user.device), torch.ones(user.shape[0], device=user.device)
    mu, sd = score_moments(user, item)
    if how == "global":  # E[t] = mean_u μ(u); Var[t] = mean_u (σ(u)² + μ(u)²) − E[t]²
        g_mu = mu.mean()
        g_sd = ((sd.pow(2) + mu.pow(2)).mean() - g_mu.pow(2)).clamp(min=0.0).sqrt()
        mu, sd = g_mu.expand_as(mu).clone(), g_sd.expand_as(sd).clone()
    return mu, torch.where(sd > 0, sd, torch.ones_like(sd))


def simplex_grid(modalities: list[str], step: float) -> list[dict[str, float]]:
    """Every weight vector with entries in {0, step, 2·step, ..., 1} summing to 1 (1/step must be an
    integer), in a fixed (lexicographic) order."""
    n = round(1.0 / step)
    if n < 1 or abs(n * step - 1.0) > 1e-9:
        raise ConfigError(f"balancer.grid_step={step}: 1/grid_step must be a whole number (e.g. 0.1, 0.25, 0.5)")
    out = []
    for head in itertools.product(range(n + 1), repeat=len(modalities) - 1):
        if sum(head) <= n:
            counts = (*head, n - sum(head))
            out.append({m: c / n for m, c in zip(modalities, counts)})
    return out


class EnsembleModel(Backbone):
    """The fused teachers as a scoring model (not a selectable backbone): user rows
    [w_m/σ_m(u) · U_m[u] for each m ‖ −Σ_m w_m μ_m(u)/σ_m(u)], item rows [I_m[i] for each m ‖ 1], so
    ⟨user, item⟩ = Σ_m w_m z_m(u, i) exactly. Ablating m drops teacher m and renormalises the other
    weights (all of them zero: equal weights), so the m-only pass is teacher m alone."""

    name = "ensemble"

    def __init__(self, dataset: Dataset, teachers: Mapping[str, Teacher], weights: Mapping[str, float],
                 standardise: str = "user") -> None:
        super().__init__(dataset)
        for m in self.modalities:
            t = teachers[m]
            shift, scale = standardisation(t.user, t.item, standardise)
            self.register_buffer(f"user_{m}", t.user.detach().clone())
            self.register_buffer(f"item_{m}", t.item.detach().clone())
            self.register_buffer(f"shift_{m}", shift)
            self.register_buffer(f"scale_{m}", scale)
        self.register_buffer("weight", torch.zeros(len(self.modalities)))
        self.set_weights(weights)

    def set_weights(self, weights: Mapping[str, float]) -> None:
        self.weight.copy_(torch.tensor([float(weights[m]) for m in self.modalities]))

    def weights(self) -> dict[str, float]:
        return {m: round(w, 6) for m, w in zip(self.modalities, self.weight.tolist())}  # float32 storage

    def encode(self, users: torch.Tensor | None, items: torch.Tensor | None, ablate: frozenset[str]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        kept = torch.tensor([m not in ablate for m in self.modalities], device=self.weight.device)
        w = self.weight * kept
        w = torch.where(w.sum() > 0, w / w.sum().clamp(min=1e-12), kept / kept.sum().clamp(min=1))
        user_parts, item_parts, offset = [], [], 0.0
        for k, m in enumerate(self.modalities):
            u = getattr(self, f"user_{m}") if users is None else getattr(self, f"user_{m}")[users]
            shift = getattr(self, f"shift_{m}") if users is None else getattr(self, f"shift_{m}")[users]
            scale = getattr(self, f"scale_{m}") if users is None else getattr(self, f"scale_{m}")[users]
            factor = (w[k] / scale).unsqueeze(1)
            user_parts.append(factor * u)
            offset = offset - factor * shift.unsqueeze(1)
            item_parts.append(getattr(self, f"item_{m}") if items is None else getattr(self, f"item_{m}")[items])
        user_parts.append(offset)
        item_parts.append(torch.ones(item_parts[0].shape[0], 1, device=self.weight.device))
        return torch.cat(user_parts, 1), torch.cat(item_parts, 1)


@register("ensemble", Row(label="teacher ensemble", order=40, paper_row=None, study_settings=teachers_at_base_point,
                          trains_student=False))
class TeacherEnsemble(Balancer):
    """No student: :meth:`replacement_model` is the fused teachers, weights tuned on validation."""

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        grid_step: float = 0.1,
        standardise: str = "user",
        teachers: TeacherSettings | None = None,
    ) -> None:
        self.standardise = one_of("balancer.standardise", standardise, STANDARDISE)
        self.grid_step = float(grid_step)
        self.fixed = dict(weights) if weights else None
        if self.fixed is not None and (any(float(v) < 0 for v in self.fixed.values()) or sum(map(float, self.fixed.values())) <= 0):
            raise ConfigError(f"balancer.weights={self.fixed}: weights must be >= 0 with a positive sum")
        self.teacher_cfg = dict(teachers or {})
        self.teachers: dict[str, Teacher] = {}
        self.model: EnsembleModel | None = None
        self.search: list[dict[str, Any]] = []

    def prepare(self, ctx: RunContext, model: Backbone) -> None:
        """Teachers (trained or cached), then the weights: given, or the simplex-grid point with the best
        validation ``train.metric`` (first in grid order on ties)."""
        self.teachers = prepare_teachers(ctx, self.teacher_cfg, "ensemble")
        modalities = list(ctx.dataset.modalities)
        if self.fixed is not None:
            if set(self.fixed) != set(modalities):
                raise ConfigError(f"balancer.weights: give one weight per modality {modalities}; got {sorted(self.fixed)}")
            total = sum(float(v) for v in self.fixed.values())
            candidates = [{m: float(self.fixed[m]) / total for m in modalities}]
        else:
            candidates = simplex_grid(modalities, self.grid_step)
        self.model = EnsembleModel(ctx.dataset, self.teachers, candidates[0], self.standardise).to(ctx.device)
        self.search = []
        if len(candidates) > 1:
            s = ctx.settings
            evaluator = Evaluator(ctx.dataset, s.topk, ctx.device, s.eval_batch_size)
            for w in candidates:
                self.model.set_weights(w)
                value = evaluator.evaluate(self.model, "valid", {"": frozenset()})[s.metric]
                self.search.append({"weights": w, f"valid/{s.metric}": value})
            values = [p[f"valid/{s.metric}"] for p in self.search]
            best = values.index(max(values) if s.metric_mode == "max" else min(values))
            self.model.set_weights(candidates[best])
        log.info("ensemble: weights %s (%s standardisation, %d grid points on validation)",
                 {m: round(v, 3) for m, v in self.model.weights().items()}, self.standardise, len(self.search))
        ctx.tracker.log_metrics({f"ensemble/weight/{m}": v for m, v in self.model.weights().items()})

    def replacement_model(self) -> Backbone | None:
        return self.model

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any], root: Mapping[str, Any]) -> None:
        check_teacher_settings(cfg.get("teachers") or {}, root)
        if cfg.get("weights") is None:
            simplex_grid(["a", "b"], float(cfg.get("grid_step", 0.1)))  # a bad step fails before any data loads

    def results(self) -> dict[str, Any]:
        """The teachers' records, the chosen weights and every grid point's validation value."""
        return {**teacher_results(self.teachers), "standardise": self.standardise,
                "weights": self.model.weights() if self.model is not None else {}, "search": self.search}
