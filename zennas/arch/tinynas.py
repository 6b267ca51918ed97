"""The TinyNAS structure dialect (`tinynas`): MAE-DET / DeepMAD / DAMO-YOLO backbone structure files.

A file is a Python-literal (or JSON) dict `{'space_arch': 'CnnNet', 'best_structures': [[block, ...]]}`;
a bare list of block dicts is accepted too. Each block is a dict such as
`{'class': 'SuperResK1KXK1', 'in': 32, 'out': 256, 's': 2, 'k': 3, 'L': 1, 'btn': 64}`.
The text is read by walking literal syntax-tree nodes only (never `eval`). Block names overlap with
the ZenNAS dialect (`SuperResKXKX`, `SuperResK1KXK1`) but mean other networks, so the dialect is
never guessed from block names. See REFERENCE.md 1.3 and 1.4.
"""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import asdict, dataclass
from typing import Any

from zennas.arch import register_dialect
from zennas.arch.ir import ArchSpec, BlockSpec, check_channel_chain
from zennas.arch.ir import rechain as rechain_blocks
from zennas.arch.limits import BLOCKS, CHANNELS, KERNEL, check_text_size, check_total_depth
from zennas.errors import ArchSyntaxError, ArchValueError, ConfigError

DIALECT = "tinynas"
SPACE_ARCH = "CnnNet"
STRIDES = (1, 2)
# TinyNAS `get_activation` names; 'learkyrelu' is TinyNAS's own spelling of leaky ReLU.
ACTIVATIONS = ("relu", "relu6", "sigmoid", "swish", "learkyrelu")
MAX_CHANNELS = CHANNELS.maximum  # zennas-wide bounds (zennas.arch.limits) ...
MAX_KERNEL = KERNEL.maximum
MAX_INNER = 256  # ... and TinyNAS's own: its spaces allow at most 12 inner blocks per super-block
MAX_NBITS = 32

CONV_CLASS = "ConvKXBNRELU"
# Super-block class -> (inner block class, convolutions per inner block, default activation).
SUPER_CLASSES: dict[str, tuple[str, int, str]] = {
    "SuperResK1KXK1": ("ResK1KXK1", 3, "relu"),
    "SuperResK1KX": ("ResK1KX", 2, "relu"),
    "SuperResKXKX": ("ResKXKX", 2, "relu"),
    "SuperResK1DWK1": ("ResK1DWK1", 3, "relu"),
    # SiLU is TinyNAS's default here; 'swish' names the same function.
    "SuperResK1DWSEK1": ("ResK1DWSEK1", 3, "swish"),
}
CLASSES = (CONV_CLASS, *SUPER_CLASSES)

# Canonical key order; optional semantic keys are written only when they differ from the default.
_CONV_KEYS = ("class", "in", "out", "s", "k")
_RES_KEYS = ("class", "in", "out", "s", "k", "L", "btn")
_OPTIONAL_KEYS = ("g", "p", "act")
# Keys TinyNAS writes or reads that do not change the float network: kept for re-emission only.
# (super-block `force_resproj` is overwritten for every inner block by the TinyNAS constructor.)
_CONV_INFO_KEYS = ("nbitsA", "nbitsW")
_RES_INFO_KEYS = ("inner_class", "force_resproj", "force_resproj_skip", "nbitsA", "nbitsW")


@dataclass(frozen=True, kw_only=True)
class TinyConv(BlockSpec):
    """`ConvKXBNRELU`: conv k x k (stride s, groups g, padding p) -> BN -> act; 1 layer."""

    kernel: int
    groups: int = 1
    padding: int | None = None  # None: TinyNAS default (k - 1) // 2
    act: str | None = None  # None: relu

    def __post_init__(self) -> None:
        # Explicit defaults compare equal to omitted ones (one network, one identity).
        if isinstance(self.kernel, int) and self.padding == (self.kernel - 1) // 2:
            object.__setattr__(self, "padding", None)
        if self.act == "relu":
            object.__setattr__(self, "act", None)

    @property
    def name(self) -> str:
        return CONV_CLASS

    @property
    def pad(self) -> int:
        """Effective padding."""
        return (self.kernel - 1) // 2 if self.padding is None else self.padding

    @property
    def activation(self) -> str:
        """Effective activation name."""
        return self.act or "relu"


