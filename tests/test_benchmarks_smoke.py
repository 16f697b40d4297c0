"""Smoke test of the benchmark harness: ``python -m benchmarks.run --quick`` on one task, into tmp_path."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_quick_one_task(tmp_path):
    out = tmp_path / "report"
    runs = tmp_path / "runs"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.run",
        "--quick",
        "--tasks",
        "spiral_mlp_sgd",
        "--out",
        str(out),
        "--runs-dir",
        str(runs),
    ]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    readme = (out / "README.md").read_text()
    assert "QUICK MODE" in readme
    assert "## Suggestion quality" in readme
    assert "Lightning `lr_find().suggestion()`" in readme
    assert "torch-lr-finder" in readme
    assert "## Sweep cost" in readme
    assert "## Periodic re-tuning" in readme
    assert "ours: valley + race" in readme and "### Report-only set" not in readme  # one tune-split task
    assert "### 1× budget: paired comparisons" in readme
    assert "## Re-tune stability to the window" in readme
    assert "## Sweep cost under FSDP2" in readme
    assert (out / "figures" / "quality_spiral_mlp_sgd.png").exists()
    results = json.loads((runs / "quick" / "results.json").read_text())
    q = results["quality"]["tasks"]["spiral_mlp_sgd"]
    assert q["oracle"]["lr"] in q["oracle"]["grid"]
    for method, rec in q["methods"].items():
        assert len(rec["lrs"]) == 2, method  # quick mode: 2 seeds
    # a second run is served from the cache
    p2 = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p2.returncode == 0
    assert "(0 new runs" in p2.stdout
