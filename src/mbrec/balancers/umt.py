"""``balancer=umt``: Uni-Modal Teacher (Du et al., ICML 2023) adapted to BPR ranking
(docs/balancers.md#uni-modal-teacher-balancerumt).

The official code (GeWu-Lab/BalanceBenchmark ``UMT_trainer.py``) trains the multimodal model with its
own loss plus ``scaling`` × Σ_m MSE(teacher_m's encoder output, the student's encoder output of m),
from uni-modal teachers trained beforehand, with no re-weighting. In mbrec:

* the teachers are CKD's (``balancers/teachers.py``: same settings, same cache entries, so a UMT run
  after a CKD run trains no teacher);
* "the student's part for modality m" is its m-only pass (every other modality ablated, exactly how
  the teacher itself is trained and evaluated); its "encoder output" is what that pass feeds the
  scoring inner product: the user and item representations. ``target: representations`` (default)
  distils those of the batch's (u, i, j) rows; ``target: margins`` distils the pass's BPR margins
  Δs^m_uij instead (the ranking outputs; the analogue of logit distillation);
* the multimodal loss is the run's base loss (L_BPR + L2, or the backbone's own objective).

Per step: the full pass plus one m-only pass per modality (1 + M forwards), as CKD.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from mbrec.backbones.base import Backbone
from mbrec.balancers.base import Balancer, Row, RunContext, register
from mbrec.balancers.ckd import teachers_at_base_point
from mbrec.balancers.teachers import Teacher, TeacherSettings, check_teacher_settings, prepare_teachers, teacher_results
from mbrec.errors import ConfigError, one_of
from mbrec.training.objective import BatchPass, inner, triple_representations

TARGETS = ("representations", "margins")

Rows = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (user, i, j) representations of a batch's triples


def representation_distillation(student: Rows, teacher: Rows) -> torch.Tensor:
    """D^m = mean over the batch's 3B rows (u, i, j) and d columns of (s − t)²: ``nn.MSELoss`` (mean
    reduction) of the official code, on the stacked user, positive-item and negative-item rows."""
    return torch.stack([(s - t).pow(2).mean() for s, t in zip(student, teacher)]).mean()


def margin_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """D^m = mean over the batch of (Δs^m_uij − Δt^m_uij)² (``target: margins``)."""
    return (student - teacher).pow(2).mean()


def umt_loss(base: torch.Tensor, distill: Mapping[str, torch.Tensor], scaling: float) -> torch.Tensor:
    """L = L_base + scaling · Σ_m D^m (no per-modality weights)."""
    return base + scaling * sum(distill.values())


@register("umt", Row(label="+UMT", order=35, paper_row=None, study_settings=teachers_at_base_point,
                     search_space={"scaling": [0.1, 1, 10, 50]}))
class UMT(Balancer):
    def __init__(
        self,
        scaling: float = 10.0,
        target: str = "representations",
        modulation_starts: int = 0,
        modulation_ends: int | None = None,
        teachers: TeacherSettings | None = None,
    ) -> None:
        self.target = one_of("balancer.target", target, TARGETS)
        if scaling < 0:
            raise ConfigError(f"balancer.scaling={scaling}: must be >= 0 (UMT's distillation weight; default 10)")
        self.scaling = float(scaling)
        self.starts = int(modulation_starts)
        self.ends = None if modulation_ends is None else int(modulation_ends)
        self.teacher_cfg = dict(teachers or {})
        self.teachers: dict[str, Teacher] = {}

    def passes_per_step(self, modalities: Sequence[str]) -> int:
        return 1 + len(modalities)

    def prepare(self, ctx: RunContext, model: Backbone) -> None:
        """Train or load one frozen teacher per modality; with ``target: representations`` the teachers'
        representations must have the student's width."""
        self.teachers = prepare_teachers(ctx, self.teacher_cfg, "umt")
        if self.target == "representations":
            one = torch.zeros(1, dtype=torch.long, device=ctx.device)
            with torch.no_grad():
                u, i = model(users=one, items=one)
            for m, t in self.teachers.items():
                if t.user.shape[1] != u.shape[1] or t.item.shape[1] != i.shape[1]:
                    raise ConfigError(
                        f"balancer=umt: teacher[{m}] representations are {t.user.shape[1]}/{t.item.shape[1]} wide, "
                        f"the student's {u.shape[1]}/{i.shape[1]}: keep balancer.teachers.backbone's widths equal to "
                        f"the student's, or use balancer.target=margins")

    def active(self, epoch: int) -> bool:
        """Whether ``epoch`` (0-based) is inside the inclusive distillation window."""
        return self.starts <= epoch and (self.ends is None or epoch <= self.ends)

    def loss(self, model: Backbone, base: BatchPass, epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total = sum(base.terms.values())
        if not self.active(epoch):
            return total, {}
        b = base.batch
        distill: dict[str, torch.Tensor] = {}
        for m, teacher in self.teachers.items():
            [student] = triple_representations(model, [(b.users, b.pos, b.neg)], model.keep_only(m))
            if self.target == "representations":
                distill[m] = representation_distillation(student, (teacher.user[b.users], teacher.item[b.pos],
                                                                   teacher.item[b.neg]))
            else:
                u, i, j = student
                distill[m] = margin_distillation(inner(u, i) - inner(u, j), teacher.margin(b.users, b.pos, b.neg))
        logs = {f"loss/distill/{m}": d.detach() for m, d in distill.items()}
        return umt_loss(total, distill, self.scaling), logs

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any], root: Mapping[str, Any]) -> None:
        check_teacher_settings(cfg.get("teachers") or {}, root)

    def results(self) -> dict[str, Any]:
        """The teachers' records (as CKD's) and the distillation settings."""
        return {**teacher_results(self.teachers), "scaling": self.scaling, "target": self.target,
                "window": [self.starts, self.ends]}
