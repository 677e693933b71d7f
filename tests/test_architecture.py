"""The layer rules of docs/architecture.md, checked on the source: a lower layer never imports a
higher one, and each heavy library is imported by its one package only. Imports under
``if TYPE_CHECKING:`` are types, not dependencies, and are not counted."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "raystilts"

# which raystilts packages each package may import (besides itself); keep in step with
# docs/architecture.md
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "tasks": {"core"},
    "metrics": {"core"},
    "kinds": {"core", "tasks", "metrics"},
    "data": {"core", "tasks", "metrics", "kinds"},
    "train": {"core", "tasks", "metrics", "kinds", "data"},
    "tracking": {"core"},
    "analysis": {"core", "tasks", "metrics"},
    "report": {"core", "tasks", "metrics", "tracking", "analysis"},
    "search": {"core", "tasks", "metrics", "kinds", "data", "train", "tracking"},
    "cli": {
        *("core", "tasks", "metrics", "kinds", "data", "train"),
        *("tracking", "analysis", "report", "search"),
    },
    "qa": {"data"},  # compatibility alias of raystilts.data.qa (itself one of raystilts.kinds.qa)
}
# a library -> the only package allowed to import it
OWNER = {"ray": "search", "mlflow": "tracking", "polars": "analysis", "matplotlib": "report"}
# layers that stay importable without torch (pure Python, numpy at most)
NO_TORCH = {"core", "tasks", "metrics", "tracking", "analysis", "report"}


def _layer(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package).parts
    return parts[0].removesuffix(".py")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted module) of every import, at any depth, outside TYPE_CHECKING blocks."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend(
                (node.lineno, f"{node.module}.{alias.name}")
                if node.module == "raystilts"
                else (node.lineno, node.module)
                for alias in node.names
            )
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def violations(package: Path = PACKAGE) -> list[str]:
    """Every import of ``package`` that breaks a layer rule, as ``file:line: why``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        layer = _layer(path, package)
        where = path.relative_to(package.parent)
        for line, module in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            parts = module.split(".")
            top = parts[0]
            if top == "raystilts" and len(parts) > 1:
                target = parts[1]
                if target == "cli":
                    found.append(f"{where}:{line}: nothing may import raystilts.cli")
                elif target != layer and target not in ALLOWED.get(layer, set()):
                    found.append(f"{where}:{line}: {layer} may not import raystilts.{target}")
            elif top in OWNER and OWNER[top] != layer:
                found.append(f"{where}:{line}: only raystilts.{OWNER[top]} may import {top}")
            elif top == "torch" and layer in NO_TORCH:
                found.append(f"{where}:{line}: {layer} must stay importable without torch")
    return found


def test_every_module_belongs_to_a_known_layer() -> None:
    layers = {_layer(path) for path in PACKAGE.rglob("*.py")} - {"__init__"}
    assert layers <= set(ALLOWED), f"add {sorted(layers - set(ALLOWED))} to ALLOWED and the docs"


def test_no_import_breaks_the_layer_rules() -> None:
    assert violations() == []


@pytest.mark.parametrize(
    ("layer", "source", "why"),
    [
        ("core", "from raystilts.train import runner\n", "core may not import raystilts.train"),
        ("tracking", "def f():\n    import ray\n", "only raystilts.search may import ray"),
        ("analysis", "import mlflow.entities\n", "only raystilts.tracking may import mlflow"),
        ("search", "from raystilts import cli\n", "nothing may import raystilts.cli"),
        ("metrics", "import torch\n", "metrics must stay importable without torch"),
    ],
)
def test_the_checker_catches_a_violation(
    tmp_path: Path, layer: str, source: str, why: str
) -> None:
    package = tmp_path / "raystilts"
    (package / layer).mkdir(parents=True)
    (package / layer / "mod.py").write_text(source)
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ray\n"
    (package / layer / "typed.py").write_text(typed)  # a type-only import is allowed
    (found,) = violations(package)
    assert why in found


def test_the_searcher_runs_without_ray_or_torch() -> None:
    """The search's logic (and the tabular replay that drives it) must not pay for Ray."""
    import subprocess
    import sys

    check = (
        "import sys, raystilts.search.searcher, raystilts.search.prior, "
        "raystilts.core.transfer_tables; sys.exit(('ray' in sys.modules) + 2 * ('torch' in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", check], check=False).returncode == 0


def test_metric_keys_and_tags_are_written_from_the_schema() -> None:
    """What lands in MLflow is defined once (raystilts.core.schema): no module outside it spells
    a raystilts tag name or builds a metric key with an f-string."""
    import re

    tag = re.compile(
        r"[\"']raystilts\.(target|chain|outcome|kind|search|trial_id|search_id)[\"']\s*[:,)\]]"
    )
    fkey = re.compile(r"f[\"'](dev|test|\{split\})/\{")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "schema.py":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#")[0]
            if (tag.search(code) or fkey.search(code)) and "``" not in code:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}")
    assert found == []


def test_no_module_outside_kinds_branches_on_a_kind_name() -> None:
    """What a task kind does lives in its module under raystilts/kinds (docs/architecture.md);
    elsewhere the kind is looked up (``raystilts.kinds.get_kind``), never compared with a name.
    ``tasks/catalog.py`` is a written-down debt: ``tasks`` sits below ``kinds``."""
    import re

    branch = re.compile(r"\.kind\s*(==|!=)\s*[\"']|\.kind\s*(not\s+)?in\s*[(\[{]")
    debts = {"raystilts/tasks/catalog.py"}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE.parent).as_posix()
        if where.startswith("raystilts/kinds/") or where in debts:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if branch.search(line.split("#")[0]):
                found.append(f"{where}:{n}: {line.strip()}")
    assert found == []
    assert branch.search('if task.kind == "qa":') and branch.search("t.kind in ('mlm', 'qa')")
