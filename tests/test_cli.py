import pandas as pd

from lightning_lrsweep.cli import main


def test_demo_writes_a_curve_per_sweep_and_prints_the_table(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "fit_start" in out and "retune" in out
    for epoch in (0, 1):
        frame = pd.read_csv(tmp_path / f"epoch={epoch}.csv")
        assert len(frame) >= 20
        assert (tmp_path / f"epoch={epoch}.png").stat().st_size > 1000


def test_bad_epochs_is_one_clear_line(capsys):
    assert main(["demo", "--epochs", "0"]) == 2
    assert "--epochs must be >= 1, got 0" in capsys.readouterr().err
