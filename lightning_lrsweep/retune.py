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
- up, when the edge lies so far above the current LR that the measured spacing between edge and
  LR (the fit-start sweep's, or a later clear phase read's) would put the LR more than ``up_margin`` times higher;
- otherwise it keeps the current LR.

Under a decaying LR — a scheduler, or the callback's own anneal — a re-tune judges the decay's
*scale* instead (:func:`scale_retune`): the decay already anneals, so no dip rule, and an up-move (of
the callback's own anneal only) holds the edge against the decay's peak, never against the decayed LR (a
low LR late in a decay is no reason to raise it; a peak the model has outgrown is). A phase change (a
milestone, layers unfrozen, a new batch size) is a new problem: a full-range sweep read with
the fit-start rule sets the scale anew, within the wider :data:`PHASE_MAX_CHANGE` (:func:`phase_retune`) —
when the sweep shows a clear descent, its read capped at the changed model's located stability edge ÷ the
measured edge / LR spacing (:func:`below_edge`). From trained weights it often shows none (the loss stays at its
noise floor up to the blow-up), and then the fit-start rule reads noise: a held LR comes down by
:data:`FLAT_PHASE_DECAY` instead — or to the measured edge / LR spacing below the changed model's stability
edge, where that is lower (a head swept alone may tolerate a far higher LR than the network it joins); a decay's
scale stays (the decay lowers the noise already), and so does the LR where only the batch changed.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from lightning_lrsweep.suggestion_rules import MIN_POINTS, Curve, Edge, finite_prefix, stability_edge, start_level

DEFAULT_DISTANCE = 10.0
"""Edge-to-LR spacing used when the fit-start sweep gave none."""

DIP_NOISE_FACTOR = 1.0
"""An annealing dip counts when it is larger than this many noise units of the raw loss..."""

DIP_RELATIVE = 0.02
"""...and larger than this fraction of the starting loss."""

UP_MARGIN = 2.0
"""How much higher the edge must put the LR (or, under the anneal, its peak) before a re-tune moves it up."""

PHASE_MAX_CHANGE = 10.0
"""The largest factor a phase-change re-tune may move the LR's scale by (periodic ones: ``max_change``)."""

ANNEAL_HOLD = 0.5
"""The fraction of the run the anneal holds the fit-start LR before its cosine decay to 0.

A cosine from the first step trains most of the run below the fit-start LR, which costs progress where the
pick is on the low side (the default rule picks low by design); holding first keeps that progress, and the
decay over the second half still lowers the gradient noise at the end. Chosen on the benchmark's tune tasks
against holds of 0, 1/4, 3/8 and 3/4: a shorter hold lost more to a cosine from the first step on the tune task
where the half trails it most (see docs/retuning.md).
"""

FLAT_PHASE_DECAY = 10.0
"""How far a milestone or an unfreeze lowers a held LR when its full-range sweep shows no clear descent.

A trained model at its noise floor gains from less noise, not from a higher LR, and new pre-trained layers
want a gentler LR than the head was swept at: the factor of fine-tuning practice and of ``MultiStepLR``'s
usual ``gamma=0.1``.
"""


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
    the starting loss (see :func:`~lightning_lrsweep.suggestion_rules.start_level`).
    """
    usable = finite_prefix(curve)
    lower = usable.lrs <= current_lr
    if len(usable.lrs) < MIN_POINTS or not lower.any():
        return None
    level = start_level(usable)
    dip = level.start - float(np.min(usable.smoothed[lower]))
    significant = dip > DIP_NOISE_FACTOR * level.noise and dip > DIP_RELATIVE * abs(level.start)
    return dip if significant else None


def _down_if_unstable(
    edge_lr: float, target: float, current_lr: float, max_change: float, down_margin: float, below: str
) -> RetuneDecision | None:
    """Move down, towards ``target``, when the loss already rises more than ``down_margin`` below the current LR.

    ``None`` otherwise: a sweep resolves the edge to a few steps, and training at an LR drives the edge to
    about that LR, so an edge *at* the current LR is no evidence. ``below`` names the current LR in the reason.
    """
    if edge_lr * down_margin < current_lr and target < current_lr:
        lr, clamped = bound_change(target, current_lr, max_change)
        return RetuneDecision(lr, target, f"the loss rises from {edge_lr:.3g}, below {below}", clamped)
    return None


def edge_retune(
    curve: Curve,
    current_lr: float,
    distance: float,
    max_change: float = 2.0,
    up_margin: float = UP_MARGIN,
    diverged: bool = True,
    down_margin: float = 1.5,
) -> RetuneDecision:
    """Decide the LR after a mid-training sweep with the stability-edge rule (see the module docstring).

    Args:
        curve: the re-tune sweep, around ``current_lr``.
        current_lr: the LR training runs at now.
        distance: the measured edge / LR spacing: the fit-start sweep's, or a later clear phase read's (see
            :func:`edge_distance`).
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
    down = _down_if_unstable(edge.lr, target, current_lr, max_change, down_margin, "the current LR")
    if down is not None:
        return down
    dip = annealing_dip(curve, current_lr)
    if dip is not None:
        lr = current_lr / max_change
        return RetuneDecision(lr, lr, f"below the current LR the loss drops {dip:.3g} at once: noise-limited")
    if target > current_lr * up_margin:
        lr, clamped = bound_change(target, current_lr, max_change)
        where = "beyond the sweep's end" if edge.censored else f"at {edge.lr:.3g}"
        return RetuneDecision(lr, target, f"the stability edge lies {where}, well above the current LR", clamped)
    return RetuneDecision(current_lr, target, "the current LR is consistent with the stability edge; kept")


def scale_retune(
    curve: Curve,
    current_lr: float,
    peak_lr: float,
    distance: float,
    max_change: float = 2.0,
    diverged: bool = True,
    down_margin: float = 1.5,
    up_margin: float = UP_MARGIN,
) -> RetuneDecision:
    """Decide how to scale a decaying LR (a scheduler's, or the anneal's) after a mid-training sweep.

    Down, by the edge rule, when the loss already rises clearly below the LR training runs at now (the
    decay has not kept training stable). Up when the edge, at the measured spacing, would put the *peak*
    more than ``up_margin`` times higher: the scale is too low for what the model now tolerates (a
    fit-start pick on the low side makes a decay train at a fraction of an already low LR). Never up
    because the decay has gone low: an edge far above a decayed LR but not above the peak is what a decay
    is for. Otherwise the scale is kept. No annealing-dip rule: the decay already anneals.

    The callback raises only its own anneal's scale (``up_margin=inf`` under a scheduler): a scheduler may
    move the momentum with the LR (``OneCycleLR`` from 0.95 at fit start to 0.85 at its peak), which moves
    the edge a sweep sees without the model having changed, and its peak is the user's.

    Args:
        curve: the re-tune sweep, around ``current_lr``.
        current_lr: the (scheduled) LR training runs at now.
        peak_lr: the schedule's scale: its base or peak LR, on the same scale as ``current_lr``.
        distance: the measured edge / LR spacing: the fit-start sweep's, or a later clear phase read's (see
            :func:`edge_distance`).
        max_change: the largest factor one re-tune may scale the schedule by.
        diverged: whether the sweep ended on a blow-up (else an edge at its last points is only a lower bound).
        down_margin: how far below the current LR the edge must lie before the scale goes down.
        up_margin: how much higher the edge must put the peak before the scale goes up.

    Returns:
        The decision, as the LR to train with now (every LR of the schedule scales by ``lr / current_lr``).

    Examples:
        >>> import numpy as np
        >>> lrs = np.geomspace(1e-4, 1e-2, 30)
        >>> flat = np.ones(30)  # nothing rises: the edge is beyond the window
        >>> scale_retune(Curve(lrs, flat, flat), current_lr=1e-3, peak_lr=1e-1, distance=3.0).lr  # late in a decay
        0.001
        >>> scale_retune(Curve(lrs, flat, flat), current_lr=1e-3, peak_lr=1e-3, distance=3.0).lr  # peak outgrown
        0.002
    """
    edge = stability_edge(curve, diverged)
    if edge is None:
        return RetuneDecision(current_lr, None, "too few finite points to locate the stability edge")
    target = edge.lr / distance
    down = _down_if_unstable(
        edge.lr, target, current_lr, max_change, down_margin, "the scheduled LR: the schedule's scale goes down"
    )
    if down is not None:
        return down
    asked = current_lr * target / peak_lr  # the LR now, were the peak at the measured spacing below the edge
    if target > peak_lr * up_margin:
        factor, clamped = bound_change(target / peak_lr, 1.0, max_change)
        where = "beyond the sweep's end" if edge.censored else f"at {edge.lr:.3g}"
        reason = f"the stability edge lies {where}, well above the schedule's peak: its scale goes up"
        return RetuneDecision(current_lr * factor, asked, reason, clamped)
    return RetuneDecision(current_lr, asked, "the schedule's scale is consistent; kept")


def below_edge(lr: float, edge: Edge | None, distance: float) -> float:
    """``lr``, lowered to ``distance`` below a located stability ``edge`` where it lies closer to it.

    The spacing is the one measured at the last full-range read; a censored edge is only a lower bound and
    lowers nothing.

    Examples:
        >>> below_edge(0.2, Edge(1.0, censored=False), distance=10.0)
        0.1
        >>> below_edge(0.05, Edge(1.0, censored=False), distance=10.0)
        0.05
    """
    if edge is None or edge.censored:
        return lr
    return min(lr, edge.lr / distance)


def phase_retune(
    suggested: float | None,
    current_lr: float,
    peak_lr: float | None,
    clear_descent: bool = True,
    batch_changed: bool = False,
    max_change: float = PHASE_MAX_CHANGE,
    edge: Edge | None = None,
    distance: float = DEFAULT_DISTANCE,
) -> RetuneDecision:
    """Set the scale anew after a phase change: the fit-start rule's ``suggested`` LR becomes the peak.

    The read is placed no closer to the changed model's stability ``edge`` than ``distance`` (the edge is the
    changed model's own measurement; after an unfreeze the rule's steepest-descent read sat 3-20x above the
    best fixed LR on the benchmark's fine-tuning tune tasks), and the move is bounded by ``max_change``. A
    sweep without a clear descent gives no read: a held LR comes down by :data:`FLAT_PHASE_DECAY`, and further
    where the edge lies less than ``distance`` times above that (the old LR is one of another problem), at most
    ``max_change`` times past the :data:`FLAT_PHASE_DECAY` step. A decay's scale is kept (the decay lowers the
    noise already), and so is the LR when only the batch changed (a larger batch has less noise).

    Args:
        suggested: the fit-start rule's pick on a full-range sweep of the changed model (``None``: keep).
        current_lr: the (scheduled) LR training runs at now.
        peak_lr: the schedule's base or peak LR; ``None`` when the LR is held (no decay).
        clear_descent: whether the sweep's loss fell clearly (its confidence reached ``min_confidence``).
        batch_changed: whether the phase change is a change of the batches accumulated per step.
        max_change: the largest factor a read of the sweep may move the scale by.
        edge: the full-range sweep's stability edge (``None``: not located; a censored edge, only a lower
            bound, is not read).
        distance: the edge / LR spacing of the last full-range read: the fit-start sweep's, or that of a
            later phase sweep with a clear descent (see :func:`edge_distance`).

    Examples:
        >>> phase_retune(0.3, current_lr=0.05, peak_lr=0.1).lr  # the peak goes from 0.1 to 0.3
        0.15
        >>> near = Edge(1.0, censored=False)  # the changed model's loss rises from 1.0
        >>> phase_retune(0.3, current_lr=0.05, peak_lr=None, edge=near, distance=10.0).lr  # 0.3 is too close
        0.1
        >>> phase_retune(0.3, current_lr=0.05, peak_lr=None, clear_descent=False).lr  # noise floor: down 10x
        0.005
        >>> unstable = Edge(0.05, censored=False)  # the loss rises from 0.05, below the LR of 0.2
        >>> phase_retune(None, current_lr=0.2, peak_lr=None, clear_descent=False, edge=unstable, distance=25.0).lr
        0.002
    """
    if not clear_descent:
        if batch_changed or peak_lr is not None:
            why = "the batch changed" if batch_changed else "the decay lowers the noise already"
            return RetuneDecision(
                current_lr, None, f"phase change: no clear descent in the full-range sweep; kept ({why})"
            )
        lr = current_lr / FLAT_PHASE_DECAY
        reason = "phase change: no clear descent in the full-range sweep (a noise floor)"
        target = below_edge(lr, edge, distance)
        if edge is not None and target < lr:  # (below the LR only where an edge was located)
            bounded, clamped = bound_change(target, lr, max_change)
            reason += f", and the loss rises from {edge.lr:.3g}: {distance:.3g}x below that"
            return RetuneDecision(bounded, target, reason, clamped)
        return RetuneDecision(lr, lr, f"{reason}; down {FLAT_PHASE_DECAY:g}x")
    if suggested is None:
        return RetuneDecision(current_lr, None, "phase change: the full-range sweep gave no suggestion; kept")
    scale = below_edge(suggested, edge, distance)
    ratio = scale / (current_lr if peak_lr is None else peak_lr)  # the new scale over the present one
    factor, clamped = bound_change(ratio, 1.0, max_change)
    reason = "phase change: the fit-start rule on a full-range sweep of the changed model sets the scale"
    if edge is not None and scale < suggested:  # (capped only where an edge was located)
        reason += f", {distance:.3g}x below the stability edge at {edge.lr:.3g} (it read {suggested:.3g})"
    return RetuneDecision(current_lr * factor, current_lr * ratio, reason, clamped)


def anneal_factor(step: int, total: float, hold: float = ANNEAL_HOLD) -> float:
    """The anneal's LR factor: 1 for the first ``hold`` of ``total`` steps, then a cosine to 0 at ``total``.

    Examples:
        >>> [round(anneal_factor(step, 100), 2) for step in (0, 50, 75, 100, 150)]
        [1.0, 1.0, 0.5, 0.0, 0.0]
    """
    start = hold * total
    if step <= start:  # also every step of an unlimited horizon
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step - start, total - start) / (total - start)))
