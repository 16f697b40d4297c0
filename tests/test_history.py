"""history_frame and plot_history over a real run's sweeps."""

import matplotlib

matplotlib.use("Agg")

from functools import partial

import numpy as np
import pytest
from matplotlib.figure import Figure
from models import Classifier, fit, loader, trainer

from lightning_lrsweep import LRSweep


@pytest.fixture(scope="module")
def swept():
    callback = LRSweep(every_n_epochs=1, num_steps=15, retune_num_steps=10)
    fit(partial(Classifier, lr=0.01), [callback], seed=2, epochs=3, data=loader(n=96))
    return callback


def test_history_frame_one_row_per_sweep(swept):
    frame = swept.history_frame()
    assert list(frame["epoch"]) == [0, 1, 2]
    assert list(frame["kind"]) == ["fit_start", "retune", "retune"]
    assert list(frame["steps"]) == [len(r.result.lrs) for r in swept.history]
    assert np.allclose(frame["applied_lr"], [r.applied_lr for r in swept.history])
    assert {"previous_lr", "suggested_lr", "base_lr", "stop_reason", "reason", "global_step", "seconds"} <= set(
        frame.columns
    )
    assert list(frame["base_lr"]) == [r.base_lr for r in swept.history]


def test_plot_history_overlays_every_curve_and_the_lr_per_epoch(swept, tmp_path):
    fig = swept.plot_history(tmp_path / "history.png")
    curves, per_epoch = fig.axes[:2]
    assert len(curves.lines) == 1 + 2 * len(swept.history)  # the start level, a curve and an LR marker per sweep
    assert per_epoch.get_ylabel() == "learning rate"
    assert (tmp_path / "history.png").stat().st_size > 1000


def test_every_curve_is_drawn_relative_to_its_own_starting_loss(swept):
    curves = swept.plot_history(fig=Figure()).axes[0]
    drawn = [line for line in curves.lines if len(line.get_xdata()) > 2]
    assert len(drawn) == len(swept.history)
    starts = [r.result.curve.losses[:3].mean() for r in swept.history]
    assert starts[-1] < 0.8 * starts[0]  # training lowered the loss: on one absolute axis the re-tunes lie low
    for line, record in zip(drawn, swept.history, strict=True):
        ys = np.asarray(line.get_ydata())
        assert np.median(ys[: max(3, len(ys) // 10)]) == pytest.approx(1.0, abs=0.1)  # each starts at 1
        np.testing.assert_allclose(ys * record.result.curve.smoothed[0] / ys[0], record.result.curve.smoothed)
    low, high = curves.get_ylim()
    assert curves.get_yscale() == "log" and low < 1 < high


def test_the_epoch_axis_spans_the_run_with_a_single_sweep():
    callback = LRSweep(num_steps=15)
    trainer(max_epochs=3, callbacks=[callback]).fit(Classifier(lr=0.01), loader(n=96))
    per_epoch = callback.plot_history(fig=Figure()).axes[1]
    assert per_epoch.get_xlim()[1] >= 3
    (step,) = [line for line in per_epoch.lines if line.get_drawstyle() == "steps-post"]
    assert list(step.get_xdata()) == [0, 3]


def test_plot_history_of_nothing_says_so():
    with pytest.raises(ValueError, match="history is empty"):
        LRSweep().plot_history()


def test_plot_history_on_a_plain_figure_leaves_pyplot_alone(swept, tmp_path):
    import matplotlib.pyplot as plt

    open_before, fig = plt.get_fignums(), Figure(figsize=(11, 4))
    assert swept.plot_history(tmp_path / "history.png", fig=fig) is fig
    assert len(fig.axes) == 3 and plt.get_fignums() == open_before  # curves, LR per epoch, colour bar
    assert (tmp_path / "history.png").stat().st_size > 1000


class NegativeLoss(Classifier):
    """A loss below zero, as a Gaussian negative log-likelihood often is: cross-entropy minus 5."""

    def training_step(self, batch, batch_idx):
        return super().training_step(batch, batch_idx) - 5.0


def test_a_negative_loss_is_drawn_relative_to_its_start_too():
    callback = LRSweep(every_n_epochs=1, num_steps=15, retune_num_steps=10)
    fit(partial(NegativeLoss, lr=0.01), [callback], seed=2, epochs=2, data=loader(n=96))
    assert all(r.result.curve.smoothed.max() < 0 for r in callback.history)
    curves = callback.plot_history(fig=Figure()).axes[0]
    drawn = [line for line in curves.lines if len(line.get_xdata()) > 2]
    assert len(drawn) == len(callback.history)  # none left out for a start below zero
    for line, record in zip(drawn, callback.history, strict=True):
        smoothed = record.result.curve.smoothed
        ys = np.asarray(line.get_ydata())
        assert np.median(ys[: max(3, len(ys) // 10)]) == pytest.approx(1.0, abs=0.1)  # each starts at 1
        assert np.all(np.diff(ys) * np.diff(smoothed) >= 0)  # and rises where its loss rises


def test_a_record_keeps_its_validation_mode_and_race_through_a_checkpoint(tmp_path):
    import torch

    from lightning_lrsweep.history import SweepRecord, record_from_state, record_state
    from lightning_lrsweep.result import RaceResult, SweepResult

    lrs = np.geomspace(1e-4, 1.0, 20)
    losses = 1 / (1 + 50 * lrs) + (lrs > 0.3) * 5
    result = SweepResult(lrs, losses, losses, val_batches=3)
    result.race = RaceResult(
        lrs=[np.float64(1e-3), 3e-3], scores=[0.5, float("inf")], steps=8, judged_on="validation loss"
    )
    record = SweepRecord("fit_start", 0, 0, result, 1e-3, 3e-3, 1e-3, "race winner", 1e-3)
    torch.save(record_state(record), tmp_path / "state.pt")
    loaded = record_from_state(torch.load(tmp_path / "state.pt", weights_only=True), "valley").result
    assert loaded.val_batches == 3
    assert loaded.race == RaceResult(lrs=[1e-3, 3e-3], scores=[0.5, float("inf")], steps=8, judged_on="validation loss")
    assert loaded.race.winner == 1e-3
