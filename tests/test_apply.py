"""Applying an LR: attribute, param groups (ratios kept), schedulers that continue from the new value.

In a fit, against a plain fit at the applied LR, for every kind of scheduler: test_compat.py.
"""

import pytest
import torch
from lightning.pytorch import Callback
from models import Classifier, loader, trainer

from lightning_lrsweep import LRSweep
from lightning_lrsweep.apply import apply_lr, find_lr_attr


def sgd(*lrs):
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs])


def test_param_groups_keep_their_ratio_and_the_attribute_moves():
    model = Classifier(lr=0.1)
    opt = sgd(0.1, 0.01)
    apply_lr(model, opt, [], old=0.1, new=0.4, attr_name="lr")
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.4, 0.04])
    assert model.hparams.lr == 0.4


def test_step_scheduler_continues_from_the_new_value():
    opt = sgd(0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    apply_lr(Classifier(), opt, [sched], old=0.1, new=0.3, attr_name=None)
    assert sched.base_lrs == [0.3]
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.15)


def test_onecycle_peak_becomes_the_new_lr():
    opt = sgd(0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    apply_lr(Classifier(), opt, [sched], old=0.1, new=0.5, attr_name=None)
    peak = 0.0
    for _ in range(9):
        opt.step()
        sched.step()
        peak = max(peak, opt.param_groups[0]["lr"])
    assert peak == pytest.approx(0.5, rel=1e-6)


def test_find_lr_attr_prefers_lr_then_learning_rate():
    assert find_lr_attr(Classifier()) == "lr"

    class Other(Classifier):
        def __init__(self):
            super().__init__()
            self.learning_rate = 0.3
            del self.hparams["lr"]

    assert find_lr_attr(Other()) == "learning_rate"


class Moments(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        self.before = {id(p): s["exp_avg"].clone() for p, s in trainer.optimizers[0].state.items()}


def test_retune_keeps_optimizer_moments():
    moments = Moments()

    class Check(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                state = trainer.optimizers[0].state
                self.same = all(torch.equal(s["exp_avg"], moments.before[id(p)]) for p, s in state.items())

    check = Check()
    sweep = LRSweep(
        every_n_epochs=1, num_steps=10, retune_num_steps=10, suggestion=lambda r: 0.01, retune_suggestion=lambda r: 0.02
    )
    # LRSweep first in the list: its re-tune runs before Check looks at the moments
    trainer(max_epochs=2, callbacks=[moments, sweep, check]).fit(Classifier(lr=0.01, optimizer="adam"), loader())
    assert check.same
    assert sweep.history[1].applied_lr == pytest.approx(0.02)
