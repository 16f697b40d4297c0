"""Re-tune rules on hand-made curves, then re-tunes in real fits: anneal, schedulers, phase changes, resume."""

from functools import partial
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from models import Plain, TraceLR, TwoOptimizers, loader, trainer
from models import fit as seeded_fit

from lightning_lrsweep import LRSweep
from lightning_lrsweep.retune import (
    DEFAULT_DISTANCE,
    FLAT_PHASE_DECAY,
    PHASE_MAX_CHANGE,
    anneal_factor,
    below_edge,
    bound_change,
    edge_distance,
    edge_retune,
    phase_retune,
    scale_retune,
)
from lightning_lrsweep.suggestion_rules import Curve, Edge, stability_edge


def curve_with_edge(edge: float, low: float, high: float, n: int = 40, dip: float = 0.0) -> Curve:
    """A mid-training curve: flat loss that rises from ``edge`` upwards; ``dip`` lowers it below 0.01."""
    lrs = np.geomspace(low, high, n)
    losses = 0.3 - dip * (lrs < 0.01) * (lrs > low * 3) + np.where(lrs > edge, (lrs / edge - 1) ** 2, 0.0)
    return Curve(lrs, losses, losses)


def test_bound_change_clamps_both_ways():
    assert bound_change(10.0, 1.0, 2.0) == (2.0, True)
    assert bound_change(0.1, 1.0, 2.0) == (0.5, True)
    assert bound_change(1.5, 1.0, 2.0) == (1.5, False)


def test_edge_distance_is_bounded_and_has_a_default():
    assert edge_distance(1.0, 0.1) == pytest.approx(10.0)
    assert edge_distance(1.0, 1.0) == 1.5
    assert edge_distance(1000.0, 1.0) == 30.0
    assert edge_distance(None, 0.1) == 10.0


def test_keeps_the_lr_when_the_edge_is_consistent_with_it():
    # trained at 0.01, the loss rises from 0.03: within the fit-start spacing (5x) -> keep
    decision = edge_retune(curve_with_edge(0.03, 0.01 / 30, 0.01 * 30), 0.01, distance=5.0)
    assert decision.lr == 0.01 and "kept" in decision.reason


def test_goes_down_when_the_loss_already_rises_at_the_current_lr():
    decision = edge_retune(curve_with_edge(0.004, 0.01 / 30, 0.01 * 30), 0.01, distance=5.0)
    assert decision.lr < 0.01
    assert decision.lr >= 0.005  # at most max_change=2 per re-tune
    assert decision.clamped


def test_goes_up_only_with_a_clear_margin_and_bounded():
    far = edge_retune(curve_with_edge(0.2, 0.01 / 30, 0.01 * 30), 0.01, distance=5.0)
    assert far.lr == pytest.approx(0.02) and far.clamped  # target 0.04, bounded to 2x
    near = edge_retune(curve_with_edge(0.06, 0.01 / 30, 0.01 * 30), 0.01, distance=5.0)
    assert near.lr == 0.01  # target about 0.015 < 2x: not enough evidence to go up


@pytest.mark.parametrize("window", [10.0, 30.0, 100.0])
def test_decision_does_not_follow_the_window(window):
    decision = edge_retune(curve_with_edge(0.03, 0.01 / window, 0.01 * window, n=60), 0.01, distance=5.0)
    assert decision.lr == 0.01


def test_an_annealing_dip_halves_the_lr():
    decision = edge_retune(curve_with_edge(0.03, 0.01 / 30, 0.01 * 30, dip=0.03), 0.01, distance=5.0)
    assert decision.lr == pytest.approx(0.005) and "noise-limited" in decision.reason
    small = edge_retune(curve_with_edge(0.03, 0.01 / 30, 0.01 * 30, dip=0.003), 0.01, distance=5.0)
    assert small.lr == 0.01  # a 1% dip is within the 2% band: kept


def test_too_short_a_curve_keeps_the_lr():
    lrs = np.geomspace(1e-3, 1e-1, 3)
    decision = edge_retune(Curve(lrs, np.ones(3), np.ones(3)), 0.01, distance=5.0)
    assert decision.lr == 0.01 and decision.target is None


# -- schedule-aware, phase and anneal rules (pure) -------------------------------------------------


