"""Suggestion rules: pure numpy functions that turn a sweep curve into an LR.

Every rule works in log-LR space and returns a :class:`Suggestion`: the LR, or ``None`` with the reason
the curve gave no usable answer. Nothing here knows about Lightning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from lightning_lrsweep.smoothing import centered_mean, trailing_mean

MIN_POINTS = 5
"""Fewer finite points than this and no rule answers."""

FLAT_TOLERANCE = 1e-8
"""A curve whose spread is below this fraction of its largest magnitude is flat (float noise, not signal).

Relative to the curve's own magnitude, so that multiplying the loss by a constant never makes it flat.
"""


class Curve(NamedTuple):
    """One sweep's measurements: LR per step, raw loss, and the smoothed loss the rules read."""

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray


class Suggestion(NamedTuple):
    """An LR, or ``None`` and why not."""

    lr: float | None
    reason: str = ""


def finite_prefix(curve: Curve) -> Curve:
    """Keep the points before the first non-finite loss (a sweep stops there)."""
    lrs, losses, smoothed = (np.asarray(a, dtype=float) for a in curve)
    ok = np.isfinite(losses) & np.isfinite(smoothed) & np.isfinite(lrs) & (lrs > 0)
    end = len(ok) if ok.all() else int(np.argmin(ok))
    return Curve(lrs[:end], losses[:end], smoothed[:end])


def unusable_reason(curve: Curve) -> str | None:
    """Why a curve cannot give a suggestion, or ``None`` when it can."""
    n = len(curve.lrs)
    if n < MIN_POINTS:
        return f"only {n} finite points (need at least {MIN_POINTS})"
    spread = float(np.max(curve.smoothed) - np.min(curve.smoothed))
    if spread <= FLAT_TOLERANCE * float(np.max(np.abs(curve.smoothed))):
        return "the loss is flat over the whole sweep"
    if int(np.argmin(curve.smoothed)) == 0:
        return "the loss never falls below its first value"
    return None


VALLEY_DEPTH = 2 / 3
"""How far down the valley's loss drop the ``valley`` rule picks its point."""


def valley(curve: Curve) -> float:
    """fast.ai's ``valley``: the longest decreasing run of the smoothed loss, a point 2/3 down it.

    The run is the longest strictly decreasing subsequence. fast.ai takes the point half-way along
    its *index* span, which drifts to tiny LRs whenever the run starts on a long, nearly flat head;
    here the point is where the loss has made 2/3 of the run's total drop. It is never below
    :func:`minimum` (a tenth of the lowest-loss LR): on a slow, noisy descent the run can start far
    down, where the point 2/3 down it would be a decade or more too low.
    """
    losses = curve.smoothed
    n = len(losses)
    length = np.ones(n, dtype=int)
    start = np.arange(n)
    for i in range(1, n):
        earlier = np.nonzero(losses[:i] > losses[i])[0]
        if len(earlier):
            best = earlier[np.argmax(length[earlier])]
            length[i] = length[best] + 1
            start[i] = start[best]
    end = int(np.argmax(length))
    first = int(start[end])
    goal = losses[first] - VALLEY_DEPTH * (losses[first] - losses[end])
    reached = first + int(np.argmax(losses[first : end + 1] <= goal))
    return max(float(curve.lrs[reached]), minimum(curve))


def steepest(curve: Curve) -> float:
    """The LR where the smoothed loss falls fastest against log10(LR)."""
    slope = np.gradient(curve.smoothed, np.log10(curve.lrs))
    lowest = int(np.argmin(curve.smoothed))
    return float(curve.lrs[int(np.argmin(slope[: lowest + 1]))])


def minimum(curve: Curve) -> float:
    """The LR of the lowest smoothed loss, divided by 10 (a safe distance below the blow-up).

    Never below the sweep's first LR: a narrow sweep whose lowest loss lies within a decade of its start
    gets that start, the lowest LR it measured, rather than an LR it never tried.
    """
    return float(max(curve.lrs[int(np.argmin(curve.smoothed))] / 10.0, np.min(curve.lrs)))


def sma_slope(curve: Curve, window: int | None = None) -> float:
    """Minimum of the simple moving average of the raw loss's rate of change per step.

    Only points up to the lowest smoothed loss count: past it, the blow-up's noise has steep drops too.
    """
    lowest = int(np.argmin(curve.smoothed))
    return float(curve.lrs[int(np.argmin(rate_of_change(curve.losses, window)[: lowest + 1]))])


