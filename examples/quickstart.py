"""Quickstart: find the LR at fit start, then train with it.

Run: python examples/quickstart.py
LRSWEEP_SMOKE=1: a smoke run of 7-20 s on a 2-core CPU, about half of it importing Lightning and torch.
"""

import os

from lightning.pytorch import Trainer, seed_everything

from lightning_lrsweep import LRSweep
from lightning_lrsweep.demo import SpiralData, SpiralNet

SMOKE = os.environ.get("LRSWEEP_SMOKE") == "1"


def main() -> LRSweep:
    seed_everything(0)
    model = SpiralNet(lr=1e-3)  # the LR lives in hparams.lr and configure_optimizers reads it
    data = SpiralData(n=256 if SMOKE else 2048)
    sweep = LRSweep(num_steps=20 if SMOKE else 100)  # one sweep at fit start; the suggestion is applied
    trainer = Trainer(
        max_epochs=1 if SMOKE else 5, callbacks=[sweep], logger=False, enable_checkpointing=False, accelerator="cpu"
    )
    trainer.fit(model, datamodule=data)
    record = sweep.history[0]
    print(f"suggested LR {record.suggested_lr:.3g}; training ran at {model.hparams.lr:.3g}")
    return sweep


if __name__ == "__main__":
    main()
