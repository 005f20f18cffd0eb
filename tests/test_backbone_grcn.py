"""GRCN: the sparse attention kernels, one forward by hand (dense), routing, pruning, edge dropout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mbrec.backbones import build_backbone
from mbrec.backbones.graph import EdgeGraph

from conftest import run_pipeline


@pytest.fixture(autouse=True)
def _threads() -> None:
    """One thread: these tensors are tiny, and two threads spin-wait badly on a shared CPU."""
    torch.set_num_threads(1)


def _model(ds, seed=0, **cfg):
    torch.manual_seed(seed)
    model = build_backbone({"name": "grcn", "embedding_dim": 8, **cfg}, ds)
    model.eval()
    return model


def _adjacency(ds) -> torch.Tensor:
    """Dense binary bipartite adjacency (users first), no self-loops."""
    r = torch.from_numpy(ds.train.toarray().astype(np.float32))
    a = torch.zeros(ds.n_users + ds.n_items, ds.n_users + ds.n_items)
    a[: ds.n_users, ds.n_users :] = r
    a[ds.n_users :, : ds.n_users] = r.T
    return a


def _dense_attention(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """α[t, s] = softmax over s ∈ N(t) of ⟨x_t, x_s⟩ (rows without neighbours are zero)."""
    logits = (x @ x.T).masked_fill(a == 0, -torch.inf)
    return torch.nan_to_num(torch.softmax(logits, 1), nan=0.0)


# ------------------------------------------------------------------------------------ EdgeGraph
def _random_graph(n=12, n_edges=40, seed=0) -> EdgeGraph:
    g = torch.Generator().manual_seed(seed)
    key = torch.unique(torch.randint(0, n * n, (n_edges,), generator=g))
    return EdgeGraph(key // n, key % n, n)


def test_edge_graph_matches_dense_and_has_exact_gradients():
    g = _random_graph()
    dense = torch.zeros(g.n, g.n, dtype=torch.float64)
    x = torch.randn(g.n, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(g.n_edges, dtype=torch.float64, requires_grad=True)
    dense[g.target, g.source] = w.detach()
    torch.testing.assert_close(g.propagate(w, x), dense @ x)
    torch.testing.assert_close(g.scores(x), (x @ x.T)[g.target, g.source])
    a = torch.zeros(g.n, g.n, dtype=torch.float64)
    a[g.target, g.source] = 1
    torch.testing.assert_close(g.softmax(g.scores(x)), _dense_attention(x, a)[g.target, g.source])
    assert torch.autograd.gradcheck(lambda w, x: g.propagate(w, x), (w, x))
    assert torch.autograd.gradcheck(lambda x: g.propagate(g.softmax(g.scores(x)), x), (x,))


def test_edge_graph_from_sparse_multiplies_by_the_matrix_and_its_transpose():
    g = _random_graph()
    values = torch.rand(g.n_edges, dtype=torch.float64)
    adj = torch.sparse_coo_tensor(torch.stack([g.source, g.target]), values, (g.n, g.n))  # shuffled order
    op = EdgeGraph.from_sparse(adj)
    x = torch.randn(g.n, 3, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(op.mm(x), adj.to_dense() @ x)
    assert torch.autograd.gradcheck(op.mm, (x,))
    with pytest.raises(ValueError, match="from_sparse"):
        g.mm(x)


def test_edge_softmax_drops_masked_edges_without_nan():
    g = _random_graph()
    keep = torch.ones(g.n_edges)
    target = g.target[0]
    keep[g.target == target] = 0  # a node losing all its incoming edges
    alpha = g.softmax(torch.randn(g.n_edges), keep)
    assert torch.isfinite(alpha).all() and (alpha[g.target == target] == 0).all()
    sums = torch.zeros(g.n).index_add(0, g.target, alpha)
    has = torch.zeros(g.n, dtype=torch.bool)
    has[g.target[keep > 0]] = True
    torch.testing.assert_close(sums[has], torch.ones(int(has.sum())))


# ----------------------------------------------------------------------------------------- GRCN
@pytest.mark.parametrize("pruning", [True, False])
def test_forward_by_hand(tiny_dataset, pruning):
    ds = tiny_dataset
    model = _model(ds, pruning=pruning)
    a = _adjacency(ds)
    contents, weights = [], []
    for m in ds.modalities:
        feat = torch.from_numpy(ds.features[m].copy())
        x = torch.cat([F.normalize(model.preference[m], dim=1),
                       F.normalize(F.leaky_relu(model.projection[m](feat)), dim=1)])
        alpha = _dense_attention(x, a)
        contents.append(x + alpha @ x)
        weights.append(alpha * model.confidence[m][None, :])  # w[t, s] = αᵐ[t, s] · C_m[s]
    w = torch.stack(weights).max(0).values * a
    w = F.relu(w) if pruning else w
    x0 = F.normalize(model.id_embedding, dim=1)
    ids = x0 + w @ x0 + w @ (w @ x0)
    z = torch.cat([ids, *contents], 1)
    u, i = model()
    torch.testing.assert_close(u, z[: ds.n_users])
    torch.testing.assert_close(i, z[ds.n_users :])


def test_pruning_cuts_negative_edge_weights(tiny_dataset):
    model = _model(tiny_dataset)
    with torch.no_grad():
        model.confidence["text"].fill_(-1.0)
        model.confidence["visual"].fill_(-1.0)
    alphas = [model._content(m, frozenset(), None)[1] for m in tiny_dataset.modalities]
    assert (model._edge_weights(alphas) == 0).all()  # every edge pruned
    u, i = model()
    ids = F.normalize(model.id_embedding, dim=1)
    torch.testing.assert_close(u[:, :8], ids[: tiny_dataset.n_users])  # nothing propagates
    model.pruning = False
    assert (model._edge_weights(alphas) < 0).all()


def test_ablated_branch_has_uniform_attention(tiny_dataset):
    model = _model(tiny_dataset)
    _, alpha = model._content("visual", frozenset({"visual"}), None)
    deg = torch.bincount(model.graph.target, minlength=model.graph.n).float()
    torch.testing.assert_close(alpha, 1.0 / deg[model.graph.target])


def test_user_routing_updates_preferences_by_attention_over_items(tiny_dataset):
    ds = tiny_dataset
    model = _model(ds, routing="users", num_routing=1)
    faithful = _model(ds)  # same seed, same parameters
    a = _adjacency(ds)
    for m in ds.modalities:
        feat = torch.from_numpy(ds.features[m].copy())
        theta = F.normalize(model.preference[m], dim=1)
        g = F.normalize(F.leaky_relu(model.projection[m](feat)), dim=1)
        x = torch.cat([theta, g])
        routed = F.normalize(theta + (_dense_attention(x, a) @ x)[: ds.n_users], dim=1)
        x = torch.cat([routed, g])
        torch.testing.assert_close(model._content(m, frozenset(), None)[0], x + _dense_attention(x, a) @ x)
        # and the faithful (no-op) routing leaves Θ as it is
        x = torch.cat([theta, g])
        torch.testing.assert_close(faithful._content(m, frozenset(), None)[0], x + _dense_attention(x, a) @ x)


def test_edge_dropout_drops_pairs_in_training_and_is_shared_within_a_step(tiny_dataset):
    model = _model(tiny_dataset, dropout=0.5)
    assert model._keep() is None  # eval: no dropout
    model.train()
    keep = model._keep()
    g = model.graph
    # an edge and its reverse share a fate
    index = {(int(t), int(s)): e for e, (t, s) in enumerate(zip(g.target, g.source))}
    reverse = torch.tensor([index[(int(s), int(t))] for t, s in zip(g.target, g.source)])
    torch.testing.assert_close(keep, keep[reverse])
    assert 0.3 < float(keep.mean()) < 0.7
    with model.step_cache():
        first, second = model(), model()
    torch.testing.assert_close(first, second)
    assert not torch.allclose(model()[0], model()[0])  # outside a step: fresh masks


@pytest.mark.parametrize("cfg", [{"routing": "items"}, {"weight_mode": "sum"}, {"dropout": 1.0}])
def test_bad_switches_are_rejected(tiny_dataset, cfg):
    with pytest.raises(ValueError, match=f"backbone.{next(iter(cfg))}"):
        _model(tiny_dataset, **cfg)


def test_end_to_end(tmp_path):
    value, res = run_pipeline(["backbone=grcn", "mlflow.enabled=false"], tmp_path)
    assert res["config"]["backbone"]["name"] == "grcn"
    assert 0.0 <= value <= 1.0 and 0.0 <= res["test"]["recall@20/visual"] <= 1.0
