"""No function in zennas/ is longer than 120 lines (issue 17: "a function fits on a screen or two").

Length is `end_lineno - lineno + 1` of every def (methods and nested functions included), decorators
not counted. The functions still too long are named in ALLOWED; the list may only shrink: the test
fails for a long function not on it, and for one on it that is no longer long (remove it then).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 120
# "path/relative/to/the/repository.py::Qualified.name": functions over LIMIT lines, to be split.
ALLOWED: frozenset[str] = frozenset({
    "zennas/arch/tinynas.py::_block_from_dict",
    "zennas/arch/binas.py::block_from_string",
})  # fmt: skip


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


def _long_functions() -> dict[str, int]:
    long = {}
    for path in sorted((ROOT / "zennas").rglob("*.py")):
        for name, lines in _lengths(path).items():
            if lines > LIMIT:
                long[f"{path.relative_to(ROOT).as_posix()}::{name}"] = lines
    return long


def test_no_function_in_zennas_is_longer_than_120_lines():
    long = _long_functions()
    new = {name: lines for name, lines in long.items() if name not in ALLOWED}
    assert not new, "functions over 120 lines (split them): " + ", ".join(f"{n} ({k})" for n, k in sorted(new.items()))


def test_the_allow_list_only_shrinks():
    long = _long_functions()
    done = sorted(name for name in ALLOWED if name not in long)
    assert not done, f"no longer over {LIMIT} lines (or gone), remove from ALLOWED: {', '.join(done)}"


def test_lengths_are_measured_per_function(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text(
        "def f():\n    def g():\n        pass\n    return g\n\n\nclass C:\n    def m(self):\n        pass\n"
    )
    assert _lengths(path) == {"f": 4, "f.g": 2, "C.m": 2}
