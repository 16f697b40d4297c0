"""A run's sweeps: the record of each and its checkpoint form, one row per sweep, every curve beside the LR."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import Field, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from lightning_lrsweep.result import RaceResult, SuggestionRule, SweepResult
from lightning_lrsweep.suggestion_rules import METHODS, MIN_POINTS, start_level

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class SweepRecord:
    """One sweep of a run: where it ran, what it measured, and what became of the LR.

    Attributes:
        kind: ``"fit_start"`` or ``"retune"``.
        epoch: the epoch at whose start the sweep ran.
        global_step: the optimizer steps trained before it.
        result: the curve and its suggestions.
        previous_lr: the reference group's LR before the sweep, on the scale the sweep measured: at fit start
            the base LR (the LR attribute), at a re-tune the optimizer's current LR, which a scheduler may
            have moved away from the base LR.
        suggested_lr: what the rule asked for, before any bound on the move (``None`` when it had no answer);
            a phase read's is already capped at the changed model's stability edge ÷ the measured spacing.
        applied_lr: the LR the sweep moved to, on the same scale as ``previous_lr``: what the optimizer
            trained with right after a re-tune (``None`` when nothing was applied).
        reason: why the LR was applied, clamped or kept.
        base_lr: the base LR after the sweep, which ``configure_optimizers`` would build from: the LR
            attribute (scaled by the same factor as the optimizer, so under a scheduler it is not
            ``applied_lr``), or the reference group's ``initial_lr`` without an attribute to update. The
            hparams logged and restored on resume are this value.
    """

    kind: Literal["fit_start", "retune"]
    epoch: int
    global_step: int
    result: SweepResult
    previous_lr: float
    suggested_lr: float | None
    applied_lr: float | None
    reason: str
    base_lr: float


def record_state(record: SweepRecord) -> dict[str, Any]:
    """A record as plain values and float64 tensors (loadable with ``weights_only=True``)."""
    result = record.result
    return {
        "kind": record.kind,
        "epoch": record.epoch,
        "global_step": record.global_step,
        "previous_lr": record.previous_lr,
        "suggested_lr": record.suggested_lr,
        "applied_lr": record.applied_lr,
        "reason": record.reason,
        "base_lr": record.base_lr,
        **{name: torch.as_tensor(getattr(result, name), dtype=torch.float64) for name in CURVES},
        "method": result.method if isinstance(result.method, str) else None,
        **{f.name: getattr(result, f.name) for f in plain_result_fields()},
        "race": race_state(result.race) if result.race is not None else None,
    }


CURVES = ("lrs", "losses", "smoothed_losses")
"""The result's arrays, which a checkpoint keeps as float64 tensors."""


def plain_result_fields() -> tuple[Field[Any], ...]:
    """The result's fields a checkpoint keeps as they are: all but the curves, the rule, the race and the position.

    The position (``epoch``, ``global_step``) is the record's.
    """
    return tuple(f for f in fields(SweepResult) if f.name not in (*CURVES, "method", "race", "epoch", "global_step"))


def race_state(race: RaceResult) -> dict[str, Any]:
    """A race as plain Python values (candidates may be numpy floats, which ``weights_only`` loading refuses)."""
    return {
        "lrs": [float(lr) for lr in race.lrs],
        "scores": [float(score) for score in race.scores],
        "steps": int(race.steps),
        "judged_on": race.judged_on,
        "seconds": float(race.seconds),
    }


def record_from_state(state: dict[str, Any], default_method: SuggestionRule) -> SweepRecord:
    """Rebuild a record from :func:`record_state`; fields added later fall back to defaults."""
    method = state.get("method")
    result = SweepResult(
        **{name: state[name].numpy() for name in CURVES},
        method=method if method in METHODS else default_method,
        epoch=state["epoch"],
        global_step=state.get("global_step", 0),
        **{f.name: state.get(f.name, f.default) for f in plain_result_fields()},
    )
    race = state.get("race")
    result.race = RaceResult(**race) if race is not None else None
    return SweepRecord(
        kind=state["kind"],
        epoch=state["epoch"],
        global_step=state.get("global_step", 0),
        result=result,
        previous_lr=state["previous_lr"],
        suggested_lr=state.get("suggested_lr"),
        applied_lr=state.get("applied_lr"),
        reason=state.get("reason", ""),
        base_lr=state["base_lr"],
    )


BLOW_UP_RATIO = 4.0
"""The history plot's y-axis shows curves up to this many times their starting loss (the classic stop threshold)."""

FRAME_COLUMNS = (
    "epoch",
    "kind",
    "global_step",
    "steps",
    "stop_reason",
    "min_lr",
    "max_lr",
    "previous_lr",
    "suggested_lr",
    "applied_lr",
    "base_lr",
    "reason",
    "seconds",
)


def history_frame(history: Sequence[SweepRecord]) -> pd.DataFrame:
    """One row per sweep of a run.

    Columns: epoch, kind, global_step, steps, stop_reason, min_lr, max_lr, previous_lr, suggested_lr,
    applied_lr (``NaN`` where none), base_lr, reason and seconds (see :class:`SweepRecord`).
    """
    import pandas as pd

    rows = [
        {
            "epoch": r.epoch,
            "kind": r.kind,
            "global_step": r.global_step,
            "steps": len(r.result.lrs),
            "stop_reason": r.result.stop_reason,
            "min_lr": r.result.min_lr,
            "max_lr": r.result.max_lr,
            "previous_lr": r.previous_lr,
            "suggested_lr": np.nan if r.suggested_lr is None else r.suggested_lr,
            "applied_lr": np.nan if r.applied_lr is None else r.applied_lr,
            "base_lr": r.base_lr,
            "reason": r.reason,
            "seconds": r.result.seconds,
        }
        for r in history
    ]
    return pd.DataFrame(rows, columns=list(FRAME_COLUMNS))


