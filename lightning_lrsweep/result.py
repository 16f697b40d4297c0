"""SweepResult: one sweep's curve, its suggestion, plots, a DataFrame and files."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from lightning_lrsweep.suggest import Curve, Suggestion, default_window, rate_of_change, suggest, zero_lag_curve

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

log = logging.getLogger(__name__)

SuggestionRule = Union[str, Callable[["SweepResult"], Union[float, None]]]  # noqa: UP007 (runtime alias)


@dataclass
class SweepResult:
    """What one LR range test measured.

    Attributes:
        lrs: the LR of the reference param group at each recorded step (other groups keep their ratio).
        losses: the training loss at each step (mean over ranks and accumulated micro-batches).
        smoothed_losses: the bias-corrected EMA of ``losses`` that the divergence stop used. The suggestion
            rules read a centred (lag-free) average instead: see :attr:`curve`.
        method: the suggestion rule :meth:`suggestion` uses by default.
        stop_reason: ``"diverged"`` (smoothed loss above threshold × best), ``"non_finite"`` (NaN/Inf loss)
            or ``"num_steps"`` (ran to the end without diverging).
        min_lr, max_lr, num_steps, mode: the sweep's settings.
        epoch, global_step: where in training the sweep ran.
        seconds: wall time the sweep took.

    Examples:
        >>> import numpy as np
        >>> lrs = np.geomspace(1e-4, 1, 40)
        >>> losses = 1 / (1 + 50 * lrs) + (lrs > 0.3) * 5
        >>> result = SweepResult(lrs, losses, losses, method="minimum")
        >>> 0.001 < result.suggestion() < 0.1
        True
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed_losses: np.ndarray
    method: SuggestionRule = "valley"
    stop_reason: str = "num_steps"
    min_lr: float = float("nan")
    max_lr: float = float("nan")
    num_steps: int = 0
    mode: str = "exponential"
    epoch: int = 0
    global_step: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.lrs = np.asarray(self.lrs, dtype=float)
        self.losses = np.asarray(self.losses, dtype=float)
        self.smoothed_losses = np.asarray(self.smoothed_losses, dtype=float)

    @property
    def curve(self) -> Curve:
        """The finite part of the curve, smoothed without lag, as the suggestion rules read it."""
        return zero_lag_curve(self.lrs, self.losses)

    @property
    def diverged(self) -> bool:
        """Whether the sweep ended on a blow-up (rather than at ``num_steps``)."""
        return self.stop_reason != "num_steps"

    @property
    def note(self) -> str:
        """How the sweep ended, in words; says so when no divergence was seen (the suggestion is then less sure)."""
        if self.stop_reason == "num_steps":
            return (
                f"no divergence seen up to LR {self.lrs[-1]:.3g} after {len(self.lrs)} steps: the suggestion comes "
                "from the points available; raise `max_lr` or `num_steps` to see where the loss blows up"
                if len(self.lrs)
                else "no steps recorded"
            )
        if self.stop_reason == "non_finite":
            return f"stopped at step {len(self.lrs) - 1}: the loss became NaN/Inf at LR {self.lrs[-1]:.3g}"
        return f"stopped at step {len(self.lrs) - 1}: the loss diverged at LR {self.lrs[-1]:.3g}"

    def suggest(self, method: SuggestionRule | None = None) -> Suggestion:
        """Like :meth:`suggestion`, but with the reason when there is no answer."""
        rule = self.method if method is None else method
        if callable(rule):
            lr = rule(self)
            return Suggestion(None if lr is None else float(lr), "" if lr is not None else "the callable returned None")
        return suggest(self.curve, rule)

    def suggestion(self, method: SuggestionRule | None = None) -> float | None:
        """The suggested LR by ``method`` (default: the sweep's own), or ``None`` when the curve has no descent.

        Args:
            method: ``"valley"``, ``"steepest"``, ``"minimum"``, ``"sma_slope"`` or a callable taking this result.
        """
        outcome = self.suggest(method)
        if outcome.lr is None:
            log.info("No LR suggestion: %s.", outcome.reason)
        return outcome.lr

    def rate_of_change(self, window: int | None = None) -> np.ndarray:
        """The loss's change per step, smoothed by a simple moving average of ``window`` steps."""
        return rate_of_change(self.losses, window)

    def to_pandas(self) -> pd.DataFrame:
        """One row per step: step, lr, loss, smoothed_loss, rate_of_change."""
        import pandas as pd

        return pd.DataFrame(
            {
                "step": np.arange(len(self.lrs)),
                "lr": self.lrs,
                "loss": self.losses,
                "smoothed_loss": self.smoothed_losses,
                "rate_of_change": self.rate_of_change(),
            }
        )

    def plot(self, ax: Axes | None = None, suggest: bool = True) -> Axes:
        """Loss (raw and smoothed) against LR on a log x-axis, with the suggestion marked."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        curve = self.curve
        ax.plot(self.lrs, self.losses, color="0.75", lw=1, label="loss")
        ax.plot(curve.lrs, curve.smoothed, color="C0", lw=2, label="smoothed loss (centred)")
        if suggest:
            self._mark_suggestion(ax, curve.lrs, curve.smoothed)
        ax.set_xscale("log" if self.mode == "exponential" else "linear")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        self._limit_y(ax, curve.smoothed)
        ax.legend()
        return ax

    def plot_rate_of_change(self, window: int | None = None, ax: Axes | None = None, suggest: bool = True) -> Axes:
        """The loss's rate of change per step, smoothed by a simple moving average, against LR.

        Its minimum is the ``"sma_slope"`` suggestion: where the loss falls fastest.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        window = window or default_window(len(self.losses))
        roc = self.rate_of_change(window)
        ax.plot(self.lrs, roc, color="C1", lw=2, label=f"d loss / step (SMA {window})")
        ax.axhline(0.0, color="0.6", lw=0.8)
        if suggest:
            self._mark_suggestion(ax, self.lrs, roc, method="sma_slope")
        ax.set_xscale("log" if self.mode == "exponential" else "linear")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("rate of change of the loss")
        self._limit_y(ax, roc)
        ax.legend()
        return ax

    def _mark_suggestion(self, ax: Axes, xs: np.ndarray, ys: np.ndarray, method: SuggestionRule | None = None) -> None:
        lr = self.suggest(method).lr
        if lr is None or len(xs) == 0:
            return
        i = int(np.argmin(np.abs(np.log(xs) - np.log(lr))))
        ax.axvline(lr, color="C3", ls="--", lw=1)
        ax.plot([xs[i]], [ys[i]], "o", color="C3", label=f"suggestion {lr:.2e}")

    @staticmethod
    def _limit_y(ax: Axes, ys: np.ndarray) -> None:
        """Keep the blow-up from squashing the interesting part of the curve."""
        finite = ys[np.isfinite(ys)]
        if len(finite) >= 2:
            low, high = float(finite.min()), float(np.percentile(finite, 95))
            pad = 0.1 * (high - low or 1.0)
            ax.set_ylim(low - pad, high + pad)

    def save(self, directory: str | Path, stem: str = "lr_sweep") -> dict[str, Path]:
        """Write ``<stem>.csv`` (the DataFrame) and ``<stem>.png`` (both plots) into ``directory``."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        csv_path, png_path = directory / f"{stem}.csv", directory / f"{stem}.png"
        self.to_pandas().to_csv(csv_path, index=False)
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        self.plot(ax=left)
        self.plot_rate_of_change(ax=right)
        fig.tight_layout()
        fig.savefig(png_path, dpi=100)
        plt.close(fig)
        return {"csv": csv_path, "png": png_path}
