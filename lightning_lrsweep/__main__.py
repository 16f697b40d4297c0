"""``python -m lightning_lrsweep`` runs the ``lrsweep`` command line."""

import sys

from lightning_lrsweep.cli import main

sys.exit(main())
