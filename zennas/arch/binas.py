"""The BINAS / HardCoRe-NAS dialect (`binas`): timm MobileNetV3 arch-def lists of block strings.

Text is a Python literal: a list of stages, each a list of timm block strings, e.g.
`[['ds_r1_k3_s1_e1_c16_nre'], ['ir_r1_k5_s2_e3_c24_nre', 'ir_r1_k5_s1_e3_c24_nre_se0.25'], ...,
['cn_r1_k1_s1_c960']]` (REFERENCE.md section 6.1). It is read by walking `ast` literal nodes (never
`eval`) and every character outside the quoted strings must be a bracket, a comma or whitespace.

Block strings follow timm's `_decode_block_str`, minus its silent skip of unknown tokens:
`TYPE_r{repeats}_k{kernel}_s{stride}_e{expansion}_c{out_channels}[_nre][_se{ratio}]`, options in any
order, TYPE one of `ds` (depthwise-separable), `ir` (inverted residual), `cn` (conv-BN-act). `nre`
selects ReLU; without it a block uses the family default, hard-swish (`nhs` spells that default
explicitly and is dropped from canonical text). The canonical text is the form BINAS prints:
single quotes, options in the order r, k, s, e, c, nre, se; `e1` is always written for `ds`.

Stem width. Published text does not record the stem convolution's width; it is the first block's
`in_channels` in the IR and defaults to DEFAULT_STEM_WIDTH (32, BINAS/HardCoRe-NAS). Another width
(timm's MobileNetV3-Large uses 16) is written as a zennas extension, a leading stage `['stem_c16']`,
so that different networks never share canonical text or hash; the default is never written, so
published strings are unchanged. `with_stem_width(spec, 16)` changes it on a spec.

Repeats (`r`) stay in the IR as `repeats`, like timm's own arch defs: `ir_r2_...` and two `ir_r1_...`
strings are the same network but different texts; `expand_repeats` gives the one-string-per-block
form that BINAS prints and that the search space produces.

The module also holds the BINAS search-space layout (`BinasLayout`, `BINAS`) and its 255-binary
one-hot encoding (`encode`, `decode`); the sampling logic lives in `zennas.spaces.binas`.
"""

from __future__ import annotations

import ast
import functools
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import product
from typing import Any

import numpy as np

from zennas.arch import register_dialect
from zennas.arch.ir import ArchSpec, BlockSpec, check_channel_chain
from zennas.arch.ir import rechain as rechain_blocks
from zennas.arch.limits import BLOCKS, CHANNELS, DEPTH, EXPANSION, KERNEL, check_total_depth
from zennas.errors import ArchSyntaxError, ArchValueError, SearchSpaceError

DIALECT = "binas"
DEFAULT_STEM_WIDTH = 32
STRIDES = (1, 2)
BLOCK_TYPES = ("ds", "ir", "cn")
MAX_TEXT_CHARS = 100_000  # a real BINAS string is ~2k characters; bounds the work spent on junk input
_ALLOWED_OPTIONS = {
    "ds": ("r", "k", "s", "e", "c", "se"),
    "ir": ("r", "k", "s", "e", "c", "se"),
    "cn": ("r", "k", "s", "c"),
}
_REQUIRED_OPTIONS = {"ds": ("r", "k", "s", "c"), "ir": ("r", "k", "s", "e", "c"), "cn": ("r", "k", "s", "c")}
# At most 9 digits per number: the lexer never builds huge ints; zennas.arch.limits bounds the values.
_INT = re.compile(r"[0-9]{1,9}")
_NUM = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,20})?")
_OPTION = re.compile(r"([a-z]+)(.*)", re.DOTALL)
_GAP_CHARS = frozenset("[], \t\r\n\f")
_NEWLINE = re.compile(r"\r\n|\r|\n")  # the line breaks Python's tokenizer counts


# ---------------------------------------------------------------------------------------------
# IR


@dataclass(frozen=True, kw_only=True)
class BinasBlock(BlockSpec):
    """One timm block string: `repeats` copies, the first with `stride` and `in_channels`."""

    kernel: int
    repeats: int = 1
    stage: int = 0  # index of the inner list the string sits in
    relu: bool = False  # True: ReLU (`nre`); False: hard-swish, the family default

    kind = ""  # 'ds', 'ir' or 'cn' (a class attribute, not a field)

    @property
    def name(self) -> str:
        return block_to_string(self)

    @property
    def depth(self) -> int:
        return self.repeats


