"""The stop rule: record each step's (LR, loss), smooth the loss online, and say when the sweep should stop."""

from __future__ import annotations

import math

from lightning_lrsweep.smoothing import BiasCorrectedEMA

WARMUP_POINTS = 5
"""Points recorded before the divergence stop compares against the best smoothed loss."""


class Recorder:
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
