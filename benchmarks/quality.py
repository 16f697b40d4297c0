"""Suggestion quality: each finder's suggested LR, trained for the task budget, against a grid-search oracle.

Oracle: every LR of the task's log-spaced grid trained with each oracle seed for the same budget; the oracle LR is
the grid point with the best mean metric, the oracle metric that mean. A method's regret on one seed is
``oracle - metric`` in accuracy points (classification) or ``metric / oracle`` (regression MSE ratio).

Only the methods in :data:`TRAINED` are trained and reported; the other rules of our sweep are still recorded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import peers
from benchmarks.common import Config, RunCache, lr_key, train
from benchmarks.markdown import fmt, fmt_lr, fmt_regret, label, method_order, table, tasks_table
from benchmarks.peers import (
    FINDERS,
    MIN_CONFIDENCE,
    PROBE_SIZE,
    RACE_STEPS,
    VAL_BATCHES,
    SweepConfig,
    add_candidates,
    available_finders,
    ours_fingerprint,
    run_finder,
)
from benchmarks.tasks import TASKS, Task

TRAINED = (
    "ours_valley",
    "ours_keep",
    "ours_race",
    "ours_val",
    "cand_fastai_valley",
    "lightning",
    "torch_lr_finder",
)
"""The methods trained at their suggestion: our default, our variants, and the three peers."""

PEERS = ("cand_fastai_valley", "lightning", "torch_lr_finder")

GOALS = {"median_pts": 1.0, "median_ratio": 1.05, "worst_pts": 3.0, "worst_ratio": 1.15, "spread": 0.3}
"""Per-task targets the report checks a method against: median and worst-seed regret, and spread."""


def train_cached(cache: RunCache, task: Task, lr: float, seed: int, steps: int) -> dict[str, Any]:
    """Metric of a fresh model trained at ``lr`` (rounded to 4 significant digits) for ``steps``; cached."""
    lr = float(lr_key(lr))
    key = {"task": task.name, "lr": lr_key(lr), "seed": seed, "steps": steps, "schedule": None}

    def fn() -> dict[str, Any]:
        r = train(task, lr, seed, steps=steps)
        r.pop("model")
        return r

    return cache.get("train", key, fn)


def oracle(cache: RunCache, task: Task, cfg: Config) -> dict[str, Any]:
    steps = cfg.steps(task)
    grid = cfg.grid(task)
    per_lr = {lr: [train_cached(cache, task, lr, s, steps)["metric"] for s in cfg.oracle_seeds] for lr in grid}
    means = {lr: float(np.mean(v)) for lr, v in per_lr.items()}
    pick = max if task.higher_is_better else min
    best = pick(means, key=lambda lr: means[lr])
    return {
        "grid": list(grid),
        "metrics": [per_lr[lr] for lr in grid],
        "mean": [means[lr] for lr in grid],
        "lr": best,
        "metric": means[best],
        "at_edge": best in (grid[0], grid[-1]),
    }


def regret(task: Task, metric: float, oracle_metric: float) -> float:
    if task.higher_is_better:
        return oracle_metric - metric
    return metric / oracle_metric


def summarize(task: Task, lrs: list[float | None], metrics: list[float | None], oracle_metric: float) -> dict:
    ok = [i for i, lr in enumerate(lrs) if lr is not None]
    good_lrs = np.array([lrs[i] for i in ok], dtype=float)
    good_m = np.array([metrics[i] for i in ok], dtype=float)
    regrets = np.array([regret(task, m, oracle_metric) for m in good_m], dtype=float)
    return {
        "n": len(lrs),
        "failures": len(lrs) - len(ok),
        "median_lr": float(np.exp(np.median(np.log(good_lrs)))) if len(ok) else float("nan"),
        "spread_decades": float(np.log10(good_lrs.max() / good_lrs.min())) if len(ok) else float("nan"),
        "median_metric": float(np.median(good_m)) if len(ok) else float("nan"),
        "median_regret": float(np.median(regrets)) if len(ok) else float("nan"),
        "worst_regret": float(regrets.max()) if len(ok) else float("nan"),
    }


def sweep_cached(cache: RunCache, finder: str, task: Task, seed: int, cfg: Config) -> dict[str, Any]:
    scfg = SweepConfig(cfg.min_lr, cfg.max_lr, cfg.sweep_steps)
    key = {"task": task.name, "finder": finder, "seed": seed, "sweep": scfg.__dict__}
    if finder == "ours":
        key["package"] = ours_fingerprint()
        key["v"] = 3  # stores raw losses, the confidence and the interval too
        sw = add_candidates(cache.get("sweep", key, lambda: run_finder(finder, task, seed, scfg)))
        sw["suggestions"]["ours_keep"] = peers.keep_rule(task, sw)
        return sw
    if finder.startswith("ours"):
        key["package"] = ours_fingerprint()
        key["settings"] = [peers.RACE_STEPS, peers.VAL_BATCHES, peers.PROBE_SIZE]
    return cache.get("sweep", key, lambda: run_finder(finder, task, seed, scfg))


def run(cache: RunCache, tasks: list[Task], cfg: Config, log=print) -> dict[str, Any]:  # noqa: ANN001
    """Oracle grid plus every available finder over ``cfg.seeds``; returns per-task raw results and summaries."""
    out: dict[str, Any] = {"finders": available_finders(), "tasks": {}, "splits": {t.name: t.split for t in tasks}}
    for task in tasks:
        steps = cfg.steps(task)
        log(f"[quality] {task.name}: oracle grid ({len(cfg.grid(task))} LRs x {len(cfg.oracle_seeds)} seeds)")
        orc = oracle(cache, task, cfg)
        methods: dict[str, dict[str, Any]] = {}
        curves: dict[str, dict[str, Any]] = {}
        extras: dict[str, list[Any]] = {"confidence": [], "race_s": [], "race": []}
        for finder in out["finders"]:
            log(f"[quality] {task.name}: {finder} x {len(cfg.seeds)} seeds")
            for seed in cfg.seeds:
                sw = sweep_cached(cache, finder, task, seed, cfg)
                if seed == cfg.seeds[0]:
                    curves[finder] = {"lrs": sw["lrs"], "losses": sw["losses"]}
                if finder == "ours":
                    extras["confidence"].append(sw.get("confidence"))
                if finder == "ours_race":
                    extras["race_s"].append(sw.get("race_s"))
                    extras["race"].append({"lrs": sw.get("race_lrs"), "scores": sw.get("race_scores")})
                for method in FINDERS[finder][1]:
                    if method not in TRAINED:
                        continue
                    lr = sw["suggestions"].get(method)
                    rec = methods.setdefault(method, {"lrs": [], "metrics": [], "sweep_s": [], "errors": []})
                    rec["lrs"].append(lr)
                    rec["metrics"].append(None if lr is None else train_cached(cache, task, lr, seed, steps)["metric"])
                    rec["sweep_s"].append(sw["sweep_s"])
                    if sw.get("error"):
                        rec["errors"].append(sw["error"].splitlines()[0])
        for rec in methods.values():
            rec["summary"] = summarize(task, rec["lrs"], rec["metrics"], orc["metric"])
        out["tasks"][task.name] = {
            "oracle": orc,
            "methods": methods,
            "curves": curves,
            "steps": steps,
            "split": task.split,
            "extras": extras,
        }
    return out


def goal_check(task: Task, summary: dict[str, Any]) -> dict[str, bool]:
    """Which per-task targets (:data:`GOALS`) a method's summary meets."""
    pts = task.higher_is_better
    return {
        "median": summary["median_regret"] <= (GOALS["median_pts"] if pts else GOALS["median_ratio"]),
        "worst": summary["worst_regret"] <= (GOALS["worst_pts"] if pts else GOALS["worst_ratio"]),
        "spread": summary["spread_decades"] <= GOALS["spread"],
    }


