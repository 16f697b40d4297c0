"""Run a sweep or a race with its progress shown in the style of the trainer's progress bar.

The one path the callback and the tuner both run a sweep through: the display (a Rich task, or a tqdm bar) is
set up outside the engine, which only calls back after each step.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING

import lightning.pytorch as pl
from lightning.pytorch.callbacks import GradientAccumulationScheduler, RichProgressBar

from lightning_lrsweep.config import SweepConfig
from lightning_lrsweep.sweep import StepCallback, run_race, run_sweep

if TYPE_CHECKING:
    from lightning_lrsweep.result import RaceResult, SweepResult


def run_sweep_shown(trainer: pl.Trainer, config: SweepConfig, title: str, fit_start: bool = False) -> SweepResult:
    """:func:`~lightning_lrsweep.sweep.run_sweep` with its progress shown under ``title``.

    Args:
        trainer: the live trainer, inside ``fit``.
        config: the sweep's settings.
        title: what the progress display calls the sweep.
        fit_start: the sweep runs before the first epoch starts: it accumulates as that epoch will
            (see :func:`first_epoch_accumulation`).
    """
    with (
        first_epoch_accumulation(trainer) if fit_start else nullcontext(),
        sweep_progress(trainer, config.num_steps, title) as on_step,
    ):
        return run_sweep(trainer, config, on_step)


def run_race_shown(trainer: pl.Trainer, config: SweepConfig, candidates: list[float], steps: int) -> RaceResult:
    """:func:`~lightning_lrsweep.sweep.run_race` with its progress shown (one bar for all the candidates)."""
    total = len(candidates) * steps
    with sweep_progress(trainer, total, f"LR race ({len(candidates)} LRs)") as on_step:
        return run_race(trainer, config, candidates, steps, on_step)


@contextmanager
def first_epoch_accumulation(trainer: pl.Trainer) -> Iterator[None]:
    """Accumulate as the coming epoch will, while a fit-start sweep runs.

    A ``GradientAccumulationScheduler`` sets ``trainer.accumulate_grad_batches`` only at each epoch start,
    after ``on_fit_start``; without this, the fit-start sweep would measure another batch size.
    """
    callbacks = trainer.callbacks  # type: ignore[attr-defined]
    scheduler = next((c for c in callbacks if isinstance(c, GradientAccumulationScheduler)), None)
    previous = trainer.accumulate_grad_batches
    if scheduler is not None:
        trainer.accumulate_grad_batches = scheduler.get_accumulate_grad_batches(trainer.current_epoch)
    try:
        yield
    finally:
        trainer.accumulate_grad_batches = previous


def progress_text(lr: float, smoothed: float) -> str:
    """The Rich task's description after a step: the LR and the smoothed loss."""
    return f"LR sweep  lr={lr:.2e}  loss={smoothed:.4g}"


@contextmanager
def sweep_progress(trainer: pl.Trainer, total: int, title: str = "LR sweep") -> Iterator[StepCallback | None]:
    """Show a sweep's progress in the style of the trainer's progress bar; yield the engine's ``on_step``.

    A ``RichProgressBar`` gets a Rich task (inside its live display when that is running); any other
    enabled progress bar (``TQDMProgressBar``, custom ones) gets a tqdm bar that disappears when the sweep
    ends. Yields ``None`` (nothing shown) without a progress bar, when it is disabled, and on ranks other
    than 0.
    """
    bar = trainer.progress_bar_callback
    if bar is None or not getattr(bar, "is_enabled", True) or not trainer.is_global_zero:
        yield None
    elif isinstance(bar, RichProgressBar):
        with _rich_progress(bar, total, title) as on_step:
            yield on_step
    else:
        with _tqdm_progress(total, title) as on_step:
            yield on_step


@contextmanager
def _tqdm_progress(total: int, title: str) -> Iterator[StepCallback]:
    from tqdm.auto import tqdm

    progress = tqdm(total=total, desc=title, leave=False, dynamic_ncols=True, file=sys.stdout, unit="step")

    def on_step(k: int, lr: float, loss: float, smoothed: float) -> None:
        progress.set_postfix_str(f"lr={lr:.2e}, loss={smoothed:.4g}", refresh=False)
        progress.update(1)

    try:
        yield on_step
    finally:
        progress.close()


@contextmanager
def _rich_progress(bar: RichProgressBar, total: int, title: str) -> Iterator[StepCallback]:
    """A task in the bar's live display when it runs (mid-fit), else a transient Rich progress of our own.

    The bar's display refreshes only when asked (Lightning turns its auto-refresh off), so each step refreshes it.
    Rendering it needs the bar in ``trainer.callbacks``, which a sweep step leaves there
    (see :func:`~lightning_lrsweep.isolation.visible_callbacks`).
    """
    from rich.progress import BarColumn, Progress, TextColumn

    live = bar.progress if bar.progress is not None and bar.progress.live.is_started else None
    progress = live or Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), transient=True
    )
    if live is None:
        progress.start()
    task = progress.add_task(title, total=total)

    def on_step(k: int, lr: float, loss: float, smoothed: float) -> None:
        progress.update(task, advance=1, description=progress_text(lr, smoothed), refresh=live is not None)

    try:
        yield on_step
    finally:
        progress.remove_task(task)
        if live is None:
            progress.stop()
