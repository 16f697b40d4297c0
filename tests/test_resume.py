"""Checkpoint and resume: history, schedule and tuned LR survive; no fit-start sweep on resume."""

import pytest
import torch
import yaml
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from models import Halving, Plain, case_id, fit, loader, trainer, up_by_half

from lightning_lrsweep import LRSweep


def sweep(**kwargs):
    return LRSweep(every_n_epochs=2, num_steps=15, retune_num_steps=10, **kwargs)


def run(callback, epochs, ckpt_dir=None, ckpt_path=None, model_cls=Plain, **trainer_kwargs):
    callbacks = list(callback) if isinstance(callback, list) else [callback]
    if ckpt_dir is not None:
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0))
    data = loader(n=96, shuffle=False)
    checkpointing = ckpt_dir is not None
    return fit(
        model_cls,
        callbacks,
        seed=5,
        epochs=epochs,
        data=data,
        ckpt_path=ckpt_path,
        enable_checkpointing=checkpointing,
        **trainer_kwargs,
    )


def summary(history):
    return [(r.kind, r.epoch, r.global_step, r.previous_lr, r.suggested_lr, r.applied_lr, r.base_lr) for r in history]


def test_resumed_history_equals_uninterrupted(tmp_path):
    # the LR is held between re-tunes: the first run's horizon (2 epochs) is not the resumed run's (4)
    first = sweep(anneal=False)
    run(first, epochs=2, ckpt_dir=tmp_path)
    resumed = sweep(anneal=False)
    model, t = run(resumed, epochs=4, ckpt_path=tmp_path / "last.ckpt")
    assert [r.epoch for r in first.history] == [0]
    assert [r.epoch for r in resumed.history] == [0, 2]  # epoch 0 restored, not re-run; epoch 2 re-tuned after resuming
    full = sweep(anneal=False)
    full_model, _ = run(full, epochs=4)
    assert summary(resumed.history) == summary(full.history)
    for a, b in zip(resumed.history, full.history, strict=True):
        assert a.result.lrs.tolist() == b.result.lrs.tolist() and a.result.losses.tolist() == b.result.losses.tolist()
    assert model.hparams.lr == full_model.hparams.lr == t.optimizers[0].param_groups[0]["lr"]
    for p, q in zip(model.parameters(), full_model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_resume_restores_the_tuned_lr_into_the_module(tmp_path):
    first = LRSweep(num_steps=15, suggestion=lambda r: 0.123)
    run(first, epochs=1, ckpt_dir=tmp_path)
    resumed = LRSweep(num_steps=15, suggestion=lambda r: 0.5)
    model, t = run(resumed, epochs=2, ckpt_path=tmp_path / "last.ckpt")
    assert len(resumed.history) == 1 and resumed.history[0].applied_lr == pytest.approx(0.123)
    assert model.hparams.lr == pytest.approx(0.123)
    assert t.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.123)


def test_sweep_on_resume_runs_the_fit_start_sweep_again(tmp_path):
    run(LRSweep(num_steps=15, suggestion=lambda r: 0.123), epochs=1, ckpt_dir=tmp_path)
    resumed = LRSweep(num_steps=15, suggestion=lambda r: 0.05, sweep_on_resume=True)
    model, _ = run(resumed, epochs=2, ckpt_path=tmp_path / "last.ckpt")
    assert [r.kind for r in resumed.history] == ["fit_start", "fit_start"]
    assert model.hparams.lr == pytest.approx(0.05)


def test_state_round_trip_and_two_instances_coexist(tmp_path):
    a, b = sweep(), LRSweep(num_steps=20)
    assert a.state_key != b.state_key
    run(a, epochs=1, ckpt_dir=tmp_path)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert a.state_key in checkpoint["callbacks"]
    fresh = sweep()
    fresh.load_state_dict(checkpoint["callbacks"][a.state_key])
    assert summary(fresh.history) == summary(a.history)
    assert fresh._distance == a._distance
    assert fresh.history[0].result.suggestion() == a.history[0].result.suggestion()
    fresh.load_state_dict({})  # fields missing from older checkpoints fall back to defaults
    assert fresh.history == []


