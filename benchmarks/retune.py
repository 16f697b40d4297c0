"""Re-tuning and schedules: what ``LRSweep``'s re-tunes add to a fixed LR, a cosine and a OneCycle schedule.

Every row of one task and seed starts from the same initial weights and sees the same data order; all rows train
the same number of optimizer steps (sweep steps are extra and reported as a fraction). Each task runs at 1x and 3x
its budget. Rows:

* ``fixed``       - the task's default LR (what a user would try without a finder), constant
* ``fs_fixed``    - the fit-start sweep's LR, constant (no re-tune at all)
* ``fs_fixed_low`` - a third of the fit-start LR, constant (is a held LR better set lower than a schedule's peak?)
* ``retune``      - ``LRSweep(every_n_epochs=k)``, no scheduler (the package default: it anneals, holding the fit-start
  LR for the first half of the run, then a cosine to 0)
* ``fs_cosine``   - the fit-start LR as the peak of a per-step cosine to 0
* ``fs_onecycle`` - ``LRSweep()`` + ``OneCycleLR``: the fit-start LR becomes its ``max_lr``
* ``rt_cosine``   - ``LRSweep(every_n_epochs=k)`` + the same cosine
* ``rt_onecycle`` - ``LRSweep(every_n_epochs=k)`` + the same OneCycle
* ``anneal_low``  - ``LRSweep(every_n_epochs=k, sweep_at_fit_start=False, max_change=1)`` on a module whose LR is
  a third of the fit-start LR (a pick on the low side): the anneal from there, with re-tunes that cannot move it
* ``rt_low``      - the same with re-tunes that can (``max_change=2``, the default): can they raise a scale set too
  low? Without a fit-start sweep they place the LR the default 10x below the edge
* ``milestone``   - fine-tuning tasks: ``LRSweep(milestones=[unfreeze epoch])``, constant LR otherwise; the same
  as ``LRSweep()``, which re-tunes at the unfreeze by itself (``retune_at_phase_change``)
* ``milestone_low`` - fine-tuning tasks: ``LRSweep(milestones=[unfreeze epoch], sweep_at_fit_start=False)`` on a
  module whose LR is a third of the fit-start LR (a user's own LR, on the low side): the head may then not yet be
  at its noise floor at the unfreeze, and on some seeds the unfreeze sweep shows a clear descent that is read
* ``grid``        - fine-tuning tasks: the best constant LR of the task's grid (mean over the oracle seeds)

The ``fs_fixed``, ``fs_fixed_low`` and ``fs_cosine`` rows train at the LR the fit-start sweep of ``LRSweep()`` picks
for that seed (a sweep leaves no trace, so without a fine-tuning unfreeze this equals ``LRSweep()`` with a constant
LR or the cosine attached; with one, ``LRSweep()`` also re-tunes at the unfreeze, as in the ``milestone`` row).
``fs_onecycle`` runs the callback with the schedule attached: ``OneCycleLR`` sets SGD's momentum to its maximum (0.95)
before the first step, so the fit-start sweep measures another optimizer than without it. ``k`` gives about three
re-tunes after the fit-start sweep.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np

from benchmarks.common import Config, RunCache, lr_key, make_trainer, seed_all
from benchmarks.markdown import table, tasks_table
from benchmarks.peers import ours_available, ours_fingerprint
from benchmarks.tasks import TASKS, Task

DEFAULT = "valley"  # the package default fit-start rule
BUDGETS = (1, 3)
LONG = 3  # window.py re-tunes at the epochs of the 3x runs
ROWS = (
    "fixed",
    "fs_fixed",
    "fs_fixed_low",
    "retune",
    "fs_cosine",
    "fs_onecycle",
    "rt_cosine",
    "rt_onecycle",
    "anneal_low",
    "rt_low",
    "milestone",
    "milestone_low",
    "grid",
)
PERIODIC = ("retune", "rt_cosine", "rt_onecycle", "anneal_low", "rt_low")  # LRSweep(every_n_epochs=k)
FINETUNE_ROWS = ("milestone", "milestone_low", "grid")  # fine-tuning tasks only
LOW_ROWS = ("fs_fixed_low", "anneal_low", "rt_low", "milestone_low")  # start from the fit-start LR / LOW
HISTORY_ROWS = ("retune", "rt_cosine", "rt_onecycle", "rt_low", "milestone", "milestone_low")  # re-tune moves shown
# rows that run the package: keyed by its source
PACKAGE_ROWS = (*PERIODIC, "fs_onecycle", "milestone", "milestone_low")
SCHEDULE = {"fs_cosine": "cosine", "fs_onecycle": "onecycle", "rt_cosine": "cosine", "rt_onecycle": "onecycle"}
TIE = {"classification": 0.25, "regression": 0.02}  # |Δ| <= 0.25 acc points, or MSE ratio within 2%, is a tie
VERSION = 3
LOW = 3.0  # fs_fixed_low trains at the fit-start LR / LOW
KNOWN_ERRORS = {
    "KeyError: 'initial_lr'": (
        " (torch's `OneCycleLR` cannot schedule the param group `BackboneFinetuning` adds at the unfreeze; the same"
        " fit without `LRSweep` fails the same way)"
    )
}
TUNE_SEEDS = 3  # tune-split tasks run the first 3 seeds only (compute budget: 2 shared cores); report-split all


def steps_at(task: Task, cfg: Config, budget: int) -> int:
    return budget * cfg.steps(task)


def every_n(task: Task, cfg: Config, budget: int = LONG) -> int:
    epochs = math.ceil(steps_at(task, cfg, budget) / task.steps_per_epoch)
    return max(1, math.ceil(epochs / 4))  # about 3 re-tunes after the fit-start sweep


def rows_for(task: Task) -> tuple[str, ...]:
    finetune = task.unfreeze_at is not None
    return tuple(r for r in ROWS if finetune or r not in FINETUNE_ROWS)


def _fit(task: Task, lr: float, seed: int, steps: int, schedule: str | None, sweep: Any = None) -> dict[str, Any]:
    task.model(1e-3, 0)  # build (and pre-train, once) anything the task needs BEFORE seeding: it may draw RNG
    seed_all(seed)
    model = task.model(lr, seed, schedule=schedule, total_steps=steps)
    trainer = make_trainer(task, steps, callbacks=[sweep] if sweep is not None else None)
    t0 = time.perf_counter()
    trainer.fit(model, train_dataloaders=task.train_loader(seed))
    out: dict[str, Any] = {
        "metric": task.evaluate(model),
        "wall_s": time.perf_counter() - t0,
        "steps": int(trainer.global_step),
    }
    if sweep is not None:
        out["history"] = [
            {
                "epoch": int(h.epoch),
                "kind": h.kind,
                "previous_lr": float(h.previous_lr),
                "applied_lr": None if h.applied_lr is None else float(h.applied_lr),
                "points": len(h.result.lrs),
                "reason": h.reason,
            }
            for h in sweep.history
        ]
        out["sweep_steps"] = sum(h["points"] for h in out["history"])
    return out


def _sweep(cfg: Config, **kw: Any) -> Any:
    from lightning_lrsweep import LRSweep

    return LRSweep(suggestion=DEFAULT, num_steps=cfg.sweep_steps, min_lr=cfg.min_lr, max_lr=cfg.max_lr, **kw)


def fit_start_lr(task: Task, seed: int, cfg: Config) -> dict[str, Any]:
    """The LR ``LRSweep()``'s fit-start sweep picks for this seed (one sweep, one training step)."""
    sweep = _sweep(cfg)
    out = _fit(task, task.default_lr, seed, 1, None, sweep)
    return {"lr": out["history"][0]["applied_lr"]}


