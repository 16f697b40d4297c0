"""Learning-rate range test for PyTorch Lightning that keeps re-tuning as training goes on."""

__version__ = "0.1.0"