def default_window(num_points: int) -> int:
    """SMA window for the rate-of-change curve: a tenth of the curve, at least 3 points."""
    return max(3, num_points // 10)


def rate_of_change(losses: np.ndarray, window: int | None = None) -> np.ndarray:
    """Loss change per step, smoothed by a trailing simple moving average (0 at the first step)."""
    losses = np.asarray(losses, dtype=float)
    diff = np.diff(losses, prepend=losses[:1]) if len(losses) else losses
    return trailing_mean(diff, window or default_window(len(losses)))


METHODS: dict[str, Callable[[Curve], float]] = {
    "valley": valley,
    "steepest": steepest,
    "minimum": minimum,
    "sma_slope": sma_slope,
}


def rule_suggestion(curve: Curve, method: str) -> Suggestion:
    """Apply the named rule to the finite part of ``curve``; ``None`` with a reason when unusable."""
    if method not in METHODS:
        raise ValueError(f"`suggestion` must be one of {sorted(METHODS)} or a callable, got {method!r}.")
    usable = finite_prefix(curve)
    reason = unusable_reason(usable)
    if reason is not None:
        return Suggestion(None, reason)
    return Suggestion(METHODS[method](usable))


class Edge(NamedTuple):
    """Where the loss climbs above the level the sweep started from, for good."""

    lr: float
    censored: bool
    """True when the loss never climbed clearly within the sweep (the edge lies above its last LR)."""


EDGE_RELATIVE_TOLERANCE = 0.05
"""A climb smaller than this fraction of the starting loss is not yet a climb."""


class Level(NamedTuple):
    """The loss level a sweep started from, and the raw loss's noise around the smoothed curve."""

    start: float
    noise: float


def start_level(usable: Curve) -> Level:
    """The median of the first tenth of the raw losses (at least 3), and their noise.

    The noise is the median absolute deviation of the raw losses from the smoothed curve, scaled to a
    standard deviation (× 1.4826). ``usable`` must be finite (see :func:`finite_prefix`).
    """
    start = float(np.median(usable.losses[: max(3, len(usable.losses) // 10)]))
    noise = 1.4826 * float(np.median(np.abs(usable.losses - usable.smoothed)))
    return Level(start, noise)


def stability_edge(curve: Curve, diverged: bool) -> Edge | None:
    """The largest LR after which the smoothed loss stays clearly above the loss the sweep started from.

    The reference is the *starting* level, not the minimum: lowering the LR mid-training makes the loss
    dip at once (less gradient noise), so "where the loss leaves its minimum" would sit below the LR
    training runs at and walk it down at every re-tune. The tolerance is twice the raw loss's noise plus
    5% of the start (see :func:`start_level`). ``None`` when the curve is too short.

    Args:
        curve: the sweep's curve.
        diverged: whether the sweep stopped on a blow-up; if not and the loss ends below the band, the
            edge is censored at the last LR.
    """
    usable = finite_prefix(curve)
    if len(usable.lrs) < MIN_POINTS:
        return None
    level = start_level(usable)
    tolerance = 2 * level.noise + EDGE_RELATIVE_TOLERANCE * abs(level.start)
    below = np.nonzero(usable.smoothed <= level.start + tolerance)[0]
    if len(below) == 0:
        return Edge(float(usable.lrs[0]), censored=False)
    last_below = int(below[-1])
    return Edge(float(usable.lrs[last_below]), censored=not diverged and last_below == len(usable.lrs) - 1)


def zero_lag_window(num_points: int) -> int:
    """Width of the centred smoother the rules read: about a twelfth of the curve, odd, at least 3."""
    return max(3, num_points // 12) | 1


def zero_lag_curve(lrs: np.ndarray, losses: np.ndarray) -> Curve:
    """The finite part of a sweep, smoothed by a centred moving average.

    An EMA lags: on an exponential sweep it drags every feature of the curve towards higher LRs. A
    centred average has no lag, so the rules read the curve where it really is.
    """
    raw = finite_prefix(Curve(np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float), np.asarray(losses)))
    return Curve(raw.lrs, raw.losses, centered_mean(raw.losses, zero_lag_window(len(raw.losses))))


class Interval(NamedTuple):
    """The range of LRs a sweep's curve supports: from where the descent is clearly under way to near its bottom."""

    low: float
    high: float


INTERVAL_DEPTH = 1 / 3
"""The interval starts where the smoothed loss has made this fraction of its drop from the start to the lowest loss."""

BOTTOM_BAND = 0.1
"""The interval ends where the smoothed loss first comes within this fraction of the drop (or its noise) of the
lowest loss: past it, a higher LR buys no lower loss, only less margin to the blow-up."""


def smoothed_noise(usable: Curve) -> float:
    """The noise left on the centred curve: the raw loss's noise over the square root of the smoother's width."""
    return start_level(usable).noise / float(np.sqrt(zero_lag_window(len(usable.lrs))))


def supported_interval(curve: Curve, suggestion: float) -> Interval | None:
    """The LRs the curve supports: from a third of the way down the descent to where it reaches its bottom.

    Low end: the first LR at which the smoothed loss has made :data:`INTERVAL_DEPTH` of its drop from the
    starting level to its lowest point. High end: the first LR at which it comes within :data:`BOTTOM_BAND` of the
    drop, or twice the smoothed curve's noise, of the lowest loss. The interval is widened to contain
    ``suggestion``. ``None`` when the curve is unusable (see :func:`unusable_reason`) or never falls below its start.

    Args:
        curve: a sweep's curve, read through its finite prefix.
        suggestion: the suggested LR, which the interval always contains.
    """
    usable = finite_prefix(curve)
    if unusable_reason(usable) is not None:
        return None
    lowest = int(np.argmin(usable.smoothed))
    start = start_level(usable).start
    drop = start - float(usable.smoothed[lowest])
    if drop <= 0:
        return None
    head = usable.smoothed[: lowest + 1]
    low = int(np.argmax(head <= start - INTERVAL_DEPTH * drop))
    band = max(BOTTOM_BAND * drop, 2 * smoothed_noise(usable))
    high = int(np.argmax(head <= head[lowest] + band))
    low = min(low, high)
    return Interval(min(float(usable.lrs[low]), suggestion), max(float(usable.lrs[high]), suggestion))


CLEAR_DESCENT = (1.0, 4.0)
"""Drop ÷ raw-loss noise: at or below the first, the descent is indistinguishable from noise (confidence 0); at or
above the second it is unmistakable (this factor 1)."""

RULE_AGREEMENT = (1.0, 2.5)
"""Decades between the highest and lowest of the ``valley`` and ``steepest`` LRs and the ends of the
:func:`supported_interval`: within the first the curve points to one place (this factor 1); at the second or more
its rules or its descent point to places far apart, e.g. two valleys (0). ``sma_slope`` does not count: it reads
the raw loss's change per step, and one noisy first step sends it to the sweep's first LR."""


def _ramp(value: float, zero: float, one: float) -> float:
    """0 at ``zero``, 1 at ``one``, linear in between, clipped to [0, 1] (``zero > one`` ramps downwards)."""
    return float(np.clip((value - zero) / (one - zero), 0.0, 1.0))


def confidence(curve: Curve) -> float:
    """How sure a curve is of its suggestion, in [0, 1]: the product of two factors.

    *Clear descent*: the loss's drop from its starting level to its lowest smoothed value, in units of the raw loss's
    noise around the smoothed curve (see :data:`CLEAR_DESCENT`); a flat curve with noise shows a "drop" of about one
    unit. *Agreement*: how close the ``valley`` and ``steepest`` LRs and the supported interval's ends
    are (see :data:`RULE_AGREEMENT`); two valleys or a noisy curve pull them apart. 0 when the curve is unusable.
    """
    usable = finite_prefix(curve)
    if unusable_reason(usable) is not None:
        return 0.0
    level = start_level(usable)
    drop = level.start - float(np.min(usable.smoothed))
    snr = drop / level.noise if level.noise > 0 else (np.inf if drop > 0 else 0.0)
    clear = _ramp(snr, *CLEAR_DESCENT)
    picks = [valley(usable), steepest(usable)]
    interval = supported_interval(usable, picks[0])
    picks += list(interval) if interval is not None else []
    span = float(np.log10(max(picks) / min(picks)))
    return clear * _ramp(span, RULE_AGREEMENT[1], RULE_AGREEMENT[0])
