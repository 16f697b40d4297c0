"""LR finders under test: ours (``lightning_lrsweep``), Lightning's ``Tuner.lr_find`` and ``torch-lr-finder``.

Ours runs in three ways: the plain range test (every rule and the confidence read off one sweep), a fit-start sweep
followed by the race from its snapshot (``LRSweep(race_steps=...)``), and validation-loss mode (``val_batches``).
The race and validation-loss mode read a *probe* set: fresh samples of the task's distribution (data seed 3),
neither the training nor the validation set the metric is computed on. fast.ai's ``valley`` is applied as fast.ai
applies it (:func:`fastai_valley`) to our sweep's EMA-smoothed loss, which is fast.ai's own recorder: fastai
itself is not installed here.

Each finder runs ONE range test on a fresh model (init and data order fixed by the seed) over the same LR window
and step count, and returns every suggestion it can make from that single sweep::

    {"suggestions": {"<method>": lr_or_None, ...}, "lrs": [...], "losses": [...], "sweep_s": float, "error": str|None}

An exception inside a finder is caught and recorded (all its suggestions are then None = failure).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import make_trainer, seed_all
from benchmarks.tasks import Task

OUR_METHODS = ("valley", "steepest", "minimum", "sma_slope")

MIN_CONFIDENCE = 0.2
"""The ``ours_keep`` variant keeps the task's default LR below this confidence (``LRSweep``'s ``min_confidence``)."""

RACE_STEPS = 16
"""Optimizer steps per candidate of the ``ours_race`` variant (3 candidates: 48 steps, about half a sweep)."""

VAL_BATCHES = 4
"""Probe batches each step of the ``ours_val`` sweep is judged on."""

PROBE_SIZE = 512
"""Samples in the probe set the race and validation-loss mode read."""


@dataclass(frozen=True)
class SweepConfig:
    min_lr: float = 1e-7
    max_lr: float = 10.0
    num_steps: int = 100


def _clean(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) and v > 0 else None


def _lists(lrs: Any, losses: Any) -> tuple[list[float], list[float]]:
    return [float(x) for x in np.asarray(lrs, dtype=float)], [float(x) for x in np.asarray(losses, dtype=float)]


# --------------------------------------------------------------------------- Lightning


def lightning_lr_find(task: Task, seed: int, cfg: SweepConfig) -> dict[str, Any]:
    from lightning.pytorch.tuner import Tuner

    seed_all(seed)
    model = task.model(cfg.min_lr, seed)
    trainer = make_trainer(task, task.budget)
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar ignores enable_progress_bar=False
        finder = Tuner(trainer).lr_find(
            model,
            train_dataloaders=task.train_loader(seed),
            min_lr=cfg.min_lr,
            max_lr=cfg.max_lr,
            num_training=cfg.num_steps,
            update_attr=False,
        )
    sweep_s = time.perf_counter() - t0
    lrs, losses = _lists(finder.results["lr"], finder.results["loss"])
    return {"suggestions": {"lightning": _clean(finder.suggestion())}, "lrs": lrs, "losses": losses, "sweep_s": sweep_s}


# --------------------------------------------------------------------------- torch-lr-finder


def torch_lr_finder(task: Task, seed: int, cfg: SweepConfig) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torch_lr_finder import LRFinder

    seed_all(seed)
    model = task.model(cfg.min_lr, seed)
    optimizer = task.make_optimizer(model.parameters(), cfg.min_lr)
    sink = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        finder = LRFinder(model, optimizer, model.criterion, device="cpu")
        finder.range_test(task.train_loader(seed), end_lr=cfg.max_lr, num_iter=cfg.num_steps)
        sweep_s = time.perf_counter() - t0
        fig, ax = plt.subplots()
        try:
            _, lr = finder.plot(ax=ax, suggest_lr=True)  # its only suggestion: steepest gradient, skip 10 / 5
        except RuntimeError:  # too few points before it stopped
            lr = None
        finally:
            plt.close(fig)
    lrs, losses = _lists(finder.history["lr"], finder.history["loss"])
    return {"suggestions": {"torch_lr_finder": _clean(lr)}, "lrs": lrs, "losses": losses, "sweep_s": sweep_s}


# --------------------------------------------------------------------------- ours


def ours_available() -> bool:
    try:
        from lightning_lrsweep import LRSweepTuner  # noqa: F401
    except ImportError:
        return False
    return True


def ours_fingerprint() -> str:
    """Hash of the installed package's source, so cached sweeps are redone when the core changes."""
    import lightning_lrsweep

    h = hashlib.sha1()
    for p in sorted(Path(lightning_lrsweep.__file__).parent.rglob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def probe_loader(task: Task) -> Any:
    """Fresh samples of the task's distribution (data seed 3), unshuffled, for the race and validation-loss mode."""
    from torch.utils.data import DataLoader, TensorDataset

    x, y = task.data_fn(PROBE_SIZE, 3)
    return DataLoader(TensorDataset(x, y), batch_size=task.batch_size, shuffle=False)


def _tuner_sweep(task: Task, seed: int, cfg: SweepConfig, **settings: Any) -> tuple[Any, float]:
    """One ``LRSweepTuner`` sweep of the task's seeded model over ``cfg``'s range, and its wall time in seconds."""
    from lightning_lrsweep import LRSweepTuner

    seed_all(seed)
    model = task.model(cfg.min_lr, seed)
    trainer = make_trainer(task, task.budget)
    t0 = time.perf_counter()
    result = LRSweepTuner(trainer).sweep(
        model,
        train_dataloaders=task.train_loader(seed),
        min_lr=cfg.min_lr,
        max_lr=cfg.max_lr,
        num_steps=cfg.num_steps,
        **settings,
    )
    return result, time.perf_counter() - t0


def ours(task: Task, seed: int, cfg: SweepConfig) -> dict[str, Any]:
    result, sweep_s = _tuner_sweep(task, seed, cfg)
    suggestions = {}
    for m in OUR_METHODS:  # every method from the SAME sweep
        try:
            suggestions[f"ours_{m}"] = _clean(result.suggestion(m))
        except Exception:  # noqa: BLE001 - a method that raises counts as a failure of that method only
            suggestions[f"ours_{m}"] = None
    confidence = result.confidence
    interval = result.interval
    lrs, losses = _lists(result.lrs, result.smoothed_losses)
    raw = _lists(result.lrs, result.losses)[1]
    return {
        "suggestions": suggestions,
        "lrs": lrs,
        "losses": losses,
        "raw_losses": raw,
        "sweep_s": sweep_s,
        "confidence": confidence,  # the ``ours_keep`` variant is read off it: see :func:`keep_rule`
        "interval": list(interval) if interval is not None else None,
    }


def ours_race(task: Task, seed: int, cfg: SweepConfig) -> dict[str, Any]:
    """A fit-start sweep plus the race (judged on the probe set's loss), in a fit stopped after one step."""
    from lightning_lrsweep import LRSweep

    seed_all(seed)
    model = task.model(task.default_lr, seed)
    sweep = LRSweep(
        min_lr=cfg.min_lr,
        max_lr=cfg.max_lr,
        num_steps=cfg.num_steps,
        race_steps=RACE_STEPS,
        min_confidence=0.0,
        log_curves=False,
    )
    trainer = make_trainer(task, 1, callbacks=[sweep])
    t0 = time.perf_counter()
    trainer.fit(model, train_dataloaders=task.train_loader(seed), val_dataloaders=probe_loader(task))
    record = sweep.history[0]
    race = record.result.race
    lrs, losses = _lists(record.result.lrs, record.result.smoothed_losses)
    return {
        "suggestions": {"ours_race": _clean(record.applied_lr)},
        "lrs": lrs,
        "losses": losses,
        "sweep_s": time.perf_counter() - t0,
        "race_s": race.seconds if race is not None else 0.0,
        "race_lrs": race.lrs if race is not None else [],
        "race_scores": race.scores if race is not None else [],
    }


def ours_val(task: Task, seed: int, cfg: SweepConfig) -> dict[str, Any]:
    """Validation-loss mode: the sweep judged on the loss over ``VAL_BATCHES`` probe batches after each step."""
    result, sweep_s = _tuner_sweep(task, seed, cfg, val_dataloaders=probe_loader(task), val_batches=VAL_BATCHES)
    lrs, losses = _lists(result.lrs, result.losses)
    return {"suggestions": {"ours_val": _clean(result.suggestion())}, "lrs": lrs, "losses": losses, "sweep_s": sweep_s}


def keep_rule(task: Task, sw: dict[str, Any]) -> float | None:
    """``LRSweep(low_confidence="keep")``: the task's default LR when the sweep's confidence is below the threshold."""
    valley = sw["suggestions"].get("ours_valley")
    if sw.get("error") or sw.get("confidence") is None:
        return None
    return task.default_lr if valley is None or sw["confidence"] < MIN_CONFIDENCE else valley


# --------------------------------------------------------------------------- candidate rules (benchmark only)


def fastai_valley(lrs: np.ndarray, raw: np.ndarray, smoothed: np.ndarray) -> float | None:
    """fastai's ``valley`` as fastai applies it: on the EMA-smoothed loss, dropping the first n//10 and last 5 points.

    The longest decreasing subsequence of the loss ends at ``end`` and has ``length`` points; fastai takes its start
    as ``end - length`` (not the subsequence's first index) and returns the LR ``len/3 + len/6`` past that start.
    """
    n = len(lrs)
    lo, hi = n // 10, n - 5
    if hi - lo < 5:
        return None
    lr, loss = lrs[lo:hi], smoothed[lo:hi]
    m = len(loss)
    run = np.ones(m, dtype=int)
    for i in range(1, m):
        before = run[:i][loss[:i] > loss[i]]
        if len(before):
            run[i] = before.max() + 1
    end = int(np.argmax(run))  # first index reaching the longest run, like fastai's strict "<" update
    start = end - int(run[end])
    third = (end - start) / 3
    return float(lr[max(0, start + int(third) + int(third / 2))])


def gmean_steepest_minimum(sw: dict[str, Any]) -> float | None:
    """Geometric mean of our ``steepest`` and ``minimum`` suggestions: a candidate rule that combines two readings."""
    a, b = sw["suggestions"].get("ours_steepest"), sw["suggestions"].get("ours_minimum")
    return None if a is None or b is None else float(np.sqrt(a * b))


CANDIDATES: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "cand_fastai_valley": lambda sw: fastai_valley(
        np.asarray(sw["lrs"]), np.asarray(sw["raw_losses"]), np.asarray(sw["losses"])
    ),
    "cand_gmean_steepest_minimum": gmean_steepest_minimum,
}


