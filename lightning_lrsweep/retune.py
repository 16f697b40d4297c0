"""The re-tune rule: how a mid-training sweep moves the current LR (pure functions).

A range test from trained weights measures where training becomes unstable *now* (the stability
edge), not which LR gives the best final model; training at an LR drives the edge towards that LR.
So the rule treats the curve as a measurement of the edge, moves only on clear evidence, and bounds
every move:

- down, when the loss already rises clearly below the current LR (the edge lies more than
  ``down_margin`` below it: a sweep resolves the edge to a few steps, and training at an LR drives
  the edge to about that LR, so an edge *at* the current LR is no evidence);
- down, when at LRs below the current one the loss falls clearly below the level the sweep started
  from (the *annealing dip*: by more than its noise and 2%): training is then limited by gradient
  noise, which a lower LR reduces — the signal a step decay acts on;
- up, when the edge lies so far above the current LR that the fit-start spacing between edge and
  LR, kept from the fit-start sweep, would put the LR more than ``up_margin`` times higher;
- otherwise it keeps the current LR.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lightning_lrsweep.suggest import MIN_POINTS, Curve, finite_prefix, stability_edge, start_level

DEFAULT_DISTANCE = 10.0
"""Edge-to-LR spacing used when the fit-start sweep gave none."""

DIP_NOISE_FACTOR = 1.0
"""An annealing dip counts when it is larger than this many noise units of the raw loss..."""

DIP_RELATIVE = 0.02
"""...and larger than this fraction of the starting loss."""


class RetuneDecision(NamedTuple):
    """The LR to train with after a re-tune, the rule's unbounded target, and why."""

    lr: float
    target: float | None
    reason: str
    clamped: bool = False


def bound_change(target: float, current_lr: float, max_change: float) -> tuple[float, bool]:
    """Clamp ``target`` into ``[current / max_change, current * max_change]``; report whether it was clamped."""
    low, high = current_lr / max_change, current_lr * max_change
    bounded = min(max(target, low), high)
    return bounded, bounded != target


def edge_distance(edge_lr: float | None, suggested_lr: float | None) -> float:
    """Spacing between the stability edge and the fit-start LR, kept within [1.5, 30]."""
    if edge_lr is None or suggested_lr is None or suggested_lr <= 0:
        return DEFAULT_DISTANCE
    return min(max(edge_lr / suggested_lr, 1.5), 30.0)


def annealing_dip(curve: Curve, current_lr: float) -> float | None:
    """How far the smoothed loss falls below its starting level at LRs up to ``current_lr``.

    ``None`` unless the drop is larger than both ``DIP_NOISE_FACTOR`` noise units and ``DIP_RELATIVE`` of
    the starting loss (see :func:`~lightning_lrsweep.suggest.start_level`).
    """
    usable = finite_prefix(curve)
    lower = usable.lrs <= current_lr
    if len(usable.lrs) < MIN_POINTS or not lower.any():
        return None
    level = start_level(usable)
    dip = level.start - float(np.min(usable.smoothed[lower]))
    significant = dip > DIP_NOISE_FACTOR * level.noise and dip > DIP_RELATIVE * abs(level.start)
    return dip if significant else None


def edge_retune(
    curve: Curve,
    current_lr: float,
    distance: float,
    max_change: float = 2.0,
    up_margin: float = 2.0,
    diverged: bool = True,
    down_margin: float = 1.5,
) -> RetuneDecision:
    """Decide the LR after a mid-training sweep with the stability-edge rule (see the module docstring).

    Args:
        curve: the re-tune sweep, around ``current_lr``.
        current_lr: the LR training runs at now.
        distance: edge / LR spacing measured at fit start (see :func:`edge_distance`).
        max_change: the largest factor one re-tune may move the LR by.
        up_margin: how much higher the target must be before the LR goes up.
        diverged: whether the sweep ended on a blow-up (else an edge at its last points is only a lower bound).
        down_margin: how far below the current LR the edge must lie before the LR goes down.

    Examples:
        >>> import numpy as np
        >>> lrs = np.geomspace(1e-3, 1e-1, 30)
        >>> rising = 1 + (lrs > 5e-3) * (lrs / 5e-3) ** 2   # loss rises from 5e-3 up
        >>> edge_retune(Curve(lrs, rising, rising), current_lr=1e-2, distance=3.0).lr < 1e-2
        True
    """
    edge = stability_edge(curve, diverged)
    if edge is None:
        return RetuneDecision(current_lr, None, "too few finite points to locate the stability edge")
    target = edge.lr / distance
    if edge.lr * down_margin < current_lr and target < current_lr:
        lr, clamped = bound_change(target, current_lr, max_change)
        return RetuneDecision(lr, target, f"the loss rises from {edge.lr:.3g}, below the current LR", clamped)
    dip = annealing_dip(curve, current_lr)
    if dip is not None:
        lr = current_lr / max_change
        return RetuneDecision(lr, lr, f"below the current LR the loss drops {dip:.3g} at once: noise-limited")
    if target > current_lr * up_margin:
        lr, clamped = bound_change(target, current_lr, max_change)
        where = "beyond the sweep's end" if edge.censored else f"at {edge.lr:.3g}"
        return RetuneDecision(lr, target, f"the stability edge lies {where}, well above the current LR", clamped)
    return RetuneDecision(current_lr, target, "the current LR is consistent with the stability edge; kept")
