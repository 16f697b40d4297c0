import numpy as np
import pytest

from lightning_lrsweep.schedule import lr_schedule, retune_bounds


def test_exponential_multiplies_by_a_constant():
    lrs = lr_schedule(1e-6, 1.0, 7)
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(lrs[1:] / lrs[:-1], 10.0)


def test_linear_adds_a_constant():
    lrs = lr_schedule(0.1, 1.0, 10, "linear")
    np.testing.assert_allclose(np.diff(lrs), 0.1)


def test_unknown_mode_is_named():
    with pytest.raises(ValueError, match="`mode` must be one of .* got 'cosine'"):
        lr_schedule(1e-3, 1.0, 5, "cosine")


def test_retune_window_is_centred_and_capped():
    assert retune_bounds(0.01, 10.0) == pytest.approx((0.001, 0.1))
    low, high = retune_bounds(0.5, 10.0, max_lr=1.0)
    assert low == pytest.approx(0.05) and high == 1.0
