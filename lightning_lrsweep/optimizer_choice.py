"""Which optimizer a sweep tunes: the trainer's only one, or the one ``optimizer_idx`` names."""

from __future__ import annotations

import lightning.pytorch as pl
from torch.optim import Optimizer


def only_optimizer(trainer: pl.Trainer, index: int | None = None) -> Optimizer:
    """The optimizer to sweep: the trainer's only one, or ``trainer.optimizers[index]``.

    Raises:
        ValueError: no optimizer; several and no ``index``; or ``index`` out of range.
    """
    optimizers = trainer.optimizers
    if not optimizers:
        raise ValueError("LRSweep needs an optimizer, but `configure_optimizers` returned none.")
    if index is None and len(optimizers) > 1:
        raise ValueError(
            f"LRSweep sweeps one optimizer, but `configure_optimizers` returned {len(optimizers)}. Pass "
            f"`optimizer_idx` (0 to {len(optimizers) - 1}) to choose which; the others keep their LRs, or return a "
            "single optimizer (param groups with different LRs are fine)."
        )
    if index is not None and index >= len(optimizers):
        raise ValueError(
            f"`optimizer_idx={index}` is out of range: `configure_optimizers` returned {len(optimizers)} "
            f"optimizer(s), so it must be 0 to {len(optimizers) - 1}."
        )
    return optimizers[index or 0]
