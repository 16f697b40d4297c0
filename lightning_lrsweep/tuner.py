"""LRSweepTuner: one LR range test on demand, outside training (like Lightning's ``Tuner.lr_find``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers.logger import DummyLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lightning_lrsweep.compat import allow_another_fit, end_fit_quietly, forget_train_loaders, is_spawn_launcher
from lightning_lrsweep.config import SweepConfig, document_settings, from_arguments, reject_unknown
from lightning_lrsweep.distributed import SpawnReturn, check_strategy
from lightning_lrsweep.progress import run_sweep_shown
from lightning_lrsweep.result import SuggestionRule, SweepResult, rule_label
from lightning_lrsweep.snapshot import RNGState


class _SweepOnce(Callback):
    """Runs one sweep at fit start, keeps the result, and ends the fit before any training step."""

    def __init__(self, config: SweepConfig) -> None:
        self.config = config
        self.result: SweepResult | None = None
        self.returned = SpawnReturn()

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.result = run_sweep_shown(trainer, self.config, "LR sweep", fit_start=True)
        if is_spawn_launcher(trainer.strategy.launcher):
            # a ddp_spawn worker: an exception would kill it, so send the result home and let fit end untrained
            if trainer.is_global_zero:
                self.returned.send(self.result)
            trainer.limit_train_batches = 0
            trainer.num_sanity_val_steps = 0
            return
        end_fit_quietly()


@contextmanager
def _without_loggers(trainer: pl.Trainer) -> Iterator[None]:
    """Swap the loggers for a ``DummyLogger`` (as Lightning's ``lr_find`` does), restore them after.

    A sweep trains nothing, so it should log nothing: with the user's logger, ``fit`` would create a
    ``version_N`` folder (events file, empty ``hparams.yaml``). Checkpoint callbacks resolve their folder
    from the logger in ``setup``; they get back the one they had, so the next ``fit`` resolves it afresh.
    """
    loggers = trainer.loggers
    dirpaths = [(c, c.dirpath) for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
    trainer.logger = DummyLogger() if loggers else None
    try:
        yield
    finally:
        trainer.loggers = loggers
        for callback, dirpath in dirpaths:
            callback.dirpath = dirpath


def _announce(result: SweepResult) -> None:
    """Say in one line what the sweep found, as Lightning's ``lr_find`` does; no suggestion: a warning with its reason.

    For example: ``LRSweepTuner: suggested LR 0.0312 (valley) from 61 steps over LR 1e-07 to 0.82, stopped by
    diverged; not applied (the model is unchanged).``
    """
    outcome = result.suggest()
    if outcome.lr is None:
        rank_zero_warn(f"LRSweepTuner found no LR suggestion: {outcome.reason} ({result.note}).")
        return
    rank_zero_info(
        f"LRSweepTuner: suggested LR {outcome.lr:.3g} ({rule_label(result.method)}) from {len(result.lrs)} steps "
        f"over LR {result.lrs[0]:.3g} to {result.lrs[-1]:.3g}, stopped by {result.stop_reason}; not applied (the "
        "model is unchanged)."
    )


class LRSweepTuner:
    """Run one LR range test on a model and return the curve, without training it.

    The model, optimizer and RNG states are left exactly as they were; the suggestion is not applied, and one line
    says what was found (a warning gives the reason when there is no suggestion). The global
    RNGs are captured before the call and restored after it, also when it raises: building the data (a
    ``random_split`` in ``setup()``, a shuffled loader) draws from them before the sweep's own snapshot, and a
    later seeded ``fit`` must not see those draws. The trainer's loggers are set aside while it runs, so it logs
    nothing (no ``lightning_logs/version_N``).

    Args:
        trainer: the trainer whose strategy, precision and accumulation settings the sweep uses.

    Examples:
        >>> result = LRSweepTuner(Trainer(accelerator="cpu")).sweep(model, datamodule=dm)  # doctest: +SKIP
        >>> result.suggestion(), result.to_pandas().head()  # doctest: +SKIP
    """

    def __init__(self, trainer: pl.Trainer) -> None:
        self.trainer = trainer

    @document_settings(SweepConfig)  # appends each setting's entry to `Args:`
    def sweep(  # noqa: D417 (the settings are documented by `document_settings`)
        self,
        model: pl.LightningModule,
        train_dataloaders: Any = None,
        datamodule: pl.LightningDataModule | None = None,
        val_dataloaders: Any = None,
        *,
        min_lr: float = 1e-7,
        max_lr: float = 10.0,
        num_steps: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
        smoothing: float = 0.98,
        suggestion: SuggestionRule = "valley",
        snapshot_device: str | None = None,
        optimizer_idx: int | None = None,
        val_batches: int = 0,
        **unknown: Any,
    ) -> SweepResult:
        """Sweep the LR of ``model`` once on the given data and return the :class:`SweepResult`.

        Args:
            model: the module to sweep; its ``configure_optimizers`` provides the optimizer.
            train_dataloaders: training data (a DataLoader, or a collection of them), if no datamodule.
            datamodule: a ``LightningDataModule`` providing ``train_dataloader``.
            val_dataloaders: validation data for validation-loss mode (``val_batches``), if no datamodule.

        Raises:
            TypeError: an unknown keyword argument (the message lists the sweep settings), before any step.
            ValueError: an argument out of range, a model the sweep cannot run on, or `FSDPStrategy` or
                DeepSpeed (shard with ``ModelParallelStrategy`` and ``fully_shard`` instead).
        """
        reject_unknown("LRSweepTuner.sweep()", unknown, SweepConfig)
        config = from_arguments(SweepConfig, locals())
        trainer = self.trainer
        check_strategy(trainer)
        probe = _SweepOnce(config)
        trainer.callbacks.append(probe)  # type: ignore[attr-defined]
        rng = RNGState.capture()
        try:
            with _without_loggers(trainer):
                trainer.fit(
                    model, train_dataloaders=train_dataloaders, val_dataloaders=val_dataloaders, datamodule=datamodule
                )
        finally:
            rng.restore()
            trainer.callbacks.remove(probe)  # type: ignore[attr-defined]
            forget_train_loaders(trainer)  # the next fit builds its own loaders
        launcher = trainer.strategy.launcher
        if is_spawn_launcher(launcher):
            probe.result = probe.returned.receive()
            allow_another_fit(launcher)  # nothing was trained: the next `fit` on this trainer may spawn again
        if probe.result is None:
            raise RuntimeError("The LR sweep did not run: the trainer ended `fit` before `on_fit_start`.")
        _announce(probe.result)
        return probe.result