@dataclass(frozen=True, kw_only=True)
class BinasDS(BinasBlock):
    """`ds`: depthwise k x k -> BN -> act -> [SE] -> pointwise 1x1 -> BN (+ identity if shapes allow)."""

    se_ratio: float = 0.0  # 0 = no SE; SE width from the block's input channels

    kind = "ds"


@dataclass(frozen=True, kw_only=True)
class BinasIR(BinasBlock):
    """`ir`: 1x1 expand -> BN -> act -> dw k x k -> BN -> act -> [SE] -> 1x1 project -> BN (+ identity)."""

    expansion: float
    se_ratio: float = 0.0  # 0 = no SE; SE width from the expanded channels

    kind = "ir"


@dataclass(frozen=True, kw_only=True)
class BinasConv(BinasBlock):
    """`cn`: conv k x k -> BN -> act (no shortcut); BINAS's last block `cn_r1_k1_s1_c960`."""

    kind = "cn"


def _number_text(value: float) -> str:
    """Shortest plain-decimal text of a number: e3 (not e3.0), 0.25, never an exponent."""
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    text = repr(value)
    return text if "e" not in text else np.format_float_positional(value, unique=True, trim="-")


def block_to_string(block: BinasBlock) -> str:
    """Canonical timm block string of one block (options r, k, s, e, c, nre, se)."""
    parts = [block.kind, f"r{block.repeats}", f"k{block.kernel}", f"s{block.stride}"]
    if isinstance(block, BinasIR):
        parts.append(f"e{_number_text(block.expansion)}")
    elif isinstance(block, BinasDS):
        parts.append("e1")  # as BINAS prints its fixed first block
    parts.append(f"c{block.out_channels}")
    if block.relu:
        parts.append("nre")
    se_ratio = getattr(block, "se_ratio", 0.0)
    if se_ratio:
        parts.append(f"se{_number_text(se_ratio)}")
    return "_".join(parts)


def _normalise(value: float) -> float:
    """Integral floats become ints so that 3 and 3.0 print and hash alike."""
    return int(value) if float(value).is_integer() else float(value)


def block_from_string(
    text: str, *, in_channels: int, stage: int = 0, position: int = 0, block_index: int | None = None
) -> BinasBlock:
    """Decode one timm block string; `position` is the offset of its first character for messages."""
    where = f"block string {text!r}" if block_index is None else f"block {block_index} ({text!r})"
    options = _read_options(text, where, position)
    return _block_from_options(options, in_channels=in_channels, stage=stage)


@dataclass(frozen=True)
class _Options:
    """The options of one block string, as written, with where each starts: read into numbers on demand."""

    kind: str  # 'ds', 'ir' or 'cn'
    where: str  # how messages name the block string
    values: dict[str, str]  # option key -> the text after it ('k3' -> '3')
    positions: dict[str, int]  # option key -> offset of the option in the whole text
    relu: bool | None  # None: no activation option

    def integer(self, key: str, what: str) -> int:
        """Option `key` as an int; the lexer reads at most 9 digits, zennas.arch.limits bounds the value."""
        return int(self._spelled(key, what, _INT, "a positive integer of at most 9 digits"))

    def number(self, key: str, what: str) -> float:
        """Option `key` as a plain-decimal number (no exponents: the text must print back as written)."""
        return _normalise(float(self._spelled(key, what, _NUM, "a plain decimal number such as 3, 2.5 or 0.25")))

    def _spelled(self, key: str, what: str, pattern: re.Pattern[str], spelling: str) -> str:
        raw = self.values[key]
        if not pattern.fullmatch(raw):
            raise ArchSyntaxError(
                f"{self.where}: {what} ({key}) must be {spelling}, got {raw!r}",
                position=self.positions[key],
                token=key + raw,
            )
        return raw

    def invalid(self, key: str, message: str) -> ArchValueError:
        """A value error pointing at option `key`."""
        return ArchValueError(f"{self.where}: {message}", position=self.positions[key], token=key + self.values[key])