def test_scale_retune_never_goes_up_because_a_decay_went_low():
    # late in a decay: the scheduled LR is 1e-3, the schedule's peak 0.1; the edge sits far above the current LR
    curve = curve_with_edge(0.02, 1e-3 / 30, 1e-3 * 30)
    assert edge_retune(curve, 1e-3, distance=5.0).lr > 1e-3  # the held-LR rule would go up
    decision = scale_retune(curve, 1e-3, peak_lr=0.1, distance=5.0)
    assert decision.lr == 1e-3 and "kept" in decision.reason


def test_scale_retune_has_no_dip_rule_and_goes_down_only_on_instability():
    dip = curve_with_edge(0.03, 0.01 / 30, 0.01 * 30, dip=0.03)
    assert edge_retune(dip, 0.01, distance=5.0).lr == pytest.approx(0.005)  # held LR: the dip halves it
    assert scale_retune(dip, 0.01, peak_lr=0.02, distance=5.0).lr == 0.01  # a decay anneals already
    unstable = scale_retune(curve_with_edge(0.004, 0.01 / 30, 0.01 * 30), 0.01, peak_lr=0.02, distance=5.0)
    assert unstable.lr == pytest.approx(0.005) and unstable.clamped and "scale goes down" in unstable.reason


def test_scale_retune_goes_up_only_when_the_edge_lies_far_above_the_peak():
    curve = curve_with_edge(0.3, 0.01 / 30, 0.01 * 30)  # edge 30x the current LR, at distance 5: the peak's 6x
    up = scale_retune(curve, 0.01, peak_lr=0.01, distance=5.0)
    assert up.lr == pytest.approx(0.02) and up.clamped and "scale goes up" in up.reason  # at most max_change
    assert scale_retune(curve, 0.01, peak_lr=0.01, distance=5.0, max_change=10.0).lr == pytest.approx(0.06)
    below_margin = scale_retune(curve, 0.01, peak_lr=0.04, distance=5.0)  # the edge puts the peak 1.5x higher
    assert below_margin.lr == 0.01 and "kept" in below_margin.reason


def test_phase_retune_sets_the_peak_within_its_wider_bound():
    assert phase_retune(0.3, current_lr=0.05, peak_lr=0.1).lr == pytest.approx(0.15)
    far = phase_retune(10.0, current_lr=0.01, peak_lr=0.01)
    assert far.lr == pytest.approx(0.01 * PHASE_MAX_CHANGE) and far.clamped
    assert phase_retune(None, current_lr=0.01, peak_lr=None).lr == 0.01


def test_a_clear_phase_read_is_placed_no_closer_to_the_changed_models_edge_than_the_spacing():
    near = Edge(1.0, censored=False)
    held = phase_retune(0.3, current_lr=0.05, peak_lr=None, edge=near, distance=10.0)
    assert held.lr == pytest.approx(0.1) and "10x below the stability edge at 1" in held.reason
    peak = phase_retune(0.3, current_lr=0.05, peak_lr=0.2, edge=near, distance=10.0)  # the read is the new peak
    assert peak.lr == pytest.approx(0.05 * 0.1 / 0.2)
    far = phase_retune(0.05, current_lr=0.01, peak_lr=None, edge=near, distance=10.0)  # 20x below the edge: read
    assert far.lr == pytest.approx(0.05) and "stability edge" not in far.reason
    censored = phase_retune(0.3, current_lr=0.05, peak_lr=None, edge=Edge(1.0, censored=True), distance=10.0)
    assert censored.lr == pytest.approx(0.3)  # a censored edge is only a lower bound: it lowers nothing
    assert below_edge(0.3, None, 10.0) == 0.3


def test_a_phase_sweep_without_a_clear_descent_is_not_read():
    # from trained weights the curve is often flat up to the blow-up: its valley is noise
    flat = phase_retune(10.0, current_lr=0.05, peak_lr=None, clear_descent=False)
    assert flat.lr == pytest.approx(0.05 / FLAT_PHASE_DECAY) and "no clear descent" in flat.reason
    decaying = phase_retune(10.0, current_lr=0.05, peak_lr=0.1, clear_descent=False)  # the decay anneals already
    assert decaying.lr == 0.05 and decaying.target is None
    batch = phase_retune(10.0, current_lr=0.05, peak_lr=None, clear_descent=False, batch_changed=True)
    assert batch.lr == 0.05 and batch.target is None


