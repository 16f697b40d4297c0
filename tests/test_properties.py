"""Property tests of the suggestion rules over random curves (hypothesis)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightning_lrsweep.suggestion_rules import METHODS, Curve, finite_prefix, rule_suggestion, zero_lag_curve

# Few examples, the same on every run (CI stays fast and reproducible; explore locally with more), no files written.
FAST = settings(
    max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def sweep_lrs(draw, n):
    """Increasing LRs as a sweep makes them: exponential or linear between random bounds."""
    low = draw(st.floats(1e-8, 1e-2))
    high = low * draw(st.floats(2.0, 1e8))
    return np.geomspace(low, high, n) if draw(st.booleans()) else np.linspace(low, high, n)


@st.composite
def curves(draw, allow_nonfinite=True):
    """Random sweep curves: noisy, flat, rising, falling-then-rising, with NaN/Inf, 2 to 1000 points."""
    n = draw(st.integers(2, 1000))
    lrs = draw(sweep_lrs(n))
    x = np.linspace(0, 1, n)
    shape = draw(st.sampled_from(["noisy", "flat", "rising", "valley", "falling"]))
    level = draw(st.floats(1e-3, 1e3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    noise = draw(st.floats(0, 0.5)) * rng.standard_normal(n)
    base = {
        "noisy": rng.standard_normal(n),
        "flat": np.zeros(n),
        "rising": x * 3,
        "valley": -np.sin(np.pi * x) + 4 * np.clip(x - 0.8, 0, None) ** 2 * 25,
        "falling": -x,
    }[shape]
    losses = level * (1 + base + (noise if shape != "flat" else 0))
    if allow_nonfinite and draw(st.booleans()):
        where = draw(st.integers(0, n - 1))
        losses[where:] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return Curve(lrs, losses, losses)


@FAST
@given(curve=curves(), method=st.sampled_from(sorted(METHODS)))
def test_never_raises_and_stays_in_the_swept_range(curve, method):
    for read in (curve, zero_lag_curve(curve.lrs, curve.losses)):
        outcome = rule_suggestion(read, method)
        if outcome.lr is None:
            assert outcome.reason
        else:
            assert np.isfinite(outcome.lr)
            assert curve.lrs.min() <= outcome.lr <= curve.lrs.max()


@FAST
@given(curve=curves())
def test_zero_lag_curve_is_the_finite_prefix_smoothed(curve):
    smoothed = zero_lag_curve(curve.lrs, curve.losses)
    finite = finite_prefix(curve)
    assert len(smoothed.lrs) == len(finite.lrs)
    assert np.array_equal(smoothed.lrs, finite.lrs) and np.array_equal(smoothed.losses, finite.losses)
    assert np.all(np.isfinite(smoothed.smoothed))
    if len(finite.losses):
        assert finite.losses.min() - 1e-9 * abs(finite.losses).max() <= smoothed.smoothed.min()
        assert smoothed.smoothed.max() <= finite.losses.max() + 1e-9 * abs(finite.losses).max()


@st.composite
def grid_curves(draw):
    """Curves whose losses lie on a dyadic grid, so that shifts and power-of-2 scalings are exact in floats.

    Invariance is then a property of the rules, not of float rounding at the noise floor.
    """
    n = draw(st.integers(2, 300))
    lrs = draw(sweep_lrs(n))
    steps = draw(st.lists(st.integers(-8, 8), min_size=n, max_size=n))
    losses = (1000 + np.cumsum(steps)) / 16.0
    return Curve(lrs, losses, losses)


@FAST
@given(curve=grid_curves(), method=st.sampled_from(sorted(METHODS)), power=st.integers(-20, 20))
def test_same_lr_when_the_loss_is_scaled(curve, method, power):
    scaled = curve.losses * 2.0**power
    assert rule_suggestion(zero_lag_curve(curve.lrs, scaled), method) == rule_suggestion(
        zero_lag_curve(*curve[:2]), method
    )


@FAST
@given(curve=grid_curves(), method=st.sampled_from(sorted(METHODS)), shift=st.integers(-900, 900))
def test_same_lr_when_the_loss_is_shifted(curve, method, shift):
    shifted = curve.losses + shift / 16.0
    assert (
        rule_suggestion(zero_lag_curve(curve.lrs, shifted), method).lr
        == rule_suggestion(zero_lag_curve(*curve[:2]), method).lr
    )


@pytest.mark.parametrize("method", sorted(METHODS))
def test_tiny_losses_are_not_called_flat(method):
    lrs = np.geomspace(1e-5, 1, 60)
    losses = 1e-12 * (2 - np.sin(np.linspace(0, np.pi, 60)))
    assert rule_suggestion(zero_lag_curve(lrs, losses), method).lr is not None


def test_minimum_is_clamped_to_the_swept_range():
    lrs = np.geomspace(1e-3, 1e-2, 10)  # a narrow sweep: lowest loss / 10 falls below its start
    losses = np.array([5, 1, 2, 3, 4, 5, 6, 7, 8, 9], dtype=float)
    assert rule_suggestion(Curve(lrs, losses, losses), "minimum").lr == lrs[0]


@FAST
@given(
    losses=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=2, max_size=200),
    method=st.sampled_from(sorted(METHODS)),
)
def test_any_floats_at_all_never_raise(losses, method):
    losses = np.array(losses)
    lrs = np.geomspace(1e-6, 1, len(losses))
    with np.errstate(all="ignore"):
        for curve in (Curve(lrs, losses, losses), zero_lag_curve(lrs, losses)):
            outcome = rule_suggestion(curve, method)
            assert outcome.lr is None or lrs[0] <= outcome.lr <= lrs[-1]
