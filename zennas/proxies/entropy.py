"""TinyNAS entropy scores: MAE-DET entropy (`entropy`), DeepMAD (`deepmad`) and its effectiveness rho.

All three read a TinyNAS structure as a *plain chain* of convolutions grouped into units: a
`ConvKXBNRELU` block is one unit, every inner block of a super-block is one unit (REFERENCE 1.3);
the convs are the main-path layers of `zennas.counting.tinynas.layer_groups`.
Stages are TinyNAS's stride-2 bookkeeping (`zennas.arch.tinynas.stage_info`). The closed forms
need no tensors; the forward version of `entropy` propagates Gaussian noise through the chain.
Other dialects are refused: their stage split is not defined by the TinyNAS convention.
REFERENCE.md 3.2 and 3.3.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

import torch
import torch.nn.functional as F

from zennas.arch import ArchSpec
from zennas.arch.tinynas import DIALECT, StageInfo, TinyRes, stage_info
from zennas.counting import LayerRecord
from zennas.counting import tinynas as tinynas_layers
from zennas.errors import ConfigError
from zennas.proxies import Option, register_proxy
from zennas.proxies.context import ProxyContext

# Stage weights of the TinyNAS configs, C1..C5 (REFERENCE 3.2).
STAGE_WEIGHTS: dict[str, tuple[float, ...]] = {
    "detection": (0.0, 0.0, 1.0, 1.0, 6.0),  # MAE-DET / GFocalV2 backbones: FPN levels C3..C5
    "classification": (0.0, 0.0, 0.0, 0.0, 1.0),
    "damo-yolo": (0.0, 0.0, 1.0, 1.0, 16.0),
    "deepmad": (1.0, 1.0, 1.0, 1.0, 8.0),
}
DEPTH_PENALTY_RATIO = 10.0  # DeepMAD searcher: S - 10 * exp(std(D))


@dataclass(frozen=True)
class ChainConv:
    """One convolution of the plain chain (no BN, activation, SE or shortcut)."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    groups: int

    @property
    def log_fan_in(self) -> float:
        """ln((c_in / g) * k^2): ln of the output variance for N(0,1) weights and unit-variance input."""
        return math.log(self.in_channels // self.groups) + 2.0 * math.log(self.kernel)


# The chain keeps no sides: any input side large enough for every reduced-padding conv lists it.
CHAIN_SIDE = 4096


def conv_chain(spec: ArchSpec, resolution: int = CHAIN_SIDE) -> tuple[tuple[ChainConv, ...], ...]:
    """The backbone's main-path convs in order, one tuple per unit (ConvKXBNRELU block or inner block).

    The SE (ResK1DWSEK1) and the shortcuts are not on the chain: they contribute nothing.
    """
    _require_tinynas(spec, "entropy/deepmad scoring")
    units: list[tuple[ChainConv, ...]] = []
    for records in tinynas_layers.layer_groups(spec, resolution, use_se=False):
        main = (r for r in records if r.role == "main")
        for _, unit in groupby(main, key=lambda r: r.unit):
            units.append(tuple(ChainConv(r.c_in, r.c_out, r.kernel, r.stride, _padding(r), r.groups) for r in unit))
    return tuple(units)


def _padding(record: LayerRecord) -> int:
    return (record.kernel - 1) // 2 if record.padding is None else record.padding


def closed_form_block_terms(spec: ArchSpec) -> tuple[float, ...]:
    """Closed-form ln sigma_b per unit: 1/2 * sum over its convs of ln((c_in/g) * k^2), padding ignored."""
    return tuple(0.5 * sum(conv.log_fan_in for conv in unit) for unit in conv_chain(spec))


@torch.no_grad()
def forward_block_terms(
    spec: ArchSpec,
    resolution: int,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> tuple[float, ...]:
    """Measured ln sigma_b per unit: N(0,1) input and weights, each conv's output divided by its scalar std.

    Draws on the CPU from `generator` (input first, then each weight in chain order), computes on `device`.
    """
    units = conv_chain(spec, resolution)
    in_channels = spec.blocks[0].in_channels
    x = torch.randn(batch_size, in_channels, resolution, resolution, generator=generator).to(device)  # [B, C, R, R]
    terms: list[float] = []
    for unit in units:
        term = 0.0
        for conv in unit:
            shape = (conv.out_channels, conv.in_channels // conv.groups, conv.kernel, conv.kernel)
            weight = torch.randn(shape, generator=generator).to(device)
            x = F.conv2d(x, weight, stride=conv.stride, padding=conv.padding, groups=conv.groups)
            std = x.std()  # one scalar over the whole batch tensor, as MAE-DET normalises
            term += math.log(std.item())
            x.div_(std)  # keep unit variance so depth cannot overflow FP32
        terms.append(term)
    return tuple(terms)


def stage_entropies(spec: ArchSpec, block_terms: Sequence[float]) -> tuple[float, ...]:
    """H_i = sum of ln sigma_b over the units up to the end of stage i, plus ln C_i (resolution-free)."""
    stages = _stages(spec, 1)  # sides are not used; any resolution gives the same stage split
    return tuple(math.fsum(block_terms[: st.inner_blocks]) + math.log(st.channels) for st in stages)


def weighted_sum(stage_terms: Sequence[float], weights: Sequence[float], proxy: str) -> float:
    """sum_i w_i * term_i; a stage/weight count mismatch is a ConfigError."""
    if len(stage_terms) != len(weights):
        raise ConfigError(
            f"{proxy}: the network has {len(stage_terms)} stage(s) (a stage closes before every stride-2 block "
            f"after the first, and at the end) but the stage weights have {len(weights)} entries "
            f"({', '.join(f'{w:g}' for w in weights)}); use a structure with {len(weights)} stages or matching weights"
        )
    return math.fsum(w * t for w, t in zip(weights, stage_terms, strict=True))


def deepmad_stage_terms(spec: ArchSpec, resolution: int, *, tinynas_compat: bool = False) -> tuple[float, ...]:
    """Q_i = [ln C_i + ln(r_i^2)] * (sum of closed-form block terms up to stage i), r_i the stage-end side."""
    terms = closed_form_block_terms(spec)
    out = []
    for index, st in enumerate(_stages(spec, resolution, tinynas_compat=tinynas_compat)):
        if st.side < 1:
            raise ConfigError(
                f"deepmad: stage {index + 1} ends with feature side {st.side} at resolution {resolution}; "
                "use a larger resolution"
            )
        out.append((math.log(st.channels) + 2.0 * math.log(st.side)) * math.fsum(terms[: st.inner_blocks]))
    return tuple(out)


def deepmad_depths(spec: ArchSpec) -> tuple[int, ...]:
    """D of the depth penalty: L of every super-block, minus leading entries by the class of block 1."""
    _require_tinynas(spec, "deepmad")
    depths = [block.num_inner for block in spec.blocks if isinstance(block, TinyRes)]
    kind = spec.blocks[1].name if len(spec.blocks) > 1 else None
    # TinyNAS's rule, kept as is: ResNet-like nets drop two entries, KXKX nets one, depthwise nets none.
    if kind == "SuperResK1KXK1":
        depths = depths[1:]
    if kind in ("SuperResK1KXK1", "SuperResKXKX"):
        depths = depths[1:]
    return tuple(depths)


def deepmad_depth_penalty(spec: ArchSpec) -> float:
    """10 * exp(population std of D); an empty D has no spread (std 0)."""
    depths = deepmad_depths(spec)
    spread = statistics.pstdev(depths) if depths else 0.0
    return DEPTH_PENALTY_RATIO * math.exp(spread)


def deepmad_score(
    spec: ArchSpec,
    resolution: int,
    *,
    weights: Sequence[float] = STAGE_WEIGHTS["deepmad"],
    penalty: bool = True,
    tinynas_compat: bool = False,
) -> float:
    """DeepMAD S = sum_i w_i Q_i, minus the depth-uniformity penalty when `penalty`."""
    q = deepmad_stage_terms(spec, resolution, tinynas_compat=tinynas_compat)
    total = weighted_sum(q, weights, "deepmad")
    return total - deepmad_depth_penalty(spec) if penalty else total


def deepmad_rho(spec: ArchSpec) -> tuple[float, ...]:
    """Effectiveness rho_i = L_i / exp(mean over the L_i convs up to stage i of ln((c_in/g) k^2)), per stage."""
    # ln w_b of a unit = sum over its convs of ln((c_in/g) k^2) = 2 * its closed-form ln sigma_b.
    log_widths = [sum(conv.log_fan_in for conv in unit) for unit in conv_chain(spec)]
    return tuple(st.layers / math.exp(math.fsum(log_widths[: st.inner_blocks]) / st.layers) for st in _stages(spec, 1))


def _require_tinynas(spec: ArchSpec, what: str) -> None:
    if spec.dialect != DIALECT:
        raise ConfigError(
            f"{what} needs a TinyNAS structure (dialect {DIALECT!r}): stages and block terms follow TinyNAS's "
            f"block classes and stride-2 bookkeeping; got dialect {spec.dialect!r}. Give a structure such as "
            "{'space_arch': 'CnnNet', 'best_structures': [[{'class': 'ConvKXBNRELU', 'in': 3, 'out': 32, 's': 2, "
            "'k': 3}, ...]]}"
        )


def _stages(spec: ArchSpec, resolution: int, *, tinynas_compat: bool = False) -> tuple[StageInfo, ...]:
    _require_tinynas(spec, "entropy/deepmad scoring")
    return stage_info(spec, resolution, tinynas_compat=tinynas_compat)


_WEIGHTS_OPTION = Option(
    "detection",
    tuple(STAGE_WEIGHTS),
    "stage weights C1..C5: " + "; ".join(f"{k} {list(map(int, v))}" for k, v in STAGE_WEIGHTS.items()),
)


@register_proxy(
    "entropy",
    description="MAE-DET entropy of a TinyNAS backbone. Units are the stem/plain convs and the inner blocks; "
    "ln sigma_b of a unit is, in the closed form (default), 1/2 * sum over its main-path convs of ln((c_in/g) * k^2) "
    "(SE and shortcuts excluded, padding ignored); in the forward version, x ~ N(0,1) [B, 3, R, R] goes through the "
    "plain chain of the backbone's convs (N(0,1) weights, no BN, activation or shortcut), each conv's output is "
    "divided by its scalar std s over the whole batch tensor and ln sigma_b = sum of ln s over the unit's convs. "
    "Stage entropy H_i = sum of ln sigma_b up to the end of stage i + ln C_i; score S = sum_i w_i H_i. The closed form "
    "is resolution-free; the forward version sits slightly below it on small maps (zero padding). TinyNAS averaged 4 "
    "forward repeats (pass repeats=4); the published R is 480 for detection, 224 for classification.",
    source="Sun et al., MAE-DET, ICML'22; alibaba/lightweight-neural-architecture-search "
    "(compute_entropy.py at 83ad315, compute_madnas.py); REFERENCE 3.2",
    batch_size=32,
    options={
        "version": Option("closed", ("closed", "forward"), "closed: expectation formula; forward: Gaussian noise"),
        "weights": _WEIGHTS_OPTION,
    },
)
def entropy_proxy(ctx: ProxyContext) -> float:
    """MAE-DET entropy S = sum_i w_i H_i."""
    _require_tinynas(ctx.spec, "proxy entropy")
    weights = STAGE_WEIGHTS[ctx.option("weights")]
    if ctx.option("version") == "forward":
        terms = forward_block_terms(ctx.spec, ctx.resolution, ctx.batch_size, ctx.generator, ctx.device)
        ctx.meta.update(input="gaussian N(0,1)", init="normal N(0,1) weights", chain="plain convs (no BN/act/shortcut)")
        return weighted_sum(stage_entropies(ctx.spec, terms), weights, "entropy")
    stages = stage_entropies(ctx.spec, closed_form_block_terms(ctx.spec))
    ctx.meta.update(input="none (analytic)", stage_entropies=list(stages))
    return weighted_sum(stages, weights, "entropy")


@register_proxy(
    "deepmad",
    description="DeepMAD score of a TinyNAS backbone: block term = closed-form madnas ln sigma_b "
    "(1/2 * sum over the unit's convs of ln((c_in/g) * k^2)); Q_i = [ln C_i + ln(r_i^2)] * (sum of block terms up to "
    "the end of stage i), r_i = feature side at the end of stage i at the scoring resolution (floor division by each "
    "block's stride); S = sum_i w_i Q_i (default w = [1,1,1,1,8]); with penalty, S - 10 * exp(population std of D), "
    "D = L of every super-block, the first entry dropped twice when block 1 is SuperResK1KXK1 and once when it is "
    "SuperResKXKX. tinynas_compat reproduces TinyNAS's SE defect (side 1 after any SuperResK1DWSEK1 block).",
    source="Shen et al., DeepMAD, CVPR'23; alibaba/lightweight-neural-architecture-search (compute_deepmad.py, "
    "strategy.py); REFERENCE 3.3",
    uses_data=False,
    options={
        "weights": Option("deepmad", _WEIGHTS_OPTION.allowed, _WEIGHTS_OPTION.help),
        "penalty": Option(True, (True, False), "subtract the depth-uniformity penalty 10 * exp(std(D))"),
        "tinynas_compat": Option(False, (False, True), "reproduce TinyNAS's SE defect: side 1 after an SE block"),
    },
)
def deepmad_proxy(ctx: ProxyContext) -> float:
    """DeepMAD S = sum_i w_i Q_i (minus the depth penalty)."""
    _require_tinynas(ctx.spec, "proxy deepmad")
    q = deepmad_stage_terms(ctx.spec, ctx.resolution, tinynas_compat=bool(ctx.option("tinynas_compat")))
    total = weighted_sum(q, STAGE_WEIGHTS[ctx.option("weights")], "deepmad")
    ctx.meta.update(input="none (analytic)", stage_terms=list(q))
    if ctx.option("penalty"):
        penalty = deepmad_depth_penalty(ctx.spec)
        ctx.meta["depth_penalty"] = penalty
        total -= penalty
    return total


@register_proxy(
    "deepmad-rho",
    description="DeepMAD effectiveness rho = max over stages of rho_i = L_i / exp((1/L_i) * sum_{b<=i} ln w_b): L_i = "
    "cumulative conv layers (TinyNAS layers convention), w_b = product over a unit's main-path convs of "
    "(c_in/g) * k^2 (stem: C_in * k^2; SE and shortcuts excluded), i.e. depth over geometric-mean per-layer width. "
    "Resolution-free; lower is better (TinyNAS caps it at 0.3 for ResNet-like, 0.5 for MobileNetV2+SE searches).",
    source="Shen et al., DeepMAD, CVPR'23; alibaba/lightweight-neural-architecture-search "
    "(CnnNet.get_efficient_score); REFERENCE 3.3",
    higher_is_better=False,
    uses_data=False,
)
def deepmad_rho_proxy(ctx: ProxyContext) -> float:
    """max_i rho_i."""
    _require_tinynas(ctx.spec, "proxy deepmad-rho")
    rho = deepmad_rho(ctx.spec)
    ctx.meta.update(input="none (analytic)", stage_rho=list(rho))
    return max(rho)


__all__ = [
    "STAGE_WEIGHTS",
    "ChainConv",
    "closed_form_block_terms",
    "conv_chain",
    "deepmad_depth_penalty",
    "deepmad_depths",
    "deepmad_rho",
    "deepmad_score",
    "deepmad_stage_terms",
    "forward_block_terms",
    "stage_entropies",
    "weighted_sum",
]
