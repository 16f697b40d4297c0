"""Where a sweep shows up after it ran: the trainer's loggers (metrics, hparams, figure, files) and a summary line.

Everything here writes from global rank 0 only; the other ranks run the same sweep silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_lrsweep.compat import attached_trainer, logs_hparams
from lightning_lrsweep.result import rule_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from lightning_lrsweep.history import SweepRecord

METRIC_PREFIX = "lr_sweep"


def summary_line(record: SweepRecord) -> str:
    """One line per sweep: where it ran, steps run, why it stopped, suggested and applied LR.

    Examples:
        ``LRSweep fit_start sweep at epoch 0: 61 steps, stopped by diverged; suggested 0.0312, LR 0.001 -> 0.0312
        (fit-start suggestion applied).``
    """
    suggested = f"{record.suggested_lr:.3g}" if record.suggested_lr is not None else "none"
    applied = f"{record.applied_lr:.3g}" if record.applied_lr is not None else "unchanged"
    return (
        f"LRSweep {record.kind} sweep at epoch {record.epoch}: {len(record.result.lrs)} steps, stopped by "
        f"{record.result.stop_reason}; suggested {suggested}, LR {record.previous_lr:.3g} -> {applied} "
        f"({record.reason})."
    )


# -- loggers ---------------------------------------------------------------------------------------


def hparams_with_lr(pl_module: pl.LightningModule, attr: str | None, lr: float) -> dict[str, Any] | None:
    """The module's (and datamodule's) initial hparams, as Lightning logs them, with the LR attribute set to ``lr``.

    ``None`` when neither logs hparams (``save_hyperparameters(logger=False)``) or the trainer does not
    (``enable_autolog_hparams=False``).
    """
    trainer = attached_trainer(pl_module)
    datamodule = getattr(trainer, "datamodule", None)
    module_logs = logs_hparams(pl_module)
    data_logs = datamodule is not None and logs_hparams(datamodule)
    if not getattr(trainer, "enable_autolog_hparams", True) or not (module_logs or data_logs):
        return None
    params: dict[str, Any] = {}
    if module_logs:
        params.update(pl_module.hparams_initial)
    if data_logs and datamodule is not None:
        params.update(datamodule.hparams_initial)
    params.pop("_class_path", None)
    params[attr or "lr"] = lr
    return params


def current_lr(record: SweepRecord) -> float:
    """The optimizer's LR right after the sweep (a scheduler may since have moved it)."""
    return record.applied_lr if record.applied_lr is not None else record.previous_lr


def marked_lr(record: SweepRecord) -> tuple[float, str]:
    """The LR a sweep's plots mark, and its label: the LR training continues with, and whether it was applied.

    One LR per picture: at fit start the applied LR is the suggestion, labelled with its rule (``"applied LR
    (valley suggestion)"``), or the kept LR when there was none; a re-tune's own suggestion is not what its
    rule applied, so it marks ``"applied LR"`` or ``"kept LR"``.
    """
    moved = record.applied_lr is not None and record.applied_lr != record.previous_lr
    if record.kind != "retune":
        if record.applied_lr is None:
            return record.previous_lr, "kept LR (no suggestion)"
        return record.applied_lr, f"applied LR ({rule_label(record.result.method)} suggestion)"
    return current_lr(record), "applied LR" if moved else "kept LR"


def log_hparams(trainer: pl.Trainer, attr: str | None, lr: float) -> None:
    """Re-log the hparams to every logger with the LR attribute at ``lr``, so ``hparams.yaml`` has the tuned LR."""
    if not trainer.is_global_zero or not trainer.loggers:
        return
    params = hparams_with_lr(trainer.lightning_module, attr, lr)
    if params is None:
        return
    for logger in trainer.loggers:
        logger.log_hyperparams(params)
        logger.save()
        if isinstance(logger, TensorBoardLogger) and Path(logger.log_dir).is_dir():
            # its save() writes hparams.yaml only once: rewrite it with the current LR
            save_hparams_to_yaml(Path(logger.log_dir) / logger.NAME_HPARAMS_FILE, logger.hparams)


def report_to_loggers(
    trainer: pl.Trainer, record: SweepRecord, attr: str | None, curves: bool = True, hparams: bool = True
) -> None:
    """Send one sweep to every logger: metrics at the current global step, figure, curve files and hparams.

    Each logger gets ``lr_sweep/suggested_lr`` (when there was a suggestion) and ``lr_sweep/applied_lr``.
    With ``curves``, a logger whose ``experiment`` has ``add_figure`` (TensorBoard) gets the loss-vs-LR
    figure as ``lr_sweep/curve``, and a logger with a ``log_dir`` gets ``lr_sweep/epoch=N.csv`` and ``.png``
    (both marked as :func:`marked_lr` says; the matplotlib backend and pyplot's figures are left alone).
    With ``hparams``, the hparams are logged again with the LR attribute at the record's ``base_lr`` (what the
    module holds; under a scheduler ``applied_lr`` is the scheduled LR, which ``configure_optimizers`` never sees).
    """
    if not trainer.is_global_zero or not trainer.loggers:
        return
    metrics = {f"{METRIC_PREFIX}/applied_lr": current_lr(record)}
    if record.suggested_lr is not None:
        metrics[f"{METRIC_PREFIX}/suggested_lr"] = record.suggested_lr
    written: set[Path] = set()
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)
        if not curves:
            continue
        add_figure = getattr(getattr(logger, "experiment", None), "add_figure", None)
        if callable(add_figure):
            add_figure(f"{METRIC_PREFIX}/curve", sweep_figure(record), global_step=trainer.global_step)
        log_dir = getattr(logger, "log_dir", None)
        if log_dir is not None and Path(log_dir) / METRIC_PREFIX not in written:
            folder = Path(log_dir) / METRIC_PREFIX
            lr, label = marked_lr(record)
            record.result.save(folder, stem=f"epoch={record.epoch}", mark=lr, mark_label=label)
            written.add(folder)
    if hparams:
        log_hparams(trainer, attr, record.base_lr)


def sweep_figure(record: SweepRecord) -> Figure:
    """One sweep's loss-vs-LR plot, titled and marked as :func:`marked_lr` says, on a plain ``Figure`` (no pyplot)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    lr, label = marked_lr(record)
    record.result.plot(ax=ax, mark=lr, mark_label=label)
    ax.set_title(f"LR sweep at epoch {record.epoch} ({record.kind})")
    fig.tight_layout()
    return fig
