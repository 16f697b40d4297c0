"""Smoothers for noisy loss curves (pure numpy)."""

from __future__ import annotations

import numpy as np


def ema(losses: np.ndarray, beta: float) -> np.ndarray:
    """Exponential moving average with bias correction, as the sweep computes it online.

    The first smoothed value equals the first loss (``1 - beta**1`` corrects step 1, not step 0).
    ``beta=0`` returns the losses unchanged.
    """
    out = np.empty(len(losses), dtype=float)
    avg = 0.0
    for i, loss in enumerate(np.asarray(losses, dtype=float)):
        avg = beta * avg + (1.0 - beta) * loss
        out[i] = avg / (1.0 - beta ** (i + 1)) if beta > 0 else loss
    return out


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