@dataclass(frozen=True, kw_only=True)
class TinyRes(BlockSpec):
    """A TinyNAS super-block: `num_inner` (L) residual inner blocks of class `kind`; `bottleneck` is btn."""

    kind: str
    kernel: int
    bottleneck: int
    num_inner: int
    groups: int = 1
    act: str | None = None  # None: the class default (SiLU for SuperResK1DWSEK1, else relu)

    def __post_init__(self) -> None:
        default = SUPER_CLASSES[self.kind][2] if self.kind in SUPER_CLASSES else None
        if self.act is not None and self.act == default:
            object.__setattr__(self, "act", None)

    @property
    def name(self) -> str:
        return self.kind

    @property
    def inner_class(self) -> str:
        """TinyNAS name of the inner block (e.g. ResK1KXK1)."""
        return SUPER_CLASSES[self.kind][0]

    @property
    def convs_per_inner(self) -> int:
        """Convolution layers of one inner block (3 or 2; SE not counted)."""
        return SUPER_CLASSES[self.kind][1]

    @property
    def activation(self) -> str:
        """Effective activation name."""
        return self.act or SUPER_CLASSES[self.kind][2]

    @property
    def depth(self) -> int:
        return self.convs_per_inner * self.num_inner


TinyBlock = TinyConv | TinyRes


@dataclass(frozen=True)
class InnerBlock:
    """One residual inner block of a super-block, as TinyNAS constructs it (REFERENCE 1.3)."""

    kind: str  # inner class, e.g. 'ResK1KXK1'
    in_channels: int
    out_channels: int
    stride: int
    kernel: int
    bottleneck: int
    groups: int
    act: str
    force_resproj: bool  # True only for the first inner block of SuperResK1KXK1

    @property
    def depthwise(self) -> bool:
        """Depthwise middle conv (ResK1DWK1, ResK1DWSEK1)."""
        return self.kind in ("ResK1DWK1", "ResK1DWSEK1")

    @property
    def has_se(self) -> bool:
        """TinyNAS places an SE after the depthwise activation (when SE is enabled)."""
        return self.kind == "ResK1DWSEK1"

    @property
    def residual(self) -> bool:
        """Whether the block adds a shortcut; depthwise blocks have none when in != out."""
        return self.in_channels == self.out_channels or not self.depthwise

    @property
    def projection(self) -> bool:
        """Whether the shortcut has a 1x1 conv + BN (never for depthwise blocks)."""
        return not self.depthwise and (self.in_channels != self.out_channels or self.force_resproj)

    @property
    def pooled(self) -> bool:
        """Whether the shortcut starts with AvgPool(2, 2)."""
        return self.residual and self.stride == 2

    @property
    def conv_layers(self) -> int:
        """Main-path convolutions (the TinyNAS layer count of this block)."""
        return 2 if self.kind in ("ResK1KX", "ResKXKX") else 3


def inner_blocks(block: TinyRes) -> tuple[InnerBlock, ...]:
    """Expand a super-block: the first inner block gets (in, out, s), the others (out, out, 1)."""
    out = []
    for index in range(block.num_inner):
        first = index == 0
        out.append(
            InnerBlock(
                kind=block.inner_class,
                in_channels=block.in_channels if first else block.out_channels,
                out_channels=block.out_channels,
                stride=block.stride if first else 1,
                kernel=block.kernel,
                bottleneck=block.bottleneck,
                groups=block.groups,
                act=block.activation,
                force_resproj=first and block.kind == "SuperResK1KXK1",
            )
        )
    return tuple(out)


