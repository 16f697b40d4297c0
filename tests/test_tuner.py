"""LRSweepTuner: one sweep on demand, the model untouched, the trainer reusable."""

import pytest
from lightning.pytorch import LightningDataModule
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from models import Classifier, assert_same_state, loader, state, trainer

from lightning_lrsweep import LRSweepTuner, SweepResult


def test_sweep_returns_a_result_and_leaves_the_model_as_it_was():
    model = Classifier(lr=0.05)
    before = state(model)
    result = LRSweepTuner(trainer()).sweep(model, loader(), num_steps=40)
    assert isinstance(result, SweepResult)
    assert len(result.lrs) >= 20 and result.suggestion() is not None
    assert_same_state(before, state(model))
    assert model.hparams.lr == 0.05


def test_trainer_can_fit_after_a_sweep():
    model = Classifier()
    t = trainer(max_epochs=1)
    LRSweepTuner(t).sweep(model, loader(n=64), num_steps=10)
    t.fit(model, loader())
    assert t.global_step == 8


class Blobs(LightningDataModule):
    def train_dataloader(self):
        return loader()


def test_datamodule_is_accepted():
    result = LRSweepTuner(trainer()).sweep(Classifier(), datamodule=Blobs(), num_steps=20)
    assert len(result.lrs) >= 5


def test_bad_sweep_argument_is_refused_before_any_step():
    model = Classifier()
    before = state(model)
    with pytest.raises(ValueError, match="`num_steps` must be an int >= 5, got 3"):
        LRSweepTuner(trainer()).sweep(model, loader(), num_steps=3)
    with pytest.raises(TypeError, match="max_steps"):
        LRSweepTuner(trainer()).sweep(model, loader(), max_steps=3)
    assert_same_state(before, state(model))


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


def test_the_users_logger_is_back_after_a_sweep_that_raises(tmp_path):
    t = trainer(logger=CSVLogger(tmp_path))
    logger = t.logger
    with pytest.raises(RuntimeError, match="boom in training_step"):
        LRSweepTuner(t).sweep(Failing(), loader(n=64), num_steps=10)
    assert t.logger is logger


def test_a_fit_after_a_sweep_logs_and_checkpoints_into_the_loggers_version_folder(tmp_path):
    t = trainer(logger=CSVLogger(tmp_path, name="run"), enable_checkpointing=True, default_root_dir=tmp_path)
    model = Classifier()
    LRSweepTuner(t).sweep(model, loader(n=64), num_steps=10)
    t.fit(model, loader(n=64))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    version = tmp_path / "run" / "version_0"
    assert (version / "metrics.csv").exists() and len(list((version / "checkpoints").glob("*.ckpt"))) == 1
