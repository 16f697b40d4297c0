"""One sweep step through the trainer's strategy, and how ranks under DDP share a failure instead of hanging.

A step draws a batch, runs ``training_step``, backward and the optimizer step through the strategy (so DDP
wrappers, precision plugins and gradient clipping apply unchanged) and returns the loss averaged over ranks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from typing import Any, NoReturn

import lightning.pytorch as pl
import torch
from torch.optim import Optimizer

from lightning_lrsweep.distributed import data_parallel_replicas
from lightning_lrsweep.sweep_data import prepare_batch

MAX_EMPTY_STEPS = 10
"""Consecutive ``training_step`` outputs of ``None`` (skipped batches) tolerated before giving up."""


class SweepStepError(RuntimeError):
    """Another rank raised during a sweep step; this rank stopped with it instead of hanging."""


def error_summary(exc: BaseException, limit: int = 300) -> str:
    """``Type: message``, cut to ``limit`` characters: what the other ranks' error says about this one."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def loss_of(output: Any) -> torch.Tensor | None:
    """The loss in what ``training_step`` returned: the tensor, a dict's ``"loss"``, or ``None``."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        return output.get("loss")
    return None


class StepRunner:
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
        mine = f"{error_summary(self.failure)} (at sweep step {self.failed_at})" if self.failure is not None else None
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
            loss = self._run(lambda: loss_of(self.strategy.training_step(self.batch, self.batch_idx)))
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
                    self._run(lambda b=b, i=i: loss_of(module.training_step(b, i))) for i, b in enumerate(batches)
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
