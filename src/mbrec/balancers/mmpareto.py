"""``balancer=mmpareto``: MMPareto (Wei & Hu, ICML 2024) adapted to BPR (docs/balancers.md#mmpareto-balancermmpareto).

Objectives of a batch: the multimodal one L^mm (the backbone's base terms: BPR of the full pass + L2
(+ aux)) and, per modality m, the uni-modal BPR L^m = mean −ln σ(Δ^(m)) of the m-only pass (every
other modality ablated). Each objective's gradient is taken separately; a parameter group reached by
several objectives gets them combined by the official code's rule, per group:

1. cosine check: if every pair of the group's gradients has cos > 0, equal weights w_k = 1/K;
   otherwise the MGDA min-norm weights w = argmin_{w ∈ simplex} ‖Σ_k w_k g_k‖² (:func:`min_norm_weights`);
2. g_new = K Σ_k w_k g_k (K = 2 in the official code: ``2*k[0]*g_mm + 2*k[1]*g_m``);
3. magnitude, per parameter tensor: g ← γ · max(‖Σ_k g_k‖ / ‖g_new‖, 1) · g_new (:func:`pareto_combine`).

Groups: each modality's own parameters (``Backbone.modality_parameters``) are reached by {L^mm, L^m}
(the official case: a modality's encoder); the shared parameters (ID embeddings, fusion layers) by
L^mm and every L^m (``shared: pareto``, the same rule over K = M + 1 gradients) or, with
``shared: sum``, get the plain sum (what the official code does for parameters outside the encoders).
A group reached by a single objective gets that gradient unchanged.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mbrec.backbones.base import Backbone
from mbrec.balancers.base import Balancer, Row, RunContext, register
from mbrec.errors import ConfigError, one_of
from mbrec.training.objective import BatchPass, batch_pass

log = logging.getLogger(__name__)

MULTIMODAL = "multimodal"
SHARED = "shared"
SHARED_MODES = ("pareto", "sum")


def two_task_weight(v11: torch.Tensor, v12: torch.Tensor, v22: torch.Tensor) -> torch.Tensor:
    """The official ``_min_norm_element_from2``: c minimising ‖c x₁ + (1 − c) x₂‖² from the dot
    products v11 = ⟨x₁,x₁⟩, v12 = ⟨x₁,x₂⟩, v22 = ⟨x₂,x₂⟩: 0.999 if v12 ≥ v11, 0.001 if v12 ≥ v22,
    else (v22 − v12) / (v11 + v22 − 2 v12). A tensor (no read-back)."""
    interior = (v22 - v12) / (v11 + v22 - 2 * v12)
    return torch.where(v12 >= v11, torch.full_like(v11, 0.999),
                       torch.where(v12 >= v22, torch.full_like(v11, 0.001), interior))


def min_norm_weights(gram: torch.Tensor) -> torch.Tensor:
    """MGDA's min-norm point of the convex hull of K gradients, from their Gram matrix G (K × K):
    w = argmin_{w ≥ 0, Σw = 1} wᵀGw. K = 2: the official closed form (:func:`two_task_weight`);
    K > 2: exact, by enumerating the simplex's faces (on a face S, w_S ∝ G_S⁻¹1 when that is ≥ 0;
    the feasible face of least wᵀGw wins). Everything stays on the device (no read-back)."""
    k = gram.shape[0]
    if k == 1:
        return torch.ones(1, dtype=gram.dtype, device=gram.device)
    if k == 2:
        c = two_task_weight(gram[0, 0], gram[0, 1], gram[1, 1])
        return torch.stack([c, 1 - c])
    ridge = 1e-12 * (gram.diagonal().sum() / k) + 1e-30
    best_w = torch.full((k,), 1.0 / k, dtype=gram.dtype, device=gram.device)
    best_v = torch.full((), float("inf"), dtype=gram.dtype, device=gram.device)
    for size in range(1, k + 1):
        for face in itertools.combinations(range(k), size):
            idx = torch.tensor(face, device=gram.device)
            sub = gram.index_select(0, idx).index_select(1, idx)
            eye = torch.eye(size, dtype=gram.dtype, device=gram.device)
            x, _ = torch.linalg.solve_ex(sub + ridge * eye, torch.ones(size, 1, dtype=gram.dtype, device=gram.device))
            x = x.squeeze(1)
            total = x.sum()
            w_face = x / total
            feasible = (total > 0) & (w_face >= -1e-9).all()
            w = torch.zeros(k, dtype=gram.dtype, device=gram.device).index_copy(0, idx, w_face.clamp(min=0))
            w = w / w.sum().clamp(min=1e-30)
            value = w @ gram @ w
            better = feasible & (value < best_v)
            best_w = torch.where(better, w, best_w)
            best_v = torch.where(better, value, best_v)
    return best_w


def gram_matrix(per_param: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """G_ij = ⟨g_i, g_j⟩ over a group: ``per_param`` holds, for each parameter tensor, the K
    objectives' gradients of it (float64 sums; the concatenation of the official code, without copying)."""
    k = len(per_param[0])
    rows = [[sum((gs[i].double() * gs[j].double()).sum() for gs in per_param) for j in range(k)] for i in range(k)]
    return torch.stack([torch.stack(r) for r in rows])


