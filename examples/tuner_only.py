"""Tuner only: one sweep without training; compare the suggestion methods; save the curve.

Run: python examples/tuner_only.py [OUT_DIR]
LRSWEEP_SMOKE=1: a smoke run of 7-20 s on a 2-core CPU, about half of it importing Lightning and torch.
"""

import os
import sys
from pathlib import Path

from lightning.pytorch import Trainer, seed_everything

from lightning_lrsweep import LRSweepTuner
from lightning_lrsweep.demo import SpiralData, SpiralNet

SMOKE = os.environ.get("LRSWEEP_SMOKE") == "1"


def main(out: Path) -> float | None:
    seed_everything(0)
    model = SpiralNet()
    trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_model_summary=False)
    result = LRSweepTuner(trainer).sweep(model, datamodule=SpiralData(n=256), num_steps=20 if SMOKE else 100)
    for method in ("valley", "steepest", "minimum", "sma_slope"):
        print(f"{method:>10}: {result.suggestion(method)}")
    result.save(out, stem="tuner")  # tuner.csv and tuner.png (loss and rate of change against LR)
    model.hparams.lr = result.suggestion()  # the model is untouched: apply the LR yourself
    return model.hparams.lr


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "lrsweep_out"))