def ahead_of_peers(task_result: dict[str, Any], method: str) -> bool:
    """Whether ``method``'s median regret is below (strictly better than) every peer's on this task."""
    mine = task_result["methods"][method]["summary"]["median_regret"]
    others = [task_result["methods"][p]["summary"]["median_regret"] for p in PEERS if p in task_result["methods"]]
    return all(mine < other or np.isnan(other) for other in others)


# --------------------------------------------------------------------------- report


def plot_quality(task: Task, res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    orc = res["oracle"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2))
    grid = np.array(orc["grid"])
    metrics = np.array(orc["metrics"], dtype=float)
    if not task.higher_is_better:
        metrics = np.where(np.isfinite(metrics), metrics, np.nan)
    for j in range(metrics.shape[1]):
        ax.plot(grid, metrics[:, j], "o", color="0.6", ms=3)
    ax.plot(grid, np.array(orc["mean"], dtype=float), "-", color="k", label="grid (mean over seeds)")
    ax.axvline(orc["lr"], color="k", ls=":", lw=1)
    methods = method_order(list(res["methods"]))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, m in enumerate(methods):
        rec = res["methods"][m]
        pts = [(lr, v) for lr, v in zip(rec["lrs"], rec["metrics"], strict=False) if lr is not None]
        if pts:
            x, y = zip(*pts, strict=False)
            y = [v if math.isfinite(v) else np.nan for v in y]
            ax.plot(x, y, "x", color=colors[i % len(colors)], ms=8, mew=2, label=label(m))
    ax.set_xscale("log")
    if not task.higher_is_better:
        ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(task.metric_name)
    ax.set_title(f"{task.name}: metric after {res['steps']} steps")
    ax.legend(fontsize=7)
    for i, (finder, c) in enumerate(res["curves"].items()):
        if c["lrs"]:
            bx.plot(c["lrs"], c["losses"], color=colors[i % len(colors)], label=f"{finder} (seed 0)")
    bx.set_xscale("log")
    bx.set_xlabel("learning rate")
    bx.set_ylabel("recorded (smoothed) train loss")
    bx.set_title("range-test curves")
    lo = [min(c["losses"]) for c in res["curves"].values() if c["losses"]]
    if lo:
        bx.set_ylim(min(lo) * 0.9, max(min(lo) * 4, min(lo) + 1))
    bx.axvline(orc["lr"], color="k", ls=":", lw=1, label="oracle LR")
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _cell(t: Task, s: dict[str, Any]) -> str:
    """``median (worst) · spread`` of one method on one task."""
    return f"{fmt_regret(t, s['median_regret'])} ({fmt_regret(t, s['worst_regret'])}) · {fmt(s['spread_decades'], 2)}"


