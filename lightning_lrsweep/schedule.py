"""The LR of each sweep step: exponential or linear between two bounds (pure functions)."""

from __future__ import annotations

import numpy as np

MODES = ("exponential", "linear")


def lr_schedule(min_lr: float, max_lr: float, num_steps: int, mode: str = "exponential") -> np.ndarray:
    """Return the ``num_steps`` LRs of a sweep, from ``min_lr`` to ``max_lr`` inclusive.

    Exponential mode multiplies the LR by one constant each step (even spacing in log-LR, the range
    test's usual form); linear mode adds one constant.

    Examples:
        >>> lr_schedule(1e-3, 1e-1, 3).round(6).tolist()
        [0.001, 0.01, 0.1]
    """
    if mode == "exponential":
        return np.geomspace(min_lr, max_lr, num_steps)
    if mode == "linear":
        return np.linspace(min_lr, max_lr, num_steps)
    raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}.")


def retune_bounds(current_lr: float, window: float, max_lr: float | None = None) -> tuple[float, float]:
    """Bounds of a re-tune sweep: ``current_lr / window`` to ``current_lr * window``, capped at ``max_lr``."""
    low, high = current_lr / window, current_lr * window
    if max_lr is not None:
        high = min(high, max_lr)
    return low, max(high, low * 1.0001)
