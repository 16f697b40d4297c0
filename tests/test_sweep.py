"""The sweep engine on a live trainer: what it records, when it stops, what it restores."""

import math

import pytest
import torch
from lightning.pytorch import Callback
from models import Classifier, assert_same_state, loader, state, trainer

from lightning_lrsweep import LRSweep, LRSweepTuner


class RaisesAtCall(Classifier):
    """Raises from ``training_step`` on its n-th call."""

    def __init__(self, n):
        super().__init__(optimizer="adam")
        self.n, self.calls = n, 0

    def training_step(self, batch, batch_idx):
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("boom")
        return super().training_step(batch, batch_idx)


def test_an_exception_mid_sweep_restores_everything_and_says_where():
    model = RaisesAtCall(n=8)
    t = trainer(max_epochs=2, callbacks=[LRSweep(num_steps=20, every_n_epochs=1, retune_num_steps=10)])
    before = state(model)
    with pytest.raises(RuntimeError, match="boom") as info:
        t.fit(model, loader())
    assert_same_state(before, state(model))
    assert t.optimizers[0].state == {}  # Adam's moments from the 7 sweep steps are gone
    assert t.optimizers[0].param_groups[0]["lr"] == 0.05
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "LR sweep at epoch 0, step 7" in notes


def test_an_exception_in_a_retune_restores_the_trained_state():
    model = RaisesAtCall(n=8 + 30 + 5)  # fit start (30 steps), one epoch of 8 batches, then 5 re-tune steps

    class Capture(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            self.weights = state(pl_module)
            self.moments = {k: v["exp_avg"].clone() for k, v in enumerate(trainer.optimizers[0].state.values())}

    capture = Capture()
    sweep = LRSweep(num_steps=30, max_lr=1e-2, early_stop_threshold=None, every_n_epochs=1, retune_num_steps=20)
    t = trainer(max_epochs=2, callbacks=[capture, sweep])
    with pytest.raises(RuntimeError, match="boom") as info:
        t.fit(model, loader())
    assert_same_state(capture.weights, state(model))
    moments = {k: v["exp_avg"] for k, v in enumerate(t.optimizers[0].state.values())}
    assert all(torch.equal(moments[k], capture.moments[k]) for k in moments)
    assert "LR sweep at epoch 1, step 4" in " ".join(info.value.__notes__)


class NaNFromStart(Classifier):
    def training_step(self, batch, batch_idx):
        return super().training_step(batch, batch_idx) * float("nan")


def test_nan_from_the_first_step_stops_with_no_suggestion():
    result = LRSweepTuner(trainer()).sweep(NaNFromStart(), loader(), num_steps=20)
    assert result.stop_reason == "non_finite"
    assert len(result.lrs) == 1
    assert result.suggestion() is None


def test_divergence_stops_the_sweep():
    result = LRSweepTuner(trainer()).sweep(Classifier(), loader(), min_lr=1e-4, max_lr=1e4, num_steps=100)
    assert result.stop_reason in ("diverged", "non_finite")
    assert len(result.lrs) < 100
    assert result.suggestion() is not None


def test_no_divergence_runs_to_num_steps():
    result = LRSweepTuner(trainer()).sweep(
        Classifier(), loader(), min_lr=1e-6, max_lr=1e-3, num_steps=25, early_stop_threshold=None
    )
    assert result.stop_reason == "num_steps" and len(result.lrs) == 25


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


class Manual(Classifier):
    def __init__(self, step=True):
        super().__init__()
        self.automatic_optimization = False
        self.do_step = step

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        opt.zero_grad()
        loss = super().training_step(batch, batch_idx)
        self.manual_backward(loss)
        if self.do_step:
            opt.step()
        return loss


def test_manual_optimization_is_swept_and_counts_no_training_step():
    model = Manual()
    t = trainer()
    result = LRSweepTuner(t).sweep(model, loader(), num_steps=30)
    assert len(result.lrs) >= 20 and result.suggestion() is not None
    assert t.global_step == 0


def test_manual_optimization_that_never_steps_is_refused():
    model = Manual(step=False)
    before = state(model)
    with pytest.raises(ValueError, match="did not call `.step\\(\\)`"):
        LRSweepTuner(trainer()).sweep(model, loader(), num_steps=10)
    assert_same_state(before, state(model))


def test_param_group_ratio_is_kept_during_the_sweep():
    seen = []

    class TwoGroups(Classifier):
        def configure_optimizers(self):
            body, head = self.net[:-1].parameters(), self.net[-1].parameters()
            return torch.optim.SGD([{"params": body, "lr": 0.01}, {"params": head, "lr": 0.1}])

        def training_step(self, batch, batch_idx):
            groups = self.trainer.optimizers[0].param_groups
            seen.append((groups[0]["lr"], groups[1]["lr"]))
            return super().training_step(batch, batch_idx)

    result = LRSweepTuner(trainer()).sweep(TwoGroups(), loader(), num_steps=10, early_stop_threshold=None)
    assert all(math.isclose(body / head, 0.1) for body, head in seen)
    assert [head for _, head in seen] == pytest.approx(list(result.lrs))
