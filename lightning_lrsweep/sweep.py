"""The engine: one LR range test (or a race between LRs) as a short private training loop on a live trainer.

It draws batches from a fresh iterator over the trainer's train loader (:mod:`~lightning_lrsweep.sweep_data`),
runs each step through the strategy (:mod:`~lightning_lrsweep.steps`), stops by the rule in
:mod:`~lightning_lrsweep.stop_rule`, and restores every piece of training state afterwards
(:mod:`~lightning_lrsweep.snapshot`), also when a step raises. The fit loop's counters, the other callbacks, the
loggers and the logged metrics never see a sweep step (:mod:`~lightning_lrsweep.isolation`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import lightning.pytorch as pl
import numpy as np
from torch.optim import Optimizer

from lightning_lrsweep.apply import base_lrs, group_weights, is_usable_lr, reference_group, set_sweep_lr
from lightning_lrsweep.config import SweepConfig
from lightning_lrsweep.isolation import isolated
from lightning_lrsweep.optimizer_choice import only_optimizer
from lightning_lrsweep.result import RaceResult, SweepResult
from lightning_lrsweep.schedule import lr_schedule
from lightning_lrsweep.snapshot import Snapshot
from lightning_lrsweep.steps import StepRunner
from lightning_lrsweep.stop_rule import Recorder
from lightning_lrsweep.sweep_data import (
    batch_stream,
    check_val_mode,
    private_iterators,
    train_data,
    val_data,
    validation_batches,
)

StepCallback = Callable[[int, float, float, float], None]
"""Called after every recorded sweep step with ``(step, lr, loss, smoothed_loss)``."""

RACE_VAL_BATCHES = 4
"""Validation batches a race judges each candidate on (at least; more in validation-loss mode), when there is a
validation loader."""


def run_sweep(trainer: pl.Trainer, config: SweepConfig, on_step: StepCallback | None = None) -> SweepResult:
    """Run one LR range test on the trainer's live model and optimizer; leave no trace.

    The LR swept is that of the reference param group (largest base LR); the other groups follow at
    their original ratio. Everything the steps mutate is restored before this returns or raises.

    Args:
        trainer: the live trainer, inside ``fit``.
        config: the sweep's settings.
        on_step: called after every recorded step with ``(step, lr, loss, smoothed_loss)`` (progress display).

    Raises:
        ValueError: no single optimizer, an LR of 0, no training data, or a manual ``training_step`` that never
            steps.
    """
    pl_module = trainer.lightning_module
    optimizer = only_optimizer(trainer, config.optimizer_idx)
    reference = base_lrs(optimizer)[reference_group(optimizer)]
    if not is_usable_lr(reference):  # the groups are swept at their ratios to it
        raise ValueError(
            f"The LR sweep needs an optimizer LR > 0 to keep the param groups' ratios, but the largest base LR "
            f"is {reference!r}. Start from any positive LR (e.g. 1e-3): a sweep's suggestion replaces it."
        )
    check_val_mode(trainer, config.val_batches)
    data = train_data(trainer)  # may build the loader, which draws from the RNG: snapshot after it
    val = validation_batches(trainer, config.val_batches) if config.val_batches else None
    snapshot = _snapshot(trainer, data, config)
    started = time.perf_counter()
    try:
        with isolated(trainer, pl_module), private_iterators(data):
            recorder, stop_reason = _sweep_loop(trainer, optimizer, data, config, on_step, val=val)
    finally:
        snapshot.restore()
        del snapshot
    return SweepResult(
        lrs=recorder.lrs,  # type: ignore[arg-type]
        losses=recorder.losses,  # type: ignore[arg-type]
        smoothed_losses=recorder.smoothed,  # type: ignore[arg-type]
        method=config.suggestion,
        stop_reason=stop_reason,
        min_lr=config.min_lr,
        max_lr=config.max_lr,
        num_steps=config.num_steps,
        mode=config.mode,
        epoch=trainer.current_epoch,
        global_step=trainer.global_step,
        seconds=time.perf_counter() - started,
        val_batches=config.val_batches,
    )


def _snapshot(trainer: pl.Trainer, data: Any, config: SweepConfig) -> Snapshot:
    """Everything a sweep's steps mutate: module, optimizers, schedulers, grad scaler, loader generators, RNGs."""
    schedulers = [scheduler_config.scheduler for scheduler_config in trainer.lr_scheduler_configs]
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return Snapshot(
        trainer.lightning_module, trainer.optimizers, schedulers, scaler, data, device=config.snapshot_device
    )


