"""``balancer=gb``: Gradient Blending (Wang, Tran, Feiszli, CVPR 2020) adapted to BPR
(docs/balancers.md#gradient-blending-balancergb).

Heads k ∈ {multimodal, one per modality}. The uni-modal head of m is the m-only pass of the same
backbone (every other modality mean-ablated, ID kept), so the loss of a batch is

    L = Σ_k w_k L_BPR(head k) + L2 (full pass only) [+ the backbone's auxiliary loss].

The weights come from the overfitting-to-generalisation ratio: for each head, a probe copy of the
model (built on the probe data, with the student's current weights) is trained ``estimate_epochs``
epochs on that head's loss alone (through the one trainer, no validation, a fresh optimizer); its BPR loss is measured before
and after on FIXED training triples (L^T) and FIXED validation triples (L^V), in eval mode and
without L2. With ΔG_k = L^V_k(start) − L^V_k(end) and
ΔO_k = O_k(end) − O_k(start), O = L^V − L^T:

    w_k = max(ΔG_k, 0) / max(ΔO_k², ε),  normalised to Σ_k w_k = 1 (uniform if all are 0).

``mode: offline`` (default) estimates once before training; ``online`` re-estimates from the current
model every ``super_epoch`` epochs.

``estimate_on: holdout`` (default): the probes train on each user's training interactions minus a
fixed, seeded ``holdout_fraction`` (0.1) of them and L^V is measured on that held-out part, as
Gradient Blending prescribes — the validation split stays untouched for early stopping and tuning,
which every row of Table 1 uses the same way. ``valid`` measures L^V on the validation split (this
project's earlier behaviour). In ``online`` mode the student has trained on the held-out part before a
re-estimation, so its L^V there is optimistic; ``offline`` has no such bias.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from mbrec.backbones.base import Backbone
from mbrec.balancers.base import Balancer, Row, RunContext, register
from mbrec.data.dataset import Dataset
from mbrec.data.sampling import Batch, BPRSampler
from mbrec.errors import ConfigError, one_of
from mbrec.training.objective import BatchPass, batch_pass

log = logging.getLogger(__name__)

MULTIMODAL = "multimodal"
MODES = ("offline", "online")
UNIMODAL = ("ablated_pass", "contribution")
ESTIMATE_ON = ("holdout", "valid")


def holdout_split(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """The data G-Blend's probes see: each user's training interactions split by a fixed, seeded
    ``fraction`` into a probe-training part (``train``) and a held-out part (``valid``). A user keeps at
    least two training items: with n ≥ 3 of them, round(fraction·n) (at least 1) are held out; with
    fewer, none. Test is unchanged. The student itself still trains on the full training set."""
    train = sp.csr_matrix(dataset.train)
    n = np.diff(train.indptr)
    k = np.where(n >= 3, np.clip(np.rint(fraction * n), 1, n - 2), 0).astype(np.int64)
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(train.shape[0]), n)
    order = np.lexsort((rng.random(train.nnz), rows))  # a random order inside each user's row
    rank = np.empty(train.nnz, dtype=np.int64)
    rank[order] = np.arange(train.nnz) - np.repeat(train.indptr[:-1], n)
    held = rank < np.repeat(k, n)
    coo = train.tocoo()
    part = lambda mask: sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=train.shape)  # noqa: E731
    return Dataset(dataset.name, part(~held), part(held), dataset.test, dataset.features, dataset.item_categories,
                   source=f"{dataset.source} (G-Blend holdout {fraction}, seed {seed})")


def blend_weights(start: Mapping[str, tuple[float, float]], end: Mapping[str, tuple[float, float]],
                  eps: float = 1e-8) -> dict[str, float]:
    """G-Blend weights from each head's (L^T, L^V) at the start and the end of its probe run:
    w_k ∝ max(ΔG_k, 0) / max(ΔO_k², ε), normalised to sum 1; uniform when every w_k is 0."""
    raw = {}
    for k, (t0, v0) in start.items():
        t1, v1 = end[k]
        gain = v0 - v1
        d_over = (v1 - t1) - (v0 - t0)
        raw[k] = max(gain, 0.0) / max(d_over * d_over, eps)
    total = sum(raw.values())
    if not total > 0 or total == float("inf"):
        return {k: 1.0 / len(raw) for k in raw}
    return {k: v / total for k, v in raw.items()}


def fixed_triples(dataset: Dataset, split: str, device: torch.device, seed: int) -> Batch:
    """One (u, i, j) per user with items in ``split``: i a uniform item of that split, j uniform among
    the items in neither the user's training set nor ``split`` (CKD's unused ``Data.sample_val``)."""
    positives = dataset.train if split == "train" else dataset.split(split)
    excluded = dataset.train if split == "train" else (dataset.train + positives).tocsr()
    n = int((positives.getnnz(axis=1) > 0).sum())
    batch = BPRSampler(sp.csr_matrix(positives), max(n, 1), device, seed=seed).sample()
    negatives = BPRSampler(sp.csr_matrix(excluded), max(n, 1), device, seed=seed + 1)
    return Batch(batch.users, batch.pos, negatives.sample_negatives(batch.users))


@register("gb", Row(label="+GB", order=10, paper_row="GB", search_space={"estimate_epochs": [5, 10, 20]}))
class GradientBlending(Balancer):
    def __init__(
        self,
        mode: str = "offline",
        super_epoch: int = 10,
        estimate_epochs: int = 10,
        unimodal: str = "ablated_pass",
        eps: float = 1e-8,
        weights: Mapping[str, float] | None = None,
        estimate_on: str = "holdout",
        holdout_fraction: float = 0.1,
    ) -> None:
        one_of("balancer.mode", mode, MODES)
        self.estimate_on = one_of("balancer.estimate_on", estimate_on, ESTIMATE_ON)
        if not 0.0 < holdout_fraction < 1.0:
            raise ConfigError(f"balancer.holdout_fraction={holdout_fraction}: a fraction in (0, 1), e.g. 0.1")
        self.holdout_fraction = float(holdout_fraction)
        one_of("balancer.unimodal", unimodal, UNIMODAL)
        if int(super_epoch) < 1 or int(estimate_epochs) < 1:
            raise ConfigError("balancer.super_epoch and balancer.estimate_epochs must be >= 1")
        self.mode, self.unimodal, self.eps = mode, unimodal, float(eps)
        self.super_epoch, self.estimate_epochs = int(super_epoch), int(estimate_epochs)
        self.fixed = dict(weights) if weights else None  # given weights: no estimation (VMZ's fixed blends)
        self.weights: dict[str, float] = dict(self.fixed or {})
        self.estimates: list[dict[str, Any]] = []
        self._ctx: RunContext | None = None
        self._triples: dict[str, Batch] = {}
        self._probe_data: Dataset | None = None

    # ----------------------------------------------------------------------------------- heads
    def passes_per_step(self, modalities: Sequence[str]) -> int:
        return 1 + len(modalities)  # the multimodal head and one pass per uni-modal head

    def heads(self, model: Backbone) -> list[str]:
        return [MULTIMODAL, *model.modalities]

    def head_losses(self, model: Backbone, base: BatchPass, heads: Iterable[str]) -> dict[str, torch.Tensor]:
        """BPR loss of each requested head on the batch: the multimodal head is the full pass; the head
        of m is the m-only (every other modality ablated) pass, or with ``unimodal: contribution`` the
        ITE margin Δ − Δ^{(−m)}."""
        out = {}
        for k in heads:
            if k == MULTIMODAL:
                out[k] = base.terms["bpr"] if "bpr" in base.terms else -F.logsigmoid(base.margin).mean()
            elif self.unimodal == "ablated_pass":
                out[k] = -F.logsigmoid(batch_pass(model, base.batch, model.keep_only(k)).margin).mean()
            else:
                out[k] = -F.logsigmoid(base.margin - batch_pass(model, base.batch, {k}).margin).mean()
        return out

    def blended(self, model: Backbone, base: BatchPass, weights: Mapping[str, float]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Σ_k w_k L_k + every base term except the full pass's BPR (L2, aux); heads with w_k = 0 are skipped."""
        losses = self.head_losses(model, base, [k for k, w in weights.items() if w != 0])
        total = sum(v for k, v in base.terms.items() if k != "bpr")
        total = total + sum(weights[k] * v for k, v in losses.items())
        return total, losses

    def loss(self, model: Backbone, base: BatchPass, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        if not self.weights:
            self.weights = {k: 1.0 / len(self.heads(model)) for k in self.heads(model)}
        total, losses = self.blended(model, base, self.weights)
        logs = {f"gb/w/{k}": w for k, w in self.weights.items()}
        logs.update({f"gb/loss/{k}": v.detach() for k, v in losses.items() if k != MULTIMODAL})
        return total, logs

    # ----------------------------------------------------------------------------------- estimation
    def prepare(self, ctx: RunContext, model: Backbone) -> None:
        self._ctx = ctx
        if self.fixed is not None:
            unknown = set(self.fixed) - set(self.heads(model))
            if unknown:
                raise ConfigError(f"balancer.weights has unknown heads {sorted(unknown)}; use {self.heads(model)}")
            return
        self._probe_data = ctx.dataset if self.estimate_on == "valid" else \
            holdout_split(ctx.dataset, self.holdout_fraction, ctx.seed + 104729)
        self._triples = {s: fixed_triples(self._probe_data, s, ctx.device, ctx.seed + i) for i, s in enumerate(("train", "valid"))}
        self.estimate(model, epoch=0)

    def on_epoch_end(self, model: Backbone, epoch: int) -> dict[str, float]:
        if self.fixed is not None or self.mode != "online" or (epoch + 1) % self.super_epoch or self._ctx is None:
            return {}
        self.estimate(model, epoch + 1)
        return {f"gb/estimate/{k}": w for k, w in self.weights.items()}

    @torch.no_grad()
    def measure(self, model: Backbone, head: str) -> tuple[float, float]:
        """(L^T, L^V) of ``head``: its mean BPR loss on the fixed training / validation triples, eval mode."""
        was_training = model.training
        model.eval()
        out = []
        for split in ("train", "valid"):
            batch = self._triples[split]
            full = batch_pass(model, batch)
            out.append(float(self.head_losses(model, full, [head])[head]))
        model.train(was_training)
        return out[0], out[1]

    def estimate(self, model: Backbone, epoch: int) -> dict[str, float]:
        """Train a probe copy of ``model`` on each head alone for ``estimate_epochs`` epochs from the
        student's current weights, measuring (L^T, L^V) before and after; set and return the weights.

        The probe is a fresh backbone built on the probe data (``holdout``: the training set without the
        held-out interactions), with the student's weights: a graph backbone's graph then has no
        held-out edge, so L^V is not optimistic. The student itself is never trained or changed here."""
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}  # weights; no data-built buffers
        probe = self._probe_model(model)
        start, end = {}, {}
        for index, head in enumerate(self.heads(model)):
            probe.load_state_dict(state)
            probe.train(model.training)
            start[head] = self.measure(probe, head)
            self._train_probe(probe, head, seed=self._ctx.seed + 1000 * (len(self.estimates) + 1) + index)
            end[head] = self.measure(probe, head)
        self.weights = blend_weights(start, end, self.eps)
        self.estimates.append({"epoch": epoch, "weights": dict(self.weights),
                               "probe_epochs": self.estimate_epochs * len(self.heads(model)),
                               "start": {k: list(v) for k, v in start.items()},
                               "end": {k: list(v) for k, v in end.items()}})
        log.info("gb: weights at epoch %d: %s", epoch, {k: round(w, 4) for k, w in self.weights.items()})
        return self.weights

    def _probe_model(self, model: Backbone) -> Backbone:
        """A backbone of the student's config built on the probe data (its graph from those
        interactions), on the student's device; built under a forked RNG, so the student's random
        stream is the same as without it."""
        from mbrec.backbones import build_backbone

        ctx = self._ctx
        cfg = (ctx.configs or {}).get("backbone")
        if not cfg:  # a context without the run's configs (a hand-made one): a copy on the student's data
            import copy

            return copy.deepcopy(model)
        with torch.random.fork_rng(devices=[]):
            return build_backbone(cfg, self._probe_data or ctx.dataset).to(ctx.device)

    def _train_probe(self, probe: Backbone, head: str, seed: int) -> None:
        """``estimate_epochs`` epochs of ``head``'s loss alone, through the run's fit service (a nested
        tracked fit, a fresh optimizer of the run's kind, no validation)."""
        ctx = self._ctx
        n = self.estimate_epochs
        settings = dataclasses.replace(ctx.settings, max_epochs=n, eval_every=0)  # 0: no validation in probes
        ctx.fit(f"gb-probe-{head}", model=probe, balancer=_HeadOnly(self, head), dataset=self._probe_data,
                settings=settings, seed=seed, test=False)

    # ----------------------------------------------------------------------------------- records
    def results(self) -> dict[str, Any]:
        return {"mode": self.mode, "weights": dict(self.weights), "estimates": self.estimates}

    def state_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "estimates": list(self.estimates)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights = dict(state.get("weights", self.weights))
        self.estimates = list(state.get("estimates", self.estimates))


class _HeadOnly(Balancer):
    """The loss of one G-Blend probe: head k's BPR alone (+ L2 and aux of the full pass)."""

    def __init__(self, gb: GradientBlending, head: str) -> None:
        self.gb, self.head = gb, head

    def passes_per_step(self, modalities: Sequence[str]) -> int:
        return 1 if self.head == MULTIMODAL else 2

    def loss(self, model: Backbone, base: BatchPass, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        return self.gb.blended(model, base, {self.head: 1.0})[0], {}
