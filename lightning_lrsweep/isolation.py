"""Keep a sweep's steps out of sight of the rest of the trainer: callbacks, loggers, logged metrics, loop counters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.model_helpers import is_overridden

from lightning_lrsweep.compat import optimizer_step_hooks

STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
"""The callback hooks that the strategy's backward and optimizer step call."""


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


def visible_callbacks(trainer: pl.Trainer) -> list[Callback]:
    """The callbacks a sweep step leaves in ``trainer.callbacks``: the progress bar, if it defines no step hook.

    So the bar can still find itself (Rich's metrics column looks it up in ``trainer.callbacks``) while it shows
    the sweep, and no callback's hook runs in a sweep step.
    """
    bar = trainer.progress_bar_callback
    if bar is None or any(is_overridden(hook, bar, Callback) for hook in STEP_HOOKS):
        return []
    return [bar]


@contextmanager
def isolated(trainer: pl.Trainer, pl_module: pl.LightningModule) -> Iterator[None]:
    """Keep sweep steps out of sight of other callbacks, loggers, logged metrics and loop counters.

    Other callbacks' ``on_before_backward``/``on_after_backward``/``on_before_optimizer_step`` hooks
    would fire from the strategy's backward and step; ``self.log`` would feed epoch aggregates (and
    raises at fit start); manual optimization would count sweep steps as training steps. Gradient
    clipping and the module's own hooks still run: they shape the curve. The progress bar stays in
    ``trainer.callbacks`` (see :func:`visible_callbacks`).
    """
    with ExitStack() as stack:
        stack.enter_context(_shadow(trainer, "callbacks", visible_callbacks(trainer)))
        stack.enter_context(_shadow(pl_module, "log", _ignore))
        stack.enter_context(_shadow(pl_module, "log_dict", _ignore))
        for hook_owner, hook in optimizer_step_hooks(trainer.strategy):
            stack.enter_context(_shadow(hook_owner, hook, _ignore))
        stack.enter_context(torch.enable_grad())
        yield
