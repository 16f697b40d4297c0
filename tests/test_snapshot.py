import random

import numpy as np
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_lrsweep.snapshot import Snapshot


class WithMetric(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        self.acc = MulticlassAccuracy(num_classes=4)


def test_restore_brings_back_params_buffers_grads_optimizer_scheduler_metrics_and_rngs():
    model = WithMetric()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    gen = torch.Generator().manual_seed(5)
    loader = torch.utils.data.DataLoader(list(range(8)), shuffle=True, generator=gen)
    model.body(torch.randn(8, 4)).sum().backward()
    opt.step()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    moments = [s["exp_avg"].clone() for s in opt.state.values()]
    params = list(model.parameters())

    snap = Snapshot(model, [opt], [sched], data=loader, device="cpu")
    expected = (torch.rand(3), np.random.rand(), random.random(), torch.rand(2, generator=gen))
    # now mutate everything
    model.train()
    model.body(torch.randn(8, 4) * 5).sum().backward()
    opt.step()
    sched.step()
    model.acc.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    model.eval()
    snap.restore()

    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(a, p.grad) for a, p in zip(grads, model.parameters(), strict=True))
    assert all(torch.equal(a, s["exp_avg"]) for a, s in zip(moments, opt.state.values(), strict=True))
    assert list(model.parameters()) == params  # same objects: the optimizer still points at them
    assert opt.param_groups[0]["lr"] == 0.1 and sched.last_epoch == 0
    assert model.acc._update_count == 0 and model.acc.tp.sum() == 0
    again = (torch.rand(3), np.random.rand(), random.random(), torch.rand(2, generator=gen))
    assert torch.equal(expected[0], again[0]) and expected[1] == again[1] and expected[2] == again[2]
    assert torch.equal(expected[3], again[3])


def test_empty_optimizer_state_is_empty_again():
    model = nn.Linear(2, 1)
    opt = torch.optim.Adam(model.parameters())
    snap = Snapshot(model, [opt], [])
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    snap.restore()
    assert len(opt.state) == 0


def test_nbytes_counts_params_buffers_grads_and_optimizer_state():
    model = nn.Linear(4, 2)  # 10 float32 parameters
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    assert Snapshot(model, [opt], []).nbytes == 10 * 4  # no gradients, no Adam state yet
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    step_counters = sum(s["step"].nbytes for s in opt.state.values())
    assert Snapshot(model, [opt], []).nbytes == 4 * 10 * 4 + step_counters  # params, grads, exp_avg, exp_avg_sq
