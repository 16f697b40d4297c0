"""In one process: strategies the sweep refuses, and the channel that brings ddp_spawn results home."""

import multiprocessing
import sys
from types import SimpleNamespace

import pytest
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy, SingleDeviceStrategy
from models import Classifier, assert_same_state, loader, state, trainer

from lightning_lrsweep import LRSweep, LRSweepTuner
from lightning_lrsweep.distributed import SpawnReturn, check_strategy


class DeepSpeedStrategy(SingleDeviceStrategy):
    """Stands in for Lightning's DeepSpeedStrategy (not installed): refused by its class name."""


def test_fsdp1_is_refused_naming_model_parallel_with_fully_shard():
    with pytest.raises(ValueError, match=r"does not support `FSDPStrategy`.*ModelParallelStrategy.*`fully_shard`"):
        check_strategy(SimpleNamespace(strategy=FSDPStrategy()))


def test_model_parallel_strategy_is_accepted():
    check_strategy(SimpleNamespace(strategy=ModelParallelStrategy()))  # FSDP2 / tensor parallel: tests/test_ddp.py


def test_deepspeed_is_refused_by_the_callback_before_any_step():
    model = Classifier()
    before = state(model)
    t = trainer(strategy=DeepSpeedStrategy(device="cpu"), callbacks=[LRSweep(num_steps=10)])
    with pytest.raises(ValueError, match="does not support `DeepSpeedStrategy`.*ModelParallelStrategy"):
        t.fit(model, loader())
    assert t.global_step == 0
    assert_same_state(before, state(model))


def test_deepspeed_is_refused_by_the_tuner_before_fit():
    t = trainer(strategy=DeepSpeedStrategy(device="cpu"))
    with pytest.raises(ValueError, match="does not support `DeepSpeedStrategy`"):
        LRSweepTuner(t).sweep(Classifier(), loader(), num_steps=10)


def _send(channel: SpawnReturn) -> None:
    channel.send({"history": [1, 2]})


@pytest.mark.skipif(sys.platform == "win32", reason="uses fork")
def test_spawn_return_carries_a_worker_value_home_once():
    channel = SpawnReturn()
    channel.send("ignored")  # the creating process never sends to itself
    assert channel.receive() is None
    worker = multiprocessing.get_context("fork").Process(target=_send, args=(channel,))
    worker.start()
    worker.join(30)
    assert worker.exitcode == 0
    assert channel.receive() == {"history": [1, 2]}
    assert channel.receive() is None
    assert not channel.path.exists()


def _send_unpicklable(channel: SpawnReturn) -> None:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        channel.send(lambda: None)
    assert any("could not send its results" in str(w.message) for w in caught)


@pytest.mark.skipif(sys.platform == "win32", reason="uses fork")
def test_spawn_return_warns_instead_of_failing_on_an_unpicklable_value():
    channel = SpawnReturn()
    worker = multiprocessing.get_context("fork").Process(target=_send_unpicklable, args=(channel,))
    worker.start()
    worker.join(30)
    assert worker.exitcode == 0
    assert channel.receive() is None
