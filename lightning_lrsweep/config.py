"""Sweep settings and their validation, shared by the callback and the tuner."""

from __future__ import annotations

from dataclasses import dataclass

from lightning_lrsweep.result import SuggestionRule, SweepResult  # noqa: F401 (resolves the forward ref in SuggestionRule, for get_type_hints)
from lightning_lrsweep.schedule import MODES
from lightning_lrsweep.suggestion_rules import METHODS

MIN_STEPS = 5


def check_suggestion(name: str, value: object) -> None:
    """A suggestion rule is a known method name or a callable."""
    if not (callable(value) or value in METHODS):
        raise ValueError(f"`{name}` must be one of {sorted(METHODS)} or a callable, got {value!r}.")


def check_num_steps(name: str, value: object) -> None:
    """A sweep's step budget is an int >= ``MIN_STEPS``; ``name`` is the argument the user passed."""
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_STEPS:
        raise ValueError(f"`{name}` must be an int >= {MIN_STEPS}, got {value!r}.")


@dataclass(frozen=True)
class SweepConfig:
    """How one sweep runs. Invalid values raise ``ValueError`` naming the argument, the value and the fix.

    Args:
        min_lr: first LR of the sweep (> 0).
        max_lr: last LR of the sweep (> ``min_lr``).
        num_steps: optimizer steps at most (>= 5).
        mode: ``"exponential"`` (multiply the LR each step) or ``"linear"`` (add to it).
        early_stop_threshold: stop once the smoothed loss exceeds ``threshold × best``; ``None`` never stops
            early (a NaN/Inf loss always stops the sweep).
        smoothing: EMA factor of the loss in ``[0, 1)``; 0 turns smoothing off.
        suggestion: the rule that picks the LR: a method name or a callable ``(SweepResult) -> float | None``.
        snapshot_device: where the restore copy is kept: ``None`` (beside the model) or ``"cpu"``.
        optimizer_idx: which of several optimizers to sweep (``None``: the only one). The others keep their
            LRs; with manual optimization ``training_step`` still steps them, and all are restored afterwards.
        min_stop_lr: below this LR the divergence stop is ignored (NaN/Inf still stop). A re-tune sets it
            to the LR training ran at: the loss cannot truly diverge below it, so a rise there is noise
            (a well-trained model's loss is tiny, and 4x a tiny loss is one noisy batch).
        val_batches: judge the sweep on the validation loss instead of the training loss: after every optimizer
            step, ``training_step`` runs on the first ``val_batches`` batches of the validation loader (in eval
            mode, without gradients) and their mean loss is recorded. 0 (the default) records the training loss.
    """

    min_lr: float = 1e-7
    max_lr: float = 10.0
    num_steps: int = 100
    mode: str = "exponential"
    early_stop_threshold: float | None = 4.0
    smoothing: float = 0.98
    suggestion: SuggestionRule = "valley"
    snapshot_device: str | None = None
    optimizer_idx: int | None = None
    min_stop_lr: float = 0.0
    val_batches: int = 0

    def __post_init__(self) -> None:
        if not self.min_lr > 0:
            raise ValueError(f"`min_lr` must be > 0, got {self.min_lr!r}.")
        if not self.max_lr > self.min_lr:
            raise ValueError(
                f"`max_lr` must be greater than `min_lr`, got min_lr={self.min_lr!r}, max_lr={self.max_lr!r}."
            )
        check_num_steps("num_steps", self.num_steps)
        if self.mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}, got {self.mode!r}.")
        if self.early_stop_threshold is not None and not self.early_stop_threshold > 1:
            raise ValueError(
                f"`early_stop_threshold` must be > 1 or None (never stop early), got {self.early_stop_threshold!r}."
            )
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"`smoothing` must be in [0, 1), got {self.smoothing!r}.")
        check_suggestion("suggestion", self.suggestion)
        if self.snapshot_device not in (None, "cpu"):
            raise ValueError(f"`snapshot_device` must be None or 'cpu', got {self.snapshot_device!r}.")
        if isinstance(self.val_batches, bool) or not isinstance(self.val_batches, int) or self.val_batches < 0:
            raise ValueError(
                f"`val_batches` must be an int >= 0 (0: judge on the training loss), got {self.val_batches!r}."
            )
        if self.optimizer_idx is not None and (
            isinstance(self.optimizer_idx, bool) or not isinstance(self.optimizer_idx, int) or self.optimizer_idx < 0
        ):
            raise ValueError(
                f"`optimizer_idx` must be None (a single optimizer) or an int >= 0, got {self.optimizer_idx!r}."
            )
