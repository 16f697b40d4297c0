"""One command for the whole benchmark: ``python -m benchmarks.run [--quick] [--only ...] [--split tune|report|all]``.

Runs the chosen sections and writes their pages, their figures and an index into ``--out`` (default
``docs/benchmarks/``, the report the docs link to; ``benchmarks/_runs/quick_report/`` with ``--quick`` so a smoke
run never overwrites it), caching every run as JSON under ``--runs-dir``. Modules, lowest first: ``tasks`` →
``common``, ``markdown`` → ``peers`` → one runner per section (``quality``, ``cost``, ``ddp_cost``, ``retune`` →
``window``, ``fsdp_cost``) → ``report`` → ``run``; none imports from a module after it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import cost, ddp_cost, fsdp_cost, quality, report, retune, window
from benchmarks.common import Config, RunCache, quiet
from benchmarks.tasks import PRETRAIN_DIR, SPLITS, TASKS, Task, tasks_in

HERE = Path(__file__).resolve().parent
REPORT_DIR = HERE.parent / "docs" / "benchmarks"
SECTIONS = tuple(report.PAGES)

Runner = Callable[[RunCache, list[Task], Config, Callable[[str], None]], dict[str, Any]]
RUNNERS: dict[str, Runner] = {
    "quality": lambda cache, tasks, cfg, log: quality.run(cache, tasks, cfg, log=log),
    "cost": lambda cache, tasks, cfg, log: cost.run(cache, cfg, log=log),
    "ddp": lambda cache, tasks, cfg, log: ddp_cost.run(cache, cfg, log=log),
    "retune": lambda cache, tasks, cfg, log: retune.run(cache, tasks, cfg, log=log),
    "window": lambda cache, tasks, cfg, log: window.run(cache, tasks, cfg, log=log),
    "fsdp": lambda cache, tasks, cfg, log: fsdp_cost.run(cache, cfg, log=log),
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny budget (smoke test): 1 oracle seed, 2 seeds, few steps")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--tasks", default="", help=f"comma-separated subset of: {','.join(TASKS)}")
    p.add_argument(
        "--split",
        default="all",
        choices=(*SPLITS, "all"),
        help="tasks of one split: 'tune' (rules may be tuned on them), 'report' (never tuned on), or 'all'",
    )
    p.add_argument("--out", type=Path, default=None, help="where the pages and figures/ go (default: docs/benchmarks)")
    p.add_argument("--runs-dir", type=Path, default=None, help="JSON run cache (default: benchmarks/_runs)")
    p.add_argument("--refresh", action="store_true", help="ignore cached runs and recompute them")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse(argv)
    quiet()
    t0 = time.perf_counter()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        raise SystemExit(f"--only got {bad}; allowed: {', '.join(SECTIONS)}")
    names = [s.strip() for s in args.tasks.split(",") if s.strip()] or tasks_in(args.split)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise SystemExit(f"--tasks got unknown {unknown}; allowed: {', '.join(TASKS)}")
    tasks = [TASKS[n] for n in names]
    cfg = Config.quick_config() if args.quick else Config()
    runs_dir = args.runs_dir or HERE / "_runs"
    out = args.out or (runs_dir / "quick_report" if args.quick else REPORT_DIR)
    cache = RunCache(runs_dir / ("quick" if args.quick else "full"), refresh=args.refresh)
    PRETRAIN_DIR[0] = runs_dir / "pretrained"  # pre-trained backbones, shared by quick and full runs

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    results: dict[str, Any] = {}
    records: dict[str, report.RunRecord] = {}
    command = " ".join(["python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])])
    for section in SECTIONS:
        if section not in only:
            continue
        before = (cache.used, cache.computed, cache.compute_s, cache.used_s)
        results[section] = RUNNERS[section](cache, tasks, cfg, log)
        records[section] = report.RunRecord(
            command=command,
            runs=cache.used - before[0],
            new_runs=cache.computed - before[1],
            compute_s=cache.compute_s - before[2],
            total_s=cache.used_s - before[3],
        )
    (cache.root / "results.json").parent.mkdir(parents=True, exist_ok=True)
    (cache.root / "results.json").write_text(json.dumps(results, default=str, indent=1))
    index = report.render(results, cfg, out, records)
    log(f"wrote {index.parent} ({cache.computed} new runs, {cache.compute_s:.0f}s computing)")
    return index


if __name__ == "__main__":
    main(sys.argv[1:])
