"""The house rules of docs/architecture.md, checked on every run so they hold on main rather
than being hoped for: the import layers (import-linter's contracts in pyproject.toml), no
module past 600 lines, no function past 80 lines outside bench/, no private name imported
across modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def project_modules() -> list[Path]:
    """Every non-test, non-migration Python file of the project."""
    skip = {".venv", "tests", "migrations", "var", "build", "node_modules", "__pycache__"}
    return sorted(
        path
        for path in ROOT.rglob("*.py")
        if not skip & set(path.relative_to(ROOT).parts)
    )


def test_the_scan_sees_the_apps():
    names = {str(p.relative_to(ROOT)) for p in project_modules()}
    assert {"manage.py", "palmsweb/settings.py", "training/models.py"} <= names
    assert not any(name.startswith("tests/") or "/migrations/" in name for name in names)


def test_no_module_is_longer_than_600_lines():
    long = {
        str(path.relative_to(ROOT)): n
        for path in project_modules()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split these modules (docs/architecture.md): {long}"


def functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_no_function_is_longer_than_80_lines_outside_bench():
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)"
        for path in project_modules()
        if path.relative_to(ROOT).parts[0] != "bench"
        for node in functions(ast.parse(path.read_text()))
        if (length := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES
    ]
    assert not long, long


def private_imports(tree: ast.AST) -> list[str]:
    """``from x import _name`` of another module (``__future__`` and dunders aside)."""
    return [
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__"
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]


def test_no_private_name_is_imported_across_modules():
    found = {
        str(path.relative_to(ROOT)): names
        for path in project_modules()
        if (names := private_imports(ast.parse(path.read_text())))
    }
    assert not found, found


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from a.b import _hidden, shown", ["a.b._hidden"]),
        ("from __future__ import annotations\nfrom a import __version__", []),
        ("def f():\n    from a import _lazy\n", ["a._lazy"]),
    ],
)
def test_the_private_import_check_finds_what_it_should(source, expected):
    assert private_imports(ast.parse(source)) == expected


def test_import_layers_hold():
    """import-linter's contracts (pyproject.toml): nothing imports upward."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
