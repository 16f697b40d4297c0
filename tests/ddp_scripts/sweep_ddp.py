"""Scenarios run under DDP (2 CPU processes, gloo); every rank dumps what it saw into OUT for tests/test_ddp.py.

Usage: python tests/ddp_scripts/sweep_ddp.py ddp|ddp_spawn|multinode OUT
"""

from __future__ import annotations

import sys
import warnings
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the models helper

import torch  # noqa: E402
import torch.distributed  # noqa: E402
from lightning.pytorch import Callback, seed_everything  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from lightning.pytorch.plugins.precision import MixedPrecision  # noqa: E402
from lightning.pytorch.strategies import DDPStrategy  # noqa: E402
from models import Classifier, blobs, loader, state, trainer  # noqa: E402
from rank_report import FailsOnRank, caught, close_process_group, curve, lrs_of, main, same  # noqa: E402
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from lightning_lrsweep import LRSweep, LRSweepTuner  # noqa: E402


def fixed_lr(result: Any) -> float:
    return 0.05


def huge_lr(result: Any) -> float:
    return 10.0


def global_rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


class Recording(FailsOnRank, Classifier):
    """The test classifier that fails on one rank (see ``FailsOnRank``; it raises before the forward).

    With ``inf_grad_at``, every rank's gradients are infinite at that call of ``training_step`` (a grad scaler then
    skips the step).
    """

    def __init__(self, lr: float = 0.05, inf_grad_at: int | None = None, **faults: Any) -> None:
        super().__init__(lr=lr)
        self.init_faults(**faults)
        self.inf_grad_at = inf_grad_at

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        calls = self.count("training_step")
        loss = super().training_step(batch, batch_idx)
        if calls == self.inf_grad_at:
            loss.register_hook(lambda grad: grad * float("inf"))
        return self.recorded(loss)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        self.count("on_after_batch_transfer")
        return batch


class UnreadableOnRank(Dataset):
    """``blobs`` whose copy on rank ``on_rank`` raises when reading the first sample of its ``batch``-th batch."""

    def __init__(self, batch: int, on_rank: int = 1, batch_size: int = 32) -> None:
        self.data, self.on_rank, self.fail_at = blobs(), on_rank, (batch - 1) * batch_size + 1
        self.reads = 0

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Any:
        self.reads += 1
        if global_rank() == self.on_rank and self.reads == self.fail_at:
            raise OSError(f"sample {i} unreadable on rank {self.on_rank}")
        return self.data[i]


class CloseProcessGroup(Callback):
    """Closes the group at the end of every ``ddp_spawn`` worker (see :func:`close_process_group`)."""

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        close_process_group()


def ddp_trainer(strategy: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("devices", 2)
    if strategy == "ddp_spawn":
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), CloseProcessGroup()]
    return trainer(accelerator="cpu", strategy=strategy, **kwargs)


def gathered_lrs(t: Any) -> list[list[float]]:
    """Every rank's param-group LRs, gathered on every rank."""
    mine = torch.tensor(lrs_of(t), dtype=torch.float64)
    return t.strategy.all_gather(mine).reshape(t.world_size, -1).tolist()


class CountGradientAllReduces(Callback):
    """Counts DDP's gradient all-reduces, through a communication hook that runs the default one.

    (Lightning registers ``ddp_comm_hook`` only on CUDA, so this registers it on the wrapped model itself.)
    """

    def __init__(self) -> None:
        self.calls = 0

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        trainer.strategy.model.register_comm_hook(None, self._hook)

    def _hook(self, state, bucket):  # type: ignore[no-untyped-def]  # DDP rejects a non-GradBucket annotation
        self.calls += 1
        return default_hooks.allreduce_hook(None, bucket)


def tuner_curve(strategy: str) -> dict[str, Any]:
    """One tuner sweep with gradient accumulation: the curve against this rank's own losses, and how many
    gradient all-reduces DDP ran (accumulated micro-batches should not sync)."""
    seed_everything(1)
    model = Recording(lr=0.01)
    before = state(model)
    counter = CountGradientAllReduces()
    ddp = DDPStrategy(bucket_cap_mb=100)  # the whole model in one bucket: one all-reduce per synced backward
    t = ddp_trainer(ddp, accumulate_grad_batches=2, callbacks=[counter])
    result = LRSweepTuner(t).sweep(model, loader(), num_steps=8, early_stop_threshold=None, max_lr=1.0)
    return {
        "curve": curve(result),
        "rank_losses": model.losses,
        "restored": same(before, state(model)),
        "gradient_allreduces": counter.calls,
    }


