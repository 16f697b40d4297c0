"""What the sweep needs from distributed training: strategies it refuses, replicas, and ``ddp_spawn`` results.

Under data-parallel strategies (``ddp``, ``ddp_spawn``, multi-node) every rank holds the whole model, so each
rank snapshots and restores its own copy, and one all-reduce per step makes the curve and the stop decision the
same everywhere (see :mod:`lightning_lrsweep.steps`). Under ``ModelParallelStrategy`` (FSDP2's ``fully_shard``,
tensor parallelism, or both on a 2-D mesh) each rank snapshots and restores its own *shards*, which is as exact
and needs no communication; the loss is averaged over data-parallel replicas, since the tensor-parallel ranks
of one replica compute the loss of the same batch.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.strategies import ModelParallelStrategy, Strategy
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

_REFUSED = ("FSDP", "DeepSpeed")
"""Strategy class names (parts of) that Lightning runs on CUDA only, where the sweep has not been tested."""


def check_strategy(trainer: pl.Trainer) -> None:
    """Refuse FSDP1 (``FSDPStrategy``) and DeepSpeed, before any step runs.

    Lightning runs both only on CUDA, so their shards' snapshot and restore could not be tested here.
    ``ModelParallelStrategy`` with ``fully_shard`` shards the same way (FSDP2) and is supported.

    Raises:
        ValueError: the trainer's strategy is ``FSDPStrategy`` or a DeepSpeed strategy.
    """
    strategy = trainer.strategy
    name = type(strategy).__name__
    if not isinstance(strategy, ModelParallelStrategy) and any(part in name for part in _REFUSED):
        raise ValueError(
            f"LRSweep does not support `{name}`: Lightning runs it on CUDA only, and the sweep's exact copy and "
            "restore of sharded state is tested with `ModelParallelStrategy`. To shard, use "
            "`strategy=ModelParallelStrategy()` and apply `fully_shard` (FSDP2) in `configure_model`; also "
            "supported: one device, `strategy='ddp'` (also with `num_nodes>1`, torchrun, SLURM) and "
            "`strategy='ddp_spawn'`."
        )


def data_parallel_replicas(strategy: Strategy, world_size: int) -> tuple[int, bool]:
    """How many data-parallel replicas there are, and whether this rank's loss stands for its replica.

    Under ``ModelParallelStrategy`` the ranks of one ``tensor_parallel`` group see the same batch and compute
    the same loss: the first of them counts it. Under every other strategy each rank is its own replica.
    """
    if isinstance(strategy, ModelParallelStrategy):
        mesh = strategy.device_mesh
        return mesh["data_parallel"].size(), mesh["tensor_parallel"].get_local_rank() == 0
    return world_size, True


class SpawnReturn:
    """A one-way channel from global rank 0 of a launched worker process back to the process that created it.

    ``ddp_spawn`` (and the fork-based ``ddp_notebook``) run ``fit`` on copies of the callbacks in worker
    processes, and Lightning sends home only the weights and ``callback_metrics``. An object that creates a
    ``SpawnReturn`` in the main process keeps it in its copies: rank 0 of a worker writes its value to a private
    temporary file, and the main process reads it (once) when it asks. Under ``ddp``, torchrun and SLURM every
    rank builds its own objects, so no copy is ever in another process and nothing is written.
    """

    def __init__(self) -> None:
        self.path = Path(tempfile.gettempdir()) / f"lrsweep-{uuid.uuid4().hex}.pkl"
        self.owner = os.getpid()
        weakref.finalize(self, _discard, self.path, self.owner)

    @property
    def in_worker(self) -> bool:
        """Whether this copy lives in a process other than the one that created it."""
        return os.getpid() != self.owner

    def send(self, value: Any) -> None:
        """Write ``value`` for the main process; does nothing outside a worker. Call on global rank 0 only."""
        if not self.in_worker:
            return
        try:
            data = pickle.dumps(value)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:  # e.g. a lambda under a fork launcher
            rank_zero_warn(f"LRSweep could not send its results to the main process ({exc}); they stay in the worker.")
            return
        partial = self.path.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(self.path)

    def receive(self) -> Any | None:
        """The value last sent, once, in the process that created the channel; ``None`` when there is none."""
        if self.in_worker or not self.path.exists():
            return None
        value = pickle.loads(self.path.read_bytes())  # noqa: S301 - written by our own worker process
        self.path.unlink()
        return value


def _discard(path: Path, owner: int) -> None:
    if os.getpid() == owner:
        path.unlink(missing_ok=True)