def run_row(task: Task, row: str, seed: int, steps: int, k: int, fs_lr: float | None, grid_lr: float | None, cfg):  # noqa: ANN001, ANN201
    schedule = SCHEDULE.get(row)
    if row == "fixed":
        return _fit(task, task.default_lr, seed, steps, None)
    if row == "grid":
        return _fit(task, grid_lr, seed, steps, None)
    if row == "fs_fixed_low":
        return _fit(task, fs_lr / LOW, seed, steps, None)
    if row in ("anneal_low", "rt_low"):
        bound = 1.0 if row == "anneal_low" else 2.0
        sweep = _sweep(cfg, every_n_epochs=k, sweep_at_fit_start=False, max_change=bound)
        return _fit(task, fs_lr / LOW, seed, steps, None, sweep)
    if row == "milestone_low":
        sweep = _sweep(cfg, milestones=[task.unfreeze_at], sweep_at_fit_start=False)
        return _fit(task, fs_lr / LOW, seed, steps, None, sweep)
    if row == "fs_onecycle":
        return _fit(task, fs_lr or task.default_lr, seed, steps, schedule, _sweep(cfg))
    if row.startswith("fs_"):
        return _fit(task, fs_lr, seed, steps, schedule)
    sweep = _sweep(cfg, milestones=[task.unfreeze_at]) if row == "milestone" else _sweep(cfg, every_n_epochs=k)
    # the fit-start sweep picks fs_lr again (it does not depend on the module's LR); starting there keeps the
    # schedule's float values bit-equal to the fs_* rows, so differences come from the re-tunes alone
    return _fit(task, fs_lr or task.default_lr, seed, steps, schedule, sweep)


