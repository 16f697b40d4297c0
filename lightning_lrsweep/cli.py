"""The ``lrsweep`` command line: ``lrsweep demo`` and ``lrsweep sweep --model PKG.MODULE:Class``.

Bad arguments, import errors, an unwritable ``--out`` and errors raised while building the model or data or
while sweeping print one line on stderr and exit non-zero (``--traceback`` shows the full traceback of the last
two).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

EXIT_USAGE = 2
EXIT_FAILED = 1
SWEEP_OPTIONS = ("min_lr", "max_lr", "num_steps", "mode", "early_stop_threshold", "smoothing", "suggestion")
CONFIG_SECTIONS = ("model", "data", "trainer", "sweep")


class UsageError(Exception):
    """A bad argument or config: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lrsweep", description="LR range tests for PyTorch Lightning.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo = commands.add_parser(
        "demo",
        help="fit a small model on a built-in dataset, re-tuning the LR every epoch",
        description="Fit a small MLP on built-in 2-D spirals with LRSweep(every_n_epochs=1); print every sweep and "
        "write each loss curve as CSV and PNG, and the history plot.",
    )
    demo.add_argument("--out", default="lrsweep_out", help="folder for the curves (default: %(default)s)")
    demo.add_argument("--epochs", type=int, default=5, help="epochs to train (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")

    sweep = commands.add_parser(
        "sweep",
        help="run one LR range test on your own LightningModule and print every method's suggestion",
        description="Build your LightningModule (and LightningDataModule), run one LR sweep without training, print "
        "the suggestion of every method as a table, and write the curve as CSV and PNG to --out. "
        "Options given as flags override the config file.",
        epilog="The --config YAML may hold the sections `model` and `data` (constructor arguments, or "
        "{class_path, init_args} as LightningCLI writes them), `trainer` (Trainer arguments) and `sweep` "
        "(the sweep options below, with underscores).",
    )
    sweep.add_argument("--model", required=True, metavar="PKG.MODULE:Class", help="the LightningModule class")
    sweep.add_argument("--data", metavar="PKG.MODULE:Class", help="a LightningDataModule class (default: the model's)")
    sweep.add_argument("--config", type=Path, metavar="cfg.yaml", help="YAML with model/data/trainer/sweep sections")
    sweep.add_argument("--out", type=Path, default=Path("lrsweep_out"), help="folder for CSV and PNG (%(default)s)")
    sweep.add_argument("--min-lr", type=float, help="first LR (default 1e-7)")
    sweep.add_argument("--max-lr", type=float, help="last LR (default 10)")
    sweep.add_argument("--num-steps", type=int, help="optimizer steps at most (default 100)")
    sweep.add_argument("--mode", choices=("exponential", "linear"), help="LR increase (default exponential)")
    sweep.add_argument("--early-stop-threshold", type=float, help="stop at threshold x best smoothed loss (default 4)")
    sweep.add_argument("--smoothing", type=float, help="EMA factor of the loss (default 0.98)")
    sweep.add_argument("--suggestion", help="the method marked in the plot (default valley)")
    sweep.add_argument("--accelerator", default="auto", help="Trainer accelerator (default: %(default)s)")
    sweep.add_argument("--devices", default="1", help="Trainer devices (default: %(default)s)")
    sweep.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    sweep.add_argument("--traceback", action="store_true", help="show the full traceback of an error while sweeping")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return int(exc.code or 0)
    prog = f"lrsweep {args.command}"
    try:
        if args.command == "demo":
            return _demo(args)
        return _sweep(args)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _demo(args: argparse.Namespace) -> int:
    if args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    from lightning_lrsweep.demo import run_demo

    run_demo(out=_writable(Path(args.out)), epochs=args.epochs, seed=args.seed, quiet=True)
    return 0


def _writable(out: Path) -> Path:
    """``--out``, created and checked writable before any training, so a bad path fails at once and in one line."""
    from lightning_lrsweep.result import writable_dir

    try:
        return writable_dir(out)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there: {exc.strerror or exc}") from exc


# -- lrsweep sweep ---------------------------------------------------------------------------------