def test_a_flat_phase_sweep_keeps_a_held_lr_the_measured_spacing_below_the_changed_models_edge():
    flat = partial(phase_retune, 10.0, current_lr=0.05, peak_lr=None, clear_descent=False, distance=20.0)
    assert flat(edge=Edge(1.0, censored=False)).lr == pytest.approx(0.05 / FLAT_PHASE_DECAY)  # a high edge: 10x down
    unstable = flat(edge=Edge(0.02, censored=False))  # the edge lies below the LR: 20x below it, past the 10x step
    assert unstable.lr == pytest.approx(0.001) and "the loss rises from 0.02: 20x below that" in unstable.reason
    assert not unstable.clamped
    near = flat(edge=Edge(0.08, censored=False))  # above the LR, but 20x below it is still under the 10x step
    assert near.lr == pytest.approx(0.004)
    assert flat(edge=Edge(0.02, censored=True)).lr == pytest.approx(0.05 / FLAT_PHASE_DECAY)  # only a lower bound
    assert flat(edge=Edge(0.02, censored=False), peak_lr=0.1).lr == 0.05  # a decay's scale stays


def test_a_flat_phase_sweeps_edge_moves_the_lr_at_most_max_change_past_the_10x_step():
    # an edge at the sweep's first LRs (the loss never settles) would otherwise send the LR towards min_lr
    lowest = phase_retune(None, current_lr=0.05, peak_lr=None, clear_descent=False, edge=Edge(1e-7, False))
    assert lowest.lr == pytest.approx(0.05 / (FLAT_PHASE_DECAY * PHASE_MAX_CHANGE)) and lowest.clamped
    assert lowest.target == pytest.approx(1e-7 / DEFAULT_DISTANCE)


def test_the_anneal_holds_for_the_first_half_then_follows_a_cosine_to_zero():
    assert [anneal_factor(step, 100) for step in (0, 25, 50)] == [1.0, 1.0, 1.0]
    assert anneal_factor(75, 100) == pytest.approx(0.5)
    assert anneal_factor(100, 100) == pytest.approx(0.0) and anneal_factor(150, 100) == pytest.approx(0.0)
    assert anneal_factor(10**9, float("inf")) == 1.0  # no limit of that kind: it never decays
    assert anneal_factor(50, 100, hold=0.0) == pytest.approx(0.5)  # no hold: a cosine from the first step


# -- in a real fit ----------------------------------------------------------------------------------


def fit(model, callbacks, epochs=4, data=None, **kwargs):
    """Fits ``model()``, built after the seed, on 128 blobs (or ``data``)."""
    data = data if data is not None else loader(n=128)
    return seeded_fit(model, callbacks, seed=3, epochs=epochs, data=data, **kwargs)


def test_without_a_scheduler_periodic_retunes_anneal_over_the_run():
    sweep, trace = LRSweep(every_n_epochs=2, num_steps=20, retune_num_steps=10), TraceLR()
    _, t = fit(Plain, [sweep, trace])
    total = t.estimated_stepping_batches
    assert len(trace.lrs) == total == 16
    scale = [lr / anneal_factor(step, total) for step, lr in enumerate(trace.lrs)]
    retune_step = sweep.history[1].global_step  # 8: the re-tune at epoch 2 may rescale the decay, nothing else
    assert scale[:retune_step] == pytest.approx([sweep.history[0].applied_lr] * retune_step)
    assert scale[retune_step:] == pytest.approx([scale[retune_step]] * (total - retune_step))
    assert trace.lrs[-1] < 0.05 * max(trace.lrs)  # annealed to almost 0 by the end
    assert "the schedule's scale" in sweep.history[1].reason  # the decay's rule, not the held-LR one


def test_an_anneal_started_far_below_what_the_model_tolerates_raises_its_scale():
    # no fit-start sweep: the module's 1e-5 is the peak; the re-tune finds no edge within 30x of it
    sweep, trace = LRSweep(every_n_epochs=1, retune_num_steps=10, sweep_at_fit_start=False), TraceLR()
    _, t = fit(partial(Plain, lr=1e-5), [sweep, trace])
    record = sweep.history[0]
    assert "scale goes up" in record.reason and record.suggested_lr > 2 * record.previous_lr
    assert record.applied_lr == pytest.approx(2 * record.previous_lr)  # at most `max_change`
    scale = [lr / anneal_factor(step, t.estimated_stepping_batches) for step, lr in enumerate(trace.lrs)]
    assert scale[: record.global_step] == pytest.approx([1e-5] * record.global_step)
    assert scale[record.global_step] == pytest.approx(2e-5)  # the whole decay scaled by one factor from there


