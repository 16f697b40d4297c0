"""Every setting, declared once: its type, default, meaning and the values it allows.

:class:`SweepConfig` says how one sweep runs; :class:`CallbackConfig` says what :class:`~lightning_lrsweep.LRSweep`
does around its sweeps during ``fit`` (when it re-tunes, how it moves the LR, what it applies and shows). The checks
and their error messages, the documentation of ``LRSweep``'s and ``LRSweepTuner.sweep``'s arguments, the
``--sweep.*`` options of ``lrsweep sweep``, and the settings ``LRSweep`` keys and saves its checkpoint state by all
derive from the fields below.
"""

from __future__ import annotations

import ast
import inspect
import math
import re
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import Field, dataclass, field, fields
from typing import Any, TypeVar

from lightning_lrsweep.result import SuggestionRule, SweepResult  # noqa: F401 (resolves the forward ref in SuggestionRule, for get_type_hints)
from lightning_lrsweep.schedule import MODES
from lightning_lrsweep.suggestion_rules import METHODS

RetuneRule = str | Callable[[SweepResult], "float | None"]

MIN_STEPS = 5
LOW_CONFIDENCE_ACTIONS = ("warn", "keep")

KEY_0_1_0 = (
    "min_lr",
    "max_lr",
    "num_steps",
    "mode",
    "early_stop_threshold",
    "smoothing",
    "suggestion",
    "every_n_epochs",
    "milestones",
    "attr_name",
    "optimizer_idx",
    "sweep_at_fit_start",
    "retune_suggestion",
    "retune_window",
    "retune_num_steps",
    "max_change",
)
"""The settings 0.1.0 wrote into ``LRSweep.state_key``, in its order: checkpoints are found by that exact string."""

IDENTITY = ("attr_name", "optimizer_idx")
"""The settings that say which LR a callback tunes: a saved history with other values is another LR's."""


def is_number(value: object) -> bool:
    """A real number (an int or float, not a bool), so comparing it cannot raise ``TypeError``."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_int(value: object, low: int) -> bool:
    """An int (not a bool) ``>= low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def is_rule(value: object) -> bool:
    """A suggestion method's name or a callable ``(SweepResult) -> float | None``."""
    return callable(value) or value in METHODS


@dataclass(frozen=True)
class Allowed:
    """The values a setting allows: in words (errors and docs say them) and as a test."""

    words: str
    test: Callable[[Any], bool]

    def check(self, name: str, value: object) -> None:
        """Raise ``ValueError`` naming the setting, the value and what is allowed, unless ``value`` passes."""
        if not self.test(value):
            raise ValueError(f"`{name}` must be {self.words}, got {value!r}.")


def setting(default: Any, meaning: str, allowed: Allowed, *, shapes: bool = True, internal: bool = False) -> Any:
    """Declare a setting: a dataclass field whose metadata holds its meaning and the values it allows.

    Args:
        default: the default value.
        meaning: what the setting does, for the docs (Google-style, one or a few sentences).
        allowed: the values it accepts.
        shapes: whether it shapes what the sweeps measure or decide (then ``LRSweep`` keys its state by it, saves
            it in checkpoints and compares it on resume); settings of how results are shown or kept do not.
        internal: set by the package itself, not by users (no keyword argument, option or docs).
    """
    metadata = {"meaning": meaning, "allowed": allowed, "shapes": shapes, "internal": internal}
    return field(default=default, metadata=metadata)


def settings_of(config: Any) -> tuple[Field[Any], ...]:
    """The fields of a settings dataclass (or instance) that users set."""
    return tuple(f for f in fields(config) if not f.metadata["internal"])


def internal_settings(config: Any) -> set[str]:
    """The names of the fields of a settings dataclass that the package sets itself."""
    return {f.name for f in fields(config) if f.metadata["internal"]}


def check_fields(config: Any) -> None:
    """Check every field of a settings instance, in declaration order."""
    for f in fields(config):
        f.metadata["allowed"].check(f.name, getattr(config, f.name))


