"""LightningCLI with LRSweep configured in YAML.

Run: python examples/cli.py fit --config examples/cli_config.yaml
Flags override the file, e.g. --trainer.max_epochs=2 or, for the callback,
--trainer.callbacks+=lightning_lrsweep.LRSweep --trainer.callbacks.every_n_epochs=2
"""

from lightning.pytorch.cli import LightningCLI

from lightning_lrsweep.demo import SpiralData, SpiralNet


def main(args=None):
    return LightningCLI(SpiralNet, SpiralData, args=args, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
