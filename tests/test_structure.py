"""The package's layering (README, Development) and its one module for private Lightning/torch attributes."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "lightning_lrsweep"

LAYERS = [
    ["compat", "smoothing", "schedule", "suggestion_rules", "retune", "result", "history", "config", "apply"],
    ["distributed", "snapshot", "optimizer_choice", "isolation", "stop_rule", "sweep_data", "steps", "sweep"],
    ["progress", "reporting"],
    ["callback", "tuner", "demo", "cli", "__main__", "__init__"],
]
"""From the bottom layer up: a module may import from the layers before its own and from modules before it in its
own layer (``__init__``, the package itself, comes last)."""

ORDER = {name: i for i, name in enumerate(name for layer in LAYERS for name in layer)}
LAYER = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def package_imports(tree: ast.AST) -> set[str]:
    """The package's modules a module imports (``from lightning_lrsweep import X`` and ``from . import X``:
    ``__init__``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = "lightning_lrsweep." * bool(node.level) + (node.module or "")
            if module.startswith("lightning_lrsweep"):
                names.add(module.split(".")[1] if "." in module.rstrip(".") else "__init__")
        elif isinstance(node, ast.Import):
            names.update(
                a.name.split(".")[1] if "." in a.name else "__init__"
                for a in node.names
                if a.name.split(".")[0] == "lightning_lrsweep"
            )
    return names


@pytest.mark.parametrize(
    ("source", "imported"),
    [
        ("from lightning_lrsweep.sweep import run_sweep", {"sweep"}),
        ("import lightning_lrsweep.steps", {"steps"}),
        ("from lightning_lrsweep import LRSweep", {"__init__"}),
        ("import lightning_lrsweep", {"__init__"}),
        ("from .config import SweepConfig", {"config"}),
        ("from . import config", {"__init__"}),
        ("import lightning.pytorch", set()),
    ],
    ids=[
        "from-module",
        "import-module",
        "from-package",
        "import-package",
        "relative-module",
        "relative-package",
        "other-package",
    ],
)
def test_package_imports_finds_every_form_of_import(source, imported):
    assert package_imports(ast.parse(source)) == imported


def private_uses(tree: ast.AST) -> list[str]:
    """``obj._name`` on anything but ``self``, and ``getattr(obj, "_name")``-style names (dunders and ``_replace`` of
    named tuples aside)."""
    found = []
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Attribute) and not (isinstance(node.value, ast.Name) and node.value.id == "self"):
            name = node.attr
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "setattr", "hasattr"):
            if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                name = node.args[1].value
        if name and name.startswith("_") and not name.startswith("__") and name != "_replace":
            found.append(f"line {node.lineno}: {name}")
    return found


def modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE.glob("*.py"))


def test_every_module_has_a_layer():
    assert sorted(ORDER) == modules()


@pytest.mark.parametrize("module", modules())
def test_a_module_imports_only_from_below(module):
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    above = [name for name in package_imports(tree) if ORDER[name] >= ORDER[module]]
    assert not above, f"{module} (layer {LAYER[module]}) imports {above}, listed after it or itself"


@pytest.mark.parametrize("module", [m for m in modules() if m != "compat"])
def test_only_compat_touches_private_attributes(module):
    assert private_uses(ast.parse((PACKAGE / f"{module}.py").read_text())) == []