def add_candidates(sw: dict[str, Any]) -> dict[str, Any]:
    """Benchmark-only rules computed from a cached sweep of ours (no new sweep): added to ``sw['suggestions']``."""
    if sw.get("error") or not sw.get("lrs"):
        sw["suggestions"].update({name: None for name in CANDIDATES})
        return sw
    for name, rule in CANDIDATES.items():
        try:
            sw["suggestions"][name] = _clean(rule(sw))
        except Exception:  # noqa: BLE001
            sw["suggestions"][name] = None
    return sw


# --------------------------------------------------------------------------- registry

FINDERS: dict[str, tuple[Callable[[Task, int, SweepConfig], dict[str, Any]], tuple[str, ...]]] = {
    "ours": (ours, (*(f"ours_{m}" for m in OUR_METHODS), "ours_keep", *CANDIDATES)),
    "ours_race": (ours_race, ("ours_race",)),
    "ours_val": (ours_val, ("ours_val",)),
    "lightning": (lightning_lr_find, ("lightning",)),
    "torch_lr_finder": (torch_lr_finder, ("torch_lr_finder",)),
}


def available_finders() -> list[str]:
    return [name for name in FINDERS if not name.startswith("ours") or ours_available()]


def run_finder(name: str, task: Task, seed: int, cfg: SweepConfig) -> dict[str, Any]:
    """Run finder ``name``; an exception becomes ``error`` with every suggestion None."""
    fn, methods = FINDERS[name]
    try:
        out = fn(task, seed, cfg)
        out["error"] = None
    except Exception as e:  # noqa: BLE001
        out = {
            "suggestions": {m: None for m in methods},
            "lrs": [],
            "losses": [],
            "sweep_s": float("nan"),
            "error": f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}",
        }
    return out
