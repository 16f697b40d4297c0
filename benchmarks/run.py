"""One command for the whole benchmark: ``python -m benchmarks.run [--quick] [--only ...] [--split tune|report|all]``.

Writes ``README.md`` and ``figures/`` into ``--out`` (default ``benchmarks/``; ``benchmarks/_runs/quick/`` with
``--quick`` so a smoke run never overwrites the real report), caching every run as JSON under ``--runs-dir``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.common import Config, RunCache, quiet
from benchmarks.tasks import PRETRAIN_DIR, SPLITS, TASKS, tasks_in

HERE = Path(__file__).resolve().parent
SECTIONS = ("quality", "cost", "ddp", "retune", "window", "fsdp")


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
    p.add_argument("--out", type=Path, default=None, help="where README.md and figures/ go")
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
    out = args.out or (runs_dir / "quick_report" if args.quick else HERE)
    cache = RunCache(runs_dir / ("quick" if args.quick else "full"), refresh=args.refresh)
    PRETRAIN_DIR[0] = runs_dir / "pretrained"  # pre-trained backbones, shared by quick and full runs

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    results: dict = {}
    if "quality" in only:
        from benchmarks import quality

        results["quality"] = quality.run(cache, tasks, cfg, log=log)
    if "cost" in only:
        from benchmarks import cost

        results["cost"] = cost.run(cache, cfg, log=log)
    if "ddp" in only:
        from benchmarks import ddp_cost

        results["ddp"] = ddp_cost.run(cache, cfg, log=log)
    if "retune" in only:
        from benchmarks import retune

        results["retune"] = retune.run(cache, tasks, cfg, log=log)
    if "window" in only:
        from benchmarks import window

        results["window"] = window.run(cache, tasks, cfg, log=log)
    if "fsdp" in only:
        from benchmarks import fsdp_cost

        results["fsdp"] = fsdp_cost.run(cache, cfg, log=log)

    from benchmarks import report

    wall = time.perf_counter() - t0
    (cache.root / "results.json").parent.mkdir(parents=True, exist_ok=True)
    (cache.root / "results.json").write_text(json.dumps(results, default=str, indent=1))
    readme = report.render(results, cfg, out, wall_s=wall, compute_s=cache.compute_s, total_s=cache.used_s)
    log(f"wrote {readme} ({cache.computed} new runs, {cache.compute_s:.0f}s computing)")
    return readme


if __name__ == "__main__":
    main(sys.argv[1:])
