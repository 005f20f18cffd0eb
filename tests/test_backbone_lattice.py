"""LATTICE: the chunked learned kNN graph against the reference's dense construction (build_sim, top-k,
D^-½ · D^-½, the λ mix), its ablation (m's graphs → the tie graphs (k/n)J and J/n), and the per-epoch
rebuild (gradients into the graph at the epoch's first step only, as the reference)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mbrec.backbones import build_backbone
from mbrec.backbones.lattice import knn_indices
from mbrec.data.sampling import BPRSampler
from mbrec.training.objective import base_pass

K = 4


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def _model(ds, **cfg):
    torch.manual_seed(0)
    model = build_backbone({"name": "lattice", "embedding_dim": 8, "feat_embed_dim": 8, "knn_k": K, **cfg}, ds)
    with torch.no_grad():
        model.modal_weight.copy_(torch.tensor([0.7, -0.2]))
    return model.eval()


def _dense_knn(x: torch.Tensor, k: int) -> torch.Tensor:
    """The reference's build_sim + build_knn_neighbourhood (n × n)."""
    x = x / x.norm(dim=1, keepdim=True)
    sim = x @ x.T
    top = sim.topk(k, dim=1)
    return torch.zeros_like(sim).scatter_(1, top.indices, top.values)


def _laplacian(a: torch.Tensor) -> torch.Tensor:
    d = a.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0
    return d[:, None] * a * d[None, :]


def _dense_items(model, ds, ablate=()) -> torch.Tensor:
    """Item representations with the dense n_items² matrices of the reference (ablated graphs: the ties)."""
    n = ds.n_items
    w = torch.softmax(model.modal_weight, 0)
    learned, original = 0, 0
    for k, m in enumerate(model.modalities):
        if m in ablate:
            learned = learned + w[k] * torch.full((n, n), K / n)
            original = original + w[k] * torch.full((n, n), 1 / n)
        else:
            learned = learned + w[k] * _dense_knn(model.projection[m](model.features[m]), K)
            original = original + w[k] * _laplacian(_dense_knn(torch.from_numpy(ds.features[m].copy()), K))
    item_adj = (1 - model.lambda_coeff) * _laplacian(learned) + model.lambda_coeff * original
    h = item_adj @ model.item_id
    z = model._collaborative()
    return z[model.n_users:] + F.normalize(h, dim=1)


def test_chunked_knn_is_the_dense_top_k(tiny_dataset):
    x = F.normalize(torch.randn(37, 5), dim=1)
    assert torch.equal(knn_indices(x, 6, chunk=8).sort(1).values, (x @ x.T).topk(6, dim=1).indices.sort(1).values)


@pytest.mark.parametrize("ablate", [(), ("text",), ("visual",), ("text", "visual")])
def test_item_graph_equals_the_dense_reference_form(tiny_dataset, ablate):
    model = _model(tiny_dataset)
    with torch.no_grad():
        _, items = model(ablate=ablate)
        torch.testing.assert_close(items, _dense_items(model, tiny_dataset, ablate), rtol=1e-5, atol=1e-5)


def test_graph_gets_gradients_at_the_first_step_of_each_epoch_only(tiny_dataset):
    model = _model(tiny_dataset).train()
    batch = BPRSampler(tiny_dataset.train, 16, torch.device("cpu"), seed=0).sample()

    def step() -> bool:
        model.zero_grad(set_to_none=True)
        p = base_pass(model, batch, 1e-4)
        sum(p.terms.values()).backward()
        return model.modal_weight.grad is not None and bool(model.projection["text"].weight.grad.abs().sum() > 0)

    assert step()          # first step: the learned graph is built with gradients
    assert not step()      # later steps of the epoch: detached, as the reference
    model.on_epoch_start(1)
    assert step()          # rebuilt at the next epoch
