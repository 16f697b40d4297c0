import matplotlib
import numpy as np
import pandas as pd
import pytest

from lightning_lrsweep import SweepResult

matplotlib.use("Agg")


def make_result(n=60):
    lrs = np.geomspace(1e-5, 1, n)
    losses = 2 - 1.5 / (1 + np.exp(-(np.log10(lrs) + 2) * 3)) + np.where(lrs > 0.3, 20 * (lrs - 0.3), 0)
    return SweepResult(lrs, losses, losses, stop_reason="diverged", min_lr=1e-5, max_lr=1.0, num_steps=n)


def test_to_pandas_has_one_row_per_step():
    result = make_result()
    frame = result.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["step", "lr", "loss", "smoothed_loss", "rate_of_change"]
    assert len(frame) == 60 and frame["lr"].is_monotonic_increasing
    np.testing.assert_allclose(frame["rate_of_change"], result.rate_of_change())


def test_plots_draw_the_curve_with_a_log_axis_and_the_suggestion():
    result = make_result()
    ax = result.plot()
    assert ax.get_xscale() == "log"
    assert any("suggestion" in t.get_text() for t in ax.get_legend().get_texts())
    roc = result.plot_rate_of_change(window=5)
    line = roc.get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), result.rate_of_change(5))


def test_plot_shades_the_supported_interval_around_the_suggestion():
    result = make_result()
    low, high = result.interval
    assert low <= result.suggestion() <= high and 0.0 < result.confidence <= 1.0
    (span,) = [p for p in result.plot().patches if p.get_label() == "supported range"]
    xs = [span.get_x(), span.get_x() + span.get_width()]
    assert min(xs) == pytest.approx(low) and max(xs) == pytest.approx(high)


def test_no_interval_and_zero_confidence_without_a_suggestion():
    flat = SweepResult(np.geomspace(1e-5, 1, 20), np.ones(20), np.ones(20))
    assert flat.interval is None and flat.confidence == 0.0
    assert not [p for p in flat.plot().patches if p.get_label() == "supported range"]


def test_save_writes_csv_and_png(tmp_path):
    paths = make_result().save(tmp_path / "out", stem="sweep")
    assert paths["csv"].name == "sweep.csv" and paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert len(pd.read_csv(paths["csv"])) == 60


def test_suggestion_method_override_and_callable():
    result = make_result()
    assert result.suggestion("minimum") != result.suggestion("steepest")
    assert result.suggestion(lambda r: 0.123) == 0.123


def test_suggestion_none_has_a_reason(caplog):
    flat = SweepResult(np.geomspace(1e-4, 1, 10), np.ones(10), np.ones(10))
    with caplog.at_level("INFO"):
        assert flat.suggestion() is None
    assert "flat" in caplog.text
    assert flat.suggest().reason == "the loss is flat over the whole sweep"


@pytest.mark.parametrize("method", ["valley", "steepest", "minimum", "sma_slope"])
def test_every_method_answers_on_a_clean_curve(method):
    assert 1e-4 < make_result().suggestion(method) < 0.3


def marks(ax):
    """The x of every dashed marker line on ``ax``, and the legend's labels."""
    xs = [float(line.get_xdata()[0]) for line in ax.get_lines() if line.get_linestyle() == "--"]
    return xs, [t.get_text() for t in ax.get_legend().get_texts()]


def test_plots_mark_a_given_lr_instead_of_the_suggestion():
    result = make_result()
    loss, roc = result.figure(mark=0.02, mark_label="applied LR").axes
    assert marks(loss) == ([0.02], ["loss", "smoothed loss (centred)", "applied LR 2.00e-02"])
    assert marks(roc)[0] == [0.02] and marks(roc)[1][-1] == "applied LR 2.00e-02"
    default = result.plot()
    assert marks(default)[0] == [pytest.approx(result.suggestion())]


def test_save_keeps_the_users_backend_and_leaves_no_figure_open(tmp_path, svg_backend):
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    paths = make_result().save(tmp_path)
    assert matplotlib.get_backend() == "svg"
    assert plt.get_fignums() == open_before
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