def test_anneal_false_holds_the_lr_between_retunes():
    sweep, trace = LRSweep(every_n_epochs=2, num_steps=20, retune_num_steps=10, anneal=False), TraceLR()
    fit(Plain, [sweep, trace])
    assert trace.lrs[:8] == [sweep.history[0].applied_lr] * 8
    assert trace.lrs[8:] == [sweep.history[1].applied_lr] * 8


class Scheduled(Plain):
    """A per-step scheduler: ``factor`` per step (1.0: constant)."""

    def __init__(self, lr: float = 0.01, factor: float = 1.0) -> None:
        super().__init__(lr=lr)
        self.factor = factor

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=self.factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_a_scheduler_is_not_annealed_on_top():
    sweep, trace = LRSweep(every_n_epochs=2, num_steps=20, retune_num_steps=10), TraceLR()
    fit(partial(Scheduled, factor=1.0), [sweep, trace])
    assert trace.lrs[:8] == [sweep.history[0].applied_lr] * 8  # the constant schedule stays constant


def test_a_schedulers_scale_set_far_too_low_is_not_raised():
    # the same start under a (constant) scheduler: its peak is the user's, and a scheduler may move the momentum
    sweep = LRSweep(every_n_epochs=1, retune_num_steps=10, sweep_at_fit_start=False)
    fit(partial(Scheduled, lr=1e-5, factor=1.0), [sweep])
    assert [record.applied_lr for record in sweep.history] == [pytest.approx(1e-5)] * 3
    assert all("kept" in record.reason for record in sweep.history)


def test_a_retune_late_in_a_decay_keeps_its_scale():
    # the LR falls 100x per epoch: at the epoch-2 re-tune it is 1e-4 of the peak, far below the stability edge
    sweep = LRSweep(every_n_epochs=2, num_steps=20, retune_num_steps=20)
    _, t = fit(partial(Scheduled, factor=0.01 ** (1 / 4)), [sweep], epochs=3)
    record = sweep.history[1]
    assert record.previous_lr == pytest.approx(sweep.history[0].applied_lr * 1e-4)
    assert record.applied_lr == record.previous_lr and "kept" in record.reason
    assert t.lr_scheduler_configs[0].scheduler.base_lrs == [pytest.approx(sweep.history[0].applied_lr)]