def se_width(channels: int) -> int:
    """TinyNAS SE squeeze width m: round(c/4) floored to a multiple of 8, at least 8."""
    return max(1, round(channels / 4) // 8) * 8


@dataclass(frozen=True)
class StageInfo:
    """One stage of TinyNAS `get_stage_info`: bookkeeping at the stage's last top-level block."""

    end_block: int  # index of the stage's last top-level block
    inner_blocks: int  # cumulative inner-block count (ConvKXBNRELU counts 1, a super-block L)
    channels: int  # output channels of the stage
    layers: int  # cumulative conv-layer count (TinyNAS layers convention)
    side: int  # feature side at the stage end: input side floor-divided by every stride so far


def stage_info(spec: ArchSpec, resolution: int, *, tinynas_compat: bool = False) -> tuple[StageInfo, ...]:
    """TinyNAS stage bookkeeping: a stage closes before every stride-2 block after the first, and at the end.

    tinynas_compat=True reproduces the TinyNAS defect that any SuperResK1DWSEK1 block reports an output
    side of 1 (its SE module's resolution function returns 1), REFERENCE 3.3.
    """
    if spec.dialect != DIALECT:
        raise ConfigError(f"stage_info needs a {DIALECT!r} architecture, got dialect {spec.dialect!r}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ConfigError(f"resolution must be a positive integer, got {resolution!r}")
    stages: list[StageInfo] = []
    side, blocks_so_far, layers, channels = resolution, 0, 0, 0
    last = len(spec.blocks) - 1
    for index, block in enumerate(spec.blocks):
        if block.stride == 2 and index > 0:
            stages.append(StageInfo(index - 1, blocks_so_far, channels, layers, side))
        blocks_so_far += block.num_inner if isinstance(block, TinyRes) else 1
        channels = block.out_channels
        layers += block.depth
        if tinynas_compat and isinstance(block, TinyRes) and block.kind == "SuperResK1DWSEK1":
            side = 1
        else:
            side //= block.stride
        if index == last:
            stages.append(StageInfo(index, blocks_so_far, channels, layers, side))
    return tuple(stages)


# ---------------------------------------------------------------------------------------------
# Literal reading: syntax tree -> plain values, with source positions
# ---------------------------------------------------------------------------------------------


class _Source:
    """Maps syntax-tree positions (line, UTF-8 byte column) of the stripped text to character offsets."""

    def __init__(self, text: str, lead: int):
        self.text = text
        self.lead = lead
        self.line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]

    def offset(self, lineno: int | None, col: int | None, *, byte_col: bool = True) -> int | None:
        if lineno is None or col is None or not 1 <= lineno <= len(self.line_starts):
            return None
        start = self.line_starts[lineno - 1]
        if byte_col:
            line = self.text[start : start + col + 1]  # a byte column never exceeds the character column + 1
            col = len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))
        return self.lead + min(start + max(col, 0), len(self.text))

    def at(self, node: ast.AST) -> int | None:
        return self.offset(getattr(node, "lineno", None), getattr(node, "col_offset", None))


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            return f"the boolean {value}"
        if value is None:
            return "None"
        text = repr(value)
        return f"{type(value).__name__} {text[:30]}"
    if isinstance(node, ast.Dict):
        return "a dict"
    if isinstance(node, ast.List):
        return "a list"
    if isinstance(node, ast.Tuple):
        return "a tuple"
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    return f"a {type(node).__name__} expression"


def _parse_tree(text: str) -> tuple[ast.expr, _Source]:
    """Syntax tree of one literal expression; Python's own errors become ArchSyntaxError."""
    if not isinstance(text, str):
        raise ArchSyntaxError(f"architecture text must be a string, got {type(text).__name__}")
    check_text_size(text)
    stripped = text.strip()
    lead = len(text) - len(text.lstrip())
    source = _Source(stripped, lead)
    if not stripped:
        raise ArchSyntaxError(
            "empty TinyNAS structure text; give a dict such as "
            "{'space_arch': 'CnnNet', 'best_structures': [[{'class': 'ConvKXBNRELU', ...}]]}"
        )
    if "\0" in stripped:
        raise ArchSyntaxError("a NUL character is not allowed; remove it", position=lead + stripped.index("\0"))
    try:
        with warnings.catch_warnings():
            # Invalid escapes etc. only warn; the library must stay silent.
            warnings.simplefilter("ignore")
            tree = ast.parse(stripped, mode="eval")
    except SyntaxError as error:
        position = source.offset(error.lineno, None if error.offset is None else error.offset - 1, byte_col=False)
        reason = error.msg or "invalid syntax"
        raise ArchSyntaxError(
            f"not a Python/JSON literal ({reason}); a TinyNAS structure is a dict or list of block dicts",
            position=position,
        ) from None
    except (RecursionError, MemoryError):
        raise ArchSyntaxError(
            "the text is nested too deeply to be a TinyNAS structure (dict -> list -> list -> block dict)",
            position=lead,
        ) from None
    except UnicodeEncodeError as error:
        raise ArchSyntaxError(
            "the text contains an unpaired surrogate character; re-read the file as UTF-8",
            position=lead + error.start,
        ) from None
    except ValueError as error:  # e.g. integer literals beyond Python's digit limit
        raise ArchSyntaxError(f"not a Python/JSON literal ({error})", position=lead) from None
    return tree.body, source


_JSON_NAMES = {"true": True, "false": False, "null": None}


