"""Snapshot memory and sweep step time under FSDP2 (``ModelParallelStrategy`` + ``fully_shard``, 2 CPU processes).

Usage: python benchmarks/fsdp_cost.py [--steps 40] [--width 512]; ``python -m benchmarks.run`` renders the same
measurement as the report's "Sweep cost under FSDP2" section.

Memory: the bytes a :class:`~lightning_lrsweep.snapshot.Snapshot` holds on each rank after training steps (parameters,
gradients and Adam moments all exist), against the whole model's parameters + gradients + optimizer state; a
sharded snapshot should hold ``1/world_size`` of it. Time: a sweep step (``LRSweepTuner.sweep``, snapshot and
restore included) against a plain FSDP2 training step, alternating plain fits and sweeps in one run on the same
2 processes (median of ``--repeats`` each). The script runs itself on 2 processes; each rank writes its figures
to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_lrsweep import LRSweepTuner
from lightning_lrsweep.snapshot import Snapshot


class ShardedMLP(pl.LightningModule):
    """A 3-layer MLP, each ``Linear`` and the whole net sharded with ``fully_shard``; Adam."""

    def __init__(self, width: int, lr: float = 1e-3) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(
            nn.Linear(32, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 4)
        )

    def configure_model(self) -> None:
        mesh = self.device_mesh["data_parallel"]
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(self.net, mesh=mesh)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def _global_nbytes(tensor: torch.Tensor) -> int:
    """Bytes of the whole tensor: a ``DTensor``'s global size, else its own."""
    return tensor.numel() * tensor.element_size()  # a DTensor's numel() is the global one


