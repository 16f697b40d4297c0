"""LightningCLI with LRSweep configured in YAML, and a `sweep` subcommand.

Train: python examples/cli.py fit --config examples/cli_config.yaml
Sweep once, without training: python examples/cli.py sweep --config examples/cli_config.yaml --sweep.num_steps 50
Flags override the file, e.g. --trainer.max_epochs=2 or, for the callback,
--trainer.callbacks+=lightning_lrsweep.LRSweep --trainer.callbacks.every_n_epochs=2
"""

from lightning_lrsweep.cli import LRSweepCLI
from lightning_lrsweep.demo import SpiralData, SpiralNet


def main(args=None):
    # LRSweepCLI is LightningCLI plus the `sweep` subcommand
    return LRSweepCLI(SpiralNet, SpiralData, args=args, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
