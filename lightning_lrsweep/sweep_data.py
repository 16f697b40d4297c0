"""A sweep's data: batches from the user's train loaders, validation batches, and the steps the loop does to a batch.

A sweep reads the trainer's own loaders, prepares each batch as the training loop would, and leaves the epoch's
live iterators (persistent workers) as it found them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader

from lightning_lrsweep.compat import (
    before_batch_transfer,
    declared_val_loaders,
    declares_val_loaders,
    live_iterator,
    set_live_iterator,
    shutdown_workers,
)
from lightning_lrsweep.snapshot import RNGState


def train_data(trainer: pl.Trainer) -> Any:
    """The user's train loader(s), building them first when called before the fit loop did (at fit start)."""
    if trainer.train_dataloader is None:
        trainer.fit_loop.setup_data()
    if trainer.train_dataloader is None:
        raise ValueError("LRSweep needs training data, but the trainer has no train dataloader.")
    return trainer.train_dataloader


def batch_stream(iterables: Any, limit: float = math.inf) -> Iterator[Any]:
    """Batches from fresh passes over the train loader(s), starting again whenever a pass ends.

    A pass ends after ``limit`` batches (the trainer's ``limit_train_batches``), as a training epoch does.
    """
    while True:
        empty = True
        for i, (batch, _, _) in enumerate(CombinedLoader(iterables, "max_size_cycle")):
            if i >= limit:
                break
            empty = False
            yield batch
        if empty:
            raise ValueError("LRSweep needs training data, but the train dataloader yielded no batch.")


def val_data(trainer: pl.Trainer) -> Any | None:
    """The user's validation loader(s) (``val_dataloaders`` or the module's/datamodule's ``val_dataloader``), or None.

    Read from the source directly: Lightning builds its own only for modules that define ``validation_step``.
    """
    if trainer.val_dataloaders is not None:
        return trainer.val_dataloaders
    return declared_val_loaders(trainer)


def check_val_mode(trainer: pl.Trainer, val_batches: int) -> None:
    """Refuse validation-loss mode where it cannot run, before any step: manual optimization, no validation data.

    Raises:
        ValueError: ``val_batches`` > 0 with manual optimization or without validation data.
    """
    if not val_batches:
        return
    module = trainer.lightning_module
    if module is not None and not module.automatic_optimization:
        raise ValueError(
            f"`val_batches={val_batches}` runs `training_step` on validation batches, but with manual "
            "optimization `training_step` steps the optimizer. Use `val_batches=0` with manual optimization."
        )
    if trainer.val_dataloaders is None and not declares_val_loaders(trainer):
        raise ValueError(no_val_data(val_batches))


def no_val_data(val_batches: int) -> str:
    """The error for validation-loss mode without validation data."""
    return (
        f"`val_batches={val_batches}` judges the LR sweep on validation batches, but the trainer has no validation "
        "data: pass `val_dataloaders` to `fit`, define `val_dataloader`, or set `val_batches=0`."
    )


def validation_batches(trainer: pl.Trainer, count: int) -> list[Any]:
    """The first ``count`` validation batches, ready for ``training_step``; the RNG is left as it was.

    Raises:
        ValueError: there is no validation loader, or it yields no batch.
    """
    data = val_data(trainer)
    if data is None:
        raise ValueError(no_val_data(count))
    rng = RNGState.capture()  # starting an iterator draws a seed from the global RNG
    try:
        with private_iterators(data):
            raw = [batch for batch, _ in zip(CombinedLoader(data, "sequential"), range(count), strict=False)]
    finally:
        rng.restore()
    if not raw:
        raise ValueError("`val_batches` judges the LR sweep on validation batches, but the loader yielded none.")
    return [prepare_batch(trainer.strategy, batch) for batch, _, _ in raw]


def prepare_batch(strategy: Any, batch: Any) -> Any:
    """Do to a batch what the training loop does before ``training_step``.

    That is the precision plugin's conversion (``bf16-true`` casts floats), ``on_before_batch_transfer``,
    the move to the device and ``on_after_batch_transfer``.
    """
    module = strategy.lightning_module
    assert module is not None
    batch = strategy.precision_plugin.convert_input(batch)
    batch = before_batch_transfer(module, batch)
    return strategy.batch_to_device(batch, dataloader_idx=0)


@contextmanager
def private_iterators(iterables: Any) -> Iterator[None]:
    """Give each loader with persistent workers a private iterator for the sweep, then put the live one back.

    Such a loader keeps one iterator and resets it on every ``iter()``: a sweep pass would rewind the
    epoch's live iterator, and the epoch would then miss or repeat batches. The sweep's own workers
    are shut down when it ends.
    """
    loaders = [
        dl
        for dl in CombinedLoader(iterables).flattened
        if isinstance(dl, DataLoader) and dl.persistent_workers and dl.num_workers > 0
    ]
    live = [(dl, live_iterator(dl)) for dl in loaders]
    for dl in loaders:
        set_live_iterator(dl, None)
    try:
        yield
    finally:
        for dl, iterator in live:
            own = live_iterator(dl)
            if own is not None and own is not iterator:
                shutdown_workers(own)  # persistent workers: a multiprocessing iterator
            set_live_iterator(dl, iterator)
