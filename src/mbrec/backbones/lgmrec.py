"""LGMRec (local and global graph learning) after MMRec's port of the official code, enoche/MMRec
``src/models/lgmrec.py`` with ``src/configs/model/LGMRec.yaml`` (its Baby values); docs/backbones.md#lgmrec.

* Parameters (in this order): P (U×d), Q (I×d) Xavier-uniform; per modality a projection W_m (d_m×d_f)
  and a hyperedge matrix H_m (d_m×``hyper_num``), Xavier-uniform. The feature tables F^m are frozen (the
  reference's ``freeze=True``).
* Graphs (built once per dataset): R (U×I, binary), Ã = D^-½ A D^-½ (no self-loops; the reference adds
  1e-7 to the degrees), deg_u the user degrees.
* Forward:

      CGE:  C = mean of the LightGCN layers 0..n_ui_layers of [P ; Q] over Ã
      MGE:  x^m = F^m W_m;  M^m = Ã^n_mm_layers [R x^m / deg_u ; x^m]
      GHE:  iH^m = gumbel_softmax(F^m H_m, τ);  uH^m = gumbel_softmax(R F^m H_m, τ)   (over hyperedges)
            with dropout (p = 1 − keep_rate) on both; E_i = C_items; n_hyper_layer times:
            L = iH^mᵀ E_i;  E_i = iH^m L;  E_u = uH^m L;   G^m = [E_u ; E_i]
      representation = C + Σ_m normalize(M^m) + α · normalize(Σ_m G^m);  score = inner product

* Objective (:meth:`objective`): BPR + ``train.l2`` · (‖U_b‖ + ‖I_b‖ + ‖J_b‖)/B — the reference's
  regulariser is the sum of the batch matrices' Frobenius *norms*, not their halved squares — and
  (:meth:`aux_loss`) ``cl_weight`` · the hyperedge contrast of visual against text (else the first two
  modalities):
  Σ over the batch's users of −log softmax-share of cos(G^1_u, G^2_u)/τ among all users' G^2, plus the same
  over its positive items (summed, not averaged, as the reference).
* Randomness (torch's RNG): in training, Gumbel noise for every modality's item then user logits, then
  the dropout masks in the same order — the reference's order, so a seeded step draws the same numbers.
  Inside a multi-pass step (CKD, GB, OGM) all passes share one draw (``step_cache``). Evaluation uses no
  noise (softmax(logits/τ) and no dropout); the reference also samples Gumbel noise when it ranks.

Ablating m: F^m → its item mean. Then x^m is the same for every item (the user rows of M^m too), and so
are m's hyperedge logits: every item joins m's hyperedges alike, and users differ only by their degree.
LGMRec builds no graph from the features, so nothing else of m remains.

``modality_parameters``: m owns W_m and H_m; P and Q are shared.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mbrec.backbones import graph
from mbrec.backbones.base import Backbone, embedding_table, project, register
from mbrec.data.dataset import Dataset
from mbrec.data.sampling import Batch


def _xavier(rows: int, cols: int) -> nn.Parameter:
    return nn.Parameter(nn.init.xavier_uniform_(torch.zeros(rows, cols)))


class _Contrast(torch.autograd.Function):
    """Σ_r −log softmax(a_r · eᵀ)[index_r] and its gradient, ``chunk`` rows at a time: the gradient
    (softmax − one-hot) is formed in the forward pass, so no rows × everyone matrix is kept for the
    backward (on Baby's users that matrix is batch × 19,445; in a micro-benchmark this took about half
    the time of autograd's cross-entropy over the same logits)."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, e: torch.Tensor, index: torch.Tensor, chunk: int) -> torch.Tensor:
        want = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        loss = a.new_zeros(())
        grad_a, grad_e = (torch.empty_like(a), torch.zeros_like(e)) if want else (None, None)
        for start in range(0, a.shape[0], chunk):
            rows_a, at = a[start : start + chunk], index[start : start + chunk]
            logits = rows_a @ e.T
            lse = torch.logsumexp(logits, 1)
            loss = loss + (lse - logits.gather(1, at.unsqueeze(1)).squeeze(1)).sum()
            if want:
                p = logits.sub_(lse.unsqueeze(1)).exp_()  # softmax, in place
                p[torch.arange(at.numel(), device=at.device), at] -= 1
                grad_a[start : start + chunk] = p @ e
                grad_e.addmm_(p.T, rows_a)
        ctx.save_for_backward(grad_a, grad_e)
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_a, grad_e = ctx.saved_tensors
        return grad_a * grad, grad_e * grad, None, None


def triple_contrast(a: torch.Tensor, everyone: torch.Tensor, index: torch.Tensor, temperature: float,
                    chunk: int = 128) -> torch.Tensor:
    """Σ_r −log( exp(cos(a_r, everyone[index_r])/τ) / Σ_all exp(cos(a_r, everyone)/τ) ): the reference's
    ssl_triple_loss, whose positives are rows of the set it contrasts against (in fp32, also under bf16)."""
    with torch.autocast(a.device.type, enabled=False):
        a = F.normalize(a.float(), dim=1) / temperature
        return _Contrast.apply(a, F.normalize(everyone.float(), dim=1), index, chunk)


@register("lgmrec")
class LGMRec(Backbone):
    uses_features = True
    search_space: ClassVar = {  # LGMRec.yaml: its Baby values (one point; Sports/Clothing in the YAML comments)
        "backbone.n_ui_layers": [2],
        "backbone.n_mm_layers": [2],
        "backbone.n_hyper_layer": [1],
        "backbone.hyper_num": [4],
        "backbone.keep_rate": [0.5],
        "backbone.alpha": [0.3],
        "backbone.cl_weight": [1e-4],
        "train.l2": [1e-6],
    }

    def __init__(
        self,
        dataset: Dataset,
        embedding_dim: int = 64,
        feat_embed_dim: int = 64,
        n_ui_layers: int = 2,
        n_mm_layers: int = 2,
        n_hyper_layer: int = 1,
        hyper_num: int = 4,
        keep_rate: float = 0.5,
        alpha: float = 0.3,
        cl_weight: float = 1e-4,
        temperature: float = 0.2,
    ) -> None:
        super().__init__(dataset)
        if embedding_dim != feat_embed_dim:
            raise ValueError(f"backbone.feat_embed_dim={feat_embed_dim}: LGMRec adds the modality and ID embeddings, "
                             f"use feat_embed_dim = embedding_dim ({embedding_dim})")
        if not 0 < keep_rate <= 1:
            raise ValueError(f"backbone.keep_rate={keep_rate}: use a value in (0, 1]")
        self.n_ui_layers, self.n_mm_layers, self.n_hyper_layer = int(n_ui_layers), int(n_mm_layers), int(n_hyper_layer)
        self.keep_rate, self.alpha = float(keep_rate), float(alpha)
        self.cl_weight, self.temperature = float(cl_weight), float(temperature)
        self.user_id = embedding_table(self.n_users, embedding_dim)
        self.item_id = embedding_table(self.n_items, embedding_dim)
        self.projection = nn.ParameterDict()
        self.hyper = nn.ParameterDict()
        for m in self.modalities:
            self.projection[m] = _xavier(self.feature_dims[m], feat_embed_dim)
            self.hyper[m] = _xavier(self.feature_dims[m], hyper_num)
        adj = graph.normalized_adjacency(dataset, "sym", self_loops=False)
        self.register_buffer("adj", adj.to_sparse_csr(), persistent=False)
        r = graph.to_torch_sparse(dataset.train)
        self.register_buffer("r", r.to_sparse_csr(), persistent=False)
        self.register_buffer("r_t", r.t().coalesce().to_sparse_csr(), persistent=False)
        deg = torch.from_numpy(dataset.train.sum(1).A1.astype("float32"))
        self.register_buffer("inv_user_degree", (1.0 / (deg + 1e-7)).unsqueeze(1), persistent=False)
        self._hyper: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        #: the (anchor, other) modalities of the hyperedge contrast: the reference's (visual, text)
        self.contrast_pair = ("visual", "text") if {"visual", "text"} <= set(self.modalities) else self.modalities[:2]

    # -- parts --------------------------------------------------------------------------------------
    def _propagate(self, x: torch.Tensor) -> torch.Tensor:
        return graph.spmm(self.adj, x, self.adj)

    def _cge(self) -> torch.Tensor:
        layers = [torch.cat([self.user_id, self.item_id], 0)]
        for _ in range(self.n_ui_layers):
            layers.append(self._propagate(layers[-1]))
        return torch.stack(layers).mean(0)

    def _r(self, x: torch.Tensor) -> torch.Tensor:
        return graph.spmm(self.r, x, self.r_t)

    def _mge(self, m: str, ablate: frozenset[str]) -> torch.Tensor:
        items = self.item_input(m, ablate, None, lambda f: project(f, self.projection[m]))
        x = torch.cat([self._r(items) * self.inv_user_degree, items], 0)
        for _ in range(self.n_mm_layers):
            x = self._propagate(x)
        return x

    def _noise(self) -> dict[str, Any]:
        """The step's random draws, in the reference's order: Gumbel noise for each modality's item and
        user logits, then the dropout masks (scaled by 1/keep_rate) in the same order."""
        h = next(iter(self.hyper.values())).shape[1]
        shapes = [(self.n_items, h), (self.n_users, h)]
        like = self.item_id
        gumbel = {m: [-torch.empty(s, dtype=like.dtype, device=like.device).exponential_().log() for s in shapes]
                  for m in self.modalities}
        p = 1 - self.keep_rate
        masks = {m: [torch.empty(s, dtype=like.dtype, device=like.device).bernoulli_(1 - p).div_(1 - p) if p > 0 else None
                     for s in shapes] for m in self.modalities}
        return {"gumbel": gumbel, "mask": masks}

    def _hypergraph(self, m: str, ablate: frozenset[str], noise: dict[str, Any] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """m's (item, user) hyperedge assignments."""
        item_logits = self.item_input(m, ablate, None, lambda f: project(f, self.hyper[m]))
        logits = [item_logits, self._r(item_logits)]
        if noise is None:
            return tuple(torch.softmax(x / self.temperature, 1) for x in logits)  # type: ignore[return-value]
        out = []
        for x, g, mask in zip(logits, noise["gumbel"][m], noise["mask"][m]):
            a = torch.softmax((x + g) / self.temperature, 1)
            out.append(a if mask is None else a * mask)
        return out[0], out[1]

    def _global(self, item_hyper: torch.Tensor, user_hyper: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The hypergraph layers (the reference's HGNNLayer): user and item rows."""
        user = torch.zeros(self.n_users, items.shape[1], dtype=items.dtype, device=items.device)
        for _ in range(self.n_hyper_layer):
            latent = item_hyper.T @ items
            items, user = item_hyper @ latent, user_hyper @ latent
        return user, items

    def _forward(self, ablate: frozenset[str]) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """(every node's representation, users first; each modality's (user, item) hypergraph embeddings)."""
        training = self.training and torch.is_grad_enabled()
        noise = self.memo.get("noise", self._noise) if training else None
        cge = self.memo.get("cge", self._cge)
        local = cge + sum(F.normalize(self._mge(m, ablate), dim=1) for m in self.modalities)
        hyper = {m: self._global(*self._hypergraph(m, ablate, noise), cge[self.n_users:]) for m in self.modalities}
        ghe = sum(torch.cat(hyper[m], 0) for m in self.modalities)
        return local + self.alpha * F.normalize(ghe, dim=1), hyper

    def encode(
        self, users: torch.Tensor | None, items: torch.Tensor | None, ablate: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z, hyper = self._forward(ablate)
        # kept for aux_loss (the objective calls it right after this pass); not in eval / no_grad
        self._hyper = hyper if self.training and torch.is_grad_enabled() else None
        return graph.node_rows(z, self.n_users, users, items)

    # -- objective ----------------------------------------------------------------------------------
    def objective(self, batch_pass: Any, l2: float) -> dict[str, torch.Tensor]:
        """BPR and the reference's regulariser: ``l2`` · (‖U_b‖ + ‖I_b‖ + ‖J_b‖)/B (Frobenius norms)."""
        p = batch_pass
        reg = (p.user.norm() + p.pos.norm() + p.neg.norm()) / p.neg.shape[0]
        return {"bpr": -F.logsigmoid(p.pos_score - p.neg_score).mean(), "l2": l2 * reg}

    def aux_loss(self, batch: Batch) -> torch.Tensor | None:
        """``cl_weight`` · the hyperedge contrast of the first two modalities over the batch's users and
        positive items (the views of the training pass just made)."""
        if self.cl_weight == 0 or len(self.modalities) < 2:
            return None
        hyper = self._hyper if self._hyper is not None else self._forward(frozenset())[1]
        self._hyper = None
        (u1, i1), (u2, i2) = (hyper[m] for m in self.contrast_pair)
        loss = (triple_contrast(u1.index_select(0, batch.users), u2, batch.users, self.temperature)
                + triple_contrast(i1.index_select(0, batch.pos), i2, batch.pos, self.temperature))
        return self.cl_weight * loss

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {m: [self.projection[m], self.hyper[m]] for m in self.modalities}
