"""Smoothers for noisy loss curves (pure numpy)."""

from __future__ import annotations

import numpy as np


class BiasCorrectedEMA:
    """Exponential moving average with bias correction, one value at a time (the sweep smooths online).

    The first smoothed value equals the first input (``1 - beta**1`` corrects step 1, not step 0);
    ``beta=0`` passes values through unchanged.
    """

    def __init__(self, beta: float) -> None:
        self.beta = beta
        self._avg = 0.0
        self._count = 0

    def update(self, value: float) -> float:
        """Add ``value``; return the smoothed value so far."""
        self._count += 1
        if self.beta == 0:
            return value
        self._avg = self.beta * self._avg + (1.0 - self.beta) * value
        return self._avg / (1.0 - self.beta**self._count)


def ema(losses: np.ndarray, beta: float) -> np.ndarray:
    """The bias-corrected EMA of a whole curve, exactly as the sweep computes it online."""
    smoother = BiasCorrectedEMA(beta)
    return np.array([smoother.update(float(loss)) for loss in np.asarray(losses, dtype=float)])


def centered_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average that shrinks its window at the ends; no lag, unlike an EMA."""
    values = np.asarray(values, dtype=float)
    half = max(window, 1) // 2
    csum = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(len(values))
    lo = np.clip(idx - half, 0, len(values))
    hi = np.clip(idx + half + 1, 0, len(values))
    return (csum[hi] - csum[lo]) / (hi - lo)


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Simple moving average over the last ``window`` values (fewer at the start)."""
    values = np.asarray(values, dtype=float)
    csum = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(1, len(values) + 1)
    lo = np.clip(idx - max(window, 1), 0, None)
    return (csum[idx] - csum[lo]) / (idx - lo)
