"""In one process: strategies the sweep refuses, and the channel that brings ddp_spawn results home.

The strategies it supports (DDP, ddp_spawn, ModelParallelStrategy: FSDP2 and tensor parallel) run in test_ddp.py.
"""

import multiprocessing
import sys
from types import SimpleNamespace

import pytest
from lightning.pytorch.strategies import FSDPStrategy, SingleDeviceStrategy
from models import Classifier, assert_same_state, state, sweep_by_fit, sweep_by_tuner, trainer

from lightning_lrsweep import LRSweep
from lightning_lrsweep.distributed import SpawnReturn, check_strategy


class DeepSpeedStrategy(SingleDeviceStrategy):
    """Stands in for Lightning's DeepSpeedStrategy (not installed): refused by its class name."""


def test_fsdp1_is_refused_naming_model_parallel_with_fully_shard():
    with pytest.raises(ValueError, match=r"does not support `FSDPStrategy`.*ModelParallelStrategy.*`fully_shard`"):
        check_strategy(SimpleNamespace(strategy=FSDPStrategy()))


@pytest.mark.parametrize("sweep", [sweep_by_fit, sweep_by_tuner], ids=["callback", "tuner"])
def test_deepspeed_is_refused_before_any_step(sweep):
    model = Classifier()
    before = state(model)
    t = trainer(strategy=DeepSpeedStrategy(device="cpu"), callbacks=[LRSweep(num_steps=10)])
    with pytest.raises(ValueError, match="does not support `DeepSpeedStrategy`.*ModelParallelStrategy"):
        sweep(t, model)
    assert t.global_step == 0
    assert_same_state(before, state(model))


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
