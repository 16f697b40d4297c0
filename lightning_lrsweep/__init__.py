"""Learning-rate range test for PyTorch Lightning that keeps re-tuning as training goes on."""

from lightning_lrsweep.callback import LRSweep
from lightning_lrsweep.history import SweepRecord
from lightning_lrsweep.result import SweepResult
from lightning_lrsweep.tuner import LRSweepTuner

__version__ = "0.1.0"

__all__ = ["LRSweep", "LRSweepTuner", "SweepRecord", "SweepResult", "__version__"]