def _read_options(text: str, where: str, position: int) -> _Options:
    """Split a block string into its type and options; syntax only (unknown, doubled, missing options)."""
    if not text:
        raise ArchSyntaxError("empty block string; write e.g. 'ir_r1_k3_s2_e3_c24'", position=position, token=text)
    kind, *pieces = text.split("_")
    if kind not in BLOCK_TYPES:
        raise ArchSyntaxError(
            f"{where}: unknown block type {kind!r}; use ds (depthwise-separable), ir (inverted residual) "
            "or cn (conv-BN-act)",
            position=position,
            token=kind,
        )
    allowed = _ALLOWED_OPTIONS[kind]
    values: dict[str, str] = {}
    value_positions: dict[str, int] = {}
    relu: bool | None = None
    offset = position + len(kind) + 1
    for piece in pieces:
        if not piece:
            raise ArchSyntaxError(
                f"{where}: empty option (a doubled or trailing '_'); separate options with one '_'",
                position=offset,
                token=text,
            )
        if piece in ("nre", "nhs"):
            if relu is not None:
                raise ArchSyntaxError(
                    f"{where}: activation given twice; write nre (ReLU) once or nothing (hard-swish)",
                    position=offset,
                    token=piece,
                )
            relu = piece == "nre"
        else:
            match = _OPTION.fullmatch(piece)
            key = match.group(1) if match else piece
            if match is None or key not in allowed:
                hint = ""
                if piece.startswith("n") and piece.isalpha():
                    hint = "; only nre (ReLU) and nhs (hard-swish, the default) are supported activations"
                raise ArchSyntaxError(
                    f"{where}: unknown option {piece!r} for block type {kind}; allowed: "
                    f"{', '.join(o + '<n>' for o in allowed)}, nre{hint}",
                    position=offset,
                    token=piece,
                )
            if key in values:
                raise ArchSyntaxError(f"{where}: option {key!r} given twice; keep one", position=offset, token=piece)
            values[key] = match.group(2)
            value_positions[key] = offset  # where the option (and its token) starts
        offset += len(piece) + 1
    missing = [key for key in _REQUIRED_OPTIONS[kind] if key not in values]
    if missing:
        raise ArchSyntaxError(
            f"{where}: missing option(s) {', '.join(missing)}; block type {kind} needs "
            f"{', '.join(o + '<n>' for o in _REQUIRED_OPTIONS[kind])}",
            position=position,
            token=text,
        )
    return _Options(kind, where, values, value_positions, relu)


def _block_from_options(options: _Options, *, in_channels: int, stage: int) -> BinasBlock:
    """The block the options describe, once every value is a number in its range."""
    values = options.values
    repeats = options.integer("r", "repeats")
    kernel = options.integer("k", "kernel")
    stride = options.integer("s", "stride")
    out_channels = options.integer("c", "out channels")
    expansion = options.number("e", "expansion") if "e" in values else 1
    se_ratio = options.number("se", "SE ratio") if "se" in values else 0.0
    if repeats < 1:
        raise options.invalid("r", "repeats (r) must be at least 1")
    if kernel % 2 == 0:
        raise options.invalid("k", f"kernel (k) must be odd (1, 3, 5, 7, ...) for 'same' padding, got {kernel}")
    if stride not in STRIDES:
        raise options.invalid("s", f"stride (s) must be 1 or 2, got {stride}")
    if out_channels < 1:
        raise options.invalid("c", "out channels (c) must be at least 1")
    if "se" in values and not 0 < se_ratio <= 1:
        raise options.invalid("se", f"SE ratio must be in (0, 1], got {values['se']}; omit se for no SE")
    for key, what, value, limit in (
        ("r", "repeats (r)", repeats, DEPTH),
        ("k", "kernel (k)", kernel, KERNEL),
        ("c", "out channels (c)", out_channels, CHANNELS),
        ("e", "expansion (e)", expansion, EXPANSION),
    ):
        if key in values:
            limit.check(value, f"{options.where}: {what}", position=options.positions[key], token=key + values[key])
    common = dict(
        in_channels=in_channels,
        out_channels=out_channels,
        stride=stride,
        kernel=kernel,
        repeats=repeats,
        stage=stage,
        relu=bool(options.relu),
    )
    if options.kind == "ir":
        if expansion <= 0:
            raise options.invalid("e", f"expansion (e) must be positive, got {values['e']}")
        return BinasIR(**common, expansion=expansion, se_ratio=_normalise(se_ratio) if se_ratio else 0.0)
    if options.kind == "ds":
        if "e" in values and expansion != 1:
            raise options.invalid("e", f"a ds block has no expansion; write e1 or leave e out, got e{values['e']}")
        return BinasDS(**common, se_ratio=_normalise(se_ratio) if se_ratio else 0.0)
    return BinasConv(**common)


# ---------------------------------------------------------------------------------------------
# Whole texts


class _Lines:
    """Maps ast (line, UTF-8 byte column) pairs to character offsets in the original text."""

    def __init__(self, text: str, base: int):
        self.text = text
        self.base = base
        self.starts = [0] + [m.end() for m in _NEWLINE.finditer(text)]

    def offset(self, lineno: int, col: int) -> int:
        index = min(max(lineno, 1), len(self.starts)) - 1
        start = self.starts[index]
        end = self.starts[index + 1] if index + 1 < len(self.starts) else len(self.text)
        line = self.text[start:end]
        return self.base + start + len(line.encode("utf-8")[: max(col, 0)].decode("utf-8", errors="ignore"))


