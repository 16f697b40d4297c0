"""A low-confidence fit-start sweep warns, and with ``low_confidence="keep"`` keeps the user's LR."""

import pytest
import torch
from lightning.pytorch import LightningModule
from models import fit
from torch.utils.data import DataLoader, TensorDataset

from lightning_lrsweep import LRSweep


class NoiseOnly(LightningModule):
    """Its loss is the batch's noise: no LR changes it, so a sweep shows a flat, noisy curve."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__()
        self.lr = lr
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return 1.0 + x.mean() + 0.0 * self.w.sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def noise_loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(512, 4, generator=torch.Generator().manual_seed(0))), batch_size=8)


@pytest.mark.parametrize(("action", "kept"), [("warn", False), ("keep", True)], ids=["warn", "keep"])
def test_a_low_confidence_sweep_warns_and_keeps_the_lr_when_asked(action, kept):
    sweep = LRSweep(num_steps=60, low_confidence=action, early_stop_threshold=None)
    with pytest.warns(UserWarning, match="low confidence"):
        model, _ = fit(NoiseOnly, [sweep], seed=0, data=noise_loader(), max_steps=2)
    record = sweep.history[0]
    assert record.suggested_lr is not None and record.result.confidence < sweep.settings.min_confidence
    assert (model.lr == 0.01) == kept
    assert (record.applied_lr is None) == kept


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_confidence": 1.5}, r"`min_confidence` must be a number in \[0, 1\], got 1.5"),
        ({"low_confidence": "skip"}, r"`low_confidence` must be one of \('warn', 'keep'\), got 'skip'"),
    ],
    ids=["min_confidence", "low_confidence"],
)
def test_bad_confidence_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LRSweep(**kwargs)
