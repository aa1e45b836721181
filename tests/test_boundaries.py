"""Neither program imports the other; the shared packages import neither program.

Every module of each package is parsed, so an import inside a function, under
TYPE_CHECKING or through importlib counts as much as one at the top.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import ROOT

# package -> the top-level packages it must never import
FORBIDDEN = {
    "agent": {"collector"},
    "collector": {"agent"},
    # the contract stands alone: any client or server can take it without our runtime
    "pulse_wire": {"agent", "collector", "pulse_common"},
    "pulse_common": {"agent", "collector"},
}
DYNAMIC_IMPORTS = {"import_module", "__import__"}


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every absolute module name the code imports, with its line."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name in DYNAMIC_IMPORTS and isinstance(first, ast.Constant):
                yield node.lineno, str(first.value)


def forbidden_imports(package: Path, forbidden: set[str]) -> list[str]:
    """`file:line imports module` for each import of a forbidden top-level package."""
    found = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, module in sorted(imported_modules(tree)):
            if module.split(".")[0] in forbidden:
                found.append(f"{path.relative_to(package.parent)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_nothing_forbidden(package: str) -> None:
    root = ROOT / package
    # a renamed or moved package must not pass by having no files to check
    assert (root / "__init__.py").is_file()
    assert forbidden_imports(root, FORBIDDEN[package]) == []


def test_every_kind_of_forbidden_import_is_found(tmp_path: Path) -> None:
    package = tmp_path / "agent"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from . import sub\nimport collectors\n")
    (package / "sub" / "__init__.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import collector.app\n"
        "if TYPE_CHECKING:\n"
        "    from collector.store import ReadingStore\n"
        "def late():\n"
        "    from collector import handlers\n"
        "    import importlib\n"
        "    return importlib.import_module('collector.auth'), __import__('collector')\n"
    )
    assert forbidden_imports(package, {"collector"}) == [
        "agent/sub/__init__.py:2 imports collector.app",
        "agent/sub/__init__.py:4 imports collector.store",
        "agent/sub/__init__.py:6 imports collector",
        "agent/sub/__init__.py:8 imports collector",
        "agent/sub/__init__.py:8 imports collector.auth",
    ]