def lr_per_epoch(history: Sequence[SweepRecord]) -> tuple[np.ndarray, np.ndarray]:
    """The epochs at which a sweep ran, and the LR training continued with from each."""
    epochs = np.array([r.epoch for r in history], dtype=float)
    lrs = np.array([r.applied_lr if r.applied_lr is not None else r.previous_lr for r in history], dtype=float)
    return epochs, lrs


def relative_curve(result: SweepResult) -> tuple[np.ndarray, np.ndarray]:
    """A sweep's centred loss relative to the loss it started from, against LR (empty when too short to read).

    Mid-training losses are a fraction of the fit-start one: on one absolute axis the re-tunes' curves lie
    flat near zero. Relative to its own start, every curve starts at 1, and where it climbs back above 1 is
    the stability edge a re-tune reads (see :func:`~lightning_lrsweep.suggestion_rules.start_level`). For a positive
    loss that is ``loss / start``; ``1 + (loss - start) / |start|`` is the same there and also serves a loss
    that can be negative (a Gaussian negative log-likelihood, say).
    """
    curve = result.curve
    if len(curve.lrs) < MIN_POINTS:
        return curve.lrs[:0], curve.smoothed[:0]
    start = start_level(curve).start
    if not (np.isfinite(start) and start != 0):
        return curve.lrs[:0], curve.smoothed[:0]
    return curve.lrs, 1 + (curve.smoothed - start) / abs(start)


def plot_history(
    history: Sequence[SweepRecord],
    path: str | Path | None = None,
    fig: Figure | None = None,
    epochs: int | None = None,
) -> Figure:
    """Every sweep's loss-vs-LR curve relative to its starting loss, coloured by epoch, beside the LR per epoch.

    Args:
        history: the records, as in ``LRSweep.history``.
        path: also save the figure there (PNG, SVG, … by suffix).
        fig: an empty figure to draw on, e.g. a plain ``matplotlib.figure.Figure(figsize=(11, 4))`` that
            pyplot never sees; by default a new pyplot figure, so it shows in notebooks and on ``plt.show()``
            (the backend is never switched).
        epochs: the epochs the run trained, so the LR-per-epoch panel spans the whole run (at least up to the
            epoch after the last sweep).

    Returns:
        The figure (two axes: curves, LR per epoch).

    Raises:
        ValueError: the history is empty.
    """
    if not history:
        raise ValueError("`plot_history` needs at least one sweep, but the history is empty; run `fit` first.")
    import matplotlib
    from matplotlib import cm, colors, ticker

    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(11, 4))
    curves, per_epoch = fig.subplots(1, 2)
    end = max(max(r.epoch for r in history) + 1, epochs or 0)
    norm = colors.Normalize(vmin=0, vmax=max(end - 1, 1))
    cmap = matplotlib.colormaps["viridis"]
    low, high = np.inf, -np.inf
    curves.axhline(1.0, color="0.6", lw=0.8)
    for record in history:
        lrs, relative = relative_curve(record.result)
        if len(lrs) == 0:
            continue
        curves.plot(lrs, relative, color=cmap(norm(record.epoch)), lw=1.5)
        lr = record.applied_lr if record.applied_lr is not None else record.previous_lr
        curves.axvline(lr, color=cmap(norm(record.epoch)), ls=":", lw=0.8)
        low = min(low, float(np.min(relative)))
        high = max(high, float(np.percentile(relative, 90)))
    if np.isfinite(low) and np.isfinite(high) and high > low > 0:
        curves.set_yscale("log")  # a ratio: halving and doubling look alike
        curves.set_ylim(low / 1.1, min(high, BLOW_UP_RATIO) * 1.1)
        curves.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    curves.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:.3g}"))
    curves.yaxis.set_minor_formatter(ticker.NullFormatter())
    curves.set_xscale("log")
    curves.set_xlabel("learning rate")
    curves.set_ylabel("centred loss ÷ the sweep's starting loss")
    curves.set_title("sweep curves (dotted: LR applied)")
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=curves, label="epoch")

    sweep_epochs, lrs = lr_per_epoch(history)
    per_epoch.step(np.append(sweep_epochs, end), np.append(lrs, lrs[-1]), where="post", color="C0")
    per_epoch.scatter(sweep_epochs, lrs, c=[cmap(norm(e)) for e in sweep_epochs], zorder=3)
    per_epoch.set_xlim(-0.2, end + 0.2)
    per_epoch.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    if lrs.max() / lrs.min() >= 10:  # a log axis only where it spans a decade; readable ticks either way
        per_epoch.set_yscale("log")
    per_epoch.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:.3g}"))
    per_epoch.yaxis.set_minor_formatter(ticker.NullFormatter())
    per_epoch.set_xlabel("epoch")
    per_epoch.set_ylabel("learning rate")
    per_epoch.set_title("LR applied at each sweep")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
