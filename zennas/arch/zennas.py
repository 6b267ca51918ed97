"""The ZenNAS dialect (`zennas-v1`): `SuperConvK3BNRELU(3,32,2,1)SuperResK1K5K1(32,64,2,16,3)...`.

Only super-block tokens are accepted (every released ZenNet uses only these). Kernel and
expansion live in the token name; arguments are integers. See REFERENCE.md section 1.1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from zennas.arch import register_dialect
from zennas.arch.ir import ArchSpec, BlockSpec, check_channel_chain, check_choice, check_positive
from zennas.arch.ir import rechain as rechain_blocks
from zennas.arch.limits import CHANNELS, DEPTH
from zennas.arch.tokens import RawToken, format_tokens, looks_like_tokens, parse_blocks
from zennas.errors import ArchSyntaxError, UnknownTokenError

DIALECT = "zennas-v1"
CONV_KERNELS = (1, 3, 5, 7)
RES_KERNELS = (3, 5, 7)
IDW_EXPANSIONS = (1, 2, 4, 6)
STRIDES = (1, 2)


@dataclass(frozen=True, kw_only=True)
class ZenConv(BlockSpec):
    """`SuperConvK{k}BNRELU(in,out,s,n)`: n x (conv k -> BN -> ReLU); stem and 1x1 head."""

    kernel: int
    sub_layers: int

    @property
    def name(self) -> str:
        return f"SuperConvK{self.kernel}BNRELU"

    @property
    def depth(self) -> int:
        return self.sub_layers

    def args(self) -> tuple[int, ...]:
        return (self.in_channels, self.out_channels, self.stride, self.sub_layers)


@dataclass(frozen=True, kw_only=True)
class ZenRes(BlockSpec):
    """Residual super-block `(in,out,s,b,n)`; `kind` is KXKX, K1KXK1 or IDW (with `expansion`)."""

    kind: str
    kernel: int
    bottleneck: int
    sub_layers: int
    expansion: int = 0  # IDW only

    @property
    def name(self) -> str:
        k = self.kernel
        if self.kind == "KXKX":
            return f"SuperResK{k}K{k}"
        if self.kind == "K1KXK1":
            return f"SuperResK1K{k}K1"
        return f"SuperResIDWE{self.expansion}K{k}"

    @property
    def depth(self) -> int:
        return self.sub_layers

    def args(self) -> tuple[int, ...]:
        return (self.in_channels, self.out_channels, self.stride, self.bottleneck, self.sub_layers)


ZenBlock = ZenConv | ZenRes


def smart_round(x: float, base: int | None = None) -> int:
    """ZenNAS `smart_round`: nearest multiple of `base` with Python round (half-to-even), at least `base`."""
    if base is None:
        base = 32 if x > 256 else 16 if x > 128 else 8
    # round() on an exact .5 goes to the even neighbour: 20/8 = 2.5 -> 16, 28/8 = 3.5 -> 32.
    return max(base, round(x / base) * base)


_CONV = re.compile(r"SuperConvK([0-9]+)BNRELU")
_KXKX = re.compile(r"SuperResK([0-9]+)K([0-9]+)")
_K1KXK1 = re.compile(r"SuperResK1K([0-9]+)K1")
_IDW = re.compile(r"SuperResIDWE([0-9]+)K([0-9]+)")

TOKEN_FAMILIES = (
    "SuperConvK{1,3,5,7}BNRELU(in,out,stride,sub_layers)",
    "SuperResK{3,5,7}K{3,5,7}(in,out,stride,bottleneck,sub_layers)",
    "SuperResK1K{3,5,7}K1(in,out,stride,bottleneck,sub_layers)",
    "SuperResIDWE{1,2,4,6}K{3,5,7}(in,out,stride,bottleneck,sub_layers)",
)


def _block_from_token(tok: RawToken) -> ZenBlock:
    pos, name = tok.position, tok.name
    if m := _CONV.fullmatch(name):
        tok.expect_arity(("in", "out", "stride", "sub_layers"))
        kernel = int(m.group(1))
        check_choice(kernel, CONV_KERNELS, f"{name}: kernel", position=pos, token=name)
        values = [tok.int_arg(i, what) for i, what in enumerate(("in", "out", "stride", "sub_layers"))]
        block: ZenBlock = ZenConv(
            in_channels=values[0], out_channels=values[1], stride=values[2], kernel=kernel, sub_layers=values[3]
        )
    else:
        if m := _K1KXK1.fullmatch(name):
            kind, kernel, expansion = "K1KXK1", int(m.group(1)), 0
        elif m := _IDW.fullmatch(name):
            kind, kernel, expansion = "IDW", int(m.group(2)), int(m.group(1))
            check_choice(expansion, IDW_EXPANSIONS, f"{name}: expansion", position=pos, token=name)
        elif m := _KXKX.fullmatch(name):
            kind, kernel, expansion = "KXKX", int(m.group(1)), 0
            if m.group(1) != m.group(2):
                raise ArchSyntaxError(
                    f"{name}: both kernels of a SuperResKXKX block must be equal (e.g. SuperResK3K3)",
                    position=pos,
                    token=name,
                )
        else:
            raise UnknownTokenError(
                f"unknown block {name!r} in the {DIALECT} dialect; expected one of: {'; '.join(TOKEN_FAMILIES)}",
                position=pos,
                token=name,
            )
        check_choice(kernel, RES_KERNELS, f"{name}: kernel", position=pos, token=name)
        names = ("in", "out", "stride", "bottleneck", "sub_layers")
        tok.expect_arity(names)
        values = [tok.int_arg(i, what) for i, what in enumerate(names)]
        block = ZenRes(
            in_channels=values[0],
            out_channels=values[1],
            stride=values[2],
            kind=kind,
            kernel=kernel,
            bottleneck=values[3],
            sub_layers=values[4],
            expansion=expansion,
        )
    validate_block(block, position=pos)
    return block


def validate_block(block: ZenBlock, *, position: int | None = None) -> None:
    """Raise ArchValueError if a block's numbers are out of range."""
    name = block.name
    check_positive(block.in_channels, f"{name}: in channels", position=position, token=name)
    check_positive(block.out_channels, f"{name}: out channels", position=position, token=name)
    check_choice(block.stride, STRIDES, f"{name}: stride", position=position, token=name)
    check_positive(block.sub_layers, f"{name}: sub_layers", position=position, token=name)
    if isinstance(block, ZenRes):
        check_positive(block.bottleneck, f"{name}: bottleneck", position=position, token=name)
    CHANNELS.check(block.in_channels, f"{name}: in channels", position=position, token=name)
    CHANNELS.check(block.out_channels, f"{name}: out channels", position=position, token=name)
    if isinstance(block, ZenRes):
        CHANNELS.check(block.bottleneck, f"{name}: bottleneck", position=position, token=name)
    DEPTH.check(block.sub_layers, f"{name}: repeat count (sub_layers)", position=position, token=name)


