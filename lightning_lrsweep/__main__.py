"""``python -m lightning_lrsweep`` runs the ``lrsweep`` command line."""

import sys

from lightning_lrsweep.cli import main

if __name__ == "__main__":  # not on import (the API docs import every module to read the generated docstrings)
    sys.exit(main())
