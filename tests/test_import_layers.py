"""The import contracts of pyproject.toml hold (layers, no cycles, torch-free layers), lazy imports included."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # the venv's, installed by the `test` extra


def _lint_imports(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", *args], capture_output=True, text=True, cwd=ROOT)


def test_import_contracts_are_kept():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    out = _lint_imports()
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"Contracts: {len(contracts)} kept, 0 broken." in out.stdout


def test_lazy_imports_are_part_of_the_checked_graph(tmp_path):
    # zennas.api imports zennas.build only inside create_model: a contract against it must break.
    config = tmp_path / "lazy.toml"
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["zennas"]\n\n[[tool.importlinter.contracts]]\nname = "lazy probe"\n'
        'type = "forbidden"\nsource_modules = ["zennas.api"]\nforbidden_modules = ["zennas.build"]\n'
    )
    out = _lint_imports("--config", str(config))
    assert out.returncode == 1 and "zennas.api -> zennas.build" in out.stdout, out.stdout + out.stderr


def test_the_search_loads_no_proxies_latency_spaces_or_torch():
    # The contract checks the import statements; this checks what importing the search really loads.
    code = (
        "import sys\nimport zennas.search.run, zennas.search.milp, zennas.search.parallel, zennas.search.cost\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith(('zennas.proxies', "
        "'zennas.latency', 'zennas.spaces', 'zennas.wiring'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
