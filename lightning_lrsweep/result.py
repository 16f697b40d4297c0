"""SweepResult: one sweep's curve, its suggestion, plots, a DataFrame and files."""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from lightning_lrsweep.suggestion_rules import (
    EDGE_RELATIVE_TOLERANCE,
    METHODS,
    MIN_POINTS,
    Curve,
    Interval,
    Suggestion,
    confidence,
    default_window,
    rate_of_change,
    rule_suggestion,
    start_level,
    supported_interval,
    zero_lag_curve,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SuggestionRule = Union[str, Callable[["SweepResult"], Union[float, None]]]  # noqa: UP007 (runtime alias)


@dataclass
class RaceResult:
    """A race between candidate LRs: each trained for ``steps`` optimizer steps from the same restored state.

    Attributes:
        lrs: the candidates, in the order they ran.
        scores: each candidate's loss after its stretch (``inf`` when it ended on NaN/Inf); lower wins.
        steps: optimizer steps per candidate (the race's cost is ``len(lrs) * steps`` steps plus the scoring).
        judged_on: ``"validation loss"`` or ``"training loss"``.
        seconds: wall time the race took.
    """

    lrs: list[float]
    scores: list[float]
    steps: int
    judged_on: str
    seconds: float = 0.0

    @property
    def winner(self) -> float | None:
        """The candidate with the lowest finite score, or ``None`` when every stretch blew up."""
        finite = [(score, lr) for score, lr in zip(self.scores, self.lrs, strict=True) if np.isfinite(score)]
        return min(finite)[1] if finite else None


@dataclass
class SweepResult:
    """What one LR range test measured.

    Attributes:
        lrs: the LR of the reference param group at each recorded step (other groups keep their ratio).
        losses: the training loss at each step (mean over ranks and accumulated micro-batches).
        smoothed_losses: the bias-corrected EMA of ``losses`` that the divergence stop used (column ``ema_loss``
            of :meth:`to_pandas`). It lags; the suggestion rules and the plots read a centred (lag-free) average
            instead (:attr:`curve`, column ``centred_loss``).
        method: the suggestion rule :meth:`suggestion` uses by default.
        stop_reason: ``"diverged"`` (smoothed loss above threshold × best), ``"non_finite"`` (NaN/Inf loss)
            or ``"num_steps"`` (ran to the end without diverging).
        min_lr, max_lr, num_steps, mode: the sweep's settings.
        epoch, global_step: where in training the sweep ran.
        seconds: wall time the sweep took.
        val_batches: in validation-loss mode, the validation batches each step was judged on (then ``losses``
            are validation losses); 0 for training loss.
        race: the race from the sweep's snapshot that picked the applied LR, when one ran (``LRSweep(race_steps=)``).

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
    val_batches: int = 0
    race: RaceResult | None = None

    def __post_init__(self) -> None:
        self.lrs = np.asarray(self.lrs, dtype=float)
        self.losses = np.asarray(self.losses, dtype=float)
        self.smoothed_losses = np.asarray(self.smoothed_losses, dtype=float)

    def __repr__(self) -> str:
        """One line: steps, LR range, how the sweep ended and its suggestion (the arrays: :meth:`to_pandas`)."""
        span = f"({self.lrs[0]:.3g}, {self.lrs[-1]:.3g})" if len(self.lrs) else "()"
        named = isinstance(self.method, str) and self.method in METHODS  # a callable is not run for a repr
        found = f", suggestion={_format_lr(self.suggest().lr)}" if named else ""
        return (
            f"SweepResult(steps={len(self.lrs)}, lr_range={span}, stop_reason={self.stop_reason!r}, "
            f"method={rule_label(self.method)!r}{found})"
        )

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
        """How the sweep ended, in words, read from the centred curve the suggestion reads.

        When the sweep ran to ``num_steps`` it says whether the loss still rose clearly from its lowest point (the
        stop rule reads a lagging EMA, so it can miss a late blow-up) or not (the suggestion is then less sure).
        """
        if self.stop_reason == "num_steps":
            if not len(self.lrs):
                return "no steps recorded"
            rise = _late_rise(self.curve)
            if rise is not None:
                low_lr, low, end = rise
                return (
                    f"ran all {len(self.lrs)} steps up to LR {self.lrs[-1]:.3g} without the divergence stop (it reads "
                    f"a lagging EMA), but the centred loss rose from {low:.3g} at LR {low_lr:.3g} to {end:.3g}: the "
                    "blow-up starts within the sweep"
                )
            return (
                f"no divergence seen up to LR {self.lrs[-1]:.3g} after {len(self.lrs)} steps: the suggestion comes "
                "from the points available; raise `max_lr` or `num_steps` to see where the loss blows up"
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
        return rule_suggestion(self.curve, rule)

    def suggestion(self, method: SuggestionRule | None = None) -> float | None:
        """The suggested LR by ``method`` (default: the sweep's own), or ``None`` when the curve has no descent.

        A ``None`` comes with a ``UserWarning`` giving the reason (:meth:`suggest` returns the reason quietly).

        Args:
            method: ``"valley"``, ``"steepest"``, ``"minimum"``, ``"sma_slope"`` or a callable taking this result.
        """
        outcome = self.suggest(method)
        if outcome.lr is None:
            warnings.warn(f"No LR suggestion: {outcome.reason}.", UserWarning, stacklevel=2)
        return outcome.lr

    @property
    def interval(self) -> Interval | None:
        """The range of LRs the curve supports, around the suggestion; ``None`` without a suggestion.

        See :func:`lightning_lrsweep.suggestion_rules.supported_interval`: from a third of the way down the descent
        to where the loss reaches its bottom, widened to contain the suggestion.
        """
        lr = self.suggest().lr
        return None if lr is None else supported_interval(self.curve, lr)

    @property
    def confidence(self) -> float:
        """How sure the curve is, in [0, 1]: how clear its descent is against the noise × how well the rules agree.

        See :func:`lightning_lrsweep.suggestion_rules.confidence`; 0 when the curve gives no suggestion.
        """
        return confidence(self.curve)

    def rate_of_change(self, window: int | None = None) -> np.ndarray:
        """The loss's change per step, smoothed by a simple moving average of ``window`` steps."""
        return rate_of_change(self.losses, window)

    def to_pandas(self) -> pd.DataFrame:
        """One row per step: step, lr, loss, ema_loss, centred_loss, rate_of_change.

        ``ema_loss`` is :attr:`smoothed_losses`, the lagging EMA the divergence stop read. ``centred_loss`` is the
        curve the suggestion rules read and :meth:`plot` draws (:attr:`curve`; ``NaN`` from the first non-finite
        loss on). ``rate_of_change`` is what :meth:`plot_rate_of_change` draws.
        """
        import pandas as pd

        centred = np.full(len(self.lrs), np.nan)
        smoothed = self.curve.smoothed
        centred[: len(smoothed)] = smoothed
        return pd.DataFrame(
            {
                "step": np.arange(len(self.lrs)),
                "lr": self.lrs,
                "loss": self.losses,
                "ema_loss": self.smoothed_losses,
                "centred_loss": centred,
                "rate_of_change": self.rate_of_change(),
            }
        )

    def plot(
        self, ax: Axes | None = None, suggest: bool = True, mark: float | None = None, mark_label: str | None = None
    ) -> Axes:
        """Loss (raw and centred) against LR on a log x-axis, with the sweep's suggestion (or ``mark``) marked.

        With the suggestion marked, the range of LRs the curve supports (:attr:`interval`) is shaded.

        Args:
            ax: the axes to draw on; by default a new pyplot figure's, so it shows in notebooks and on
                ``plt.show()`` (the backend is never switched). :meth:`figure` draws without pyplot.
            suggest: mark an LR at all.
            mark: the LR to mark instead of the suggestion (e.g. the LR a re-tune applied).
            mark_label: the marked LR's legend label; by default ``"<method> suggestion"``.
        """
        ax = ax if ax is not None else _pyplot_axes()
        curve = self.curve
        if suggest and mark is None:  # the range lies around the suggestion, not around another marked LR
            _shade(ax, self.interval)
        ax.plot(self.lrs, self.losses, color="0.75", lw=1, label="loss")
        ax.plot(curve.lrs, curve.smoothed, color="C0", lw=2, label="centred loss (the rules read it)")
        if suggest:
            lr = mark if mark is not None else self.suggest().lr
            _mark(ax, curve.lrs, curve.smoothed, lr, mark_label or f"{rule_label(self.method)} suggestion")
        ax.set_xscale("log" if self.mode == "exponential" else "linear")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("validation loss" if self.val_batches else "training loss")
        self._limit_y(ax, curve.smoothed)
        ax.legend()
        return ax

    def plot_rate_of_change(
        self,
        window: int | None = None,
        ax: Axes | None = None,
        suggest: bool = True,
        mark: float | None = None,
        mark_label: str | None = None,
    ) -> Axes:
        """The loss's rate of change per step, smoothed by a simple moving average, against LR.

        Its minimum is the ``"sma_slope"`` suggestion (where the loss falls fastest), marked and labelled
        ``"sma_slope suggestion"`` unless ``mark`` is given. ``ax``, ``suggest``, ``mark`` and ``mark_label`` work
        as in :meth:`plot`.
        """
        ax = ax if ax is not None else _pyplot_axes()
        window = window or default_window(len(self.losses))
        roc = self.rate_of_change(window)
        ax.plot(self.lrs, roc, color="C1", lw=2, label=f"d loss / step (SMA {window})")
        ax.axhline(0.0, color="0.6", lw=0.8)
        if suggest:
            lr = mark if mark is not None else self.suggest("sma_slope").lr
            _mark(ax, self.lrs, roc, lr, mark_label or ("sma_slope suggestion" if mark is None else "marked LR"))
        ax.set_xscale("log" if self.mode == "exponential" else "linear")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("rate of change of the loss")
        self._limit_y(ax, roc)
        ax.legend()
        return ax

    def figure(self, mark: float | None = None, mark_label: str | None = None) -> Figure:
        """Both plots side by side on a plain ``Figure``: pyplot never sees it, so nothing stays open.

        Both panels mark one LR, the sweep's suggestion (or ``mark``), with one label: ``mark`` and ``mark_label``
        work as in :meth:`plot`. ``figure().savefig(path)`` writes it.
        """
        from matplotlib.figure import Figure

        fig = Figure(figsize=(11, 4))
        left, right = fig.subplots(1, 2)
        lr = mark if mark is not None else self.suggest().lr
        label = mark_label or f"{rule_label(self.method)} suggestion"
        self.plot(ax=left, suggest=lr is not None, mark=lr, mark_label=label)
        self.plot_rate_of_change(ax=right, suggest=lr is not None, mark=lr, mark_label=label)
        fig.tight_layout()
        return fig

    @staticmethod
    def _limit_y(ax: Axes, ys: np.ndarray) -> None:
        """Keep the blow-up from squashing the interesting part of the curve."""
        finite = ys[np.isfinite(ys)]
        if len(finite) >= 2:
            low, high = float(finite.min()), float(np.percentile(finite, 95))
            pad = 0.1 * (high - low or 1.0)
            ax.set_ylim(low - pad, high + pad)

    def save(
        self, directory: str | Path, stem: str = "lr_sweep", mark: float | None = None, mark_label: str | None = None
    ) -> dict[str, Path]:
        """Write ``<stem>.csv`` (the DataFrame) and ``<stem>.png`` (:meth:`figure`) into ``directory``.

        The backend and pyplot's open figures stay as they were. ``mark`` and ``mark_label`` work as in :meth:`plot`.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        csv_path, png_path = directory / f"{stem}.csv", directory / f"{stem}.png"
        self.to_pandas().to_csv(csv_path, index=False)
        self.figure(mark, mark_label).savefig(png_path, dpi=100)
        return {"csv": csv_path, "png": png_path}


def writable_dir(directory: str | Path) -> Path:
    """Create ``directory`` and check that a file can be written in it: before a run, not after it.

    Raises:
        OSError: it cannot be created or written to.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory):
        pass
    return directory


def rule_label(rule: SuggestionRule) -> str:
    """A rule as a label shows it: its name, or a callable's name."""
    return rule if isinstance(rule, str) else getattr(rule, "__name__", "callable")


def _format_lr(lr: float | None) -> str:
    return "None" if lr is None else f"{lr:.3g}"


def _late_rise(curve: Curve) -> tuple[float, float, float] | None:
    """``(lr, loss)`` at the centred curve's lowest point and its last loss, if the loss rose clearly after it.

    Clearly: by more than twice the raw loss's noise plus 5% of the starting loss (the stability edge's
    tolerance, see :func:`~lightning_lrsweep.suggestion_rules.stability_edge`). ``None`` otherwise, or when the curve is
    shorter than the rules need.
    """
    if len(curve.lrs) < MIN_POINTS:
        return None
    lowest = int(np.argmin(curve.smoothed))
    level = start_level(curve)
    tolerance = 2 * level.noise + EDGE_RELATIVE_TOLERANCE * abs(level.start)
    low, end = float(curve.smoothed[lowest]), float(curve.smoothed[-1])
    return (float(curve.lrs[lowest]), low, end) if end > low + tolerance else None


def _pyplot_axes() -> Axes:
    """A new pyplot figure's axes: importing pyplot picks a backend only if none is chosen yet."""
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 4))[1]


def _mark(ax: Axes, xs: np.ndarray, ys: np.ndarray, lr: float | None, label: str) -> None:
    """A dashed line at ``lr`` and a dot on the curve's nearest point, labelled ``<label> <lr>``."""
    if lr is None or len(xs) == 0:
        return
    i = int(np.argmin(np.abs(np.log(xs) - np.log(lr))))
    ax.axvline(lr, color="C3", ls="--", lw=1)
    ax.plot([xs[i]], [ys[i]], "o", color="C3", label=f"{label} {lr:.2e}")


def _shade(ax: Axes, interval: Interval | None) -> None:
    """Shade the range of LRs the curve supports (nothing without one)."""
    if interval is not None:
        ax.axvspan(interval.low, interval.high, color="C2", alpha=0.15, label="supported range")
