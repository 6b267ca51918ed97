"""The GENet dialect: `ConvKX(3,32,3,2)BN(32)RELU(32)SuperResKXKX(32,128,3,2,1.0,1)...AdaptiveAvgPool(C,1)`.

Super-blocks take (in,out,kernel,stride,expansion,sub_layers) with a float expansion; names are
matched exactly (the original prefix lookup confuses SuperResK1KX with SuperResK1KXK1).
Labels (`uuid...|`) are kept as side data. See REFERENCE.md section 1.2.
"""

from __future__ import annotations

from dataclasses import dataclass

from zennas.arch import register_dialect
from zennas.arch.ir import ArchSpec, BlockSpec, check_channel_chain, check_choice, check_positive
from zennas.arch.limits import CHANNELS, DEPTH, EXPANSION
from zennas.arch.tokens import RawToken, format_tokens, looks_like_tokens, parse_blocks
from zennas.errors import ArchValueError, UnknownTokenError

DIALECT = "genet"
KERNELS = (1, 3, 5, 7)
STRIDES = (1, 2)
SUPER_KINDS = ("KXKX", "K1KXK1", "K1DWK1", "K1KX", "K1DW")


@dataclass(frozen=True, kw_only=True)
class GenConv(BlockSpec):
    """`ConvKX(in,out,k,s)`: a plain bias-free convolution."""

    kernel: int

    @property
    def name(self) -> str:
        return "ConvKX"

    def args(self) -> tuple:
        return (self.in_channels, self.out_channels, self.kernel, self.stride)


@dataclass(frozen=True, kw_only=True)
class _GenPassThrough(BlockSpec):
    """A token that keeps its channel count and adds no layer to the sub_layers budget (BN, RELU, the pool)."""

    token = ""  # the token's name (a class attribute, not a field)

    @property
    def name(self) -> str:
        return self.token

    @property
    def depth(self) -> int:
        return 0

    def args(self) -> tuple:
        return (self.out_channels,)


@dataclass(frozen=True, kw_only=True)
class GenBN(_GenPassThrough):
    """`BN(c)`."""

    token = "BN"


@dataclass(frozen=True, kw_only=True)
class GenReLU(_GenPassThrough):
    """`RELU(c)`."""

    token = "RELU"


@dataclass(frozen=True, kw_only=True)
class GenPool(_GenPassThrough):
    """`AdaptiveAvgPool(c,1)`: the trailing pool; the builder replaces it by global pooling."""

    output_size: int = 1

    token = "AdaptiveAvgPool"

    def args(self) -> tuple:
        return (self.out_channels, self.output_size)


@dataclass(frozen=True, kw_only=True)
class GenSuperRes(BlockSpec):
    """`SuperRes{kind}(in,out,k,s,expansion,n)`: n residual blocks of inner width round(out*expansion)."""

    kind: str
    kernel: int
    expansion: float
    sub_layers: int

    @property
    def name(self) -> str:
        return f"SuperRes{self.kind}"

    @property
    def depth(self) -> int:
        return self.sub_layers

    @property
    def inner_channels(self) -> int:
        """Inner width e = int(round(out * expansion)), from `out` also for the first block."""
        return round(self.out_channels * self.expansion)

    def args(self) -> tuple:
        return (self.in_channels, self.out_channels, self.kernel, self.stride, self.expansion, self.sub_layers)


GenBlock = GenConv | GenBN | GenReLU | GenPool | GenSuperRes
TOKEN_FAMILIES = (
    "ConvKX(in,out,k,s)",
    "BN(c)",
    "RELU(c)",
    "AdaptiveAvgPool(c,1)",
    *(f"SuperRes{kind}(in,out,k,s,expansion,n)" for kind in SUPER_KINDS),
)


