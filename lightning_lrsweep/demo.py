"""The README's main job: fit a small classifier on a built-in dataset with periodic re-tuning."""

from __future__ import annotations

import logging
import sys
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import override

from lightning_lrsweep.callback import LRSweep
from lightning_lrsweep.history import SweepRecord
from lightning_lrsweep.reporting import current_lr, marked_lr
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


class ShowSweeps(Callback):
    """Print each sweep of an ``LRSweep`` as it ends, save its curve, and print each epoch's validation accuracy.

    Place it after the ``LRSweep`` in the callbacks list, so its hooks run after the sweep's.

    Args:
        sweep: the callback whose history to show.
        out: the folder for each sweep's CSV and PNG.
    """

    def __init__(self, sweep: LRSweep, out: Path) -> None:
        self.sweep, self.out = sweep, out
        self.shown = 0

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._show_new(trainer)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._show_new(trainer)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "val_acc" in trainer.callback_metrics:
            _say(
                trainer,
                f"epoch {trainer.current_epoch}  trained: val_acc {float(trainer.callback_metrics['val_acc']):.3f}",
            )

    def _show_new(self, trainer: pl.Trainer) -> None:
        for record in self.sweep.history[self.shown :]:
            lr, label = marked_lr(record)
            record.result.save(self.out, stem=f"epoch={record.epoch}", mark=lr, mark_label=label)
            _say(trainer, sweep_line(record))
        self.shown = len(self.sweep.history)


def sweep_line(record: SweepRecord) -> str:
    """One sweep as the demo prints it: where, how long, why it stopped, what it suggested and what training uses.

    Examples:
        ``epoch 1  retune    sweep:  40 steps, stopped by num_steps; suggested 0.337, LR 0.115 -> 0.23 (…)``
    """
    suggested = f"{record.suggested_lr:.3g}" if record.suggested_lr is not None else "none"
    return (
        f"epoch {record.epoch}  {record.kind:<9} sweep: {len(record.result.lrs):>3} steps, stopped by "
        f"{record.result.stop_reason}; suggested {suggested}, LR {record.previous_lr:.3g} -> {current_lr(record):.3g} "
        f"({record.reason})"
    )


def _say(trainer: pl.Trainer, text: str) -> None:
    """Print above tqdm's bars when they draw the progress (a plain ``print`` would break their line).

    ``tqdm.write``, not ``TQDMProgressBar.print``: that prints nothing while no bar of its own is open, as at
    fit start, where the fit-start sweep ends.
    """
    if isinstance(trainer.progress_bar_callback, TQDMProgressBar):
        from tqdm import tqdm

        tqdm.write(text, file=sys.stdout)
    else:
        print(text, flush=True)


def _show_warning(trainer: pl.Trainer, message: Warning | str, *args: Any, **kwargs: Any) -> None:
    """A warning (a re-tune clamped to ``max_change``, say) as the demo's other lines are printed."""
    _say(trainer, f"warning: {message}")


def run_demo(
    out: str | Path = "lrsweep_out", epochs: int = 5, seed: int = 0, quiet: bool = False, n: int = 2048
) -> LRSweep:
    """Fit SpiralNet with ``LRSweep(every_n_epochs=1)``, printing each sweep as it ends and saving its curve.

    Training shows Lightning's progress bar, and each sweep its own; each sweep's CSV and PNG are written as it
    ends, ``history.png`` at the end.

    Args:
        out: the folder for the curves.
        epochs: epochs to train.
        seed: the random seed.
        quiet: hide Lightning's info lines and a deprecation warning it raises on newer torch, while it trains.
        n: training samples.

    Returns:
        The callback, whose ``history`` holds every sweep.

    Raises:
        OSError: ``out`` cannot be created or written to (raised before training, not after).
    """
    out = writable_dir(out)
    pl.seed_everything(seed, verbose=False)
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    if quiet:
        lightning_log.setLevel(logging.WARNING)
    train = DataLoader(spirals(n, seed=seed), batch_size=64, shuffle=True)
    val = DataLoader(spirals(512, seed=seed + 1), batch_size=256)
    sweep = LRSweep(every_n_epochs=1)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        callbacks=[sweep, ShowSweeps(sweep, out)],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    print(
        f"Fitting a small MLP on {n} 2-D spirals for {epochs} epochs with LRSweep(every_n_epochs=1): an LR range "
        f"test at fit start, a re-tune at each later epoch start. Each sweep is printed as it ends; its curve "
        f"(CSV, PNG) goes to {out}/.",
        flush=True,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the MLP is too small to gain from intra-op threads; on a busy CPU they cost 6x
    try:
        with warnings.catch_warnings():
            if quiet:
                warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning's, on torch >= 2.10: not ours
                warnings.showwarning = partial(_show_warning, trainer)  # one line above the bars, no source path
            trainer.fit(SpiralNet(), train, val)
    finally:
        torch.set_num_threads(threads)
        lightning_log.setLevel(level)
    from matplotlib.figure import Figure

    sweep.plot_history(out / "history.png", fig=Figure(figsize=(11, 4)))  # not pyplot's: nothing left open
    val_acc = float(trainer.callback_metrics["val_acc"])
    print(f"final val_acc {val_acc:.3f}; curves (CSV, PNG) and history.png in {out}/")
    return sweep
