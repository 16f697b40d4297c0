"""Benchmark tasks: small models, data made in code, a fixed step budget and one metric each.

A task is a LightningModule factory taking ``lr`` (plus an optional LR schedule), train/val tensors made
deterministically from a data seed, a batch size, an epoch count (the step budget is
``epochs * steps_per_epoch``), a log-spaced oracle grid and a metric: validation accuracy in percent
(higher is better) for classification, validation MSE (lower is better) for regression.

Everything runs on CPU; models are tiny so that one training run takes a few seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

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

    def configure_optimizers(self):  # noqa: ANN201
        opt = self.make_optimizer(self.parameters(), self.lr)
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


def mixture(n: int, seed: int, dim: int = 32, classes: int = 8, modes: int = 3) -> tuple[Tensor, Tensor]:
    """Gaussian mixture: each class is ``modes`` overlapping clusters in ``dim`` dimensions (centres fixed)."""
    centres = torch.randn(classes, modes, dim, generator=_gen(12345)) * 0.9
    g = _gen(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    m = torch.randint(0, modes, (n,), generator=g)
    x = centres[y, m] + torch.randn(n, dim, generator=g)
    return x, y


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
            tags=("MLP", "regression"),
        ),
    ]
}
