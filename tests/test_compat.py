"""Compatibility matrix: each cell a real fit on CPU, with sweeps, against a plain fit at the applied LR."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import (
    BackboneFinetuning,
    Callback,
    EarlyStopping,
    GradientAccumulationScheduler,
    LearningRateMonitor,
    ModelCheckpoint,
    StochasticWeightAveraging,
)
from lightning.pytorch.plugins.precision import MixedPrecision
from matrix import (
    APPLIED,
    START,
    MemoryLogger,
    Val,
    assert_same_training,
    check_cell,
    run,
    sweep_callback,
)
from models import (
    Blobs,
    Classifier,
    Manual,
    TraceLR,
    TwoGroups,
    blobs,
    is_sweep_step,
    loader,
    sweep_by_fit,
    sweep_by_tuner,
    trainer,
)
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from lightning_lrsweep import LRSweepTuner
from lightning_lrsweep.callback import order_callbacks

# -- optimization settings ------------------------------------------------------------------------


class LRSpy(Classifier):
    """Records the reference group's LR at every sweep micro-batch."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__(lr=lr)
        self.sweep_lrs: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if is_sweep_step(self):
            self.sweep_lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return super().training_step(batch, batch_idx)


def test_accumulate_grad_batches_changes_the_lr_only_at_optimizer_steps():
    sweep, _, (model, _) = check_cell(LRSpy, accumulate_grad_batches=4)
    first = sweep.history[0].result
    seen = model.sweep_lrs[: 4 * len(first.lrs)]
    assert seen == [lr for lr in first.lrs.tolist() for _ in range(4)]


@pytest.mark.parametrize("sweep_first", [True, False], ids=["sweep_listed_first", "sweep_listed_last"])
def test_gradient_accumulation_scheduler_sets_the_batch_size_each_sweep_measures(sweep_first):
    def extra() -> list[Any]:
        return [GradientAccumulationScheduler({0: 2, 1: 4})]

    sweep, _, (model, _) = check_cell(LRSpy, extra=extra, sweep_kwargs={"sweep_first": sweep_first})
    per_point = [len(list(run)) for _, run in itertools.groupby(model.sweep_lrs)]
    assert per_point == [2] * 20 + [4] * 20  # fit start: epoch 0's 2; the epoch-1 re-tune: epoch 1's 4


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_gradient_clipping(algorithm):
    check_cell(Classifier, gradient_clip_val=0.1, gradient_clip_algorithm=algorithm)


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bf16_precision_on_cpu(precision):
    check_cell(Classifier, precision=precision)


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))],
)
def test_fp16_mixed_skipped_scaler_steps_do_not_advance_the_lr(device):
    """``16-mixed`` with a grad scaler (Lightning's on GPU; given explicitly on CPU) that starts too high.

    The first steps overflow and are skipped by the scaler; the sweep repeats their LR instead of moving on.
    """

    def plugins() -> list[Any]:
        return [MixedPrecision("16-mixed", device, scaler=torch.amp.GradScaler(device, init_scale=2.0**24))]

    accelerator = "gpu" if device == "cuda" else "cpu"
    sweep, _, (model, t) = check_cell(LRSpy, plugins=plugins, accelerator=accelerator)
    swept_lrs = [lr for record in sweep.history for lr in record.result.lrs.tolist()]
    changes = [lr for i, lr in enumerate(model.sweep_lrs) if i == 0 or lr != model.sweep_lrs[i - 1]]
    assert changes == swept_lrs  # each swept LR once, in order
    assert len(model.sweep_lrs) > len(swept_lrs)  # skipped steps were repeated at the same LR
    assert t.precision_plugin.scaler.get_scale() < 2.0**24  # training itself also skipped (restored scaler)


def test_manual_optimization():
    check_cell(Manual)


# -- LR schedulers --------------------------------------------------------------------------------


def scheduled(kind: str, interval: str = "epoch"):
    class Scheduled(Val):
        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
            total = self.trainer.estimated_stepping_batches
            scheduler = {
                "step": lambda: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
                "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5),
                "onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr, total_steps=total),
                "plateau": lambda: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=0, factor=0.5),
                "warmup": lambda: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 6)),
                "sequential": lambda: torch.optim.lr_scheduler.SequentialLR(
                    opt,
                    [
                        torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=3),
                        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4),
                    ],
                    milestones=[3],
                ),
                "cyclic": lambda: torch.optim.lr_scheduler.CyclicLR(
                    opt, base_lr=self.hparams.lr / 10, max_lr=self.hparams.lr, step_size_up=2
                ),
            }[kind]()
            config = {"scheduler": scheduler, "interval": interval, "monitor": "val_loss"}
            return {"optimizer": opt, "lr_scheduler": config}

    return lambda lr: Scheduled(lr=lr)


