"""The sweep engine on a live trainer: what it records, when it stops, which hooks it runs.

Faults (exceptions, interrupts, NaN) are in test_faults.py; data, precision and optimizer set-ups in test_compat.py.
"""

import pytest
from lightning.pytorch import Callback
from models import Classifier, Manual, assert_same_state, loader, state, trainer

from lightning_lrsweep import LRSweepTuner


def test_divergence_stops_the_sweep():
    result = LRSweepTuner(trainer()).sweep(Classifier(), loader(), min_lr=1e-4, max_lr=1e4, num_steps=100)
    assert result.stop_reason in ("diverged", "non_finite")
    assert len(result.lrs) < 100
    assert result.suggestion() is not None


def test_a_loss_that_never_diverges_runs_to_num_steps_and_says_so():
    result = LRSweepTuner(trainer()).sweep(
        Classifier(), loader(n=64), min_lr=1e-6, max_lr=1e-4, num_steps=25, early_stop_threshold=4.0
    )
    assert result.stop_reason == "num_steps" and len(result.lrs) == 25
    assert "no divergence seen up to LR 0.0001 after 25 steps" in result.note
    assert result.suggest().lr is not None  # an answer from the points available


class HookSpy(Callback):
    def __init__(self):
        self.calls = 0

    def on_before_backward(self, *args):
        self.calls += 1

    def on_before_optimizer_step(self, *args):
        self.calls += 1


def test_other_callbacks_do_not_see_sweep_steps():
    spy = HookSpy()
    LRSweepTuner(trainer(callbacks=[spy])).sweep(Classifier(), loader(), num_steps=10)
    assert spy.calls == 0


class ClipSpy(Classifier):
    def __init__(self):
        super().__init__()
        self.clip_calls = 0

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        self.clip_calls += 1
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)


def test_gradient_clipping_applies_during_a_sweep():
    model = ClipSpy()
    LRSweepTuner(trainer(gradient_clip_val=0.5)).sweep(model, loader(), num_steps=10, early_stop_threshold=None)
    assert model.clip_calls == 10


class LossRecorder(Classifier):
    def __init__(self):
        super().__init__()
        self.seen = []

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.seen.append(float(loss.detach()))
        return loss


def test_accumulation_records_the_mean_of_the_micro_batches_per_optimizer_step():
    model = LossRecorder()
    t = trainer(accumulate_grad_batches=4)
    result = LRSweepTuner(t).sweep(model, loader(), num_steps=6, early_stop_threshold=None)
    assert len(model.seen) == 24 and len(result.lrs) == 6
    for k in range(6):
        assert result.losses[k] == pytest.approx(sum(model.seen[4 * k : 4 * k + 4]) / 4)


def test_manual_optimization_that_never_steps_is_refused():
    model = Manual(step=False)
    before = state(model)
    with pytest.raises(ValueError, match="did not call `.step\\(\\)`"):
        LRSweepTuner(trainer()).sweep(model, loader(), num_steps=10)
    assert_same_state(before, state(model))