def _literal_stages(text: str) -> list[list[tuple[str, int]]]:
    """Stages as lists of (block string, offset of its first character in `text`)."""
    if not isinstance(text, str):
        raise ArchSyntaxError(f"BINAS text must be a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise ArchSyntaxError(
            f"BINAS text has {len(text)} characters, more than the {MAX_TEXT_CHARS} allowed; "
            "pass one architecture (a list of stages of block strings)"
        )
    stripped = text.strip()
    if not stripped:
        raise ArchSyntaxError("empty BINAS text; give a list of stages such as [['ds_r1_k3_s1_e1_c16_nre'], ...]")
    base = len(text) - len(text.lstrip())
    lines = _Lines(stripped, base)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes in junk text are errors below, not warnings
            tree = ast.parse(stripped, mode="eval")
    except SyntaxError as error:
        position = None
        if error.lineno is not None and error.offset is not None:
            # SyntaxError.offset counts characters (1-based), unlike ast's byte columns.
            position = min(lines.offset(error.lineno, 0) + max(error.offset - 1, 0), len(text))
        raise ArchSyntaxError(
            f"not a Python list literal ({error.msg}); write [['ds_r1_k3_s1_e1_c16_nre'], ['ir_...', ...], ...]",
            position=position,
        ) from None
    except (RecursionError, MemoryError):
        raise ArchSyntaxError("BINAS text is nested too deeply or too large to parse; give a list of stages") from None
    except ValueError as error:  # null bytes, lone surrogates
        raise ArchSyntaxError(f"BINAS text contains characters Python source cannot hold ({error})") from None

    def start(node: ast.AST) -> int:
        return lines.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]

    def end(node: ast.AST) -> int:
        return lines.offset(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]

    def segment(node: ast.AST) -> str:
        return text[start(node) : end(node)][:40]

    body = tree.body
    if not isinstance(body, ast.List):
        raise ArchSyntaxError(
            "BINAS text must be a list of stages, e.g. [['ds_r1_k3_s1_e1_c16_nre'], ['ir_r1_k3_s2_e3_c24_nre']]",
            position=start(body),
            token=segment(body),
        )
    if not body.elts:
        raise ArchSyntaxError("BINAS text has no stages; give at least one list of block strings", position=start(body))
    stages: list[list[tuple[str, int]]] = []
    spans: list[tuple[int, int]] = []
    for s, stage in enumerate(body.elts):
        if not isinstance(stage, ast.List):
            raise ArchSyntaxError(
                f"stage {s} must be a list of block strings such as ['ir_r1_k3_s2_e3_c24'], got {type(stage).__name__}",
                position=start(stage),
                token=segment(stage),
            )
        if not stage.elts:
            raise ArchSyntaxError(
                f"stage {s} is empty; give it at least one block string or remove it", position=start(stage)
            )
        items: list[tuple[str, int]] = []
        for item in stage.elts:
            if not (isinstance(item, ast.Constant) and isinstance(item.value, str)):
                raise ArchSyntaxError(
                    f"stage {s}: every item must be a quoted block string, got {type(item).__name__}",
                    position=start(item),
                    token=segment(item),
                )
            lo, hi = start(item), end(item)
            raw = text[lo:hi]
            if len(raw) < 2 or raw[0] not in "'\"" or raw[-1] != raw[0] or raw[1:-1] != item.value:
                raise ArchSyntaxError(
                    f"stage {s}: write each block string as one plain quoted string "
                    "(no prefixes, escapes, triple quotes or concatenation)",
                    position=lo,
                    token=raw[:40],
                )
            items.append((item.value, lo + 1))
            spans.append((lo, hi))
        stages.append(items)
    # Python literals allow comments, parentheses and line continuations; this grammar does not.
    cursor = 0
    for lo, hi in [*sorted(spans), (len(text), len(text))]:
        for index in range(cursor, lo):
            if text[index] not in _GAP_CHARS:
                raise ArchSyntaxError(
                    f"unexpected character {text[index]!r} outside the block strings; only brackets, commas "
                    "and whitespace may surround them",
                    position=index,
                    token=text[index],
                )
        cursor = hi
    return stages


_STEM = re.compile(r"stem_c([1-9][0-9]{0,8})")


