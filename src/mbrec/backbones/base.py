"""The Backbone interface: what every model must provide so that every balancer works with it."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ClassVar, Hashable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mbrec.data.dataset import Dataset
from mbrec.registry import Registry


class StepMemo:
    """Values shared by the several forward passes of one training step (``Backbone.step_cache``):
    inside :meth:`active`, :meth:`get` builds each key once; outside it always rebuilds."""

    def __init__(self) -> None:
        self._values: dict[Hashable, torch.Tensor] | None = None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self._values = {}
        try:
            yield
        finally:
            self._values = None

    @property
    def active_now(self) -> bool:
        """True inside :meth:`active` (a multi-pass step)."""
        return self._values is not None

    def get(self, key: Hashable, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self._values is None:
            return build()
        if key not in self._values:
            self._values[key] = build()
        return self._values[key]


class Backbone(nn.Module):
    """A multimodal recommender that scores (u, i) by the inner product of its representations
    (``mbrec.training.objective.inner``; evaluation ranks all items by the same product).

    A subclass writes only its model (docs/backbones.md#adding-a-backbone):

    * ``__init__(self, dataset, <config keys with defaults>)``: calls ``super().__init__(dataset)``, then
      creates its parameters in a fixed order (seeded runs and cached teachers depend on it);
    * :meth:`encode` ``(users, items, ablate)``: the representations; ``ablate`` is a validated frozenset;
    * :meth:`modality_parameters` (which parameters each modality owns; OGM scales their gradients) and,
      if the model has them, :meth:`aux_loss` (an extra term) or :meth:`objective` (its own base loss in
      place of BPR + L2, e.g. a model trained without negatives), :meth:`on_epoch_start` (per-epoch work)
      and ``search_space`` (its grid).

    The base provides :meth:`forward` (validates ``ablate``, calls :meth:`encode`), the feature matrices
    when ``uses_features`` is set (:meth:`feature`, :meth:`feature_mean`, ``feature_dims``;
    :meth:`train_features` makes them parameters), the mean-ablated inputs (:meth:`modality_input`,
    :meth:`item_input`, :meth:`user_input`), and ``self.memo`` for work shared by the passes of one step
    (:meth:`step_cache`).

    Ablating modality m (docs/method.md#ablating-a-modality) replaces every item's feature vector of m by
    the mean over items and, where the model has them, every user's preference vector for m by the
    mean over users, so the input stays in-distribution but carries no information about m.
    """

    #: the config group name (``backbone=<name>``); set by :func:`register`.
    name: str = ""
    #: True: the base registers the dataset's feature matrices as constant buffers before the subclass's
    #: constructor body runs (:meth:`feature`, :meth:`feature_mean`, ``feature_dims``).
    uses_features: bool = False
    #: the grid a Table 1 study tunes for this model, as dotted overrides (``backbone.dropout``,
    #: ``train.l2``, ``optimizer.lr``, ...) -> values, from its reference config. Empty: the paper's grid
    #: (lr x L2, x dropout when the model has a ``dropout`` key). mbrec.sweep.table1.row_grid reads it.
    search_space: ClassVar[Mapping[str, Sequence[Any]]] = {}

    def __init__(self, dataset: Dataset, **config: Any) -> None:
        super().__init__()
        self.modalities: tuple[str, ...] = dataset.modalities
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        self.memo = StepMemo()
        #: each modality's raw feature width d_m (set by :meth:`register_features`)
        self.feature_dims: dict[str, int] = {}
        if self.uses_features:
            self.register_features(feature_tensors(dataset))

    def forward(
        self,
        users: torch.Tensor | None = None,
        items: torch.Tensor | None = None,
        ablate: Iterable[str] = (),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """User and item representations (rows in the order of ``users``/``items``; all when None)
        with the modalities in ``ablate`` replaced by their means: :meth:`encode` after validating ``ablate``."""
        return self.encode(users, items, self.check_ablation(ablate))

    def encode(
        self, users: torch.Tensor | None, items: torch.Tensor | None, ablate: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The model: :meth:`forward` with ``ablate`` already a validated set of modalities."""
        raise NotImplementedError

    def aux_loss(self, batch: Any) -> torch.Tensor | None:
        """An extra training term of the model itself (e.g. MGCN's contrastive loss); None if none."""
        return None

    def on_epoch_start(self, epoch: int) -> None:
        """Before each training epoch (the trainer calls it; MMRec's ``pre_epoch_processing``): per-epoch
        work, e.g. FREEDOM draws its pruned user-item graph from torch's RNG (a resumed run draws what
        the uninterrupted one would), LATTICE rebuilds its learned item graph. Default: nothing."""

    def objective(self, batch_pass: Any, l2: float) -> dict[str, torch.Tensor] | None:
        """The model's own base loss terms for the training pass ``batch_pass``
        (``mbrec.training.objective.BatchPass``: the batch, its user/pos/neg representations and scores, the
        pass's ``ablate``),
        replacing the default BPR (eq. 2) and L2 terms; ``l2`` is ``train.l2``. None (the default) keeps
        BPR + L2. Balancers still get the model's per-modality passes and their BPR margins."""
        return None

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Which parameters belong to which modality; parameters not listed are shared."""
        return {m: [] for m in self.modalities}

    def check_ablation(self, ablate: Iterable[str]) -> frozenset[str]:
        ablate = frozenset(ablate)
        unknown = ablate - set(self.modalities)
        if unknown:
            raise ValueError(f"cannot ablate {sorted(unknown)}: modalities are {list(self.modalities)}")
        return ablate

    def keep_only(self, modality: str) -> frozenset[str]:
        """The ablation that keeps only ``modality`` (the uni-modal pass)."""
        return frozenset(self.modalities) - {modality}

    def step_cache(self) -> contextlib.AbstractContextManager:
        """A context for one training step with several forward passes (CKD, GB, OGM): inside it
        ``self.memo.get(key, build)`` computes what all passes share once (e.g. VBPR's item projections)."""
        return self.memo.active()

    # -- features and ablated inputs -----------------------------------------------------------------
    def register_features(self, features: Mapping[str, torch.Tensor]) -> None:
        """Each modality's feature matrix and its item mean as constant buffers (moved with the module,
        not trained, not saved): :meth:`feature` and :meth:`feature_mean`. Called by the base when
        ``uses_features`` is set."""
        for m, f in features.items():
            self.feature_dims[m] = f.shape[1]
            self.register_buffer(f"feat_{m}", f, persistent=False)
            self.register_buffer(f"feat_mean_{m}", f.mean(0, keepdim=True), persistent=False)

    def train_features(self) -> None:
        """Make the feature matrices trainable, initialised from the data (MGCN, and MMRec's models
        with ``freeze=False`` feature tables): the parameters ``features.<m>`` (a reserved name) replace
        the buffers, and :meth:`feature` / :meth:`feature_mean` follow them (the mean is then taken live,
        so gradients reach the table). Call it in the constructor where these parameters belong in the
        parameter order."""
        self.features = nn.ParameterDict({m: nn.Parameter(self.feature(m)) for m in self.modalities})
        for m in self.modalities:
            delattr(self, f"feat_{m}")
            delattr(self, f"feat_mean_{m}")

    def feature(self, m: str) -> torch.Tensor:
        """m's item feature matrix (I × d_m)."""
        return self.features[m] if "features" in self._modules else getattr(self, f"feat_{m}")

    def feature_mean(self, m: str) -> torch.Tensor:
        """m's feature mean over items (1 × d_m)."""
        if "features" in self._modules:
            return self.features[m].mean(0, keepdim=True)
        return getattr(self, f"feat_mean_{m}")

    def modality_input(self, m: str, ablate: frozenset[str], items: torch.Tensor | None = None) -> torch.Tensor:
        """m's feature rows of ``items`` (all when None) or, with m in ``ablate``, its item mean (one row)."""
        return self.feature_mean(m) if m in ablate else rows(self.feature(m), items)

    def item_input(
        self, m: str, ablate: frozenset[str], items: torch.Tensor | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    ) -> torch.Tensor:
        """``transform`` of m's feature rows of ``items`` (all when None); with m in ``ablate``,
        ``transform`` of m's item mean, computed once and repeated for every requested item."""
        x = transform(self.modality_input(m, ablate, items))
        return x.expand(self.n_items if items is None else items.numel(), -1) if m in ablate else x

    def user_input(
        self, table: torch.Tensor, users: torch.Tensor | None, ablated: bool,
        transform: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    ) -> torch.Tensor:
        """``transform`` of the rows of a per-user table of one modality (e.g. θᵐ) for ``users`` (all when
        None); when ``ablated``, ``transform`` of its mean over users, repeated for every requested user."""
        if not ablated:
            return transform(rows(table, users))
        return transform(table.mean(0, keepdim=True)).expand(table.shape[0] if users is None else users.numel(), -1)


BACKBONES: Registry[Backbone] = Registry("backbone")
register = BACKBONES.register


def build_backbone(cfg: Mapping[str, Any], dataset: Dataset) -> Backbone:
    """Build the backbone named ``cfg['name']`` with the rest of ``cfg`` as keyword arguments."""
    return BACKBONES.build(cfg, dataset)


def rows(table: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """``table[index]`` (all rows when ``index`` is None); ``index_select`` has a cheaper backward
    than advanced indexing."""
    return table if index is None else table.index_select(0, index)


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        return x @ w

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, w = ctx.saved_tensors
        grad_x = (grad @ w.to(grad.dtype).T).to(x.dtype) if ctx.needs_input_grad[0] else None
        # (gradᵀ x)ᵀ rather than autograd's xᵀ grad: the same numbers, but with x a tall n × d_m feature
        # table and w skinny (d_m × 4 hyperedges) BLAS runs this layout ~15x faster on CPU (measured 16 vs
        # 240 ms for Baby's 7,050 × 4,096 visual table, one thread)
        grad_w = (grad.T @ x.to(grad.dtype)).T.to(w.dtype) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w


def project(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w`` for a tall table x (e.g. every item's features) and a weight w; its backward computes
    w's gradient in the layout BLAS is fast at (values as autograd's)."""
    return _Project.apply(x, w)


def feature_tensors(dataset: Dataset) -> dict[str, torch.Tensor]:
    """The dataset's feature matrices as float32 tensors (CPU; move with the module)."""
    return {m: torch.from_numpy(np.array(f, dtype=np.float32)) for m, f in dataset.features.items()}


def check_choice(key: str, value: Any, allowed: Iterable[Any]) -> None:
    """Refuse the config value ``backbone.<key>=<value>`` unless it is one of ``allowed`` (one line)."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"backbone.{key}={value!r}: use one of {allowed}")


def embedding_table(n: int, d: int, init: Callable[[torch.Tensor], torch.Tensor] = nn.init.xavier_uniform_) -> nn.Parameter:
    """An n × d trainable table initialised by ``init`` (Xavier-uniform by default)."""
    return nn.Parameter(init(torch.empty(n, d)))
