"""The race from the sweep's snapshot: candidates from the curve, the lowest loss wins, no trace left."""

from functools import partial

import pytest
from lightning.pytorch.callbacks import TQDMProgressBar
from models import Classifier, Manual, assert_same_state, loader, state
from models import fit as seeded_fit

from lightning_lrsweep import LRSweep


def fit(callbacks, lr=0.05, val=False, model=Classifier, epochs=2, **trainer_kwargs):
    held_out = loader(seed=1, shuffle=False) if val else None
    return seeded_fit(partial(model, lr=lr), callbacks, seed=7, epochs=epochs, val=held_out, **trainer_kwargs)


@pytest.mark.parametrize("val", [False, True], ids=["training_loss", "validation_loss"])
def test_a_fit_with_a_race_equals_a_plain_fit_at_the_lr_it_picked(val):
    sweep = LRSweep(num_steps=40, race_steps=6, min_confidence=0.0)
    raced, raced_trainer = fit([sweep], val=val)
    record = sweep.history[0]
    race = record.result.race
    assert race is not None and len(race.lrs) >= 2
    assert race.judged_on == ("validation loss" if val else "training loss")
    assert record.applied_lr == race.winner == race.lrs[race.scores.index(min(race.scores))]
    interval = record.result.interval
    assert set(race.lrs) == {interval.low, record.suggested_lr, interval.high}
    picked = raced_trainer.optimizers[0].param_groups[0]["lr"]
    assert picked == pytest.approx(race.winner, rel=1e-12)
    plain, plain_trainer = fit([], lr=picked, val=val)
    assert_same_state(state(plain), state(raced))
    assert raced_trainer.global_step == plain_trainer.global_step


def test_race_shows_in_the_progress_bar_and_its_cost_is_recorded(capsys):
    sweep = LRSweep(num_steps=30, race_steps=5, min_confidence=0.0)
    fit([sweep, TQDMProgressBar()], enable_progress_bar=True)
    assert "LR race" in capsys.readouterr().out
    record = sweep.history[0]
    assert record.result.race.seconds > 0 and record.result.race.steps == 5
    assert "race winner" in record.reason


def test_no_race_by_default():
    sweep = LRSweep(num_steps=30, min_confidence=0.0)
    fit([sweep])
    assert sweep.history[0].result.race is None
    assert sweep.history[0].applied_lr == sweep.history[0].suggested_lr


@pytest.mark.parametrize("bad", [-1, 2.5, True, "10"], ids=["negative", "float", "bool", "str"])
def test_bad_race_steps_are_refused(bad):
    with pytest.raises(ValueError, match=r"`race_steps` must be an int >= 0.*got"):
        LRSweep(race_steps=bad)


def test_a_race_under_manual_optimization_is_judged_on_the_training_loss():
    # a manual `training_step` steps the optimizer, so it cannot score validation batches: the training loss decides
    sweep = LRSweep(num_steps=30, race_steps=4, min_confidence=0.0)
    fit([sweep], val=True, model=Manual, epochs=1)
    race = sweep.history[0].result.race
    assert race.judged_on == "training loss"
    assert sweep.history[0].applied_lr == race.winner
