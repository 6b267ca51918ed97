"""Lexer for the `NAME(label|a,b,c)NAME(...)` token streams of the ZenNAS and GENet dialects."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zennas.arch.limits import BLOCKS, check_text_size, check_total_depth
from zennas.errors import ArchSyntaxError, ArchValueError

if TYPE_CHECKING:
    from zennas.arch.ir import ArchSpec, BlockSpec

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?")
_MAX_DIGITS = 18  # every limit in zennas.arch.limits has far fewer; the field's own check names its limit


@dataclass(frozen=True)
class RawToken:
    """One `NAME(...)` token: its name, optional label, argument texts and source positions."""

    name: str
    label: str | None
    args: tuple[str, ...]
    position: int  # offset of NAME in the stripped text
    arg_positions: tuple[int, ...]

    def int_arg(self, index: int, what: str) -> int:
        """Argument `index` as an int, or an error naming the token and position."""
        text = self.args[index]
        if not _INT.fullmatch(text):
            raise self._arg_error(ArchSyntaxError, index, f"{what} must be an integer, got {text!r}")
        digits = len(text.lstrip("+-").lstrip("0"))
        if digits > _MAX_DIGITS:  # int() of thousands of digits is slow, then refused by Python itself
            raise self._arg_error(
                ArchValueError,
                index,
                f"{what} {text!r} has {digits:,} digits, far beyond any limit zennas can count "
                f"and build (every architecture number has at most {_MAX_DIGITS} digits)",
            )
        return int(text)

    def float_arg(self, index: int, what: str) -> float:
        """Argument `index` as a finite float, or an error naming the token and position."""
        text = self.args[index]
        if not _FLOAT.fullmatch(text):
            raise self._arg_error(ArchSyntaxError, index, f"{what} must be a number, got {text!r}")
        value = float(text)
        if not math.isfinite(value):  # '1e400' is a valid spelling of a float that overflows to inf
            raise self._arg_error(
                ArchValueError,
                index,
                f"{what} {text!r} overflows a float to infinity; write a finite number "
                "(published values are small ratios such as 0.25 or 6.0)",
            )
        return value

    def _arg_error(self, kind: type[ArchSyntaxError], index: int, message: str) -> ArchSyntaxError:
        """An error of `kind` prefixed by the token name, pointing at argument `index`."""
        return kind(f"{self.name}: {message}", position=self.arg_positions[index], token=self.name)

    def expect_arity(self, names: tuple[str, ...]) -> None:
        """Raise unless the token has exactly one argument per entry of `names`."""
        if len(self.args) != len(names):
            raise ArchSyntaxError(
                f"{self.name} takes {len(names)} arguments ({','.join(names)}), got {len(self.args)}",
                position=self.position,
                token=self.name,
            )


def tokenize(text: str) -> list[RawToken]:
    """Split `text` (surrounding whitespace ignored) into tokens; strict about every character."""
    check_text_size(text)
    s = text.strip()
    if not s:
        raise ArchSyntaxError("empty architecture text")
    tokens: list[RawToken] = []
    i = 0
    while i < len(s):
        if len(tokens) == BLOCKS.maximum:
            BLOCKS.check(len(tokens) + 1, "token count", position=i)
        match = _NAME.match(s, i)
        if match is None:
            raise ArchSyntaxError("expected a block name such as SuperResK3K3", position=i, token=s[i : i + 12])
        name, start = match.group(), i
        i = match.end()
        if i >= len(s) or s[i] != "(":
            raise ArchSyntaxError(f"expected '(' after block name {name}", position=i, token=name)
        close = _matching_paren(s, i)
        inner_start = i + 1
        inner = s[inner_start:close]
        label = None
        if "|" in inner:
            label, _, rest = inner.partition("|")
            inner_start += len(label) + 1
            inner = rest
            if "(" in label or ")" in label:
                raise ArchSyntaxError("a block label may not contain parentheses", position=i + 1, token=name)
        if "(" in inner:
            raise ArchSyntaxError(
                f"{name}: nested blocks (containers) are not supported in this dialect",
                position=inner_start + inner.index("("),
                token=name,
            )
        args, positions = _split_args(inner, inner_start, name)
        tokens.append(RawToken(name, label, tuple(args), start, tuple(positions)))
        i = close + 1
    return tokens


def parse_blocks(
    text: str, block_from_token: Callable[[RawToken], BlockSpec]
) -> tuple[tuple[BlockSpec, ...], tuple[int, ...], tuple[str | None, ...]]:
    """Blocks, positions and labels of a token-stream text: the reading both token dialects share."""
    check_no_stray_close(text)
    tokens = tokenize(text)
    blocks = tuple(block_from_token(tok) for tok in tokens)
    positions = tuple(tok.position for tok in tokens)
    check_total_depth([block.depth for block in blocks], positions, what="sub_layers")
    return blocks, positions, tuple(tok.label for tok in tokens)


def _matching_paren(s: str, open_index: int) -> int:
    depth = 0
    for j in range(open_index, len(s)):
        if s[j] == "(":
            depth += 1
        elif s[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    raise ArchSyntaxError(
        "unbalanced parentheses: '(' is never closed", position=open_index, token=s[:open_index][-20:]
    )


def _split_args(inner: str, offset: int, name: str) -> tuple[list[str], list[int]]:
    if inner.strip() == "":
        raise ArchSyntaxError(f"{name} has no arguments", position=offset, token=name)
    args: list[str] = []
    positions: list[int] = []
    pos = offset
    for part in inner.split(","):
        stripped = part.strip()
        if not stripped:
            raise ArchSyntaxError(f"{name}: empty argument", position=pos, token=name)
        args.append(stripped)
        positions.append(pos + (len(part) - len(part.lstrip())))
        pos += len(part) + 1
    return args, positions


def format_tokens(spec: ArchSpec, *, canonical: bool, format_arg: Callable[[object], str] = str) -> str:
    """`NAME(label|a,b,c)...` for blocks with `name` and `args()`; labels only when not canonical."""
    labels = spec.source if (spec.source is not None and not canonical) else (None,) * len(spec.blocks)
    parts = []
    for block, label in zip(spec.blocks, labels, strict=True):
        prefix = "" if label is None else f"{label}|"
        parts.append(f"{block.name}({prefix}{','.join(format_arg(a) for a in block.args())})")
    return "".join(parts)


def looks_like_tokens(text: str) -> bool:
    """Syntactic sniff for token-stream dialects: the text starts with an identifier."""
    return re.match(r"\s*[A-Za-z_]", text) is not None


def check_no_stray_close(text: str) -> None:
    """Raise on a ')' that closes nothing (tokenize would report it as a bad name)."""
    depth = 0
    for j, ch in enumerate(text.strip()):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ArchSyntaxError("unbalanced parentheses: ')' closes nothing", position=j, token=")")
