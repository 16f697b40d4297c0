import contextlib
import io
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from lightning.pytorch.cli import LightningCLI
from lightning_utilities.core.imports import RequirementCache
from models import case_id

from lightning_lrsweep import LRSweep
from lightning_lrsweep import cli as lrsweep_cli
from lightning_lrsweep.cli import BuildError, LRSweepCLI, main
from lightning_lrsweep.config import SweepConfig, settings_of


def test_demo_runs_for_the_epochs_given_into_the_folder_given(tmp_path, capsys, svg_backend):
    # what the demo prints and writes, epoch by epoch: test_demo.py
    assert main(["demo", "--out", str(tmp_path), "--epochs", "1"]) == 0
    assert "epoch 0  fit_start sweep" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "epoch=0.csv")) >= 20 and (tmp_path / "history.png").exists()
    assert not (tmp_path / "epoch=1.csv").exists()


def test_bad_epochs_is_one_clear_line(capsys):
    assert main(["demo", "--epochs", "0"]) == 2
    assert capsys.readouterr().err.strip() == "lrsweep demo: error: --epochs must be >= 1, got 0"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [([], "demo"), (["demo"], "--epochs"), (["sweep"], "--sweep.min_lr")],
    ids=["lrsweep", "demo", "sweep"],
)
def test_help_on_every_subcommand(argv, expected, capsys):
    assert main([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: lrsweep" in out and expected in out


def test_sweep_help_lists_every_sweep_setting_with_its_meaning(capsys):
    assert main(["sweep", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for f in settings_of(SweepConfig):
        assert f"--sweep.{f.name} " in out
        assert " ".join(f.metadata["meaning"].split())[:30] in out  # the meaning declared with the setting
    assert "min_stop_lr" not in out  # set by re-tunes, not by users


# -- a plain LightningCLI project: a module without configure_optimizers, its config written by `fit --print_config`

USER_MODULE = """
import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def blobs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    return TensorDataset(torch.randn(n, 2, generator=g) * 0.5 + nn.functional.one_hot(y, 3)[:, :2] * 2, y)


class Net(pl.LightningModule):
    def __init__(self, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)


class Data(pl.LightningDataModule):
    def __init__(self, n: int = 256, batch_size: int = 32):
        super().__init__()
        self.n, self.batch_size = n, batch_size

    def train_dataloader(self):
        return DataLoader(blobs(self.n), batch_size=self.batch_size, shuffle=True)


class NetWithData(Net):
    def train_dataloader(self):
        return DataLoader(blobs(128), batch_size=32)


class PickyNet(Net):
    def __init__(self, hidden: int = 16):
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        super().__init__(hidden)


class MissingData(Data):
    def __init__(self, root: str = "/no/such/dataset"):
        super().__init__()
        raise FileNotFoundError(f"no dataset at {root}")


class FailingNet(NetWithData):
    def training_step(self, batch, batch_idx):
        raise RuntimeError("the loss went missing")
"""

MAIN_PY = """
from lightning_lrsweep.cli import LRSweepCLI
from lrsweep_user import Data, Net

if __name__ == "__main__":
    LRSweepCLI(Net, Data)  # was: LightningCLI(Net, Data)
"""

FIT_ARGS = [
    "--seed_everything=0",
    "--optimizer=AdamW",
    "--optimizer.lr=0.01",
    "--lr_scheduler=CosineAnnealingLR",
    "--lr_scheduler.T_max=10",
    "--trainer.max_epochs=3",
    "--trainer.enable_progress_bar=false",
    "--trainer.callbacks+=LearningRateMonitor",
]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A user's folder: the module, a main.py, and the configs `fit --print_config` writes (subclass mode and not)."""
    root = tmp_path_factory.mktemp("project")
    (root / "lrsweep_user.py").write_text(USER_MODULE)
    (root / "main.py").write_text(MAIN_PY)
    sys.path.insert(0, str(root))
    from lrsweep_user import Data, Net

    logger = ["--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={root / 'logs'}"]
    for name, cli_args, fit_args in [
        ("subclass", {}, ["--model=lrsweep_user.Net", "--data=lrsweep_user.Data"]),
        ("fixed", {"model_class": Net, "datamodule_class": Data}, []),
    ]:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), pytest.raises(SystemExit):
            LightningCLI(**cli_args, args=["fit", *fit_args, *FIT_ARGS, *logger, "--print_config"])
        (root / f"{name}.yaml").write_text(printed.getvalue())
    yield root
    sys.path.remove(str(root))


def test_the_configs_are_what_fit_writes(project):
    config = yaml.safe_load((project / "subclass.yaml").read_text())
    assert config["model"]["class_path"] == "lrsweep_user.Net" and "ckpt_path" in config
    assert config["optimizer"]["class_path"] == "torch.optim.AdamW"
    assert config["lr_scheduler"]["class_path"] == "torch.optim.lr_scheduler.CosineAnnealingLR"
    assert yaml.safe_load((project / "fixed.yaml").read_text())["model"] == {"hidden": 16}


@pytest.mark.parametrize(
    "shortcuts", [[], ["--model", "lrsweep_user:Net", "--data", "lrsweep_user:Data"]], ids=["subclass", "fixed"]
)
def test_sweep_takes_the_fit_config_unchanged(project, tmp_path, capsys, shortcuts):
    config = project / ("fixed.yaml" if shortcuts else "subclass.yaml")
    (tmp_path / "sweep.yaml").write_text("sweep: {num_steps: 20, min_lr: 1.0e-5}\n")
    argv = ["sweep", "--config", str(config), *shortcuts, "--config", str(tmp_path / "sweep.yaml")]
    assert main([*argv, "--sweep.max_lr=3", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert " steps from 1e-05 to 3, stopped by " in out  # the sweep section and the flag were both applied
    for method in ("valley", "steepest", "minimum", "sma_slope"):
        assert method in out
    assert "* valley" in out
    assert 5 <= len(pd.read_csv(tmp_path / "out" / "lr_sweep.csv")) <= 20
    assert (tmp_path / "out" / "lr_sweep.png").stat().st_size > 1000
    assert not (project / "logs").exists()  # the config's logger was built, but a sweep logs nothing


def test_sweep_equals_the_fit_start_sweep_of_a_fit_with_lrsweep_in_yaml(project, tmp_path):
    callback = {"class_path": "lightning_lrsweep.LRSweep", "init_args": {"num_steps": 30, "update_attr": False}}
    (tmp_path / "callback.yaml").write_text(yaml.safe_dump({"trainer": {"callbacks": [callback], "logger": False}}))
    config = ["--config", str(project / "subclass.yaml"), "--config", str(tmp_path / "callback.yaml")]
    swept = LRSweepCLI(args=["sweep", *config, "--sweep.num_steps=30", f"--out={tmp_path / 'out'}"])

    # the sweep drives the optimizer's LR itself: the cosine schedule does not bend the curve
    result = swept.result
    steps = np.diff(np.log(result.lrs))
    assert result.lrs[0] == pytest.approx(1e-7) and np.allclose(steps, steps[0])
    # ... and leaves the optimizer and scheduler that the config built as they were
    optimizers, schedulers = swept.model.configure_optimizers()
    assert isinstance(optimizers[0], torch.optim.AdamW) and optimizers[0].param_groups[0]["lr"] == 0.01
    assert schedulers[0].base_lrs == [0.01]
    assert any(isinstance(c, LRSweep) for c in swept.trainer.callbacks)  # set aside for the sweep only

    # `fit` on the same config sweeps the same curve at fit start, and scales the scheduler to the suggestion
    fit_args = [
        "--trainer.max_epochs=1",
        "--trainer.enable_checkpointing=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    fit = LRSweepCLI(args=["fit", *config, *fit_args])
    (sweep,) = [c for c in fit.trainer.callbacks if isinstance(c, LRSweep)]
    np.testing.assert_array_equal(sweep.history[0].result.losses, result.losses)
    assert sweep.history[0].applied_lr == pytest.approx(result.suggestion())
    scheduler = fit.trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert scheduler.base_lrs == [pytest.approx(result.suggestion())]


def test_a_sweep_reads_the_default_config_files_of_fit(project, tmp_path, monkeypatch):
    from lrsweep_user import Data, Net

    monkeypatch.chdir(tmp_path)
    (tmp_path / "defaults.yaml").write_text("model: {hidden: 5}\ndata: {n: 64}\n")
    fit_defaults = {"fit": {"default_config_files": [str(tmp_path / "defaults.yaml")]}}  # LightningCLI's own pattern
    args = ["sweep", "--optimizer=SGD", "--sweep.num_steps=5", "--trainer.logger=false", "--out=out"]
    cli = LRSweepCLI(Net, Data, args=args, parser_kwargs=fit_defaults)
    assert cli.model.net[0].out_features == 5 and cli.datamodule.n == 64
    assert cli.result is not None and (tmp_path / "out" / "lr_sweep.csv").exists()


def test_main_py_gets_a_sweep_subcommand(project, tmp_path):
    command = [sys.executable, "main.py", "sweep", "--config", "fixed.yaml", "--sweep.num_steps=20"]
    done = subprocess.run([*command, f"--out={tmp_path}"], cwd=project, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "* valley" in done.stdout and (tmp_path / "lr_sweep.csv").exists()


def test_print_config_shows_the_sweep_section(project, capsys):
    assert main(["sweep", "--config", str(project / "subclass.yaml"), "--sweep.num_steps=50", "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["sweep"]["num_steps"] == 50 and printed["optimizer"]["class_path"] == "torch.optim.AdamW"


BAD_SWEEP_ARGUMENTS = [
    (["--model", "nosuchpkg.mod:Net"], "--model nosuchpkg.mod:Net: cannot import 'nosuchpkg.mod': ModuleNotFound"),
    (["--model", "lightning_lrsweep.demo:Nope"], "module 'lightning_lrsweep.demo' has no attribute 'Nope'"),
    (["--model", "lrsweep_user:Data"], "--model lrsweep_user:Data: <class 'lrsweep_user.Data'> is not a Lightn"),
    (["--data", "lrsweep_user:Net"], "is not a LightningDataModule class"),
    ([], "no model: pass --model PKG.MODULE:Class, or a --config whose `model:` section has a class_path"),
    (["--config", "fixed.yaml"], "the `model` section names no class: pass --model PKG.MODULE:Class"),
    (["--config", "subclass.yaml", "--sweep.num_steps=2"], "sweep: `num_steps` must be an int >= 5, got 2."),
    (["--config", "subclass.yaml", "--sweep.num_steps=ten"], "key \"sweep.num_steps\": Expected a <class 'int'>"),
    (["--config", "subclass.yaml", "--sweep.mode=log"], "sweep: `mode` must be one of ('exponential', 'linear')"),
    (["--config", "subclass.yaml", "--sweep.suggestion=best"], "sweep: `suggestion` must be one of"),
    (["--config", "subclass.yaml", "--sweep.max_lr=1e-9"], "`max_lr` must be greater than `min_lr`"),
    (["--config", "subclass.yaml", "--model.width=3"], "class_path 'lrsweep_user.Net': Option 'width' is not"),
    (["--config", "subclass.yaml", "--ckpt_path=last.ckpt"], "ckpt_path 'last.ckpt': a sweep starts from the"),
    (["--config", "subclass.yaml", "--min-lr=1e-5"], "unrecognized arguments: --min-lr=1e-5"),
    (["--config", "subclass.yaml", "--sweep.min_stop_lr=1e-3"], "unrecognized arguments: --sweep.min_stop_lr"),
    (["--config", "subclass.yaml", "--sweep.val_batches=-1"], "sweep: `val_batches` must be an int >= 0"),
    (["--config", "/nonexistent.yaml"], "File does not exist: '/nonexistent.yaml'"),
]


@pytest.mark.parametrize(
    ("argv", "message"), BAD_SWEEP_ARGUMENTS, ids=[case_id(argv) for argv, _ in BAD_SWEEP_ARGUMENTS]
)
def test_sweep_bad_arguments_and_configs_are_one_line(project, monkeypatch, argv, message, capsys):
    monkeypatch.chdir(project)
    assert main(["sweep", *argv, "--out", "never"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lrsweep sweep: error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (project / "never").exists()


def test_a_module_without_its_own_data_is_told_to_pass_data(project, tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["sweep", "--model", "lrsweep_user:Net", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "lrsweep sweep: error: Net has no train_dataloader of its own: pass --data PKG.MODULE:DataModule "
        "(or a `data:` section in --config)"
    )
    assert not out.exists()  # no empty folder left behind
    assert main(["sweep", "--model", "lrsweep_user:NetWithData", "--out", str(out)]) == 2
    assert "NetWithData has no configure_optimizers: pass --optimizer" in capsys.readouterr().err
    assert not out.exists()
    argv = ["sweep", "--model", "lrsweep_user:NetWithData", "--optimizer=SGD", "--sweep.num_steps=10"]
    assert main([*argv, "--out", str(out)]) == 0
    assert (out / "lr_sweep.csv").exists()


@pytest.mark.parametrize(
    ("argv", "message", "cause"),
    [
        (
            ["--model", "lrsweep_user:PickyNet", "--model.hidden", "0"],
            "ValueError: hidden must be >= 1, got 0 (in lrsweep_u",
            ValueError,
        ),
        (
            ["--model", "lrsweep_user:Net", "--data", "lrsweep_user:MissingData"],
            "FileNotFoundError: no dataset at /no",
            FileNotFoundError,
        ),
        (
            ["--model", "lrsweep_user:Net", "--data", "lrsweep_user:Data", "--optimizer=SGD", "--optimizer.lr=-1"],
            "Inv",
            ValueError,
        ),
    ],
    ids=["model", "data", "optimizer"],
)
def test_sweep_constructor_errors_are_one_line(project, tmp_path, capsys, argv, message, cause):
    command = ["sweep", *argv, "--out", str(tmp_path / "out")]
    assert main(command) == 1
    err = capsys.readouterr().err
    assert err.startswith("lrsweep sweep: error: building the classes from the config raised ")
    assert message in err and err.rstrip().endswith("(rerun with --traceback)")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written for a run that never swept
    with pytest.raises(BuildError) as raised:  # --traceback: the constructor's own error, chained
        main([*command, "--traceback"])
    assert type(raised.value.__cause__) is cause


def test_an_error_while_sweeping_is_one_line_and_leaves_no_folder(project, tmp_path, capsys):
    out = tmp_path / "new" / "out"
    assert main(["sweep", "--model", "lrsweep_user:FailingNet", "--optimizer=SGD", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lrsweep sweep: error: ") and "RuntimeError: the loss went missing" in err
    assert err.endswith("(rerun with --traceback)") and len(err.splitlines()) == 1
    assert not (tmp_path / "new").exists()


def test_a_missing_jsonargparse_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setattr(lrsweep_cli, "JSONARGPARSE", RequirementCache("jsonargparse[signatures]>=999"))
    assert main(["sweep", "--model", "lightning_lrsweep.demo:SpiralNet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "pip install -U 'jsonargparse[signatures]>=999'" in err and len(err.splitlines()) == 1


def test_python_dash_m_runs_the_cli():
    done = subprocess.run(
        [sys.executable, "-m", "lightning_lrsweep", "sweep", "--model", "nosuch:Net"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("lrsweep sweep: error: --model nosuch:Net: cannot import")


SPIRALS = ["--model", "lightning_lrsweep.demo:SpiralNet", "--data", "lightning_lrsweep.demo:SpiralData"]


@pytest.mark.parametrize("command", [["demo", "--epochs", "1"], ["sweep", *SPIRALS]], ids=["demo", "sweep"])
def test_unwritable_out_is_one_line_before_any_training(tmp_path, capsys, command):
    (tmp_path / "taken").write_text("a file, not a folder")
    out = tmp_path / "taken" / "curves"
    assert main([*command, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith(f"lrsweep {command[0]}: error: --out {out}: cannot write there: ") and "\n" not in err
    assert captured.out == ""  # failed before the fit or sweep, not after it


def test_class_shortcuts_go_first_as_class_paths():
    argv = ["--config", "cfg.yaml", "--model", "lightning_lrsweep.demo:SpiralNet", "--model.hidden", "3"]
    argv += ["--data=lightning_lrsweep.demo.SpiralData", "--trainer.max_epochs=2"]
    assert lrsweep_cli.class_shortcuts(argv) == [
        "--model=lightning_lrsweep.demo.SpiralNet",
        "--data=lightning_lrsweep.demo.SpiralData",
        *["--config", "cfg.yaml", "--model.hidden", "3", "--trainer.max_epochs=2"],
    ]
    as_given = ["--model", '{"class_path": "lightning_lrsweep.demo.SpiralNet"}', "--data"]  # LightningCLI's forms
    assert lrsweep_cli.class_shortcuts(as_given) == as_given
