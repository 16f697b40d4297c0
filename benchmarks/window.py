"""Is the re-tune rule stable to the window? The same trained state re-tuned with a ÷10…×10 and a ÷100…×100 sweep.

For each task and seed a fresh model trains under ``LRSweep`` with no periodic re-tunes (so the fit-start sweep
sets its LR and the edge spacing exactly as in the re-tune benchmark), and at the start of the benchmark's first and
second re-tune epochs (``k`` and ``2k``) the real re-tune (``LRSweep._retune``: sweep around the current LR, then the
edge rule) runs once per window from that one state. Every sweep restores the model, optimizer and RNGs, and the
decision is recorded but not applied, so all windows see the same state and training goes on unchanged. The factor of
a decision is new LR ÷ current LR.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import Callback

from benchmarks.common import Config, RunCache, make_trainer, quiet, seed_all
from benchmarks.markdown import table
from benchmarks.peers import ours_available, ours_fingerprint
from benchmarks.retune import DEFAULT, every_n
from benchmarks.tasks import TASKS, Task

WINDOWS: tuple[tuple[str, float, int], ...] = (
    ("÷10…×10", 10.0, 40),
    ("÷10…×10, 80 steps", 10.0, 80),
    ("÷30…×30 (default)", 30.0, 40),
    ("÷100…×100", 100.0, 40),
    ("÷100…×100, 80 steps", 100.0, 80),
)
"""(label, window, steps): the narrow and the wide window at the default 40 steps, ÷100…×100 also at the ÷10…×10 sweep's
steps per decade, the package default window, and ÷10…×10 at 80 steps (a control: the same window, other steps)."""

PAIRS: tuple[tuple[str, str], ...] = (
    ("÷10…×10", "÷100…×100"),
    ("÷10…×10", "÷100…×100, 80 steps"),
    ("÷30…×30 (default)", "÷100…×100"),
    ("÷10…×10", "÷10…×10, 80 steps"),
    ("÷100…×100", "÷100…×100, 80 steps"),
)
"""Narrow against wide, the default against wide, then two controls: the same window swept with twice the steps."""


def _retune_probe_class() -> type:
    from lightning_lrsweep import LRSweep

    class DecideOnly(LRSweep):
        """``LRSweep`` whose re-tune decides and records but does not apply: later probes see the same state."""

        def _apply(self, trainer: Any, pl_module: Any, old: float, new: float) -> None:
            pass

    return DecideOnly


class WindowProbe(Callback):
    """At the start of each of ``epochs``, run one re-tune per window from the state training has reached."""

    def __init__(self, sweep: Any, epochs: tuple[int, ...], cfg: Config) -> None:
        self.sweep, self.epochs, self.cfg = sweep, epochs, cfg
        self.cases: list[dict[str, Any]] = []

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        epoch = trainer.current_epoch
        if epoch not in self.epochs:
            return
        probe_cls = _retune_probe_class()
        case: dict[str, Any] = {"epoch": epoch, "step": int(trainer.global_step), "decisions": {}}
        for label, window, steps in WINDOWS:
            probe = probe_cls(
                suggestion=DEFAULT,
                min_lr=self.cfg.min_lr,
                max_lr=self.cfg.max_lr,
                retune_window=window,
                retune_num_steps=steps,
                log_curves=False,
            )
            probe._attr, probe._distance = self.sweep._attr, self.sweep._distance
            probe._retune(trainer, pl_module)
            record = probe.history[-1]
            case["current_lr"] = record.previous_lr
            case["decisions"][label] = {
                "factor": record.applied_lr / record.previous_lr,
                "target": record.suggested_lr,
                "reason": record.reason,
                "points": len(record.result.lrs),
                "diverged": bool(record.result.diverged),
                "lrs": record.result.lrs.tolist(),
                "losses": record.result.losses.tolist(),
            }
        self.cases.append(case)


def probe_epochs(task: Task, cfg: Config) -> tuple[int, int]:
    """The re-tune benchmark's first and second re-tune epochs."""
    k = every_n(task, cfg)
    return k, 2 * k


