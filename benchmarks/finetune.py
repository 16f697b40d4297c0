"""Fine-tuning scenario: a backbone pre-trained in the benchmark, frozen, then unfrozen by ``BackboneFinetuning``.

Pre-training: the 2-layer Conv1d + BatchNorm body is trained on the 4-class waveform task (``signal_cnn_bn_sgdm``
data) for 640 steps at LR 0.3 (SGD momentum). Target: 8 classes (waveform x high/low frequency) from only 512
training signals, with a fresh linear head. ``BackboneFinetuning(unfreeze_backbone_at_epoch=U)`` freezes the body
until epoch U, then adds it as a param group at 0.1x the head's LR, growing 1.5x per epoch (Lightning's defaults).

Variants, paired by seed (same head init and data order):

* ``keep``    - ``LRSweep`` sweeps once at fit start (frozen body: it tunes the head) and keeps that LR
* ``retune``  - the same plus ``milestones=[U]``: a re-tune at the unfreeze epoch, on the unfrozen model
  (``LRSweep`` is placed after ``BackboneFinetuning`` so it sees the new param group)
* ``grid``    - no sweep: the best fixed head LR of a small log grid (mean over the oracle seeds), same callbacks
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.common import Config, RunCache, lr_key, make_trainer, seed_all
from benchmarks.peers import ours_fingerprint
from benchmarks.tasks import TASKS, Task, TaskModule, cnn1d_body, log_grid, sgd, signals8

UNFREEZE = 3
PRETRAIN_STEPS, PRETRAIN_LR = 640, 0.3


_pretrain_steps = PRETRAIN_STEPS  # run() lowers it in quick mode


@cache
def pretrained_body(steps: int) -> dict[str, torch.Tensor]:
    """State dict of the Conv1d body after pre-training on the 4-class waveform task (deterministic)."""
    from benchmarks.common import train

    src = TASKS["signal_cnn_bn_sgdm"]
    model = train(src, PRETRAIN_LR, 1234, steps=steps)["model"]
    body = nn.Sequential(*list(model.net.children())[:-1])
    return {k: v.detach().clone() for k, v in body.state_dict().items()}


class FinetuneNet(nn.Module):
    def __init__(self, classes: int = 8) -> None:
        super().__init__()
        self.backbone = nn.Sequential(*cnn1d_body())
        self.backbone.load_state_dict(pretrained_body(_pretrain_steps))
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class FinetuneModule(TaskModule):
    """Exposes ``backbone`` for ``BackboneFinetuning`` and gives the optimizer only the trainable parameters."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.backbone = self.net.backbone

    def configure_optimizers(self):  # noqa: ANN201
        return self.make_optimizer([p for p in self.parameters() if p.requires_grad], self.lr)


FT_TASK = Task(
    name="signal8_finetune_sgdm",
    description="8-class waveform x frequency from 512 signals; Conv1d+BN body pre-trained on the 4-class task",
    kind="classification",
    optimizer="SGD momentum 0.9",
    data_fn=signals8,
    net_fn=FinetuneNet,
    make_optimizer=sgd(0.9),
    grid=log_grid(-3, 0.5, per_decade=2),
    n_train=512,
    batch_size=32,
    epochs=12,
    tags=("CNN", "BatchNorm", "fine-tuning"),
    module_cls=FinetuneModule,
)


def _fit(lr: float, seed: int, steps: int, sweep: dict | None, default: str, cfg: Config) -> dict[str, Any]:
    from lightning.pytorch.callbacks import BackboneFinetuning

    callbacks: list = [BackboneFinetuning(unfreeze_backbone_at_epoch=UNFREEZE)]
    cb = None
    if sweep is not None:
        from lightning_lrsweep import LRSweep

        cb = LRSweep(suggestion=default, min_lr=cfg.min_lr, max_lr=cfg.max_lr, num_steps=cfg.sweep_steps, **sweep)
        callbacks.append(cb)
    pretrained_body(_pretrain_steps)  # pre-train (cached) BEFORE seeding: it draws from the global RNG
    seed_all(seed)
    model = FT_TASK.model(lr, seed)
    trainer = make_trainer(FT_TASK, steps, callbacks=callbacks)
    t0 = time.perf_counter()
    trainer.fit(model, train_dataloaders=FT_TASK.train_loader(seed))
    out: dict[str, Any] = {"metric": FT_TASK.evaluate(model), "wall_s": time.perf_counter() - t0}
    if cb is not None:
        out["history"] = [
            {
                "epoch": int(h.epoch),
                "kind": h.kind,
                "previous_lr": float(h.previous_lr),
                "applied_lr": None if h.applied_lr is None else float(h.applied_lr),
                "reason": h.reason,
            }
            for h in cb.history
        ]
    return out