def _blocks_from_text(text: str, stem_width: int) -> tuple[BinasBlock, ...]:
    blocks: list[BinasBlock] = []
    stages = _literal_stages(text)
    if stages and stages[0] and stages[0][0][0].startswith("stem_"):
        (marker, position), *rest = stages[0]
        match = _STEM.fullmatch(marker)
        if match is None or rest or len(stages) < 2:
            raise ArchSyntaxError(
                "a stem marker is a first stage of its own, ['stem_c<width>'], followed by the block stages",
                position=position,
                token=marker,
            )
        if stem_width != DEFAULT_STEM_WIDTH and stem_width != int(match.group(1)):
            raise ArchValueError(
                f"the text sets stem width {match.group(1)} but stem_width={stem_width} was passed; give one",
                position=position,
                token=marker,
            )
        stem_width, stages = int(match.group(1)), stages[1:]
        CHANNELS.check(stem_width, "stem width", position=position, token=marker)
    BLOCKS.check(sum(len(stage) for stage in stages), "block count")
    channels = stem_width
    for s, stage in enumerate(stages):
        for block_text, position in stage:
            block = block_from_string(
                block_text, in_channels=channels, stage=s, position=position, block_index=len(blocks)
            )
            blocks.append(block)
            channels = block.out_channels
    positions = [position for stage in stages for _, position in stage]
    check_total_depth([block.repeats for block in blocks], positions, what="repeats")
    return tuple(blocks)


def check_spec(spec: ArchSpec) -> None:
    """Raise ArchValueError/ChannelMismatchError unless `spec` is a well-formed BINAS network."""
    if spec.dialect != DIALECT:
        raise ArchValueError(f"expected a {DIALECT!r} spec, got dialect {spec.dialect!r}")
    if not spec.blocks:
        raise ArchValueError("a BINAS network needs at least one block")
    previous_stage = -1
    for index, block in enumerate(spec.blocks):
        if type(block) not in (BinasDS, BinasIR, BinasConv):
            raise ArchValueError(
                f"block {index} is a {type(block).__name__}; BINAS specs hold BinasDS, BinasIR and BinasConv blocks"
            )
        problem = _block_problem(block)
        stage_ok = block.stage in (previous_stage, previous_stage + 1) and (index > 0 or block.stage == 0)
        if problem is None and not stage_ok:
            problem = (
                f"stage index {block.stage!r} after stage {previous_stage}; stages count 0, 1, 2, ... in block order"
            )
        if problem is not None:
            raise ArchValueError(f"block {index} ({block.kind}): {problem}")
        previous_stage = block.stage
    check_channel_chain(spec.blocks, first_in=spec.blocks[0].in_channels)


def _block_problem(block: BinasBlock) -> str | None:
    """What is wrong with one block's fields, or None."""
    for what, limit in (("in_channels", CHANNELS), ("out_channels", CHANNELS), ("kernel", KERNEL), ("repeats", DEPTH)):
        value = getattr(block, what)
        if type(value) is not int or not 1 <= value <= limit.maximum:
            return f"{what} must be an integer in [1, {limit.maximum:,}] (the {limit.unit} limit), got {value!r}"
    if block.kernel % 2 == 0:
        return f"kernel must be odd, got {block.kernel}"
    if block.stride not in STRIDES or type(block.stride) is not int:
        return f"stride must be 1 or 2, got {block.stride!r}"
    if type(block.stage) is not int:
        return f"stage must be an integer, got {block.stage!r}"
    if type(block.relu) is not bool:
        return f"relu must be True (nre) or False (hard-swish), got {block.relu!r}"
    numbers = {}
    if isinstance(block, BinasDS | BinasIR):
        se_ratio = block.se_ratio
        if type(se_ratio) not in (int, float) or not 0 <= se_ratio <= 1:
            return f"se_ratio must be in [0, 1] (0 = no SE), got {se_ratio!r}"
        numbers["se_ratio"] = se_ratio
    if isinstance(block, BinasIR):
        e = block.expansion
        if type(e) not in (int, float) or not math.isfinite(e) or e <= 0:
            return f"expansion must be a positive number, got {e!r}"
        if e > EXPANSION.maximum:
            return f"expansion {e!r} exceeds the {EXPANSION.maximum}-times expansion limit; {EXPANSION.published}"
        numbers["expansion"] = e
    for what, value in numbers.items():
        if not _spellable(value):
            return (
                f"{what} {value!r} has no plain-decimal spelling of at most 9 integer and 20 fraction digits; "
                "round it so that the text parses back"
            )
    return None


@functools.lru_cache(maxsize=1024)
def _spellable(value: float) -> bool:
    """True if the canonical text of `value` parses back (block strings allow no exponents)."""
    return _NUM.fullmatch(_number_text(value)) is not None


