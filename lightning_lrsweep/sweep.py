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
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from dataclasses import replace
from typing import Any, NoReturn

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from lightning_lrsweep.apply import base_lrs, group_weights, is_usable_lr, reference_group, set_sweep_lr
from lightning_lrsweep.config import SweepConfig
from lightning_lrsweep.distributed import data_parallel_replicas
from lightning_lrsweep.result import RaceResult, SweepResult
from lightning_lrsweep.schedule import lr_schedule
from lightning_lrsweep.smoothing import BiasCorrectedEMA
from lightning_lrsweep.snapshot import RNGState, Snapshot

StepCallback = Callable[[int, float, float, float], None]
"""Called after every recorded sweep step with ``(step, lr, loss, smoothed_loss)``."""

WARMUP_POINTS = 5
"""Points recorded before the divergence stop compares against the best smoothed loss."""

MAX_EMPTY_STEPS = 10
"""Consecutive ``training_step`` outputs of ``None`` (skipped batches) tolerated before giving up."""

RACE_VAL_BATCHES = 4
"""Validation batches a race judges each candidate on (at least; more in validation-loss mode), when there is a
validation loader."""


class SweepStepError(RuntimeError):
    """Another rank raised during a sweep step; this rank stopped with it instead of hanging."""


def _describe(exc: BaseException, limit: int = 300) -> str:
    """``Type: message``, cut to ``limit`` characters: what the other ranks' error says about this one."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def val_data(trainer: pl.Trainer) -> Any | None:
    """The user's validation loader(s) (``val_dataloaders`` or the module's/datamodule's ``val_dataloader``), or None.

    Read from the source directly: Lightning builds its own only for modules that define ``validation_step``.
    """
    if trainer.val_dataloaders is not None:
        return trainer.val_dataloaders
    source = trainer.fit_loop.epoch_loop.val_loop._data_source
    return source.dataloader() if source.is_defined() else None


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
    if trainer.val_dataloaders is None and not trainer.fit_loop.epoch_loop.val_loop._data_source.is_defined():
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
    batch = module._on_before_batch_transfer(batch, dataloader_idx=0)
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
    """Runs one sweep step (one optimizer step, with gradient accumulation) and returns the rank-mean loss.

    Under DDP all ranks must enter the same collectives in the same order -- DDP's forward (it broadcasts
    the buffers), the sweep's exchange after each forward, DDP's backward (the gradient all-reduce) -- or
    the others wait in theirs until the process-group timeout. So a rank whose step raises keeps the
    exception and goes on through those collectives only (a forward on the batch it holds, the autograd
    pass its failed backward skipped) to the next exchange, where all ranks learn of it and raise together.
    The exchange comes before backward, so a failed forward never leaves another rank in the gradient
    all-reduce. In one process a failure raises at once.
    """

    def __init__(self, trainer: pl.Trainer, optimizer: Optimizer, batches: Iterator[Any]) -> None:
        self.strategy, self.optimizer, self.batches = trainer.strategy, optimizer, batches
        self.world_size, self.global_rank = trainer.world_size, trainer.global_rank
        self.replicas, self.counts_loss = data_parallel_replicas(trainer.strategy, trainer.world_size)
        self.accumulate = max(1, int(trainer.accumulate_grad_batches))
        self.batch: Any = None
        self.batch_idx = 0
        self.step_calls = 0
        self.step_index = 0  # the sweep step now running (set by the sweep loop), to say where a failure happened
        self.failure: Exception | None = None  # this rank's first exception, held until the next exchange
        self.failed_at = 0

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

    def _run(self, action: Callable[..., Any], *args: Any) -> Any:
        """Run one part of a step; under DDP keep its exception (the first) for the next exchange."""
        try:
            return action(*args)
        except Exception as exc:
            if self.world_size == 1:
                raise
            if self.failure is None:
                self.failure, self.failed_at = exc, self.step_index
            return None

    def _draw(self) -> None:
        """Take the next batch and prepare it as the training loop would (see :func:`prepare_batch`)."""
        self.batch = prepare_batch(self.strategy, next(self.batches))

    def _exchange(self, loss: torch.Tensor | None = None) -> tuple[float, float]:
        """The sweep's one all-reduce per micro-batch: which ranks failed, which have a loss, and the loss sum.

        The sum counts each data-parallel replica once (see :func:`data_parallel_replicas`).

        Raises:
            Exception: this rank's own failure, or :class:`SweepStepError` if another rank failed.
        """
        mine = loss if self.failure is None else None  # a failed rank's loss does not count
        value = float(mine.detach().float().mean()) if mine is not None and self.counts_loss else 0.0
        stats = torch.tensor([float(self.failure is not None), float(mine is not None), value], dtype=torch.float64)
        try:
            reduced = self.strategy.reduce(stats.to(self.strategy.root_device), reduce_op="sum")
        except Exception as exc:  # e.g. timed out: another rank waits in a collective this rank's failure skipped
            if self.failure is not None:
                raise self.failure from exc
            raise
        failures, with_loss, total = reduced.tolist()
        if failures:
            self._raise_together()
        return with_loss, total

    def _raise_together(self) -> NoReturn:
        """Tell every rank what each failed rank raised (one gather, on failure only); raise on all of them."""
        causes: list[str | None] = [None] * self.world_size
        mine = f"{_describe(self.failure)} (at sweep step {self.failed_at})" if self.failure is not None else None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_gather_object(causes, mine)
        if self.failure is not None:
            raise self.failure
        failed = {rank: cause for rank, cause in enumerate(causes) if cause is not None}
        who = ", ".join(f"rank {rank}" for rank in failed) or "another rank"
        raise SweepStepError(
            f"{who} raised during an LR sweep step, so rank {self.global_rank} stopped too ("
            + "; ".join(f"rank {rank}: {cause}" for rank, cause in failed.items())
            + f"); see the traceback of {who} for the cause. Every rank restores its training state."
        )

    def start(self) -> None:
        """Draw the first batch and share a failure to: a rank with no batch could not join DDP's first forward."""
        self._run(self._draw)
        self._exchange()

    def share_failure(self) -> None:
        """Exchange failures now, outside a forward.

        After the last step, whose backward or optimizer step no later forward follows; and after every step
        with a grad scaler, because whether the scaler skipped the step decides the next collective, and a
        rank that failed in its optimizer step never updated its scaler.
        """
        self._exchange()

    def _forward(self) -> tuple[torch.Tensor, float]:
        """Draw batches until ``training_step`` gives a loss on every rank; return it and its rank mean.

        A rank that cannot draw, or failed earlier, still runs the forward, on the batch it holds: DDP's
        forward on the other ranks waits for its buffer broadcast.
        """
        for _ in range(MAX_EMPTY_STEPS):
            if self.batch_idx > 0 and self.failure is None:  # start() drew the first batch
                self._run(self._draw)
            loss = self._run(lambda: _loss_of(self.strategy.training_step(self.batch, self.batch_idx)))
            self.batch_idx += 1
            with_loss, total = self._exchange(loss)
            if with_loss == self.world_size:
                assert loss is not None
                return loss, total / self.replicas
        raise ValueError(
            f"`training_step` returned no loss for {MAX_EMPTY_STEPS} batches in a row during the LR sweep; "
            "return the loss tensor (or a dict with a 'loss' key)."
        )

    def _backward(self, loss: torch.Tensor) -> None:
        """Backward through the strategy; if it fails before autograd starts, run autograd anyway.

        The other ranks' backward all-reduces the gradients bucket by bucket and waits for this rank's
        share. A failure inside autograd itself, with buckets under way, cannot be matched: as in plain DDP
        training, the other ranks then wait until the process-group timeout.
        """
        started: list[bool] = []
        if loss.requires_grad:
            loss.register_hook(lambda _: started.append(True))
        self._run(self.strategy.backward, loss, self.optimizer)
        if self.failure is not None and not started:
            with suppress(Exception):
                loss.backward()

    def automatic(self) -> float:
        """Forward and backward each micro-batch, then one optimizer step; a NaN skips the step on all ranks."""
        self.optimizer.zero_grad()
        total = 0.0
        block_sync = getattr(self.strategy, "block_backward_sync", nullcontext)
        for micro in range(self.accumulate):
            last = micro == self.accumulate - 1
            # DDP decides in the forward whether the backward syncs gradients: block both, as the training loop does
            with nullcontext() if last else block_sync():
                loss, mean = self._forward()
                total += mean / self.accumulate
                if not math.isfinite(mean):
                    return mean
                self._backward(loss / self.accumulate)
        final = loss.detach()
        if self.failure is None:
            self._run(self.strategy.optimizer_step, self.optimizer, lambda: final)
        return total

    def validation_loss(self, batches: list[Any]) -> float:
        """The rank mean of ``training_step``'s mean loss over ``batches``, in eval mode and without gradients.

        ``training_step`` rather than ``validation_step``: it returns the loss the sweep optimizes, where a
        ``validation_step`` often returns nothing. The module itself is called (not a DDP wrapper): no collective.

        Raises:
            ValueError: ``training_step`` returned no loss on a validation batch.
        """
        module = self.strategy.lightning_module
        assert module is not None
        modes = [(m, m.training) for m in module.modules()]
        module.eval()
        try:
            with torch.no_grad(), self.strategy.precision_plugin.val_step_context():
                losses = [
                    self._run(lambda b=b, i=i: _loss_of(module.training_step(b, i))) for i, b in enumerate(batches)
                ]
        finally:
            for m, training in modes:
                m.training = training
        found = [loss.detach().float().mean() for loss in losses if loss is not None]
        mean = torch.stack(found).mean() if found and len(found) == len(losses) else None
        with_loss, total = self._exchange(mean)
        if with_loss < self.world_size:
            raise ValueError(
                "`training_step` returned no loss on a validation batch; in validation-loss mode (`val_batches`) it "
                "must return the loss tensor (or a dict with a 'loss' key) for every batch."
            )
        return total / self.replicas

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
                    scores.append(_StepRunner(trainer, optimizer, iter(())).validation_loss(val))
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
) -> tuple[_Recorder, str]:
    """Step through the LR schedule (``lrs``, or the config's) until it ends or the loss diverges.

    With ``val`` (prepared validation batches) the loss recorded after each step is their mean loss.
    """
    weights = group_weights(optimizer)
    runner = _StepRunner(trainer, optimizer, batch_stream(data, trainer.num_training_batches))
    step = runner.automatic if trainer.lightning_module.automatic_optimization else runner.manual
    recorder = _Recorder(config.smoothing, config.early_stop_threshold, config.min_stop_lr)
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