def _split_summary(q: dict[str, Any], tasks: list[Task], methods: list[str]) -> str:
    """One row per method: each task's cell, then how many tasks meet each goal and beat every peer's median."""
    rows = []
    for m in methods:
        row, met = [label(m)], {"median": 0, "worst": 0, "spread": 0, "ahead": 0}
        for t in tasks:
            rec = q["tasks"][t.name]["methods"].get(m)
            if rec is None:
                row.append("—")
                continue
            row.append(_cell(t, rec["summary"]))
            for goal, ok in goal_check(t, rec["summary"]).items():
                met[goal] += ok
            met["ahead"] += m.startswith("ours") and ahead_of_peers(q["tasks"][t.name], m)
        n = len(tasks)
        goals = f"{met['median']}/{n} · {met['worst']}/{n} · {met['spread']}/{n}"
        row += [goals, f"{met['ahead']}/{n}" if m.startswith("ours") else "—"]
        rows.append(row)
    head = ["method", *(f"`{t.name}`" for t in tasks), "goals met: median · worst · spread", "ahead of all 3 peers"]
    return table(head, rows) + "\n"


def _goal_table(q: dict[str, Any], tasks: list[Task], method: str) -> str:
    """Per task: the method's figures and each goal met (✓) or not (✗)."""
    mark = {True: "✓", False: "**✗**"}
    rows = []
    for t in tasks:
        r = q["tasks"][t.name]
        s = r["methods"][method]["summary"]
        ok = goal_check(t, s)
        peers_best = min(
            (
                r["methods"][p]["summary"]["median_regret"]
                for p in ("cand_fastai_valley", "lightning", "torch_lr_finder")
                if p in r["methods"]
            ),
            default=float("nan"),
        )
        rows.append(
            [
                f"`{t.name}`",
                f"{fmt_regret(t, s['median_regret'])} {mark[ok['median']]}",
                f"{fmt_regret(t, s['worst_regret'])} {mark[ok['worst']]}",
                f"{fmt(s['spread_decades'], 2)} {mark[ok['spread']]}",
                f"{fmt_regret(t, peers_best)} {mark[ahead_of_peers(r, method)]}",
                fmt_regret(t, _oracle_worst_seed(t, r["oracle"])),
            ]
        )
    head = [
        "task",
        "median regret (≤ 1 pt / 1.05×)",
        "worst seed (≤ 3 pts / 1.15×)",
        "spread (≤ 0.3 dec)",
        "best peer median (ours ahead?)",
        "noise floor: the oracle LR's own worst seed",
    ]
    return table(head, rows) + "\n"


