"""Sharded training (FSDP2): LRSweep with ModelParallelStrategy and `fully_shard`, on 2 CPU processes.

Run: python examples/fsdp2.py   (on GPUs: accelerator="gpu", devices=N, data_parallel_size=N)
LRSWEEP_SMOKE=1: a smoke run of 14 s on a busy 2-core CPU, most of it starting the 2 processes.
"""

import os

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.fsdp import fully_shard

from lightning_lrsweep import LRSweep
from lightning_lrsweep.demo import SpiralData

SMOKE = os.environ.get("LRSWEEP_SMOKE") == "1"


class ShardedNet(LightningModule):
    def __init__(self, lr: float = 1e-3, hidden: int = 256) -> None:
        super().__init__()
        self.save_hyperparameters()  # LRSweep writes the tuned LR to hparams.lr
        self.net = nn.Sequential(
            nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 3)
        )

    def configure_model(self) -> None:
        mesh = self.device_mesh["data_parallel"]
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)  # each rank keeps 1/world_size of each layer's parameters
        fully_shard(self.net, mesh=mesh)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)  # built after configure_model


def main() -> LRSweep:
    seed_everything(0)
    sweep = LRSweep(num_steps=20 if SMOKE else 100, every_n_epochs=2)  # fit-start sweep, re-tune every 2 epochs
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1),
        max_epochs=2 if SMOKE else 6,
        callbacks=[sweep],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    model = ShardedNet()
    trainer.fit(model, datamodule=SpiralData(n=512 if SMOKE else 4096))
    if trainer.is_global_zero:
        applied = [f"{r.applied_lr:.3g}" for r in sweep.history if r.applied_lr is not None]
        print(f"rank 0: {len(sweep.history)} sweeps, LRs applied {applied}; training ended at {model.hparams.lr:.3g}")
    return sweep


if __name__ == "__main__":
    main()
