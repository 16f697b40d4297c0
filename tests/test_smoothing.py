import numpy as np
import pytest

from lightning_lrsweep.smoothing import centered_mean, ema, trailing_mean


def test_ema_is_bias_corrected_from_the_first_step():
    smoothed = ema(np.array([5.0, 5.0, 5.0]), 0.98)
    np.testing.assert_allclose(smoothed, 5.0)


def test_ema_matches_the_textbook_formula():
    losses = np.array([1.0, 3.0, 2.0])
    beta = 0.9
    avg1 = 0.1 * 1.0
    avg2 = beta * avg1 + 0.1 * 3.0
    assert ema(losses, beta)[1] == pytest.approx(avg2 / (1 - beta**2))


def test_ema_zero_beta_is_identity():
    losses = np.array([3.0, 1.0, 2.0])
    np.testing.assert_array_equal(ema(losses, 0.0), losses)


def test_centered_mean_keeps_a_minimum_in_place_where_the_ema_drags_it_right():
    v_shape = np.abs(np.arange(41) - 20).astype(float)
    assert int(np.argmin(centered_mean(v_shape, 5))) == 20
    assert int(np.argmin(ema(v_shape, 0.9))) > 20


def test_trailing_mean_averages_the_last_window():
    np.testing.assert_allclose(trailing_mean(np.array([1.0, 2.0, 3.0, 4.0]), 2), [1.0, 1.5, 2.5, 3.5])


def test_the_sweep_records_the_same_smoothing_as_ema():
    from lightning_lrsweep.stop_rule import Recorder

    losses = [2.0, 1.5, 1.7, 1.2, 1.1, 0.9]
    recorder = Recorder(smoothing=0.9, threshold=None)
    for k, loss in enumerate(losses):
        recorder.add(10.0**k, loss)
    np.testing.assert_allclose(recorder.smoothed, ema(np.array(losses), 0.9))
