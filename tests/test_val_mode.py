"""Validation-loss mode: a sweep judged on the loss over a few validation batches after each step."""

from functools import partial

import pytest
import torch
from lightning.pytorch import seed_everything
from models import Classifier, Manual, assert_same_state, loader, state, trainer
from models import fit as seeded_fit

from lightning_lrsweep import LRSweep, LRSweepTuner


def test_val_mode_records_the_eval_loss_on_the_first_validation_batches():
    seed_everything(3)
    model = Classifier()
    model.net[1].momentum = 0.0  # BatchNorm's running stats stay put, so one tiny step leaves the eval loss as it is
    val = loader(seed=5, shuffle=False, batch_size=16)
    with torch.no_grad():
        model.eval()
        batches = [b for b, _ in zip(val, range(2), strict=False)]
        expected_first = float(torch.stack([model.training_step(b, i) for i, b in enumerate(batches)]).mean())
        model.train()
    result = LRSweepTuner(trainer()).sweep(
        model, train_dataloaders=loader(), val_dataloaders=val, val_batches=2, min_lr=1e-9, num_steps=20
    )
    assert result.val_batches == 2
    # after one step at LR 1e-9 the model is unchanged to ~1e-7: the first point is the eval loss on those batches
    assert result.losses[0] == pytest.approx(expected_first, abs=1e-5)
    train_result = LRSweepTuner(trainer()).sweep(model, train_dataloaders=loader(), min_lr=1e-9, num_steps=20)
    assert abs(train_result.losses[0] - expected_first) > 1e-3  # the training loss is another curve


def test_a_fit_with_val_mode_equals_a_plain_fit_at_the_applied_lr():
    def fit(callbacks, lr):  # a shuffled validation loader draws from the RNG
        return seeded_fit(partial(Classifier, lr=lr), callbacks, seed=7, epochs=2, val=loader(seed=1))

    sweep = LRSweep(num_steps=30, val_batches=2, min_confidence=0.0)
    swept, swept_trainer = fit([sweep], 0.05)
    assert sweep.history[0].result.val_batches == 2
    plain, _ = fit([], swept_trainer.optimizers[0].param_groups[0]["lr"])
    assert_same_state(state(plain), state(swept))


def test_val_mode_without_validation_data_is_refused_before_any_step():
    seed_everything(0)
    model = Classifier()
    before = state(model)
    with pytest.raises(ValueError, match=r"`val_batches=2`.*no validation data.*val_dataloaders"):
        LRSweepTuner(trainer()).sweep(model, train_dataloaders=loader(), val_batches=2)
    assert_same_state(before, state(model))


def test_val_mode_with_manual_optimization_is_refused():
    with pytest.raises(ValueError, match=r"`val_batches=2`.*manual optimization"):
        LRSweepTuner(trainer()).sweep(Manual(), train_dataloaders=loader(), val_dataloaders=loader(), val_batches=2)


@pytest.mark.parametrize("bad", [-1, 1.5, True], ids=["negative", "float", "bool"])
def test_bad_val_batches_are_refused(bad):
    with pytest.raises(ValueError, match=r"`val_batches` must be an int >= 0.*got"):
        LRSweep(val_batches=bad)


@pytest.mark.parametrize("manual", [False, True], ids=["automatic", "manual"])
def test_val_mode_is_refused_before_any_step_when_the_first_sweep_is_a_retune(manual):
    # no fit-start sweep: the first sweep would run at epoch 1, after a whole epoch of training
    sweep = LRSweep(val_batches=2, sweep_at_fit_start=False, every_n_epochs=1)
    model = Manual() if manual else Classifier()
    before = state(model)
    t = trainer(max_epochs=2, callbacks=[sweep])
    match = r"`val_batches=2`.*manual optimization" if manual else r"`val_batches=2`.*no validation data"
    with pytest.raises(ValueError, match=match):
        t.fit(model, loader(), val_dataloaders=loader() if manual else None)
    assert t.global_step == 0
    assert_same_state(before, state(model))
