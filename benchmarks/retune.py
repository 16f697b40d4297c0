"""Periodic re-tuning: ``LRSweep(every_n_epochs=k)`` against one sweep + fixed LR / OneCycle / cosine, and the oracle.

Long runs (3x the quality budget), paired by seed: every variant of one seed starts from the same initial weights and
sees the same data order. The single sweep is our default rule read off the quality section's sweep of that seed
(same init, same data order, same window), so (a)-(c) share one LR per seed:

* ``retune``   - ``LRSweep(every_n_epochs=k, suggestion=DEFAULT)``: sweep at fit start, re-sweep every k epochs
* ``fixed``    - (a) the single sweep's LR, constant
* ``onecycle`` - (b) ``OneCycleLR(max_lr=single sweep's LR)``
* ``cosine``   - (c) cosine annealing from the single sweep's LR to 0
* ``oracle``   - (d) the quality grid's oracle LR, constant (tuned for the shorter quality budget)

All variants train the same number of optimizer steps; sweep steps are counted separately and reported as a fraction.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from benchmarks.common import Config, RunCache, lr_key, make_trainer, seed_all
from benchmarks.peers import ours_available, ours_fingerprint
from benchmarks.quality import sweep_cached
from benchmarks.tasks import Task

DEFAULT = "valley"  # the package default, and the rule the quality table favours (see README findings)
VARIANTS = ("retune", "fixed", "onecycle", "cosine", "oracle")
TIE = {"classification": 0.5, "regression": 0.02}  # |Δ| <= 0.5 acc points, or MSE ratio within 2%, is a tie
LONG = 3  # long runs = LONG x the quality budget


def long_steps(task: Task, cfg: Config) -> int:
    return LONG * cfg.steps(task)


def every_n(task: Task, cfg: Config) -> int:
    epochs = math.ceil(long_steps(task, cfg) / task.steps_per_epoch)
    return max(1, math.ceil(epochs / 4))  # about 3 re-tunes after the fit-start sweep


def _train(task: Task, lr: float, seed: int, steps: int, schedule: str | None, callbacks: list | None) -> dict:
    seed_all(seed)
    model = task.model(lr, seed, schedule=schedule, total_steps=steps)
    trainer = make_trainer(task, steps, callbacks=callbacks)
    t0 = time.perf_counter()
    trainer.fit(model, train_dataloaders=task.train_loader(seed))
    return {"metric": task.evaluate(model), "wall_s": time.perf_counter() - t0, "steps": int(trainer.global_step)}


def run_variant(task: Task, variant: str, seed: int, lr: float, steps: int, k: int, cfg: Config) -> dict[str, Any]:
    if variant != "retune":
        schedule = {"fixed": None, "oracle": None, "onecycle": "onecycle", "cosine": "cosine"}[variant]
        return _train(task, lr, seed, steps, schedule, None)
    from lightning_lrsweep import LRSweep

    cb = LRSweep(every_n_epochs=k, suggestion=DEFAULT, min_lr=cfg.min_lr, max_lr=cfg.max_lr, num_steps=cfg.sweep_steps)
    # the model's own lr is only a placeholder: the fit-start sweep overwrites it
    out = _train(task, lr, seed, steps, None, [cb])
    out["history"] = [
        {
            "epoch": int(h.epoch),
            "applied_lr": None if h.applied_lr is None else float(h.applied_lr),
            "sweep_points": len(h.result.lrs) if h.result is not None else 0,
        }
        for h in cb.history
    ]
    out["sweep_steps"] = sum(h["sweep_points"] for h in out["history"])
    return out


def run(cache: RunCache, tasks: list[Task], cfg: Config, log=print) -> dict[str, Any]:  # noqa: ANN001
    if not ours_available():
        return {"skipped": "lightning_lrsweep is not importable", "tasks": {}}
    from benchmarks.quality import oracle

    res: dict[str, Any] = {"tasks": {}, "default": DEFAULT, "long": LONG, "tie": TIE}
    fp = ours_fingerprint()
    for task in tasks:
        steps = long_steps(task, cfg)
        k = every_n(task, cfg)
        orc_lr = oracle(cache, task, cfg)["lr"]
        log(f"[retune] {task.name}: {steps} steps, re-tune every {k} epochs, {len(cfg.seeds)} seeds")
        per: dict[str, list] = {v: [] for v in VARIANTS}
        lr0s = []
        for seed in cfg.seeds:
            lr0 = sweep_cached(cache, "ours", task, seed, cfg)["suggestions"].get(f"ours_{DEFAULT}")
            lr0s.append(lr0)
            for v in VARIANTS:
                lr = orc_lr if v == "oracle" else lr0
                if lr is None:
                    per[v].append(None)
                    continue
                key = {
                    "task": task.name,
                    "variant": v,
                    "seed": seed,
                    "lr": lr_key(lr),
                    "steps": steps,
                    "k": k,
                    "package": fp if v == "retune" else None,
                    "default": DEFAULT if v == "retune" else None,
                }
                args = (task, v, seed, lr, steps, k, cfg)
                per[v].append(cache.get("retune", key, lambda args=args: run_variant(*args)))
        res["tasks"][task.name] = {
            "steps": steps,
            "k": k,
            "oracle_lr": orc_lr,
            "lr0": lr0s,
            "runs": per,
            "seeds": list(cfg.seeds),
        }
    from benchmarks import finetune

    res["finetune"] = finetune.run(cache, cfg, DEFAULT, log=log)
    return res


# --------------------------------------------------------------------------- report


def _delta(task: Task, m: float, ref: float) -> float:
    return m - ref if task.higher_is_better else m / ref


def _wtl(task: Task, ms: list, refs: list) -> str:
    w = t = lo = 0
    tie = TIE[task.kind]
    for m, r in zip(ms, refs, strict=False):
        if m is None or r is None:
            continue
        d = _delta(task, m, r)
        if task.higher_is_better:
            better, same = d > tie, abs(d) <= tie
        else:
            better, same = d < 1 - tie, abs(d - 1) <= tie
        w, t, lo = w + better, t + (same and not better), lo + (not better and not same)
    return f"{w}/{t}/{lo}"


def plot_lrs(task: Task, r: dict[str, Any], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for seed, run in zip(r["seeds"], r["runs"]["retune"], strict=False):
        if not run or not run.get("history"):
            continue
        ep = [h["epoch"] for h in run["history"] if h["applied_lr"]]
        lr = [h["applied_lr"] for h in run["history"] if h["applied_lr"]]
        ax.step(ep + [math.ceil(r["steps"] / task.steps_per_epoch)], lr + lr[-1:], where="post", label=f"seed {seed}")
    ax.axhline(r["oracle_lr"], color="k", ls=":", label="oracle LR (quality budget)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("applied LR")
    ax.set_title(f"{task.name}: LRSweep(every_n_epochs={r['k']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def render(res: dict[str, Any], fig_dir: Any = None, rel_fig: str = "figures") -> str:
    from benchmarks.report import fmt, table
    from benchmarks.tasks import TASKS

    if res.get("skipped"):
        return f"## Periodic re-tuning\n\nSkipped: {res['skipped']}\n"
    parts = [
        "## Periodic re-tuning\n",
        f"Long runs ({res['long']}× the quality budget), paired by seed. `retune` = `LRSweep(every_n_epochs=k, "
        f'suggestion="{res["default"]}")` with its other defaults; (a) `fixed`, (b) `onecycle`, (c) `cosine` use our '
        f"`{res['default']}` LR from one fit-start sweep of the same seed; (d) `oracle` = the quality grid's best "
        "fixed LR. Equal optimizer steps for all; sweep steps are extra and shown as a fraction of training steps. "
        f"W/T/L against (a) per seed; a tie is |Δ| ≤ {TIE['classification']} accuracy points "
        f"(regression: MSE ratio within {TIE['regression']:.0%}). Time ÷ (a) is the wall-time ratio of the "
        "whole fit including its sweeps.\n",
    ]
    for name, r in res["tasks"].items():
        task = TASKS[name]
        fixed = [None if x is None else x["metric"] for x in r["runs"]["fixed"]]
        fixed_t = [None if x is None else x["wall_s"] for x in r["runs"]["fixed"]]
        rows = []
        for v in VARIANTS:
            runs = r["runs"][v]
            ms = [None if x is None else x["metric"] for x in runs]
            ok = [m for m in ms if m is not None]
            deltas = [_delta(task, m, f) for m, f in zip(ms, fixed, strict=False) if m is not None and f is not None]
            times = [x["wall_s"] / f for x, f in zip(runs, fixed_t, strict=False) if x is not None and f]
            frac = [x.get("sweep_steps", 0) / x["steps"] for x in runs if x is not None and x["steps"]]
            nd = 1 if task.higher_is_better else 3
            med_delta = float(np.median(deltas)) if deltas else float("nan")
            rows.append(
                [
                    f"`{v}`",
                    fmt(float(np.median(ok)), nd) if ok else "—",
                    fmt(med_delta, 1) if task.higher_is_better else fmt(med_delta, 2, "×"),
                    _wtl(task, ms, fixed) if v != "fixed" else "—",
                    f"{np.median(frac):.0%}" if v == "retune" and frac else "0%",
                    fmt(float(np.median(times)), 2) if times else "—",
                    " ".join(fmt(m, nd) for m in ms),
                ]
            )
        parts.append(f"### `{name}` ({r['steps']} steps, k = {r['k']} epochs)\n")
        lr0 = [x for x in r["lr0"] if x]
        parts.append(
            f"Single-sweep LR per seed: {' '.join(f'{x:.2g}' for x in lr0)}; oracle LR {r['oracle_lr']:.2g}.\n"
        )
        parts.append(
            table(
                [
                    "variant",
                    f"median {task.metric_name}",
                    "median Δ vs (a)",
                    "W/T/L vs (a)",
                    "sweep steps",
                    "time ÷ (a)",
                    "per seed",
                ],
                rows,
            )
            + "\n"
        )
        if fig_dir is not None:
            path = fig_dir / f"retune_{name}.png"
            plot_lrs(task, r, path)
            parts.append(f"![{name} applied LR]({rel_fig}/{path.name})\n")
    if res.get("finetune"):
        from benchmarks import finetune

        parts.append(finetune.render(res["finetune"]))
    return "\n".join(parts)