def one_rank_nan(strategy: str) -> dict[str, Any]:
    seed_everything(2)
    model = Recording(lr=0.01, nan_at=4)
    result = LRSweepTuner(ddp_trainer(strategy)).sweep(model, loader(), num_steps=20, max_lr=1e-2)
    return {"curve": curve(result), "calls": model.hook_calls["training_step"]}


def callback_fit(strategy: str) -> dict[str, Any]:
    """A fit-start sweep and a clamped re-tune: the LR each rank ends with, and who warned."""
    seed_everything(3)
    model = Recording(lr=0.01)
    sweep = LRSweep(num_steps=12, every_n_epochs=1, retune_num_steps=8, retune_suggestion=huge_lr, max_change=2.0)
    t = ddp_trainer(strategy, max_epochs=2, callbacks=[sweep], limit_train_batches=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t.fit(model, loader())
    return {
        "history": [
            {"curve": curve(r.result), "previous": r.previous_lr, "suggested": r.suggested_lr, "applied": r.applied_lr}
            for r in sweep.history
        ],
        "lrs": lrs_of(t),
        "gathered_lrs": gathered_lrs(t),
        "hparams_lr": float(model.hparams.lr),
        "clamp_warnings": sum("clamped" in str(w.message) for w in caught),
    }


def val_mode_and_race(strategy: str) -> dict[str, Any]:
    """A tuner sweep judged on validation batches; a fit-start sweep and race judged on the validation loss."""
    seed_everything(5)
    val = loader(seed=1, shuffle=False)
    tuned = LRSweepTuner(ddp_trainer(strategy)).sweep(
        Recording(lr=0.01), loader(), val_dataloaders=val, val_batches=2, num_steps=8
    )
    model = Recording(lr=0.01)
    sweep = LRSweep(min_lr=1e-3, max_lr=3.0, num_steps=20, race_steps=3, min_confidence=0.0)
    t = ddp_trainer(strategy, max_epochs=1, callbacks=[sweep], limit_train_batches=2)
    t.fit(model, loader(), val_dataloaders=val)
    race = sweep.history[0].result.race
    return {
        "val_curve": curve(tuned),
        "race": {"lrs": race.lrs, "scores": race.scores, "judged_on": race.judged_on} if race else None,
        "applied": sweep.history[0].applied_lr,
        "gathered_lrs": gathered_lrs(t),
    }


class SamplerProbe(Callback):
    """At each epoch start (after any sweep there): the sampler's type, epoch and the start of its order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, list[int]]] = []

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        sampler = trainer.train_dataloader.sampler
        self.seen.append((type(sampler).__name__, sampler.epoch, list(sampler)[:6]))


def bit_for_bit(strategy: str, out: Path, rank: int) -> dict[str, Any]:
    """A DDP fit with sweeps every epoch against a plain DDP fit at the LR they apply."""
    seed_everything(4)
    plain, plain_probe = Classifier(lr=0.05), SamplerProbe()
    ddp_trainer(strategy, max_epochs=2, callbacks=[plain_probe]).fit(plain, loader())
    seed_everything(4)
    swept, swept_probe = Classifier(lr=0.01), SamplerProbe()
    sweep = LRSweep(every_n_epochs=1, suggestion=fixed_lr, num_steps=10, retune_num_steps=6)
    ddp_trainer(strategy, max_epochs=2, callbacks=[sweep, swept_probe]).fit(swept, loader())
    torch.save({"plain": state(plain), "swept": state(swept)}, out / f"weights_{rank}.pt")
    return {"sweeps": len(sweep.history), "samplers": [plain_probe.seen, swept_probe.seen]}


def one_rank_raises(
    strategy: str,
    raise_in: str = "training_step",
    raise_at: int = 3,
    num_steps: int = 10,
    inf_grad_at: int | None = None,
) -> dict[str, Any]:
    """Rank 1 raises in ``raise_in`` at its ``raise_at``-th call: every rank must stop, restore, and say which raised.

    ``raise_in="dataset"``: rank 1's dataset raises reading its ``raise_at``-th batch (``num_workers=0``).
    ``inf_grad_at``: fp16 mixed precision with a grad scaler, and infinite gradients at that step, so the
    scaler of every rank but the failed one skips it.
    """
    seed_everything(5)
    model = Recording(lr=0.01, raise_in=raise_in, raise_at=raise_at, inf_grad_at=inf_grad_at)
    data = DataLoader(UnreadableOnRank(raise_at), batch_size=32, shuffle=True) if raise_in == "dataset" else loader()
    before = state(model)
    scaled = {"plugins": [MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))]} if inf_grad_at else {}
    t = ddp_trainer(strategy, callbacks=[LRSweep(num_steps=num_steps)], **scaled)
    return {
        "error": caught(lambda: t.fit(model, data)),
        "restored": same(before, state(model)),
        "optimizer_state_empty": not t.optimizers[0].state,
        "lrs": lrs_of(t),
    }


def spawned(out: Path) -> dict[str, Any]:
    """``ddp_spawn``: what the main process holds after the workers are gone."""
    seed_everything(6)
    sweep = LRSweep(num_steps=10, every_n_epochs=1, retune_num_steps=6)
    ddp_trainer("ddp_spawn", max_epochs=2, callbacks=[sweep], limit_train_batches=2).fit(Classifier(lr=0.01), loader())
    seed_everything(6)
    model = Classifier(lr=0.01)
    before = state(model)
    logger = CSVLogger(out / "logs")
    t = ddp_trainer("ddp_spawn", max_epochs=1, limit_train_batches=2, logger=logger)
    result = LRSweepTuner(t).sweep(model, loader(), num_steps=10)
    restored = same(before, state(model))
    tuner_logs = {"same_logger": t.logger is logger, "wrote": (out / "logs").exists()}
    t.fit(model, loader())  # the tuner left the trainer able to fit
    return {
        "history": [{"curve": curve(r.result), "applied": r.applied_lr} for r in sweep.history],
        "tuner_curve": curve(result),
        "tuner_suggestion": result.suggestion(),
        "restored": restored,
        "tuner_logs": tuner_logs,
        "trained_after_tuning": not same(before, state(model)),
    }


def multinode(out: Path) -> dict[str, Any]:
    """Under torchrun, one process per node: the curve and LR each node ends with (also under FSDP2)."""
    import sweep_fsdp  # this script's folder is on the path; it imports helpers from here

    seed_everything(7)
    model = Recording(lr=0.01)
    sweep = LRSweep(num_steps=10, every_n_epochs=1, retune_num_steps=6, anneal=False)  # the LR ends as applied
    t = ddp_trainer("ddp", devices=1, num_nodes=2, max_epochs=2, limit_train_batches=2, callbacks=[sweep])
    t.fit(model, loader())
    return {
        "world_size": t.world_size,
        "node_rank": t.node_rank,
        "history": [{"curve": curve(r.result), "applied": r.applied_lr} for r in sweep.history],
        "lrs": lrs_of(t),
        "hparams_lr": float(model.hparams.lr),
        "fsdp2": sweep_fsdp.multinode(),
    }


SCENARIOS = {
    "val_mode_and_race": val_mode_and_race,
    "tuner_curve": tuner_curve,
    "one_rank_nan": one_rank_nan,
    "callback_fit": callback_fit,
    "one_rank_raises": one_rank_raises,
    "raises_reading_data": partial(one_rank_raises, raise_in="dataset", raise_at=3),
    "raises_moving_first_batch": partial(one_rank_raises, raise_in="on_after_batch_transfer", raise_at=1),
    "raises_in_backward": partial(one_rank_raises, raise_in="backward", raise_at=3),
    "raises_in_last_optimizer_step": partial(
        one_rank_raises, raise_in="on_before_optimizer_step", raise_at=5, num_steps=5
    ),
    "raises_in_last_optimizer_step_the_scaler_skips": partial(
        one_rank_raises, raise_in="on_before_optimizer_step", raise_at=5, num_steps=5, inf_grad_at=5
    ),
}


def report(mode: str, out: Path, rank: int) -> dict[str, Any]:
    if mode == "ddp":
        return {
            **{name: scenario("ddp") for name, scenario in SCENARIOS.items()},
            "bit_for_bit": bit_for_bit("ddp", out, rank),
        }
    return {"ddp_spawn": spawned, "multinode": multinode}[mode](out)


if __name__ == "__main__":
    main(report)