def _scalar(node: ast.expr) -> tuple[bool, Any]:
    """(True, value) for a literal scalar (JSON true/false/null included, one leading sign on a number)."""
    if isinstance(node, ast.Constant):
        return True, node.value
    if isinstance(node, ast.Name) and node.id in _JSON_NAMES:
        return True, _JSON_NAMES[node.id]
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub | ast.UAdd)
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) in (int, float)
    ):
        value = node.operand.value
        return True, -value if isinstance(node.op, ast.USub) else value
    return False, None


def _key_value_pairs(node: ast.Dict, source: _Source, what: str) -> list[tuple[str, ast.expr, ast.expr]]:
    """(key, key node, value node) of a dict literal with unique string keys."""
    pairs: list[tuple[str, ast.expr, ast.expr]] = []
    seen: set[str] = set()
    for key_node, value_node in zip(node.keys, node.values, strict=True):
        if key_node is None:
            raise ArchSyntaxError(f"{what}: '**' unpacking is not a literal", position=source.at(value_node))
        ok, key = _scalar(key_node)
        if not ok or not isinstance(key, str):
            raise ArchSyntaxError(
                f"{what}: keys must be strings, got {_describe(key_node)}", position=source.at(key_node)
            )
        if key in seen:
            raise ArchSyntaxError(f"{what}: duplicate key {key!r}; keep one", position=source.at(key_node), token=key)
        seen.add(key)
        pairs.append((key, key_node, value_node))
    return pairs


# ---------------------------------------------------------------------------------------------
# Structure layout: which list nodes are structures
# ---------------------------------------------------------------------------------------------

_LAYOUT_HINT = (
    "a TinyNAS structure file is {'space_arch': 'CnnNet', 'best_structures': [[{block}, ...]]} "
    "or a bare list of block dicts [{block}, ...]"
)


def _structure_nodes(body: ast.expr, source: _Source) -> list[ast.List]:
    """The list node of every structure in the text."""
    if isinstance(body, ast.Dict):
        entries = _key_value_pairs(body, source, "structure file")
        keys = {key for key, _, _ in entries}
        for key, key_node, value_node in entries:
            if key == "space_arch":
                ok, value = _scalar(value_node)
                if not ok or value != SPACE_ARCH:
                    raise ArchValueError(
                        f"space_arch must be {SPACE_ARCH!r} (2-D CNN backbones); other TinyNAS model types "
                        "(e.g. 3-D video networks) are not supported",
                        position=source.at(value_node),
                        token="space_arch",
                    )
            elif key != "best_structures":
                raise ArchSyntaxError(
                    f"unknown key {key!r} in the structure file; allowed keys: 'space_arch', 'best_structures'",
                    position=source.at(key_node),
                    token=key,
                )
        if "best_structures" not in keys:
            raise ArchSyntaxError(
                f"the structure file has no 'best_structures' key; {_LAYOUT_HINT}", position=source.at(body)
            )
        value = next(v for k, _, v in entries if k == "best_structures")
        if not isinstance(value, ast.List):
            raise ArchSyntaxError(
                f"'best_structures' must be a list, got {_describe(value)}", position=source.at(value)
            )
        if value.elts and all(isinstance(e, ast.Dict) for e in value.elts):
            return [value]  # one structure written without the outer list
        return _list_of_structures(value, source)
    if isinstance(body, ast.List):
        if body.elts and all(isinstance(e, ast.List) for e in body.elts):
            return _list_of_structures(body, source)
        return [body]
    raise ArchSyntaxError(f"expected a dict or a list, got {_describe(body)}; {_LAYOUT_HINT}", position=source.at(body))


def _list_of_structures(node: ast.List, source: _Source) -> list[ast.List]:
    if not node.elts:
        raise ArchSyntaxError(
            "the structure list is empty; give at least one structure [[{block}, ...]]", position=source.at(node)
        )
    for element in node.elts:
        if not isinstance(element, ast.List):
            raise ArchSyntaxError(
                f"expected a structure (a list of block dicts), got {_describe(element)}",
                position=source.at(element),
            )
    return list(node.elts)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


def _int_value(key: str, node: ast.expr, source: _Source, cls: str) -> int:
    ok, value = _scalar(node)
    if not ok or isinstance(value, bool) or not isinstance(value, int):
        raise ArchSyntaxError(
            f"{cls}: {key!r} must be an integer, got {_describe(node)}", position=source.at(node), token=key
        )
    return value


def _str_value(key: str, node: ast.expr, source: _Source, cls: str) -> str:
    ok, value = _scalar(node)
    if not ok or not isinstance(value, str):
        raise ArchSyntaxError(
            f"{cls}: {key!r} must be a string, got {_describe(node)}", position=source.at(node), token=key
        )
    return value