def run(cache_: RunCache, cfg: Config, default: str, log=print) -> dict[str, Any]:  # noqa: ANN001
    global _pretrain_steps
    _pretrain_steps = PRETRAIN_STEPS // cfg.budget_divisor
    steps = cfg.steps(FT_TASK)
    fp = ours_fingerprint()
    log(f"[finetune] {FT_TASK.name}: {steps} steps, unfreeze at epoch {UNFREEZE}, {len(cfg.seeds)} seeds + grid")
    base = {
        "task": FT_TASK.name,
        "steps": steps,
        "v": 2,
        "pretrain": [_pretrain_steps, PRETRAIN_LR],
        "unfreeze": UNFREEZE,
    }
    runs: dict[str, list] = {}
    for variant, sweep in (("keep", {}), ("retune", {"milestones": [UNFREEZE]})):
        key = {**base, "variant": variant, "package": fp, "default": default, "sweep_steps": cfg.sweep_steps}
        runs[variant] = [
            cache_.get(
                "finetune", {**key, "seed": s}, lambda s=s, sweep=sweep: _fit(1e-3, s, steps, sweep, default, cfg)
            )
            for s in cfg.seeds
        ]
    grid = FT_TASK.grid[:: cfg.grid_stride]
    per_lr = {
        lr: [
            cache_.get(
                "finetune",
                {**base, "variant": "grid", "lr": lr_key(lr), "seed": s},
                lambda lr=lr, s=s: _fit(lr, s, steps, None, default, cfg),
            )["metric"]
            for s in cfg.oracle_seeds
        ]
        for lr in grid
    }
    means = {lr: float(np.mean(v)) for lr, v in per_lr.items()}
    best = max(means, key=means.get)
    runs["grid"] = [
        cache_.get(
            "finetune",
            {**base, "variant": "grid", "lr": lr_key(best), "seed": s},
            lambda s=s: _fit(best, s, steps, None, default, cfg),
        )
        for s in cfg.seeds
    ]
    return {
        "steps": steps,
        "seeds": list(cfg.seeds),
        "runs": runs,
        "grid": list(grid),
        "grid_mean": [means[lr] for lr in grid],
        "grid_lr": best,
        "grid_seeds": len(cfg.oracle_seeds),
    }


def render(res: dict[str, Any]) -> str:
    from benchmarks.report import fmt, table
    from benchmarks.retune import _wtl

    task = FT_TASK
    keep = [r["metric"] for r in res["runs"]["keep"]]
    rows = []
    for v in ("keep", "retune", "grid"):
        ms = [r["metric"] for r in res["runs"][v]]
        deltas = [m - k for m, k in zip(ms, keep, strict=False)]
        moves = []
        for r in res["runs"][v]:
            for h in r.get("history", []):
                if h["kind"] == "retune" and h["applied_lr"]:
                    moves.append(h["applied_lr"] / h["previous_lr"])
        lr0 = [
            r["history"][0]["applied_lr"] for r in res["runs"][v] if r.get("history") and r["history"][0]["applied_lr"]
        ]
        rows.append(
            [
                f"`{v}`",
                fmt(float(np.median(ms)), 1),
                fmt(float(np.median(deltas)), 1) if v != "keep" else "—",
                _wtl(task, ms, keep) if v != "keep" else "—",
                f"{np.median(lr0):.2g}" if lr0 else f"{res['grid_lr']:.2g} (grid)",
                " ".join(f"{m:.2f}×" for m in moves) if moves else "—",
                " ".join(fmt(m, 1) for m in ms),
            ]
        )
    return "\n".join(
        [
            f"### Fine-tuning: `{task.name}` ({res['steps']} steps, `BackboneFinetuning(unfreeze_backbone_at_epoch="
            f"{UNFREEZE})`)\n",
            __doc__.split("\n\n", 1)[1].strip() + "\n",
            f"Grid (head LR: val acc %, mean of {res['grid_seeds']} seeds): "
            + ", ".join(f"{lr:.2g}: {m:.1f}" for lr, m in zip(res["grid"], res["grid_mean"], strict=False))
            + "\n",
            table(
                [
                    "variant",
                    "median val acc %",
                    "median Δ vs keep",
                    "W/T/L vs keep",
                    "fit-start LR (median)",
                    "re-tune moves (new ÷ old)",
                    "per seed",
                ],
                rows,
            )
            + "\n",
        ]
    )
