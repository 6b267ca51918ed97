"""No function in zennas/ is longer than 120 lines (issue 17: "a function fits on a screen or two").

Length is `end_lineno - lineno + 1` of every def (methods and nested functions included), decorators
not counted. There is no allow-list: the last three long functions were split (issue 17).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 120


def _lengths(path: Path) -> dict[str, int]:
    """Qualified name -> lines of every function defined in `path`."""
    found: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    found[name] = max(found.get(name, 0), child.end_lineno - child.lineno + 1)
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), "")
    return found


def test_no_function_in_zennas_is_longer_than_120_lines():
    long = {}
    for path in sorted((ROOT / "zennas").rglob("*.py")):
        for name, lines in _lengths(path).items():
            if lines > LIMIT:
                long[f"{path.relative_to(ROOT).as_posix()}::{name}"] = lines
    listed = ", ".join(f"{name} ({lines})" for name, lines in sorted(long.items()))
    assert not long, f"functions over {LIMIT} lines (split them): {listed}"


def test_lengths_are_measured_per_function(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text(
        "def f():\n    def g():\n        pass\n    return g\n\n\nclass C:\n    def m(self):\n        pass\n"
    )
    assert _lengths(path) == {"f": 4, "f.g": 2, "C.m": 2}
