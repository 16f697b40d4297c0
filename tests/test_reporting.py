"""Sweeps in the loggers (real CSVLogger and TensorBoardLogger), the progress bar and the summary line."""

import logging
from functools import partial

import pandas as pd
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from models import Classifier, Halving, loader, marks, up_by_half
from models import fit as seeded_fit

from lightning_lrsweep import LRSweep
from lightning_lrsweep.reporting import current_lr, sweep_figure


def fit(callbacks, epochs=2, model=Classifier, **trainer_kwargs):
    return seeded_fit(partial(model, lr=0.01), callbacks, seed=3, epochs=epochs, data=loader(n=128), **trainer_kwargs)


def sweep(**kwargs):
    return LRSweep(every_n_epochs=1, num_steps=15, retune_num_steps=10, **kwargs)


def test_csv_logger_gets_metrics_tuned_hparams_and_curve_files(tmp_path):
    callback = sweep()
    logger = CSVLogger(tmp_path, name="run")
    model, _ = fit([callback], logger=logger)
    log_dir = tmp_path / "run" / "version_0"
    metrics = pd.read_csv(log_dir / "metrics.csv")
    logged = metrics.dropna(subset=["lr_sweep/applied_lr"])
    assert list(logged["step"]) == [r.global_step for r in callback.history] == [0, 4]
    assert list(logged["lr_sweep/applied_lr"]) == pytest.approx([r.applied_lr for r in callback.history])
    assert logged["lr_sweep/suggested_lr"].iloc[0] == pytest.approx(callback.history[0].suggested_lr)
    hparams = yaml.safe_load((log_dir / "hparams.yaml").read_text())
    assert hparams["lr"] == pytest.approx(model.hparams.lr) and hparams["lr"] != 0.01
    for epoch in (0, 1):
        assert len(pd.read_csv(log_dir / "lr_sweep" / f"epoch={epoch}.csv")) == len(callback.history[epoch].result.lrs)
        assert (log_dir / "lr_sweep" / f"epoch={epoch}.png").stat().st_size > 1000


def test_tensorboard_gets_scalars_figure_and_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    callback = sweep()
    logger = TensorBoardLogger(tmp_path, name="tb")
    model, _ = fit([callback], logger=logger)
    log_dir = tmp_path / "tb" / "version_0"
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0}).Reload()
    applied = events.Scalars("lr_sweep/applied_lr")
    assert [e.step for e in applied] == [0, 4]
    assert [e.value for e in applied] == pytest.approx([r.applied_lr for r in callback.history], rel=1e-6)
    assert len(events.Scalars("lr_sweep/suggested_lr")) >= 1
    assert len(events.Images("lr_sweep/curve")) == 2
    assert yaml.safe_load((log_dir / "hparams.yaml").read_text())["lr"] == pytest.approx(model.hparams.lr)
    assert (log_dir / "lr_sweep" / "epoch=1.csv").exists()


def test_logging_curves_keeps_the_users_backend_and_leaves_no_figure_open(tmp_path, svg_backend):
    import matplotlib
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    fit([sweep()], logger=[TensorBoardLogger(tmp_path, name="tb"), CSVLogger(tmp_path, name="csv")])
    assert matplotlib.get_backend() == "svg"
    assert plt.get_fignums() == open_before
    for name in ("tb", "csv"):
        assert (tmp_path / name / "version_0" / "lr_sweep" / "epoch=1.png").stat().st_size > 1000


def fixed(lr):
    return lambda result: lr


@pytest.mark.parametrize(
    ("rules", "label"),
    [({}, "kept LR"), ({"suggestion": fixed(0.05), "retune_suggestion": fixed(0.08)}, "applied LR")],
    ids=["edge_keeps", "callable_moves"],
)
def test_retune_plots_mark_the_lr_the_rule_left_training_at(tmp_path, rules, label):
    callback = sweep(**rules)
    fit([callback], logger=CSVLogger(tmp_path, name="run"))
    start, retune = callback.history
    lr = current_lr(retune)
    assert lr != pytest.approx(retune.result.suggestion())  # the re-tune's own method picks elsewhere on the window
    legend = ["loss", "centred loss (the rules read it)", f"{label} {lr:.2e}"]
    assert marks(sweep_figure(retune).axes[0]) == ([lr], legend)
    xs, labels = marks(sweep_figure(start).axes[0])  # at fit start the suggestion is what was applied
    rule = "<lambda>" if rules else "valley"
    assert xs == [pytest.approx(start.applied_lr)]
    assert labels[-1] == f"applied LR ({rule} suggestion) {start.applied_lr:.2e}"
    saved = tmp_path / "run" / "version_0" / "lr_sweep" / "epoch=1.png"  # the logger's file: marked the same way
    expected = retune.result.save(tmp_path / "expected", stem="epoch=1", mark=lr, mark_label=label)["png"]
    assert saved.read_bytes() == expected.read_bytes()


