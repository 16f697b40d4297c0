"""Markdown building blocks every section's ``render`` uses: tables, number formats, method labels, the machine."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks.tasks import Task

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


def method_order(methods: list[str]) -> list[str]:
    """``methods`` in the order of :data:`METHOD_LABELS` (ours first, then the peers), unknown ones last."""
    order = list(METHOD_LABELS)
    return sorted(methods, key=lambda m: (order.index(m) if m in order else len(order), m))


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


def _cmd(*args: str) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        return "?"


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def machine_info() -> dict[str, str]:
    """The machine and package versions a section ran on, as table rows."""
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


def tasks_table(tasks: list[Task], steps: dict[str, int]) -> str:
    """One row per task: data and model, optimizer, size, batch, training steps, metric and LR grid."""
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