def _block_from_token(tok: RawToken) -> GenBlock:
    name, pos = tok.name, tok.position
    block: GenBlock
    if name == "ConvKX":
        tok.expect_arity(("in", "out", "k", "s"))
        c_in, c_out, k, s = (tok.int_arg(i, w) for i, w in enumerate(("in", "out", "kernel", "stride")))
        check_choice(k, KERNELS, "ConvKX: kernel", position=pos, token=name)
        block = GenConv(in_channels=c_in, out_channels=c_out, stride=s, kernel=k)
    elif name in ("BN", "RELU"):
        tok.expect_arity(("c",))
        c = tok.int_arg(0, "channels")
        cls = GenBN if name == "BN" else GenReLU
        block = cls(in_channels=c, out_channels=c, stride=1)
    elif name == "AdaptiveAvgPool":
        tok.expect_arity(("c", "output_size"))
        c, size = tok.int_arg(0, "channels"), tok.int_arg(1, "output size")
        if size != 1:
            raise ArchValueError("AdaptiveAvgPool: only output size 1 is supported", position=pos, token=name)
        block = GenPool(in_channels=c, out_channels=c, stride=1, output_size=size)
    elif name.startswith("SuperRes") and name[len("SuperRes") :] in SUPER_KINDS:
        kind = name[len("SuperRes") :]
        tok.expect_arity(("in", "out", "k", "s", "expansion", "n"))
        c_in, c_out, k, s = (tok.int_arg(i, w) for i, w in enumerate(("in", "out", "kernel", "stride")))
        expansion = tok.float_arg(4, "expansion")
        n = tok.int_arg(5, "sub_layers")
        check_choice(k, KERNELS, f"{name}: kernel", position=pos, token=name)
        if not expansion > 0:
            raise ArchValueError(f"{name}: expansion must be > 0, got {expansion}", position=pos, token=name)
        EXPANSION.check(expansion, f"{name}: expansion", position=pos, token=name)
        if kind in ("K1KX", "K1DW") and expansion != 1.0:
            raise ArchValueError(f"{name}: expansion must be 1.0 for this block", position=pos, token=name)
        block = GenSuperRes(
            in_channels=c_in, out_channels=c_out, stride=s, kind=kind, kernel=k, expansion=expansion, sub_layers=n
        )
        check_positive(n, f"{name}: sub_layers", position=pos, token=name)
        DEPTH.check(n, f"{name}: repeat count (sub_layers)", position=pos, token=name)
        if block.inner_channels < 1:
            raise ArchValueError(f"{name}: round(out*expansion) must be >= 1", position=pos, token=name)
    else:
        raise UnknownTokenError(
            f"unknown block {name!r} in the {DIALECT} dialect; expected one of: {'; '.join(TOKEN_FAMILIES)}",
            position=pos,
            token=name,
        )
    check_positive(block.in_channels, f"{name}: in channels", position=pos, token=name)
    check_positive(block.out_channels, f"{name}: out channels", position=pos, token=name)
    check_choice(block.stride, STRIDES, f"{name}: stride", position=pos, token=name)
    CHANNELS.check(block.in_channels, f"{name}: in channels", position=pos, token=name)
    CHANNELS.check(block.out_channels, f"{name}: out channels", position=pos, token=name)
    return block


def _format_arg(value: object) -> str:
    return repr(value) if isinstance(value, float) else str(value)


class GENetDialect:
    """Parser/printer of the GENet dialect."""

    name = DIALECT
    description = "GENet strings: ConvKX(3,32,3,2)BN(32)RELU(32)SuperResKXKX(32,128,3,2,1.0,1)...AdaptiveAvgPool(C,1)"

    def parse(self, text: str, *, rechain: bool = False) -> ArchSpec:
        if rechain:
            raise ArchValueError("rechain repair is only offered for the zennas-v1 dialect; drop --rechain")
        blocks, positions, labels = parse_blocks(text, _block_from_token)
        check_channel_chain(blocks, positions)
        for index, block in enumerate(blocks[:-1]):
            if isinstance(block, GenPool):
                raise ArchValueError(
                    "AdaptiveAvgPool may only be the last token", position=positions[index], token=block.name
                )
        source = labels if any(label is not None for label in labels) else None
        return ArchSpec(DIALECT, blocks, source)

    def format(self, spec: ArchSpec, *, canonical: bool = False) -> str:
        return format_tokens(spec, canonical=canonical, format_arg=_format_arg)

    def looks_like(self, text: str) -> bool:
        return looks_like_tokens(text)


register_dialect(GENetDialect())
