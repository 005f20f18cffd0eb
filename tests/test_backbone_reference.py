"""LATTICE, LGMRec and SMORE against the reference implementation (enoche/MMRec at e775373), by numbers:
on a tiny fixed dataset with the same weights, mbrec's full score matrix (eval mode) and the loss of one
training step equal the values the reference computed, within 1e-5. The fixtures hold the inputs (data,
weights, batch, config) and the reference's VALUES only; docs/backbones.md#reference-fixtures says how
they were made, and which randomness is aligned (the same seed and draw order) or disabled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mbrec.backbones import build_backbone
from mbrec.data.dataset import Dataset
from mbrec.data.sampling import Batch
from mbrec.training.objective import base_pass

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = ["lattice", "lgmrec", "smore"]


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def _load(name: str):
    f = np.load(FIXTURES / f"reference_{name}.npz")
    cfg = json.loads(str(f["config"]))
    users, items = f["data/train_users"], f["data/train_items"]
    n_items = f["data/visual"].shape[0]
    n_users = int(f["reference/scores"].shape[0])
    train = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
    empty = sp.csr_matrix((n_users, n_items), dtype=np.float32)
    ds = Dataset("tiny", train, empty, empty, {"visual": f["data/visual"], "text": f["data/text"]})
    model = build_backbone(cfg["backbone"], ds)
    state = {k[len("weight/"):]: torch.from_numpy(f[k]) for k in f.files if k.startswith("weight/")}
    model.load_state_dict(state)
    batch = Batch(*(torch.from_numpy(f[f"batch/{k}"]) for k in ("users", "pos", "neg")))
    return model, batch, cfg, f


@pytest.mark.parametrize("name", MODELS)
def test_scores_equal_the_reference(name: str) -> None:
    model, _, _, f = _load(name)
    model.eval()
    with torch.no_grad():
        u, i = model()
    np.testing.assert_allclose((u @ i.T).numpy(), f["reference/scores"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_one_step_loss_equals_the_reference(name: str) -> None:
    """The first training step (LATTICE builds its learned graph in it), with the reference's randomness:
    the same seed and the same draws in the same order (LGMRec's Gumbel noise and dropout, SMORE's dropout)."""
    model, batch, cfg, f = _load(name)
    model.train()
    torch.manual_seed(cfg["seed_step"])
    p = base_pass(model, batch, cfg["l2"])
    loss = sum(p.terms.values())
    assert abs(float(loss) - float(f["reference/loss"])) <= 1e-5 * max(1.0, abs(float(f["reference/loss"]))), \
        (float(loss), float(f["reference/loss"]), {k: float(v) for k, v in p.terms.items()})
