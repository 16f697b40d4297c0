"""Every example runs, on a tiny budget (LRSWEEP_SMOKE=1), in this process (fsdp2.py: in test_ddp.py, 2 processes)."""

import runpy
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest
import yaml

from lightning_lrsweep import LRSweep

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def smoke(monkeypatch, tmp_path):
    monkeypatch.setenv("LRSWEEP_SMOKE", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["example"])


def run_example(name, monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", [name, *args])
    return runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def test_quickstart(monkeypatch, capsys):
    run_example("quickstart.py", monkeypatch)
    assert "suggested LR" in capsys.readouterr().out


def test_periodic_retuning(monkeypatch, tmp_path):
    run_example("periodic_retuning.py", monkeypatch, str(tmp_path / "out"))
    assert (tmp_path / "out" / "history.png").stat().st_size > 1000
    metrics = pd.read_csv(tmp_path / "out" / "logs" / "version_0" / "metrics.csv")
    assert metrics["lr_sweep/applied_lr"].notna().sum() == 2


def test_tuner_only(monkeypatch, tmp_path, capsys):
    run_example("tuner_only.py", monkeypatch, str(tmp_path))
    assert "valley" in capsys.readouterr().out
    assert (tmp_path / "tuner.png").exists()


TINY = ["--trainer.max_epochs=1", "--data.n=128", "--trainer.enable_progress_bar=false"]


def cli_main():
    return runpy.run_path(str(EXAMPLES / "cli.py"), run_name="example_cli")["main"]


def test_lightning_cli_config_runs(tmp_path):
    config = EXAMPLES / "cli_config.yaml"
    cli = cli_main()(["fit", f"--config={config}", "--trainer.callbacks.num_steps=20", *TINY])
    (sweep,) = [c for c in cli.trainer.callbacks if isinstance(c, LRSweep)]
    assert sweep.settings.every_n_epochs == 2 and sweep.config.num_steps == 20 and len(sweep.history) == 1
    log_dir = tmp_path / "lrsweep_out" / "cli" / "version_0"
    assert yaml.safe_load((log_dir / "hparams.yaml").read_text())["lr"] == pytest.approx(cli.model.hparams.lr)
    assert (log_dir / "lr_sweep" / "epoch=0.csv").exists()


def test_lightning_cli_flags_only():
    args = ["fit", "--trainer.callbacks+=lightning_lrsweep.LRSweep", "--trainer.callbacks.num_steps=20"]
    args += ["--trainer.callbacks.suggestion=steepest", "--trainer.logger=false", *TINY]
    cli = cli_main()(args)
    (sweep,) = [c for c in cli.trainer.callbacks if isinstance(c, LRSweep)]
    assert sweep.config.suggestion == "steepest" and sweep.config.num_steps == 20
    assert cli.model.hparams.lr == sweep.history[0].applied_lr


def test_lightning_cli_sweep_subcommand_on_the_example_config(tmp_path, capsys):
    args = ["sweep", f"--config={EXAMPLES / 'cli_config.yaml'}", "--sweep.num_steps=20", "--data.n=256"]
    cli = cli_main()([*args, "--trainer.logger=false", f"--out={tmp_path}"])
    assert cli.result is not None and len(cli.result.lrs) <= 20
    assert "* valley" in capsys.readouterr().out and (tmp_path / "lr_sweep.png").exists()
