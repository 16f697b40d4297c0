"""The ``lrsweep`` command line (``lrsweep demo``, ``lrsweep sweep``) and :class:`LRSweepCLI`.

``lrsweep sweep`` is :class:`LRSweepCLI`: a ``LightningCLI`` that builds the model, datamodule, trainer, optimizer
and LR scheduler from the same arguments and config as ``fit``, then runs one sweep instead of training. Bad
arguments and configs print one line on stderr and exit with status 2; an error raised while building the classes
or while sweeping prints one line and exits with status 1 (``--traceback`` shows it whole).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning_utilities.core.imports import RequirementCache

from lightning_lrsweep.callback import LRSweep
from lightning_lrsweep.config import SweepConfig, internal_settings, settings_of
from lightning_lrsweep.result import SweepResult

EXIT_USAGE = 2
EXIT_FAILED = 1
SWEEP = "sweep"
SET_ASIDE = (LRSweep, ModelSummary)  # callbacks that would sweep again, or print the model at the sweep's fit start
CLASS_SHORTCUT = re.compile(r"^[A-Za-z_]\w*(\.\w+)*[.:]\w+$")  # PKG.MODULE:Class or PKG.MODULE.Class
UNION_NOISE = (
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Does not validate against any",
    "Expected a <class 'NoneType'>",
)
JSONARGPARSE = RequirementCache("jsonargparse[signatures]>=4.27.7")  # what LightningCLI needs


class UsageError(Exception):
    """A bad argument or config, found before any sweep step: one line, exit status 2."""


class BuildError(Exception):
    """Building the classes from a valid config raised (the user's constructor failed): one line, exit status 1."""


class LRSweepCLI(LightningCLI):
    """``LightningCLI`` with one more subcommand, ``sweep``: one LR range test, built exactly as ``fit`` builds.

    ``LRSweepCLI(Net, Data)`` in place of ``LightningCLI(Net, Data)`` keeps ``fit``, ``validate``, ``test`` and
    ``predict`` as they are, and adds ``python main.py sweep --config cfg.yaml``: every config ``fit`` takes
    (``optimizer:``/``lr_scheduler:`` sections, subclass mode, callbacks, loggers, ``seed_everything``) builds the
    same model, datamodule and trainer; :class:`~lightning_lrsweep.LRSweepTuner` then sweeps once without training,
    prints every method's suggestion and writes ``lr_sweep.csv``/``lr_sweep.png`` to ``--out``. The sweep's
    settings are :class:`~lightning_lrsweep.config.SweepConfig`'s fields, as ``--sweep.min_lr`` etc. or a ``sweep:``
    section. ``LRSweep`` and ``ModelSummary`` callbacks are set aside during the sweep. ``sweep`` is not listed
    in ``python main.py --help``; ``python main.py sweep --help`` lists its options.

    Args:
        model_class: as for ``LightningCLI``.
        datamodule_class: as for ``LightningCLI``.
        args: as for ``LightningCLI`` (``None``: ``sys.argv[1:]``); ``["sweep", ...]`` runs a sweep.
        run: as for ``LightningCLI``; ``False`` builds only (``args`` then never means a sweep).
        **kwargs: any other ``LightningCLI`` argument. For a sweep, ``save_config_callback`` is off (no run
            folder is created), ``run`` is ``False``, and ``parser_kwargs["fit"]`` (e.g. ``fit``'s
            ``default_config_files``) applies as it does to ``fit``.

    Attributes:
        result: the sweep's :class:`~lightning_lrsweep.SweepResult` (``None`` unless it swept).

    Raises:
        UsageError: a bad sweep setting, a ``ckpt_path``, no training data or optimizer, or an unwritable ``--out``.
        BuildError: a class's constructor raised while building from the config.

    Examples:
        >>> LRSweepCLI(Net, Data, args=["sweep", "--config", "cfg.yaml", "--sweep.num_steps", "50"])  # doctest: +SKIP
    """

    def __init__(
        self,
        model_class: Any = None,
        datamodule_class: Any = None,
        *,
        args: ArgsType = None,
        run: bool = True,
        **kwargs: Any,
    ) -> None:
        argv = list(sys.argv[1:] if args is None else args) if isinstance(args, (list, type(None))) else []
        self.sweeping = run and argv[:1] == [SWEEP]
        self.result: SweepResult | None = None
        if not self.sweeping:
            super().__init__(model_class, datamodule_class, args=args, run=run, **kwargs)
            return
        given = dict(kwargs.pop("parser_kwargs", None) or {})
        # the top-level settings and `fit`'s own (its `default_config_files`, say): a sweep is built as `fit` is
        parser_kwargs = {k: v for k, v in given.items() if k not in self.subcommands()} | given.get("fit", {})
        parser_kwargs.setdefault("prog", f"{Path(sys.argv[0]).name} {SWEEP}")
        parser_kwargs.setdefault("description", "Build as `fit` would, then run one LR range test without training.")
        kwargs["save_config_callback"] = None
        super().__init__(model_class, datamodule_class, args=argv[1:], run=False, parser_kwargs=parser_kwargs, **kwargs)
        self.result = self.sweep()

    def add_default_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """For a sweep, also ``fit``'s arguments (``fit --print_config`` writes them), the sweep settings, ``--out``."""
        super().add_default_arguments_to_parser(parser)
        if not self.sweeping:
            return
        trainer_class = self.trainer_class if isinstance(self.trainer_class, type) else pl.Trainer
        parser.add_method_arguments(trainer_class, "fit", skip=set(LightningCLI.subcommands()["fit"]))
        parser.add_class_arguments(SweepConfig, SWEEP, skip=internal_settings(SweepConfig))
        parser.add_argument("--out", type=str, default="lrsweep_out", help="folder for lr_sweep.csv and lr_sweep.png")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse as ``LightningCLI`` does; a sweep's ``args`` come from ``sys.argv`` on purpose (no warning)."""
        if self.sweeping:
            self.config = parser.parse_args(args)
        else:
            super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        """Check the sweep settings and refuse a ``ckpt_path``, before any class is built.

        Raises:
            UsageError: a sweep setting out of range, or a ``ckpt_path`` (a sweep starts from the model as built).
        """
        if not self.sweeping:
            return
        try:
            SweepConfig(**self.config[SWEEP].as_dict())
        except ValueError as exc:
            raise UsageError(f"sweep: {exc}") from exc
        if self.config.get("ckpt_path") is not None:
            raise UsageError(
                f"ckpt_path {self.config.ckpt_path!r}: a sweep starts from the model the config builds; "
                "remove ckpt_path (or set it to null)"
            )

    def instantiate_classes(self) -> None:
        """Build as ``LightningCLI`` does; for a sweep, a constructor's error becomes a one-line :class:`BuildError`."""
        if not self.sweeping:
            super().instantiate_classes()
            return
        try:
            super().instantiate_classes()
        except Exception as exc:
            root = _root_cause(exc)  # jsonargparse wraps a constructor's error in its own
            raise BuildError(f"building the classes from the config raised {_one_line(root)}{_where(root)}") from root

    def sweep(self) -> SweepResult:
        """Sweep the built model once (no training), print every method's suggestion, save the curve to ``--out``.

        Every rank sweeps; global rank 0 alone prints and writes.

        Raises:
            UsageError: no training data (the module has no ``train_dataloader`` and no datamodule was given), no
                optimizer, or ``--out`` cannot be written; all before the sweep. ``--out`` is created after the
                build, and removed again if the sweep fails.
        """
        from lightning_lrsweep.tuner import LRSweepTuner

        name = type(self.model).__name__
        if self.datamodule is None and not is_overridden("train_dataloader", self.model):
            raise UsageError(
                f"{name} has no train_dataloader of its own: pass --data PKG.MODULE:DataModule (or a `data:` section "
                "in --config)"
            )
        if not is_overridden("configure_optimizers", self.model):
            raise UsageError(
                f"{name} has no configure_optimizers: pass --optimizer (e.g. --optimizer=AdamW --optimizer.lr=1e-3) "
                "or an `optimizer:` section in --config"
            )
        trainer = self.trainer
        callbacks = trainer.callbacks  # type: ignore[attr-defined]
        trainer.callbacks = [c for c in callbacks if not isinstance(c, SET_ASIDE)]  # type: ignore[attr-defined]
        try:
            with _out_folder(Path(self.config.out)) as out:
                built = self.config_init[SWEEP]  # a SweepConfig: its user settings are the tuner's arguments
                settings = {f.name: getattr(built, f.name) for f in settings_of(SweepConfig)}
                result = LRSweepTuner(trainer).sweep(self.model, datamodule=self.datamodule, **settings)
        finally:
            trainer.callbacks = callbacks  # type: ignore[attr-defined]
        if trainer.is_global_zero:  # under `ddp` or sharding every rank runs this: one table, one writer
            print(suggestion_table(result))
            paths = result.save(out, stem="lr_sweep")
            print(f"curve: {paths['csv']}  plot: {paths['png']}")
        return result


def _writable(out: Path) -> Path:
    """``--out``, created and checked writable before any training, so a bad path fails at once and in one line."""
    from lightning_lrsweep.result import writable_dir

    try:
        return writable_dir(out)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there: {exc.strerror or exc}") from exc


@contextmanager
def _out_folder(path: Path) -> Iterator[Path]:
    """``--out``, created and checked writable; removed again if the sweep fails and it was created for it."""
    created = [folder for folder in (path, *path.parents) if not folder.exists()]  # deepest first
    out = _writable(path)
    try:
        yield out
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()  # only an empty folder
            except OSError:
                break
        raise


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message``."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _root_cause(exc: BaseException) -> BaseException:
    """The first exception of a ``raise ... from`` chain."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _where(exc: BaseException) -> str:
    """`` (in file.py:line)`` of the frame that raised, so the user sees which constructor failed."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f" (in {Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno})" if tb is not None else ""


# -- the `lrsweep` command -----------------------------------------------------------------------


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
    commands.add_parser(
        SWEEP,
        help="build your model, data and trainer from a LightningCLI `fit` config, run one LR range test without "
        "training, and print every method's suggestion (`lrsweep sweep --help`)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [SWEEP]:
        return _sweep(argv[1:])
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return int(exc.code or 0)
    if args.epochs < 1:
        print(f"lrsweep demo: error: --epochs must be >= 1, got {args.epochs}", file=sys.stderr)
        return EXIT_USAGE
    from lightning_lrsweep.demo import run_demo

    try:
        out = _writable(Path(args.out))
    except UsageError as exc:
        print(f"lrsweep demo: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    run_demo(out=out, epochs=args.epochs, seed=args.seed, quiet=True)
    return 0


def class_shortcuts(argv: list[str]) -> list[str]:
    """Move ``--model``/``--data`` naming a class to the front, ``PKG.MODULE:Class`` written as a class path.

    At the front they name the class before ``--config`` and the other flags set its arguments (jsonargparse
    reads arguments in order, and a ``model:`` section without ``class_path`` needs the class first).

    Raises:
        UsageError: a shortcut whose module or class cannot be imported, or that is not a LightningModule /
            LightningDataModule class.
    """
    bases = {"--model": pl.LightningModule, "--data": pl.LightningDataModule}
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        flag, sep, value = argv[i].partition("=")
        taken = 2 if flag in bases and not sep and i + 1 < len(argv) else 1  # `--model X` or `--model=X`
        if taken == 2:
            value = argv[i + 1]
        if flag in bases and (sep or taken == 2) and CLASS_SHORTCUT.match(value) and not Path(value).exists():
            cls = import_object(value, flag)
            if not (isinstance(cls, type) and issubclass(cls, bases[flag])):
                raise UsageError(f"{flag} {value}: {cls!r} is not a {bases[flag].__name__} class")
            front.append(f"{flag}={cls.__module__}.{cls.__qualname__}")
        else:
            rest += argv[i : i + taken]
        i += taken
    return front + rest


def import_object(spec: str, flag: str) -> Any:
    """Import ``PKG.MODULE:Name`` (or ``PKG.MODULE.Name``); modules in the current folder import, as with ``-m``.

    Raises:
        UsageError: malformed, or the module or the name cannot be imported.
    """
    import importlib

    module_name, sep, name = spec.partition(":")
    if not sep:
        module_name, _, name = spec.rpartition(".")
    if not module_name or not name:
        raise UsageError(f"{flag} must look like PKG.MODULE:Class, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or an error raised while importing the user's module
        raise UsageError(f"{flag} {spec}: cannot import {module_name!r}: {_one_line(exc)}") from exc
    try:
        return getattr(module, name)
    except AttributeError:
        raise UsageError(f"{flag} {spec}: module {module_name!r} has no attribute {name!r}") from None


def _sweep(argv: list[str]) -> int:
    """``lrsweep sweep``: :class:`LRSweepCLI` with one-line errors and exit statuses."""
    prog = f"lrsweep {SWEEP}"
    if not JSONARGPARSE:
        print(f"{prog}: error: {JSONARGPARSE}", file=sys.stderr)
        return EXIT_FAILED
    from jsonargparse import ArgumentError

    show_traceback = "--traceback" in argv
    argv = [arg for arg in argv if arg != "--traceback"]
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules in the current folder import
    try:
        with _quiet(not show_traceback):
            LRSweepCLI(args=[SWEEP, *class_shortcuts(argv)], parser_kwargs={"exit_on_error": False, "prog": prog})
    except SystemExit as exc:  # --help, --print_config
        return int(exc.code or 0)
    except (ArgumentError, UsageError) as exc:
        print(f"{prog}: error: {_flat(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if show_traceback:
            raise
        detail = str(exc) if isinstance(exc, BuildError) else _one_line(exc)
        print(f"{prog}: error: {detail} (rerun with --traceback)", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _flat(exc: BaseException) -> str:
    """The parser's message on one line: its details joined, jsonargparse's union bookkeeping left out."""
    text = str(exc)
    if text == "the following arguments are required: model":
        return "no model: pass --model PKG.MODULE:Class, or a --config whose `model:` section has a class_path"
    for key, base in (("model", "LightningModule"), ("data", "LightningDataModule")):
        if text.startswith(f'Parser key "{key}"') and f"class_path 'lightning.{base}'" in text:
            return f"the `{key}` section names no class: pass --{key} PKG.MODULE:Class, or set class_path in the config"
    flat = ""
    for line in (line.strip() for line in text.splitlines()):
        if line and not line.lstrip("- ").startswith(UNION_NOISE):
            flat += line if not flat else (" " if flat.endswith(":") else "; ") + line
    return flat or type(exc).__name__


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
    from lightning_lrsweep.suggestion_rules import METHODS

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
