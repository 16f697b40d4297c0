"""The README's main job: fit a small classifier on a built-in dataset with periodic re-tuning."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import override

from lightning_lrsweep.callback import LRSweep
from lightning_lrsweep.reporting import marked_lr
from lightning_lrsweep.result import writable_dir


def spirals(n: int = 2048, classes: int = 3, noise: float = 0.2, seed: int = 0) -> TensorDataset:
    """Interleaved 2-D spirals, one arm per class: small, made in code, and not linearly separable."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, classes, (n,), generator=g)
    radius = torch.rand(n, generator=g)
    angle = label * (2 * torch.pi / classes) + radius * 4.0 + torch.randn(n, generator=g) * noise
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    return TensorDataset(x, label)


class SpiralData(pl.LightningDataModule):
    """Train and validation spirals as a datamodule (for ``lrsweep sweep --data`` and the LightningCLI example).

    Args:
        n: training samples.
        batch_size: samples per batch.
        seed: seed of the training set (validation uses ``seed + 1``).
    """

    def __init__(self, n: int = 2048, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.n, self.batch_size, self.seed = n, batch_size, seed

    @override
    def train_dataloader(self) -> DataLoader:
        return DataLoader(spirals(self.n, seed=self.seed), batch_size=self.batch_size, shuffle=True)

    @override
    def val_dataloader(self) -> DataLoader:
        return DataLoader(spirals(512, seed=self.seed + 1), batch_size=256)


class SpiralNet(pl.LightningModule):
    """A small MLP whose LR lives in ``hparams.lr``, as LRSweep expects."""

    def __init__(self, lr: float = 1e-3, hidden: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 3)
        )

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @override
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_acc", (self(x).argmax(dim=1) == y).float().mean(), prog_bar=True)

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"], momentum=0.9)


def run_demo(out: str | Path = "lrsweep_out", epochs: int = 5, seed: int = 0, quiet: bool = False) -> LRSweep:
    """Fit SpiralNet with ``LRSweep(every_n_epochs=1)``; print each sweep and write its curve (CSV, PNG).

    Returns:
        The callback, whose ``history`` holds every sweep.

    Raises:
        OSError: ``out`` cannot be created or written to (raised before training, not after).
    """
    out = writable_dir(out)
    pl.seed_everything(seed, verbose=False)
    if quiet:
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    train = DataLoader(spirals(seed=seed), batch_size=64, shuffle=True)
    val = DataLoader(spirals(512, seed=seed + 1), batch_size=256)
    sweep = LRSweep(every_n_epochs=1)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        callbacks=[sweep],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = SpiralNet()
    trainer.fit(model, train, val)
    print(f"{'epoch':>5}  {'kind':<9}  {'steps':>5}  {'stopped by':<10}  {'suggested':>9}  {'applied':>9}")
    for record in sweep.history:
        stem = f"epoch={record.epoch}"
        lr, label = marked_lr(record)
        record.result.save(out, stem=stem, mark=lr, mark_label=label)
        suggested = f"{record.suggested_lr:.3g}" if record.suggested_lr is not None else "none"
        applied = f"{record.applied_lr:.3g}" if record.applied_lr is not None else "kept"
        print(
            f"{record.epoch:>5}  {record.kind:<9}  {len(record.result.lrs):>5}  {record.result.stop_reason:<10}  "
            f"{suggested:>9}  {applied:>9}"
        )
    from matplotlib.figure import Figure

    sweep.plot_history(out / "history.png", fig=Figure(figsize=(11, 4)))  # not pyplot's: nothing left open
    val_acc = float(trainer.callback_metrics["val_acc"])
    print(f"final val_acc {val_acc:.3f}; curves (CSV, PNG) and history.png in {out}/")
    return sweep
