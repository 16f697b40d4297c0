"""Scenarios run under ``ModelParallelStrategy`` (CPU processes, gloo): FSDP2, tensor parallel, resume, 2-D mesh.

Every rank dumps what it saw into OUT (JSON, and its local shards as ``.pt``) for tests/test_ddp.py.

Usage: python tests/ddp_scripts/sweep_fsdp.py fsdp|2d OUT   (fsdp: 2 processes; 2d: 4, a 2 x 2 data x tensor mesh)
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the models helper

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
import torch.distributed  # noqa: E402
from lightning.pytorch import Callback, seed_everything  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.strategies import ModelParallelStrategy  # noqa: E402
from models import loader, trainer  # noqa: E402
from rank_report import FailsOnRank, caught, curve, lrs_of, main, same  # noqa: E402  (this folder)
from torch import nn  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module  # noqa: E402

from lightning_lrsweep import LRSweep, LRSweepTuner  # noqa: E402
from lightning_lrsweep.snapshot import Snapshot  # noqa: E402


def fixed_lr(result: Any) -> float:
    return 0.02


class ShardedMLP(FailsOnRank, pl.LightningModule):
    """An MLP sharded in ``configure_model``: FSDP2 over the data-parallel mesh, Colwise/Rowwise over the tensor one.

    It fails on one rank (see ``FailsOnRank``); in ``training_step`` after the forward, so every rank has run the
    forward's all-gathers.
    """

    def __init__(self, lr: float = 0.01, **faults: Any) -> None:
        super().__init__()
        self.save_hyperparameters("lr")
        self.net = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 3))
        self.init_faults(**faults)

    def configure_model(self) -> None:
        mesh = self.device_mesh
        if mesh["tensor_parallel"].size() > 1:
            parallelize_module(self.net, mesh["tensor_parallel"], {"0": ColwiseParallel(), "2": RowwiseParallel()})
        if mesh["data_parallel"].size() > 1:
            for layer in (self.net[0], self.net[2]):
                fully_shard(layer, mesh=mesh["data_parallel"])
            fully_shard(self.net, mesh=mesh["data_parallel"])

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.count("training_step")
        return self.recorded(loss)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def sharded_trainer(tp: bool = False, mesh2d: bool = False, **kwargs: Any) -> pl.Trainer:
    """2 processes, FSDP2 (``data_parallel_size=2``) or tensor parallel (``tp``); or 4 on a 2 x 2 mesh (``mesh2d``)."""
    data, tensor = (2, 2) if mesh2d else (1, 2) if tp else (2, 1)
    strategy = ModelParallelStrategy(data_parallel_size=data, tensor_parallel_size=tensor)
    return trainer(accelerator="cpu", devices=data * tensor, strategy=strategy, **kwargs)


def local(tensor: torch.Tensor) -> torch.Tensor:
    return (tensor.to_local() if isinstance(tensor, DTensor) else tensor).detach().clone()


def shards(module: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, torch.Tensor]:
    """This rank's local shards of the parameters and (if given) the optimizer state."""
    found = {name: local(p) for name, p in module.named_parameters()}
    if optimizer is not None:
        names = {p: name for name, p in module.named_parameters()}
        for param, state in optimizer.state.items():
            found |= {f"{names[param]}.{key}": local(value) for key, value in state.items()}
    return found


def history(sweep: LRSweep) -> list[dict[str, Any]]:
    return [
        {"epoch": r.epoch, "kind": r.kind, "curve": curve(r.result), "applied": r.applied_lr} for r in sweep.history
    ]


class SnapshotSize(Callback):
    """After the first step (Adam state exists): bytes a snapshot holds on this rank, and the full model's."""

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.sizes:
            return
        snapshot = Snapshot(pl_module, trainer.optimizers, [])
        full = sum(p.numel() * p.element_size() for p in pl_module.parameters())  # a DTensor's numel is global
        self.sizes = {"snapshot": snapshot.nbytes, "params_grads_adam": 4 * full}


