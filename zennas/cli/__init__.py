"""The zennas command line: one click group; each command group lives in its own module.

A command parses its options, calls the library and prints; options that several commands share
are declared once in `zennas.cli.common`, and the train options are generated from the task's
config dataclass (`zennas.cli.fields`). The root `cli.py` is the installed entry point.
"""

from __future__ import annotations

import click

from zennas.cli.describe import info, models, spaces
from zennas.cli.export import export_command
from zennas.cli.latency import latency_group, profile_command, tables_command
from zennas.cli.score import bench, score_command
from zennas.cli.search import search_command
from zennas.cli.train import eval_command, train_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="zennas")
def main() -> None:
    """Zero-shot, hardware-aware neural architecture search."""


for _command in (info, spaces, models, score_command, export_command, bench, tables_command, latency_group,
                 search_command, profile_command, train_group, eval_command):  # fmt: skip
    main.add_command(_command)

__all__ = ["main"]