def _bits_value(key: str, node: ast.expr, source: _Source, cls: str, length: int | None) -> int | tuple[int, ...]:
    """nbitsA/nbitsW: an int for ConvKXBNRELU (length None), else a list of `length` ints."""
    if length is None:
        value = _int_value(key, node, source, cls)
        _check_range(value, 1, MAX_NBITS, f"{cls}: {key!r}", source.at(node), key)
        return value
    if not isinstance(node, ast.List):
        raise ArchSyntaxError(
            f"{cls}: {key!r} must be a list with one bit width per inner conv ({length} entries), "
            f"got {_describe(node)}",
            position=source.at(node),
            token=key,
        )
    values = tuple(_int_value(key, element, source, cls) for element in node.elts)
    if len(values) != length:
        raise ArchValueError(
            f"{cls}: {key!r} has {len(values)} entries but needs one per inner conv ({length} = convs x L)",
            position=source.at(node),
            token=key,
        )
    for element, value in zip(node.elts, values, strict=True):
        _check_range(value, 1, MAX_NBITS, f"{cls}: {key!r} entry", source.at(element), key)
    return values


def _check_range(value: int, low: int, high: int, what: str, position: int | None, token: str | None) -> None:
    if not low <= value <= high:
        raise ArchValueError(f"{what} must be in [{low}, {high}], got {value}", position=position, token=token)


def _check_kernel(kernel: int, cls: str, position: int | None) -> None:
    if kernel < 1 or kernel % 2 == 0 or kernel > MAX_KERNEL:
        raise ArchValueError(
            f"{cls}: kernel 'k' must be odd and in [1, {MAX_KERNEL}] (same padding needs an odd kernel), got {kernel}",
            position=position,
            token="k",
        )


def _block_from_dict(node: ast.expr, source: _Source) -> tuple[TinyBlock, tuple[tuple[str, Any], ...]]:
    """A block spec and its informational extras (key, value) from one block dict node."""
    fields = _block_fields(node, source)
    common = _common_values(fields)
    block: TinyBlock
    if fields.cls == CONV_CLASS:
        block, extras = _conv_block(fields, common)
    else:
        block, extras = _res_block(fields, common)
    extras += _written_defaults(fields, common)
    return block, tuple(sorted(extras, key=lambda kv: _EXTRA_ORDER.index(kv[0])))


_EXTRA_ORDER = ("g", "p", "act", *_RES_INFO_KEYS)


@dataclass(frozen=True)
class _BlockDict:
    """A block dict whose class and key set are valid: typed reads of its values, each error at its value."""

    cls: str
    values: dict[str, ast.expr]  # key -> value node
    source: _Source
    where: int | None  # position of the dict: where an absent key is reported

    def integer(self, key: str) -> int:
        return _int_value(key, self.values[key], self.source, self.cls)

    def string(self, key: str) -> str:
        return _str_value(key, self.values[key], self.source, self.cls)

    def pos(self, key: str) -> int | None:
        return self.source.at(self.values[key]) if key in self.values else self.where


def _block_fields(node: ast.expr, source: _Source) -> _BlockDict:
    """The block dict's class and value nodes, once every key is known to that class and none is missing."""
    if not isinstance(node, ast.Dict):
        raise ArchSyntaxError(
            f"expected a block dict {{'class': ..., 'in': ..., ...}}, got {_describe(node)}",
            position=source.at(node),
        )
    pairs = _key_value_pairs(node, source, "block")
    values = {key: value_node for key, _, value_node in pairs}
    where = source.at(node)
    if "class" not in values:
        raise ArchSyntaxError(f"block has no 'class' key; use one of: {', '.join(CLASSES)}", position=where)
    cls = _str_value("class", values["class"], source, "block")
    if cls not in CLASSES:
        hint = ""
        if cls in {info[0] for info in SUPER_CLASSES.values()}:
            hint = " (inner classes are written by TinyNAS as 'inner_class'; use the Super* class)"
        raise ArchSyntaxError(
            f"unknown block class {cls!r}{hint}; the {DIALECT} dialect knows: {', '.join(CLASSES)}",
            position=source.at(values["class"]),
            token=cls,
        )
    _check_keys(cls, pairs, source, where)
    return _BlockDict(cls, values, source, where)


