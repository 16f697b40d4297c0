"""Write the benchmark report: one generated page per section and an index that links them.

Each section's runner renders its own page (``render``); this module only frames and writes them. A run rewrites
the pages of the sections it ran, plus the index; every other page keeps what its own last run wrote, with that
run's record (command, date, compute, machine) at its foot. Nothing here is edited by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import cost, ddp_cost, fsdp_cost, quality, retune, window
from benchmarks.common import Config
from benchmarks.markdown import machine_info, table


@dataclass(frozen=True)
class Page:
    file: str
    title: str
    measures: str


PAGES: dict[str, Page] = {
    "quality": Page(
        "quality.md",
        "Suggestion quality",
        "each finder's suggested LR, trained for the task's budget, against the best LR of a grid; the tasks",
    ),
    "cost": Page(
        "cost.md",
        "Sweep cost",
        "time and peak memory of a sweep step against a plain training step, ours and Lightning's `lr_find`",
    ),
    "ddp": Page("ddp.md", "Sweep cost under DDP", "a sweep step on 2 DDP processes against one, and its all-reduce"),
    "retune": Page(
        "retune.md",
        "Periodic re-tuning and schedules",
        "re-tunes against a fixed LR, a cosine and a OneCycle schedule, at 1× and 3× the task's budget",
    ),
    "window": Page("window.md", "Re-tune stability to the window", "whether re-tunes agree across sweep windows"),
    "fsdp": Page(
        "fsdp.md",
        "Sweep cost under FSDP2",
        "a sweep's snapshot memory per rank and its step time against a plain FSDP2 step",
    ),
}
"""Every section ``python -m benchmarks.run`` knows, in the order it runs them and the index lists them."""

RENDER: dict[str, Callable[[dict[str, Any], Config, Path], str]] = {
    "quality": quality.render,
    "cost": lambda res, cfg, fig_dir: cost.render(res),
    "ddp": lambda res, cfg, fig_dir: ddp_cost.render(res),
    "retune": lambda res, cfg, fig_dir: retune.render(res, fig_dir),
    "window": lambda res, cfg, fig_dir: window.render(res),
    "fsdp": lambda res, cfg, fig_dir: fsdp_cost.render(res),
}
"""Each section's page body (title first) from its results: the section module's own ``render``."""

QUICK_BANNER = "> **QUICK MODE** (smoke-test budget): numbers on this page are not meaningful.\n"


@dataclass(frozen=True)
class RunRecord:
    """How one section's page was made: the command, and the runs (cached or new) the page shows."""

    command: str
    runs: int
    new_runs: int
    compute_s: float
    total_s: float


def run_record(record: RunRecord) -> str:
    """The foot of a page: when and how it was made, what it cost, and the machine."""
    lines = [
        "## Run\n",
        f"Written by `{record.command}`: the page shows {record.runs} runs, {record.new_runs} of them computed by "
        f"this command ({record.compute_s / 60:.1f} min); all of them took {record.total_s / 60:.1f} min to compute "
        "(the times recorded in the run cache).\n",
        table(["", ""], [[k, v] for k, v in machine_info().items()]),
    ]
    return "\n".join(lines) + "\n"


def write_page(out_dir: Path, section: str, res: dict[str, Any], cfg: Config, record: RunRecord) -> Path:
    """Write one section's page (and its figures, under ``out_dir/figures/``); returns its path."""
    page = PAGES[section]
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    body = RENDER[section](res, cfg, fig_dir)
    title, _, rest = body.partition("\n")
    parts = [title + "\n", QUICK_BANNER if cfg.quick else "", rest.strip() + "\n", run_record(record)]
    path = out_dir / page.file
    path.write_text("\n".join(p for p in parts if p))
    return path


def index(out_dir: Path, quick: bool) -> str:
    """The index page: what each page present in ``out_dir`` measures, and how to regenerate them."""
    rows = [[f"[{p.title}]({p.file})", p.measures] for p in PAGES.values() if (out_dir / p.file).exists()]
    parts = [
        "# Benchmarks\n",
        QUICK_BANNER if quick else "",
        "Every page here is written by `python -m benchmarks.run`; none is edited by hand. Each page carries, at "
        "its foot, the command, date, compute and machine of the run that wrote it.\n",
        table(["page", "what it measures"], rows) + "\n",
        "## Regenerating\n",
        "`python -m benchmarks.run` runs every section and rewrites every page; `--only quality,retune` runs and "
        "rewrites those sections' pages (and this index) and leaves the others as they are. `--tasks a,b` and "
        "`--split tune|report` choose the tasks. Each run's result is cached as JSON under `benchmarks/_runs/` "
        "(gitignored), so re-rendering is cheap; `--refresh` recomputes. `--quick` is a smoke-test budget that "
        "writes to `benchmarks/_runs/quick_report/` instead of here. All numbers are medians over seeds unless a "
        "page says otherwise.\n",
        "Rules and constants of the package may be tuned on the tasks of the *tune* split only; the *report-only* "
        "split is never tuned on.\n",
    ]
    return "\n".join(p for p in parts if p)


def render(results: dict[str, Any], cfg: Config, out_dir: Path, records: dict[str, RunRecord]) -> Path:
    """Write the page of every section in ``results`` and the index into ``out_dir``; returns the index's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for section, res in results.items():
        write_page(out_dir, section, res, cfg, records[section])
    path = out_dir / "index.md"
    path.write_text(index(out_dir, cfg.quick))
    return path