class ZenNASDialect:
    """Parser/printer of the ZenNAS dialect."""

    name = DIALECT
    description = "ZenNAS / ZenNet strings: SuperConvK3BNRELU(3,32,2,1)SuperResK1K5K1(32,64,2,16,3)..."

    def parse(self, text: str, *, rechain: bool = False) -> ArchSpec:
        blocks, positions, labels = parse_blocks(text, _block_from_token)
        if rechain:
            blocks = rechain_blocks(blocks)
        else:
            check_channel_chain(blocks, positions)
        source = labels if any(label is not None for label in labels) and not rechain else None
        return ArchSpec(DIALECT, blocks, source)

    def format(self, spec: ArchSpec, *, canonical: bool = False) -> str:
        return format_tokens(spec, canonical=canonical)

    def looks_like(self, text: str) -> bool:
        return looks_like_tokens(text)


def split_deep_blocks(spec: ArchSpec, threshold: int = 6) -> ArchSpec:
    """ZenNAS `split`: a residual super-block with n >= threshold becomes (n=3) + (out,out,1,b,n-3)."""
    out: list[BlockSpec] = []
    for block in spec.blocks:
        while isinstance(block, ZenRes) and block.sub_layers >= threshold:
            out.append(replace(block, sub_layers=3))
            block = replace(block, in_channels=block.out_channels, stride=1, sub_layers=block.sub_layers - 3)
        out.append(block)
    return spec.replace_blocks(out)


register_dialect(ZenNASDialect())
