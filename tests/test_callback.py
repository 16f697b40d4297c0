"""LRSweep in a real fit: no trace, applying, re-tuning, refusing bad input."""

import inspect
from functools import partial

import numpy as np
import pytest
import torch
from models import (
    Classifier,
    TwoOptimizers,
    assert_same_state,
    case_id,
    loader,
    state,
    sweep_by_fit,
    sweep_by_tuner,
    trainer,
)
from models import fit as seeded_fit

from lightning_lrsweep import LRSweep
from lightning_lrsweep.config import CallbackConfig, SweepConfig, settings_of
from lightning_lrsweep.suggestion_rules import METHODS


def fit(callbacks, lr=0.05, epochs=3, optimizer="sgd", **kwargs):
    return seeded_fit(partial(Classifier, lr=lr, optimizer=optimizer), callbacks, seed=7, epochs=epochs, **kwargs)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_sweeps_leave_no_trace_bit_for_bit(optimizer):
    plain, plain_trainer = fit([], optimizer=optimizer)
    sweep = LRSweep(every_n_epochs=1, suggestion=lambda r: 0.05, num_steps=30)
    swept, swept_trainer = fit([sweep], optimizer=optimizer)
    assert len(sweep.history) == 3
    assert_same_state(state(plain), state(swept))
    assert swept_trainer.global_step == plain_trainer.global_step
    assert swept_trainer.current_epoch == plain_trainer.current_epoch
    # metrics that training_step logs during a sweep reach no aggregate
    logged, plain_logged = swept_trainer.callback_metrics, plain_trainer.callback_metrics
    assert torch.equal(logged["train_loss_epoch"], plain_logged["train_loss_epoch"])


def test_applied_lr_trains_exactly_like_a_plain_fit_at_that_lr():
    plain, _ = fit([], lr=0.05)
    sweep = LRSweep(every_n_epochs=1, suggestion=lambda r: 0.05, num_steps=20)
    swept, t = fit([sweep], lr=0.01)
    assert swept.hparams.lr == 0.05
    assert t.optimizers[0].param_groups[0]["lr"] == 0.05
    assert_same_state(state(plain), state(swept))


def test_loader_generator_is_restored():
    def data():
        return loader(generator=torch.Generator().manual_seed(3))

    plain, _ = fit([], data=data())
    swept, _ = fit([LRSweep(every_n_epochs=1, suggestion=lambda r: 0.05, num_steps=20)], data=data())
    assert_same_state(state(plain), state(swept))


def test_five_epochs_five_sweeps_each_with_points_and_applied():
    sweep = LRSweep(every_n_epochs=1, num_steps=40, anneal=False)  # the LR is held between re-tunes
    model, t = fit([sweep], lr=0.01, epochs=5)
    assert [r.epoch for r in sweep.history] == [0, 1, 2, 3, 4]
    assert [r.kind for r in sweep.history] == ["fit_start"] + ["retune"] * 4
    assert all(len(r.result.lrs) >= 20 for r in sweep.history)
    first = sweep.history[0]
    assert first.applied_lr is not None and first.applied_lr != 0.01
    for before, after in zip(sweep.history, sweep.history[1:], strict=False):
        assert after.previous_lr == pytest.approx(before.applied_lr)
        assert 0.5 <= after.applied_lr / after.previous_lr <= 2.0  # bounded by max_change
    assert model.hparams.lr == pytest.approx(sweep.history[-1].applied_lr)
    assert t.optimizers[0].param_groups[0]["lr"] == pytest.approx(sweep.history[-1].applied_lr)


def test_fit_start_suggestion_is_in_the_descent_of_the_curve():
    sweep = LRSweep(num_steps=60)
    model, _ = fit([sweep], lr=1e-5, epochs=1)
    result = sweep.history[0].result
    curve = result.curve
    lowest = curve.lrs[np.argmin(curve.smoothed)]
    assert result.lrs[0] < model.hparams.lr < lowest


def test_milestones_and_every_n_epochs_schedule():
    sweep = LRSweep(every_n_epochs=3, milestones=[1, 3], num_steps=10, retune_num_steps=10, suggestion=lambda r: 0.05)
    assert [e for e in range(8) if sweep.should_retune(e)] == [1, 3, 6]
    fit([sweep], epochs=4)
    assert [r.epoch for r in sweep.history] == [0, 1, 3]


