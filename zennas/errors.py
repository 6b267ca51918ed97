"""One exception hierarchy for everything zennas raises on bad input.

Every message says what is wrong and how to fix it; the CLI prints it on one line.
"""

from __future__ import annotations

import re

EXCERPT_CHARS = 80  # user input echoed in a message is cut to this many characters
MAX_MESSAGE_CHARS = 2_000  # whatever a message echoes, it stays printable on one terminal screen
_LONG_RUN = re.compile(r"\S{201,}")  # longer than any word of ours or any usual path: echoed input


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` if it is short, else its first `limit` characters, an ellipsis and its total length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def bounded_message(message: str) -> str:
    """`message` with every overlong run of echoed input cut to an excerpt, and the whole capped.

    Messages quote the input they reject (a token, a value, a file name); a 50 MB argument must not
    make a 50 MB message, so this is applied to every ZennasError rather than at each raise.
    """
    if len(message) <= 200:
        return message
    message = _LONG_RUN.sub(lambda m: _cut_run(m.group()), message)
    if len(message) > MAX_MESSAGE_CHARS:
        cut = len(message) - MAX_MESSAGE_CHARS
        message = f"{message[:1_400]} ... [{cut:,} characters cut] ... {message[-MAX_MESSAGE_CHARS + 1_400 :]}"
    return message


def _cut_run(run: str) -> str:
    """An excerpt of one overlong run; a quoted value keeps its quotes (and what follows them)."""
    close = run.rfind(run[0], 1) if run[0] in "'\"" else -1
    if close <= 0:
        return excerpt(run)
    inner = run[1:close]
    return f"{run[0]}{inner[:EXCERPT_CHARS]}...{run[0]} ({len(inner):,} characters){run[close + 1 :]}"


class ZennasError(Exception):
    """Base class of every error zennas raises on purpose; its message is bounded (`bounded_message`)."""

    def __init__(self, *args: object, **kwargs: object):
        if args and isinstance(args[0], str):
            args = (bounded_message(args[0]), *args[1:])
        super().__init__(*args, **kwargs)


class ArchSyntaxError(ZennasError, ValueError):
    """An architecture text does not follow its dialect's grammar."""

    def __init__(self, message: str, *, position: int | None = None, token: str | None = None):
        self.position = position
        self.token = token
        where = ""
        if position is not None:
            where = f" at position {position}"
        if token is not None:
            where += f" (near {excerpt(token, 40)!r})"
        super().__init__(f"{message}{where}")


class UnknownTokenError(ArchSyntaxError):
    """A block/op/class name is not in the dialect's vocabulary."""


class ArchValueError(ArchSyntaxError):
    """An architecture text parses but describes an impossible network (bad stride, kernel, width)."""


class ChannelMismatchError(ArchValueError):
    """A block's input channels differ from the previous block's output channels."""


class UnknownDialectError(ZennasError, ValueError):
    """A dialect name is not registered, or no dialect accepts the text."""


class UnknownModelError(ZennasError, LookupError):
    """A model name is not in the registry."""

    def __str__(self) -> str:  # LookupError would quote the message like a dict key
        return str(self.args[0])


class SearchSpaceError(ZennasError, ValueError):
    """A search space cannot be built or an architecture is not a member of it."""


class ConfigError(ZennasError, ValueError):
    """An option or argument has an invalid value."""


class OutputError(ZennasError, OSError):
    """An output file or folder cannot be written (a folder where a file is expected, read-only, full)."""


class ProxyError(ZennasError, RuntimeError):
    """A zero-cost proxy could not score an architecture (the message names the architecture)."""


class DegenerateNetworkError(ProxyError):
    """The network's output does not depend on its input, so an input-sensitivity proxy is undefined.

    Proxies raise it; `zennas.proxies.score` turns it into a result flagged `degenerate=True`
    (never a sentinel number), and the validation bench states how such results are ranked.
    """


class DependencyError(ZennasError, ImportError):
    """An optional dependency (TensorRT, onnxruntime-gpu, Ray, ...) needed for this path is missing.

    The message names the package and the pip command that installs it.
    """


class ExportError(ZennasError, RuntimeError):
    """A network could not be exported to ONNX, or the exported file disagrees with PyTorch."""


class LatencyError(ZennasError, ValueError):
    """A latency table is malformed, or a configuration lies outside the table (the message names it)."""


class TimingError(ZennasError, RuntimeError):
    """A timing engine could not measure a network on the requested device/precision."""