def _check_keys(cls: str, pairs: list[tuple[str, ast.expr, ast.expr]], source: _Source, where: int | None) -> None:
    """Raise on a key the class does not know and on a required key that is absent."""
    is_conv = cls == CONV_CLASS
    required = _CONV_KEYS if is_conv else _RES_KEYS
    info_keys = _CONV_INFO_KEYS if is_conv else _RES_INFO_KEYS
    allowed = set(required) | set(_OPTIONAL_KEYS) | set(info_keys)
    for key, key_node, _ in pairs:
        if key not in allowed:
            extra = " (3-D video structures are not supported)" if key == "kt" else ""
            known = ", ".join((*required, *_OPTIONAL_KEYS, *info_keys))
            raise ArchSyntaxError(
                f"{cls}: unknown key {key!r}{extra}; allowed keys: {known}",
                position=source.at(key_node),
                token=key,
            )
    present = {key for key, _, _ in pairs}
    for key in required:
        if key not in present and key != "s":  # TinyNAS defaults a missing stride to 1
            raise ArchSyntaxError(
                f"{cls}: missing key {key!r}; a {cls} block needs {', '.join(repr(k) for k in required)}",
                position=where,
                token=key,
            )


@dataclass(frozen=True)
class _CommonValues:
    """The keys of both block kinds, read and checked on their own: in, out, s, k and the optional g, act, p."""

    in_channels: int
    out_channels: int
    stride: int
    kernel: int
    groups: int
    act: str | None
    padding: int | None

    def block_fields(self) -> dict[str, Any]:
        """The fields TinyConv and TinyRes share, by name (padding is TinyConv's alone)."""
        shared = asdict(self)
        del shared["padding"]
        return shared


def _common_values(fields: _BlockDict) -> _CommonValues:
    """Widths, stride, kernel and activation in their ranges; groups and padding are checked per kind."""
    cls, pos = fields.cls, fields.pos
    c_in, c_out = fields.integer("in"), fields.integer("out")
    CHANNELS.check(c_in, f"{cls}: input channels 'in'", position=pos("in"), token="in")
    CHANNELS.check(c_out, f"{cls}: output channels 'out'", position=pos("out"), token="out")
    _check_range(c_in, 1, MAX_CHANNELS, f"{cls}: input channels 'in'", pos("in"), "in")
    _check_range(c_out, 1, MAX_CHANNELS, f"{cls}: output channels 'out'", pos("out"), "out")
    stride = fields.integer("s") if "s" in fields.values else 1
    if stride not in STRIDES:
        raise ArchValueError(f"{cls}: stride 's' must be 1 or 2, got {stride}", position=pos("s"), token="s")
    kernel = fields.integer("k")
    _check_kernel(kernel, cls, pos("k"))
    groups = fields.integer("g") if "g" in fields.values else 1
    act = fields.string("act") if "act" in fields.values else None
    if act is not None and act not in ACTIVATIONS:
        raise ArchValueError(
            f"{cls}: unknown activation {act!r}; TinyNAS knows: {', '.join(ACTIVATIONS)}",
            position=pos("act"),
            token="act",
        )
    padding = fields.integer("p") if "p" in fields.values else None
    return _CommonValues(c_in, c_out, stride, kernel, groups, act, padding)


def _conv_block(fields: _BlockDict, common: _CommonValues) -> tuple[TinyConv, list[tuple[str, Any]]]:
    """ConvKXBNRELU and its bit widths: any padding up to 'same', groups dividing both widths."""
    cls, kernel, groups, padding = fields.cls, common.kernel, common.groups, common.padding
    c_in, c_out = common.in_channels, common.out_channels
    if padding is not None and not 0 <= padding <= (kernel - 1) // 2:
        raise ArchValueError(
            f"{cls}: padding 'p' must be in [0, (k-1)//2] = [0, {(kernel - 1) // 2}], got {padding}",
            position=fields.pos("p"),
            token="p",
        )
    if groups < 1 or c_in % groups or c_out % groups:
        raise ArchValueError(
            f"{cls}: groups 'g' must be a positive divisor of in ({c_in}) and out ({c_out}), got {groups}",
            position=fields.pos("g"),
            token="g",
        )
    return TinyConv(**common.block_fields(), padding=padding), _bit_widths(fields, None)


