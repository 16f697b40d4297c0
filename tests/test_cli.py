import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from lightning_lrsweep.cli import BuildError, main


def test_demo_writes_a_curve_per_sweep_and_prints_the_table(tmp_path, capsys, svg_backend):
    import matplotlib
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    assert main(["demo", "--out", str(tmp_path), "--epochs", "2"]) == 0
    assert matplotlib.get_backend() == "svg" and plt.get_fignums() == open_before  # the user's pyplot untouched
    out = capsys.readouterr().out
    assert "fit_start" in out and "retune" in out
    for epoch in (0, 1):
        frame = pd.read_csv(tmp_path / f"epoch={epoch}.csv")
        assert len(frame) >= 20
        assert (tmp_path / f"epoch={epoch}.png").stat().st_size > 1000
    assert (tmp_path / "history.png").stat().st_size > 1000


def test_bad_epochs_is_one_clear_line(capsys):
    assert main(["demo", "--epochs", "0"]) == 2
    assert capsys.readouterr().err.strip() == "lrsweep demo: error: --epochs must be >= 1, got 0"


@pytest.mark.parametrize("argv", [[], ["demo"], ["sweep"]])
def test_help_on_every_subcommand(argv, capsys):
    assert main([*argv, "--help"]) == 0
    assert "usage: lrsweep" in capsys.readouterr().out


SPIRALS = ["--model", "lightning_lrsweep.demo:SpiralNet", "--data", "lightning_lrsweep.demo:SpiralData"]


def test_sweep_prints_every_method_and_writes_files(tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text(
        textwrap.dedent(
            """
            model: {class_path: lightning_lrsweep.demo.SpiralNet, init_args: {hidden: 16}}
            data: {n: 256, batch_size: 32}
            trainer: {enable_progress_bar: false}
            sweep: {num_steps: 20, min_lr: 1.0e-5}
            """
        )
    )
    code = main(["sweep", *SPIRALS, "--config", str(config), "--max-lr", "3", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "20 steps from 1e-05 to 3" in out or "stopped by diverged" in out
    for method in ("valley", "steepest", "minimum", "sma_slope"):
        assert method in out
    assert "* valley" in out
    assert len(pd.read_csv(tmp_path / "out" / "lr_sweep.csv")) <= 20
    assert (tmp_path / "out" / "lr_sweep.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "nosuchpkg.mod:Net"], "cannot import 'nosuchpkg.mod': ModuleNotFoundError"),
        (["--model", "lightning_lrsweep.demo:Nope"], "module 'lightning_lrsweep.demo' has no attribute 'Nope'"),
        (["--model", "SpiralNet"], "--model must look like PKG.MODULE:Class, got 'SpiralNet'"),
        (["--model", "lightning_lrsweep.demo:spirals"], "is not a LightningModule class"),
        ([*SPIRALS, "--num-steps", "2"], "`num_steps` must be an int >= 5, got 2"),
        ([*SPIRALS, "--suggestion", "best"], "`suggestion` must be one of"),
        ([*SPIRALS, "--config", "/nonexistent.yaml"], "--config /nonexistent.yaml: cannot read it"),
        (["--model", "x:y", "--num-steps", "ten"], "argument --num-steps: invalid int value: 'ten'"),
        (["--mode", "log"], "argument --mode: invalid choice"),
    ],
)
def test_sweep_bad_arguments_are_one_line(argv, message, capsys):
    assert main(["sweep", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_sweep_bad_config_section_and_model_arguments(tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text("optimizer: {lr: 1}\n")
    assert main(["sweep", *SPIRALS, "--config", str(config)]) == 2
    assert "unknown section(s) ['optimizer']" in capsys.readouterr().err
    config.write_text("model: {width: 3}\n")
    assert main(["sweep", *SPIRALS, "--config", str(config)]) == 2
    assert "--model: cannot build SpiralNet" in capsys.readouterr().err


def test_sweep_error_while_sweeping_is_one_line(tmp_path, capsys):
    # SpiralNet without --data has no train_dataloader
    assert main(["sweep", "--model", "lightning_lrsweep.demo:SpiralNet", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lrsweep sweep: error: ") and "(rerun with --traceback)" in err
    assert len(err.splitlines()) == 1


def test_python_dash_m_runs_the_cli():
    done = subprocess.run(
        [sys.executable, "-m", "lightning_lrsweep", "sweep", "--model", "nosuch:Net"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("lrsweep sweep: error: --model nosuch:Net: cannot import")


@pytest.mark.parametrize("command", [["demo", "--epochs", "1"], ["sweep", *SPIRALS]], ids=["demo", "sweep"])
def test_unwritable_out_is_one_line_before_any_training(tmp_path, capsys, command):
    (tmp_path / "taken").write_text("a file, not a folder")
    out = tmp_path / "taken" / "curves"
    assert main([*command, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith(f"lrsweep {command[0]}: error: --out {out}: cannot write there: ") and "\n" not in err
    assert captured.out == ""  # failed before the fit, not after it


BROKEN = """
import lightning.pytorch as pl
from lightning_lrsweep.demo import SpiralNet

class Net(SpiralNet):
    def __init__(self, hidden=64):
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        super().__init__(hidden=hidden)

class Data(pl.LightningDataModule):
    def __init__(self, root="/no/such/dataset"):
        super().__init__()
        raise FileNotFoundError(f"no dataset at {root}")
"""


@pytest.mark.parametrize(
    ("argv", "config", "message"),
    [
        (
            ["--model", "lrsweep_broken:Net", "--data", "lightning_lrsweep.demo:SpiralData"],
            "model: {hidden: 0}",
            "--model: building Net from {'hidden': 0} raised ValueError: hidden must be >= 1, got 0",
        ),
        (
            ["--model", "lrsweep_broken:Net", "--data", "lrsweep_broken:Data"],
            "",
            "--data: building Data from {} raised FileNotFoundError: no dataset at /no/such/dataset",
        ),
        (  # a TypeError raised inside the constructor is its failure, not a bad config
            ["--model", "lrsweep_broken:Net", "--data", "lightning_lrsweep.demo:SpiralData"],
            "model: {hidden: wide}",
            "--model: building Net from {'hidden': 'wide'} raised TypeError: '<' not supported",
        ),
    ],
    ids=["model", "data", "type_error_inside"],
)
def test_sweep_constructor_errors_are_one_line(tmp_path, capsys, monkeypatch, argv, config, message):
    (tmp_path / "lrsweep_broken.py").write_text(BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "cfg.yaml").write_text(config)
    command = ["sweep", *argv, "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "out")]
    assert main(command) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"lrsweep sweep: error: {message}") and err.rstrip().endswith("(rerun with --traceback)")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written for a run that never swept
    with pytest.raises(BuildError) as raised:  # --traceback: the constructor's own error, chained
        main([*command, "--traceback"])
    assert isinstance(raised.value.__cause__, (ValueError, FileNotFoundError, TypeError))
