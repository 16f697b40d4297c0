"""Tiny real models, data and fits shared by the tests (and tests/ddp_scripts): a Trainer on CPU, data made here."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_lrsweep import LRSweepTuner


def blobs(n: int = 256, features: int = 8, classes: int = 3, seed: int = 0) -> TensorDataset:
    """A separable classification problem: class centres plus noise."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, features, generator=g) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    x = centres[y] + torch.randn(n, features, generator=g)
    return TensorDataset(x, y)


def loader(n: int = 256, batch_size: int = 32, shuffle: bool = True, seed: int = 0, **kwargs: Any) -> DataLoader:
    return DataLoader(blobs(n, seed=seed), batch_size=batch_size, shuffle=shuffle, **kwargs)


class Classifier(pl.LightningModule):
    """An MLP with BatchNorm and dropout, its LR in ``hparams.lr``; logs its loss like real modules do."""

    def __init__(self, lr: float = 0.05, optimizer: str = "sgd", features: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(features, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def configure_optimizers(self) -> Any:
        if self.hparams.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


class Blobs(pl.LightningDataModule):
    """``blobs`` as a datamodule: ``n`` samples to train on, 64 others (``seed=1``) to validate on."""

    def __init__(self, n: int = 128) -> None:
        super().__init__()
        self.n = n

    def train_dataloader(self) -> DataLoader:
        return loader(n=self.n)

    def val_dataloader(self) -> DataLoader:
        return loader(n=64, shuffle=False, seed=1)


def is_sweep_step(module: pl.LightningModule) -> bool:
    """Whether ``training_step`` is being called by a sweep (which hides the trainer's callbacks)."""
    return module._trainer is not None and module.trainer.callbacks == []


class Plain(Classifier):
    """No dropout or BatchNorm: a resumed run (another global RNG) computes exactly what an uninterrupted one does."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr=lr)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


class Halving(Plain):
    """The LR halves every epoch, so a re-tune measures a scheduled LR below the base LR."""

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)}


def up_by_half(result: Any) -> float:
    """A re-tune rule: 1.5x the LR the re-tune measured (the centre of its window)."""
    return 1.5 * (result.min_lr * result.max_lr) ** 0.5


class Manual(Classifier):
    """Manual optimization; with ``step=False`` it never steps its optimizer."""

    def __init__(self, lr: float = 0.05, step: bool = True) -> None:
        super().__init__(lr=lr)
        self.automatic_optimization = False
        self.do_step = step

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        opt = self.optimizers()
        opt.zero_grad()
        loss = super().training_step(batch, batch_idx)
        self.manual_backward(loss)
        if self.do_step:
            opt.step()
        return loss


class TwoGroups(Classifier):
    """Body and head in two param groups, the body at 0.1x the head's LR; records both LRs at every sweep step."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__(lr=lr)
        self.sweep_lrs: list[tuple[float, float]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if is_sweep_step(self):
            body, head = (g["lr"] for g in self.trainer.optimizers[0].param_groups)
            self.sweep_lrs.append((body, head))
        return super().training_step(batch, batch_idx)

    def configure_optimizers(self) -> Any:
        body, head = self.net[:-1].parameters(), self.net[-1].parameters()
        lr = self.hparams.lr
        return torch.optim.SGD([{"params": body, "lr": lr * 0.1}, {"params": head, "lr": lr}], momentum=0.9)


class TwoOptimizers(Plain):
    """Manual optimization stepping two optimizers per batch: ``global_step`` counts both."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr=lr)
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        opt_a, opt_b = self.optimizers()
        loss = super().training_step(batch, batch_idx)
        opt_a.zero_grad()
        opt_b.zero_grad()
        self.manual_backward(loss)
        opt_a.step()
        opt_b.step()
        return loss

    def configure_optimizers(self) -> Any:
        first, second = self.net[0].parameters(), self.net[2].parameters()
        return [torch.optim.SGD(first, lr=self.hparams.lr), torch.optim.SGD(second, lr=0.01)]


class TraceLR(Callback):
    """The first param group's LR at every training batch, as the callbacks listed before it have set it."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def trainer(**kwargs: Any) -> pl.Trainer:
    defaults: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def fit(
    model: Callable[[], pl.LightningModule] = Classifier,
    callbacks: Iterable[Any] = (),
    *,
    seed: int,
    epochs: int = 1,
    data: Any = None,
    val: Any = None,
    datamodule: pl.LightningDataModule | None = None,
    ckpt_path: Any = None,
    **trainer_kwargs: Any,
) -> tuple[pl.LightningModule, pl.Trainer]:
    """Seeds, then builds ``model()`` and fits it on ``data`` (default ``loader()``) or ``datamodule``.

    The model is built after the seed, so the seed decides its initial weights.
    """
    seed_everything(seed)
    module = model()
    t = trainer(max_epochs=epochs, callbacks=list(callbacks), **trainer_kwargs)
    if datamodule is not None:
        t.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    else:
        t.fit(module, data if data is not None else loader(), val, ckpt_path=ckpt_path)
    return module, t


def sweep_by_fit(t: pl.Trainer, model: pl.LightningModule) -> None:
    """A sweep the way the callback runs it: ``t`` fits ``model`` (its ``LRSweep`` sweeps at fit start)."""
    t.fit(model, loader())


def sweep_by_tuner(t: pl.Trainer, model: pl.LightningModule) -> None:
    """A sweep the way the tuner runs it, on ``t``: 10 steps, no training."""
    LRSweepTuner(t).sweep(model, loader(), num_steps=10)


def case_id(arguments: dict[str, Any] | list[str]) -> str:
    """A parametrised case's test id: ``name=value`` per argument (a callable as such), or a command line's words."""
    if isinstance(arguments, list):
        return " ".join(arguments) or "no-arguments"
    return ",".join(f"{k}={'callable' if callable(v) else repr(v)}" for k, v in arguments.items())


def marks(ax: Any) -> tuple[list[float], list[str]]:
    """The x of every dashed marker line on a plot's ``ax``, and the legend's labels."""
    xs = [float(line.get_xdata()[0]) for line in ax.get_lines() if line.get_linestyle() == "--"]
    return xs, [t.get_text() for t in ax.get_legend().get_texts()]


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different}"