def bit_for_bit(out: Path, rank: int, tp: bool) -> dict[str, Any]:
    """Sweeps at fit start and every epoch, applying a fixed LR, against a plain fit at that LR."""
    seed_everything(4)
    plain = ShardedMLP(lr=fixed_lr(None))
    plain_trainer = sharded_trainer(tp, max_epochs=3)
    plain_trainer.fit(plain, loader())
    seed_everything(4)
    swept, size = ShardedMLP(lr=0.01), SnapshotSize()
    sweep = LRSweep(every_n_epochs=1, suggestion=fixed_lr, num_steps=10, retune_num_steps=6)
    swept_trainer = sharded_trainer(tp, max_epochs=3, callbacks=[sweep, size])
    swept_trainer.fit(swept, loader())
    name = "tp" if tp else "fsdp2"
    torch.save(
        {
            "plain": shards(plain, plain_trainer.optimizers[0]),
            "swept": shards(swept, swept_trainer.optimizers[0]),
        },
        out / f"{name}_shards_{rank}.pt",
    )
    return {
        "history": history(sweep),
        "param_types": sorted({type(p).__name__ for p in swept.parameters()}),
        "snapshot_sizes": size.sizes,
    }


def tuner_curve(tp: bool = False, mesh2d: bool = False, val_batches: int = 0) -> dict[str, Any]:
    """One tuner sweep: the curve against this rank's own losses; the shards and optimizer untouched.

    With ``val_batches``, ``rank_losses`` alternates each step's training loss and its validation loss.
    """
    seed_everything(1)
    model = ShardedMLP(lr=0.01)
    t = sharded_trainer(tp, mesh2d)
    val = {"val_dataloaders": loader(), "val_batches": val_batches} if val_batches else {}
    result = LRSweepTuner(t).sweep(model, loader(), num_steps=8, early_stop_threshold=None, max_lr=1.0, **val)
    return {
        "curve": curve(result),
        "rank_losses": model.losses,
        "optimizer_state_empty": not t.optimizers[0].state,
        "suggestion": result.suggestion(),
    }


def restores_shards() -> dict[str, Any]:
    """A re-tune after real training: every rank's shards and Adam state afterwards are those from before."""
    seen: dict[str, Any] = {}

    class Probe(Callback):
        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if trainer.current_epoch == 1:
                seen["before"] = shards(pl_module, trainer.optimizers[0])

        def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
            if trainer.current_epoch == 1 and "after" not in seen:
                seen["after"] = shards(pl_module, trainer.optimizers[0])

    seed_everything(2)
    sweep = LRSweep(every_n_epochs=1, suggestion=fixed_lr, num_steps=6, retune_num_steps=6, max_change=1.0)
    probe = Probe()
    sharded_trainer(max_epochs=2, limit_train_batches=2, callbacks=[probe, sweep]).fit(ShardedMLP(), loader())
    return {
        "retunes": [r.epoch for r in sweep.history if r.kind == "retune"],
        "restored": same(seen["before"], seen["after"]),
        "has_adam_state": any(k.endswith("exp_avg") for k in seen["before"]),
    }


def one_rank_nan() -> dict[str, Any]:
    seed_everything(3)
    model = ShardedMLP(lr=0.01, nan_at=4)
    result = LRSweepTuner(sharded_trainer()).sweep(model, loader(), num_steps=20, max_lr=1e-2)
    return {"curve": curve(result), "calls": model.hook_calls["training_step"]}


def one_rank_raises(raise_in: str, raise_at: int, num_steps: int = 10) -> dict[str, Any]:
    """Rank 1 raises in ``raise_in`` at its ``raise_at``-th call: every rank stops, restores, and says which raised."""
    seed_everything(5)
    model = ShardedMLP(lr=0.01, raise_in=raise_in, raise_at=raise_at)
    before: dict[str, Any] = {}

    class Before(Callback):
        def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            before["shards"] = shards(pl_module)

    t = sharded_trainer(callbacks=[Before(), LRSweep(num_steps=num_steps)])
    return {
        "error": caught(lambda: t.fit(model, loader())),
        "restored": same(before["shards"], shards(model)),
        "optimizer_state_empty": not t.optimizers[0].state,
        "lrs": lrs_of(t),
    }


