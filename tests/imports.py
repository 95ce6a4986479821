"""Helpers for the import-rule tests: what a source file imports, what importing modules loads."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_names(path: Path) -> set[str]:
    """Every module an `import` statement in `path` names, at any depth (function-level imports too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def forbidden_imports(package: str, forbidden: tuple[str, ...]) -> set[str]:
    """`file: module` for each import, in the sources under the folder `package`, of a `forbidden` package."""
    return {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / package).rglob("*.py")
        for name in imported_names(path)
        if name.split(".")[0] in forbidden
    }


def loaded_after_importing(modules: list[str]) -> set[str]:
    """The names in sys.modules of a fresh interpreter after it imports `modules`."""
    code = f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\nprint(*sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())
