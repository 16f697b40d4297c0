"""Every private attribute of Lightning, torch and torchmetrics that the package reads or writes, in one place.

Each function names what it does for the sweep and says which versions it was checked on: Lightning 2.4.0 and
2.6.6, torch 2.13 and torchmetrics 1.9 ("checked" means the attribute exists there and means what the comment
says). No other module touches a private attribute of those libraries; when a release renames one, this module
is the one to change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from lightning.pytorch.utilities.exceptions import _TunerExitException

if TYPE_CHECKING:
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader

# -- trainer and launcher ----------------------------------------------------------------------------


def is_spawn_launcher(launcher: Any) -> bool:
    """Whether ``fit`` runs in processes this one started (``ddp_spawn``, ``ddp_notebook``), which return no objects.

    Checked on Lightning 2.4.0 and 2.6.6: ``_MultiProcessingLauncher`` launches both.
    """
    return isinstance(launcher, _MultiProcessingLauncher)


def allow_another_fit(launcher: Any) -> None:
    """Let a spawn launcher launch ``fit`` again after a fit that trained nothing.

    Checked on Lightning 2.4.0 and 2.6.6: ``_MultiProcessingLauncher._already_fit`` refuses a second spawned fit
    (the weights would not come back twice).
    """
    launcher._already_fit = False


def end_fit_quietly() -> NoReturn:
    """End the running ``fit`` before any training step, as Lightning's own tuner does after ``lr_find``.

    Checked on Lightning 2.4.0 and 2.6.6: ``_TunerExitException`` ends ``fit`` without an error and runs the
    teardown hooks.
    """
    raise _TunerExitException()


def forget_train_loaders(trainer: pl.Trainer) -> None:
    """Drop the train loaders the fit loop built, so the next ``fit`` builds its own.

    Checked on Lightning 2.4.0 and 2.6.6: ``fit_loop._combined_loader`` holds them; ``setup_data`` reuses it while set.
    """
    trainer.fit_loop._combined_loader = None


def declares_val_loaders(trainer: pl.Trainer) -> bool:
    """Whether ``fit`` was given validation data (``val_dataloaders``, or a ``val_dataloader`` hook).

    Checked on Lightning 2.4.0 and 2.6.6: ``val_loop._data_source`` is a ``_DataLoaderSource`` with ``is_defined()``.
    """
    return trainer.fit_loop.epoch_loop.val_loop._data_source.is_defined()


def declared_val_loaders(trainer: pl.Trainer) -> Any | None:
    """The validation loader(s) ``fit`` was given, built from their source, or ``None``.

    Lightning builds its own only for modules that define ``validation_step``; this reads the source directly.
    Checked on Lightning 2.4.0 and 2.6.6: ``_DataLoaderSource.dataloader()`` calls the hook or returns the loaders.
    """
    source = trainer.fit_loop.epoch_loop.val_loop._data_source
    return source.dataloader() if source.is_defined() else None


# -- module and optimizer ----------------------------------------------------------------------------


def before_batch_transfer(module: pl.LightningModule, batch: Any) -> Any:
    """Run the ``on_before_batch_transfer`` hooks (the datamodule's, then the module's) as the training loop does.

    Checked on Lightning 2.4.0 and 2.6.6: ``LightningModule._on_before_batch_transfer`` is what the loop calls.
    """
    return module._on_before_batch_transfer(batch, dataloader_idx=0)


def optimizer_step_hooks(strategy: Any) -> list[tuple[Any, str]]:
    """The ``(object, attribute)`` pairs of the hooks a manual ``optimizer.step()`` calls around the step.

    They advance the fit loop's step counters and profiler; a sweep step must not. Checked on Lightning 2.4.0 and
    2.6.6: ``strategy._lightning_optimizers`` wraps each optimizer, and ``LightningOptimizer.step`` calls its
    ``_on_before_step`` and ``_on_after_step``.
    """
    return [
        (optimizer, name)
        for optimizer in getattr(strategy, "_lightning_optimizers", [])
        for name in ("_on_before_step", "_on_after_step")
    ]


def callback_state_key(callback: pl.Callback, **settings: Any) -> str:
    """The key a callback's checkpoint state is saved under: its class's qualified name, then ``repr(settings)``.

    Checked on Lightning 2.4.0 and 2.6.6: ``Callback._generate_state_key`` formats it so. Checkpoints are found by
    this exact string, so a change here would lose the state of earlier checkpoints.
    """
    return callback._generate_state_key(**settings)


def attached_trainer(module: pl.LightningModule) -> pl.Trainer | None:
    """The trainer a module is attached to, or ``None`` (``module.trainer`` raises when there is none).

    Checked on Lightning 2.4.0 and 2.6.6: ``LightningModule._trainer``.
    """
    return module._trainer


def logs_hparams(obj: pl.LightningModule | pl.LightningDataModule) -> bool:
    """Whether the module or datamodule asked for its hparams to be logged (``save_hyperparameters(logger=True)``).

    Checked on Lightning 2.4.0 and 2.6.6: ``HyperparametersMixin._log_hyperparams``.
    """
    return bool(obj._log_hyperparams)


# -- torch -------------------------------------------------------------------------------------------

SCHEDULER_LR_FIELDS = ("base_lrs", "_last_lr", "max_lrs")
"""The list-valued LR fields of torch's LR schedulers (``_last_lr`` is what ``get_last_lr()`` returns).

Checked on torch 2.13.
"""


def inner_schedulers(scheduler: Any) -> list[Any] | None:
    """The schedulers a ``SequentialLR`` or ``ChainedScheduler`` runs, or ``None`` for any other scheduler.

    Checked on torch 2.13: both keep them in ``_schedulers``.
    """
    return getattr(scheduler, "_schedulers", None)


def live_iterator(loader: DataLoader) -> Any:
    """The iterator a ``DataLoader`` with persistent workers keeps and rewinds on every ``iter()`` (or ``None``).

    Checked on torch 2.13: ``DataLoader._iterator``.
    """
    return loader._iterator


def set_live_iterator(loader: DataLoader, iterator: Any) -> None:
    """Make ``iterator`` the one ``loader`` keeps (``None``: the next ``iter()`` starts new workers).

    Checked on torch 2.13: ``DataLoader._iterator``.
    """
    loader._iterator = iterator


def shutdown_workers(iterator: Any) -> None:
    """Stop the worker processes of a multiprocessing loader iterator.

    Checked on torch 2.13: ``_MultiProcessingDataLoaderIter._shutdown_workers``.
    """
    iterator._shutdown_workers()


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A ``DTensor``'s local shard: the live storage (``to_local()`` returns a view through autograd).

    Checked on torch 2.13: ``DTensor._local_tensor``.
    """
    return tensor._local_tensor  # type: ignore[attr-defined]


_METRIC_FIELDS = ("_update_count", "_computed", "_forward_cache", "_is_synced", "_cache")


def metric_state_names(metric: Any) -> list[str]:
    """The attributes that hold a torchmetrics ``Metric``'s accumulated state, so a snapshot can copy them.

    Checked on torchmetrics 1.9: the states registered with ``add_state`` (``_defaults``) and the update count,
    computed value and caches.
    """
    return [*metric._defaults, *(f for f in _METRIC_FIELDS if hasattr(metric, f))]
