"""Shared machinery: quiet single-threaded setup, the Trainer used everywhere, one training run, the JSON run cache."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from benchmarks.tasks import Task

CACHE_VERSION = 1


def quiet() -> None:
    """One CPU thread (the machine is shared), and no Lightning chatter."""
    torch.set_num_threads(1)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_lrsweep"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def seed_all(seed: int) -> None:
    L.seed_everything(seed, workers=False, verbose=False)


_TMP = tempfile.mkdtemp(prefix="lrsweep_bench_")


def make_trainer(task: Task, max_steps: int, callbacks: list | None = None, **kw: Any) -> L.Trainer:
    """The CPU Trainer every run uses: no logger, checkpoints, progress bar or summary; epochs cover ``max_steps``.

    The task's own callbacks (fine-tuning: ``BackboneFinetuning``) come first, so a sweep callback sees their effect.
    """
    epochs = math.ceil(max_steps / task.steps_per_epoch)
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=epochs,
        max_steps=max_steps,
        num_sanity_val_steps=0,
        callbacks=task.callbacks() + (callbacks or []),
        default_root_dir=_TMP,
        **kw,
    )


def train(
    task: Task,
    lr: float,
    seed: int,
    steps: int | None = None,
    schedule: str | None = None,
    callbacks: list | None = None,
) -> dict[str, Any]:
    """Train a fresh model (init and data order fixed by ``seed``) for ``steps`` (default: the task budget).

    Returns the validation metric, wall time and the model (not JSON-serialisable; drop it before caching).
    """
    steps = steps or task.budget
    seed_all(seed)
    model = task.model(lr, seed, schedule=schedule, total_steps=steps)
    trainer = make_trainer(task, steps, callbacks=callbacks)
    t0 = time.perf_counter()
    trainer.fit(model, train_dataloaders=task.train_loader(seed))
    wall = time.perf_counter() - t0
    return {"metric": task.evaluate(model), "wall_s": wall, "steps": int(trainer.global_step), "model": model}


# --------------------------------------------------------------------------- cache


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else repr(f)  # "inf", "nan" survive the round trip via _restore
    if isinstance(v, np.integer):
        return int(v)
    return v


def _restore(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _restore(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_restore(x) for x in v]
    if v in ("inf", "-inf", "nan"):
        return float(v)
    return v


class RunCache:
    """One JSON file per run under ``root/<section>/<task>/``, keyed by a hash of the run's parameters."""

    def __init__(self, root: Path | str, refresh: bool = False) -> None:
        self.root = Path(root)
        self.refresh = refresh
        self.computed = 0
        self.compute_s = 0.0
        self.used = 0  # runs this invocation used, cached or new
        self.used_s = 0.0  # their recorded compute time (runs cached before this field existed count 0)
        self._seen: set[Path] = set()

    def path(self, section: str, key: dict[str, Any]) -> Path:
        blob = json.dumps(_jsonable({**key, "_v": CACHE_VERSION}), sort_keys=True)
        digest = hashlib.sha1(blob.encode()).hexdigest()[:16]
        return self.root / section / str(key.get("task", "_")) / f"{digest}.json"

    def get(self, section: str, key: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The cached value for ``key``, or ``fn()`` computed now, stored and returned."""
        p = self.path(section, key)
        if p.exists() and not self.refresh:
            blob = json.loads(p.read_text())
            if p not in self._seen:
                self._seen.add(p)
                self.used += 1
                self.used_s += blob.get("compute_s", 0.0)
            return _restore(blob["value"])
        t0 = time.perf_counter()
        value = fn()
        dt = time.perf_counter() - t0
        self.compute_s += dt
        self.computed += 1
        self.used += 1
        self.used_s += dt
        self._seen.add(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        blob = {"key": _jsonable(key), "value": _jsonable(value), "compute_s": dt}
        p.write_text(json.dumps(blob, indent=1))
        return _restore(json.loads(p.read_text())["value"])


def lr_key(lr: float) -> str:
    """A stable text key for an LR (4 significant digits) so that equal suggestions share a training run."""
    return f"{lr:.4g}"


# --------------------------------------------------------------------------- run configuration


@dataclass(frozen=True)
class Config:
    """Budgets of one benchmark run. ``quick()`` is the tiny budget the smoke test uses."""

    quick: bool = False
    oracle_seeds: tuple[int, ...] = (0, 1, 2)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    sweep_steps: int = 100
    min_lr: float = 1e-7
    max_lr: float = 10.0
    budget_divisor: int = 1  # quick mode trains for budget // divisor steps
    grid_stride: int = 1  # quick mode keeps every n-th grid point

    @classmethod
    def quick_config(cls) -> Config:
        return cls(quick=True, oracle_seeds=(0,), seeds=(0, 1), sweep_steps=30, budget_divisor=8, grid_stride=4)

    def steps(self, task: Task) -> int:
        return max(8, task.budget // self.budget_divisor)

    def grid(self, task: Task) -> tuple[float, ...]:
        return task.grid[:: self.grid_stride]