def _oracle_worst_seed(t: Task, orc: dict[str, Any]) -> float:
    """The oracle LR's own worst seed against the oracle mean: how much seed noise alone costs at the best LR."""
    seeds = orc["metrics"][orc["grid"].index(orc["lr"])]
    return max(regret(t, m, orc["metric"]) for m in seeds)


def _variants_table(q: dict[str, Any], tasks: list[Task]) -> str:
    """Per task: our sweep's confidence over seeds, how often ``keep`` fired, and what the race cost and picked."""
    rows = []
    for t in tasks:
        r = q["tasks"][t.name]
        ex = r.get("extras", {})
        conf = [c for c in ex.get("confidence", []) if c is not None]
        races = ex.get("race", [])
        picked = []
        for race in races:
            lrs, scores = race.get("lrs") or [], race.get("scores") or []
            if lrs:
                i = int(np.argmin(scores))
                picked.append("low" if i == 0 and len(lrs) > 1 else "high" if i == len(lrs) - 1 else "mid")
        race_s = [v for v in ex.get("race_s", []) if v is not None]
        sweep_s = r["methods"].get("ours_valley", {}).get("sweep_s", [])
        val_s = r["methods"].get("ours_val", {}).get("sweep_s", [])
        rows.append(
            [
                f"`{t.name}`",
                " ".join(f"{c:.2f}" for c in conf) or "—",
                f"{sum(c < MIN_CONFIDENCE for c in conf)}/{len(conf)}",
                " ".join(picked) or "—",
                fmt(float(np.median(race_s)), 2) if race_s else "—",
                fmt(float(np.nanmedian(sweep_s)), 2) if sweep_s else "—",
                fmt(float(np.nanmedian(val_s)), 2) if val_s else "—",
            ]
        )
    head = [
        "task",
        "confidence per seed",
        f"kept (< {MIN_CONFIDENCE:g})",
        "race winner (low/mid/high) per seed",
        "race s",
        "sweep s",
        "validation-mode sweep s",
    ]
    return table(head, rows) + "\n"