def describe(f: Field[Any]) -> str:
    """A setting's entry in an ``Args:`` section: its meaning and what it allows (the signature shows its default)."""
    return f"{f.metadata['meaning']} Allowed: {f.metadata['allowed'].words}."


def document_settings(*configs: type[Any]) -> Callable[[Any], Any]:
    """Append the user settings of ``configs`` to the ``Args:`` section of the decorated object's docstring.

    The section is created, before ``Returns:``/``Raises:``/``Examples:``, when the docstring has none. Without
    ``configs``, the decorated settings dataclass documents its own fields.
    """

    def decorate(obj: Any) -> Any:
        lines = inspect.cleandoc(obj.__doc__ or "").splitlines()
        entries = [
            textwrap.fill(
                f"{f.name}: {describe(f)}",
                116,
                initial_indent="    ",
                subsequent_indent="        ",
                break_on_hyphens=False,
            )
            for config in configs or (obj,)
            for f in settings_of(config)
        ]
        obj.__doc__ = "\n".join(insert_args(lines, "\n".join(entries).splitlines())) + "\n"
        return obj

    return decorate


def insert_args(lines: list[str], entries: list[str]) -> list[str]:
    """``lines`` of a cleaned Google-style docstring with ``entries`` at the end of its ``Args:`` section."""
    if "Args:" in lines:
        end = lines.index("Args:") + 1
        while end < len(lines) and (lines[end].startswith(" ") or not lines[end]):
            end += 1
        while not lines[end - 1]:
            end -= 1
        return [*lines[:end], *entries, *lines[end:]]
    sections = [i for i, line in enumerate(lines) if line in ("Returns:", "Raises:", "Examples:")]
    at = sections[0] if sections else len(lines)
    return [*lines[:at], "Args:", *entries, "", *lines[at:]]