def _key_lr(lr: float | None) -> str | None:
    return None if lr is None else lr_key(lr)


def _safe(fn):  # noqa: ANN001, ANN202
    try:
        return fn()
    except Exception as e:  # noqa: BLE001  (e.g. OneCycleLR cannot schedule a param group added by an unfreeze)
        return {"error": f"{type(e).__name__}: {e}"[:300]}


def best_grid_lr(cache: RunCache, task: Task, cfg: Config, steps: int) -> dict[str, Any]:
    grid = cfg.grid(task)
    means = {}
    for lr in grid:
        ms = [
            cache.get(
                "retune",
                {"task": task.name, "row": "grid", "lr": lr_key(lr), "seed": s, "steps": steps, "v": VERSION},
                lambda lr=lr, s=s: _safe(lambda: _fit(task, lr, s, steps, None)),
            ).get("metric", math.nan)
            for s in cfg.oracle_seeds
        ]
        means[lr] = float(np.mean(ms))
    sign = 1 if task.higher_is_better else -1
    best = max(means, key=lambda lr: sign * means[lr] if math.isfinite(means[lr]) else -math.inf)
    return {"lr": best, "grid": list(grid), "mean": [means[lr] for lr in grid]}


def run(cache: RunCache, tasks: list[Task], cfg: Config, log=print) -> dict[str, Any]:  # noqa: ANN001
    if not ours_available():
        return {"skipped": "lightning_lrsweep is not importable", "tasks": {}}
    # RETUNE_BUDGETS=3 computes one budget only (e.g. to spread the work over processes; the report needs both)
    budgets = tuple(int(b) for b in os.environ.get("RETUNE_BUDGETS", ",".join(map(str, BUDGETS))).split(","))
    res: dict[str, Any] = {"tasks": {}, "default": DEFAULT, "budgets": list(budgets), "tie": TIE}
    fp = ours_fingerprint()
    for task in tasks:
        seeds = cfg.seeds if task.split == "report" else cfg.seeds[:TUNE_SEEDS]
        fs = [
            cache.get(
                "retune",
                {
                    "task": task.name,
                    "row": "fit_start_lr",
                    "seed": s,
                    "package": fp,
                    "v": VERSION,
                    "sweep": [cfg.sweep_steps, cfg.min_lr, cfg.max_lr],
                },
                lambda s=s, task=task: fit_start_lr(task, s, cfg),
            )["lr"]
            for s in seeds
        ]
        per_budget = {}
        for budget in budgets:
            steps = steps_at(task, cfg, budget)
            k = every_n(task, cfg, budget)
            rows = rows_for(task)
            grid = best_grid_lr(cache, task, cfg, steps) if "grid" in rows else None
            log(f"[retune] {task.name} ({task.split}) {budget}x: {steps} steps, k = {k}, {len(seeds)} seeds")
            runs: dict[str, list] = {}
            for row in rows:
                uses_package = row in PACKAGE_ROWS
                lr = {"fixed": task.default_lr, "grid": grid["lr"] if grid else None}.get(row)
                runs[row] = []
                for seed, fs_lr in zip(seeds, fs, strict=True):
                    key = {
                        "task": task.name,
                        "row": row,
                        "seed": seed,
                        "steps": steps,
                        "k": k if row in PERIODIC else None,
                        "lr": _key_lr(fs_lr if row.startswith("fs_") else lr) if not uses_package else None,
                        "low": LOW if row in LOW_ROWS else None,
                        "package": fp if uses_package else None,
                        "sweep": [cfg.sweep_steps, cfg.min_lr, cfg.max_lr] if uses_package else None,
                        "v": VERSION,
                    }
                    args = (task, row, seed, steps, k, fs_lr, grid["lr"] if grid else None, cfg)
                    runs[row].append(cache.get("retune", key, lambda args=args: _safe(lambda: run_row(*args))))
            per_budget[str(budget)] = {"steps": steps, "k": k, "runs": runs, "grid": grid}
        res["tasks"][task.name] = {"split": task.split, "fit_start_lr": fs, "seeds": list(seeds), **per_budget}
    return res


