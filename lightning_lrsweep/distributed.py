"""What the sweep needs from distributed training: strategies it refuses, and results sent home from ``ddp_spawn``.

Under data-parallel strategies (``ddp``, ``ddp_spawn``, multi-node) the engine needs nothing from here: every
rank holds the whole model, so each rank snapshots and restores its own copy, and one all-reduce per step makes
the curve and the stop decision the same everywhere (see :mod:`lightning_lrsweep.sweep`).
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
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

_SHARDED = ("FSDP", "DeepSpeed", "ModelParallel")
"""Strategy class names (parts of) that shard parameters or optimizer state across ranks."""


def check_strategy(trainer: pl.Trainer) -> None:
    """Refuse strategies that shard the model or optimizer state, before any step runs.

    A sweep keeps an in-memory copy of parameters and optimizer state and restores it afterwards; with
    sharded state (FSDP, DeepSpeed ZeRO, model parallel) each rank holds only a piece, so that copy and the
    restore are not guaranteed to be exact.

    Raises:
        ValueError: the trainer's strategy shards parameters or optimizer state.
    """
    name = type(trainer.strategy).__name__
    if any(part in name for part in _SHARDED):
        raise ValueError(
            f"LRSweep does not support `{name}`: it shards parameters or optimizer state across ranks, and a "
            "sweep must copy and restore them exactly. Supported: one device, `strategy='ddp'` (also with "
            "`num_nodes>1`, torchrun, SLURM) and `strategy='ddp_spawn'`. Run the sweep under DDP with the same "
            "global batch size, then train with the LR it suggests."
        )


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