def test_retune_clamps_and_warns():
    sweep = LRSweep(
        every_n_epochs=1,
        num_steps=10,
        retune_num_steps=10,
        suggestion=lambda r: 0.05,
        retune_suggestion=lambda r: 5.0,
        max_change=2.0,
    )
    with pytest.warns(UserWarning, match="clamped to 0.1"):
        model, _ = fit([sweep], epochs=2)
    assert sweep.history[1].suggested_lr == 5.0
    assert sweep.history[1].applied_lr == pytest.approx(0.1)
    assert model.hparams.lr == pytest.approx(0.1)


def test_a_clamp_under_one_percent_is_applied_without_a_warning(recwarn):
    sweep = LRSweep(
        every_n_epochs=1,
        num_steps=10,
        retune_num_steps=10,
        suggestion=lambda r: 0.05,
        retune_suggestion=lambda r: 0.1009,  # 0.9% above what `max_change=2` allows from 0.05
    )
    fit([sweep], epochs=2)
    assert sweep.history[1].applied_lr == pytest.approx(0.1)
    assert not [w for w in recwarn if "clamped" in str(w.message)]


def test_no_suggestion_keeps_the_lr_and_says_why():
    sweep = LRSweep(num_steps=10, suggestion=lambda r: None)
    with pytest.warns(UserWarning, match="kept the LR at 0.05"):
        model, t = fit([sweep], epochs=1)
    assert model.hparams.lr == 0.05
    assert sweep.history[0].applied_lr is None


def test_update_attr_false_leaves_the_hparam_and_moves_the_optimizer():
    sweep = LRSweep(num_steps=10, suggestion=lambda r: 0.02, update_attr=False)
    model, t = fit([sweep], epochs=1)
    assert model.hparams.lr == 0.05
    assert t.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.02)


BAD_ARGUMENTS = [
    ({"min_lr": 0}, "`min_lr` must be > 0, got 0"),
    ({"min_lr": 1.0, "max_lr": 0.1}, "`max_lr` must be greater than `min_lr`"),
    ({"num_steps": 4}, "`num_steps` must be an int >= 5, got 4"),
    ({"mode": "cosine"}, "`mode` must be one of .* got 'cosine'"),
    ({"suggestion": "best"}, "`suggestion` must be one of .* got 'best'"),
    ({"every_n_epochs": 0}, "`every_n_epochs` must be an int >= 1 or None, got 0"),
    ({"milestones": [2, -1]}, r"`milestones` must be epoch numbers >= 0, got \[2, -1\]"),
    ({"early_stop_threshold": 0.5}, "`early_stop_threshold` must be > 1 or None"),
    ({"smoothing": 1.0}, r"`smoothing` must be in \[0, 1\), got 1.0"),
    ({"max_change": 0.5}, "`max_change` must be a number >= 1"),
    ({"max_change": "2x"}, "`max_change` must be a number >= 1 .*got '2x'"),
    ({"retune_window": 1.0}, "`retune_window` must be a finite number > 1, got 1.0"),
    ({"retune_num_steps": 2}, "`retune_num_steps` must be an int >= 5, got 2"),
    ({"retune_num_steps": 7.5}, "`retune_num_steps` must be an int >= 5, got 7.5"),
    ({"retune_window": float("inf")}, "`retune_window` must be a finite number > 1, got inf"),
    ({"retune_window": "wide"}, "`retune_window` must be a finite number > 1, got 'wide'"),
    ({"retune_suggestion": "up"}, "`retune_suggestion` must be one of .* got 'up'"),
    ({"snapshot_device": "cuda"}, "`snapshot_device` must be None or 'cpu'"),
    ({"anneal": "no"}, "`anneal` must be True or False, got 'no'"),
    ({"anneal": None}, "`anneal` must be True or False, got None"),
    ({"milestones": (1, 2.5)}, r"`milestones` must be epoch numbers >= 0, got \[1, 2.5\]"),
    ({"attr_name": 3}, "`attr_name` must be None or an attribute name, got 3"),
    ({"update_attr": "yes"}, "`update_attr` must be True or False, got 'yes'"),
    ({"log_curves": 1}, "`log_curves` must be True or False, got 1"),
    ({"optimizer_idx": -1}, r"`optimizer_idx` must be None \(a single optimizer\) or an int >= 0, got -1"),
    ({"val_batches": True}, "`val_batches` must be an int >= 0 .*got True"),
    ({"race_steps": -2}, r"`race_steps` must be an int >= 0 \(0: no race\), got -2"),
    ({"min_confidence": 1.5}, r"`min_confidence` must be a number in \[0, 1\], got 1.5"),
    ({"low_confidence": "drop"}, r"`low_confidence` must be one of \('warn', 'keep'\), got 'drop'"),
]


