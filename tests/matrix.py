"""Helpers for the compatibility matrix: a fit with sweeps against a plain fit at the applied LR."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import Logger
from models import Classifier, assert_same_state, fit, loader, state
from torch import nn

from lightning_lrsweep import LRSweep

START, APPLIED = 0.025, 0.05
"""A swept fit starts at START and its fit-start sweep applies APPLIED: a factor of exactly 2, so every
scaled quantity (schedulers' base LRs, OneCycleLR's bounds) is bit-for-bit what a plain fit at APPLIED has."""


class Val(Classifier):
    """The test classifier with a validation loss to monitor."""

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))


def sweep_callback(**kwargs: Any) -> LRSweep:
    """A sweep at fit start (applies APPLIED) and at every epoch start (keeps the LR), >= 20 points each."""
    defaults: dict[str, Any] = dict(
        min_lr=1e-4,
        max_lr=0.5,
        num_steps=20,
        retune_num_steps=20,
        every_n_epochs=1,
        early_stop_threshold=None,
        suggestion=lambda r: APPLIED,
        retune_suggestion=lambda r: None,
    )
    defaults.update(kwargs)
    return LRSweep(**defaults)


def run(
    model_fn: Callable[[float], pl.LightningModule],
    lr: float,
    callbacks: list[Any],
    data: Callable[[], Any] | None = None,
    datamodule: Callable[[], pl.LightningDataModule] | None = None,
    epochs: int = 2,
    **trainer_kwargs: Any,
) -> tuple[pl.LightningModule, pl.Trainer]:
    """A seeded fit of ``model_fn(lr)`` on ``data()`` (default 128 blobs) or ``datamodule()``, made fresh for it."""
    val = trainer_kwargs.pop("val_dataloaders", None)
    if callable(trainer_kwargs.get("plugins")):  # a fresh plugin (and grad scaler) for every fit
        trainer_kwargs["plugins"] = trainer_kwargs["plugins"]()
    if datamodule is not None:
        return fit(lambda: model_fn(lr), callbacks, seed=7, epochs=epochs, datamodule=datamodule(), **trainer_kwargs)
    train = (data or (lambda: loader(n=128)))()
    return fit(lambda: model_fn(lr), callbacks, seed=7, epochs=epochs, data=train, val=val, **trainer_kwargs)


def tensors_of(value: Any) -> Any:
    """A comparable copy of nested state: tensors cloned, the rest kept."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: tensors_of(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [tensors_of(v) for v in value]
    return value


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Exact equality of nested state, tensors bit-for-bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif callable(a):
        return
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


def assert_same_training(plain: tuple[pl.LightningModule, pl.Trainer], swept: tuple[pl.LightningModule, pl.Trainer]):
    """Model, optimizer, schedulers, grad scaler and loop counters of the two fits are identical."""
    (plain_model, plain_t), (swept_model, swept_t) = plain, swept
    assert_same_state(state(plain_model), state(swept_model))
    for a, b in zip(plain_t.optimizers, swept_t.optimizers, strict=True):
        assert_same(tensors_of(a.state_dict()), tensors_of(b.state_dict()), "optimizer")
    for a, b in zip(plain_t.lr_scheduler_configs, swept_t.lr_scheduler_configs, strict=True):
        assert_same(tensors_of(a.scheduler.state_dict()), tensors_of(b.scheduler.state_dict()), "scheduler")
    plain_scaler = getattr(plain_t.precision_plugin, "scaler", None)
    if plain_scaler is not None:
        assert plain_scaler.state_dict() == swept_t.precision_plugin.scaler.state_dict()
    assert swept_t.global_step == plain_t.global_step
    assert swept_t.current_epoch == plain_t.current_epoch


def check_cell(
    model_fn: Callable[[float], pl.LightningModule],
    epochs: int = 2,
    extra: Callable[[], list[Any]] = list,
    sweep_kwargs: dict[str, Any] | None = None,
    **fit_kwargs: Any,
) -> tuple[LRSweep, tuple[pl.LightningModule, pl.Trainer], tuple[pl.LightningModule, pl.Trainer]]:
    """Fit plainly at APPLIED and with sweeps from START; assert the sweeps ran, applied, and left no trace."""
    plain = run(model_fn, APPLIED, extra(), epochs=epochs, **fit_kwargs)
    sweep_kwargs = dict(sweep_kwargs or {})
    sweep_first = sweep_kwargs.pop("sweep_first", True)
    sweep = sweep_callback(**sweep_kwargs)
    callbacks = [sweep, *extra()] if sweep_first else [*extra(), sweep]
    swept = run(model_fn, START, callbacks, epochs=epochs, **fit_kwargs)
    ran = plain[1].current_epoch  # fewer than `epochs` when a callback stopped the fit
    assert [r.kind for r in sweep.history] == ["fit_start"] + ["retune"] * (ran - 1), [r.kind for r in sweep.history]
    assert all(len(r.result.lrs) >= 20 for r in sweep.history), [len(r.result.lrs) for r in sweep.history]
    assert sweep.history[0].applied_lr == APPLIED
    assert swept[0].hparams.lr == APPLIED
    assert_same_training(plain, swept)
    return sweep, plain, swept


class MemoryLogger(Logger):
    """Keeps every logged metric in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.logged: list[tuple[int | None, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.logged.append((step, dict(metrics)))

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        pass
