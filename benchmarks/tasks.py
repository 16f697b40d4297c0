"""Benchmark tasks: small models, data made in code, a fixed step budget and one metric each.

A task is a LightningModule factory taking ``lr`` (plus an optional LR schedule), train/val tensors made
deterministically from a data seed, a batch size, an epoch count (the step budget is
``epochs * steps_per_epoch``), a log-spaced oracle grid and a metric: validation accuracy in percent
(higher is better) for classification, validation MSE (lower is better) for regression.

Everything runs on CPU; models are tiny so that one training run takes a few seconds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

Data = tuple[Tensor, Tensor, Tensor, Tensor]  # x_train, y_train, x_val, y_val
_DATA: dict[str, Data] = {}


# --------------------------------------------------------------------------- module


class TaskModule(L.LightningModule):
    """A LightningModule around ``net`` whose optimizer is built from ``self.lr`` in ``configure_optimizers``.

    ``schedule`` is None (constant LR), ``"onecycle"`` (``OneCycleLR(max_lr=lr)``) or ``"cosine"``
    (``CosineAnnealingLR`` from ``lr`` to 0); both schedules step per optimizer step over ``total_steps``.
    """

    def __init__(
        self,
        lr: float,
        net: nn.Module,
        loss: str,
        make_optimizer: Callable[[object, float], torch.optim.Optimizer],
        schedule: str | None = None,
        total_steps: int = 0,
    ) -> None:
        super().__init__()
        self.lr = lr
        self.net = net
        self.loss_name = loss
        self.make_optimizer = make_optimizer
        self.schedule = schedule
        self.total_steps = total_steps

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def criterion(self, out: Tensor, y: Tensor) -> Tensor:
        if self.loss_name == "mse":
            return F.mse_loss(out.squeeze(-1), y)
        return F.cross_entropy(out, y)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return self.criterion(self(x), y)

    def optimized_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def configure_optimizers(self):  # noqa: ANN201
        opt = self.make_optimizer(self.optimized_parameters(), self.lr)
        if self.schedule is None:
            return opt
        if self.schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=self.total_steps)
        elif self.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.total_steps)
        else:
            raise ValueError(f"schedule={self.schedule!r}; expected None, 'onecycle' or 'cosine'")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def sgd(momentum: float = 0.0) -> Callable:
    def make(params, lr):  # noqa: ANN001, ANN202
        return torch.optim.SGD(params, lr=lr, momentum=momentum)

    return make


def adam(params, lr):  # noqa: ANN001, ANN201
    return torch.optim.Adam(params, lr=lr)


def adamw(params, lr):  # noqa: ANN001, ANN201
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.01)


# --------------------------------------------------------------------------- data


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def spirals(n: int, seed: int, classes: int = 3, noise: float = 0.4) -> tuple[Tensor, Tensor]:
    """Interleaved 2-D spirals, ``classes`` arms, Gaussian noise on the points."""
    g = _gen(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    r = torch.rand(n, generator=g)
    theta = r * 3.5 + y.float() * (2 * math.pi / classes)
    x = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1) * 2.0
    x = x + noise * r.unsqueeze(1) * torch.randn(n, 2, generator=g)
    return x, y


def signals(
    n: int, seed: int, length: int = 64, noise: float = 0.6, freqs: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """1-D waveforms (sine, square, sawtooth, triangle) of random frequency, phase and amplitude, plus noise."""
    g = _gen(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    t = torch.linspace(0, 1, length).unsqueeze(0)
    freq = 2 + 4 * torch.rand(n, 1, generator=g)
    if freqs is not None:
        freq = freqs.reshape(n, 1)
    phase = torch.rand(n, 1, generator=g)
    amp = 0.5 + torch.rand(n, 1, generator=g)
    u = (freq * t + phase) % 1.0  # position within the period, 0..1
    waves = torch.stack(
        [
            torch.sin(2 * math.pi * u),
            torch.sign(torch.sin(2 * math.pi * u)),
            2 * u - 1,
            1 - 4 * (u - 0.5).abs(),
        ],
        dim=1,
    )  # n, 4, length
    x = waves[torch.arange(n), y] * amp + noise * torch.randn(n, length, generator=g)
    return x.unsqueeze(1), y


def signals8(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """The waveforms of :func:`signals` with 8 labels: waveform x (frequency above 4 cycles or not)."""
    g = _gen(seed)
    freq = 2 + 4 * torch.rand(n, generator=g)
    x, wave = signals(n, seed + 1000, freqs=freq)
    return x, wave * 2 + (freq > 4).long()


def _mixture_draw(n: int, seed: int, dim: int, classes: int, modes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Points, classes and clusters of a Gaussian mixture whose centres are fixed (seed 12345)."""
    centres = torch.randn(classes, modes, dim, generator=_gen(12345)) * 0.9
    g = _gen(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    m = torch.randint(0, modes, (n,), generator=g)
    return centres[y, m] + torch.randn(n, dim, generator=g), y, m


def mixture(n: int, seed: int, dim: int = 32, classes: int = 8, modes: int = 3) -> tuple[Tensor, Tensor]:
    """Gaussian mixture: each class is ``modes`` overlapping clusters in ``dim`` dimensions (centres fixed)."""
    x, y, _ = _mixture_draw(n, seed, dim, classes, modes)
    return x, y


def mixture_modes(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """The points of :func:`mixture` with 16 labels: class x (drawn from its first cluster or not)."""
    x, y, m = _mixture_draw(n, seed, 32, 8, 3)
    return x, y * 2 + (m == 0).long()


def majority(n: int, seed: int, vocab: int = 8, length: int = 24) -> tuple[Tensor, Tensor]:
    """Token sequences; the label is the most frequent token (ties go to the lowest id)."""
    g = _gen(seed)
    # skewed token distributions so that most sequences have a clear (but not trivial) majority
    logits = torch.randn(n, vocab, generator=g) * 0.7
    x = torch.multinomial(torch.softmax(logits, dim=1), length, replacement=True, generator=g)
    counts = F.one_hot(x, vocab).sum(1).float()
    y = (counts - torch.arange(vocab) * 1e-3).argmax(1)
    return x, y


def friedman(n: int, seed: int, dim: int = 8, noise: float = 0.3) -> tuple[Tensor, Tensor]:
    """Friedman-style nonlinear regression on ``dim`` uniform features (the last 3 are irrelevant)."""
    g = _gen(seed)
    x = torch.rand(n, dim, generator=g) * 2 - 1
    y = (
        2 * torch.sin(math.pi * x[:, 0] * x[:, 1])
        + 3 * (x[:, 2] - 0.2) ** 2
        + 1.5 * x[:, 3]
        + torch.cos(3 * x[:, 4])
        + noise * torch.randn(n, generator=g)
    )
    return x, y


def flip_labels(y: Tensor, fraction: float, seed: int) -> Tensor:
    """``y`` with a ``fraction`` of its labels (chosen by ``seed``) replaced by a different, random class."""
    g = _gen(seed)
    classes = int(y.max()) + 1
    flip = torch.rand(len(y), generator=g) < fraction
    shift = torch.randint(1, classes, (len(y),), generator=g)
    return torch.where(flip, (y + shift) % classes, y)


def bands(n: int, seed: int, length: int = 64, noise: float = 1.0) -> tuple[Tensor, Tensor]:
    """Two random-phase tones whose frequencies lie in one of 4 bands (the label), in heavy white noise."""
    g = _gen(seed)
    edges = torch.tensor([[2.0, 4.0], [5.0, 8.0], [9.0, 13.0], [14.0, 20.0]])  # cycles per window
    y = torch.randint(0, 4, (n,), generator=g)
    lo, hi = edges[y, 0:1], edges[y, 1:2]
    freq = lo + (hi - lo) * torch.rand(n, 2, generator=g)
    phase = torch.rand(n, 2, generator=g)
    amp = 0.4 + 0.8 * torch.rand(n, 2, generator=g)
    t = torch.linspace(0, 1, length).view(1, 1, length)
    x = (amp.unsqueeze(-1) * torch.sin(2 * math.pi * (freq.unsqueeze(-1) * t + phase.unsqueeze(-1)))).sum(1)
    x = x + noise * torch.randn(n, length, generator=g)
    return x.unsqueeze(1), y


def shells(n: int, seed: int, dim: int = 16, classes: int = 6) -> tuple[Tensor, Tensor]:
    """Nested noisy shells: the label is the radius band of a point in ``dim`` dimensions (fixed anisotropic axes)."""
    scale = 0.5 + torch.rand(dim, generator=_gen(54321))
    g = _gen(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    direction = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    radius = 1.0 + 0.6 * y.float() + 0.25 * torch.randn(n, generator=g)
    return direction * radius.unsqueeze(1) * scale, y


def distinct(n: int, seed: int, vocab: int = 12, length: int = 16) -> tuple[Tensor, Tensor]:
    """Token sequences; the label is how many distinct tokens occur, clipped to 5..11 (7 classes)."""
    g = _gen(seed)
    logits = torch.randn(n, vocab, generator=g) * 1.2
    x = torch.multinomial(torch.softmax(logits, dim=1), length, replacement=True, generator=g)
    d = F.one_hot(x, vocab).amax(1).sum(1)
    return x, d.clamp(5, 11) - 5


def counts(n: int, seed: int, vocab: int = 8, length: int = 24) -> tuple[Tensor, Tensor]:
    """Pre-training data: token sequences (as in :func:`majority`) and, as target, each token's count ÷ length."""
    g = _gen(seed)
    logits = torch.randn(n, vocab, generator=g) * 0.7
    x = torch.multinomial(torch.softmax(logits, dim=1), length, replacement=True, generator=g)
    return x, F.one_hot(x, vocab).sum(1).float() / length


def sub_majority(n: int, seed: int, vocab: int = 8, length: int = 24) -> tuple[Tensor, Tensor]:
    """Token sequences; the label is which of tokens 0..3 is the most frequent (ties go to the lowest id)."""
    x, c = counts(n, seed, vocab, length)
    return x, (c[:, :4] - torch.arange(4) * 1e-4).argmax(1)


def sub_minority(n: int, seed: int, vocab: int = 8, length: int = 24) -> tuple[Tensor, Tensor]:
    """The sequences of :func:`majority`; the label is which of tokens 4..7 is the least frequent (ties: lowest id)."""
    x, _ = majority(n, seed, vocab, length)
    return x, (F.one_hot(x, vocab).sum(1)[:, 4:].float() + torch.arange(4) * 1e-3).argmin(1)


def additive(n: int, seed: int, dim: int = 6, noise: float = 0.5) -> tuple[Tensor, Tensor]:
    """Small-data regression: an additive model of ``dim`` Gaussian features with interactions, plus noise."""
    g = _gen(seed)
    x = torch.randn(n, dim, generator=g)
    y = (
        torch.tanh(2 * x[:, 0])
        + 0.5 * x[:, 1] ** 2
        - torch.exp(-(x[:, 2] ** 2)) * 2
        + x[:, 3] * x[:, 4]
        + 0.3 * x[:, 5]
        + noise * torch.randn(n, generator=g)
    )
    return x, y


def walks(n: int, seed: int, length: int = 24, noise: float = 1.0) -> tuple[Tensor, Tensor]:
    """Noisy increments of a walk whose drift is up, down, up-then-down or down-then-up (the label)."""
    g = _gen(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    turn = torch.randint(length // 3, 2 * length // 3, (n, 1), generator=g)
    t = torch.arange(length).unsqueeze(0)
    first = torch.tensor([1.0, -1.0, 1.0, -1.0])[y].unsqueeze(1)
    second = torch.tensor([1.0, -1.0, -1.0, 1.0])[y].unsqueeze(1)
    drift = torch.where(t < turn, first, second) * (0.3 + 0.3 * torch.rand(n, 1, generator=g))
    return (drift + noise * torch.randn(n, length, generator=g)).unsqueeze(-1), y


def checker(n: int, seed: int, cells: int = 4) -> tuple[Tensor, Tensor]:
    """2-D checkerboard of ``cells`` x ``cells`` squares on [-1, 1]^2, two classes."""
    g = _gen(seed)
    x = torch.rand(n, 2, generator=g) * 2 - 1
    ij = ((x + 1) / 2 * cells).long().clamp(max=cells - 1)
    return x, (ij.sum(1) % 2)


# --------------------------------------------------------------------------- models


def mlp(dims: list[int], dropout: float = 0.0, batchnorm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            if batchnorm:
                layers.append(nn.BatchNorm1d(b))
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def cnn1d(classes: int = 4) -> nn.Sequential:
    return nn.Sequential(*cnn1d_body(), nn.Linear(32, classes))


def cnn1d_body() -> list[nn.Module]:
    return [
        nn.Conv1d(1, 16, 7, padding=3),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(16, 32, 5, padding=2),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
    ]


class TinyTransformer(nn.Module):
    """Token + position embedding, one pre-norm encoder layer, mean pooling, linear head."""

    def __init__(self, vocab: int = 8, length: int = 24, d: int = 32, heads: int = 4, classes: int = 8) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, length, d) * 0.02)
        self.enc = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.head = nn.Linear(d, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.enc(self.tok(x) + self.pos)
        return self.head(h.mean(1))


def cnn1d_plain(classes: int = 4) -> nn.Sequential:
    """The 2-layer Conv1d net of :func:`cnn1d` without BatchNorm."""
    return nn.Sequential(
        nn.Conv1d(1, 16, 7, padding=3),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(16, 32, 5, padding=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(32, classes),
    )


class GRUNet(nn.Module):
    """One-layer GRU over a sequence of feature vectors; a linear head reads the last hidden state."""

    def __init__(self, features: int = 1, hidden: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.gru(x)[1][-1])


class SequenceEncoder(nn.Module):
    """Token + position embedding and one pre-norm encoder layer, mean-pooled: :class:`TinyTransformer`'s body."""

    def __init__(self, vocab: int = 8, length: int = 24, d: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, length, d) * 0.02)
        self.enc = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.enc(self.tok(x) + self.pos).mean(1)


class BackboneNet(nn.Module):
    """A ``backbone`` (loaded with pre-trained weights) and a fresh linear ``head``."""

    def __init__(self, backbone: nn.Module, width: int, classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


class FinetuneModule(TaskModule):
    """Exposes ``net.backbone`` as ``backbone`` for ``BackboneFinetuning``; the optimizer gets trainable params only.

    ``BackboneFinetuning`` freezes the backbone in ``setup`` (before ``configure_optimizers``) and adds it as a new
    param group at its unfreeze epoch.
    """

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.backbone = self.net.backbone

    def optimized_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


# --------------------------------------------------------------------------- pre-training (cached on disk)

PRETRAIN_DIR: list[Path] = [Path(__file__).resolve().parent / "_runs" / "pretrained"]  # run.py points it at its cache


def pretrained(
    name: str,
    make_body: Callable[[], nn.Module],
    width: int,
    data_fn: Callable[[int, int], tuple[Tensor, Tensor]],
    loss: str,
    outputs: int,
    optimizer: Callable,
    lr: float,
    steps: int,
    n: int = 4096,
    batch: int = 64,
) -> dict[str, Tensor]:
    """State dict of ``make_body()`` after ``steps`` of plain-torch training on ``data_fn`` (data seed 11, init seed 0).

    Deterministic; stored under ``PRETRAIN_DIR`` keyed by the arguments, so every run and process trains it once.
    """
    key = f"{name}-{steps}-{lr:.4g}-{n}-{batch}"
    path = PRETRAIN_DIR[0] / f"{key}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    rng = torch.get_rng_state()
    try:
        torch.manual_seed(0)
        body = make_body()
        net = nn.Sequential(body, nn.Linear(width, outputs))
        opt = optimizer(net.parameters(), lr)
        x, y = data_fn(n, 11)
        order = torch.randperm(n * (steps * batch // n + 1), generator=_gen(12)) % n
        for i in range(steps):
            idx = order[i * batch : (i + 1) * batch]
            out = net(x[idx])
            loss_v = F.mse_loss(out, y[idx]) if loss == "mse" else F.cross_entropy(out, y[idx])
            opt.zero_grad()
            loss_v.backward()
            opt.step()
    finally:
        torch.set_rng_state(rng)
    state = {k: v.detach().clone() for k, v in body.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return state


def cnn_backbone() -> nn.Module:
    """The Conv1d + BatchNorm body of :func:`cnn1d`, pre-trained on the 4-class waveform task (:func:`signals`)."""
    body = nn.Sequential(*cnn1d_body())
    state = pretrained(
        "cnn1d_body-signals", lambda: nn.Sequential(*cnn1d_body()), 32, signals, "ce", 4, sgd(0.9), 0.1, 640
    )
    body.load_state_dict(state)
    return BackboneNet(body, 32, 8)


def mlp_body() -> nn.Module:
    return nn.Sequential(*mlp([32, 128, 128]), nn.ReLU())


def mlp_backbone() -> nn.Module:
    """The body of an MLP 32-128-128, pre-trained with Adam on the 8-class Gaussian mixture (:func:`mixture`)."""
    body = mlp_body()
    body.load_state_dict(pretrained("mlp_body-mixture", mlp_body, 128, mixture, "ce", 8, adam, 1e-3, 600))
    return BackboneNet(body, 128, 16)


def transformer_backbone() -> nn.Module:
    """:class:`SequenceEncoder` pre-trained to regress each token's frequency (:func:`counts`), with a fresh head."""
    body = SequenceEncoder()
    body.load_state_dict(pretrained("encoder-counts", SequenceEncoder, 32, counts, "mse", 8, adamw, 3e-3, 600))
    return BackboneNet(body, 32, 4)


def majority_encoder_backbone() -> nn.Module:
    """:class:`SequenceEncoder` pre-trained to classify the majority token (:func:`majority`), with a fresh head."""
    body = SequenceEncoder()
    body.load_state_dict(pretrained("encoder-majority", SequenceEncoder, 32, majority, "ce", 8, adamw, 3e-3, 600))
    return BackboneNet(body, 32, 4)


# --------------------------------------------------------------------------- tasks


def log_grid(lo: float, hi: float, per_decade: int = 3) -> tuple[float, ...]:
    """Log-spaced grid from 10**lo to 10**hi with ``per_decade`` points per decade (ends included)."""
    n = int(round((hi - lo) * per_decade)) + 1
    return tuple(float(v) for v in np.logspace(lo, hi, n))


@dataclass(frozen=True)
class Task:
    """One benchmark task; see the module docstring."""

    name: str
    description: str
    kind: str  # "classification" (metric: val accuracy %, higher better) or "regression" (val MSE, lower better)
    optimizer: str
    data_fn: Callable[[int, int], tuple[Tensor, Tensor]]
    net_fn: Callable[[], nn.Module]
    make_optimizer: Callable
    grid: tuple[float, ...]
    n_train: int = 2048
    n_val: int = 2048
    batch_size: int = 64
    epochs: int = 8
    tags: tuple[str, ...] = field(default_factory=tuple)
    module_cls: type = TaskModule
    split: str = "tune"  # "tune": rules and constants may be tuned on it; "report": only ever reported on
    default_lr: float = 1e-3  # the "fixed LR" baseline: what a user would try without a finder
    label_noise: float = 0.0  # fraction of training labels replaced by a random other class
    unfreeze_at: int | None = None  # fine-tuning: ``BackboneFinetuning(unfreeze_backbone_at_epoch=...)``

    @property
    def loss(self) -> str:
        return "mse" if self.kind == "regression" else "ce"

    @property
    def steps_per_epoch(self) -> int:
        return self.n_train // self.batch_size

    @property
    def budget(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def higher_is_better(self) -> bool:
        return self.kind != "regression"

    @property
    def metric_name(self) -> str:
        return "val acc %" if self.higher_is_better else "val MSE"

    def data(self) -> Data:
        """Train and val tensors (train from data seed 1, val from data seed 2), made once per task name."""
        if self.name not in _DATA:
            x_tr, y_tr = self.data_fn(self.n_train, 1)
            x_va, y_va = self.data_fn(self.n_val, 2)
            if self.label_noise:
                y_tr = flip_labels(y_tr, self.label_noise, seed=3)
            _DATA[self.name] = (x_tr, y_tr, x_va, y_va)
        return _DATA[self.name]

    def model(self, lr: float, seed: int, schedule: str | None = None, total_steps: int = 0) -> TaskModule:
        """A fresh model; its initial weights depend only on ``seed``."""
        torch.manual_seed(seed)
        return self.module_cls(lr, self.net_fn(), self.loss, self.make_optimizer, schedule, total_steps)

    def train_loader(self, seed: int) -> DataLoader:
        """Shuffled train loader, order fixed by ``seed``; drops the last partial batch."""
        x, y = self.data()[:2]
        return DataLoader(
            TensorDataset(x, y), batch_size=self.batch_size, shuffle=True, drop_last=True, generator=_gen(seed + 777)
        )

    def callbacks(self) -> list:
        """Callbacks the task itself needs (fine-tuning: the unfreeze); they go before any other callback."""
        if self.unfreeze_at is None:
            return []
        from lightning.pytorch.callbacks import BackboneFinetuning

        return [BackboneFinetuning(unfreeze_backbone_at_epoch=self.unfreeze_at)]

    def n_params(self) -> int:
        return sum(p.numel() for p in self.model(1e-3, 0).parameters())

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> float:
        """Validation metric of ``model``: accuracy in percent, or MSE (NaN/Inf mapped to +inf)."""
        x, y = self.data()[2:]
        was_training = model.training
        model.eval()
        out = torch.cat([model(xb) for xb in x.split(1024)])
        model.train(was_training)
        if self.kind == "regression":
            mse = F.mse_loss(out.squeeze(-1), y).item()
            return mse if math.isfinite(mse) else math.inf
        if not torch.isfinite(out).all():
            out = torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
        return 100.0 * (out.argmax(1) == y).float().mean().item()


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task(
            name="spiral_mlp_sgd",
            description="3-arm noisy 2-D spirals, MLP 2-64-64-3 (ReLU)",
            kind="classification",
            optimizer="SGD",
            data_fn=spirals,
            net_fn=lambda: mlp([2, 64, 64, 3]),
            make_optimizer=sgd(0.0),
            grid=log_grid(-3, 1.5),
            epochs=6,
            default_lr=0.01,
            tags=("MLP",),
        ),
        Task(
            name="signal_cnn_bn_sgdm",
            description="1-D waveform class (sine/square/saw/triangle) in heavy noise, 2-layer Conv1d + BatchNorm",
            kind="classification",
            optimizer="SGD momentum 0.9",
            data_fn=signals,
            net_fn=cnn1d,
            make_optimizer=sgd(0.9),
            grid=log_grid(-4, 0.5),
            epochs=10,
            default_lr=0.01,
            tags=("CNN", "BatchNorm"),
        ),
        Task(
            name="mixture_mlp_dropout_adam",
            description="8-class Gaussian mixture (3 modes/class, 32-D), MLP 32-128-128-8 with Dropout 0.3",
            kind="classification",
            optimizer="Adam",
            data_fn=mixture,
            net_fn=lambda: mlp([32, 128, 128, 8], dropout=0.3),
            make_optimizer=adam,
            grid=log_grid(-5, -0.5),
            epochs=6,
            default_lr=1e-3,
            tags=("MLP", "Dropout"),
        ),
        Task(
            name="majority_transformer_adamw",
            description="majority token of a length-24 sequence (vocab 8), 1-layer transformer encoder, d=32",
            kind="classification",
            optimizer="AdamW (wd 0.01)",
            data_fn=majority,
            net_fn=TinyTransformer,
            make_optimizer=adamw,
            grid=log_grid(-5, -0.5),
            n_train=4096,
            epochs=3,
            default_lr=1e-3,
            tags=("Transformer",),
        ),
        Task(
            name="friedman_mlp_sgdm",
            description="nonlinear regression on 8 uniform features, MLP 8-64-64-1, MSE",
            kind="regression",
            optimizer="SGD momentum 0.9",
            data_fn=friedman,
            net_fn=lambda: mlp([8, 64, 64, 1]),
            make_optimizer=sgd(0.9),
            grid=log_grid(-4, 0.5),
            epochs=8,
            default_lr=0.01,
            tags=("MLP", "regression"),
        ),
        Task(
            name="signal8_finetune_sgdm",
            description="8-class waveform x frequency from 512 signals; Conv1d+BN body pre-trained on the 4-class "
            "waveform task, frozen, unfrozen at epoch 3",
            kind="classification",
            optimizer="SGD momentum 0.9",
            data_fn=signals8,
            net_fn=cnn_backbone,
            make_optimizer=sgd(0.9),
            grid=log_grid(-3, 0.5, per_decade=2),
            n_train=512,
            batch_size=32,
            epochs=12,
            default_lr=0.01,
            tags=("CNN", "BatchNorm", "fine-tuning"),
            module_cls=FinetuneModule,
            unfreeze_at=3,
        ),
        Task(
            name="mixture16_finetune_adam",
            description="16 labels (class x first cluster) of the Gaussian mixture from 512 points; MLP body "
            "pre-trained on the 8 classes, frozen, unfrozen at epoch 3",
            kind="classification",
            optimizer="Adam",
            data_fn=mixture_modes,
            net_fn=mlp_backbone,
            make_optimizer=adam,
            grid=log_grid(-5, -0.5, per_decade=2),
            n_train=512,
            batch_size=32,
            epochs=12,
            default_lr=1e-3,
            tags=("MLP", "fine-tuning"),
            module_cls=FinetuneModule,
            unfreeze_at=3,
        ),
        Task(
            name="subminority_finetune_transformer_adamw",
            description="least frequent of tokens 4..7, from 256 sequences; encoder pre-trained on the majority "
            "task, frozen, unfrozen at epoch 4",
            kind="classification",
            optimizer="AdamW (wd 0.01)",
            data_fn=sub_minority,
            net_fn=majority_encoder_backbone,
            make_optimizer=adamw,
            grid=log_grid(-5, -0.5, per_decade=2),
            n_train=256,
            batch_size=32,
            epochs=16,
            default_lr=1e-3,
            tags=("Transformer", "fine-tuning"),
            module_cls=FinetuneModule,
            unfreeze_at=4,
        ),
        # ------------------------------------------------------------------ report-only: never tuned on
        Task(
            name="bands_cnn_sgdm",
            description="frequency band (4) of two tones in heavy noise, 2-layer Conv1d without BatchNorm",
            kind="classification",
            optimizer="SGD momentum 0.9",
            data_fn=bands,
            net_fn=cnn1d_plain,
            make_optimizer=sgd(0.9),
            grid=log_grid(-4, 0.5),
            epochs=8,
            default_lr=0.01,
            tags=("CNN",),
            split="report",
        ),
        Task(
            name="shells_mlp_dropout_adam",
            description="radius band (6) of points on nested noisy 16-D shells, MLP 16-128-128-6 with Dropout 0.3",
            kind="classification",
            optimizer="Adam",
            data_fn=shells,
            net_fn=lambda: mlp([16, 128, 128, 6], dropout=0.3),
            make_optimizer=adam,
            grid=log_grid(-5, -0.5),
            epochs=6,
            default_lr=1e-3,
            tags=("MLP", "Dropout"),
            split="report",
        ),
        Task(
            name="distinct_transformer_adamw",
            description="number of distinct tokens (5..11) in a length-16 sequence (vocab 12), 1-layer transformer",
            kind="classification",
            optimizer="AdamW (wd 0.01)",
            data_fn=distinct,
            net_fn=lambda: TinyTransformer(vocab=12, length=16, classes=7),
            make_optimizer=adamw,
            grid=log_grid(-5, -0.5),
            n_train=4096,
            epochs=3,
            default_lr=1e-3,
            tags=("Transformer",),
            split="report",
        ),
        Task(
            name="submajority_finetune_transformer_adamw",
            description="most frequent of tokens 0..3, from 256 sequences; encoder pre-trained to count tokens, "
            "frozen, unfrozen at epoch 4",
            kind="classification",
            optimizer="AdamW (wd 0.01)",
            data_fn=sub_majority,
            net_fn=transformer_backbone,
            make_optimizer=adamw,
            grid=log_grid(-5, -0.5, per_decade=2),
            n_train=256,
            batch_size=32,
            epochs=16,
            default_lr=1e-3,
            tags=("Transformer", "fine-tuning"),
            module_cls=FinetuneModule,
            unfreeze_at=4,
            split="report",
        ),
        Task(
            name="additive_small_adamw",
            description="small-data regression (256 samples) on 6 Gaussian features, MLP 6-64-64-1, MSE",
            kind="regression",
            optimizer="AdamW (wd 0.01)",
            data_fn=additive,
            net_fn=lambda: mlp([6, 64, 64, 1]),
            make_optimizer=adamw,
            grid=log_grid(-5, -0.5),
            n_train=256,
            batch_size=32,
            epochs=20,
            default_lr=1e-3,
            tags=("MLP", "regression", "small data"),
            split="report",
        ),
        Task(
            name="walks_gru_adam",
            description="drift pattern (up/down/up-down/down-up) of a noisy walk's increments, GRU(32), last state",
            kind="classification",
            optimizer="Adam",
            data_fn=walks,
            net_fn=GRUNet,
            make_optimizer=adam,
            grid=log_grid(-5, -0.5),
            epochs=4,
            default_lr=1e-3,
            tags=("RNN",),
            split="report",
        ),
        Task(
            name="checker_noisy_mlp_sgd",
            description="3x3 checkerboard, 20% of training labels flipped, MLP 2-64-64-2",
            kind="classification",
            optimizer="SGD",
            data_fn=lambda n, seed: checker(n, seed, cells=3),
            net_fn=lambda: mlp([2, 64, 64, 2]),
            make_optimizer=sgd(0.0),
            grid=log_grid(-3, 1.5),
            epochs=8,
            default_lr=0.01,
            label_noise=0.2,
            tags=("MLP", "label noise"),
            split="report",
        ),
        Task(
            name="bands_cnn_sgdm_bigbatch",
            description="the bands task with batch 512 (8192 signals, 16 steps per epoch), Conv1d without BatchNorm",
            kind="classification",
            optimizer="SGD momentum 0.9",
            data_fn=bands,
            net_fn=cnn1d_plain,
            make_optimizer=sgd(0.9),
            grid=log_grid(-4, 0.5),
            n_train=8192,
            batch_size=512,
            epochs=10,
            default_lr=0.01,
            tags=("CNN", "large batch"),
            split="report",
        ),
    ]
}

SPLITS = ("tune", "report")


def tasks_in(split: str) -> list[str]:
    """Names of the tasks of one split (``"tune"`` or ``"report"``), or of all tasks (``"all"``)."""
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split={split!r}; allowed: 'tune', 'report', 'all'")
    return [n for n, t in TASKS.items() if split in ("all", t.split)]