def full_state_nbytes(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """The whole (unsharded) model's parameter, gradient and optimizer-state bytes."""
    params = list(module.parameters())
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return {
        "params": sum(_global_nbytes(p) for p in params),
        "grads": sum(_global_nbytes(p.grad) for p in params if p.grad is not None),
        "optimizer": sum(_global_nbytes(v) for v in state),
        "sharded": int(all(isinstance(p, DTensor) for p in params)),
    }


class StepClock(pl.Callback):
    """Seconds per training step of a plain fit (first batch start to last batch end), and the snapshot size then."""

    def __init__(self) -> None:
        self.started = 0.0
        self.per_step = 0.0
        self.memory: dict[str, int] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == 0:
            self.started = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.per_step = (time.perf_counter() - self.started) / trainer.global_step
        optimizer = trainer.optimizers[0]
        self.memory = {
            "snapshot": Snapshot(pl_module, [optimizer], []).nbytes,
            **full_state_nbytes(pl_module, optimizer),
        }


def _trainer(**kwargs: Any) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def measure_rank(steps: int, width: int, repeats: int = 3) -> dict[str, Any]:
    """On each rank: plain FSDP2 fits and sweeps of ``steps`` steps, alternating; medians of their step times."""
    pl.seed_everything(0)
    x, y = torch.randn(8192, 32), torch.randint(0, 4, (8192,))
    data = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    plain, swept, memory = [], [], {}
    for _ in range(repeats):
        clock = StepClock()
        _trainer(max_steps=steps, callbacks=[clock]).fit(ShardedMLP(width), data)
        plain.append(clock.per_step)
        memory = clock.memory
        result = LRSweepTuner(_trainer()).sweep(
            ShardedMLP(width), data, num_steps=steps, max_lr=1e-2, early_stop_threshold=None
        )
        swept.append(result.seconds / len(result.lrs))
    return {"plain_s": statistics.median(plain), "sweep_s": statistics.median(swept), "memory": memory}


def measure(steps: int, width: int, repeats: int = 3) -> dict[str, Any]:
    """This script again on 2 processes under ``ModelParallelStrategy``; what each rank measured."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "--steps", str(steps), "--width", str(width), "--repeats", str(repeats)]
        cmd += ["--rank-out", tmp]
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
        ranks = [json.loads((Path(tmp) / f"rank_{rank}.json").read_text()) for rank in (0, 1)]
    return {"ranks": ranks}


def run(cache: Any, cfg: Any, log: Any = print) -> dict[str, Any]:
    """The report's FSDP2 rows, cached like every other benchmark run."""
    from benchmarks.peers import ours_fingerprint  # imported here: this file also runs as a script

    steps, width, repeats = (8, 64, 1) if cfg.quick else (40, 512, 3)
    key = {"task": "fsdp2_mlp", "steps": steps, "width": width, "repeats": repeats, "package": ours_fingerprint()}

    def fn() -> dict[str, Any]:
        log(f"[fsdp] snapshot bytes and sweep step vs plain FSDP2 step, 2 processes ({steps} steps, width {width})")
        return measure(steps, width, repeats)

    return {**cache.get("fsdp", key, fn), "steps": steps, "width": width, "repeats": repeats}


def summary(res: dict[str, Any]) -> dict[str, float]:
    """The two goals' figures: each rank's snapshot share of the full state, and sweep ÷ plain step time."""
    ranks = res["ranks"]
    memory = ranks[0]["memory"]
    full = memory["params"] + memory["grads"] + memory["optimizer"]
    shares = [r["memory"]["snapshot"] / full for r in ranks]
    ratios = [r["sweep_s"] / r["plain_s"] for r in ranks]
    return {"full_bytes": full, "max_share": max(shares), "min_share": min(shares), "max_ratio": max(ratios)}


def render(res: dict[str, Any]) -> str:
    from benchmarks.markdown import table  # imported here: this file also runs as a script

    ranks, s = res["ranks"], summary(res)
    full = s["full_bytes"]
    rows = [
        [
            f"rank {i}",
            f"{r['memory']['snapshot'] / 1e6:.3f}",
            f"{r['memory']['snapshot'] / full:.3f}",
            f"{r['plain_s'] * 1e3:.2f}",
            f"{r['sweep_s'] * 1e3:.2f}",
            f"{r['sweep_s'] / r['plain_s']:.2f}",
        ]
        for i, r in enumerate(ranks)
    ]
    memory_goal = "met" if s["max_share"] <= 0.5 * 1.05 else "NOT met"
    time_goal = "met" if s["max_ratio"] <= 1.10 else "NOT met"
    return (
        "# Sweep cost under FSDP2\n\n"
        f"`ModelParallelStrategy(data_parallel_size=2)` with `fully_shard` on each layer of a 3-layer MLP of width "
        f"{res['width']} (Adam, batch 64 per process), 2 CPU processes (gloo), one thread each "
        "(`benchmarks/fsdp_cost.py`). Memory: the bytes a sweep's snapshot holds on each rank after training steps, "
        f"against the whole model's parameters + gradients + Adam state ({full / 1e6:.3f} MB); the goal is "
        f"1/2 within 5%: **{memory_goal}** (largest share {s['max_share']:.3f}). Time: a sweep step "
        "(`LRSweepTuner.sweep`, snapshot and restore included) against a plain FSDP2 training step, "
        f"{res['steps']} steps each, plain fits and sweeps alternating in one run, median of {res['repeats']}; "
        f"the goal is ≤ 1.10: **{time_goal}** (largest ratio {s['max_ratio']:.2f}). On this shared 2-core machine the "
        "two processes compete with each other and with other jobs, so step times swing with the load.\n\n"
        + table(["rank", "snapshot MB", "÷ full state", "plain ms / step", "sweep ms / step", "sweep ÷ plain"], rows)
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rank-out", help=argparse.SUPPRESS)  # set when this script runs on the 2 processes
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core per process
    if args.rank_out:
        measured = measure_rank(args.steps, args.width, args.repeats)
        rank = torch.distributed.get_rank()
        (Path(args.rank_out) / f"rank_{rank}.json").write_text(json.dumps(measured))
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()  # a gloo group alive at exit can abort the process
        return
    res = measure(args.steps, args.width, args.repeats)
    s = summary(res)
    print(f"full model parameters + gradients + Adam state: {s['full_bytes'] / 1e6:.3f} MB")
    for i, r in enumerate(res["ranks"]):
        share, ratio = r["memory"]["snapshot"] / s["full_bytes"], r["sweep_s"] / r["plain_s"]
        print(f"rank {i}: snapshot {share:.3f} of it; step {r['plain_s'] * 1e3:.2f} ms plain, ", end="")
        print(f"{r['sweep_s'] * 1e3:.2f} ms in a sweep (x{ratio:.2f})")


if __name__ == "__main__":
    main()
