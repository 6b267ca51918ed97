"""Shared by the benchmark scripts: append a result table to RESULTS.md with date, machine and command."""

from __future__ import annotations

import datetime
import platform
import sys
from pathlib import Path


def machine_line() -> str:
    """Host, CPU, Python and (if imported) torch version and thread count."""
    line = f"{platform.node()} / {platform.processor() or platform.machine()} / Python {platform.python_version()}"
    torch = sys.modules.get("torch")
    if torch is not None:
        line += f" / torch {torch.__version__} / {torch.get_num_threads()} thread(s)"
    return line


def append_result(title: str, table: str) -> None:
    """Append `table` under a dated `## title` heading, with the machine and the exact command."""
    command = "python " + " ".join(sys.argv)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = Path(__file__).with_name("RESULTS.md")
    with out.open("a") as handle:
        handle.write(f"\n## {title} — {stamp}\n\nmachine: {machine_line()}\ncommand: `{command}`\n\n{table}\n")
