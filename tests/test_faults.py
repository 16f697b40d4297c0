"""Faults during sweeps: exceptions, interrupts, NaN, memory over many sweeps."""

from __future__ import annotations

import random
import signal
import tracemalloc
import weakref
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerStatus
from matrix import assert_same, sweep_callback, tensors_of
from models import Classifier, assert_same_state, is_sweep_step, loader, state, trainer
from torch import nn

import lightning_lrsweep.sweep as sweep_module
from lightning_lrsweep import LRSweep
from lightning_lrsweep.config import SweepConfig


class RaisesInSweep(Classifier):
    """A scheduled classifier that raises ``error`` at the ``k``-th step of its ``n``-th sweep."""

    def __init__(self, error: BaseException, k: int, n: int = 1) -> None:
        super().__init__(optimizer="adam")
        self.error, self.k, self.n = error, k, n
        self.sweeps, self.steps, self.in_sweep = 0, 0, False

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if is_sweep_step(self):
            if not self.in_sweep:
                self.in_sweep, self.sweeps, self.steps = True, self.sweeps + 1, 0
            self.steps += 1
            if self.sweeps == self.n and self.steps == self.k + 1:
                raise self.error
        else:
            self.in_sweep = False
        return super().training_step(batch, batch_idx)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)}


class Capture(Callback):
    """Captures everything a sweep must restore at the start of every epoch (before the sweep runs)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.fit_loop.setup_data()  # as the sweep does first: building the loader draws from the RNG
        self.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.weights = state(pl_module)
        self.optimizer = tensors_of(trainer.optimizers[0].state_dict())
        self.scheduler = tensors_of(trainer.lr_scheduler_configs[0].scheduler.state_dict())
        self.rng = (torch.get_rng_state(), np.random.get_state(), random.getstate())

    def assert_restored(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert_same_state(self.weights, state(pl_module))
        assert_same(self.optimizer, tensors_of(trainer.optimizers[0].state_dict()), "optimizer")
        assert_same(self.scheduler, tensors_of(trainer.lr_scheduler_configs[0].scheduler.state_dict()), "scheduler")
        torch_rng, np_rng, py_rng = self.rng
        assert torch.equal(torch_rng, torch.get_rng_state())
        assert all(np.array_equal(a, b) for a, b in zip(np_rng, np.random.get_state(), strict=True))
        assert py_rng == random.getstate()


@pytest.mark.parametrize(
    ("n", "k"), [(1, 0), (1, 13), (2, 6)], ids=["fit_start_step_0", "fit_start_step_13", "retune_step_6"]
)
def test_exception_at_sweep_step_k_restores_everything_and_says_where(n, k):
    model = RaisesInSweep(RuntimeError("boom"), k=k, n=n)
    capture = Capture()
    t = trainer(max_epochs=3, callbacks=[capture, sweep_callback(suggestion=lambda r: 0.05)])
    with pytest.raises(RuntimeError, match="boom") as info:
        t.fit(model, loader(n=64))
    capture.assert_restored(t, model)
    note = " ".join(info.value.__notes__)
    assert f"LR sweep at epoch {n - 1}, step {k}, LR" in note


class OnException(Callback):
    def __init__(self) -> None:
        self.seen: list[BaseException] = []

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.seen.append(exception)


def test_keyboard_interrupt_restores_state_then_lightning_handles_it():
    model = RaisesInSweep(KeyboardInterrupt(), k=7, n=2)
    capture, spy = Capture(), OnException()
    t = trainer(max_epochs=3, callbacks=[capture, spy, sweep_callback(suggestion=lambda r: 0.05)])
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning's graceful shutdown ends with sys.exit(1)
            t.fit(model, loader(n=64))
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores SIGINT from then on
    capture.assert_restored(t, model)
    assert t.state.status == TrainerStatus.INTERRUPTED
    assert [type(e) for e in spy.seen] == [KeyboardInterrupt]  # other callbacks were told, after the restore
    assert "LR sweep at epoch 1, step 7" in " ".join(spy.seen[0].__notes__)
    assert t.global_step == 2  # one epoch of 2 batches; no sweep step counted


class NaNLoss(Classifier):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return super().training_step(batch, batch_idx) * float("nan")


def test_nan_from_the_first_step_keeps_the_lr_and_warns():
    sweep = LRSweep(num_steps=20)
    with pytest.warns(UserWarning, match=r"kept the LR at 0.05: no suggestion \(only 0 finite points.*became NaN/Inf"):
        trainer(callbacks=[sweep], limit_train_batches=2).fit(model := NaNLoss(), loader(n=64))
    record = sweep.history[0]
    assert record.result.stop_reason == "non_finite" and len(record.result.lrs) == 1
    assert record.suggested_lr is None and record.applied_lr is None
    assert model.hparams.lr == 0.05
    assert model.trainer.optimizers[0].param_groups[0]["lr"] == 0.05


class Wide(Classifier):
    """About 0.3M parameters: a snapshot kept alive per sweep would add ~3 MB (weights, grads, momentum)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 3))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class ManySweeps(Callback):
    """Runs ``count`` sweeps back to back at fit start, measuring memory after each."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.python: list[int] = []
        self.rss: list[int] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        config = SweepConfig(num_steps=5, early_stop_threshold=None, max_lr=1e-2)
        for _ in range(self.count):
            sweep_module.run_sweep(trainer, config)
            self.python.append(tracemalloc.get_traced_memory()[0])
            self.rss.append(rss_bytes())
        raise KeyboardInterrupt  # done: end the fit before training


def test_fifty_sweeps_do_not_grow_memory(monkeypatch):
    alive: list[weakref.ref] = []
    original = sweep_module.Snapshot

    def tracked(*args: Any, **kwargs: Any) -> Any:
        snapshot = original(*args, **kwargs)
        alive.append(weakref.ref(snapshot))
        return snapshot

    monkeypatch.setattr(sweep_module, "Snapshot", tracked)
    probe = ManySweeps(50)
    handler = signal.getsignal(signal.SIGINT)
    tracemalloc.start()
    try:
        with pytest.raises(SystemExit):
            trainer(callbacks=[probe]).fit(Wide(), loader(n=64))
    finally:
        tracemalloc.stop()
        signal.signal(signal.SIGINT, handler)
    assert len(alive) == 50 and all(ref() is None for ref in alive)  # every snapshot was released
    assert probe.python[-1] - probe.python[9] < 200_000  # Python objects: ~1 KB per sweep of interpreter noise
    assert probe.rss[-1] - probe.rss[9] < 15_000_000  # leaking even the weights alone would add ~40 MB
