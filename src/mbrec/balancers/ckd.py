"""``balancer=ckd``: Counterfactual Knowledge Distillation (docs/method.md, eqs. 8–19).

Per batch the student runs its full pass (the trainer's, for L_BPR + L2) plus one pass per modality
with every other modality ablated; those uni-modal passes cover both the batch's observed triples
(specific distillation) and a fresh set of uniform (u, j, k) samples (generic distillation), so the
cost is 1 + M forwards per step, as in the reference. Teacher margins come from representations
computed once from the frozen teachers. The re-weighting uses the student's passes with one modality
ablated, detached (no gradient through the weights).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch

from mbrec.backbones.base import Backbone
from mbrec.balancers import ckd_losses as eq
from mbrec.balancers.base import Balancer, Row, RunContext, register
from mbrec.balancers.teachers import Teacher, TeacherSettings, check_teacher_settings, prepare_teachers, teacher_results
from mbrec.errors import one_of
from mbrec.training.objective import BatchPass, margins

log = logging.getLogger(__name__)

REWEIGHT = ("paper", "official", "none")
RHO_DENOMINATORS = ("teacher_margin", "teacher_score", "student_unimodal")


def teachers_at_base_point(base_best: Mapping[str, Any]) -> dict[str, Any]:
    """A CKD study's settings: the base row's tuned lr, L2 and backbone keys as the teachers' settings,
    so that the study trains its teachers once (they are cached by these settings) instead of once per
    lr x L2 point."""
    return {f"balancer.teachers.{dotted}": value for dotted, value in base_best.items()
            if dotted in ("optimizer.lr", "train.l2") or dotted.startswith("backbone.")}


@register("ckd", Row(label="+CKD", order=30, paper_row="CKD", study_settings=teachers_at_base_point,
                     search_space={"lambda_g": [0.1, 0.5, 1, 5], "lambda_kd": [1e-3, 1e-2, 1e-1, 5e-1]}))  # the paper's grids
class CKD(Balancer):
    def __init__(
        self,
        lambda_kd: float = 0.01,
        lambda_g: float = 5.0,
        tau: float = 0.1,
        gd_samples: int = 5000,
        reweight: str = "official",
        specific_loss: str = "hinge",
        rho_denominator: str = "teacher_margin",
        rho_eps: float = 1e-8,
        reduction: str = "mean",
        weight_scale: str = "authors",
        gd_form: str = "official",
        teachers: TeacherSettings | None = None,
    ) -> None:
        one_of("balancer.reweight", reweight, REWEIGHT)
        one_of("balancer.rho_denominator", rho_denominator, RHO_DENOMINATORS)
        one_of("balancer.specific_loss", specific_loss, eq.SPECIFIC_LOSSES)
        one_of("balancer.reduction", reduction, eq.REDUCTIONS)
        self.weight_scale = one_of("balancer.weight_scale", weight_scale, eq.WEIGHT_SCALES)
        self.gd_form = one_of("balancer.gd_form", gd_form, eq.GD_FORMS)
        self.lambda_kd, self.lambda_g, self.tau = float(lambda_kd), float(lambda_g), float(tau)
        self.gd_samples, self.reweight, self.specific_loss = int(gd_samples), reweight, specific_loss
        self.rho_denominator, self.rho_eps, self.reduction = rho_denominator, float(rho_eps), reduction
        self.teacher_cfg = dict(teachers or {})  # TeacherSettings keys
        self.teachers: dict[str, Teacher] = {}
        self.generator: torch.Generator | None = None

    def passes_per_step(self, modalities: Sequence[str]) -> int:
        """The full pass, one uni-modal pass per modality, and (with more than two modalities, where "m
        ablated" is not another modality's uni-modal pass) one pass per modality for the weights."""
        m = len(modalities)
        return 1 + m + (m if m > 2 and self.reweight != "none" else 0)

    # -- set-up -------------------------------------------------------------------------------
    def prepare(self, ctx: RunContext, model: Backbone) -> None:
        """Train or load one frozen teacher per modality; set up the generic-sample generator."""
        self.teachers = prepare_teachers(ctx, self.teacher_cfg, "ckd")
        train = ctx.dataset.train
        self.active_users = torch.nonzero(torch.as_tensor(train.indptr[1:] - train.indptr[:-1]) > 0).flatten().to(ctx.device)
        self.n_items = ctx.dataset.n_items
        self.generator = torch.Generator(device=ctx.device)
        self.generator.manual_seed(ctx.seed + 7919)

    def generic_samples(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(u, j, k): distinct users with training items, j and k uniform over all items (as the code)."""
        g = self.generator
        n = min(self.gd_samples, self.active_users.numel())
        users = self.active_users[torch.randperm(self.active_users.numel(), device=device, generator=g)[:n]]
        jk = torch.randint(self.n_items, (2, n), device=device, generator=g)
        return users, jk[0], jk[1]

    # -- the objective ------------------------------------------------------------------------
    def loss(self, model: Backbone, base: BatchPass, epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b = base.batch
        device = b.users.device
        gen = self.generic_samples(device)
        logs: dict[str, torch.Tensor] = {}
        sd, gd, uni_triple, dt_triple = {}, {}, {}, {}
        for m, teacher in self.teachers.items():
            ds_uij, ds_ujk = margins(model, [(b.users, b.pos, b.neg), gen], model.keep_only(m))
            uni_triple[m] = ds_uij
            dt_triple[m] = teacher.margin(b.users, b.pos, b.neg)
            sd[m] = eq.specific_distillation(dt_triple[m], ds_uij, self.specific_loss, self.tau)
            gd[m] = eq.reduce(eq.generic_distillation(teacher.margin(*gen), ds_ujk, self.tau, self.gd_form), self.reduction)

        weights = self.weights(model, base, uni_triple, dt_triple, logs)
        kd = 0.0
        for m in self.teachers:
            w = weights[m]
            if w.dim() == 0:  # paper / none: one λ_m per batch (eq. 19)
                term = w * (self.lambda_g * gd[m] + eq.reduce(sd[m], self.reduction))
            else:  # official: per-triple weights on the hinge, the scalar GD weighted by their mean
                term = eq.reduce(w * sd[m], self.reduction) + self.lambda_g * gd[m] * w.mean()
            kd = kd + term
            logs[f"loss/sd/{m}"] = eq.reduce(sd[m], self.reduction).detach()
            logs[f"loss/gd/{m}"] = gd[m].detach()
            logs[f"ckd/lambda/{m}"] = w.detach().mean()
        total = sum(base.terms.values()) + self.lambda_kd * kd
        logs["loss/kd"] = kd.detach() if torch.is_tensor(kd) else kd
        return total, logs

    def weights(self, model: Backbone, base: BatchPass, uni: dict[str, torch.Tensor],
                dt: dict[str, torch.Tensor], logs: dict[str, float]) -> dict[str, torch.Tensor]:
        """λ_m (eqs. 15–18), detached: scalars for ``paper``/``none``, per-triple for ``official``.
        ``uni``: the student's m-only margins on the batch; ``dt``: the teachers' margins."""
        modalities = list(uni)
        device = base.margin.device
        if self.reweight == "none":
            return {m: torch.ones((), device=device) for m in modalities}
        b = base.batch
        with torch.no_grad():
            full = base.margin.detach()
            ite = {}
            for m in modalities:
                ablate = frozenset({m})
                if len(modalities) == 2:  # "m ablated" is the other modality's uni-modal pass: reuse it
                    without_m = uni[next(o for o in modalities if o != m)].detach()
                else:
                    without_m = margins(model, [(b.users, b.pos, b.neg)], ablate)[0]
                ite[m] = eq.treatment_effect(full, without_m)
            if self.reweight == "official":
                uni_margins = {m: uni[m].detach() for m in modalities}
                for m, c in eq.official_ratios(ite, uni_margins).items():
                    logs[f"ckd/rho/{m}"] = c.mean()  # the code's relative effect, for Figure 1's ρ panel
                return eq.official_weights(ite, uni_margins)
            rho = {}
            for m in modalities:
                t = self.teachers[m]
                if self.rho_denominator == "teacher_margin":
                    denom = dt[m]
                elif self.rho_denominator == "teacher_score":
                    denom = t.score(b.users, b.pos)
                else:
                    denom = uni[m].detach()
                rho[m] = eq.relative_effect(ite[m], denom, self.rho_eps)
                logs[f"ckd/rho/{m}"] = rho[m].detach()
            return eq.modality_weights(rho, self.weight_scale)

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any], root: Mapping[str, Any]) -> None:
        check_teacher_settings(cfg.get("teachers") or {}, root)

    # -- bookkeeping --------------------------------------------------------------------------
    def results(self) -> dict[str, Any]:
        """The teachers' metrics: the "uni-teacher" row of the paper's Table 2."""
        return teacher_results(self.teachers)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()} if self.generator is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])
