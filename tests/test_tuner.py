"""LRSweepTuner: one sweep on demand, the model untouched, the trainer reusable."""

import inspect
import logging
import random

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningDataModule, seed_everything
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from models import Blobs, Classifier, assert_same_state, blobs, case_id, loader, state, trainer
from torch.utils.data import DataLoader, random_split

from lightning_lrsweep import LRSweepTuner, SweepResult
from lightning_lrsweep.config import SweepConfig, settings_of


def test_sweep_returns_a_result_and_leaves_the_model_as_it_was():
    model = Classifier(lr=0.05)
    before = state(model)
    result = LRSweepTuner(trainer()).sweep(model, loader(), num_steps=40)
    assert isinstance(result, SweepResult)
    assert len(result.lrs) >= 20 and result.suggestion() is not None
    assert_same_state(before, state(model))
    assert model.hparams.lr == 0.05


def test_datamodule_is_accepted():
    result = LRSweepTuner(trainer()).sweep(Classifier(), datamodule=Blobs(), num_steps=20)
    assert len(result.lrs) >= 5


def test_bad_sweep_argument_is_refused_before_any_step():
    model = Classifier()
    before = state(model)
    with pytest.raises(ValueError, match="`num_steps` must be an int >= 5, got 3"):
        LRSweepTuner(trainer()).sweep(model, loader(), num_steps=3)
    assert_same_state(before, state(model))


@pytest.mark.parametrize(
    "unknown", [{"foo": 1}, {"max_steps": 3}, {"min_stop_lr": 1e-3}, {"every_n_epochs": 2}], ids=case_id
)
def test_an_unknown_argument_lists_the_sweep_settings_before_any_step(unknown):
    model, t = Classifier(), trainer()
    before = state(model)
    (name,) = unknown
    valid = ", ".join(f.name for f in settings_of(SweepConfig))
    with pytest.raises(TypeError, match=rf"unknown argument\(s\) `{name}`; the sweep settings are: {valid}\.$"):
        LRSweepTuner(t).sweep(model, loader(), **unknown)
    assert_same_state(before, state(model))
    assert t.global_step == 0 and t.state.fn is None  # fit never started


def test_the_sweep_signature_takes_every_sweep_setting_with_its_declared_type_and_default():
    parameters = inspect.signature(LRSweepTuner.sweep).parameters
    keyword_only = {n: (p.annotation, p.default) for n, p in parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert keyword_only == {f.name: (f.type, f.default) for f in settings_of(SweepConfig)}
    assert all(
        f"{f.name}: {f.metadata['meaning'][:20]}" in LRSweepTuner.sweep.__doc__ for f in settings_of(SweepConfig)
    )


@pytest.mark.parametrize("make_logger", [lambda root: True, TensorBoardLogger, CSVLogger], ids=["default", "tb", "csv"])
def test_sweep_writes_no_logs_and_keeps_the_users_logger(tmp_path, make_logger):
    t = trainer(logger=make_logger(tmp_path), default_root_dir=tmp_path)
    logger = t.logger
    LRSweepTuner(t).sweep(Classifier(), loader(n=64), num_steps=10)
    assert t.logger is logger and t.loggers == [logger]
    assert list(tmp_path.iterdir()) == []  # no lightning_logs/version_N, no events file, no hparams.yaml


class Failing(Classifier):
    def training_step(self, batch, batch_idx):
        raise RuntimeError("boom in training_step")


def test_a_fit_after_a_sweep_logs_and_checkpoints_into_the_loggers_version_folder(tmp_path):
    t = trainer(logger=CSVLogger(tmp_path, name="run"), enable_checkpointing=True, default_root_dir=tmp_path)
    model = Classifier()
    LRSweepTuner(t).sweep(model, loader(n=64), num_steps=10)
    t.fit(model, loader())
    assert t.global_step == 8  # a whole epoch of 8 batches, none counted by the sweep
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    version = tmp_path / "run" / "version_0"
    assert (version / "metrics.csv").exists() and len(list((version / "checkpoints").glob("*.ckpt"))) == 1


class RandomSplit(LightningDataModule):
    """Draws from the global RNG while the data is built, as a ``random_split`` in ``setup()`` does."""

    def setup(self, stage):
        self.train, self.val = random_split(blobs(256), [200, 56])

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=32, shuffle=True)


def rng_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def assert_same_rng(a, b):
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_repeated_sweeps_on_one_trainer_record_the_same_curve():
    t, model = trainer(), Classifier()
    curves = [LRSweepTuner(t).sweep(model, datamodule=RandomSplit(), num_steps=30) for _ in range(3)]
    for result in curves[1:]:
        np.testing.assert_array_equal(result.lrs, curves[0].lrs)
        np.testing.assert_array_equal(result.losses, curves[0].losses)


def fit_weights(sweep_first):
    seed_everything(7)
    model, t = Classifier(), trainer(max_epochs=1)
    if sweep_first:
        before = rng_states()
        LRSweepTuner(t).sweep(model, datamodule=RandomSplit(), num_steps=20)
        assert_same_rng(before, rng_states())
    t.fit(model, datamodule=RandomSplit())
    return state(model)


def test_a_sweep_before_a_seeded_fit_leaves_the_fit_bit_for_bit_the_same():
    assert_same_state(fit_weights(sweep_first=False), fit_weights(sweep_first=True))


def test_a_sweep_that_raises_gives_back_the_users_logger_and_rng(tmp_path):
    t, model = trainer(logger=CSVLogger(tmp_path)), Failing()
    logger, before = t.logger, rng_states()
    with pytest.raises(RuntimeError, match="boom in training_step"):
        LRSweepTuner(t).sweep(model, datamodule=RandomSplit(), num_steps=10)
    assert t.logger is logger
    assert_same_rng(before, rng_states())


def test_the_tuner_says_what_it_found(caplog):
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
        result = LRSweepTuner(trainer()).sweep(Classifier(), loader(), num_steps=30)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("LRSweepTuner")]
    assert f"suggested LR {result.suggestion():.3g} (valley) from {len(result.lrs)} steps" in line
    assert "not applied" in line


def test_no_suggestion_is_a_warning_with_its_reason():
    with pytest.warns(UserWarning, match=r"LRSweepTuner found no LR suggestion: the callable returned None \("):
        result = LRSweepTuner(trainer()).sweep(Classifier(), loader(), num_steps=10, suggestion=lambda r: None)
    assert result.suggest().lr is None