def pairwise_cosines(gram: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """cos(g_i, g_j) for i < j from the Gram matrix (``F.cosine_similarity``'s form: ⟨x,y⟩ / max(‖x‖‖y‖, eps))."""
    norms = gram.diagonal().clamp(min=0).sqrt()
    i, j = torch.triu_indices(gram.shape[0], gram.shape[0], 1, device=gram.device)
    return gram[i, j] / (norms[i] * norms[j]).clamp(min=eps)


def group_weights(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The official direction rule for one group: (weights, conflict, min cosine). Equal weights 1/K
    when every pair has cos > 0, else the min-norm weights."""
    k = gram.shape[0]
    cos = pairwise_cosines(gram)
    conflict = (cos <= 0).any()
    equal = torch.full((k,), 1.0 / k, dtype=gram.dtype, device=gram.device)
    return torch.where(conflict, min_norm_weights(gram), equal), conflict, cos.min()


def pareto_combine(grads: Sequence[torch.Tensor], weights: torch.Tensor, gamma: float) -> torch.Tensor:
    """One parameter tensor's final gradient: g_new = K Σ_k w_k g_k, then γ · max(‖Σ_k g_k‖ / ‖g_new‖, 1) · g_new
    (the official magnitude rule, per tensor; a zero g_new stays zero)."""
    k = len(grads)
    new = sum(k * weights[i].to(g.dtype) * g for i, g in enumerate(grads))
    plain = sum(grads)
    new_norm, plain_norm = new.norm(), plain.norm()
    scale = torch.where(new_norm > 0, (plain_norm / new_norm.clamp(min=1e-30)).clamp(min=1.0), torch.ones_like(new_norm))
    return new * (gamma * scale)


@register("mmpareto", Row(label="+MMPareto", order=50, paper_row=None,
                          search_space={"gamma": [1.0, 1.5, 2.0]}))  # around the official γ = 1.5 (no grid printed)
class MMPareto(Balancer):
    def __init__(self, gamma: float = 1.5, shared: str = "pareto") -> None:
        if gamma <= 0:
            raise ConfigError(f"balancer.gamma={gamma}: must be > 0 (MMPareto's magnitude factor; official 1.5)")
        self.gamma, self.shared = float(gamma), one_of("balancer.shared", shared, SHARED_MODES)
        self._grads: list[tuple[nn.Parameter, torch.Tensor]] = []
        self._groups: tuple[Backbone, dict[str, list[nn.Parameter]]] | None = None
        self.steps = 0
        self.conflict_sum: dict[str, torch.Tensor | float] = {}

    def passes_per_step(self, modalities: Sequence[str]) -> int:
        return 1 + len(modalities)  # the full pass and one m-only pass per modality

    def prepare(self, ctx: RunContext, model: Backbone) -> None:
        if len(model.modalities) < 2:
            log.warning("mmpareto: %d modality, nothing to balance", len(model.modalities))
        for m, ps in model.modality_parameters().items():
            if not ps:
                log.warning("mmpareto: backbone %s declares no parameters for modality %s", model.name, m)

    def groups(self, model: Backbone) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by group: each modality's own, and ``shared`` (everything else)."""
        if self._groups is None or self._groups[0] is not model:
            owned = {m: [p for p in ps if p.requires_grad] for m, ps in model.modality_parameters().items()}
            ids = {id(p) for ps in owned.values() for p in ps}
            shared = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
            self._groups = (model, {**owned, SHARED: shared})
        return self._groups[1]

    def objectives(self, model: Backbone, base: BatchPass) -> dict[str, torch.Tensor]:
        """L^mm (the base terms) and each modality's uni-modal BPR L^m (its m-only pass)."""
        out = {MULTIMODAL: sum(base.terms.values())}
        for m in model.modalities:
            out[m] = -F.logsigmoid(batch_pass(model, base.batch, model.keep_only(m)).margin).mean()
        return out

    @staticmethod
    def reaching(group: str, objectives: Mapping[str, torch.Tensor]) -> list[str]:
        """The objectives combined on a group: L^mm and L^m on m's own parameters, all of them on the shared."""
        return list(objectives) if group == SHARED else [MULTIMODAL, group]

    def loss(self, model: Backbone, base: BatchPass, epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        objectives = self.objectives(model, base)
        groups = self.groups(model)
        by_param: dict[int, dict[str, torch.Tensor]] = {id(p): {} for ps in groups.values() for p in ps}
        for k, value in objectives.items():  # each objective's gradient on the groups it is combined on
            params = [p for name, ps in groups.items() if k in self.reaching(name, objectives) for p in ps]
            if not params:
                continue
            for p, g in zip(params, torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)):
                if g is not None:
                    by_param[id(p)][k] = g
        logs: dict[str, torch.Tensor] = {f"mmpareto/loss/{m}": objectives[m].detach() for m in model.modalities}
        self._grads = []
        for name, ps in groups.items():
            # by design, as the official code records them: m's own parameters see L^mm and L^m (another
            # modality's m'-only pass reaches them only through mean-replaced inputs: left out); shared see all
            reached = [k for k in self.reaching(name, objectives) if any(k in by_param[id(p)] for p in ps)]
            if not reached:
                continue
            if len(reached) == 1 or (name == SHARED and self.shared == "sum"):
                self._grads += [(p, sum(by_param[id(p)][k] for k in reached if k in by_param[id(p)])) for p in ps
                                if any(k in by_param[id(p)] for k in reached)]
                continue
            full = {id(p): [by_param[id(p)].get(k, torch.zeros_like(p)) for k in reached] for p in ps}
            gram = gram_matrix([full[id(p)] for p in ps])
            weights, conflict, cos = group_weights(gram)
            self._grads += [(p, pareto_combine(full[id(p)], weights, self.gamma)) for p in ps]
            logs[f"mmpareto/conflict/{name}"] = conflict.double()
            logs[f"mmpareto/cos/{name}"] = cos
            logs.update({f"mmpareto/w/{name}/{k}": weights[i] for i, k in enumerate(reached)})
            self.conflict_sum[name] = self.conflict_sum.get(name, 0.0) + conflict.double()
        self.steps += 1
        return sum(objectives.values()), logs

    def backward(self, total: torch.Tensor, model: Backbone) -> None:
        """The combined gradients computed in :meth:`loss` become the parameters' ``.grad``."""
        for p, g in self._grads:
            p.grad = g.to(p.dtype)
        self._grads = []

    # ----------------------------------------------------------------------------------- records
    def results(self) -> dict[str, Any]:
        n = max(self.steps, 1)
        return {"gamma": self.gamma, "shared": self.shared, "steps": self.steps,
                "conflict_rate": {k: float(v) / n for k, v in self.conflict_sum.items()}}

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "conflict_sum": {k: float(v) for k, v in self.conflict_sum.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state.get("steps", 0))
        self.conflict_sum = dict(state.get("conflict_sum", {}))
