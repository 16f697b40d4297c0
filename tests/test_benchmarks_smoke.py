"""Smoke test of the benchmark harness: ``python -m benchmarks.run --quick`` on one task, into tmp_path."""

import ast
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
    page = {
        name: (out / f"{name}.md").read_text()
        for name in ("index", "quality", "cost", "ddp", "retune", "window", "fsdp")
    }
    assert all("QUICK MODE" in text for text in page.values())
    assert "[Suggestion quality](quality.md)" in page["index"] and "[Sweep cost under FSDP2](fsdp.md)" in page["index"]
    assert page["quality"].startswith("# Suggestion quality\n")
    assert "## Tasks" in page["quality"] and "`spiral_mlp_sgd`" in page["quality"]
    assert "Lightning `lr_find().suggestion()`" in page["quality"]
    assert "torch-lr-finder" in page["quality"]
    assert "ours: valley + race" in page["quality"] and "## Report-only set" not in page["quality"]  # one tune task
    assert page["cost"].startswith("# Sweep cost\n")
    assert page["retune"].startswith("# Periodic re-tuning")
    assert "## 1× budget: paired comparisons" in page["retune"]
    assert page["window"].startswith("# Re-tune stability to the window")
    assert page["fsdp"].startswith("# Sweep cost under FSDP2")
    assert all(
        "## Run\n" in page[name] and "python -m benchmarks.run --quick" in page[name]
        for name in page
        if name != "index"
    )
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


def _harness_imports(path: Path) -> set[str]:
    """The ``benchmarks`` modules one file of the harness imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "benchmarks":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("benchmarks."):
            found.add(node.module.split(".")[1])
    return found


def test_benchmark_modules_import_no_circle():
    modules = {p.stem: _harness_imports(p) for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__"}
    assert modules["report"] >= {"quality", "retune", "window"}  # the walk sees the harness's own imports
    done: set[str] = set()
    while len(done) < len(modules):
        ready = {m for m, deps in modules.items() if m not in done and deps <= done}
        assert ready, f"import circle among {sorted(set(modules) - done)}"
        done |= ready
