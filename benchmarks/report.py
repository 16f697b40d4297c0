"""Render the benchmark results as markdown (README.md) and matplotlib figures (figures/*.png)."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.tasks import TASKS, Task

METHOD_LABELS = {
    "ours_valley": "ours: valley",
    "ours_keep": "ours: valley, keep below confidence",
    "ours_race": "ours: valley + race",
    "ours_val": "ours: valley, validation-loss mode",
    "ours_steepest": "ours: steepest",
    "ours_minimum": "ours: minimum",
    "ours_sma_slope": "ours: sma_slope",
    "cand_fastai_valley": "fast.ai `valley`",
    "cand_gmean_steepest_minimum": "candidate: √(steepest × minimum)",
    "lightning": "Lightning `lr_find().suggestion()`",
    "torch_lr_finder": "torch-lr-finder (steepest gradient)",
}


def label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def fmt_lr(v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.2g}"


def fmt(v: float | None, nd: int = 2, suffix: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float) and math.isinf(v):
        return "diverged"
    return f"{v:.{nd}f}{suffix}"


def fmt_regret(task: Task, v: float) -> str:
    return fmt(v, 1) if task.higher_is_better else fmt(v, 2, "×")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- machine


def _cmd(*args: str) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        return "?"


def machine_info() -> dict[str, str]:
    import lightning
    import pandas
    import torch

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch_lr_finder

        tlf = getattr(torch_lr_finder, "__version__", None) or _dist_version("torch-lr-finder")
    except ImportError:
        tlf = "not installed"
    try:
        import lightning_lrsweep

        ours = lightning_lrsweep.__version__
    except ImportError:
        ours = "not installed"
    root = Path(__file__).resolve().parent.parent
    return {
        "date (UTC)": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "CPU": f"{cpu}, {os.cpu_count()} logical cores (runs use 1 thread: `torch.set_num_threads(1)`)",
        "OS": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "torch-lr-finder": tlf,
        "lightning_lrsweep": f"{ours} (git {_cmd('git', '-C', str(root), 'rev-parse', '--short', 'HEAD')})",
        "numpy / pandas": f"{np.__version__} / {pandas.__version__}",
        "load average when rendered (1/5/15 min)": " / ".join(f"{x:.1f}" for x in os.getloadavg())
        + " — the machine is shared: wall times and cost ratios are noisy",
    }


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


# --------------------------------------------------------------------------- figures


def _method_order(methods: list[str]) -> list[str]:
    order = list(METHOD_LABELS)
    return sorted(methods, key=lambda m: (order.index(m) if m in order else len(order), m))


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
    methods = _method_order(list(res["methods"]))
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


# --------------------------------------------------------------------------- sections


def tasks_section(tasks: list[Task], steps: dict[str, int]) -> str:
    rows = []
    for t in tasks:
        rows.append(
            [
                f"`{t.name}`",
                t.description,
                t.optimizer,
                f"{t.n_params():,}",
                f"{t.n_train}/{t.n_val}",
                str(t.batch_size),
                str(steps.get(t.name, t.budget)),
                t.metric_name,
                f"{fmt_lr(t.grid[0])}…{fmt_lr(t.grid[-1])} ({len(t.grid)} pts)",
            ]
        )
    return table(["task", "data / model", "optimizer", "params", "train/val", "batch", "steps", "metric", "grid"], rows)


def _cell(t: Task, s: dict[str, Any]) -> str:
    """``median (worst) · spread`` of one method on one task."""
    return f"{fmt_regret(t, s['median_regret'])} ({fmt_regret(t, s['worst_regret'])}) · {fmt(s['spread_decades'], 2)}"


def _split_summary(q: dict[str, Any], tasks: list[Task], methods: list[str]) -> str:
    """One row per method: each task's cell, then how many tasks meet each goal and beat every peer's median."""
    from benchmarks.quality import ahead_of_peers, goal_check

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
    from benchmarks.quality import ahead_of_peers, goal_check

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
    from benchmarks.quality import regret

    seeds = orc["metrics"][orc["grid"].index(orc["lr"])]
    return max(regret(t, m, orc["metric"]) for m in seeds)


def _variants_table(q: dict[str, Any], tasks: list[Task]) -> str:
    """Per task: our sweep's confidence over seeds, how often ``keep`` fired, and what the race cost and picked."""
    from benchmarks.peers import MIN_CONFIDENCE

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


