"""Packaging and hygiene: ruff clean, import direction, README/CI agreement, shipped data present."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert exe is not None, "ruff is not installed: pip install -e '.[test]'"
    return [exe]


def test_ruff_lint_is_clean():
    out = subprocess.run([*_ruff(), "check", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format_is_clean():
    out = subprocess.run([*_ruff(), "format", "--check", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("module", ["zennas", "zennas.arch", "zennas.counting", "zennas.models", "zennas.spaces"])
def test_torch_free_layers(module):
    code = (
        f"import sys, {module}; from zennas.arch import list_dialects; list_dialects();"
        "from zennas.counting import COUNTERS; COUNTERS.load();"
        "from zennas.spaces import list_spaces, get_space; [get_space(n) for n in list_spaces()];"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^    (python3 -m venv .venv && .*)$", readme, flags=re.M)
    assert len(commands) == 2, "README must give two set-up commands"
    install_and_run, install_and_test = commands
    assert "zennas " in install_and_run and "pytest" in install_and_test
    assert "torch==2.14.1" in install_and_test
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pytest" in ci and "README.md" in ci  # .ci/run extracts the command from the README


def test_runtime_data_ships_inside_the_package():
    assert resources.files("zennas").joinpath("data/zoo.json").is_file()
    assert resources.files("zennas").joinpath("data/NOTICE").is_file()
    tomls = [p.name for p in resources.files("search_spaces").iterdir() if p.name.endswith(".toml")]
    assert len(tomls) >= 7


def test_console_script_entry_point():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "zennas"]
    assert script.value == "cli:main"
