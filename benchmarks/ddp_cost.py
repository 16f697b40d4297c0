"""Sweep time per step under DDP (2 CPU processes, gloo) against one process, as a ratio measured in one run.

Usage: python benchmarks/ddp_cost.py [--steps 60] [--width 256]; ``python -m benchmarks.run`` renders the same
measurement as the report's "Sweep cost under DDP" section.

Each process gets the same per-device batch, so under DDP the global batch doubles while the work per process
stays the same: the ratio is the price of distribution per sweep step (the gradient all-reduce that every DDP
step pays, plus the sweep's own scalar all-reduce of the loss). The one-process run happens here; the DDP run
is this script again under ``strategy="ddp"``, whose rank 0 writes its timing to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_lrsweep import LRSweepTuner


class MLP(pl.LightningModule):
    def __init__(self, width: int, lr: float = 0.01) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(
            nn.Linear(32, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 4)
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def seconds_per_step(devices: int, strategy: str, steps: int, width: int) -> float:
    """Median over 3 timed sweeps (after one warm-up) of wall time per sweep step."""
    pl.seed_everything(0)
    x, y = torch.randn(4096, 32), torch.randint(0, 4, (4096,))
    data = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    timings = []
    for i in range(4):
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=devices,
            strategy=strategy,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        n = steps if i else 10
        result = LRSweepTuner(trainer).sweep(MLP(width), data, num_steps=n, max_lr=1e-2, early_stop_threshold=None)
        if i:
            timings.append(result.seconds / len(result.lrs))
    return sorted(timings)[1]


def scalar_all_reduce_seconds(repeats: int = 200) -> float:
    """Wall time of the sweep's own per-step collective: one all-reduce of 3 float64 numbers."""
    stats = torch.zeros(3, dtype=torch.float64)
    torch.distributed.barrier()
    started = time.perf_counter()
    for _ in range(repeats):
        torch.distributed.all_reduce(stats)
    return (time.perf_counter() - started) / repeats


def measure(steps: int, width: int) -> dict[str, float]:
    """Both measurements in one run: one process here, then this script again under ``ddp`` on 2 processes."""
    single = seconds_per_step(1, "auto", steps, width)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ddp.json"
        cmd = [sys.executable, __file__, "--steps", str(steps), "--width", str(width), "--ddp-out", str(out)]
        started = time.perf_counter()
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
        launch = time.perf_counter() - started
        measured = json.loads(out.read_text())
    return {
        "single_s": single,
        "ddp_s": measured["seconds_per_step"],
        "reduce_s": measured["scalar_all_reduce"],
        "launch_s": launch,
    }


def run(cache: Any, cfg: Any, log: Any = print) -> dict[str, Any]:
    """The report's DDP row, cached like every other benchmark run."""
    from benchmarks.peers import ours_fingerprint  # imported here: this file also runs as a script

    steps, width = (10, 64) if cfg.quick else (60, 256)
    key = {"task": "ddp_mlp", "steps": steps, "width": width, "package": ours_fingerprint()}

    def fn() -> dict[str, Any]:
        log(f"[ddp] sweep step, 1 process vs ddp on 2 processes ({steps} steps, width {width})")
        return measure(steps, width)

    return {**cache.get("ddp", key, fn), "steps": steps, "width": width}


def render(res: dict[str, Any]) -> str:
    from benchmarks.markdown import table  # imported here: this file also runs as a script

    single, ddp, reduce = res["single_s"], res["ddp_s"], res["reduce_s"]
    rows = [
        ["1 process", f"{single * 1e3:.2f}", "1.00", "—"],
        [
            "`ddp`, 2 processes (gloo; global batch ×2)",
            f"{ddp * 1e3:.2f}",
            f"{ddp / single:.2f}",
            f"{reduce * 1e3:.3f} ({reduce / ddp:.0%} of the step)",
        ],
    ]
    return (
        "# Sweep cost under DDP\n\n"
        f"`LRSweepTuner.sweep` on a 3-layer MLP of width {res['width']}, SGD, batch 64 per process, {res['steps']} "
        "steps, median of 3 timed sweeps per setting, one thread per process; both settings measured in one run "
        "(`benchmarks/ddp_cost.py`). On this shared 2-core machine the two DDP processes compete with each other and "
        "with other jobs, so the ratio swings with the load; the sweep's own cost is the "
        "one scalar all-reduce per micro-batch.\n\n"
        + table(["run", "ms / sweep step", "÷ 1 process", "the sweep's scalar all-reduce, ms"], rows)
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--ddp-out", help=argparse.SUPPRESS)  # set when this script runs as the DDP measurement
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core per process, in both measurements
    if args.ddp_out:
        per_step = seconds_per_step(2, "ddp", args.steps, args.width)
        reduce = scalar_all_reduce_seconds()  # the process group outlives the trainer
        if int(os.environ.get("LOCAL_RANK", 0)) == 0:
            Path(args.ddp_out).write_text(json.dumps({"seconds_per_step": per_step, "scalar_all_reduce": reduce}))
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()  # a gloo group alive at exit can abort the process
        return
    m = measure(args.steps, args.width)
    ddp, reduce = m["ddp_s"], m["reduce_s"]
    print(f"sweep step, 1 process:        {m['single_s'] * 1e3:8.2f} ms")
    print(f"sweep step, ddp 2 processes:  {ddp * 1e3:8.2f} ms   (global batch x2; launch took {m['launch_s']:.0f} s)")
    print(f"  of which the sweep's scalar all-reduce: {reduce * 1e3:.3f} ms ({reduce / ddp:.0%} of the step)")
    print(f"ddp / single ratio:           {ddp / m['single_s']:8.2f}")


if __name__ == "__main__":
    main()