def quality_section(q: dict[str, Any], cfg: Any, fig_dir: Path, rel_fig: str) -> str:
    from benchmarks.peers import MIN_CONFIDENCE, PROBE_SIZE, RACE_STEPS, VAL_BATCHES
    from lightning_lrsweep.sweep import RACE_VAL_BATCHES

    tasks = [TASKS[n] for n in q["tasks"]]
    methods = _method_order(sorted({m for r in q["tasks"].values() for m in r["methods"]}))
    splits = {sp: [t for t in tasks if q["tasks"][t.name].get("split", t.split) == sp] for sp in ("tune", "report")}
    parts = [
        "## Suggestion quality\n",
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
    ]
    if splits["report"] and "ours_valley" in methods:
        parts.append("### Goals on the report-only set: the default (`ours: valley`)\n")
        parts.append(_goal_table(q, splits["report"], "ours_valley"))
    for sp, title in (("tune", "Tune set"), ("report", "Report-only set")):
        if splits[sp]:
            parts.append(f"### {title}\n")
            parts.append(_split_summary(q, splits[sp], methods))
    if "ours_valley" in methods:
        parts.append("### Confidence, race and validation-loss mode: what they saw and cost\n")
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
        parts.append(f"### `{t.name}`\n")
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


def render(
    results: dict[str, Any], cfg: Any, out_dir: Path, wall_s: float, compute_s: float, total_s: float = 0.0
) -> Path:
    """Write ``out_dir/README.md`` and ``out_dir/figures/*.png``; returns the README path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    from benchmarks import cost, retune

    parts = ["# lightning_lrsweep benchmarks\n"]
    if cfg.quick:
        parts.append("> **QUICK MODE** (smoke-test budget): numbers below are not meaningful.\n")
    parts.append(
        "Regenerate with `python -m benchmarks.run` (options: `--quick`, `--only quality,cost,ddp,retune,window`, "
        "`--tasks a,b`). Per-run results are cached as JSON under `benchmarks/_runs/` (gitignored), so re-rendering "
        "is cheap; `--refresh` recomputes. All numbers are medians over seeds unless stated.\n"
    )
    parts.append(
        f"This report: {wall_s / 60:.1f} min wall time for the command, of which {compute_s / 60:.1f} min were "
        f"new (uncached) runs; the runs it shows took {total_s / 60:.1f} min to compute in all (sum of the times "
        "recorded in the cache). From an empty cache the full command took 10.7 min on this shared 2-core machine "
        "(16.2 min in an earlier clean run while other users loaded it), before the `ddp` and `window` sections "
        "were added; they add about 1.5 min.\n"
    )
    findings = Path(__file__).resolve().parent / "findings.md"
    if findings.exists() and not cfg.quick:
        parts.append(findings.read_text().strip() + "\n")
    parts.append("## Machine and versions\n")
    parts.append(table(["", ""], [[k, v] for k, v in machine_info().items()]) + "\n")
    tasks_used = sorted(
        {n for sec in ("quality", "retune", "window") for n in results.get(sec, {}).get("tasks", {})},
        key=list(TASKS).index,
    )
    if tasks_used:
        steps = {n: r["steps"] for n, r in results.get("quality", {}).get("tasks", {}).items()}
        parts.append("## Tasks\n")
        parts.append(tasks_section([TASKS[n] for n in tasks_used], steps) + "\n")
    if "quality" in results:
        parts.append(quality_section(results["quality"], cfg, fig_dir, "figures"))
    if "cost" in results:
        parts.append(cost.render(results["cost"]))
    if "ddp" in results:
        from benchmarks import ddp_cost

        parts.append(ddp_cost.render(results["ddp"]))
    section = Path(__file__).resolve().parent / "retune_section.md"  # kept when a run leaves `retune` out
    if "retune" in results:
        text = retune.render(results["retune"], fig_dir, "figures")
        if not cfg.quick and out_dir.resolve() == section.parent:
            section.write_text(text)
        parts.append(text)
    elif section.exists() and not cfg.quick:
        parts.append(section.read_text())
    if "window" in results:
        from benchmarks import window

        parts.append(window.render(results["window"]))
    if "fsdp" in results:
        from benchmarks import fsdp_cost

        parts.append(fsdp_cost.render(results["fsdp"]))
    readme = out_dir / "README.md"
    readme.write_text("\n".join(parts))
    return readme
