"""Options that several commands share, declared once (zennas.cli.fields generates the train options).

A command names a shared option with its own help only where the meaning differs (`--resolution`
defaults to the model's side for an architecture, to the table's budget for a validation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from zennas.cli.common import F
from zennas.errors import ZennasError


class _Device(click.ParamType):
    """A device name checked against this machine at parse time (zennas.device); passed on as text."""

    name = "device"

    def convert(self, value, param, ctx):
        from zennas.device import resolve_device

        try:
            resolve_device(value)
        except ZennasError as error:
            self.fail(str(error), param, ctx)
        return value


DEVICE = _Device()
# Seeds feed numpy generators, which take non-negative integers (torch's take up to 64 bits).
SEED = click.IntRange(0, 2**63 - 1)
POSITIVE = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)

# A run's --out must be new, empty, or a run of the same kind (zennas.io.claim_output_folder).
OVERWRITE_HELP = (
    "Start afresh in a non-empty --out: the files this command writes there (its checkpoint, history and results) "
    "are deleted first and then written anew; other files are left alone. Without it such a folder is refused."
)
TIMING_HELP = "graph: one CUDA-graph replay per run (GPU only); eager: kernels launched one by one by the host."
EXPORTER_CHOICE = click.Choice(["torchscript", "dynamo", "auto"])


def options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several option decorators as one; they show in `--help` in the order given."""

    def apply(fn: F) -> F:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


def json_option(help: str = "Print one JSON object.") -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help=help)


def seed_option(help: str | None = None) -> Callable[[F], F]:
    return click.option("--seed", type=SEED, default=0, show_default=True, help=help)


def device_option(default: str | None = None, help: str = "cpu, cuda, cuda:1 ...") -> Callable[[F], F]:
    return click.option("--device", type=DEVICE, default=default, show_default=default is not None, help=help)


def dialect_option(what: str = "ARCH") -> Callable[[F], F]:
    return click.option("--dialect", help=f"Parse {what} in this dialect instead of detecting it.")


def resolution_option(help: str = "Input side (default: the model's own).", **kwargs: Any) -> Callable[[F], F]:
    return click.option("--resolution", "-r", type=POSITIVE, help=help, **kwargs)


def num_classes_option(
    help: str | None = "Classifier outputs (default: the model's own).", **kwargs: Any
) -> Callable[[F], F]:
    return click.option("--num-classes", type=NON_NEGATIVE, help=help, **kwargs)


def batch_size_option(help: str, **kwargs: Any) -> Callable[[F], F]:
    return click.option("--batch-size", "-b", type=POSITIVE, help=help, **kwargs)


SE_OPTION = click.option(
    "--se/--no-se", "use_se", default=None, help="Force SE modules on or off (default: the model's own)."
)


def input_options(resolution_help: str, num_classes_help: str) -> Callable[[F], F]:
    """--resolution and --num-classes: the network's input side and classifier outputs."""
    return options(resolution_option(resolution_help), num_classes_option(num_classes_help))


def arch_options(num_classes_help: str = "Classifier outputs; 0 = backbone only.", se: bool = True):
    """How ARCH is instantiated: its input side, classifier and SE modules (the model's own by default)."""
    chosen = input_options("Input side (default: the model's own).", num_classes_help)
    return options(chosen, SE_OPTION) if se else chosen


def rounds_options(runs: int, rounds: int, what: str, measurement: str) -> Callable[[F], F]:
    """--runs and --rounds of an interleaved measurement: `rounds` passes over each chunk of `what`,
    `runs` timed runs of each member per pass; `measurement` (with its article) is the median of them all."""
    return options(
        click.option("--runs", type=POSITIVE, default=runs, show_default=True, help="Timed runs per round."),
        click.option("--rounds", type=POSITIVE, default=rounds, show_default=True,
                     help=f"Interleaved rounds over each chunk of {what} ({measurement}: median of runs x rounds)."),
    )  # fmt: skip


PROXY_OPTIONS = options(
    click.option("--mode", help="Shorthand for --option mode=MODE (e.g. zen's 'zennas' compatibility mode)."),
    click.option(
        "--option", "-o", "option_pairs", multiple=True, metavar="KEY=VALUE", help="Proxy option; repeatable."
    ),
)


def proxy_options(mode: str | None, option_pairs: tuple[str, ...]) -> dict[str, Any]:
    """The proxy options of --option KEY=VALUE pairs, with --mode as the `mode` option."""
    from zennas.bench import parse_options

    parsed = parse_options(option_pairs)
    if mode is not None:
        parsed["mode"] = mode
    return parsed
