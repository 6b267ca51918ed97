"""The NAS-Bench-201 cell dialect (`nb201`): `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`.

A NAS-Bench-201 network is one 4-node cell repeated in a fixed skeleton (REFERENCE.md section 4),
so an :class:`ArchSpec` of this dialect holds a single :class:`NB201Cell` block with the six edge
operations in string order. Besides parsing and printing, this module knows the benchmark's
official index order (0..15624), degenerate cells and the benchmark's isomorphism convention.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache

from zennas.arch import register_dialect
from zennas.arch.ir import ArchSpec, BlockSpec
from zennas.arch.limits import check_text_size
from zennas.errors import ArchSyntaxError, ArchValueError, ConfigError

DIALECT = "nb201"
# Official operation order of NAS-Bench-201 / AutoDL: it fixes the index order below.
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (target node, source node) of the six edges, in string order: 1<-0; 2<-0, 2<-1; 3<-0, 3<-1, 3<-2.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NUM_NODES = 4
NUM_CELLS = len(OPS) ** len(EDGES)  # 15,625
WIDTH = 16  # C: channels of the first stage (the cell's channels in stage 1)
CELLS_PER_STAGE = 5  # N
LAYERS = 3 * CELLS_PER_STAGE + 2  # 15 cells + 2 reduction blocks
EXAMPLE = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|"
_SHUFFLE_SEED = 88  # the benchmark shuffled its enumeration once with this seed


@dataclass(frozen=True, kw_only=True)
class NB201Cell(BlockSpec):
    """The cell genotype: six edge ops in string order; stands for the whole TinyNetwork.

    The BlockSpec base fields describe the cell of the first stage (16 -> 16 channels, stride 1);
    `depth` is the skeleton's 17 layers (15 cells + 2 reduction blocks) so `ArchSpec.layers == 17`.
    """

    ops: tuple[str, ...]
    in_channels: int = WIDTH
    out_channels: int = WIDTH
    stride: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.ops, tuple) or len(self.ops) != len(EDGES):
            raise ArchValueError(f"an NB201 cell has a tuple of {len(EDGES)} edge ops, got {self.ops!r}")
        for op in self.ops:
            if op not in OPS:
                raise ArchValueError(f"unknown NB201 operation {op!r}; allowed: {', '.join(OPS)}", token=str(op))
        if (self.in_channels, self.out_channels, self.stride) != (WIDTH, WIDTH, 1):
            raise ArchValueError(
                f"an NB201 cell is {WIDTH} -> {WIDTH} channels at stride 1 (the skeleton fixes widths); "
                f"got {self.in_channels} -> {self.out_channels}, stride {self.stride}"
            )

    @property
    def name(self) -> str:
        return "NB201Cell"

    @property
    def depth(self) -> int:
        return LAYERS

    def node_inputs(self, node: int) -> tuple[tuple[int, str], ...]:
        """(source node, op) pairs feeding `node` (1..3), in string order."""
        return tuple((src, op) for (dst, src), op in zip(EDGES, self.ops, strict=True) if dst == node)


def _fail(message: str, position: int, token: str) -> ArchSyntaxError:
    return ArchSyntaxError(message, position=position, token=token)


def _split(text: str, sep: str, start: int) -> list[tuple[int, str]]:
    """Pieces of `text` between separators, each with its offset in the whole string."""
    pieces: list[tuple[int, str]] = []
    offset = start
    for piece in text.split(sep):
        pieces.append((offset, piece))
        offset += len(piece) + len(sep)
    return pieces


def parse_ops(text: str) -> tuple[str, ...]:
    """The six edge ops of a cell string, strictly checked (positions are offsets in `text`)."""
    if not isinstance(text, str):
        raise ArchSyntaxError(f"a NAS-Bench-201 cell string must be a str, got {type(text).__name__}")
    check_text_size(text)
    body = text.strip()
    lead = len(text) - len(text.lstrip())
    if not body:
        raise ArchSyntaxError(f"empty NAS-Bench-201 cell string; write one such as {EXAMPLE}", position=0)
    for offset, char in enumerate(body):
        if char.isspace():
            raise _fail("whitespace inside a NAS-Bench-201 cell string; remove it", lead + offset, char)
    groups = _split(body, "+", lead)
    if len(groups) != 3:
        where = groups[3][0] - 1 if len(groups) > 3 else lead + len(body)
        raise _fail(
            f"a NAS-Bench-201 cell string has 3 node groups joined by '+' "
            f"(|op~0|+|op~0|op~1|+|op~0|op~1|op~2|), got {len(groups)}",
            where,
            "+",
        )
    ops: list[str] = []
    for node, (start, group) in enumerate(groups, start=1):
        if not group.startswith("|"):
            raise _fail(f"node {node}'s group must start with '|' (e.g. |none~0|)", start, group[:1] or "+")
        if len(group) < 2 or not group.endswith("|"):
            raise _fail(f"node {node}'s group must end with '|' (e.g. |none~0|)", start + len(group), group)
        edges = _split(group[1:-1], "|", start + 1)
        for offset, edge in edges:
            if not edge:
                raise _fail(f"empty edge in node {node}'s group; write op~i between single pipes", offset, "||")
        if len(edges) != node:
            sources = "|".join(f"op~{i}" for i in range(node))
            raise _fail(f"node {node} takes exactly {node} input edge(s) (|{sources}|), got {len(edges)}", start, group)
        for source, (offset, edge) in enumerate(edges):
            op, tilde, src = edge.partition("~")
            if op not in OPS:
                raise _fail(f"unknown operation {op!r}; allowed: {', '.join(OPS)}", offset, op)
            if not tilde:
                raise _fail(f"edge {edge!r} names no source node; write {edge}~{source}", offset, edge)
            if src != str(source):
                order = ", ".join(f"~{i}" for i in range(node))
                raise _fail(
                    f"edge {source} of node {node} must read {op}~{source} (node {node} lists its sources "
                    f"{order} in that order)",
                    offset + len(op) + 1,
                    f"~{src}",
                )
            ops.append(op)
    return tuple(ops)


def format_ops(ops: Sequence[str]) -> str:
    """The cell string of six edge ops given in string order."""
    o = tuple(ops)
    return f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"


def from_ops(ops: Sequence[str]) -> ArchSpec:
    """ArchSpec of the cell with these six edge ops (string order)."""
    return ArchSpec(DIALECT, (NB201Cell(ops=tuple(ops)),))


def cell_of(spec: ArchSpec) -> NB201Cell:
    """The single NB201Cell of an nb201 spec, or ConfigError saying what the spec is instead."""
    if spec.dialect != DIALECT or len(spec.blocks) != 1 or not isinstance(spec.blocks[0], NB201Cell):
        raise ConfigError(
            f"expected an {DIALECT!r} architecture (one NB201Cell), got dialect {spec.dialect!r} "
            f"with {len(spec.blocks)} block(s); parse the cell string with dialect='nb201'"
        )
    return spec.blocks[0]


# --- official index order -------------------------------------------------------------------------
# The benchmark enumerated the cells lexicographically (edges in string order, first edge most
# significant, ops in OPS order) and then shuffled that list once with Python's Mersenne Twister
# seeded with 88. We replay the Fisher-Yates shuffle on our own so the order never depends on the
# implementation of `random.shuffle`; tests pin it against 1,000 official (index, arch) pairs.


def _lex_code(ops: Sequence[str]) -> int:
    code = 0
    for op in ops:
        code = code * len(OPS) + OPS.index(op)
    return code


def _lex_ops(code: int) -> tuple[str, ...]:
    ops: list[str] = []
    for _ in EDGES:
        code, digit = divmod(code, len(OPS))
        ops.append(OPS[digit])
    return tuple(reversed(ops))


def _below(gen: random.Random, n: int) -> int:
    """Uniform integer in [0, n) by rejection on n.bit_length() random bits (CPython's rule)."""
    bits = n.bit_length()
    value = gen.getrandbits(bits)
    while value >= n:
        value = gen.getrandbits(bits)
    return value


@cache
def _official_order() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(lexicographic code of each official index, official index of each lexicographic code)."""
    codes = list(range(NUM_CELLS))
    gen = random.Random(_SHUFFLE_SEED)  # a private generator: no global random state is touched
    for i in range(NUM_CELLS - 1, 0, -1):
        j = _below(gen, i + 1)
        codes[i], codes[j] = codes[j], codes[i]
    inverse = [0] * NUM_CELLS
    for index, code in enumerate(codes):
        inverse[code] = index
    return tuple(codes), tuple(inverse)


def index_of(spec: ArchSpec) -> int:
    """Official NAS-Bench-201 / NATS-Bench index (0..15624) of a cell."""
    return _official_order()[1][_lex_code(cell_of(spec).ops)]


def from_index(index: int) -> ArchSpec:
    """The cell with official NAS-Bench-201 / NATS-Bench index `index` (0..15624)."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < NUM_CELLS:
        raise ConfigError(f"NAS-Bench-201 index must be an integer in 0..{NUM_CELLS - 1}, got {index!r}")
    return from_ops(_lex_ops(_official_order()[0][index]))


def all_cells() -> Iterator[ArchSpec]:
    """All 15,625 cells in official index order."""
    for code in _official_order()[0]:
        yield from_ops(_lex_ops(code))


# --- degenerate cells and isomorphism -------------------------------------------------------------


def is_degenerate(spec: ArchSpec) -> bool:
    """True if the cell output does not depend on its input (no path of non-`none` edges 0 -> 3).

    Every op but `none` passes a dependence on its input on (skip, pooling and conv are not
    constant maps), and a node is a sum, so node 3 depends on the input exactly when such a path
    exists. 341 of the 15,625 cells are degenerate.
    """
    reached = {0}
    for (dst, src), op in zip(EDGES, cell_of(spec).ops, strict=True):
        if op != "none" and src in reached:
            reached.add(dst)  # edges are listed by target node, so sources are final when read
    return 3 not in reached


def isomorphism_key(spec: ArchSpec) -> str:
    """The benchmark's isomorphism key; equal keys = one class (6,466 classes over all cells).

    Convention of the NAS-Bench-201 tables (not a full functional equivalence): node 0 is `0`;
    each node is its input terms sorted as text and joined by '+', where a `none` edge gives the
    zero term `#`, `skip_connect` passes the source text unchanged and any other op gives
    `(source)@op`. A source counts as zero only if its text is exactly `#`; each zero edge still
    leaves a `#` term, so `x` and `x + 0` stay apart. Degenerate cells still get distinct keys.
    """
    text = {0: "0"}
    cell = cell_of(spec)
    for node in range(1, NUM_NODES):
        terms = []
        for src, op in cell.node_inputs(node):
            if op == "none" or text[src] == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(text[src])
            else:
                terms.append(f"({text[src]})@{op}")
        text[node] = "+".join(sorted(terms))
    return text[NUM_NODES - 1]


class NB201Dialect:
    """Parser/printer of NAS-Bench-201 cell strings."""

    name = DIALECT
    description = "NAS-Bench-201 cells: |nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|"

    def parse(self, text: str, *, rechain: bool = False) -> ArchSpec:
        if rechain:
            raise ConfigError("rechain repair is only offered for the zennas-v1 dialect; NB201 cells have no widths")
        return from_ops(parse_ops(text))

    def format(self, spec: ArchSpec, *, canonical: bool = False) -> str:
        # No labels or extras exist in this dialect, so the canonical text is the only text.
        return format_ops(cell_of(spec).ops)

    def looks_like(self, text: str) -> bool:
        return text.lstrip().startswith("|")


register_dialect(NB201Dialect())