@pytest.mark.parametrize(("kwargs", "match"), BAD_ARGUMENTS, ids=[case_id(kwargs) for kwargs, _ in BAD_ARGUMENTS])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LRSweep(**kwargs)


def test_the_signature_takes_every_setting_with_its_declared_type_and_default():
    parameters = inspect.signature(LRSweep).parameters
    declared = [f for config in (SweepConfig, CallbackConfig) for f in settings_of(config)]
    assert {n: (p.annotation, p.default) for n, p in parameters.items()} == {
        f.name: (f.type, f.default) for f in declared
    }
    doc = inspect.getdoc(LRSweep)
    assert all(f"{f.name}: {f.metadata['meaning'][:20]}" in doc for f in declared)


def test_milestones_are_kept_sorted_without_repeats_and_retunes_follow_a_callable_rule():
    def rule(result):
        return 0.1

    sweep = LRSweep(milestones=(4, 1, 4), suggestion=rule)
    assert sweep.settings.milestones == [1, 4] and sweep.settings.retune_suggestion is rule
    assert LRSweep().settings.retune_suggestion == "edge"


class NoLR(Classifier):
    def __init__(self):
        super().__init__()
        del self.hparams["lr"]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize(
    ("make", "sweep", "match"),
    [
        (NoLR, sweep_by_fit, "could not find the LR attribute of NoLR"),
        (partial(Classifier, lr=0.0), sweep_by_fit, "LR attribute `lr` of Classifier is 0.0"),
        (partial(Classifier, lr=0.0), sweep_by_tuner, "largest base LR is 0.0"),
    ],
    ids=["callback_without_lr_attribute", "callback_lr_attribute_zero", "tuner_optimizer_lr_zero"],
)
def test_an_unusable_lr_is_refused_before_any_step(make, sweep, match):
    model, t = make(), trainer(callbacks=[LRSweep()] if sweep is sweep_by_fit else [])
    before = state(model)
    with pytest.raises(ValueError, match=match):
        sweep(t, model)
    assert t.global_step == 0
    assert_same_state(before, state(model))


def test_unknown_attr_name_is_named():
    with pytest.raises(AttributeError, match="`attr_name='base_lr'` was given"):
        trainer(callbacks=[LRSweep(attr_name="base_lr")]).fit(Classifier(), loader())


def test_two_optimizers_are_refused_before_any_step():
    model = TwoOptimizers()
    before = state(model)
    t = trainer(callbacks=[LRSweep()])
    with pytest.raises(ValueError, match="returned 2"):
        t.fit(model, loader())
    assert t.global_step == 0
    assert_same_state(before, state(model))


def test_fast_dev_run_skips_with_a_warning():
    sweep = LRSweep()
    with pytest.warns(UserWarning, match="skipped with `fast_dev_run`"):
        trainer(fast_dev_run=True, callbacks=[sweep]).fit(Classifier(), loader())
    assert sweep.history == []


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_name_picks_the_fit_start_lr(method):
    sweep = LRSweep(suggestion=method, num_steps=30)
    model, _ = fit([sweep], epochs=1, limit_train_batches=1)
    record = sweep.history[0]
    assert record.result.method == method
    assert record.suggested_lr == record.result.suggest(method).lr and record.suggested_lr is not None
    assert model.hparams.lr == record.applied_lr == record.suggested_lr


class DecayToZero(Classifier):
    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=2)}


def test_a_retune_at_lr_zero_is_skipped_with_a_warning():
    sweep = LRSweep(every_n_epochs=1, num_steps=10, retune_num_steps=10)
    with pytest.warns(UserWarning, match="skipped the re-tune at epoch 2: the optimizer's LR is 0"):
        _, t = seeded_fit(DecayToZero, [sweep], seed=7, epochs=3)
    assert t.current_epoch == 3
    assert [r.epoch for r in sweep.history] == [0, 1]  # nothing recorded for the skipped re-tune
    assert t.optimizers[0].param_groups[0]["lr"] == 0.0
