import numpy as np
import pytest

from lightning_lrsweep.retune import bound_change, edge_distance, edge_retune
from lightning_lrsweep.suggest import Curve


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