def test_resume_mid_epoch_does_not_repeat_that_epochs_retune(tmp_path):
    first = LRSweep(every_n_epochs=1, num_steps=15, retune_num_steps=10)
    seed_everything(5)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="{step}", save_top_k=-1, every_n_train_steps=4)
    trainer(max_epochs=2, callbacks=[first, checkpoint], enable_checkpointing=True).fit(
        Plain(), loader(n=96, shuffle=False)
    )
    mid_epoch_1 = tmp_path / "step=4.ckpt"  # 3 steps an epoch: written after epoch 1's re-tune, before its end
    assert torch.load(mid_epoch_1, weights_only=True)["epoch"] == 1
    resumed = LRSweep(every_n_epochs=1, num_steps=15, retune_num_steps=10)
    run(resumed, epochs=3, ckpt_path=mid_epoch_1)
    assert [r.epoch for r in resumed.history] == [0, 1, 2]


def test_a_second_fit_with_the_same_instance_retunes_again():
    callback = LRSweep(every_n_epochs=1, num_steps=15, retune_num_steps=10)
    run(callback, epochs=2)
    run(callback, epochs=2)
    assert [r.epoch for r in callback.history] == [0, 1, 0, 1]


def test_resume_under_a_scheduler_restores_the_base_lr_not_the_scheduled_one(tmp_path):
    def up():  # a re-tune at epoch 1 only, which raises the (halved) LR it measures 1.5x
        return LRSweep(
            milestones=[1], num_steps=15, retune_num_steps=10, suggestion=lambda r: 0.09, retune_suggestion=up_by_half
        )

    run(up(), epochs=2, ckpt_dir=tmp_path / "ckpt", model_cls=Halving)
    resumed = up()
    logger = CSVLogger(tmp_path, name="resumed")
    model, t = run(resumed, 3, ckpt_path=tmp_path / "ckpt" / "last.ckpt", model_cls=Halving, logger=logger)
    full = up()
    full_model, full_t = run(full, epochs=3, model_cls=Halving)
    assert summary(resumed.history) == summary(full.history)
    assert resumed.history[-1].applied_lr == pytest.approx(0.09 * 0.5 * 1.5)  # the scheduled LR it moved
    assert model.hparams.lr == full_model.hparams.lr == pytest.approx(0.09 * 1.5)  # the base LR
    assert yaml.safe_load((tmp_path / "resumed" / "version_0" / "hparams.yaml").read_text())["lr"] == model.hparams.lr
    assert t.optimizers[0].param_groups[0]["lr"] == full_t.optimizers[0].param_groups[0]["lr"]
    for p, q in zip(model.parameters(), full_model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    "change",
    [
        {"retune_window": 10.0},
        {"retune_num_steps": 20},
        {"max_change": 3.0},
        {"retune_suggestion": "valley"},
        {"retune_suggestion": lambda r: 0.1},
        {"sweep_at_fit_start": False},
        {"early_stop_threshold": 3.0},
        {"smoothing": 0.9},
        {"val_batches": 2},
        {"race_steps": 8},
        {"min_confidence": 0.5},
        {"low_confidence": "keep"},
        {"anneal": False},
    ],
    ids=case_id,
)
def test_every_setting_that_shapes_the_sweeps_is_in_the_state_key(change):
    assert LRSweep().state_key != LRSweep(**change).state_key
    assert LRSweep(**change).state_key == LRSweep(**change).state_key  # stable across instances


