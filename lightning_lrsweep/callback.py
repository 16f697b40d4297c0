"""LRSweep: *when* to run an LR range test during ``fit``, and applying what it finds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BaseFinetuning, Callback, GradientAccumulationScheduler, LearningRateMonitor
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lightning_lrsweep.apply import (
    LR_ATTR_NAMES,
    apply_lr,
    base_lrs,
    find_lr_attr,
    get_lr_attr,
    is_usable_lr,
    reference_group,
    scale_callbacks,
    set_lr_attr,
)
from lightning_lrsweep.compat import callback_state_key
from lightning_lrsweep.config import (
    IDENTITY,
    CallbackConfig,
    RetuneRule,
    SweepConfig,
    changed_settings,
    document_settings,
    from_arguments,
    is_number,
    key_settings,
    settings_from_key,
    shaping_settings,
)
from lightning_lrsweep.distributed import SpawnReturn, check_strategy
from lightning_lrsweep.history import SweepRecord, history_frame, plot_history, record_from_state, record_state
from lightning_lrsweep.optimizer_choice import only_optimizer
from lightning_lrsweep.progress import first_epoch_accumulation, run_race_shown, run_sweep_shown
from lightning_lrsweep.reporting import log_hparams, report_to_loggers, summary_line
from lightning_lrsweep.result import SuggestionRule, SweepResult
from lightning_lrsweep.retune import (
    UP_MARGIN,
    RetuneDecision,
    anneal_factor,
    bound_change,
    edge_distance,
    edge_retune,
    phase_retune,
    scale_retune,
)
from lightning_lrsweep.schedule import retune_bounds
from lightning_lrsweep.suggestion_rules import stability_edge
from lightning_lrsweep.sweep_data import check_val_mode

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


def order_callbacks(callbacks: list[Callback], sweep: Callback) -> list[Callback]:
    """A new callback list in which ``sweep``'s epoch-start re-tune sees what the others change and show.

    Finetuning callbacks (which unfreeze layers and add param groups at an epoch start) and gradient
    accumulation schedulers move before ``sweep``, so a re-tune sweeps the model and the batch size that
    epoch will train with; LR monitors move after it, so they log the re-tuned LR. Everything else keeps
    its place. A new list is returned, because Lightning may be iterating over the current one.
    """
    if not any(c is sweep for c in callbacks):
        return list(callbacks)
    mine = next(i for i, c in enumerate(callbacks) if c is sweep)
    before = [c for c in callbacks[mine + 1 :] if isinstance(c, BaseFinetuning | GradientAccumulationScheduler)]
    after = [c for c in callbacks[:mine] if isinstance(c, LearningRateMonitor)]
    moved = {id(c) for c in (*before, *after)}
    ordered: list[Callback] = []
    for callback in callbacks:
        if callback is sweep:
            ordered.extend([*before, sweep, *after])
        elif id(callback) not in moved:
            ordered.append(callback)
    return ordered


def training_horizon(trainer: pl.Trainer) -> tuple[float, float]:
    """The training batches ``max_epochs`` allows and the optimizer steps ``max_steps`` allows (``inf``: no limit).

    Counted apart, not as ``estimated_stepping_batches`` does: a ``GradientAccumulationScheduler`` changes the
    batches per step after it is read, and with manual optimization every optimizer's step counts in ``global_step``.
    """
    epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else math.inf
    batches = float(trainer.num_training_batches) * epochs if epochs else 0.0
    steps = float(trainer.max_steps) if trainer.max_steps >= 0 else math.inf
    return batches, steps


@document_settings(SweepConfig, CallbackConfig)
class LRSweep(Callback):
    r"""Find the learning rate with an LR range test at fit start, and re-tune it as training goes on.

    At ``on_fit_start`` the callback trains briefly while raising the LR every optimizer step, records
    the loss, stops once the loss blows up, picks an LR from the curve, restores the model, optimizer,
    schedulers and RNGs exactly, and writes the LR into the module's LR attribute (and so its hparams),
    every param group (ratios kept) and the LR schedulers. With ``every_n_epochs`` or ``milestones`` it
    sweeps again at those epoch starts, and at the start of an epoch where a finetuning callback unfroze layers
    or the accumulation changed (``retune_at_phase_change``), and moves the LR within bounds by scaling the
    optimizer, schedulers and LR attribute by one factor: under a scheduler the attribute (and so the logged
    and checkpointed hparams) keeps the base LR, not the scheduled one. A re-tune where the LR is 0 (the end
    of a decay-to-zero schedule) is skipped with a warning: there is nothing to scale. It runs after
    finetuning callbacks (so a re-tune sees layers they unfreeze) and before LR monitors (so they log the
    re-tuned LR), whatever the order of the callbacks list.

    Each sweep shows in the trainer's progress bar, logs one summary line, and reaches every logger
    (``lr_sweep/suggested_lr``, ``lr_sweep/applied_lr``, the tuned LR in the hparams, the curve as a figure and
    files). The history is checkpointed: a resumed ``fit`` keeps it, skips the fit-start sweep and re-tunes on the
    same schedule. :meth:`history_frame` and :meth:`plot_history` show the whole run.

    Every argument is a setting declared in :mod:`lightning_lrsweep.config` with its meaning and allowed values
    (the entries below are generated from there): the fit-start sweep's in
    :class:`~lightning_lrsweep.config.SweepConfig` (kept as ``.config``), the others in
    :class:`~lightning_lrsweep.config.CallbackConfig` (kept as ``.settings``).

    Raises:
        ValueError: an argument is out of range (raised here), or the trainer/module cannot be swept
            (raised before any training step: no LR attribute, not exactly one optimizer, ``val_batches`` without
            validation data or with manual optimization, `FSDPStrategy` or DeepSpeed; shard with
            ``ModelParallelStrategy`` and ``fully_shard`` instead).

    Examples:
        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[LRSweep(every_n_epochs=5)])  # doctest: +SKIP
        >>> trainer.fit(model, datamodule=dm)  # doctest: +SKIP
    """

    def __init__(
        self,
        min_lr: float = 1e-7,
        max_lr: float = 10.0,
        num_steps: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
        smoothing: float = 0.98,
        suggestion: SuggestionRule = "valley",
        every_n_epochs: int | None = None,
        milestones: Sequence[int] = (),
        retune_at_phase_change: bool = True,
        attr_name: str | None = None,
        update_attr: bool = True,
        retune_suggestion: RetuneRule | None = None,
        retune_window: float = 30.0,
        retune_num_steps: int = 40,
        max_change: float = 2.0,
        sweep_at_fit_start: bool = True,
        snapshot_device: str | None = None,
        sweep_on_resume: bool = False,
        log_curves: bool = True,
        optimizer_idx: int | None = None,
        val_batches: int = 0,
        race_steps: int = 0,
        min_confidence: float = 0.2,
        low_confidence: str = "warn",
        anneal: bool = True,
    ) -> None:
        if retune_suggestion is None:  # a callable fit-start rule serves re-tunes too
            retune_suggestion = suggestion if callable(suggestion) else "edge"
        arguments = locals()
        self.config = from_arguments(SweepConfig, arguments)
        self.settings = from_arguments(CallbackConfig, arguments)
        self._anneal_horizon: tuple[float, float] | None = None  # the run's (batches, steps) while annealing
        self._anneal_factor = 1.0  # the anneal's factor now in the param groups' LRs
        self._loaded_anneal_factor: float | None = None
        self._phase: tuple[int, int, int] | None = None  # what was trained at the last sweep (see `_phase_now`)
        self._history: list[SweepRecord] = []
        self._attr: str | None = None
        self._distance: float | None = None
        self._enabled = True
        self._restored_retunes: set[int] = set()
        self._epochs_trained = 0
        self._state_loaded = False  # whether the last checkpoint held this instance's state
        self._returned = SpawnReturn()

    @property
    def history(self) -> list[SweepRecord]:
        """Every sweep of the run so far, in order; also in the main process after a ``ddp_spawn`` fit."""
        received = self._returned.receive()
        if received is not None:
            self._history, self._distance = received
        return self._history

    # -- when ----------------------------------------------------------------------------------

    def should_retune(self, epoch: int) -> bool:
        """Whether ``every_n_epochs`` or ``milestones`` re-tune at the start of ``epoch`` (never at epoch 0).

        The fit-start sweep covers epoch 0. A phase change adds a re-tune of its own (``retune_at_phase_change``).
        """
        if epoch == 0:
            return False
        periodic = self.settings.every_n_epochs is not None and epoch % self.settings.every_n_epochs == 0
        return periodic or epoch in self.settings.milestones

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        check_strategy(trainer)
        self._enabled = not trainer.fast_dev_run  # type: ignore[attr-defined]
        if not self._enabled:
            rank_zero_warn("LRSweep is skipped with `fast_dev_run`: the run is too short for a range test.")
            return
        trainer.callbacks = order_callbacks(trainer.callbacks, self)  # type: ignore[attr-defined]
        self._attr = find_lr_attr(pl_module, self.settings.attr_name)
        if self._attr is None and self.settings.update_attr:
            raise ValueError(
                f"LRSweep could not find the LR attribute of {type(pl_module).__name__}: none of "
                f"{list(LR_ATTR_NAMES)} is set on the module or its hparams. Store the LR as `self.lr` (or "
                "`self.hparams.lr`) and build the optimizer from it, pass `attr_name=`, or pass `update_attr=False`."
            )

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled and not trainer.strategy.restore_checkpoint_after_setup:
            self._start(trainer, pl_module)

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Resume the history, or run the fit-start sweep: once the checkpoint (if any) has been restored."""
        only_optimizer(trainer, self.config.optimizer_idx)  # refuse a bad optimizer choice before any step
        check_val_mode(trainer, self.config.val_batches)  # also when the first sweep is a re-tune
        resuming = trainer.ckpt_path is not None
        if resuming and not self._state_loaded:
            rank_zero_warn(
                f"LRSweep resumes from {trainer.ckpt_path} without a saved history: the checkpoint holds no LRSweep "
                "state for this instance. It was saved without LRSweep, or by one tuning another LR (another "
                "`attr_name` or `optimizer_idx`), or by several whose settings all differ from this instance's "
                f"(its `state_key` is {self.state_key}). Re-tunes continue from the optimizer's restored LR; the LR "
                "attribute keeps the module's value."
            )
            self._loaded_anneal_factor = None  # not an earlier checkpoint's: this one's LR carries no saved decay
        if resuming:
            self._restore_attr(pl_module)
        else:
            self._restored_retunes = set()
        self._state_loaded = False
        if self.settings.sweep_at_fit_start and (not resuming or self.settings.sweep_on_resume):
            self._fit_start_sweep(trainer, pl_module)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled and trainer.strategy.restore_checkpoint_after_setup:
            self._start(trainer, pl_module)  # e.g. ModelParallelStrategy restores a checkpoint after `on_fit_start`
        # Lightning logs the constructor's hparams after `on_fit_start`: log them again with the tuned LR.
        if self._enabled and self.history:
            log_hparams(trainer, self._attr, self.history[-1].base_lr)
        if not self._enabled:
            return
        with first_epoch_accumulation(trainer):  # a scheduler sets the accumulation only at the epoch start
            self._phase = self._phase_now(trainer)
        horizon = training_horizon(trainer)
        scheduled = self._scheduled(trainer)
        periodic = self.settings.every_n_epochs is not None and self.settings.retune_suggestion == "edge"
        annealing = self.settings.anneal and periodic and not scheduled and 0 < min(horizon) < math.inf
        self._anneal_horizon = horizon if annealing else None
        # on resume the restored LRs already carry the decay: the factor saved with them
        resumed = self._loaded_anneal_factor if trainer.ckpt_path is not None else None
        self._anneal_factor = resumed if resumed is not None and self._anneal_horizon else 1.0

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._anneal_horizon is None:
            return
        if self._scheduled(trainer):  # attached mid-run (e.g. StochasticWeightAveraging's SWALR): the LR is its now
            self._anneal_horizon = None
            return
        batches, steps = self._anneal_horizon
        # training stops at whichever limit comes first, so the decay follows the one nearer its end
        factor = min(
            anneal_factor(trainer.fit_loop.total_batch_idx, batches), anneal_factor(trainer.global_step, steps)
        )
        if factor != self._anneal_factor and self._anneal_factor > 0:
            for group in only_optimizer(trainer, self.config.optimizer_idx).param_groups:
                group["lr"] *= factor / self._anneal_factor
            scale_callbacks(trainer.callbacks, self._anneal_factor, factor)  # type: ignore[attr-defined]
            self._anneal_factor = factor

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if not self._enabled or epoch in self._restored_retunes:  # resumed mid-epoch, after this epoch's re-tune
            return
        changed = self.settings.retune_at_phase_change and self._phase_change(trainer) is not None
        if self.should_retune(epoch) or changed:
            self._retune(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epochs_trained = trainer.current_epoch + 1  # what `plot_history` spans

    # -- checkpoint ----------------------------------------------------------------------------

    @property
    @override
    def state_key(self) -> str:
        """The settings that shape what the sweeps measure or decide, so two instances keep their own history.

        Settings of how results are shown or kept (declared with ``shapes=False`` in :mod:`lightning_lrsweep.config`)
        are left out. Settings added after 0.1.0 appear only where they differ from their defaults, so 0.1.0's
        checkpoints are still found (:func:`~lightning_lrsweep.config.key_settings`).
        """
        return callback_state_key(self, **key_settings(self._shaping_settings()))

    def _shaping_settings(self) -> dict[str, object]:
        return shaping_settings(self.config, self.settings)

    @override
    def state_dict(self) -> dict[str, Any]:
        """The sweep history (curves as float64 tensors), the fit-start distance, the anneal's factor, the settings."""
        return {
            "version": 1,
            "history": [record_state(r) for r in self.history],
            "distance": self._distance,
            "anneal_factor": self._anneal_factor,
            "settings": self._shaping_settings(),
        }

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Take the state of an ``LRSweep`` that tuned the same LR with other settings, when it is the only one.

        Lightning hands :meth:`load_state_dict` only the state saved under this instance's own ``state_key``, which
        names the settings; a resumed run whose settings changed would lose its history. Another instance of this
        trainer claims its own key first; a state tuning another LR (``attr_name``, ``optimizer_idx``) is left.
        """
        states = checkpoint.get("callbacks") or {}
        if self.state_key in states:
            return
        claimed = {c.state_key for c in trainer.callbacks if isinstance(c, LRSweep)}  # type: ignore[attr-defined]
        now = self._shaping_settings()
        found = []
        for key, state in states.items():
            if not isinstance(key, str) or not key.startswith(f"{type(self).__qualname__}{{") or key in claimed:
                continue
            saved = state.get("settings") or settings_from_key(key)  # 0.1.0 saved them in the key only
            if saved is not None and all(saved.get(name) == now[name] for name in IDENTITY):
                found.append({**state, "settings": saved})
        if len(found) == 1:
            self.load_state_dict(deepcopy(found[0]))

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the history and the fit-start distance; warn about settings that differ from the saved ones.

        The history is kept either way: it records what the earlier run did, and re-tunes continue from it under
        this instance's settings.
        """
        saved = state_dict.get("settings")  # None: saved by 0.1.0 under this key, so with these settings
        changed = changed_settings(saved, self._shaping_settings()) if saved is not None else []
        if changed:
            rank_zero_warn(
                f"LRSweep resumes with settings that differ from the checkpoint's: {'; '.join(changed)} (saved -> "
                "now). The saved history is kept; the sweeps from now on use the new settings."
            )
        self._history = [record_from_state(r, self.config.suggestion) for r in state_dict.get("history", [])]
        self._distance = state_dict.get("distance", self._distance)
        self._loaded_anneal_factor = state_dict.get("anneal_factor")
        self._restored_retunes = {r.epoch for r in self.history if r.kind == "retune"}
        self._state_loaded = True

    def _restore_attr(self, pl_module: pl.LightningModule) -> None:
        """Put the last sweep's base LR into the module's LR attribute (checkpoints restore only the optimizer's).

        The base LR, not the optimizer's: under a scheduler they differ, and the attribute is what
        ``configure_optimizers`` and the hparams read.
        """
        if self.history and self._attr is not None and self.settings.update_attr:
            set_lr_attr(pl_module, self._attr, self.history[-1].base_lr)

    # -- history -------------------------------------------------------------------------------

    def history_frame(self) -> pd.DataFrame:
        """One row per sweep of the run (see :func:`lightning_lrsweep.history.history_frame`)."""
        return history_frame(self.history)

    def plot_history(self, path: str | Path | None = None, fig: Figure | None = None) -> Figure:
        """Every sweep's curve (relative to its starting loss) coloured by epoch, beside the LR at each sweep.

        The LR-per-epoch panel spans every epoch trained so far in this process.

        Args:
            path: also save the figure there.
            fig: an empty figure to draw on (default: a new pyplot figure; see
                :func:`lightning_lrsweep.history.plot_history`).

        Returns:
            The matplotlib figure.

        Raises:
            ValueError: no sweep has run yet.
        """
        return plot_history(self.history, path, fig, epochs=self._epochs_trained)

    # -- what ----------------------------------------------------------------------------------

    def _fit_start_sweep(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = only_optimizer(trainer, self.config.optimizer_idx)
        previous = self._attr_lr(pl_module, optimizer)
        if not is_usable_lr(previous):  # every group's LR is swept and moved relative to it
            source = f"the LR attribute `{self._attr}`" if self._attr is not None else "the optimizer's LR"
            raise ValueError(
                f"LRSweep needs a finite LR > 0 to sweep and scale from, but {source} of {type(pl_module).__name__} "
                f"is {previous!r}. Start from any positive LR (e.g. 1e-3): the fit-start sweep replaces it."
            )
        result = run_sweep_shown(trainer, self.config, "LR sweep (fit start)", fit_start=True)
        outcome = result.suggest()
        self._measure_distance(result, outcome.lr)
        applied, reason = self._fit_start_choice(trainer, result, previous, outcome.lr, outcome.reason)
        if applied is not None:
            self._apply(trainer, pl_module, previous, applied)
        self._record(trainer, "fit_start", result, previous, outcome.lr, applied, reason)

    def _fit_start_choice(
        self, trainer: pl.Trainer, result: SweepResult, previous: float, suggested: float | None, why_none: str
    ) -> tuple[float | None, str]:
        """The LR to apply after the fit-start sweep (``None``: keep ``previous``) and why.

        No suggestion keeps the LR; a confidence below ``min_confidence`` warns and, with ``low_confidence="keep"``,
        keeps it; otherwise a race (``race_steps``) between the suggestion and the interval's ends picks the LR.
        """
        if suggested is None:
            rank_zero_warn(f"LRSweep kept the LR at {previous:.3g}: no suggestion ({why_none}; {result.note}).")
            return None, f"no suggestion: {why_none}"
        sure = result.confidence
        if sure < self.settings.min_confidence:
            keep = self.settings.low_confidence == "keep"
            rank_zero_warn(
                f"LRSweep's fit-start suggestion {suggested:.3g} has a low confidence ({sure:.2f} < `min_confidence`="
                f"{self.settings.min_confidence:g}): the loss's descent is unclear against its noise, or the rules "
                "disagree. "
                + (f"Kept the LR at {previous:.3g} (`low_confidence='keep'`)." if keep else "Applied it anyway.")
                + " Plot the curve (`history[-1].result.plot()`) to check."
            )
            if keep:
                return None, f"low confidence ({sure:.2f}): kept"
        interval = result.interval
        if not self.settings.race_steps or interval is None:
            return suggested, "fit-start suggestion applied"
        candidates = sorted({interval.low, suggested, interval.high})
        result.race = run_race_shown(trainer, self.config, candidates, self.settings.race_steps)
        winner = result.race.winner
        if winner is None:
            return suggested, "fit-start suggestion applied (every race candidate blew up)"
        return winner, (
            f"race winner of {len(candidates)} LRs x {self.settings.race_steps} steps on {result.race.judged_on} "
            f"({result.race.seconds:.1f} s)"
        )

    def _retune(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = only_optimizer(trainer, self.config.optimizer_idx)
        current = float(optimizer.param_groups[reference_group(optimizer)]["lr"])
        if not is_usable_lr(current):
            # A re-tune moves the LR by a factor of it, and sweeps a window around it: at 0 neither exists.
            rank_zero_warn(
                f"LRSweep skipped the re-tune at epoch {trainer.current_epoch}: the optimizer's LR is {current:g} "
                "(e.g. a schedule decayed it to 0), so there is no LR to sweep around or scale. Nothing is recorded."
            )
            return
        scheduled = self._scheduled(trainer)
        peak = self._peak(trainer, optimizer, current)
        phase = self._phase_change(trainer)
        if phase is not None:
            # a new problem: a full-range sweep, read like the fit-start one
            config = replace(self.config, min_stop_lr=current)
            label = f"LR sweep (epoch {trainer.current_epoch}, {phase})"
        else:
            low, high = retune_bounds(current, self.settings.retune_window, self.config.max_lr)
            config = replace(
                self.config, num_steps=self.settings.retune_num_steps, min_lr=low, max_lr=high, min_stop_lr=current
            )
            label = f"LR sweep (epoch {trainer.current_epoch})"
        result = run_sweep_shown(trainer, config, label)
        self._phase = self._phase_now(trainer)
        if phase is not None:
            # the anneal's hold is a held LR: its decay, not begun, lowers no noise yet
            holding = peak is not None and not scheduled and self._anneal_factor == 1.0
            decision = self._decide_phase(result, current, None if holding else peak, phase)
        else:
            decision = self._decide(result, current, peak, may_raise=not scheduled)
        if decision.clamped and decision.target is not None and abs(math.log(decision.target / decision.lr)) > 0.01:
            # a clamp of under 1% changes nothing a user would act on: no warning
            bound = (
                f"at most {self.settings.max_change:g}x per re-tune, `max_change`"
                if phase is None
                else f"{max(decision.lr / current, current / decision.lr):.3g}x, the most a phase change moves it"
            )
            rank_zero_warn(
                f"LRSweep re-tune at epoch {trainer.current_epoch}: the rule asked for {decision.target:.4g}, "
                f"clamped to {decision.lr:.4g} ({bound})."
            )
        if decision.lr != current:
            self._apply(trainer, pl_module, current, decision.lr)
        self._record(trainer, "retune", result, current, decision.target, decision.lr, decision.reason)

    def _phase_now(self, trainer: pl.Trainer) -> tuple[int, int, int]:
        """What is trained: the param groups, the trainable parameters and the batches accumulated per step."""
        optimizer = only_optimizer(trainer, self.config.optimizer_idx)
        trainable = sum(p.numel() for p in trainer.lightning_module.parameters() if p.requires_grad)
        return len(optimizer.param_groups), trainable, int(trainer.accumulate_grad_batches)

    def _phase_change(self, trainer: pl.Trainer) -> str | None:
        """Why this re-tune starts a new phase (a milestone, or a change since the last sweep), or ``None``.

        Only the default ``"edge"`` re-tune rule reads phases apart; a rule the user gave serves every re-tune.
        """
        if self.settings.retune_suggestion != "edge":
            return None
        if trainer.current_epoch in self.settings.milestones:
            return "milestone"
        return self._changed(trainer)

    def _changed(self, trainer: pl.Trainer) -> str | None:
        """What changed in what is trained since the last sweep, or ``None``."""
        now = self._phase_now(trainer)
        if self._phase is None or now == self._phase:
            return None
        return "accumulation changed" if now[2] != self._phase[2] else "layers unfrozen"

    def _scheduled(self, trainer: pl.Trainer) -> bool:
        optimizer = only_optimizer(trainer, self.config.optimizer_idx)
        return any(getattr(c.scheduler, "optimizer", None) is optimizer for c in trainer.lr_scheduler_configs)

    def _peak(self, trainer: pl.Trainer, optimizer: Any, current: float) -> float | None:
        """The scale of a running decay on the current LR's scale: a scheduler's peak, or the anneal's start.

        ``None`` when the LR is held between re-tunes.
        """
        if self._scheduled(trainer):
            group = optimizer.param_groups[reference_group(optimizer)]
            values = [group.get(key) for key in ("lr", "initial_lr", "max_lr")]
            return max(float(v) for v in values if is_number(v))
        if self._anneal_horizon is not None and self._anneal_factor > 0:
            return current / self._anneal_factor
        return None

    def _measure_distance(self, result: SweepResult, suggested: float | None) -> None:
        """Keep the spacing between ``result``'s stability edge and the LR its full-range read ``suggested``.

        Periodic re-tunes place the LR that far below the edge they measure (see :func:`edge_distance`).
        """
        edge = stability_edge(result.curve, result.diverged)
        self._distance = edge_distance(edge.lr if edge else None, suggested)

    def _spacing(self) -> float:
        """The edge / LR spacing re-tunes keep below an edge they measure: the last full-range read's, or a default."""
        return self._distance if self._distance is not None else edge_distance(None, None)

    def _decide_phase(self, result: SweepResult, current: float, peak: float | None, phase: str) -> RetuneDecision:
        clear = result.confidence >= self.settings.min_confidence
        outcome = result.suggest()
        edge = stability_edge(result.curve, result.diverged)
        spacing = self._spacing()
        decision = phase_retune(
            outcome.lr,
            current,
            peak,
            clear_descent=clear,
            batch_changed=phase == "accumulation changed",
            edge=edge,
            distance=spacing,
        )
        if clear and outcome.lr is not None and edge is not None and not edge.censored:
            # the last full-range read now: its spacing, never below the one its LR was capped at
            self._distance = max(spacing, edge_distance(edge.lr, outcome.lr))
        return decision._replace(reason=f"{phase}: {decision.reason}")

    def _decide(self, result: SweepResult, current: float, peak: float | None, may_raise: bool) -> RetuneDecision:
        """The periodic re-tune's decision; ``may_raise``: whether a decay's scale may go up (the anneal's only)."""
        if self.settings.retune_suggestion == "edge":
            distance = self._spacing()
            if peak is not None:
                return scale_retune(
                    result.curve,
                    current,
                    peak,
                    distance,
                    self.settings.max_change,
                    diverged=result.diverged,
                    up_margin=UP_MARGIN if may_raise else math.inf,
                )
            return edge_retune(result.curve, current, distance, self.settings.max_change, diverged=result.diverged)
        outcome = result.suggest(self.settings.retune_suggestion)
        if outcome.lr is None:
            return RetuneDecision(current, None, f"no suggestion ({outcome.reason}); kept")
        lr, clamped = bound_change(outcome.lr, current, self.settings.max_change)
        return RetuneDecision(lr, outcome.lr, "re-tune suggestion applied", clamped)

    def _attr_lr(self, pl_module: pl.LightningModule, optimizer: Any) -> float:
        """The LR as the user set it: the LR attribute, else the reference group's base LR."""
        if self._attr is not None:
            return get_lr_attr(pl_module, self._attr)
        return base_lrs(optimizer)[reference_group(optimizer)]

    def _base_lr(self, pl_module: pl.LightningModule, optimizer: Any) -> float:
        """The base LR now: the LR attribute where sweeps update it, else the reference group's base LR."""
        if self._attr is not None and self.settings.update_attr:
            return get_lr_attr(pl_module, self._attr)
        return base_lrs(optimizer)[reference_group(optimizer)]

    def _apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule, old: float, new: float) -> None:
        schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
        attr = self._attr if self.settings.update_attr else None
        apply_lr(
            pl_module,
            only_optimizer(trainer, self.config.optimizer_idx),
            schedulers,
            old,
            new,
            attr,
            trainer.callbacks,  # type: ignore[attr-defined]
        )

    def _record(
        self,
        trainer: pl.Trainer,
        kind: Literal["fit_start", "retune"],
        result: SweepResult,
        previous: float,
        suggested: float | None,
        applied: float | None,
        reason: str,
    ) -> None:
        base = self._base_lr(trainer.lightning_module, only_optimizer(trainer, self.config.optimizer_idx))
        record = SweepRecord(
            kind, trainer.current_epoch, trainer.global_step, result, previous, suggested, applied, reason, base
        )
        self._history.append(record)
        if trainer.is_global_zero:
            self._returned.send((self._history, self._distance))  # home from a ddp_spawn worker; no-op otherwise
        rank_zero_info(summary_line(record))
        changed = kind == "fit_start" or (applied is not None and applied != previous)
        report_to_loggers(trainer, record, self._attr, curves=self.settings.log_curves, hparams=changed)