def _res_block(fields: _BlockDict, common: _CommonValues) -> tuple[TinyRes, list[tuple[str, Any]]]:
    """A super-block and its TinyNAS bookkeeping keys: 'same' padding only, groups dividing in, btn and out."""
    cls, kernel, groups, pos = fields.cls, common.kernel, common.groups, fields.pos
    num_inner, bottleneck = fields.integer("L"), fields.integer("btn")
    _check_range(num_inner, 1, MAX_INNER, f"{cls}: inner-block count 'L'", pos("L"), "L")
    CHANNELS.check(bottleneck, f"{cls}: bottleneck width 'btn'", position=pos("btn"), token="btn")
    _check_range(bottleneck, 1, MAX_CHANNELS, f"{cls}: bottleneck width 'btn'", pos("btn"), "btn")
    if common.padding is not None and common.padding != (kernel - 1) // 2:
        raise ArchValueError(
            f"{cls}: padding 'p' must be (k-1)//2 = {(kernel - 1) // 2} (another padding changes the feature "
            f"size and breaks the residual add); remove 'p'",
            position=pos("p"),
            token="p",
        )
    # TinyNAS groups every main-path conv except the depthwise one (which has groups = btn).
    grouped = (common.in_channels, bottleneck, common.out_channels)
    if groups < 1 or any(c % groups for c in grouped):
        raise ArchValueError(
            f"{cls}: groups 'g' must be a positive divisor of in, btn and out ({', '.join(map(str, grouped))}), "
            f"got {groups}",
            position=pos("g"),
            token="g",
        )
    block = TinyRes(**common.block_fields(), kind=cls, bottleneck=bottleneck, num_inner=num_inner)
    return block, _res_info(fields) + _bit_widths(fields, block.depth)  # depth: the inner convs, convs x L


def _res_info(fields: _BlockDict) -> list[tuple[str, Any]]:
    """The super-block keys TinyNAS writes back without changing the float network, checked for type and range."""
    cls, values, pos = fields.cls, fields.values, fields.pos
    extras: list[tuple[str, Any]] = []
    if "inner_class" in values:
        inner_class = SUPER_CLASSES[cls][0]
        written = fields.string("inner_class")
        if written != inner_class:
            raise ArchValueError(
                f"{cls}: 'inner_class' must be {inner_class!r} (TinyNAS writes it back), got {written!r}; "
                "fix or remove it",
                position=pos("inner_class"),
                token="inner_class",
            )
        extras.append(("inner_class", written))
    if "force_resproj" in values:
        ok, flag = _scalar(values["force_resproj"])
        if not ok or not isinstance(flag, bool):
            raise ArchSyntaxError(
                f"{cls}: 'force_resproj' must be True or False, got {_describe(values['force_resproj'])}",
                position=pos("force_resproj"),
                token="force_resproj",
            )
        extras.append(("force_resproj", flag))
    if "force_resproj_skip" in values:
        skip = fields.integer("force_resproj_skip")
        where_skip = pos("force_resproj_skip")
        _check_range(skip, 1, MAX_INNER, f"{cls}: 'force_resproj_skip'", where_skip, "force_resproj_skip")
        extras.append(("force_resproj_skip", skip))
    return extras


def _bit_widths(fields: _BlockDict, length: int | None) -> list[tuple[str, Any]]:
    """nbitsA and nbitsW, both or neither: ints for a conv (length None), else one per inner conv."""
    values = fields.values
    if "nbitsA" not in values and "nbitsW" not in values:
        return []
    missing = [key for key in ("nbitsA", "nbitsW") if key not in values]
    if missing:
        raise ArchSyntaxError(
            f"{fields.cls}: quantised blocks need both 'nbitsA' and 'nbitsW'; add {missing[0]!r} or remove the other",
            position=fields.where,
            token=missing[0],
        )
    return [(key, _bits_value(key, values[key], fields.source, fields.cls, length)) for key in ("nbitsA", "nbitsW")]


