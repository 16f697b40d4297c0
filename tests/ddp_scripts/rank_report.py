"""Shared by the scenario scripts: a model mixin that fails on one rank, and what every rank reports as JSON."""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed


class FailsOnRank:
    """Mixin for a ``LightningModule``: counts its hook calls and records every loss ``training_step`` computes.

    Rank ``on_rank`` raises in the hook ``raise_in`` at its ``raise_at``-th call, or makes its loss NaN at the
    ``nan_at``-th call of ``training_step``.
    """

    global_rank: int

    def init_faults(
        self, nan_at: int | None = None, raise_in: str = "", raise_at: int | None = None, on_rank: int = 1
    ) -> None:
        self.nan_at, self.raise_in, self.raise_at, self.on_rank = nan_at, raise_in, raise_at, on_rank
        self.hook_calls: Counter[str] = Counter()
        self.losses: list[float] = []

    def count(self, hook: str) -> int:
        """Counts a call of ``hook`` (raising there if this is the call to fail); returns how many so far."""
        self.hook_calls[hook] += 1
        if hook == self.raise_in and self.global_rank == self.on_rank and self.hook_calls[hook] == self.raise_at:
            raise RuntimeError(f"boom on rank {self.global_rank} in {hook}")
        return self.hook_calls[hook]

    def recorded(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss of this ``training_step`` call (NaN if this is the call to fail), recorded."""
        if self.global_rank == self.on_rank and self.hook_calls["training_step"] == self.nan_at:
            loss = loss * float("nan")
        self.losses.append(float(loss.detach()))
        return loss

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        self.count("backward")  # before autograd: the other rank is already in the gradient all-reduce
        super().backward(loss, *args, **kwargs)  # type: ignore[misc]

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        self.count("on_before_optimizer_step")


def caught(fit: Callable[[], Any]) -> dict[str, Any] | None:
    """Runs ``fit``; the exception it raised (type, text, notes), or None."""
    try:
        fit()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        text = "".join(traceback.format_exception_only(exc))
        return {"type": type(exc).__name__, "text": text, "notes": list(getattr(exc, "__notes__", []))}
    return None


def curve(result: Any) -> dict[str, Any]:
    return {
        "lrs": result.lrs.tolist(),
        "losses": [x if math.isfinite(x) else repr(x) for x in result.losses.tolist()],
        "stop_reason": result.stop_reason,
    }


def lrs_of(t: Any) -> list[float]:
    return [float(g["lr"]) for g in t.optimizers[0].param_groups]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def close_process_group() -> None:
    """Leave the gloo group together before the process exits.

    Lightning destroys only NCCL groups at exit; a gloo group still alive at interpreter shutdown makes a
    process abort now and then ("terminate called without an active exception", SIGABRT) after a fit that
    succeeded: about 1 in 10 plain ``ddp_spawn`` fits here, with or without LRSweep.
    """
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def main(report: Callable[[str, Path, int], dict[str, Any]]) -> None:
    """``python SCRIPT MODE OUT``: every rank writes ``report(MODE, OUT, rank)`` to ``OUT/MODE_rank_<rank>.json``."""
    mode, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)))
    (out / f"{mode}_rank_{rank}.json").write_text(json.dumps(report(mode, out, rank), indent=1))
    close_process_group()