def resume(out: Path) -> dict[str, Any]:
    """A 3-epoch run against 2 epochs + a resume from their distributed checkpoint: same sweeps, same shards."""

    def run(max_epochs: int, ckpt_path: Path | None = None, **kwargs: Any) -> tuple[LRSweep, ShardedMLP, pl.Trainer]:
        seed_everything(6)
        # anneal=False: the 2-epoch leg would anneal over its own, shorter horizon
        sweep = LRSweep(every_n_epochs=1, num_steps=10, retune_num_steps=6, anneal=False)
        model = ShardedMLP(lr=0.01)
        t = sharded_trainer(max_epochs=max_epochs, **kwargs)
        t.callbacks.insert(0, sweep)  # type: ignore[attr-defined]
        t.fit(model, loader(), ckpt_path=ckpt_path)
        return sweep, model, t

    straight, straight_model, straight_trainer = run(3)
    checkpoint = ModelCheckpoint(dirpath=out / "ckpt", filename="two_epochs")
    run(2, callbacks=[checkpoint], enable_checkpointing=True)
    path = out / "ckpt" / "two_epochs.ckpt"
    resumed, resumed_model, resumed_trainer = run(3, path)
    return {
        "checkpoint_is_a_directory": path.is_dir(),
        "straight": history(straight),
        "resumed": history(resumed),
        "hparams_lr": [float(straight_model.hparams.lr), float(resumed_model.hparams.lr)],
        "resumed_training_steps": resumed_model.hook_calls["training_step"],
        "same_shards": same(
            shards(straight_model, straight_trainer.optimizers[0]), shards(resumed_model, resumed_trainer.optimizers[0])
        ),
    }


def example() -> dict[str, Any]:
    """``examples/fsdp2.py`` as written, on these 2 processes, on its smoke budget."""
    os.environ["LRSWEEP_SMOKE"] = "1"
    script = Path(__file__).resolve().parents[2] / "examples" / "fsdp2.py"
    sweep = runpy.run_path(str(script), run_name="example")["main"]()
    return {"history": history(sweep)}


def multinode() -> dict[str, Any]:
    """Under torchrun, one process per node (``data_parallel_size`` = nodes): the curves and the LR each ends with."""
    seed_everything(7)
    model = ShardedMLP(lr=0.01)
    sweep = LRSweep(num_steps=10, every_n_epochs=1, retune_num_steps=6, anneal=False)  # the LR ends as applied
    t = trainer(
        accelerator="cpu",
        strategy=ModelParallelStrategy(),
        devices=1,
        num_nodes=2,
        max_epochs=2,
        limit_train_batches=2,
        callbacks=[sweep],
    )
    t.fit(model, loader())
    return {
        "data_parallel_size": t.strategy.device_mesh["data_parallel"].size(),
        "history": history(sweep),
        "lrs": lrs_of(t),
        "hparams_lr": float(model.hparams.lr),
    }


def report(mode: str, out: Path, rank: int) -> dict[str, Any]:
    if mode == "2d":
        return {"tuner": tuner_curve(mesh2d=True)}
    return {
        "fsdp2_bit_for_bit": bit_for_bit(out, rank, tp=False),
        "tp_bit_for_bit": bit_for_bit(out, rank, tp=True),
        "fsdp2_tuner": tuner_curve(tp=False),
        "tp_tuner": tuner_curve(tp=True),
        "tp_tuner_val": tuner_curve(tp=True, val_batches=1),
        "restores_shards": restores_shards(),
        "one_rank_nan": one_rank_nan(),
        "raises_after_forward": one_rank_raises("training_step", raise_at=3),
        "raises_in_backward": one_rank_raises("backward", raise_at=3),
        "raises_in_last_optimizer_step": one_rank_raises("on_before_optimizer_step", raise_at=5, num_steps=5),
        "resume": resume(out),
        "example": example(),
    }


if __name__ == "__main__":
    main(report)