@pytest.mark.parametrize(
    ("kind", "interval"),
    [
        ("step", "epoch"),
        ("step", "step"),
        ("cosine", "step"),
        ("plateau", "epoch"),
        ("warmup", "step"),
        ("sequential", "step"),
        ("cyclic", "step"),
    ],
)
def test_schedulers_follow_the_applied_lr(kind, interval):
    traces: list[TraceLR] = []

    def extra() -> list[Any]:
        traces.append(TraceLR())
        return [traces[-1]]

    check_cell(
        scheduled(kind, interval),
        epochs=3,
        extra=extra,
        data=lambda: loader(n=64),
        val_dataloaders=loader(n=32, shuffle=False),
    )
    plain, swept = traces
    assert swept.lrs == plain.lrs and len(set(plain.lrs)) > 1  # the schedule moved, from the applied LR


def test_one_cycle_peak_is_the_applied_lr_and_survives_past_the_first_step():
    traces: list[TraceLR] = []

    def extra() -> list[Any]:
        traces.append(TraceLR())
        return [traces[-1]]

    check_cell(scheduled("onecycle", "step"), epochs=3, extra=extra, data=lambda: loader(n=128))
    plain, swept = traces
    assert swept.lrs == plain.lrs
    assert max(swept.lrs) == pytest.approx(APPLIED, rel=0.05)  # the peak, not START
    assert swept.lrs[5] > swept.lrs[0]  # still warming up towards the new peak after several steps


# -- param groups ---------------------------------------------------------------------------------


class GroupRatios(Callback):
    def __init__(self) -> None:
        self.ratios: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        body, head = (g["lr"] for g in trainer.optimizers[0].param_groups)
        self.ratios.append(body / head)


def test_param_group_ratio_is_kept_during_and_after_every_sweep():
    check_cell(TwoGroups)
    ratios = GroupRatios()
    sweep = sweep_callback(retune_suggestion=lambda r: r.min_lr * 30 * 1.5)  # re-tunes move
    model, t = run(TwoGroups, START, [sweep, ratios], epochs=3)
    assert [r.applied_lr for r in sweep.history] == pytest.approx([APPLIED, APPLIED * 1.5, APPLIED * 1.5**2])
    swept = [lr for r in sweep.history for lr in r.result.lrs.tolist()]
    assert [head for _, head in model.sweep_lrs] == pytest.approx(swept)  # the head group is the reference
    assert all(math.isclose(body / head, 0.1) for body, head in model.sweep_lrs)  # during every sweep step
    assert ratios.ratios == pytest.approx([0.1] * len(ratios.ratios))  # and in training after each sweep
    assert t.optimizers[0].param_groups[1]["lr"] == pytest.approx(APPLIED * 1.5**2)


# -- data -----------------------------------------------------------------------------------------


class Stream(IterableDataset):
    """An iterable dataset without ``__len__``."""

    def __iter__(self):
        data = blobs(96)
        yield from zip(data.tensors[0], data.tensors[1], strict=True)


def test_iterable_dataset_without_len():
    check_cell(Classifier, data=lambda: DataLoader(Stream(), batch_size=32))


def test_loader_shorter_than_the_sweep_is_cycled():
    sweep, _, _ = check_cell(Classifier, data=lambda: loader(n=64, batch_size=32), sweep_kwargs={"num_steps": 30})
    assert len(sweep.history[0].result.lrs) == 30


