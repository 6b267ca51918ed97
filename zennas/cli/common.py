"""What every command shares besides its options: one-line errors, JSON output, number cells, progress.

Commands import the library inside their bodies, so that `zennas --help` and `zennas info` do not
pay for importing torch.
"""

from __future__ import annotations

import contextlib
import functools
import json
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


def echo_json(value: Any) -> None:
    """Print `value` as one line of JSON (every command's --json)."""
    click.echo(json.dumps(value))


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
