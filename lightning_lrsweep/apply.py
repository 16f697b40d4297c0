"""Write an LR into a module and its optimizer: the LR attribute, param groups and schedulers.

Everything scales by one factor, so per-group LR ratios and the shape of a running schedule are kept;
optimizer state (moments, momentum) is left alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities.parsing import lightning_getattr, lightning_hasattr, lightning_setattr
from torch.optim import Optimizer

from lightning_lrsweep.compat import SCHEDULER_LR_FIELDS, inner_schedulers

LR_ATTR_NAMES = ("lr", "learning_rate")
_GROUP_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")


def find_lr_attr(pl_module: pl.LightningModule, attr_name: str | None = None) -> str | None:
    """The name of the module's LR attribute (on the module, its ``hparams`` or its datamodule), or ``None``.

    Raises:
        AttributeError: ``attr_name`` was given but the module has no such attribute.
    """
    if attr_name:
        if not lightning_hasattr(pl_module, attr_name):
            raise AttributeError(
                f"`attr_name={attr_name!r}` was given, but {type(pl_module).__name__} has no attribute, hparam or "
                f"datamodule field of that name. Pass the name your configure_optimizers reads the LR from."
            )
        return attr_name
    return next((name for name in LR_ATTR_NAMES if lightning_hasattr(pl_module, name)), None)


def get_lr_attr(pl_module: pl.LightningModule, attr_name: str) -> float:
    """The LR attribute's value as a float."""
    return float(lightning_getattr(pl_module, attr_name))  # type: ignore[arg-type]


def set_lr_attr(pl_module: pl.LightningModule, attr_name: str, lr: float) -> None:
    """Set the LR attribute everywhere it lives (module, hparams, datamodule)."""
    lightning_setattr(pl_module, attr_name, lr)


def is_usable_lr(lr: float) -> bool:
    """Finite and > 0: an LR that a sweep can sweep around and that other LRs can be scaled relative to."""
    return math.isfinite(lr) and lr > 0


def base_lrs(optimizer: Optimizer) -> list[float]:
    """Each group's LR as the user set it: ``initial_lr`` once a scheduler has stamped it, else ``lr``.

    A warm-up scheduler may have lowered ``lr`` (even to 0) before the first step; ``initial_lr`` still
    holds the ratio between groups.
    """
    groups = optimizer.param_groups
    if all("initial_lr" in g for g in groups) and all(g["initial_lr"] > 0 for g in groups):
        return [float(g["initial_lr"]) for g in groups]
    return [float(g["lr"]) for g in groups]


def reference_group(optimizer: Optimizer) -> int:
    """Index of the group whose LR a sweep reports: the one with the largest base LR (the head)."""
    bases = base_lrs(optimizer)
    return max(range(len(bases)), key=bases.__getitem__)


def set_sweep_lr(optimizer: Optimizer, lr: float, weights: list[float]) -> None:
    """Set every group to ``lr × weight`` (weights are base LRs relative to the reference group)."""
    for group, weight in zip(optimizer.param_groups, weights, strict=True):
        group["lr"] = lr * weight


def group_weights(optimizer: Optimizer) -> list[float]:
    """Each group's base LR divided by the reference group's."""
    bases = base_lrs(optimizer)
    ref = bases[reference_group(optimizer)]
    return [b / ref for b in bases]


def _scaled(value: float, old: float, new: float) -> float:
    """``value × new / old``, exactly ``new`` where ``value`` was exactly ``old`` (no rounding drift)."""
    return new if value == old else value * (new / old)


def scale_optimizer(optimizer: Optimizer, old: float, new: float) -> None:
    """Scale every LR-valued field of every param group by ``new / old``."""
    for group in optimizer.param_groups:
        for key in _GROUP_LR_KEYS:
            if isinstance(group.get(key), int | float):
                group[key] = _scaled(group[key], old, new)


def _inner_schedulers(scheduler: Any) -> list[Any]:
    inner = inner_schedulers(scheduler)
    return [scheduler, *(s for child in inner for s in _inner_schedulers(child))] if inner else [scheduler]


def scale_scheduler(scheduler: Any, old: float, new: float) -> None:
    """Scale a scheduler's LR bookkeeping (base LRs, cyclic bounds), also inside Sequential/Chained ones.

    OneCycleLR keeps its bounds in the param groups (``max_lr``, ``initial_lr``, ``min_lr``), which
    :func:`scale_optimizer` handles.
    """
    for sched in _inner_schedulers(scheduler):
        for name in SCHEDULER_LR_FIELDS:
            values = getattr(sched, name, None)
            if isinstance(values, list) and all(isinstance(v, int | float) for v in values):
                setattr(sched, name, [_scaled(v, old, new) for v in values])


def scale_callbacks(callbacks: Sequence[Any], old: float, new: float) -> None:
    """Scale the LRs that callbacks keep a record of, so that a change outlives their next update.

    ``BackboneFinetuning`` resets the backbone group from ``previous_backbone_lr`` every epoch; without
    this, a re-tuned backbone LR would last one epoch.
    """
    for callback in callbacks:
        if isinstance(getattr(callback, "previous_backbone_lr", None), int | float):
            callback.previous_backbone_lr = _scaled(callback.previous_backbone_lr, old, new)


def apply_lr(
    pl_module: pl.LightningModule,
    optimizer: Optimizer,
    schedulers: list[Any],
    old: float,
    new: float,
    attr_name: str | None,
    callbacks: Sequence[Any] = (),
) -> None:
    """Move the LR from ``old`` to ``new`` by scaling everything that holds it by ``new / old``.

    That is the LR attribute, every param group of ``optimizer``, every scheduler attached to it, and the
    LR records of ``callbacks`` (see :func:`scale_callbacks`).

    Examples:
        >>> import torch
        >>> opt = torch.optim.SGD([{"params": [torch.zeros(1)], "lr": 0.1}, {"params": [torch.zeros(1)], "lr": 0.01}])
        >>> apply_lr(pl.LightningModule(), opt, [], old=0.1, new=0.3, attr_name=None)
        >>> [round(g["lr"], 6) for g in opt.param_groups]
        [0.3, 0.03]
    """
    if attr_name is not None:
        set_lr_attr(pl_module, attr_name, _scaled(get_lr_attr(pl_module, attr_name), old, new))
    scale_optimizer(optimizer, old, new)
    for scheduler in schedulers:
        if getattr(scheduler, "optimizer", None) is optimizer:
            scale_scheduler(scheduler, old, new)
    scale_callbacks(callbacks, old, new)
