import matplotlib
import numpy as np
import pandas as pd
import pytest
from models import marks

from lightning_lrsweep import SweepResult
from lightning_lrsweep.smoothing import ema

matplotlib.use("Agg")


def make_result(n=60):
    lrs = np.geomspace(1e-5, 1, n)
    losses = 2 - 1.5 / (1 + np.exp(-(np.log10(lrs) + 2) * 3)) + np.where(lrs > 0.3, 20 * (lrs - 0.3), 0)
    return SweepResult(lrs, losses, losses, stop_reason="diverged", min_lr=1e-5, max_lr=1.0, num_steps=n)


def test_to_pandas_has_one_row_per_step():
    result = make_result()
    frame = result.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["step", "lr", "loss", "ema_loss", "centred_loss", "rate_of_change"]
    assert len(frame) == 60 and frame["lr"].is_monotonic_increasing
    np.testing.assert_allclose(frame["rate_of_change"], result.rate_of_change())


def test_columns_are_what_they_say_and_the_centred_one_is_what_the_plot_and_the_rules_read(tmp_path):
    lrs = np.geomspace(1e-5, 1, 60)
    losses = make_result().losses + np.random.default_rng(0).normal(0, 0.05, 60)
    losses[-3:] = np.nan  # the sweep stopped on a NaN
    result = SweepResult(lrs, losses, ema(losses, 0.98), stop_reason="non_finite")
    frame = pd.read_csv(result.save(tmp_path)["csv"])
    np.testing.assert_allclose(frame["ema_loss"], ema(losses, 0.98))  # the stop rule's lagging EMA
    np.testing.assert_allclose(frame["centred_loss"][:57], result.curve.smoothed)  # what the suggestion reads
    assert frame["centred_loss"][57:].isna().all()
    (plotted,) = [line for line in result.plot().get_lines() if line.get_label().startswith("centred loss")]
    np.testing.assert_allclose(plotted.get_ydata(), frame["centred_loss"][:57])
    lowest = frame["centred_loss"].idxmin()
    assert result.suggestion("minimum") == pytest.approx(frame["lr"][lowest] / 10)


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


def test_suggestion_none_warns_with_its_reason():
    flat = SweepResult(np.geomspace(1e-4, 1, 10), np.ones(10), np.ones(10))
    with pytest.warns(UserWarning, match="No LR suggestion: the loss is flat over the whole sweep"):
        assert flat.suggestion() is None
    assert flat.suggest().reason == "the loss is flat over the whole sweep"


@pytest.mark.parametrize("method", ["valley", "steepest", "minimum", "sma_slope"])
def test_every_method_answers_on_a_clean_curve(method):
    assert 1e-4 < make_result().suggestion(method) < 0.3


def test_plots_mark_a_given_lr_instead_of_the_suggestion():
    result = make_result()
    loss, roc = result.figure(mark=0.02, mark_label="applied LR").axes
    assert marks(loss) == ([0.02], ["loss", "centred loss (the rules read it)", "applied LR 2.00e-02"])
    assert marks(roc)[0] == [0.02] and marks(roc)[1][-1] == "applied LR 2.00e-02"
    default = result.plot()
    assert marks(default)[0] == [pytest.approx(result.suggestion())]


def test_each_marker_names_its_rule_and_a_figure_marks_one_lr():
    result = make_result()
    valley, sma = result.suggestion("valley"), result.suggestion("sma_slope")
    assert valley != pytest.approx(sma)  # two rules, two LRs: a picture must say which it shows
    assert marks(result.plot())[1][-1] == f"valley suggestion {valley:.2e}"
    xs, labels = marks(result.plot_rate_of_change())
    assert xs == [pytest.approx(sma)] and labels[-1] == f"sma_slope suggestion {sma:.2e}"
    loss, roc = result.figure().axes
    assert marks(loss)[0] == marks(roc)[0] == [pytest.approx(valley)]  # one suggestion per picture
    assert marks(loss)[1][-1] == marks(roc)[1][-1] == f"valley suggestion {valley:.2e}"
    steepest = SweepResult(result.lrs, result.losses, result.losses, method="steepest")
    assert marks(steepest.figure().axes[1])[1][-1].startswith("steepest suggestion")


def test_a_figure_without_a_suggestion_marks_nothing():
    fig = SweepResult(np.geomspace(1e-4, 1, 10), np.ones(10), np.ones(10)).figure()
    assert [marks(ax)[0] for ax in fig.axes] == [[], []]


def test_note_reads_the_centred_curve_not_the_lagging_ema():
    lrs = np.geomspace(1e-5, 10, 100)
    losses = 1.1 / (1 + 3000 * lrs) + 0.03 + np.where(lrs > 3, 3.5 * (lrs - 3), 0)  # 0.03, then up to 24.5
    lagging = ema(losses, 0.98)
    rose = SweepResult(lrs, losses, lagging, stop_reason="num_steps", max_lr=10, num_steps=100)
    assert "raise `max_lr`" not in rose.note
    assert rose.note.startswith("ran all 100 steps up to LR 10 without the divergence stop")
    assert "the centred loss rose from 0.03" in rose.note and "the blow-up starts within the sweep" in rose.note
    still_falling = SweepResult(lrs, 1.1 / (1 + 3000 * lrs), lagging, stop_reason="num_steps")
    assert still_falling.note.startswith("no divergence seen up to LR 10 after 100 steps")
    assert "raise `max_lr`" in still_falling.note


def test_repr_is_one_short_line():
    result = make_result(n=500)
    text = repr(result)
    assert "\n" not in text and len(text) < 150
    suggestion = f"{result.suggestion():.3g}"
    assert text == (
        f"SweepResult(steps=500, lr_range=(1e-05, 1), stop_reason='diverged', method='valley', suggestion={suggestion})"
    )
    custom = SweepResult(result.lrs, result.losses, result.losses, method=lambda r: 0.1)
    assert repr(custom).endswith("method='<lambda>')")


def test_save_keeps_the_users_backend_and_leaves_no_figure_open(tmp_path, svg_backend):
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    paths = make_result().save(tmp_path)
    assert matplotlib.get_backend() == "svg"
    assert plt.get_fignums() == open_before
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