def run_race(
    trainer: pl.Trainer,
    config: SweepConfig,
    candidates: list[float],
    steps: int,
    on_step: StepCallback | None = None,
) -> RaceResult:
    """Train each candidate LR for ``steps`` optimizer steps from the same state; score each; leave no trace.

    Each stretch runs through the sweep's own loop at a fixed LR (no divergence stop; NaN/Inf still stops), from
    the state restored exactly, so each candidate sees the same batches. The score is the validation loss over
    the first batches of the validation loader after the stretch when there is one and the module optimizes
    automatically (:data:`RACE_VAL_BATCHES`, or ``config.val_batches`` if more), else the mean training loss over
    the stretch's second half. A stretch that
    ends on a NaN/Inf loss scores ``inf``.

    Args:
        trainer: the live trainer, inside ``fit``.
        config: the sweep's settings (optimizer, snapshot device, validation batches).
        candidates: the LRs to race, of the reference param group (the others keep their ratios).
        steps: optimizer steps per candidate.
        on_step: called after every step of every stretch, numbered across the whole race.
    """
    pl_module = trainer.lightning_module
    optimizer = only_optimizer(trainer, config.optimizer_idx)
    data = train_data(trainer)
    val = None
    if val_data(trainer) is not None and pl_module.automatic_optimization:
        val = validation_batches(trainer, max(config.val_batches, RACE_VAL_BATCHES))
    stretch = replace(config, early_stop_threshold=None, val_batches=0)
    snapshot = _snapshot(trainer, data, config)
    started = time.perf_counter()
    scores: list[float] = []
    try:
        with isolated(trainer, pl_module), private_iterators(data):
            for i, lr in enumerate(candidates):
                if i:
                    snapshot.restore()
                shown = _offset(on_step, i * steps)
                recorder, stop = _sweep_loop(trainer, optimizer, data, stretch, shown, lrs=np.full(steps, lr))
                if stop == "non_finite":
                    scores.append(math.inf)
                elif val is not None:
                    scores.append(StepRunner(trainer, optimizer, iter(())).validation_loss(val))
                else:
                    scores.append(float(np.mean(recorder.losses[len(recorder.losses) // 2 :])))
    finally:
        snapshot.restore()
        del snapshot
    return RaceResult(
        lrs=list(candidates),
        scores=scores,
        steps=steps,
        judged_on="validation loss" if val is not None else "training loss",
        seconds=time.perf_counter() - started,
    )


def _offset(on_step: StepCallback | None, first: int) -> StepCallback | None:
    """``on_step`` with step numbers shifted by ``first`` (a race shows its stretches as one progress bar)."""
    if on_step is None:
        return None
    return lambda k, lr, loss, smoothed: on_step(first + k, lr, loss, smoothed)


def _sweep_loop(
    trainer: pl.Trainer,
    optimizer: Optimizer,
    data: Any,
    config: SweepConfig,
    on_step: StepCallback | None = None,
    lrs: np.ndarray | None = None,
    val: list[Any] | None = None,
) -> tuple[Recorder, str]:
    """Step through the LR schedule (``lrs``, or the config's) until it ends or the loss diverges.

    With ``val`` (prepared validation batches) the loss recorded after each step is their mean loss.
    """
    weights = group_weights(optimizer)
    runner = StepRunner(trainer, optimizer, batch_stream(data, trainer.num_training_batches))
    step = runner.automatic if trainer.lightning_module.automatic_optimization else runner.manual
    recorder = Recorder(config.smoothing, config.early_stop_threshold, config.min_stop_lr)
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    lrs = lr_schedule(config.min_lr, config.max_lr, config.num_steps, config.mode) if lrs is None else lrs
    k, skipped, stop_reason = 0, 0, None
    try:
        with runner.counting_steps():
            runner.start()
            while k < len(lrs) and stop_reason is None:
                lr, runner.step_index = float(lrs[k]), k
                set_sweep_lr(optimizer, lr, weights)
                scale = scaler.get_scale() if scaler is not None else 0.0
                loss = step()
                if scaler is not None:
                    runner.share_failure()
                if scaler is not None and scaler.get_scale() < scale and skipped < config.num_steps:
                    skipped += 1  # the grad scaler skipped the optimizer step: same LR again
                    continue
                if val is not None and math.isfinite(loss):
                    loss = runner.validation_loss(val)
                stop_reason = recorder.add(lr, loss)
                if on_step is not None:
                    on_step(k, lr, loss, recorder.smoothed[-1])
                k += 1
            runner.share_failure()
    except BaseException as exc:
        at = runner.failed_at if exc is runner.failure else runner.step_index
        _note_where(exc, trainer, at, float(lrs[at]))
        raise
    return recorder, stop_reason or "num_steps"


def _note_where(exc: BaseException, trainer: pl.Trainer, step: int, lr: float) -> None:
    """Add to an exception from a sweep the step, LR and rank it was raised at (Python 3.11+ notes)."""
    if hasattr(exc, "add_note"):
        where = f" on rank {trainer.global_rank} of {trainer.world_size}" if trainer.world_size > 1 else ""
        exc.add_note(f"(raised in an LR sweep at epoch {trainer.current_epoch}, step {step}, LR {lr:.3g}{where})")
