"""EgoGCN (early fusion, graph) after the official code (feiyuchen7/EgoGCN); docs/backbones.md#egogcn.

Nodes are users then items (items offset by U); edges are the training interactions in both
directions (no self-loops). Per modality m the input is X^m = [Θ^m ; g^m] with trainable user
preferences Θ^m (Xavier-normal) and g^m = normalize(lrelu(W_m f^m + b_m)); every row has unit norm.

Branch m (one per modality; Y^o are the *inputs* X^o of the other modalities, n = #modalities):

1. edge-wise modulation (fusion) layer, once: α_{y→x} = softmax_{y∈N(x)} ⟨X_x, X_y⟩ and a message
   X'_y per edge —
   * ``fusion: hard``: X'_y = (X_y + Σ_o Y^o_y)/n where α_{y→x} > ``threshold``, else X_y;
   * ``fusion: soft``: X'_y = (X_y + Σ_o σ(W_{o→m} Y^o_y + b) ⊙ Y^o_y)/n (a learned 64→64 gate per
     other modality);
   with ``reattention`` α is recomputed from ⟨X_x, X'_y⟩; X ← normalize(Σ_y α X'_y).
2. ``num_routing`` layers X ← normalize(X + Σ_y softmax_{y∈N(x)}⟨X_x, X_y⟩ X_y).

ID branch: X₀ = normalize(E_id) (Xavier-normal, (U+I)×d), X_l = Ã X_{l−1} with Ã = D^-½ A D^-½,
id = Σ_l X_l. Representation [id ‖ Z^m for each m] ((1+n)·d), score = inner product.

Decisions and quirks, each a config switch:

* ``fusion: soft`` by default. The reference threshold τ was tuned per dataset (0.4 MovieLens, 0.6
  TikTok, parser default 0.5) and never for Amazon, and with unit-norm rows the softmax weight of a
  target with k neighbours is at most e²/(e² + k − 1), so ``α > 0.5`` can only fire for targets with at
  most 8 neighbours: hard fusion silently stops fusing at popular items. Soft fusion has no such
  threshold. ``fusion: hard`` (``threshold: 0.5``, the parser default) reproduces the hard variant.
* Two (or any number of) modalities: the fused message is divided by n (the 3-modality reference
  divides by 3; with v and t we divide by 2).
* ``id_propagation: lightgcn`` (default) uses X₃ = ÃX₂. The reference computes X₃ = ÃX₁ (= X₂, so
  id = X₀ + X₁ + 2X₂); ``id_propagation: reference`` reproduces that (the last layer repeats the
  previous one).
* ``preference_norm: functional`` (default) uses normalize(Θ^m) in the forward pass: the same values
  as the reference, without mutating parameters. ``inplace`` reproduces the reference, which projects
  the parameter data onto the unit sphere at every forward (here only when a row has left the sphere,
  so several passes of one step do not invalidate each other's autograd graphs).
* A node without neighbours (e.g. an item with no training interaction) keeps its own input vector
  in the fusion layer; the reference drops the node's own vector there and would give it a zero row.
* Ablating m (docs/method.md, ablation): f^m → its mean over items (before W_m) and Θ^m → the mean of the unit-norm
  preferences over users, both re-normalised like every input row. The ablation reaches the other
  branches through the fusion layer, as intended: the whole input of m is counterfactual.
* ``dropout`` is not in the reference (0 = reference); it drops entries of the output representation
  in training so the paper's dropout grid applies to this backbone.
* Not reproduced: the reference's embedding regulariser (the trainer's L2 on the output
  representations is used, as in the CKD code), its LR decay (×0.8 every 50 epochs) and its
  test-set model selection.

``modality_parameters`` (the CKD paper's "roughly dividing the parameters into two parts"): m owns Θ^m,
W_m and every soft gate W_{m→o} through which only m's input flows; E_id is shared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mbrec.backbones import graph
from mbrec.backbones.base import Backbone, check_choice, embedding_table, register
from mbrec.data.dataset import Dataset

FUSIONS = ("soft", "hard")


@register("egogcn")
class EgoGCN(Backbone):
    uses_features = True

    def __init__(
        self,
        dataset: Dataset,
        embedding_dim: int = 64,
        fusion: str = "soft",
        threshold: float = 0.5,
        reattention: bool = True,
        num_routing: int = 3,
        id_layers: int = 3,
        id_propagation: str = "lightgcn",
        preference_norm: str = "functional",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(dataset)
        check_choice("fusion", fusion, FUSIONS)
        check_choice("id_propagation", id_propagation, ("lightgcn", "reference"))
        check_choice("preference_norm", preference_norm, ("functional", "inplace"))
        d = embedding_dim
        self.fusion, self.threshold, self.reattention = fusion, float(threshold), bool(reattention)
        self.num_routing, self.id_layers, self.id_propagation = int(num_routing), int(id_layers), id_propagation
        self.preference_norm, self.dropout = preference_norm, float(dropout)
        self.n_nodes = self.n_users + self.n_items

        self.id_embedding = embedding_table(self.n_nodes, d, nn.init.xavier_normal_)
        self.preference = nn.ParameterDict({m: embedding_table(self.n_users, d, nn.init.xavier_normal_) for m in self.modalities})
        self.projection = nn.ModuleDict({m: nn.Linear(self.feature_dims[m], d) for m in self.modalities})
        # gate["<o>_to_<m>"] gates o's input inside branch m (soft fusion only)
        self.gate = nn.ModuleDict(
            {f"{o}_to_{m}": nn.Linear(d, d) for m in self.modalities for o in self.modalities if o != m}
            if fusion == "soft" else {}
        )
        self.edges = graph.dataset_edge_graph(dataset)
        isolated = torch.bincount(self.edges.target, minlength=self.n_nodes) == 0
        self.register_buffer("isolated", isolated.float().unsqueeze(1), persistent=False)
        adj = graph.normalized_adjacency(dataset, "sym", self_loops=False).to_sparse_csr()
        self.register_buffer("adj", adj, persistent=False)

    # -- inputs -------------------------------------------------------------------------------------
    def _preferences(self, m: str) -> torch.Tensor:
        theta = self.preference[m]
        if self.preference_norm == "functional":
            return F.normalize(theta, dim=1)
        with torch.no_grad():
            norms = theta.norm(dim=1, keepdim=True)
            if (norms - 1).abs().max() > 1e-6:
                theta.div_(norms.clamp_min(1e-12))
        return theta

    def _input(self, m: str, ablate: frozenset[str]) -> torch.Tensor:
        """X^m = [Θ^m ; g^m], unit-norm rows; means over users and items when m is ablated."""
        pref = self._preferences(m)
        if m in ablate:  # the mean of the unit-norm preferences, re-normalised
            pref = F.normalize(pref.mean(0, keepdim=True), dim=1).expand(self.n_users, -1)
        items = self.item_input(m, ablate, None, lambda f: F.normalize(F.leaky_relu(self.projection[m](f)), dim=1))
        return torch.cat([pref, items], 0)

    # -- propagation --------------------------------------------------------------------------------
    def _attention(self, x: torch.Tensor, messages: torch.Tensor | None = None) -> torch.Tensor:
        """softmax over N(x) of ⟨x_target, message_source⟩ (messages = x when None)."""
        return self.edges.softmax(self.edges.scores(x, messages))

    def _branch(self, m: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs[m]
        others = {o: y for o, y in inputs.items() if o != m}
        n = len(inputs)
        edges = self.edges
        if self.fusion == "soft":
            fused = (x + sum(torch.sigmoid(self.gate[f"{o}_to_{m}"](y)) * y for o, y in others.items())) / n
            alpha = self._attention(x, fused if self.reattention else None)
            out = edges.propagate(alpha, fused)
        else:
            # per edge the message is fused_y where α > τ, else x_y: split the sum into the two parts
            fused = (x + sum(others.values())) / n
            plain_scores = edges.scores(x)
            alpha = edges.softmax(plain_scores)
            hot = alpha > self.threshold
            if self.reattention:
                alpha = edges.softmax(torch.where(hot, edges.scores(x, fused), plain_scores))
            out = edges.propagate(alpha * ~hot, x) + edges.propagate(alpha * hot, fused)
        x = F.normalize(out + self.isolated * x, dim=1)
        for _ in range(self.num_routing):
            x = F.normalize(x + edges.propagate(self._attention(x), x), dim=1)
        return x

    def _id_representation(self) -> torch.Tensor:
        layers = [F.normalize(self.id_embedding, dim=1)]
        for layer in range(1, self.id_layers + 1):
            if self.id_propagation == "reference" and layer == self.id_layers and layer >= 2:
                layers.append(layers[-1])  # reference: X_L = Ã X_{L-2} = X_{L-1}
            else:
                layers.append(graph.spmm(self.adj, layers[-1], self.adj))  # Ã is symmetric
        return torch.stack(layers).sum(0)

    def encode(
        self, users: torch.Tensor | None, items: torch.Tensor | None, ablate: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = {
            m: self._input(m, ablate) if m in ablate else self.memo.get(("input", m), lambda m=m: self._input(m, ablate))
            for m in self.modalities
        }
        z = torch.cat([self.memo.get("id", self._id_representation), *(self._branch(m, inputs) for m in self.modalities)], 1)
        z = F.dropout(z, self.dropout, self.training)
        return graph.node_rows(z, self.n_users, users, items)

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        owned = {m: [self.preference[m], *self.projection[m].parameters()] for m in self.modalities}
        for key, gate in self.gate.items():
            owned[key.split("_to_")[0]].extend(gate.parameters())
        return owned