def test_log_curves_false_logs_metrics_only(tmp_path):
    callback = sweep(log_curves=False)
    fit([callback], epochs=1, logger=CSVLogger(tmp_path, name="run"))
    log_dir = tmp_path / "run" / "version_0"
    assert "lr_sweep/applied_lr" in pd.read_csv(log_dir / "metrics.csv").columns
    assert not (log_dir / "lr_sweep").exists()


def test_summary_line_per_sweep(caplog):
    callback = sweep()
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
        fit([callback])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("LRSweep")]
    assert len(lines) == 2
    assert "fit_start sweep at epoch 0: " in lines[0] and "steps, stopped by" in lines[0]
    assert "suggested" in lines[0] and "->" in lines[0]


def test_tqdm_progress_shows_lr_and_loss(monkeypatch, capsys):
    import tqdm.std

    postfixes = []
    set_postfix_str = tqdm.std.tqdm.set_postfix_str

    def spy(self, s="", refresh=True):
        postfixes.append((self.desc, s))
        return set_postfix_str(self, s, refresh)

    monkeypatch.setattr(tqdm.std.tqdm, "set_postfix_str", spy)
    fit([sweep(), TQDMProgressBar()], epochs=1, enable_progress_bar=True)
    assert "LR sweep (fit start)" in capsys.readouterr().out
    assert len(postfixes) == 15 and postfixes[0][0] == "LR sweep (fit start)"
    assert postfixes[0][1].startswith("lr=1.00e-07, loss=")


def test_rich_progress_shows_lr_and_loss(monkeypatch):
    rich_progress = pytest.importorskip("rich.progress")
    descriptions = []
    update = rich_progress.Progress.update

    def spy(self, task_id, **kwargs):
        descriptions.append(kwargs.get("description") or "")
        return update(self, task_id, **kwargs)

    monkeypatch.setattr(rich_progress.Progress, "update", spy)
    # epoch 0: a Rich progress of its own; epoch 1: a task inside the bar's running live display
    fit([sweep(), RichProgressBar()], epochs=2, enable_progress_bar=True)
    shown = [d for d in descriptions if d.startswith("LR sweep")]
    assert len(shown) == len(set(shown)) > 20 and "lr=" in shown[0] and "loss=" in shown[0]


def test_silent_without_progress_bar(capsys):
    fit([sweep()], epochs=1, enable_progress_bar=False)
    assert "LR sweep" not in capsys.readouterr().out


def test_a_retune_that_moves_the_lr_updates_the_logged_hparams(tmp_path):
    callback = sweep(suggestion=lambda r: 0.05, retune_suggestion=lambda r: 0.08, log_curves=False)
    loggers = [CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")]
    model, _ = fit([callback], logger=loggers)
    assert model.hparams.lr == pytest.approx(0.08)
    for name in ("csv", "tb"):
        assert yaml.safe_load((tmp_path / name / "version_0" / "hparams.yaml").read_text())["lr"] == pytest.approx(0.08)


def test_hparams_kept_out_of_the_logger_stay_out(tmp_path):
    class Quiet(Classifier):
        def __init__(self, lr=0.01):
            super().__init__(lr=lr)
            self.save_hyperparameters(logger=False)

    fit([sweep(log_curves=False)], epochs=1, model=Quiet, logger=CSVLogger(tmp_path, name="run"))
    hparams = tmp_path / "run" / "version_0" / "hparams.yaml"
    assert not hparams.exists() or not yaml.safe_load(hparams.read_text())


def test_under_a_scheduler_logged_hparams_module_and_checkpoint_hold_the_base_lr(tmp_path):
    up = sweep(suggestion=lambda r: 0.09, retune_suggestion=up_by_half, log_curves=False)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    logger = CSVLogger(tmp_path, name="run")
    model, t = fit([up, checkpoint], epochs=3, model=Halving, logger=logger, enable_checkpointing=True)
    applied = [r.applied_lr for r in up.history]
    assert applied == pytest.approx([0.09, 0.09 * 0.5 * 1.5, 0.09 * 1.5**2 * 0.5**2])  # the scheduled LRs
    base = 0.09 * 1.5**2  # each re-tune scales the base LR by the same 1.5
    assert model.hparams.lr == pytest.approx(base)
    assert yaml.safe_load((tmp_path / "run" / "version_0" / "hparams.yaml").read_text())["lr"] == pytest.approx(base)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert saved["hyper_parameters"]["lr"] == pytest.approx(base)
    assert t.optimizers[0].param_groups[0]["initial_lr"] == pytest.approx(base)  # the scheduler's base too
    assert [r.base_lr for r in up.history] == pytest.approx([0.09, 0.09 * 1.5, base])