def _written_defaults(fields: _BlockDict, common: _CommonValues) -> list[tuple[str, Any]]:
    """Optional keys written at their default: the spec drops them, the extras keep them for re-emission."""
    default_act = "relu" if fields.cls == CONV_CLASS else SUPER_CLASSES[fields.cls][2]
    # A super-block's 'p' is always at its default: _res_block refuses any other padding.
    written = {"g": common.groups, "p": common.padding, "act": common.act}
    default = {"g": 1, "p": (common.kernel - 1) // 2, "act": default_act}
    return [(key, written[key]) for key in _OPTIONAL_KEYS if key in fields.values and written[key] == default[key]]


def _spec_from_list(node: ast.List, source: _Source, *, rechain: bool) -> ArchSpec:
    if not node.elts:
        raise ArchSyntaxError("a structure needs at least one block dict", position=source.at(node))
    BLOCKS.check(len(node.elts), "block count", position=source.at(node))
    parsed = [_block_from_dict(element, source) for element in node.elts]
    blocks = tuple(block for block, _ in parsed)
    positions = tuple(source.at(e) or 0 for e in node.elts)
    check_total_depth([block.depth for block in blocks], positions, what="conv layers")
    if rechain:
        blocks = rechain_blocks(blocks, first_in=blocks[0].in_channels)
    else:
        # The first block's input is the image (3 channels, 12 after a DAMO-YOLO Focus), so it is not checked.
        check_channel_chain(blocks, positions, first_in=None)
    extras = tuple(extra for _, extra in parsed)
    return ArchSpec(DIALECT, blocks, extras if any(extras) else None)


def parse_all(text: str, *, rechain: bool = False) -> list[ArchSpec]:
    """Every structure of a TinyNAS file (`best_structures` may hold several), in file order."""
    body, source = _parse_tree(text)
    return [_spec_from_list(node, source, rechain=rechain) for node in _structure_nodes(body, source)]


# ---------------------------------------------------------------------------------------------
# Printing
# ---------------------------------------------------------------------------------------------


def _literal(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    raise TypeError(f"cannot print {value!r} as a TinyNAS literal")


def block_dict(block: BlockSpec) -> dict[str, Any]:
    """Canonical TinyNAS dict of one block (optional keys only where they differ from the default)."""
    if not isinstance(block, TinyConv | TinyRes):
        raise TypeError(f"{type(block).__name__} is not a {DIALECT} block")
    out: dict[str, Any] = {
        "class": CONV_CLASS if isinstance(block, TinyConv) else block.kind,
        "in": block.in_channels,
        "out": block.out_channels,
        "s": block.stride,
        "k": block.kernel,
    }
    if isinstance(block, TinyRes):
        out.update(L=block.num_inner, btn=block.bottleneck)
    if block.groups != 1:
        out["g"] = block.groups
    if isinstance(block, TinyConv) and block.padding is not None:
        out["p"] = block.padding
    if block.act is not None:
        out["act"] = block.act
    return out


def _format_block(block: BlockSpec, extras: tuple[tuple[str, Any], ...]) -> str:
    entries = block_dict(block)
    for key, value in extras:
        entries[key] = value
    order = {key: index for index, key in enumerate((*_RES_KEYS, *_EXTRA_ORDER))}
    items = sorted(entries.items(), key=lambda kv: order[kv[0]])
    return "{" + ", ".join(f"{key!r}: {_literal(value)}" for key, value in items) + "}"


class TinyNASDialect:
    """Parser/printer of TinyNAS structure files (one structure per ArchSpec)."""

    name = DIALECT
    description = (
        "TinyNAS / MAE-DET / DeepMAD structures: "
        "{'space_arch': 'CnnNet', 'best_structures': [[{'class': 'ConvKXBNRELU', 'in': 3, ...}, ...]]}"
    )

    def parse(self, text: str, *, rechain: bool = False) -> ArchSpec:
        body, source = _parse_tree(text)
        nodes = _structure_nodes(body, source)
        if len(nodes) != 1:
            raise ArchSyntaxError(
                f"the text holds {len(nodes)} structures but an ArchSpec is one network; read them all with "
                "zennas.arch.tinynas.parse_all(text), or keep one structure in 'best_structures'",
                position=source.at(nodes[1]),
            )
        return _spec_from_list(nodes[0], source, rechain=rechain)

    def format(self, spec: ArchSpec, *, canonical: bool = False) -> str:
        extras = spec.source if (spec.source is not None and not canonical) else ((),) * len(spec.blocks)
        blocks = ", ".join(_format_block(b, e) for b, e in zip(spec.blocks, extras, strict=True))
        return f"{{'space_arch': {SPACE_ARCH!r}, 'best_structures': [[{blocks}]]}}"

    def looks_like(self, text: str) -> bool:
        s = text.lstrip()
        if s.startswith("{"):
            return True
        # BINAS strings are lists of lists of strings ([['ds_r1_k3_s1_e1_c16'], ...]); TinyNAS lists hold dicts.
        return s.startswith("[") and re.match(r"\[\s*\[\s*['\"]", s) is None


register_dialect(TinyNASDialect())

__all__ = [
    "ACTIVATIONS",
    "CLASSES",
    "DIALECT",
    "SUPER_CLASSES",
    "InnerBlock",
    "StageInfo",
    "TinyConv",
    "TinyNASDialect",
    "TinyRes",
    "block_dict",
    "inner_blocks",
    "parse_all",
    "se_width",
    "stage_info",
]
