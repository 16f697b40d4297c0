"""The demo shows its work: each sweep is printed (and its curve saved) as it ends, between the epochs."""

import logging
import re
import warnings

import pandas as pd
import pytest
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from models import Classifier, loader, trainer

from lightning_lrsweep import LRSweep
from lightning_lrsweep.demo import ShowSweeps, SpiralNet, run_demo, sweep_line


def test_each_sweep_is_printed_and_saved_as_it_ends(tmp_path, capsys, svg_backend):
    import matplotlib
    import matplotlib.pyplot as plt

    level, open_before = logging.getLogger("lightning.pytorch").level, plt.get_fignums()
    sweep = run_demo(out=tmp_path, epochs=2, n=256, quiet=True)
    assert logging.getLogger("lightning.pytorch").level == level  # quiet while it trains, not for the caller after
    assert matplotlib.get_backend() == "svg" and plt.get_fignums() == open_before  # the user's pyplot untouched
    lines = [line.strip() for line in re.split(r"[\r\n]", capsys.readouterr().out) if line.strip()]
    events = [line for line in lines if re.match(r"epoch \d+ ", line)]
    assert [e.split(":")[0] for e in events] == [
        "epoch 0  fit_start sweep",
        "epoch 0  trained",
        "epoch 1  retune    sweep",
        "epoch 1  trained",
    ]  # interleaved with training: printed as they happen, not in a table at the end
    first, retune = sweep.history
    assert f"{len(first.result.lrs)} steps, stopped by {first.result.stop_reason}" in events[0]
    assert f"suggested {first.suggested_lr:.3g}, LR 0.001 -> {first.applied_lr:.3g}" in events[0]
    assert events[2].endswith(f"({retune.reason})")
    assert lines[0].startswith("Fitting a small MLP on 256 2-D spirals for 2 epochs")  # said before any training
    for epoch in (0, 1):
        assert len(pd.read_csv(tmp_path / f"epoch={epoch}.csv")) == len(sweep.history[epoch].result.lrs)
        assert (tmp_path / f"epoch={epoch}.png").stat().st_size > 1000
    assert (tmp_path / "history.png").stat().st_size > 1000


@pytest.mark.parametrize("bar", [TQDMProgressBar, RichProgressBar])
def test_every_sweep_is_printed_with_either_progress_bar(tmp_path, capsys, svg_backend, bar):
    # `scripts/demo` installs no `rich`, so Lightning draws tqdm bars; this suite has `rich` (Lightning's default then)
    sweep = LRSweep(every_n_epochs=1, num_steps=10, retune_num_steps=10)
    callbacks = [sweep, ShowSweeps(sweep, tmp_path), bar()]
    trainer(max_epochs=2, callbacks=callbacks, enable_progress_bar=True).fit(Classifier(), loader(n=64))
    out = capsys.readouterr().out
    assert sweep_line(sweep.history[0]) in out  # the fit-start sweep ends before any bar of the trainer is open
    assert sweep_line(sweep.history[1]) in out


def test_a_warning_is_printed_as_one_line_among_the_demos(tmp_path, capsys, svg_backend, monkeypatch):
    def warn_at_epoch_end(module):
        warnings.warn(f"odd thing at epoch {module.current_epoch}", UserWarning, stacklevel=1)

    monkeypatch.setattr(SpiralNet, "on_train_epoch_end", warn_at_epoch_end, raising=False)
    run_demo(out=tmp_path, epochs=2, quiet=True, n=256)
    lines = capsys.readouterr().out.splitlines()
    warned = [line for line in lines if "odd thing" in line]
    assert warned == ["warning: odd thing at epoch 0", "warning: odd thing at epoch 1"]
