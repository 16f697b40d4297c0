"""Sweep cost: wall time of an N-step sweep ÷ N plain training steps, ours and Lightning's ``lr_find``, and peak memory.

Timing runs in one process, interleaved (plain fit, our sweep, Lightning's ``lr_find``) and repeated; medians of the
per-repeat ratios are reported. Both sweeps use a narrow LR window (no divergence) and no early stop so that each
really runs N steps. Peak memory is the peak RSS (``ru_maxrss``) of a fresh subprocess that builds the model and does
one thing (nothing / plain fit / our sweep / ``lr_find``), so the numbers are comparable and not polluted by earlier
runs. The model is a >= 10M-parameter MLP trained with Adam so that per-step time dominates.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import Config, RunCache, make_trainer, quiet, seed_all
from benchmarks.markdown import table
from benchmarks.peers import ours_available, ours_fingerprint
from benchmarks.tasks import Task, adam, mlp

ROOT = Path(__file__).resolve().parent.parent


def _wide(n: int, seed: int, dim: int = 1024, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randint(0, classes, (n,), generator=g)


def cost_task(quick: bool, n_steps: int) -> Task:
    width = 256 if quick else 2048
    return Task(
        name=f"cost_mlp_{'quick' if quick else '10m'}",
        description=f"random 1024-D inputs, MLP 1024-{width}-{width}-{width}-10",
        kind="classification",
        optimizer="Adam",
        data_fn=_wide,
        net_fn=lambda: mlp([1024, width, width, width, 10]),
        make_optimizer=adam,
        grid=(1e-3,),
        n_train=64 * (n_steps + 2),
        n_val=64,
        batch_size=64,
        epochs=1,
    )


WINDOW = (1e-6, 1e-4)  # Adam from 1e-6 to 1e-4: no divergence, so every sweep runs all N steps


def plain(task: Task, n: int) -> float:
    seed_all(0)
    model = task.model(1e-4, 0)
    trainer = make_trainer(task, n)
    t0 = time.perf_counter()
    trainer.fit(model, train_dataloaders=task.train_loader(0))
    dt = time.perf_counter() - t0
    assert trainer.global_step == n, trainer.global_step
    return dt


def ours(task: Task, n: int) -> tuple[float, int]:
    from lightning_lrsweep import LRSweepTuner

    seed_all(0)
    model = task.model(1e-4, 0)
    trainer = make_trainer(task, n)
    t0 = time.perf_counter()
    result = LRSweepTuner(trainer).sweep(
        model, train_dataloaders=task.train_loader(0), min_lr=WINDOW[0], max_lr=WINDOW[1], num_steps=n
    )
    return time.perf_counter() - t0, len(result.lrs)


def lightning(task: Task, n: int) -> tuple[float, int]:
    from lightning.pytorch.tuner import Tuner

    seed_all(0)
    model = task.model(1e-4, 0)
    trainer = make_trainer(task, n)
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        finder = Tuner(trainer).lr_find(
            model,
            train_dataloaders=task.train_loader(0),
            min_lr=WINDOW[0],
            max_lr=WINDOW[1],
            num_training=n,
            early_stop_threshold=None,
            update_attr=False,
        )
    return time.perf_counter() - t0, len(finder.results["lr"])


def timing(task: Task, n: int, repeats: int, log=print) -> dict[str, Any]:  # noqa: ANN001
    rows: dict[str, list] = {"plain_s": [], "ours_s": [], "lightning_s": [], "ours_points": [], "lightning_points": []}
    plain(task, 2)  # warm-up: first fit pays one-off costs
    for r in range(repeats):
        rows["plain_s"].append(plain(task, n))
        if ours_available():
            t, k = ours(task, n)
            rows["ours_s"].append(t)
            rows["ours_points"].append(k)
        t, k = lightning(task, n)
        rows["lightning_s"].append(t)
        rows["lightning_points"].append(k)
        log(f"[cost] repeat {r + 1}/{repeats}: " + ", ".join(f"{k}={v[-1]:.2f}" for k, v in rows.items() if v))
    out: dict[str, Any] = dict(rows)
    for who in ("ours", "lightning"):
        if rows[f"{who}_s"]:
            ratios = np.array(rows[f"{who}_s"]) / np.array(rows["plain_s"])
            out[f"{who}_ratio"] = float(np.median(ratios))
            out[f"{who}_ratio_min"] = float(np.min(rows[f"{who}_s"]) / np.min(rows["plain_s"]))
    return out


# --------------------------------------------------------------------------- memory (subprocess per mode)

MODES = ("plain", "ours", "lightning")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Samples this process's resident set size every 2 ms in a thread; ``peak`` is the highest seen.

    (``ru_maxrss`` is no use here: Linux keeps it across ``fork``/``exec``, so a child inherits its parent's peak.)
    """

    def __enter__(self) -> PeakRSS:
        import threading

        self.base = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def _memory_child(mode: str, quick: bool, n: int) -> None:
    quiet()
    task = cost_task(quick, n)
    task.data()
    fn = {"plain": plain, "ours": ours, "lightning": lightning}[mode]
    with PeakRSS() as mem:
        fn(task, n)
    print("RESULT " + json.dumps({"mode": mode, "base_mb": mem.base, "peak_mb": mem.peak}))


