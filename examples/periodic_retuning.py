"""Periodic re-tuning: sweep at fit start and again every epoch; log to CSV; plot the history.

Run: python examples/periodic_retuning.py [OUT_DIR]
LRSWEEP_SMOKE=1: a smoke run of 7-20 s on a 2-core CPU, about half of it importing Lightning and torch.
Writes OUT_DIR/history.png and OUT_DIR/logs/ (metrics.csv with lr_sweep/* columns, lr_sweep/epoch=N.csv|png).
"""

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger

from lightning_lrsweep import LRSweep
from lightning_lrsweep.demo import SpiralData, SpiralNet

SMOKE = os.environ.get("LRSWEEP_SMOKE") == "1"


def main(out: Path) -> LRSweep:
    seed_everything(0)
    sweep = LRSweep(every_n_epochs=1, num_steps=20 if SMOKE else 100, retune_num_steps=10 if SMOKE else 40)
    trainer = Trainer(
        max_epochs=2 if SMOKE else 8,
        callbacks=[sweep],
        logger=CSVLogger(out, name="logs"),
        enable_checkpointing=False,
        accelerator="cpu",
    )
    trainer.fit(SpiralNet(lr=1e-3), datamodule=SpiralData(n=256 if SMOKE else 2048))
    print(sweep.history_frame()[["epoch", "kind", "steps", "suggested_lr", "applied_lr", "reason"]])
    sweep.plot_history(out / "history.png")
    return sweep


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "lrsweep_out"))
