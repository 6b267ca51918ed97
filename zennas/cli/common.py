"""What every command group shares: one-line errors, parameter types, option decorators, progress.

An option that means the same in several commands is declared once here; a command names it with
its own help only where the meaning differs (`--resolution` defaults to the model's side for an
architecture, to the table's budget for a validation). Commands import the library inside their
bodies, so that `zennas --help` and `zennas info` do not pay for importing torch.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from zennas.errors import ZennasError

F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(fn: F) -> F:
    """Turn library errors into click's one-line `Error: ...` and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ZennasError as error:
            raise click.ClickException(" ".join(str(error).split())) from None
        except OSError as error:  # a path given from outside that the library did not check: still one line
            where = f"{error.filename}: " if error.filename else ""
            raise click.ClickException(f"{where}{error.strerror or error}") from None

    return wrapper  # type: ignore[return-value]


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


def arch_options(num_classes_help: str = "Classifier outputs; 0 = backbone only.", se: bool = True):
    """How ARCH is instantiated: its input side, classifier and SE modules (the model's own by default)."""
    chosen = [resolution_option(), num_classes_option(num_classes_help)]
    return options(*chosen, SE_OPTION) if se else options(*chosen)


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


def fmt(value: float | None, width: int = 12) -> str:
    """A number for a table cell: compact, aligned, '-' for missing."""
    if value is None or value != value:
        return f"{'-':>{width}}"
    return f"{value:>{width}.{max(1, min(6, width - 6))}g}"


@contextlib.contextmanager
def progress(total: int, label: str, status: Callable[[], str] | None = None) -> Iterator[Callable[[int], None]]:
    """Progress on stderr: a bar on a terminal, else a line per ~5 % (readable in a nohup log) with an ETA.

    `status` adds a short text (e.g. the best score so far). The ETA counts from the first progress
    reported, so a resumed job that starts part-way gets its own rate.
    """
    if sys.stderr.isatty():

        def show(_: object) -> str:
            return status() if status is not None else ""

        with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=status is not None,
                               item_show_func=show if status is not None else None) as bar:  # fmt: skip
            yield lambda done: bar.update(done - bar.pos)
        return
    start = time.monotonic()
    step = max(1, total // 20)
    seen: dict[str, int | None] = {"last": -1, "first": None}

    def advance(done: int) -> None:
        if seen["first"] is None:
            seen["first"] = done - 1
        if done // step != seen["last"] // step or done == total:
            seen["last"] = done
            elapsed = time.monotonic() - start
            eta = elapsed / max(1, done - seen["first"]) * (total - done)
            extra = f" {status()}" if status is not None else ""
            click.echo(f"{label} {done}/{total}{extra} ({elapsed:.0f} s, ETA {eta:.0f} s)", err=True)

    yield advance