def measure(task: Task, seed: int, cfg: Config) -> dict[str, Any]:
    from lightning_lrsweep import LRSweep

    epochs = probe_epochs(task, cfg)
    seed_all(seed)
    model = task.model(cfg.min_lr, seed)  # a placeholder LR: the fit-start sweep sets it
    sweep = LRSweep(suggestion=DEFAULT, min_lr=cfg.min_lr, max_lr=cfg.max_lr, num_steps=cfg.sweep_steps)
    probe = WindowProbe(sweep, epochs, cfg)
    # train into the last probe epoch by one step, so that its epoch start (and the probe) runs
    trainer = make_trainer(task, max(epochs) * task.steps_per_epoch + 1, callbacks=[sweep, probe])
    trainer.fit(model, train_dataloaders=task.train_loader(seed))
    return {"distance": sweep._distance, "cases": probe.cases}


def run(cache: RunCache, tasks: list[Task], cfg: Config, log: Any = print) -> dict[str, Any]:
    if not ours_available():
        return {"skipped": "lightning_lrsweep is not importable", "tasks": {}}
    fp = ours_fingerprint()
    windows = [list(w) for w in WINDOWS]
    res: dict[str, Any] = {"tasks": {}}
    for task in tasks:
        epochs = probe_epochs(task, cfg)
        log(f"[window] {task.name}: re-tunes at epochs {epochs}, {len(WINDOWS)} windows, {len(cfg.seeds)} seeds")
        runs = []
        for seed in cfg.seeds:
            key = {
                "task": task.name,
                "seed": seed,
                "epochs": list(epochs),
                "windows": windows,
                "sweep": [cfg.min_lr, cfg.max_lr, cfg.sweep_steps],
                "default": DEFAULT,
                "package": fp,
            }
            runs.append({"seed": seed, **cache.get("window", key, lambda t=task, s=seed: measure(t, s, cfg))})
        res["tasks"][task.name] = {"epochs": list(epochs), "runs": runs}
    return res


# --------------------------------------------------------------------------- report


def direction(factor: float) -> str:
    return "keep" if math.isclose(factor, 1.0, rel_tol=1e-9) else ("up" if factor > 1 else "down")


def cases(res: dict[str, Any], name: str | None = None) -> list[dict[str, Any]]:
    tasks = [res["tasks"][name]] if name else list(res["tasks"].values())
    return [c for t in tasks for r in t["runs"] for c in r["cases"]]


def agreement(cs: list[dict[str, Any]], a: str, b: str) -> tuple[int, int, float]:
    """Cases with the same direction (down/keep/up), cases compared, and the largest |log2(factor a / factor b)|."""
    same = sum(direction(c["decisions"][a]["factor"]) == direction(c["decisions"][b]["factor"]) for c in cs)
    gaps = [abs(math.log2(c["decisions"][a]["factor"] / c["decisions"][b]["factor"])) for c in cs]
    return same, len(cs), max(gaps, default=0.0)


def counts(cs: list[dict[str, Any]], label: str) -> str:
    dirs = [direction(c["decisions"][label]["factor"]) for c in cs]
    return "/".join(str(dirs.count(d)) for d in ("down", "keep", "up"))