# --------------------------------------------------------------------------- report


def metrics(runs: list[dict]) -> list[float | None]:
    return [r.get("metric") if r else None for r in runs]


def delta(task: Task, m: float, ref: float) -> float:
    """Accuracy points (higher better), or MSE ratio (lower better)."""
    return m - ref if task.higher_is_better else m / ref


def compare(task: Task, ms: list, refs: list) -> dict[str, Any]:
    """Paired W/T/L (tie: ``TIE``) and the median Δ of ``ms`` against ``refs``."""
    tie = TIE[task.kind]
    w = t = lo = 0
    ds = []
    for m, r in zip(ms, refs, strict=False):
        if m is None or r is None or not (math.isfinite(m) and math.isfinite(r)):
            continue
        d = delta(task, m, r)
        ds.append(d)
        gain = d if task.higher_is_better else (1 - d)
        w, t, lo = w + (gain > tie), t + (abs(gain) <= tie), lo + (gain < -tie)
    return {"w": w, "t": t, "l": lo, "median": float(np.median(ds)) if ds else math.nan}


def fmt_cmp(task: Task, c: dict[str, Any]) -> str:
    if not math.isfinite(c["median"]):
        return "—"
    med = f"{c['median']:+.1f}" if task.higher_is_better else f"{c['median']:.3f}×"
    return f"{med} ({c['w']}/{c['t']}/{c['l']})"


# paired comparisons: (label, row, reference row)
COMPARISONS = (
    ("re-tune + cosine vs cosine", "rt_cosine", "fs_cosine"),
    ("re-tune + OneCycle vs OneCycle", "rt_onecycle", "fs_onecycle"),
    ("re-tune vs fit-start + cosine", "retune", "fs_cosine"),
    ("re-tune vs fit-start + fixed", "retune", "fs_fixed"),
    ("fit-start + fixed vs default LR", "fs_fixed", "fixed"),
    ("fit-start + cosine vs fit-start + fixed", "fs_cosine", "fs_fixed"),
    ("fit-start ÷ 3 + fixed vs fit-start + fixed", "fs_fixed_low", "fs_fixed"),
    ("re-tune from ÷ 3 vs anneal from ÷ 3", "rt_low", "anneal_low"),
    ("milestone vs no re-tune", "milestone", "fs_fixed"),
    ("milestone vs best fixed LR", "milestone", "grid"),
    ("re-tune vs best fixed LR", "retune", "grid"),
    ("milestone from ÷ 3 vs ÷ 3 + fixed", "milestone_low", "fs_fixed_low"),
    ("milestone from ÷ 3 vs best fixed LR", "milestone_low", "grid"),
)


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """Per task and budget: median metric per row, and every paired comparison."""
    out: dict[str, Any] = {}
    for name, r in res["tasks"].items():
        task = TASKS[name]
        for b in res["budgets"]:
            rb = r[str(b)]
            ms = {row: metrics(runs) for row, runs in rb["runs"].items()}
            med = {
                row: float(np.median([m for m in v if m is not None])) if any(m is not None for m in v) else None
                for row, v in ms.items()
            }
            cmps = {label: compare(task, ms[a], ms[ref]) for label, a, ref in COMPARISONS if a in ms and ref in ms}
            out[f"{name}@{b}"] = {"median": med, "cmp": cmps}
    return out