def stem_width(spec: ArchSpec) -> int:
    """Width of the stem convolution: the first block's input channels."""
    return spec.blocks[0].in_channels


def with_stem_width(spec: ArchSpec, width: int) -> ArchSpec:
    """The same blocks behind a stem of `width` channels."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ArchValueError(f"stem width must be a positive integer, got {width!r}")
    return ArchSpec(DIALECT, rechain_blocks(spec.blocks, first_in=width))


def expand_repeats(spec: ArchSpec) -> ArchSpec:
    """One block per repeat (r1 everywhere): the form BINAS prints and the search space uses."""
    check_spec(spec)
    return ArchSpec(DIALECT, _expand(spec.blocks))


def _expand(blocks: tuple[BlockSpec, ...]) -> tuple[BlockSpec, ...]:
    out: list[BlockSpec] = []
    for block in blocks:
        assert isinstance(block, BinasBlock)  # guaranteed by check_spec; narrows the type
        if block.repeats == 1:
            out.append(block)
            continue
        out.append(replace(block, repeats=1))
        for _ in range(block.repeats - 1):
            out.append(replace(block, repeats=1, in_channels=block.out_channels, stride=1))
    return tuple(out)


class BinasDialect:
    """Parser/printer of timm MobileNetV3 arch-def lists (BINAS / HardCoRe-NAS output)."""

    name = DIALECT
    description = (
        "BINAS / HardCoRe-NAS timm arch defs: [['ds_r1_k3_s1_e1_c16_nre'], ['ir_r1_k5_s2_e3_c24_nre', ...], ...]"
    )

    def parse(self, text: str, *, rechain: bool = False, stem_width: int = DEFAULT_STEM_WIDTH) -> ArchSpec:
        """Parse strictly; `rechain` is accepted for the protocol (channels always follow the chain)."""
        if isinstance(stem_width, bool) or not isinstance(stem_width, int) or stem_width < 1:
            raise ArchValueError(f"stem width must be a positive integer, got {stem_width!r}")
        return ArchSpec(DIALECT, _blocks_from_text(text, stem_width))

    def format(self, spec: ArchSpec, *, canonical: bool = False) -> str:
        """The published form: single-quoted block strings grouped by stage."""
        check_spec(spec)
        stages: list[list[str]] = []
        for block in spec.blocks:
            assert isinstance(block, BinasBlock)  # guaranteed by check_spec; narrows the type
            if len(stages) <= block.stage:
                stages.append([])
            stages[-1].append(f"'{block_to_string(block)}'")
        if stem_width(spec) != DEFAULT_STEM_WIDTH:
            stages.insert(0, [f"'stem_c{stem_width(spec)}'"])
        return "[" + ", ".join("[" + ", ".join(stage) + "]" for stage in stages) + "]"

    def looks_like(self, text: str) -> bool:
        return re.match(r"\s*\[\s*\[\s*['\"]", text) is not None


# ---------------------------------------------------------------------------------------------
# The BINAS search-space layout and its one-hot encoding (REFERENCE 6.1)


@dataclass(frozen=True)
class StageChoice:
    """A searchable stage: output width, stride of its first block, activation."""

    out_channels: int
    stride: int
    relu: bool


BINAS_STAGES = (
    StageChoice(24, 2, True),
    StageChoice(40, 2, True),
    StageChoice(80, 2, False),
    StageChoice(112, 1, False),
    StageChoice(192, 2, False),
)


@dataclass(frozen=True)
class BinasLayout:
    """The fixed skeleton and per-block choices of a BINAS-style space.

    Networks: stem -> `ds_r1_k{first_kernel}_s1_e1_c{first_width}[_nre]` -> searchable stages ->
    `cn_r1_k1_s1_c{last_width}` (hard-swish). Block configurations are ordered as BINAS's
    `InvertedResidualElastic` enumerates them: expansion outermost, then kernel, then SE
    (index = (i_e * len(kernels) + i_k) * len(se_ratios) + i_se); with the defaults
    0 = e3 k3 no SE, 1 = e3 k3 SE, 2 = e3 k5 no SE, ..., 11 = e6 k5 SE. Depth index d_i picks depths[d_i].
    """

    stem_width: int = DEFAULT_STEM_WIDTH
    first_kernel: int = 3
    first_width: int = 16
    first_relu: bool = True
    stages: tuple[StageChoice, ...] = BINAS_STAGES
    depths: tuple[int, ...] = (2, 3, 4)
    expansions: tuple[float, ...] = (3, 4, 6)
    kernels: tuple[int, ...] = (3, 5)
    se_ratios: tuple[float, ...] = (0.0, 0.25)
    last_width: int = 960
    configs: tuple[tuple[float, int, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "configs", tuple(product(self.expansions, self.kernels, self.se_ratios)))

    @property
    def max_depth(self) -> int:
        """Most blocks a stage can hold (rows of alpha per stage)."""
        return max(self.depths)

    def size(self) -> int:
        """Number of distinct networks: prod over stages of sum over depths of configs**depth."""
        per_stage = sum(len(self.configs) ** d for d in self.depths)
        return per_stage ** len(self.stages)

    def make(self, depths: Sequence[int], configs: Sequence[Sequence[int]]) -> ArchSpec:
        """The network with `depths[s]` blocks in stage s, block b in configuration `configs[s][b]`."""
        blocks: list[BinasBlock] = [
            BinasDS(
                in_channels=self.stem_width,
                out_channels=self.first_width,
                stride=1,
                kernel=self.first_kernel,
                relu=self.first_relu,
                stage=0,
            )
        ]
        channels = self.first_width
        for s, (choice, depth, stage_configs) in enumerate(zip(self.stages, depths, configs, strict=True)):
            if len(stage_configs) != depth:
                raise SearchSpaceError(f"stage {s + 1}: {len(stage_configs)} block configs for depth {depth}")
            for b, config in enumerate(stage_configs):
                e, k, se = self.configs[config]
                blocks.append(
                    BinasIR(
                        in_channels=channels,
                        out_channels=choice.out_channels,
                        stride=choice.stride if b == 0 else 1,
                        kernel=k,
                        expansion=_normalise(e),
                        se_ratio=_normalise(se) if se else 0.0,
                        relu=choice.relu,
                        stage=s + 1,
                    )
                )
                channels = choice.out_channels
        blocks.append(
            BinasConv(
                in_channels=channels, out_channels=self.last_width, stride=1, kernel=1, stage=len(self.stages) + 1
            )
        )
        return ArchSpec(DIALECT, tuple(blocks))

    def decisions(self, spec: ArchSpec) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]:
        """(depth per stage, config index per active block), or SearchSpaceError naming the reason."""
        reason, result = self._analyse(spec)
        if result is None:
            raise SearchSpaceError(f"architecture is not in the BINAS space: {reason}")
        return result

    def why_not(self, spec: ArchSpec) -> str | None:
        """None if `spec` is a member, else a one-line reason."""
        return self._analyse(spec)[0]

    def _analyse(self, spec: ArchSpec) -> tuple[str | None, Any]:
        if not isinstance(spec, ArchSpec) or spec.dialect != DIALECT:
            return f"expected a {DIALECT!r} architecture, got {getattr(spec, 'dialect', type(spec).__name__)!r}", None
        try:
            check_spec(spec)
        except ArchValueError as error:
            return str(error), None
        if stem_width(spec) != self.stem_width:
            return f"stem width is {stem_width(spec)}, the space fixes {self.stem_width}", None
        flat = _expand(spec.blocks)
        by_stage: list[list[BinasBlock]] = []
        for block in flat:
            assert isinstance(block, BinasBlock)
            if len(by_stage) <= block.stage:
                by_stage.append([])
            by_stage[-1].append(block)
        n = len(self.stages)
        if len(by_stage) != n + 2:
            return f"{len(by_stage)} stages; the space has {n + 2} (fixed ds, {n} searchable, fixed cn)", None
        first = by_stage[0]
        want_first = BinasDS(
            in_channels=self.stem_width,
            out_channels=self.first_width,
            stride=1,
            kernel=self.first_kernel,
            relu=self.first_relu,
        )
        if first != [want_first]:
            got = ", ".join(block_to_string(b) for b in first)
            return f"the first stage must be ['{block_to_string(want_first)}'], got [{got}]", None
        last = by_stage[-1]
        want_last = f"cn_r1_k1_s1_c{self.last_width}"
        if len(last) != 1 or block_to_string(last[0]) != want_last:
            got = ", ".join(block_to_string(b) for b in last)
            return f"the last stage must be [{want_last!r}], got [{got}]", None
        depths: list[int] = []
        configs: list[tuple[int, ...]] = []
        for s, (choice, blocks) in enumerate(zip(self.stages, by_stage[1:-1], strict=True), start=1):
            if len(blocks) not in self.depths:
                return f"stage {s} has {len(blocks)} blocks; allowed depths: {_join(self.depths)}", None
            stage_configs: list[int] = []
            for b, block in enumerate(blocks):
                reason = self._block_reason(s, b, block, choice)
                if reason is not None:
                    return f"stage {s} block {b} ({block_to_string(block)}) {reason}", None
                assert isinstance(block, BinasIR)  # _block_reason checked it; narrows the type
                stage_configs.append(self.configs.index((block.expansion, block.kernel, block.se_ratio)))
            depths.append(len(blocks))
            configs.append(tuple(stage_configs))
        return None, (tuple(depths), tuple(configs))

    def _block_reason(self, s: int, b: int, block: BinasBlock, choice: StageChoice) -> str | None:
        if not isinstance(block, BinasIR):
            return "must be an ir block"
        if block.out_channels != choice.out_channels:
            return f"has {block.out_channels} out channels; stage {s} has {choice.out_channels}"
        want_stride = choice.stride if b == 0 else 1
        if block.stride != want_stride:
            return f"has stride {block.stride}; it must be {want_stride}"
        if block.relu != choice.relu:
            return f"has the wrong activation; stage {s} uses " + (
                "ReLU (nre)" if choice.relu else "hard-swish (no nre)"
            )
        if block.expansion not in self.expansions:
            return f"has expansion {_number_text(block.expansion)}; allowed: {_join(self.expansions)}"
        if block.kernel not in self.kernels:
            return f"has kernel {block.kernel}; allowed: {_join(self.kernels)}"
        if block.se_ratio not in self.se_ratios:
            return f"has SE ratio {_number_text(block.se_ratio)}; allowed: {_join(self.se_ratios)}"
        return None

    def encode(self, spec: ArchSpec) -> tuple[np.ndarray, np.ndarray]:
        """One-hot (alpha [stages*max_depth, configs], beta [stages, depths]) int8 arrays of a member.

        Rows of alpha for blocks beyond a stage's depth hold config 0 (the smallest block), the state
        BINAS starts unmeasured decisions from; they do not affect the network.
        """
        depths, configs = self.decisions(spec)
        alpha = np.zeros((len(self.stages) * self.max_depth, len(self.configs)), dtype=np.int8)
        beta = np.zeros((len(self.stages), len(self.depths)), dtype=np.int8)
        for s, (depth, stage_configs) in enumerate(zip(depths, configs, strict=True)):
            beta[s, self.depths.index(depth)] = 1
            for b in range(self.max_depth):
                alpha[s * self.max_depth + b, stage_configs[b] if b < depth else 0] = 1
        return alpha, beta

    def decode(self, alpha: Any, beta: Any) -> ArchSpec:
        """The member that one-hot `alpha` and `beta` (shaped as `encode` returns, or flat) describe."""
        a = _one_hot_rows(alpha, len(self.stages) * self.max_depth, len(self.configs), "alpha")
        b = _one_hot_rows(beta, len(self.stages), len(self.depths), "beta")
        depths = [self.depths[int(row.argmax())] for row in b]
        configs = [
            tuple(int(a[s * self.max_depth + j].argmax()) for j in range(depth)) for s, depth in enumerate(depths)
        ]
        return self.make(depths, configs)


def _join(values: Sequence[Any]) -> str:
    return ", ".join(_number_text(v) for v in values)


def _one_hot_rows(value: Any, rows: int, cols: int, what: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception as error:  # ragged nested lists and the like
        raise SearchSpaceError(f"{what} must be an array of shape ({rows}, {cols}); {error}") from None
    if array.size != rows * cols or array.ndim not in (1, 2) or (array.ndim == 2 and array.shape != (rows, cols)):
        raise SearchSpaceError(f"{what} must have shape ({rows}, {cols}) or ({rows * cols},), got {array.shape}")
    if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise SearchSpaceError(f"{what} must hold numbers 0 and 1, got dtype {array.dtype}")
    array = array.reshape(rows, cols)
    if not np.all((array == 0) | (array == 1)) or not np.all(array.sum(axis=1) == 1):
        bad = next(i for i in range(rows) if not (np.all((array[i] == 0) | (array[i] == 1)) and array[i].sum() == 1))
        raise SearchSpaceError(f"{what} row {bad} is not one-hot (exactly one 1, the rest 0): {array[bad].tolist()}")
    return array


BINAS = BinasLayout()


def encode(spec: ArchSpec) -> tuple[np.ndarray, np.ndarray]:
    """255-binary encoding of a member of the published BINAS space: alpha (20, 12), beta (5, 3)."""
    return BINAS.encode(spec)


def decode(alpha: Any, beta: Any) -> ArchSpec:
    """The published-BINAS-space network of one-hot alpha (20, 12) and beta (5, 3)."""
    return BINAS.decode(alpha, beta)


register_dialect(BinasDialect())