def memory(quick: bool, n: int, log=print) -> dict[str, float]:  # noqa: ANN001
    out = {}
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for mode in MODES:
        if mode == "ours" and not ours_available():
            continue
        cmd = [sys.executable, "-m", "benchmarks.cost", mode, "1" if quick else "0", str(n)]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if not line:
            log(f"[cost] memory {mode} failed: {p.stderr[-500:]}")
            continue
        rec = json.loads(line[-1][7:])
        out[mode] = rec["peak_mb"] - rec["base_mb"]
        log(f"[cost] memory {mode}: RSS {rec['base_mb']:.0f} MB before, peak {rec['peak_mb']:.0f} MB")
    return out


def run(cache: RunCache, cfg: Config, log=print) -> dict[str, Any]:  # noqa: ANN001
    n = 10 if cfg.quick else 40
    repeats = 1 if cfg.quick else 5
    task = cost_task(cfg.quick, n)
    n_params = task.n_params()
    key = {"task": task.name, "n": n, "repeats": repeats, "package": ours_fingerprint() if ours_available() else None}

    def fn() -> dict[str, Any]:
        res = timing(task, n, repeats, log=log)
        res["memory_mb"] = {} if cfg.quick else memory(cfg.quick, n, log=log)  # subprocesses: too slow for --quick
        return res

    res = cache.get("cost", key, fn)
    res.update(
        n_steps=n,
        repeats=repeats,
        n_params=n_params,
        state_mb=n_params * 4 * 3 / 2**20,  # fp32 params + Adam's two moments
        description=task.description,
    )
    return res


def render(res: dict[str, Any]) -> str:
    def med(k: str) -> str:
        v = res.get(k) or []
        return f"{np.median(v):.2f}" if len(v) else "—"

    mem = res.get("memory_mb", {})
    base = mem.get("plain")
    rows = []
    for who, label in (
        ("plain", "plain training (`Trainer.fit`, max_steps=N)"),
        ("ours", "ours: `LRSweepTuner.sweep`"),
        ("lightning", "Lightning `Tuner.lr_find`"),
    ):
        secs = res.get(f"{who}_s") or []
        ratio = res.get(f"{who}_ratio", 1.0 if who == "plain" else None)
        ratio_min = res.get(f"{who}_ratio_min", 1.0 if who == "plain" else None)
        points = res.get(f"{who}_points") or []
        peak = mem.get(who)
        rows.append(
            [
                label,
                med(f"{who}_s"),
                f"{np.median(secs) / res['n_steps'] * 1000:.0f}" if secs else "—",
                f"{ratio:.2f}" if ratio is not None else "—",
                f"{ratio_min:.2f}" if ratio_min is not None else "—",
                str(int(np.median(points))) if points else ("—" if who != "plain" else str(res["n_steps"])),
                f"{peak:.0f}" if peak else "—",
                f"{peak - base:+.0f}" if peak and base and who != "plain" else "—",
            ]
        )
    head = [
        "run",
        f"wall s (median of {res['repeats']})",
        "ms / step",
        "÷ plain (median of per-repeat ratios)",
        "÷ plain (fastest ÷ fastest)",
        "points recorded",
        "peak RSS above start MB",
        "extra vs plain MB",
    ]
    lines = [
        "# Sweep cost\n",
        f"Model: {res['description']} ({res['n_params'] / 1e6:.1f}M parameters, Adam; params + optimizer state = "
        f"{res['state_mb']:.0f} MB). N = {res['n_steps']} steps, batch 64, CPU, 1 thread. Sweeps use the window "
        f"{WINDOW[0]:g}…{WINDOW[1]:g} with early stop off so that both run all N steps. Ratios are per repeat "
        "(interleaved in one process), median shown. Memory: a fresh subprocess per row makes the data, "
        "then samples its RSS every 2 ms during the run; the table shows the "
        "peak RSS above the level just before the run (plain training's peak includes Adam's state, created lazily, "
        "plus gradients and activations).\n",
        table(head, rows),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    _memory_child(sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]))