@document_settings()
@dataclass(frozen=True)
class SweepConfig:
    """How one sweep runs. An invalid value raises ``ValueError`` naming the setting, the value and what is allowed.

    The arguments of the same names of :class:`~lightning_lrsweep.LRSweep` (its fit-start sweep; re-tunes
    take their range and step budget from :class:`CallbackConfig`) and of :meth:`LRSweepTuner.sweep
    <lightning_lrsweep.LRSweepTuner.sweep>`, and the ``--sweep.*`` options of ``lrsweep sweep``.
    """

    min_lr: float = setting(
        1e-7,
        "first LR of the sweep (``LRSweep``: of the fit-start sweep).",
        Allowed("> 0", lambda v: is_number(v) and v > 0),
    )
    max_lr: float = setting(
        10.0,
        "last LR of the sweep (``LRSweep``: of the fit-start sweep; it also caps re-tune sweeps).",
        Allowed("greater than `min_lr`", is_number),
    )
    num_steps: int = setting(
        100,
        "optimizer steps of the sweep, at most (``LRSweep``: of the fit-start sweep).",
        Allowed(f"an int >= {MIN_STEPS}", lambda v: is_int(v, MIN_STEPS)),
    )
    mode: str = setting(
        "exponential",
        '``"exponential"`` (multiply the LR each step) or ``"linear"`` (add to it).',
        Allowed(f"one of {MODES}", lambda v: v in MODES),
    )
    early_stop_threshold: float | None = setting(
        4.0,
        "stop a sweep once the smoothed loss exceeds ``threshold × best``; ``None`` never stops early "
        "(a NaN/Inf loss always stops it).",
        Allowed("> 1 or None (never stop early)", lambda v: v is None or (is_number(v) and v > 1)),
    )
    smoothing: float = setting(
        0.98,
        "EMA factor of the recorded loss (bias-corrected from the first step); 0 turns smoothing off.",
        Allowed("in [0, 1)", lambda v: is_number(v) and 0 <= v < 1),
    )
    suggestion: SuggestionRule = setting(
        "valley",
        'how the LR is picked from the curve (``LRSweep``: at fit start): ``"valley"``, ``"steepest"``, '
        '``"minimum"``, ``"sma_slope"`` (see :mod:`lightning_lrsweep.suggestion_rules`), or a callable '
        "``(SweepResult) -> float | None``.",
        Allowed(f"one of {sorted(METHODS)} or a callable", is_rule),
    )
    snapshot_device: str | None = setting(
        None,
        'keep the restore copy beside the model (``None``) or in CPU memory (``"cpu"``).',
        Allowed("None or 'cpu'", lambda v: v in (None, "cpu")),
        shapes=False,
    )
    optimizer_idx: int | None = setting(
        None,
        "with several optimizers (e.g. a GAN's, with manual optimization), which one to sweep and tune; the "
        "others keep their LRs (with manual optimization ``training_step`` still steps them, and all are "
        "restored after each sweep). Pair it with ``attr_name`` naming that optimizer's LR.",
        Allowed("None (a single optimizer) or an int >= 0", lambda v: v is None or is_int(v, 0)),
    )
    min_stop_lr: float = setting(
        0.0,
        "below this LR the divergence stop is ignored (NaN/Inf still stop). A re-tune sets it to the LR training "
        "ran at: the loss cannot truly diverge below it, so a rise there is noise (a well-trained model's loss is "
        "tiny, and 4x a tiny loss is one noisy batch).",
        Allowed("a number >= 0", lambda v: is_number(v) and v >= 0),
        internal=True,
    )
    val_batches: int = setting(
        0,
        "judge every sweep on the validation loss instead of the training loss: after every optimizer step, "
        "``training_step`` runs on the first ``val_batches`` batches of the validation loader (in eval mode, "
        "without gradients) and their mean loss is recorded; 0 records the training loss.",
        Allowed("an int >= 0 (0: judge on the training loss)", lambda v: is_int(v, 0)),
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.max_lr > self.min_lr:
            raise ValueError(
                f"`max_lr` must be greater than `min_lr`, got min_lr={self.min_lr!r}, max_lr={self.max_lr!r}."
            )


def is_retune_rule(value: object) -> bool:
    """``None``, ``"edge"``, or what :func:`is_rule` allows."""
    return value is None or value == "edge" or is_rule(value)


def is_milestones(value: object) -> bool:
    """A list of epoch numbers (ints >= 0)."""
    return isinstance(value, list) and all(is_int(m, 0) for m in value)


def is_flag(value: object) -> bool:
    """``True`` or ``False``."""
    return isinstance(value, bool)


FLAG = Allowed("True or False", is_flag)


@document_settings()
@dataclass(frozen=True)
class CallbackConfig:
    """What :class:`~lightning_lrsweep.LRSweep` does around its sweeps: when it re-tunes, how it moves the LR.

    The rest of ``LRSweep``'s arguments (the other ones are :class:`SweepConfig`'s). An invalid value raises
    ``ValueError`` naming the setting, the value and what is allowed. ``milestones`` is kept sorted, without
    repeats.
    """

    every_n_epochs: int | None = setting(
        None,
        "re-tune at the start of every n-th epoch (``None``: never).",
        Allowed("an int >= 1 or None", lambda v: v is None or is_int(v, 1)),
    )
    milestones: Sequence[int] = setting(
        (), "also re-tune at the start of these epochs.", Allowed("epoch numbers >= 0", is_milestones)
    )
    retune_at_phase_change: bool = setting(
        True,
        "also re-tune at the start of an epoch where what is trained changed since the last sweep: param groups or "
        "trainable parameters (a finetuning callback unfroze layers) or the batches accumulated per step (a "
        '``GradientAccumulationScheduler``). Needs the default ``"edge"`` re-tune rule; ``False`` leaves such a '
        "change to the next ``every_n_epochs`` or ``milestones`` re-tune.",
        FLAG,
    )
    attr_name: str | None = setting(
        None,
        "the module's LR attribute; by default ``lr`` or ``learning_rate`` on the module or its ``hparams``.",
        Allowed("None or an attribute name", lambda v: v is None or isinstance(v, str)),
    )
    update_attr: bool = setting(
        True, "write the LR into that attribute (the optimizer is updated in any case).", FLAG, shapes=False
    )
    retune_suggestion: RetuneRule | None = setting(
        None,
        'how a re-tune moves the LR: ``"edge"`` (the default for named fit-start rules; see '
        ":mod:`lightning_lrsweep.retune`), a method name, or a callable. When ``suggestion`` is a callable and "
        'this is ``None``, the callable serves re-tunes too. With ``"edge"``, a re-tune under a decay (a '
        "scheduler, or ``anneal``) scales the decay, and a re-tune at a milestone or after layers were unfrozen "
        "or the accumulation changed sweeps the full range and reads it with ``suggestion`` (capped at the changed "
        "model's located stability edge / the measured edge-to-LR spacing, then moving at most 10x; a sweep below "
        "``min_confidence`` is not read, see there); any other rule serves every re-tune as given.",
        Allowed(
            f"one of {['edge', *sorted(METHODS)]}, a callable, or None (the callable `suggestion`, else 'edge')",
            is_retune_rule,
        ),
    )
    retune_window: float = setting(
        30.0,
        "a re-tune sweeps from ``current / window`` to ``current × window``.",
        Allowed("a finite number > 1", lambda v: is_number(v) and 1 < v < math.inf),
    )
    retune_num_steps: int = setting(
        40,
        "optimizer steps of a re-tune sweep, at most.",
        Allowed(f"an int >= {MIN_STEPS}", lambda v: is_int(v, MIN_STEPS)),
    )
    max_change: float = setting(
        2.0,
        "the largest factor one re-tune may move the LR by (a warning says when it clamps).",
        Allowed("a number >= 1 (1 never moves the LR; inf never bounds it)", lambda v: is_number(v) and v >= 1),
    )
    sweep_at_fit_start: bool = setting(True, "run the fit-start sweep.", FLAG)
    sweep_on_resume: bool = setting(
        False,
        "also run the fit-start sweep when ``fit`` resumes from a checkpoint (by default a resumed run keeps the "
        "history and LR it saved, and re-tunes on the same schedule).",
        FLAG,
        shapes=False,
    )
    log_curves: bool = setting(
        True,
        "send each sweep's curve to the loggers (TensorBoard figure; CSV and PNG in the logger's ``log_dir``). "
        "The metrics ``lr_sweep/suggested_lr`` and ``lr_sweep/applied_lr`` are always logged.",
        FLAG,
        shapes=False,
    )
    race_steps: int = setting(
        0,
        "after the fit-start sweep, train the suggestion and the ends of :attr:`SweepResult.interval "
        "<lightning_lrsweep.SweepResult.interval>` for this many optimizer steps each from the restored state, "
        "and apply the one with the lowest loss (validation loss when there is a validation loader and automatic "
        "optimization); 0 applies the suggestion.",
        Allowed("an int >= 0 (0: no race)", lambda v: is_int(v, 0)),
    )
    min_confidence: float = setting(
        0.2,
        "a fit-start suggestion whose :attr:`SweepResult.confidence <lightning_lrsweep.SweepResult.confidence>` "
        "is below this warns; a phase-change re-tune's full-range sweep below it is not read (a held LR comes "
        "down 10x at a milestone or unfreeze, and up to 10x further to keep it the measured edge / LR spacing "
        "below the sweep's stability edge; a decay's scale, and the LR after an accumulation change, stay).",
        Allowed("a number in [0, 1]", lambda v: is_number(v) and 0 <= v <= 1),
    )
    low_confidence: str = setting(
        "warn",
        'what a fit-start sweep below ``min_confidence`` does: ``"warn"`` (apply the suggestion) or ``"keep"`` '
        "(keep the LR the module started with).",
        Allowed(f"one of {LOW_CONFIDENCE_ACTIONS}", lambda v: v in LOW_CONFIDENCE_ACTIONS),
    )
    anneal: bool = setting(
        True,
        'with ``every_n_epochs``, the ``"edge"`` re-tune rule, no LR scheduler on the tuned optimizer and a known '
        "horizon (``max_epochs`` or ``max_steps``), hold the fit-start LR for the first half of training, then "
        "decay it along a cosine to 0 at the end (the last batch of ``max_epochs`` or the ``max_steps``-th "
        "optimizer step, whichever comes first), set at every training batch; re-tunes scale the whole anneal "
        "(and may raise it, see :mod:`lightning_lrsweep.retune`). It stops where a scheduler is "
        "attached mid-run (e.g. ``StochasticWeightAveraging``'s ``SWALR``). ``False`` holds the LR between "
        "re-tunes, which then also halve it on an annealing dip.",
        FLAG,
    )

    def __post_init__(self) -> None:
        milestones = self.milestones
        if isinstance(milestones, Iterable) and not isinstance(milestones, str):
            object.__setattr__(self, "milestones", list(milestones))
        check_fields(self)
        object.__setattr__(self, "milestones", sorted(set(self.milestones)))


# -- what derives from the declarations -------------------------------------------------------------

Config = TypeVar("Config", SweepConfig, CallbackConfig)


def from_arguments(config: type[Config], arguments: Mapping[str, Any]) -> Config:
    """Build ``config`` from a function's arguments (``locals()``): those named as its user settings."""
    return config(**{f.name: arguments[f.name] for f in settings_of(config)})


def reject_unknown(owner: str, unknown: Mapping[str, Any], config: type[Any]) -> None:
    """Refuse keyword arguments that are no setting of ``config``, listing the settings there are.

    Raises:
        TypeError: ``unknown`` is not empty.
    """
    if unknown:
        names = ", ".join(f"`{name}`" for name in sorted(unknown))
        valid = ", ".join(f.name for f in settings_of(config))
        raise TypeError(f"{owner} got unknown argument(s) {names}; the sweep settings are: {valid}.")


def rule_name(rule: object) -> str:
    """A rule as checkpoints show it: its name, or a callable's qualified name (stable across runs)."""
    return rule if isinstance(rule, str) else getattr(rule, "__qualname__", "callable")


def saved_value(value: object) -> object:
    """A setting as plain data: a callable rule by name, ``milestones`` as a list."""
    if callable(value):
        return rule_name(value)
    return list(value) if isinstance(value, list | tuple) else value


def shaping_settings(*configs: Any) -> dict[str, object]:
    """The settings of ``configs`` that shape the sweeps, as plain data, in declaration order."""
    return {f.name: saved_value(getattr(c, f.name)) for c in configs for f in settings_of(c) if f.metadata["shapes"]}


def key_settings(settings: Mapping[str, object]) -> dict[str, object]:
    """The settings a state key names: 0.1.0's, in its order, then later ones where they differ from their default.

    So a checkpoint saved before a setting existed is still found by an instance built with its default.
    """
    defaults = shaping_defaults()
    later = {name: value for name, value in settings.items() if name not in KEY_0_1_0 and value != defaults[name]}
    return {name: settings[name] for name in KEY_0_1_0} | later


def shaping_defaults() -> dict[str, object]:
    """Every shaping setting's default, as plain data."""
    return {
        f.name: saved_value(f.default)
        for config in (SweepConfig, CallbackConfig)
        for f in settings_of(config)
        if f.metadata["shapes"]
    }


def settings_from_key(key: str) -> dict[str, object] | None:
    """The settings a state key names (:func:`key_settings`, defaults filled in); ``None`` if it names none."""
    body = key[key.find("{") :] if "{" in key else ""
    try:
        named = ast.literal_eval(re.sub(r"\binf\b", "1e999", body))  # `repr(inf)` is no literal; 1e999 is inf
    except (ValueError, SyntaxError):
        return None
    return shaping_defaults() | named if isinstance(named, dict) else None


def changed_settings(saved: Mapping[str, object], now: Mapping[str, object]) -> list[str]:
    """``name: saved -> now`` for each setting of ``now`` that ``saved`` holds with another value."""
    defaults = shaping_defaults()
    return [
        f"`{name}` {saved.get(name, defaults.get(name))!r} -> {value!r}"
        for name, value in now.items()
        if saved.get(name, defaults.get(name)) != value
    ]
