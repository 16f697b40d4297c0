"""The engine: one LR range test as a short private training loop on a live trainer.

It draws batches from a fresh iterator over the trainer's train loader, steps through the strategy
(so DDP wrappers, precision plugins and gradient clipping apply unchanged), averages the loss over
ranks, and restores every piece of training state afterwards, also when a step raises. The fit loop's
counters, the other callbacks, the loggers and the logged metrics never see a sweep step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from lightning_lrsweep.apply import base_lrs, group_weights, reference_group, set_sweep_lr
from lightning_lrsweep.config import SweepConfig
from lightning_lrsweep.result import SweepResult
from lightning_lrsweep.schedule import lr_schedule
from lightning_lrsweep.smoothing import BiasCorrectedEMA
from lightning_lrsweep.snapshot import Snapshot

StepCallback = Callable[[int, float, float, float], None]
"""Called after every recorded sweep step with ``(step, lr, loss, smoothed_loss)``."""

WARMUP_POINTS = 5
"""Points recorded before the divergence stop compares against the best smoothed loss."""

MAX_EMPTY_STEPS = 10
"""Consecutive ``training_step`` outputs of ``None`` (skipped batches) tolerated before giving up."""


class SweepStepError(RuntimeError):
    """Another rank raised during a sweep step; this rank stopped with it instead of hanging."""


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
    live = [(dl, dl._iterator) for dl in loaders]
    for dl in loaders:
        dl._iterator = None
    try:
        yield
    finally:
        for dl, iterator in live:
            own = dl._iterator
            if own is not None and own is not iterator:
                own._shutdown_workers()  # type: ignore[attr-defined]  # persistent workers: a multiprocessing iterator
            dl._iterator = iterator


def _ignore(*_: Any, **__: Any) -> None:
    return None


@contextmanager
def _shadow(obj: Any, name: str, value: Any) -> Iterator[None]:
    """Set an instance attribute for the duration of the block, then put back what was there."""
    missing = object()
    previous = obj.__dict__.get(name, missing)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if previous is missing:
            delattr(obj, name)
        else:
            setattr(obj, name, previous)


@contextmanager
def isolated(trainer: pl.Trainer, pl_module: pl.LightningModule) -> Iterator[None]:
    """Keep sweep steps out of sight of other callbacks, loggers, logged metrics and loop counters.

    Other callbacks' ``on_before_backward``/``on_after_backward``/``on_before_optimizer_step`` hooks
    would fire from the strategy's backward and step; ``self.log`` would feed epoch aggregates (and
    raises at fit start); manual optimization would count sweep steps as training steps. Gradient
    clipping and the module's own hooks still run: they shape the curve.
    """
    with ExitStack() as stack:
        stack.enter_context(_shadow(trainer, "callbacks", []))
        stack.enter_context(_shadow(pl_module, "log", _ignore))
        stack.enter_context(_shadow(pl_module, "log_dict", _ignore))
        for lightning_optimizer in getattr(trainer.strategy, "_lightning_optimizers", []):
            stack.enter_context(_shadow(lightning_optimizer, "_on_before_step", _ignore))
            stack.enter_context(_shadow(lightning_optimizer, "_on_after_step", _ignore))
        stack.enter_context(torch.enable_grad())
        yield


def _loss_of(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        return output.get("loss")
    return None


class _Recorder:
    """Records (LR, loss) pairs, smooths online with a bias-corrected EMA, and decides when to stop."""

    def __init__(self, smoothing: float, threshold: float | None, min_stop_lr: float = 0.0) -> None:
        self.threshold, self.min_stop_lr = threshold, min_stop_lr
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self._ema = BiasCorrectedEMA(smoothing)
        self._best = math.inf

    def add(self, lr: float, loss: float) -> str | None:
        """Record one step; return the stop reason, if the sweep should stop here."""
        smoothed = self._ema.update(loss)
        self.lrs.append(lr)
        self.losses.append(loss)
        self.smoothed.append(smoothed)
        if not math.isfinite(loss):
            return "non_finite"
        if len(self.losses) < WARMUP_POINTS:
            return None  # a best taken from one or two raw losses is noise
        self._best = min(self._best, smoothed)
        limit = self._best + (self.threshold - 1) * abs(self._best) if self.threshold is not None else math.inf
        if lr > self.min_stop_lr and smoothed > limit:
            return "diverged"
        return None


class _StepRunner:
    """Runs one sweep step (one optimizer step, with gradient accumulation) and returns the rank-mean loss."""

    def __init__(self, trainer: pl.Trainer, optimizer: Optimizer, batches: Iterator[Any]) -> None:
        self.strategy, self.optimizer, self.batches = trainer.strategy, optimizer, batches
        self.world_size, self.global_rank = trainer.world_size, trainer.global_rank
        self.accumulate = max(1, int(trainer.accumulate_grad_batches))
        self.batch_idx = 0
        self.step_calls = 0

    @contextmanager
    def counting_steps(self) -> Iterator[None]:
        """Count ``optimizer.step()`` calls, to catch a manual ``training_step`` that never steps."""
        handle = self.optimizer.register_step_post_hook(self._count_step)
        try:
            yield
        finally:
            handle.remove()

    def _count_step(self, *_: Any) -> None:
        self.step_calls += 1

    def _prepare(self, batch: Any) -> Any:
        """Do to a batch what the training loop does before ``training_step``.

        That is the precision plugin's conversion (``bf16-true`` casts floats), ``on_before_batch_transfer``,
        the move to the device and ``on_after_batch_transfer``.
        """
        module = self.strategy.lightning_module
        assert module is not None
        batch = self.strategy.precision_plugin.convert_input(batch)
        batch = module._on_before_batch_transfer(batch, dataloader_idx=0)
        return self.strategy.batch_to_device(batch, dataloader_idx=0)

    def _forward(self) -> tuple[torch.Tensor, float]:
        """Draw batches until ``training_step`` gives a loss on every rank; return it and its rank mean.

        One all-reduce of four numbers per micro-batch carries the loss, whether each rank has one, and
        which ranks raised, so a failure or a NaN on one rank stops all of them together.
        """
        world, rank = self.world_size, self.global_rank
        for _ in range(MAX_EMPTY_STEPS):
            batch = self._prepare(next(self.batches))
            error: Exception | None = None
            loss = None
            try:
                loss = _loss_of(self.strategy.training_step(batch, self.batch_idx))
            except Exception as exc:  # re-raised below, once the other ranks know
                error = exc
            self.batch_idx += 1
            value = float(loss.detach().float().mean()) if loss is not None else 0.0
            raised = float(error is not None)
            stats = torch.tensor([raised, raised * rank, float(loss is not None), value], dtype=torch.float64)
            failed, rank_sum, with_loss, total = self.strategy.reduce(
                stats.to(self.strategy.root_device), reduce_op="sum"
            ).tolist()
            if error is not None:
                raise error
            if failed:
                who = f"rank {int(rank_sum)}" if failed == 1 else f"{int(failed)} ranks"
                raise SweepStepError(
                    f"{who} raised during an LR sweep step, so rank {rank} stopped too; see the traceback of {who} "
                    "for the cause. Every rank restores its training state."
                )
            if with_loss == world:
                assert loss is not None
                return loss, total / world
        raise ValueError(
            f"`training_step` returned no loss for {MAX_EMPTY_STEPS} batches in a row during the LR sweep; "
            "return the loss tensor (or a dict with a 'loss' key)."
        )

    def automatic(self) -> float:
        """Forward and backward each micro-batch, then one optimizer step; a NaN skips the step on all ranks."""
        self.optimizer.zero_grad()
        total = 0.0
        for micro in range(self.accumulate):
            loss, mean = self._forward()
            total += mean / self.accumulate
            if not math.isfinite(mean):
                return mean
            last = micro == self.accumulate - 1
            block_sync = getattr(self.strategy, "block_backward_sync", nullcontext)
            with nullcontext() if last else block_sync():
                self.strategy.backward(loss / self.accumulate, self.optimizer)
        final = loss.detach()
        self.strategy.optimizer_step(self.optimizer, closure=lambda: final)
        return total

    def manual(self) -> float:
        """``training_step`` does its own backward and step; record the loss it returns."""
        before = self.step_calls
        _, mean = self._forward()
        if self.step_calls == before:
            raise ValueError(
                "With manual optimization, LRSweep needs `training_step` to step the optimizer from "
                "`self.optimizers()` and return the loss; this one did not call `.step()`."
            )
        return mean


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
    if not (math.isfinite(reference) and reference > 0):  # the groups are swept at their ratios to it
        raise ValueError(
            f"The LR sweep needs an optimizer LR > 0 to keep the param groups' ratios, but the largest base LR "
            f"is {reference!r}. Start from any positive LR (e.g. 1e-3): a sweep's suggestion replaces it."
        )
    data = train_data(trainer)  # may build the loader, which draws from the RNG: snapshot after it
    schedulers = [scheduler_config.scheduler for scheduler_config in trainer.lr_scheduler_configs]
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    snapshot = Snapshot(pl_module, trainer.optimizers, schedulers, scaler, data, device=config.snapshot_device)
    started = time.perf_counter()
    try:
        with isolated(trainer, pl_module), private_iterators(data):
            recorder, stop_reason = _sweep_loop(trainer, optimizer, data, config, on_step)
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
    )


def _sweep_loop(
    trainer: pl.Trainer, optimizer: Optimizer, data: Any, config: SweepConfig, on_step: StepCallback | None = None
) -> tuple[_Recorder, str]:
    """Step through the LR schedule until it ends or the loss diverges."""
    weights = group_weights(optimizer)
    runner = _StepRunner(trainer, optimizer, batch_stream(data, trainer.num_training_batches))
    step = runner.automatic if trainer.lightning_module.automatic_optimization else runner.manual
    recorder = _Recorder(config.smoothing, config.early_stop_threshold, config.min_stop_lr)
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    lrs = lr_schedule(config.min_lr, config.max_lr, config.num_steps, config.mode)
    k, skipped = 0, 0
    with runner.counting_steps():
        while k < len(lrs):
            lr = float(lrs[k])
            set_sweep_lr(optimizer, lr, weights)
            scale = scaler.get_scale() if scaler is not None else None
            try:
                loss = step()
            except BaseException as exc:
                if hasattr(exc, "add_note"):
                    where = f" on rank {trainer.global_rank} of {trainer.world_size}" if trainer.world_size > 1 else ""
                    exc.add_note(
                        f"(raised in an LR sweep at epoch {trainer.current_epoch}, step {k}, LR {lr:.3g}{where})"
                    )
                raise
            if scaler is not None and scale is not None and scaler.get_scale() < scale and skipped < config.num_steps:
                skipped += 1  # the grad scaler skipped the optimizer step: same LR again
                continue
            stop_reason = recorder.add(lr, loss)
            if on_step is not None:
                on_step(k, lr, loss, recorder.smoothed[-1])
            if stop_reason is not None:
                return recorder, stop_reason
            k += 1
    return recorder, "num_steps"