def render(res: dict[str, Any], fig_dir: Any = None, rel_fig: str = "figures") -> str:
    if res.get("skipped"):
        return f"# Periodic re-tuning and schedules\n\nSkipped: {res['skipped']}\n"
    summ = summarize(res)
    parts = [
        "# Periodic re-tuning and schedules\n",
        __doc__.split("\n\n", 1)[1].strip() + "\n",
        "Paired by seed (report-only tasks: "
        + ", ".join(sorted({str(len(r["seeds"])) for r in res["tasks"].values() if r["split"] == "report"}) or ["—"])
        + " seeds; tune tasks: "
        + ", ".join(sorted({str(len(r["seeds"])) for r in res["tasks"].values() if r["split"] == "tune"}) or ["—"])
        + f" seeds, to fit the compute budget); W/T/L = wins/ties/losses of the "
        f"first row against the second, a tie is |Δ| ≤ {TIE['classification']} accuracy points (regression: MSE "
        f"ratio within {TIE['regression']:.0%}); Δ is the median over seeds (regression: median MSE ratio, < 1 is "
        "better). Tasks marked *report* were never used to tune the package's rules or constants.\n",
        "## Tasks\n",
        tasks_table([TASKS[name] for name in res["tasks"]], {}) + "\n",
    ]
    for b in res["budgets"]:
        rows = []
        for name, r in res["tasks"].items():
            task = TASKS[name]
            med = summ[f"{name}@{b}"]["median"]
            nd = 1 if task.higher_is_better else 3
            rows.append(
                [f"`{name}`", r["split"], str(r[str(b)]["steps"])]
                + [("—" if med.get(row) is None else f"{med[row]:.{nd}f}") for row in ROWS]
            )
        parts.append(f"## {b}× budget: median metric per row (val acc %, regression val MSE)\n")
        parts.append(table(["task", "split", "steps", *[f"`{r}`" for r in ROWS]], rows) + "\n")
        rows = []
        for name, r in res["tasks"].items():
            task = TASKS[name]
            cmps = summ[f"{name}@{b}"]["cmp"]
            rows.append(
                [f"`{name}`", r["split"]]
                + [fmt_cmp(task, cmps[label]) if label in cmps else "—" for label, _, _ in COMPARISONS]
            )
        parts.append(f"## {b}× budget: paired comparisons, median Δ (W/T/L)\n")
        parts.append(table(["task", "split", *[label for label, _, _ in COMPARISONS]], rows) + "\n")
    # cost and what the re-tunes did
    rows = []
    for name, r in res["tasks"].items():
        for b in res["budgets"]:
            rb = r[str(b)]
            for row in HISTORY_ROWS:
                runs = [x for x in rb["runs"].get(row, []) if x and "history" in x]
                if not runs:
                    continue
                frac = np.median([x["sweep_steps"] / max(1, x["steps"]) for x in runs])
                moves = []
                for x in runs:
                    ms = [
                        h["applied_lr"] / h["previous_lr"]
                        for h in x["history"]
                        if h["kind"] == "retune" and h["applied_lr"]
                    ]
                    moves.append(" ".join(f"{m:.2g}" for m in ms) or "—")
                rows.append(
                    [
                        f"`{name}`",
                        f"{b}×",
                        f"`{row}`",
                        f"k={rb['k']}" if row in PERIODIC else "—",
                        f"{frac:.0%}",
                        "; ".join(moves),
                    ]
                )
    parts.append("## What the re-tunes did\n")
    parts.append(
        "Sweep steps as a fraction of training steps (median over seeds), and each seed's re-tune moves "
        "(new LR ÷ LR before the re-tune; 1 = kept), seeds separated by `;`.\n"
    )
    parts.append(table(["task", "budget", "row", "every", "sweep steps", "re-tune moves per seed"], rows) + "\n")
    ft = {n: r for n, r in res["tasks"].items() if TASKS[n].unfreeze_at is not None}
    if ft:
        parts.append("## Fine-tuning\n")
        for name, r in ft.items():
            for b in res["budgets"]:
                g = r[str(b)]["grid"]
                if g:
                    parts.append(
                        f"`{name}` {b}×: grid (LR: mean val acc % over the oracle seeds) "
                        + ", ".join(f"{lr:.2g}: {m:.1f}" for lr, m in zip(g["grid"], g["mean"], strict=False))
                        + f"; best {g['lr']:.2g}. Fit-start LR per seed: "
                        + " ".join(f"{x:.2g}" for x in r["fit_start_lr"] if x)
                        + "\n"
                    )
    failed: dict[str, set[str]] = {}  # error -> the task-and-row pairs it stopped
    for name, r in res["tasks"].items():
        for b in res["budgets"]:
            for row, runs in r[str(b)]["runs"].items():
                for x in runs:
                    if x and "error" in x:
                        failed.setdefault(x["error"], set()).add(f"`{name}` `{row}`")
    for error, where in sorted(failed.items()):
        why = KNOWN_ERRORS.get(error, "")
        parts.append(f"Could not run: {', '.join(sorted(where))}: `{error}`{why}\n")
    return "\n".join(parts)