class BatchIds(Classifier):
    """Classifier over (x, y, index) batches; records which samples the sweep and the epochs saw."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__(lr=lr)
        self.sweep_ids: list[int] = []
        self.train_ids: list[list[int]] = []

    def on_train_epoch_start(self) -> None:
        self.train_ids.append([])

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, ids = batch
        (self.sweep_ids if is_sweep_step(self) else self.train_ids[-1]).extend(ids.tolist())
        return super().training_step((x, y), batch_idx)


def indexed_loader(**kwargs: Any) -> DataLoader:
    data = blobs(96)
    dataset = torch.utils.data.TensorDataset(*data.tensors, torch.arange(96))
    kwargs.setdefault("shuffle", True)
    return DataLoader(dataset, batch_size=16, **kwargs)


def test_limit_train_batches_is_respected_by_the_sweep():
    _, _, (model, _) = check_cell(BatchIds, data=lambda: indexed_loader(shuffle=False), limit_train_batches=2)
    assert set(model.sweep_ids) == set(range(32))  # cycles over the 2 batches an epoch trains on


def test_persistent_workers_epochs_still_see_every_batch_once():
    fit = dict(data=lambda: indexed_loader(num_workers=2, persistent_workers=True), epochs=2)
    _, _, (model, _) = check_cell(BatchIds, **fit)
    assert [sorted(ids) for ids in model.train_ids] == [list(range(96))] * 2
    assert len(model.sweep_ids) == 16 * 40


class TwoSources(Classifier):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return super().training_step(batch["a"], batch_idx) + super().training_step(batch["b"], batch_idx)


def test_several_train_loaders_in_a_dict():
    check_cell(TwoSources, data=lambda: {"a": loader(n=64), "b": loader(n=32, seed=1)})


def test_val_check_interval():
    check_cell(Val, data=lambda: loader(n=128), val_dataloaders=loader(n=64, shuffle=False), val_check_interval=0.5)


def test_lightning_datamodule():
    check_cell(Val, datamodule=Blobs)


# -- model kinds ----------------------------------------------------------------------------------


class Lazy(Classifier):
    def __init__(self, lr: float = 0.05, initialise: bool = True) -> None:
        super().__init__(lr=lr)
        self.net[0] = nn.LazyLinear(32)
        if initialise:
            self(torch.zeros(2, 8))


def test_lazy_modules_initialised_before_fit():
    check_cell(Lazy)


@pytest.mark.parametrize("sweep", [sweep_by_fit, sweep_by_tuner], ids=["callback", "tuner"])
def test_uninitialised_lazy_modules_are_refused_before_any_step(sweep):
    t = trainer(callbacks=[sweep_callback()])
    with pytest.raises(ValueError, match=r"\['net.0.weight', 'net.0.bias'\] are uninitialised lazy parameters"):
        sweep(t, Lazy(initialise=False))
    assert t.global_step == 0


# -- callbacks alongside --------------------------------------------------------------------------


def test_checkpoint_and_early_stopping_state_is_as_in_a_plain_fit(tmp_path):
    made: list[list[Any]] = []

    def extra() -> list[Any]:
        made.append(
            [
                ModelCheckpoint(dirpath=tmp_path / str(len(made)), monitor="val_loss", save_top_k=2),
                EarlyStopping(monitor="val_loss", patience=1, min_delta=10.0),
            ]
        )
        return made[-1]

    fit = dict(
        data=lambda: loader(n=64), val_dataloaders=loader(n=64, shuffle=False, seed=1), enable_checkpointing=True
    )
    check_cell(Val, epochs=4, extra=extra, **fit)
    (plain_ckpt, plain_stop), (swept_ckpt, swept_stop) = made
    assert swept_stop.state_dict() == plain_stop.state_dict() and plain_stop.stopped_epoch > 0  # it did stop
    assert torch.equal(swept_ckpt.best_model_score, plain_ckpt.best_model_score)
    names = [sorted(Path(p).name for p in ckpt.best_k_models) for ckpt in (plain_ckpt, swept_ckpt)]
    assert names[0] == names[1] and len(names[0]) == 2
    assert sorted(p.name for p in (tmp_path / "0").iterdir()) == sorted(p.name for p in (tmp_path / "1").iterdir())


@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_lr_monitor_logs_as_in_a_plain_fit(interval):
    loggers: list[MemoryLogger] = []

    def extra() -> list[Any]:
        return [LearningRateMonitor(logging_interval=interval)]

    def logger() -> MemoryLogger:
        loggers.append(MemoryLogger())
        return loggers[-1]

    plain = run(scheduled("step", "step"), APPLIED, extra(), logger=logger(), log_every_n_steps=1)
    sweep = sweep_callback()
    swept = run(scheduled("step", "step"), START, [*extra(), sweep], logger=logger(), log_every_n_steps=1)
    assert swept[0].hparams.lr == plain[0].hparams.lr == APPLIED
    lr_logs = [[(s, m) for s, m in log.logged if any(k.startswith("lr-") for k in m)] for log in loggers]
    assert lr_logs[0] == lr_logs[1] and len(lr_logs[0]) >= 2


def test_ema_weight_averaging():
    ema = getattr(pl.callbacks, "EMAWeightAveraging", None)
    if ema is None:
        pytest.skip("EMAWeightAveraging is new in Lightning 2.6")
    check_cell(Classifier, extra=lambda: [ema(decay=0.9)])


def test_stochastic_weight_averaging():
    def extra() -> list[Any]:
        return [StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=2)]

    check_cell(Classifier, epochs=3, extra=extra, data=lambda: loader(n=64))


class Backbone(Classifier):
    """A backbone (frozen, then unfrozen by BackboneFinetuning) and a head; no BatchNorm in the backbone."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__(lr=lr)
        self.backbone = nn.Sequential(nn.Linear(8, 32), nn.ReLU())
        self.head = nn.Linear(32, 3)
        del self.net
        self.sweep_saw: list[tuple[int, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if is_sweep_step(self):
            groups = self.trainer.optimizers[0].param_groups
            self.sweep_saw.append((len(groups), self.backbone[0].weight.requires_grad))
        return super().training_step(batch, batch_idx)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=self.hparams.lr)


def finetuning() -> list[Any]:
    return [BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_ratio_lr=0.1)]