def test_settings_added_after_0_1_0_keep_its_state_key_at_their_defaults():
    # a checkpoint saved by 0.1.0 holds its state under a key without them: the defaults must still find it
    key = LRSweep(every_n_epochs=2, val_batches=0, race_steps=0, min_confidence=0.2, low_confidence="warn").state_key
    assert not any(name in key for name in ("val_batches", "race_steps", "confidence", "anneal"))
    assert key.endswith("'retune_num_steps': 40, 'max_change': 2.0}")  # the last of 0.1.0's settings


def test_two_instances_differing_only_in_retune_settings_restore_their_own_history(tmp_path):
    def pair():
        settings = dict(every_n_epochs=1, num_steps=15, retune_num_steps=10)
        return LRSweep(**settings), LRSweep(**settings, retune_window=10.0)

    a, b = pair()
    run([a, b], epochs=2, ckpt_dir=tmp_path)
    assert summary(a.history) != summary(b.history)
    a2, b2 = pair()
    run([a2, b2], epochs=2, ckpt_path=tmp_path / "last.ckpt")
    assert summary(a2.history) == summary(a.history)
    assert summary(b2.history) == summary(b.history)


def test_resuming_with_other_settings_warns_naming_them_and_keeps_the_history(tmp_path, recwarn):
    first = sweep(max_change=2.0)
    run(first, epochs=2, ckpt_dir=tmp_path)
    resumed = sweep(max_change=3.0)  # another state_key: the state saved under the first one is taken
    with pytest.warns(UserWarning, match=r"differ from the checkpoint's: `max_change` 2.0 -> 3.0 \(saved -> now\)"):
        run(resumed, epochs=3, ckpt_path=tmp_path / "last.ckpt")
    assert [r.epoch for r in resumed.history] == [0, 2]  # epoch 0 restored, not re-run; epoch 2 re-tuned
    assert summary(resumed.history[:1]) == summary(first.history)
    assert not [w for w in recwarn if "without a saved history" in str(w.message)]


def test_a_checkpoint_that_kept_its_settings_only_in_the_key_is_resumed_with_other_settings(tmp_path):
    first = sweep(max_change=float("inf"), milestones=[1])
    run(first, epochs=2, ckpt_dir=tmp_path)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    del checkpoint["callbacks"][first.state_key]["settings"]  # as 0.1.0 saved it
    torch.save(checkpoint, tmp_path / "old.ckpt")
    resumed = sweep(max_change=2.0, milestones=[1])
    with pytest.warns(UserWarning, match="differ from the checkpoint's: `max_change` inf -> 2.0 "):
        run(resumed, epochs=3, ckpt_path=tmp_path / "old.ckpt")
    assert summary(resumed.history[:2]) == summary(first.history)


def test_a_history_that_tuned_another_lr_is_not_taken(tmp_path):
    run(sweep(), epochs=2, ckpt_dir=tmp_path)
    resumed = sweep(attr_name="lr")  # the same LR in fact, but named: the saved history may be another one's
    with pytest.warns(UserWarning, match="LRSweep resumes from .* without a saved history"):
        run(resumed, epochs=3, ckpt_path=tmp_path / "last.ckpt")
    assert [r.epoch for r in resumed.history] == [2]  # epoch 0 not restored, not re-run; epoch 2 re-tuned


def test_two_saved_histories_that_could_both_be_this_instances_are_left(tmp_path):
    run([sweep(), sweep(max_change=3.0)], epochs=2, ckpt_dir=tmp_path)
    resumed = sweep(max_change=4.0)
    with pytest.warns(UserWarning, match="without a saved history"):
        run(resumed, epochs=3, ckpt_path=tmp_path / "last.ckpt")
    assert [r.epoch for r in resumed.history] == [2]


def test_resuming_with_the_same_settings_does_not_warn(tmp_path, recwarn):
    run(sweep(), epochs=2, ckpt_dir=tmp_path)
    run(sweep(), epochs=3, ckpt_path=tmp_path / "last.ckpt")
    assert not [w for w in recwarn if "without a saved history" in str(w.message)]