def import_object(spec: str, flag: str) -> Any:
    """Import ``PKG.MODULE:Name`` (or ``PKG.MODULE.Name``).

    Raises:
        UsageError: malformed, or the module or the name cannot be imported.
    """
    module_name, sep, name = spec.partition(":")
    if not sep:
        module_name, _, name = spec.rpartition(".")
    if not module_name or not name:
        raise UsageError(f"{flag} must look like PKG.MODULE:Class, got {spec!r}")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules in the current folder import
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or an error raised while importing the user's module
        raise UsageError(f"{flag} {spec}: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    try:
        return getattr(module, name)
    except AttributeError:
        raise UsageError(f"{flag} {spec}: module {module_name!r} has no attribute {name!r}") from None


def load_config(path: Path | None) -> dict[str, dict[str, Any]]:
    """Read the ``--config`` YAML into its sections (missing ones empty).

    Raises:
        UsageError: unreadable file, invalid YAML, an unknown section or a section that is not a mapping.
    """
    if path is None:
        return {section: {} for section in CONFIG_SECTIONS}
    import yaml

    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"--config {path}: cannot read it: {detail}") from exc
    if not isinstance(raw, dict):
        raise UsageError(f"--config {path}: expected a mapping with sections {list(CONFIG_SECTIONS)}")
    unknown = sorted(set(raw) - set(CONFIG_SECTIONS))
    if unknown:
        raise UsageError(f"--config {path}: unknown section(s) {unknown}; allowed: {list(CONFIG_SECTIONS)}")
    config: dict[str, dict[str, Any]] = {}
    for section in CONFIG_SECTIONS:
        value = raw.get(section) or {}
        if not isinstance(value, dict):
            raise UsageError(f"--config {path}: section {section!r} must be a mapping, got {value!r}")
        if "init_args" in value or "class_path" in value:
            value = value.get("init_args") or {}
        config[section] = dict(value)
    return config


class BuildError(Exception):
    """The user's model or datamodule constructor raised: reported as one line, exit status 1."""


def _build(cls: Any, kwargs: dict[str, Any], flag: str) -> Any:
    """``cls(**kwargs)``, telling a bad config from a failing constructor.

    Arguments that do not fit the signature are a bad config (UsageError); anything the constructor itself
    raises, a TypeError included, is its own failure (BuildError).
    """
    name = getattr(cls, "__name__", cls)
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise UsageError(f"{flag}: cannot build {name} from {kwargs}: {exc}") from exc
    except ValueError:  # no signature to check against: let the call decide
        pass
    try:
        return cls(**kwargs)
    except Exception as exc:
        raise BuildError(f"{flag}: building {name} from {kwargs} raised {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message``."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _sweep(args: argparse.Namespace) -> int:
    import lightning.pytorch as pl

    from lightning_lrsweep.config import SweepConfig

    config = load_config(args.config)
    model_cls = import_object(args.model, "--model")
    if not (isinstance(model_cls, type) and issubclass(model_cls, pl.LightningModule)):
        raise UsageError(f"--model {args.model}: {model_cls!r} is not a LightningModule class")
    data_cls = import_object(args.data, "--data") if args.data else None
    if data_cls is not None and not (isinstance(data_cls, type) and issubclass(data_cls, pl.LightningDataModule)):
        raise UsageError(f"--data {args.data}: {data_cls!r} is not a LightningDataModule class")
    options = dict(config["sweep"])
    options.update({k: v for k, v in vars(args).items() if k in SWEEP_OPTIONS and v is not None})
    unknown = sorted(set(options) - set(SWEEP_OPTIONS))
    if unknown:
        raise UsageError(f"unknown sweep option(s) {unknown} in --config; allowed: {list(SWEEP_OPTIONS)}")
    try:
        sweep_config = SweepConfig(**options)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc

    trainer_args: dict[str, Any] = dict(
        max_epochs=1,
        accelerator=args.accelerator,
        devices=int(args.devices) if args.devices.isdigit() else args.devices,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer_args.update(config["trainer"])
    try:
        from lightning_lrsweep.tuner import LRSweepTuner

        pl.seed_everything(args.seed, verbose=False)
        model = _build(model_cls, config["model"], "--model")
        datamodule = _build(data_cls, config["data"], "--data") if data_cls is not None else None
        out = _writable(args.out)  # after building (a failed build leaves no folder), before the sweep
        with _quiet(not args.traceback):
            trainer = pl.Trainer(**trainer_args)
            result = LRSweepTuner(trainer).sweep(model, datamodule=datamodule, **vars(sweep_config))
    except UsageError:
        raise
    except Exception as exc:
        if args.traceback:
            raise
        detail = str(exc) if isinstance(exc, BuildError) else _one_line(exc)
        print(f"lrsweep sweep: error: {detail} (rerun with --traceback)", file=sys.stderr)
        return EXIT_FAILED
    print(suggestion_table(result))
    paths = result.save(out, stem="lr_sweep")
    print(f"curve: {paths['csv']}  plot: {paths['png']}")
    return 0


@contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Hide Lightning's info lines and warnings, so the table (or the one error line) stands alone."""
    if not enabled:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def suggestion_table(result: Any) -> str:
    """Every method's suggestion as a text table, the sweep's own method marked with ``*``."""
    from lightning_lrsweep.suggest import METHODS

    lines = [
        f"LR sweep: {len(result.lrs)} steps from {result.min_lr:.3g} to {result.max_lr:.3g}, "
        f"stopped by {result.stop_reason}",
        f"  {'method':<10}  {'suggested LR':>12}  note",
    ]
    for method in sorted(METHODS):
        outcome = result.suggest(method)
        shown = f"{outcome.lr:.3g}" if outcome.lr is not None else "none"
        mark = "*" if method == result.method else " "
        lines.append(f"{mark} {method:<10}  {shown:>12}  {outcome.reason if outcome.lr is None else ''}".rstrip())
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
