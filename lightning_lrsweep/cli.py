"""The ``lrsweep`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrsweep", description="LR range tests for PyTorch Lightning.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="fit a small model on a built-in dataset, re-tuning the LR every epoch",
        description="Fit a small MLP on built-in 2-D spirals with LRSweep(every_n_epochs=1); print every sweep and "
        "write each loss curve as CSV and PNG.",
    )
    demo.add_argument("--out", default="lrsweep_out", help="folder for the curves (default: %(default)s)")
    demo.add_argument("--epochs", type=int, default=5, help="epochs to train (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        if args.epochs < 1:
            print(f"lrsweep demo: error: --epochs must be >= 1, got {args.epochs}", file=sys.stderr)
            return 2
        from lightning_lrsweep.demo import run_demo

        run_demo(out=args.out, epochs=args.epochs, seed=args.seed, quiet=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