def test_backbone_finetuning_state_is_as_in_a_plain_fit():
    sweep, plain, swept = check_cell(Backbone, epochs=3, extra=finetuning, data=lambda: loader(n=64))
    assert swept[1].callbacks[0].state_dict() == plain[1].callbacks[0].state_dict()


class DoubleLRAtEpoch(Callback):
    """A plain fit's stand-in for a re-tune that doubles the LR at the start of ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] *= 2
            pl_module.hparams.lr *= 2
            finetune = next(c for c in trainer.callbacks if isinstance(c, BackboneFinetuning))
            finetune.previous_backbone_lr *= 2


@pytest.mark.parametrize("sweep_first", [True, False], ids=["sweep_listed_first", "sweep_listed_last"])
def test_retune_at_the_unfreeze_epoch_sees_the_backbone_and_persists(sweep_first):
    data = dict(data=lambda: loader(n=64), epochs=4)
    plain = run(Backbone, APPLIED, [*finetuning(), DoubleLRAtEpoch(1)], **data)
    sweep = sweep_callback(every_n_epochs=None, milestones=[1], retune_suggestion=lambda r: 2 * APPLIED)
    swept = run(Backbone, START, [sweep, *finetuning()] if sweep_first else [*finetuning(), sweep], **data)
    assert [r.applied_lr for r in sweep.history] == [APPLIED, 2 * APPLIED]
    retune_steps = swept[0].sweep_saw[len(sweep.history[0].result.lrs) :]
    assert len(retune_steps) == 20 and set(retune_steps) == {(2, True)}  # unfrozen backbone, its own group
    assert_same_training(plain, swept)  # the doubled backbone LR lasted through BackboneFinetuning's updates
    plain_bf = next(c for c in plain[1].callbacks if isinstance(c, BackboneFinetuning))
    swept_bf = next(c for c in swept[1].callbacks if isinstance(c, BackboneFinetuning))
    assert swept_bf.previous_backbone_lr == plain_bf.previous_backbone_lr
    head, backbone = (g["lr"] for g in swept[1].optimizers[0].param_groups)
    assert head == 2 * APPLIED and backbone == pytest.approx(2 * APPLIED * 0.1 * 2**2)  # x2 per epoch


# -- several optimizers ---------------------------------------------------------------------------


class GAN(pl.LightningModule):
    """A tiny GAN with manual optimization: the discriminator steps, then the generator.

    ``training_step`` returns the loss of the optimizer being swept (``sweep``: 0 generator, 1 discriminator).
    """

    def __init__(self, lr: float = 0.05, lr_d: float = 0.01, sweep: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8))
        self.discriminator = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
        self.other_lrs: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        opt_g, opt_d = self.optimizers()
        if is_sweep_step(self):
            self.other_lrs.append(self.trainer.optimizers[1 - self.hparams.sweep].param_groups[0]["lr"])
        bce = nn.functional.binary_cross_entropy_with_logits
        fake = self.generator(torch.randn(x.shape[0], 4))
        real_logits, fake_logits = self.discriminator(x), self.discriminator(fake.detach())
        d_loss = bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits))
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        fooled = self.discriminator(fake)
        g_loss = bce(fooled, torch.ones_like(fooled))
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.log_dict({"g_loss": g_loss, "d_loss": d_loss})
        return g_loss if self.hparams.sweep == 0 else d_loss

    def configure_optimizers(self) -> Any:
        lr_g, lr_d = self.hparams.lr, self.hparams.lr_d
        return [
            torch.optim.Adam(self.generator.parameters(), lr=lr_g),
            torch.optim.Adam(self.discriminator.parameters(), lr=lr_d),
        ]


def test_gan_sweeps_the_chosen_optimizer_and_leaves_the_other_alone():
    _, _, (model, t) = check_cell(GAN, sweep_kwargs={"optimizer_idx": 0})
    assert set(model.other_lrs) == {0.01} and len(model.other_lrs) == 40  # the discriminator's LR never moved
    assert t.optimizers[0].param_groups[0]["lr"] == APPLIED and t.optimizers[1].param_groups[0]["lr"] == 0.01


def test_gan_discriminator_chosen_by_index_and_attr_name():
    sweep = sweep_callback(optimizer_idx=1, attr_name="lr_d", suggestion=lambda r: 0.02)
    model, t = run(lambda lr: GAN(lr=lr, sweep=1), APPLIED, [sweep])
    assert model.hparams.lr_d == 0.02 and t.optimizers[1].param_groups[0]["lr"] == 0.02
    assert model.hparams.lr == APPLIED and t.optimizers[0].param_groups[0]["lr"] == APPLIED
    assert set(model.other_lrs) == {APPLIED}


@pytest.mark.parametrize(
    ("index", "match"),
    [
        (None, r"returned 2\. Pass `optimizer_idx` \(0 to 1\) to choose which"),
        (2, r"`optimizer_idx=2` is out of range: .* returned 2 optimizer\(s\), so it must be 0 to 1"),
    ],
    ids=["not_given", "out_of_range"],
)
def test_several_optimizers_without_a_valid_choice_are_refused_before_any_step(index, match):
    t = trainer(callbacks=[sweep_callback(optimizer_idx=index)])
    with pytest.raises(ValueError, match=match):
        t.fit(GAN(), loader())
    assert t.global_step == 0


@pytest.mark.parametrize("index", [-1, 1.0, True], ids=["negative", "float", "bool"])
def test_bad_optimizer_idx_is_named(index):
    with pytest.raises(ValueError, match=r"`optimizer_idx` must be None \(a single optimizer\) or an int >= 0"):
        sweep_callback(optimizer_idx=index)


def test_lr_monitor_listed_first_logs_the_retuned_lr_of_its_epoch():
    logger = MemoryLogger()
    sweep = sweep_callback(every_n_epochs=None, milestones=[1], retune_suggestion=lambda r: 2 * APPLIED)
    run(Classifier, START, [LearningRateMonitor(logging_interval="epoch"), sweep], epochs=2, logger=logger)
    logged = [m["lr-SGD"] for _, m in logger.logged if "lr-SGD" in m]
    assert logged == [APPLIED, 2 * APPLIED]  # logged after the fit-start sweep and the re-tune, not before


def test_order_callbacks_moves_only_finetuning_before_and_monitors_after():
    sweep, other, finetune = sweep_callback(), Callback(), finetuning()[0]
    monitor, late_monitor = LearningRateMonitor(), LearningRateMonitor()
    ordered = order_callbacks([monitor, sweep, other, finetune, late_monitor], sweep)
    assert ordered == [finetune, sweep, monitor, other, late_monitor]
    assert order_callbacks([other], sweep) == [other]


def test_tuner_accumulates_as_the_first_epoch_will():
    model = LRSpy()
    t = trainer(callbacks=[GradientAccumulationScheduler({0: 3})])
    result = LRSweepTuner(t).sweep(model, loader(), num_steps=6, early_stop_threshold=None)
    assert len(model.sweep_lrs) == 3 * len(result.lrs) == 18