def render(res: dict[str, Any]) -> str:
    if res.get("skipped"):
        return f"# Re-tune stability to the window\n\nSkipped: {res['skipped']}\n"
    names = list(res["tasks"])
    pair_head = [f"{a} vs {b}" for a, b in PAIRS]
    rows = []
    for name in [*names, None]:
        cs = cases(res, name)
        if not cs:
            continue
        row = [f"`{name}`" if name else "**all**", str(len(cs))]
        for a, b in PAIRS:
            same, n, gap = agreement(cs, a, b)
            row.append(f"{same}/{n} ({gap:.2g})")
        row.append(" · ".join(counts(cs, label) for label, _, _ in WINDOWS))
        rows.append(row)
    seeds = {len(t["runs"]) for t in res["tasks"].values()}
    return (
        "# Re-tune stability to the window\n\n"
        "The same trained state re-tuned with different windows (`benchmarks/window.py`): each task and seed trains "
        "under `LRSweep` from its fit-start LR, and at the re-tune benchmark's first and second re-tune epochs (k, 2k) "
        "the package's re-tune (`LRSweep._retune`: sweep around the current LR, then the `edge` rule) runs once per "
        "window from that one state, without applying the decision. Per pair of windows: cases with the same decision "
        "(down / keep / up) and, in brackets, the largest |log2| ratio of the factors they apply. Last column: "
        f"down/keep/up counts per window, in the order {', '.join(label for label, _, _ in WINDOWS)}. "
        f"{'/'.join(str(s) for s in sorted(seeds))} seeds, 2 re-tune epochs each.\n\n"
        + table(["task", "cases", *pair_head, "down/keep/up per window"], rows)
        + "\n"
    )


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """The overall figures, for quick inspection: agreement per pair and the factors per window."""
    cs = cases(res)
    out: dict[str, Any] = {}
    for a, b in PAIRS:
        same, n, gap = agreement(cs, a, b)
        out[f"{a} vs {b}"] = {"same": same, "n": n, "max_log2": gap}
    for label, _, _ in WINDOWS:
        out[label] = counts(cs, label)
        out[label + " median factor"] = float(np.median([c["decisions"][label]["factor"] for c in cs]))
    return out


# --------------------------------------------------------------------------- replay


def package_decision(case: dict[str, Any], label: str, distance: float) -> float:
    """The factor the package's ``edge`` rule gives on a stored sweep (what the measurement recorded)."""
    from lightning_lrsweep.retune import edge_retune
    from lightning_lrsweep.suggestion_rules import zero_lag_curve

    d, current = case["decisions"][label], case["current_lr"]
    curve = zero_lag_curve(np.asarray(d["lrs"]), np.asarray(d["losses"]))
    return edge_retune(curve, current, distance, diverged=d["diverged"]).lr / current


def shared_range_decision(case: dict[str, Any], label: str, distance: float, judge: float = 10.0) -> float:
    """A rejected variant: the ``edge`` rule on only the sweep's points within ÷judge…×judge of the current LR.

    The start level, noise, dip and edge then come from the LRs every window ≥ ``judge`` shares (re-smoothed over
    the kept points; the edge is censored at ×judge when the sweep went on past it).
    """
    from lightning_lrsweep.retune import edge_retune
    from lightning_lrsweep.suggestion_rules import zero_lag_curve

    d, current = case["decisions"][label], case["current_lr"]
    lrs, losses = np.asarray(d["lrs"]), np.asarray(d["losses"])
    keep = (lrs >= current / judge * (1 - 1e-9)) & (lrs <= current * judge * (1 + 1e-9))
    diverged = d["diverged"] and lrs[-1] <= current * judge * (1 + 1e-9)
    curve = zero_lag_curve(lrs[keep], losses[keep])
    return edge_retune(curve, current, distance, diverged=diverged).lr / current


def replay(res: dict[str, Any], decide: Any) -> dict[str, Any]:
    """Agreement per pair of windows when ``decide(case, label, distance) -> factor`` judges the stored sweeps.

    The sweeps do not depend on the re-tune rule (the probes apply nothing), so replaying a rule on them gives
    exactly what a new measurement with that rule would.
    """
    replayed = {"tasks": {}}
    for name, t in res["tasks"].items():
        runs = []
        for r in t["runs"]:
            cs = []
            for c in r["cases"]:
                factors = {label: {"factor": decide(c, label, r["distance"])} for label, _, _ in WINDOWS}
                cs.append({**c, "decisions": factors})
            runs.append({**r, "cases": cs})
        replayed["tasks"][name] = {**t, "runs": runs}
    return summary(replayed)


def main() -> None:
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description="Window agreement, measured and replayed with the rejected variant.")
    parser.add_argument("--runs-dir", type=Path, default=Path(__file__).resolve().parent / "_runs")
    args = parser.parse_args()
    quiet()
    res = run(RunCache(args.runs_dir / "full"), list(TASKS.values()), Config())
    for name, decide in (("package", package_decision), ("shared range ÷10…×10", shared_range_decision)):
        print(f"{name}:")
        for k, v in replay(res, decide).items():
            print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