def render(q: dict[str, Any], cfg: Config, fig_dir: Path, rel_fig: str = "figures") -> str:
    """The quality page: tasks, goals, split summaries, what the variants saw, and one table and figure per task."""
    from lightning_lrsweep.sweep import RACE_VAL_BATCHES

    tasks = [TASKS[n] for n in q["tasks"]]
    methods = method_order(sorted({m for r in q["tasks"].values() for m in r["methods"]}))
    splits = {sp: [t for t in tasks if q["tasks"][t.name].get("split", t.split) == sp] for sp in ("tune", "report")}
    parts = [
        "# Suggestion quality\n",
        f"Every finder runs one exponential range test of {cfg.sweep_steps} steps from {cfg.min_lr:g} to "
        f"{cfg.max_lr:g} on a fresh model (seeds {list(cfg.seeds)}; init and data order fixed by the seed), using "
        "its own defaults otherwise. A fresh model with the same seed is then trained at the suggested LR for the "
        f"task budget. Oracle: best mean metric over the task's log grid (seeds {list(cfg.oracle_seeds)}), same "
        "budget. Regret = oracle − metric in accuracy points (classification) or metric ÷ oracle MSE (regression, "
        "`1.00×` = as good as the oracle); negative regret / ratio < 1 means the suggestion beat the best grid mean "
        "on that seed. Spread = log10(max/min) of the seeds' LRs, in decades. A failure is a `None` suggestion "
        "or an exception.\n",
        "Rows: **ours: valley** is the package default (`LRSweep()`); **keep below confidence** is "
        f"`LRSweep(min_confidence={MIN_CONFIDENCE:g}, low_confidence='keep')` (below that confidence the task's "
        "default LR, what a user would try without a finder, is kept); **+ race** is `LRSweep(race_steps="
        f"{RACE_STEPS})`: the suggestion and the interval's ends trained {RACE_STEPS} steps each from the sweep's "
        f"snapshot, judged on the loss over {RACE_VAL_BATCHES} batches of a probe set ({PROBE_SIZE} fresh samples "
        "of the task's distribution, neither the training nor the metric's validation set); "
        "**validation-loss mode** is "
        f"`val_batches={VAL_BATCHES}` on that probe set. fast.ai's `valley` is fast.ai's index rule applied to "
        "the EMA-smoothed loss of our sweep (fast.ai's own recorder: same EMA, range and stop); fastai itself is "
        "not installed here. Lightning's `lr_find` and torch-lr-finder run their own sweeps, fresh in this run.\n",
        "Rules and constants may be tuned on the **tune** split only; the **report-only** split is never tuned "
        "on. Cells: median regret (worst seed) · spread.\n",
        "## Tasks\n",
        tasks_table(tasks, {t.name: q["tasks"][t.name]["steps"] for t in tasks}) + "\n",
    ]
    if splits["report"] and "ours_valley" in methods:
        parts.append("## Goals on the report-only set: the default (`ours: valley`)\n")
        parts.append(_goal_table(q, splits["report"], "ours_valley"))
    for sp, title in (("tune", "Tune set"), ("report", "Report-only set")):
        if splits[sp]:
            parts.append(f"## {title}\n")
            parts.append(_split_summary(q, splits[sp], methods))
    if "ours_valley" in methods:
        parts.append("## Confidence, race and validation-loss mode: what they saw and cost\n")
        parts.append(
            "Seconds are wall time on this shared machine (one thread). The race costs 3 × "
            f"{RACE_STEPS} optimizer steps plus the scoring; a validation-mode sweep adds {VAL_BATCHES} forward "
            "passes per step.\n"
        )
        parts.append(_variants_table(q, tasks))
    # per task
    for t in tasks:
        r = q["tasks"][t.name]
        orc = r["oracle"]
        edge = " — **at the grid edge**" if orc["at_edge"] else ""
        parts.append(f"## `{t.name}`\n")
        parts.append(
            f"Oracle LR **{fmt_lr(orc['lr'])}** ({t.metric_name} {fmt(orc['metric'], 2 if t.higher_is_better else 3)}"
            f", mean of {len(cfg.oracle_seeds)} seeds){edge}; {r['steps']} training steps.\n"
        )
        rows = []
        for m in methods:
            rec = r["methods"].get(m)
            if rec is None:
                continue
            s = rec["summary"]
            ratio = s["median_lr"] / orc["lr"] if math.isfinite(s["median_lr"]) else float("nan")
            rows.append(
                [
                    label(m),
                    fmt_lr(s["median_lr"]),
                    (f"{ratio:.2g}×" if math.isfinite(ratio) else "—"),
                    fmt(s["spread_decades"], 2),
                    fmt(s["median_metric"], 3 if not t.higher_is_better else 1),
                    fmt_regret(t, s["median_regret"]),
                    fmt_regret(t, s["worst_regret"]),
                    f"{s['failures']}/{s['n']}",
                    fmt(float(np.nanmedian(rec["sweep_s"])) if rec["sweep_s"] else float("nan"), 2),
                    " ".join(fmt_lr(v) for v in rec["lrs"]),
                ]
            )
        parts.append(
            table(
                [
                    "method",
                    "median LR",
                    "÷ oracle",
                    "spread (dec)",
                    f"median {t.metric_name}",
                    "median regret",
                    "worst regret",
                    "failures",
                    "sweep s",
                    "LR per seed",
                ],
                rows,
            )
            + "\n"
        )
        errors = sorted({e for m in methods for e in r["methods"].get(m, {}).get("errors", [])})
        if errors:
            parts.append("Errors: " + "; ".join(f"`{e}`" for e in errors) + "\n")
        fig = fig_dir / f"quality_{t.name}.png"
        plot_quality(t, r, fig)
        parts.append(f"![{t.name}]({rel_fig}/{fig.name})\n")
    return "\n".join(parts)