class Backbone(Plain):
    """A ``backbone`` for ``BackboneFinetuning``; the optimizer gets the trainable parameters only."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr=lr)
        self.backbone = self.net[:2]

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=self.hparams.lr, momentum=0.9)


def is_full_range(record, sweep) -> bool:
    return record.result.lrs[0] == pytest.approx(sweep.config.min_lr)


def unfreeze_fit(at: int = 2, **settings: Any) -> LRSweep:
    from lightning.pytorch.callbacks import BackboneFinetuning

    sweep = LRSweep(**{"every_n_epochs": 1, "num_steps": 30, "retune_num_steps": 10, "anneal": False, **settings})
    fit(Backbone, [BackboneFinetuning(unfreeze_backbone_at_epoch=at), sweep])
    return sweep


def test_a_retune_after_an_unfreeze_sweeps_the_full_range_with_the_fit_start_rule():
    sweep = unfreeze_fit(min_confidence=0.0)  # every curve is read
    unfreeze, after = sweep.history[2], sweep.history[3]
    assert sweep.history[1].reason and not is_full_range(sweep.history[1], sweep)  # nothing changed at epoch 1
    assert is_full_range(unfreeze, sweep) and len(unfreeze.result.lrs) > 10
    assert unfreeze.reason.startswith("layers unfrozen: phase change: the fit-start rule")
    assert unfreeze.applied_lr == pytest.approx(clear_phase_lr(unfreeze, fit_start_spacing(sweep)))
    assert not is_full_range(after, sweep)  # the next re-tune is periodic again: a window around the LR


def fit_start_spacing(sweep: LRSweep) -> float:
    fit_start = sweep.history[0]
    edge = stability_edge(fit_start.result.curve, fit_start.result.diverged)
    return edge_distance(edge.lr if edge else None, fit_start.suggested_lr)


def clear_phase_lr(record, spacing: float) -> float:
    """The fit-start rule's read, ``spacing`` below the changed model's edge at most, within 10x of the LR."""
    edge = stability_edge(record.result.curve, record.result.diverged)
    read = below_edge(record.result.suggestion(), edge, spacing)
    return bound_change(read, record.previous_lr, PHASE_MAX_CHANGE)[0]


def test_an_unfreeze_read_close_to_the_unfrozen_networks_edge_is_placed_the_spacing_below_it():
    from lightning.pytorch.callbacks import BackboneFinetuning

    # the user's own LR, no fit-start sweep (the default spacing); at the unfreeze the head is not at its noise floor
    sweep = LRSweep(num_steps=30, sweep_at_fit_start=False)
    fit(partial(Backbone, lr=0.05), [BackboneFinetuning(unfreeze_backbone_at_epoch=2), sweep])
    (unfreeze,) = sweep.history
    assert unfreeze.result.confidence >= sweep.settings.min_confidence  # a clear descent: the curve is read
    edge = stability_edge(unfreeze.result.curve, unfreeze.result.diverged)
    assert edge is not None and not edge.censored
    assert unfreeze.result.suggestion() > edge.lr / DEFAULT_DISTANCE  # the read lies closer to the edge than 10x
    assert unfreeze.applied_lr == pytest.approx(clear_phase_lr(unfreeze, DEFAULT_DISTANCE))
    assert unfreeze.applied_lr < unfreeze.result.suggestion()
    assert "below the stability edge" in unfreeze.reason
    # later re-tunes keep the spacing the LR was capped at, not the closer one of the uncapped read
    assert sweep._spacing() == pytest.approx(DEFAULT_DISTANCE)


def flat_phase_lr(sweep: LRSweep, record) -> float:
    """10x below the LR, or the fit-start spacing below the changed model's edge where that is lower (<= 10x more).

    The fit-start spacing: no phase sweep before ``record`` had a clear descent to measure another.
    """
    spacing = fit_start_spacing(sweep)
    edge = stability_edge(record.result.curve, record.result.diverged)
    assert edge is not None and not edge.censored  # the sweep blew up: its edge is measured, not a lower bound
    step = record.previous_lr / FLAT_PHASE_DECAY
    return min(step, max(edge.lr / spacing, step / PHASE_MAX_CHANGE))


def test_an_unfreeze_sweep_below_min_confidence_lowers_the_scale_instead_of_reading_the_curve():
    with pytest.warns(UserWarning, match=r"clamped to .* \(100x, the most a phase change moves it\)"):
        sweep = unfreeze_fit(min_confidence=1.0)  # the edge asks for more than 100x down
    unfreeze = sweep.history[2]
    assert unfreeze.result.confidence < 1.0  # the branch this test checks
    assert "no clear descent" in unfreeze.reason
    assert unfreeze.applied_lr == pytest.approx(flat_phase_lr(sweep, unfreeze))
    # the head alone was swept to a high LR; the unfrozen network's edge lies far below it: more than 10x down
    assert "the loss rises from" in unfreeze.reason
    assert unfreeze.applied_lr < unfreeze.previous_lr / FLAT_PHASE_DECAY


def test_once_the_anneal_decays_an_unfreeze_sweep_below_min_confidence_keeps_the_scale():
    sweep = unfreeze_fit(at=3, min_confidence=1.0, anneal=True)  # epoch 3 of 4: the decay has begun
    unfreeze = sweep.history[3]
    assert "no clear descent" in unfreeze.reason and "kept" in unfreeze.reason
    assert unfreeze.applied_lr == unfreeze.previous_lr


def test_in_the_anneals_hold_an_unfreeze_sweep_below_min_confidence_lowers_the_scale_as_for_a_held_lr():
    sweep = unfreeze_fit(at=2, min_confidence=1.0, anneal=True)  # epoch 2 of 4: the LR is still held
    unfreeze = sweep.history[2]
    assert "no clear descent" in unfreeze.reason
    assert unfreeze.applied_lr == pytest.approx(flat_phase_lr(sweep, unfreeze))


def test_a_plain_sweep_retunes_at_the_epoch_layers_are_unfrozen():
    from lightning.pytorch.callbacks import BackboneFinetuning

    sweep = LRSweep(num_steps=30)  # no every_n_epochs, no milestones
    fit(Backbone, [BackboneFinetuning(unfreeze_backbone_at_epoch=2), sweep])
    assert [(r.kind, r.epoch) for r in sweep.history] == [("fit_start", 0), ("retune", 2)]
    assert sweep.history[1].reason.startswith("layers unfrozen: phase change")
    assert is_full_range(sweep.history[1], sweep)


def test_a_plain_sweep_retunes_at_the_epoch_the_accumulation_changes():
    from lightning.pytorch.callbacks import GradientAccumulationScheduler

    sweep = LRSweep(num_steps=30)
    fit(Plain, [GradientAccumulationScheduler({2: 2}), sweep], epochs=3)
    assert [(r.epoch, r.reason.split(":")[0]) for r in sweep.history[1:]] == [(2, "accumulation changed")]
    assert is_full_range(sweep.history[1], sweep)


def test_phase_retunes_can_be_left_to_the_schedule():
    from lightning.pytorch.callbacks import BackboneFinetuning

    sweep = LRSweep(num_steps=30, retune_num_steps=10, every_n_epochs=3, retune_at_phase_change=False)
    fit(Backbone, [BackboneFinetuning(unfreeze_backbone_at_epoch=2), sweep], epochs=4)
    assert [r.epoch for r in sweep.history] == [0, 3]
    assert sweep.history[1].reason.startswith("layers unfrozen")  # the next re-tune still sees the change


def test_a_resumed_run_does_not_take_its_restored_unfreeze_for_a_phase_change(tmp_path):
    from lightning.pytorch.callbacks import BackboneFinetuning, ModelCheckpoint

    def callbacks() -> list:
        return [BackboneFinetuning(unfreeze_backbone_at_epoch=1), LRSweep(num_steps=30)]

    first = callbacks()
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    fit(Backbone, [*first, ckpt], enable_checkpointing=True)
    assert [r.epoch for r in first[1].history] == [0, 1]
    again = callbacks()
    fit(Backbone, again, ckpt_path=tmp_path / "epoch=1.ckpt")  # the backbone comes back unfrozen
    assert [r.epoch for r in again[1].history] == [0, 1]  # the saved history, no extra re-tune at epoch 2


def test_a_milestone_retune_sweeps_the_full_range():
    sweep = LRSweep(milestones=[2], num_steps=30, retune_num_steps=10)
    fit(Plain, [sweep])
    assert [r.epoch for r in sweep.history] == [0, 2]
    assert is_full_range(sweep.history[1], sweep) and sweep.history[1].reason.startswith("milestone")


def test_a_retune_after_the_accumulation_changes_is_a_phase_change():
    from lightning.pytorch.callbacks import GradientAccumulationScheduler

    sweep = LRSweep(every_n_epochs=1, num_steps=30, retune_num_steps=10)
    fit(Plain, [GradientAccumulationScheduler({2: 2}), sweep], epochs=3)
    assert [r.reason.split(":")[0] for r in sweep.history[1:]][1] == "accumulation changed"
    assert is_full_range(sweep.history[2], sweep) and not is_full_range(sweep.history[1], sweep)


def test_an_annealed_run_resumes_exactly(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def settings():
        return LRSweep(every_n_epochs=2, num_steps=20, retune_num_steps=10)

    ckpt = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    full, _ = fit(Plain, [settings(), ckpt], enable_checkpointing=True, data=loader(n=128, shuffle=False))
    resumed, _ = fit(Plain, [settings()], data=loader(n=128, shuffle=False), ckpt_path=tmp_path / "epoch=1.ckpt")
    for p, q in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


def test_the_anneal_ends_near_zero_with_a_gradient_accumulation_scheduler():
    from lightning.pytorch.callbacks import GradientAccumulationScheduler

    # 4 batches an epoch, 2 per optimizer step: 8 steps in all, where `estimated_stepping_batches` says 16
    sweep, trace = LRSweep(every_n_epochs=2, num_steps=20, retune_num_steps=10), TraceLR()
    _, t = fit(Plain, [GradientAccumulationScheduler({0: 2}), sweep, trace])
    assert t.global_step == 8
    assert trace.lrs[-1] < 0.05 * max(trace.lrs)  # annealed to almost 0 by the end, as without accumulation


def test_the_anneal_spans_the_run_when_two_optimizers_step_each_batch():
    sweep, trace = LRSweep(every_n_epochs=2, num_steps=20, retune_num_steps=10, optimizer_idx=0), TraceLR()
    _, t = fit(TwoOptimizers, [sweep, trace])
    assert t.global_step == 32 and len(trace.lrs) == 16
    assert min(trace.lrs) > 0  # not decayed to 0 halfway through
    # counted in training batches (16), not optimizer steps (32): after the re-tune only the anneal moves the LR
    assert trace.lrs[14] / trace.lrs[10] == pytest.approx(anneal_factor(14, 16) / anneal_factor(10, 16))
    assert trace.lrs[-1] < 0.05 * max(trace.lrs)


def test_an_accumulation_schedule_that_never_changes_is_no_phase_change():
    from lightning.pytorch.callbacks import GradientAccumulationScheduler

    # the trainer's own `accumulate_grad_batches` is 1 until the scheduler sets 2 at the first epoch start
    sweep = LRSweep(every_n_epochs=1, num_steps=30, retune_num_steps=10, anneal=False)
    fit(Plain, [GradientAccumulationScheduler({0: 2}), sweep], epochs=3)
    assert [r.epoch for r in sweep.history] == [0, 1, 2]
    assert not any(is_full_range(r, sweep) for r in sweep.history[1:])
    assert not any("phase change" in r.reason for r in sweep.history[1:])


class TraceRatio(Callback):
    """The last group's LR over the first's at every training batch (a backbone's against the head's)."""

    def __init__(self) -> None:
        self.ratios: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        groups = trainer.optimizers[0].param_groups
        self.ratios.append(groups[-1]["lr"] / groups[0]["lr"])


def test_the_anneal_keeps_the_ratio_backbone_finetuning_set():
    from lightning.pytorch.callbacks import BackboneFinetuning

    # the backbone group joins at epoch 1 at 0.1x the head's LR; BackboneFinetuning resets it every epoch from its
    # own record (here x1 per epoch), which the anneal must scale as it scales the group
    unfreeze = BackboneFinetuning(unfreeze_backbone_at_epoch=1, lambda_func=lambda epoch: 1.0, should_align=False)
    sweep, trace = LRSweep(every_n_epochs=5, num_steps=20, retune_at_phase_change=False), TraceRatio()
    fit(Backbone, [unfreeze, sweep, trace], epochs=4)
    assert len(sweep.history) == 1  # no re-tune: only the anneal moves the LRs
    assert trace.ratios[4:] == pytest.approx([0.1] * 12)


def test_the_anneal_stops_where_stochastic_weight_averaging_takes_over_the_lr():
    from lightning.pytorch.callbacks import StochasticWeightAveraging

    # SWA attaches its own scheduler (SWALR) at the second epoch (index 1), which holds `swa_lrs` from index 2 on
    swa = StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=2, annealing_epochs=1)
    sweep, trace = LRSweep(every_n_epochs=5, num_steps=20), TraceLR()
    fit(Plain, [sweep, swa, trace], epochs=4)
    assert trace.lrs[:4] == pytest.approx([sweep.history[0].applied_lr * anneal_factor(i, 16) for i in range(4)])
    assert trace.lrs[8:] == pytest.approx([0.01] * 8)


def test_a_resume_without_saved_state_does_not_reuse_an_earlier_resumes_anneal_factor(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def checkpointed(callbacks, name):
        ckpt = ModelCheckpoint(dirpath=tmp_path / name, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
        fit(Plain, [*callbacks, ckpt], enable_checkpointing=True, data=loader(n=128, shuffle=False))
        return tmp_path / name / "epoch=2.ckpt"  # 12 of 16 batches: half-way through the anneal's decay

    annealed = checkpointed([LRSweep(every_n_epochs=2, num_steps=20, retune_num_steps=10)], "annealed")
    plain = checkpointed([], "plain")  # no LRSweep state; its LR stayed at 0.01
    sweep, trace = LRSweep(every_n_epochs=2, num_steps=20, retune_num_steps=10), TraceLR()
    trainer(max_epochs=4, callbacks=[sweep]).fit(Plain(), loader(n=128, shuffle=False), ckpt_path=annealed)
    with pytest.warns(UserWarning, match="without a saved history"):
        t = trainer(max_epochs=4, callbacks=[sweep, trace])
        t.fit(Plain(), loader(n=128, shuffle=False), ckpt_path=plain)
    assert trace.lrs[0] == pytest.approx(0.01 * anneal_factor(12, 16))  # the restored LR joins the anneal
