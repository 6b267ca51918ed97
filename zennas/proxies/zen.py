"""Zen-Score (REFERENCE 3.1): sampled on a fresh plain network, and a closed-form estimate of its expectation."""

from __future__ import annotations

import math
import threading
from functools import lru_cache
from itertools import accumulate
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from zennas.arch import ArchSpec
from zennas.arch.genet import GenBN, GenConv, GenPool, GenReLU, GenSuperRes
from zennas.arch.zennas import ZenConv, ZenRes
from zennas.build import BuildOptions, build
from zennas.counting import conv_out
from zennas.counting import genet as genet_layers
from zennas.counting import zennas as zennas_layers
from zennas.errors import ConfigError, DegenerateNetworkError, ProxyError
from zennas.proxies import Option, register_proxy
from zennas.proxies.context import ProxyContext

MODES = ("paper", "zennas")
_MODE_HELP = (
    "paper: sigma_i from the biased batch variance BN normalised with on x; "
    "zennas: sigma_i from running_var after both forwards (ZenNAS search-time scores)"
)
_GAMMA_HELP = "size of the input perturbation: x' = x + gamma * eps"
RESIDUALS = ("removed", "kept")
_RESIDUAL_HELP = (
    "removed: score the residual-free network (the Zen-NAS theory and default); "
    "kept: keep residual links (ablation; how NAS-Bench-Suite-Zero scored NAS-Bench-201)"
)


def plain_network(
    spec: ArchSpec, generator: torch.Generator, device: torch.device, *, residual: bool = False
) -> nn.Module:
    """Fresh backbone of `spec` as Zen scores it: no residual links, no SE, BN present, in train mode.

    `residual=True` keeps the residual links (an ablation, and what benchmark suites that apply Zen to
    residual cells such as NAS-Bench-201 measured); the theory covers the residual-free network.

    Every conv/linear weight is drawn N(0, 1) from `generator` in module order (the same values as
    `torch.randn(weight.shape, generator=generator)`), biases are 0, BN gamma 1, beta 0, running mean 0
    and variance 1. The classifier head is not built: Zen never looks past the features.

    The network is allocated and drawn where `generator` lives: a generator on `device` builds it
    there with no host work and no copy (a CUDA seed then fixes the network per device kind); a CPU
    generator for a CUDA `device` draws on the CPU and copies, the same network on every device.
    """
    home = generator.device if generator.device.type != device.type else device
    model = init_plain_(plain_skeleton(spec, home, residual=residual), generator)
    return model if home == device else model.to(device)


class _SkipInit(TorchFunctionMode):
    """Inside it, every torch.nn.init function returns its tensor untouched.

    Module constructors run PyTorch's default init (kaiming_uniform_ over every conv weight, on the
    global RNG) only for init_plain_ to overwrite it: a full pass over the weights, wasted. The mode
    is thread-local, so it never reaches another thread's modules.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _INIT_FUNCTIONS:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


_INIT_FUNCTIONS = frozenset(
    f for name, f in vars(nn.init).items() if callable(f) and name.endswith("_") and not name.startswith("_")
)


def plain_skeleton(spec: ArchSpec, device: torch.device, *, residual: bool = False) -> nn.Module:
    """The modules of `spec`'s plain network (see plain_network) on `device`, weights not yet drawn.

    Parameters hold whatever memory they were given until init_plain_ fills them; nothing touches
    the global RNG. Off the CPU they are allocated on the device directly (`to_empty`), not copied.
    """
    with _SkipInit():
        model = build(spec, BuildOptions(num_classes=0, residual=residual, use_se=False))
    if device.type != "cpu":
        model = model.to_empty(device=device)
    return model.train()


@torch.no_grad()
def init_plain_(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Conv/linear weights ~ N(0, 1) from `generator` in module order, biases 0; BN gamma 1, beta 0,
    running mean 0, variance 1; returned in FP32. Every parameter and buffer is written."""
    ones: list[torch.Tensor] = []
    zeros: list[torch.Tensor] = []
    counters: list[torch.Tensor] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            module.weight.normal_(generator=generator)  # in place: no temporary, same stream as randn
            if module.bias is not None:
                zeros.append(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            if module.affine:
                ones.append(module.weight)
                zeros.append(module.bias)
            if module.track_running_stats:
                ones.append(module.running_var)
                zeros.append(module.running_mean)
                counters.append(module.num_batches_tracked)
        elif any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
            raise ProxyError(
                f"zen cannot initialise module {name} ({type(module).__name__}): it draws Conv2d/Linear weights "
                "and resets BatchNorm2d only; teach zennas.proxies.zen.init_plain_ this module"
            )
    # A few fused kernels on CUDA instead of five launches per BN layer; 0 + 1 is exactly 1.
    if zeros or ones:
        torch._foreach_zero_(zeros + ones)
    if ones:
        torch._foreach_add_(ones, 1.0)
    if counters:
        torch._foreach_zero_(counters)
    return model if torch.get_default_dtype() == torch.float32 else model.float()


def batch_norms(model: nn.Module) -> list[nn.BatchNorm2d]:
    """Every BatchNorm2d of `model`, in module order."""
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


class ZenParts(NamedTuple):
    """One Zen-Score and its terms."""

    score: float  # log_delta + log_sigma
    log_delta: float
    log_sigma: float  # sum over live BN layers of ln sigma_i
    bn_layers: int
    dead_bn_layers: int  # paper mode: BN layers left out of the sum (identically zero input, or never run)


@torch.inference_mode()
def zen_score(model: nn.Module, x: torch.Tensor, eps: torch.Tensor, *, gamma: float, mode: str) -> ZenParts:
    """ln Delta + sum_i ln sigma_i of a fresh train-mode network (REFERENCE 3.1); forwards x, then x + gamma * eps.

    Changes the running statistics of `model` (and, in paper mode, BN momentum). Raises
    DegenerateNetworkError when the features do not move at all (Delta = 0).
    """
    if mode not in MODES:
        raise ConfigError(f"unknown Zen mode {mode!r}; use one of {', '.join(MODES)}")
    features = model.forward_features
    bns = batch_norms(model)
    samples: dict[nn.Module, int] = {}  # paper mode: values per channel (N * H * W) of each BN input
    if mode == "paper":
        # With momentum 1 the running variance becomes exactly the (unbiased) batch variance of this
        # forward, computed by BN itself: no extra pass over the activations. Each BN runs once.
        saved = [bn.momentum for bn in bns]
        for bn in bns:
            bn.momentum = 1.0

        def count(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            samples[module] = inputs[0].numel() // inputs[0].shape[1]

        handles = [bn.register_forward_pre_hook(count) for bn in bns]
        try:
            f_x = features(x)  # [B, C, H, W]
            ran = [bn for bn in bns if bn in samples]  # a BN off the feature path has no statistics
            variances = [bn.running_var.mean() for bn in ran]  # read before x' overwrites them
        finally:
            for handle in handles:
                handle.remove()
            for bn, momentum in zip(bns, saved, strict=True):
                bn.momentum = momentum
    else:
        f_x = features(x)  # [B, C, H, W]
    f_xp = features(x + gamma * eps)  # [B, C, H, W]
    if mode == "zennas":
        # The ZenNAS quirk: running_var after two forwards (0.81 + 0.09 v(x) + 0.1 v(x')), not v(x).
        variances = [bn.running_var.mean() for bn in bns]
    # One device -> host transfer per score: the L1 sum and every BN's mean variance, FP32 as computed.
    host = torch.stack([(f_x - f_xp).abs_().sum(), *variances]).cpu()  # [1 + num_bn]
    delta = float(host[0]) / x.shape[0]
    if delta == 0.0:
        raise DegenerateNetworkError(
            "the features do not depend on the input (Delta = 0), so Zen-Score is undefined for this network"
        )
    v = host[1:].double()  # [num_bn] per-layer sigma_i^2 in FP64; empty without BN
    if mode == "paper" and ran:
        # Unbiased -> biased: BN normalises with the variance over N * H * W values.
        n = torch.tensor([samples[bn] for bn in ran], dtype=torch.float64)  # [num_bn]
        v = v * (n - 1) / n
    # A BN whose input is identically zero sits on no live path to the output (e.g. behind an NB201
    # `none` edge): it rescales no signal, so it contributes nothing rather than ln 0.
    live = v[v > 0]
    dead = len(bns) - live.numel()
    log_sigma = float(0.5 * live.log().sum())
    log_delta = math.log(delta)
    return ZenParts(log_delta + log_sigma, log_delta, log_sigma, len(bns), dead)


@register_proxy(
    "zen",
    description="Zen-Score: build the network fresh with residual links removed and no SE, BN in training mode "
    "(batch statistics), conv/linear weights N(0, 1), biases 0, BN gamma 1 beta 0; draw x, eps ~ N(0, 1) "
    "[B, 3, R, R] and forward x then x' = x + gamma * eps (no grad, FP32); f = features before global pooling; "
    "Delta = mean over the batch of the L1 sum over C, H, W of |f(x) - f(x')|; Zen = ln Delta + sum over every "
    "BatchNorm2d of ln sigma_i, sigma_i = sqrt(mean over channels of the biased batch variance BN normalised with "
    "on x) in mode 'paper', or sqrt(mean of running_var after both forwards, starting from 1) in mode 'zennas' "
    "(reproduces ZenNAS search-time scores). Delta = 0 flags the network degenerate.",
    source="Lin et al., Zen-NAS, ICCV'21; idstcv/ZenNAS:ZeroShotProxy/compute_zen_score.py; REFERENCE 3.1",
    batch_size=64,
    options={
        "mode": Option("paper", MODES, _MODE_HELP),
        "gamma": Option(1e-2, None, _GAMMA_HELP),
        "residual": Option("removed", RESIDUALS, _RESIDUAL_HELP),
    },
)
def zen_proxy(ctx: ProxyContext) -> float:
    """One Zen-Score sample on a fresh plain network (the registry repeats with fresh generators)."""
    mode, gamma, residual = ctx.option("mode"), _gamma(ctx), ctx.option("residual")
    # Weights, then x, then eps, all from one stream drawn on the scoring device: nothing is drawn on
    # the host or copied (on the CPU this is the seeded CPU generator itself).
    model = plain_network(ctx.spec, ctx.device_generator, ctx.device, residual=residual == "kept")
    r = ctx.resolution
    x = ctx.device_gaussian(ctx.batch_size, 3, r, r)  # [B, 3, R, R]
    eps = ctx.device_gaussian(ctx.batch_size, 3, r, r)  # [B, 3, R, R]
    ctx.meta.update(
        input="gaussian N(0,1)",
        init="normal",
        bn_mode="train",
        residual=residual,
        se="off",
        mode=mode,
        gamma=gamma,
    )
    parts = zen_score(model, x, eps, gamma=gamma, mode=mode)
    ctx.meta.update(bn_layers=parts.bn_layers, dead_bn_layers=parts.dead_bn_layers)
    return parts.score


def _gamma(ctx: ProxyContext) -> float:
    gamma = ctx.option("gamma")
    if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not 0 < gamma < math.inf:
        raise ConfigError(f"zen option gamma must be a positive number (default 1e-2), got {gamma!r}")
    return float(gamma)


# ------------------------------------------------------------------------------------------------
# Closed form: the expected Zen-Score of a plain conv-BN-ReLU chain, without a forward pass.
#
# Mean-field model (N(0, 1) weights, BN in train mode, wide layers; every weight cross term vanishes
# in expectation over the weights):
# * a BN's input variance, averaged over channels, is (input channels per group) x the centred
#   second moment of the conv input summed over the valid taps (zero padding drops taps at the
#   border), plus the spread of the ReLU mean that different tap counts leave over positions;
# * conv and BN keep the correlation rho between the two forwards; ReLU maps eps = 1 - rho through
#   the arc-cosine kernel; the border offsets, identical for x and x', dilute eps;
# * Delta = C x sum over positions of E|relu(z) - relu(z')| = sqrt(eps / pi) x sqrt(var z there).
# Spatial maps are separable products of one per-axis profile (mean 1), kept per conv.
# ------------------------------------------------------------------------------------------------

_RELU_MEAN2 = 0.5 / math.pi  # (E relu(z))^2, z ~ N(0, 1)
_RELU_VAR = 0.5 - _RELU_MEAN2  # Var relu(z)
ANALYTIC_DIALECTS = ("zennas-v1", "genet")
_MEMO_LIMIT = 400_000  # memo entries before it is cleared

ConvShape = tuple[int, int, int]  # (input channels per group, kernel, stride)


_SHAPE_SIDE = 224  # conv shapes do not depend on the side a block is lowered at


@lru_cache(maxsize=1 << 16)
def _block_convs(block: object) -> tuple[ConvShape, ...]:
    """Convolutions of one block as built without residual links or SE, in order: its main-path layers."""
    if isinstance(block, ZenConv | ZenRes):
        records, _ = zennas_layers.block_group(block, _SHAPE_SIDE, False)
    else:
        assert isinstance(block, GenConv | GenSuperRes)  # guaranteed by conv_blocks
        records, _ = genet_layers.block_group(block, _SHAPE_SIDE)
    return tuple((r.c_in // r.groups, r.kernel, r.stride) for r in records if r.role == "main")


def conv_blocks(spec: ArchSpec) -> tuple[object, ...]:
    """The blocks that hold convolutions, once the plain network is checked to be a conv-BN-ReLU chain."""
    if spec.dialect == "zennas-v1":
        return spec.blocks  # every conv of a plain ZenNAS network is followed by BN and ReLU
    if spec.dialect != "genet":
        raise ConfigError(
            f"zen-analytic has a closed form for dialects {', '.join(ANALYTIC_DIALECTS)} only, not "
            f"{spec.dialect!r}; score it with the sampled proxy 'zen'"
        )
    # Loose GENet tokens must come as ConvKX -> BN -> RELU triples; super-blocks already are such chains.
    blocks, expect = [], "conv"
    for index, block in enumerate(spec.blocks):
        if isinstance(block, GenPool):
            continue
        kind = {GenConv: "conv", GenBN: "bn", GenReLU: "relu"}.get(type(block), "super")
        if kind != expect and not (kind == "super" and expect == "conv"):
            raise ConfigError(
                f"zen-analytic needs every GENet ConvKX followed by BN, then RELU; token {index} ({block.name}) "
                "breaks that pattern"
            )
        expect = {"conv": "bn", "bn": "relu"}.get(kind, "conv")
        if kind in ("conv", "super"):
            blocks.append(block)
    if expect != "conv":
        raise ConfigError("zen-analytic needs the GENet string to end with ConvKX, BN, RELU")
    return tuple(blocks)


@lru_cache(maxsize=4096)
def _taps(side: int, kernel: int, stride: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Per-axis operators of a 'same'-padded conv: output side, box sum [out, in] and tap means [k, in]."""
    pad = (kernel - 1) // 2
    out = conv_out(side, kernel, stride)
    index = stride * np.arange(out)[:, None] + np.arange(kernel)[None, :] - pad  # [out, k] input positions
    valid = (index >= 0) & (index < side)
    box = np.zeros((out, side))
    np.add.at(box, (np.broadcast_to(np.arange(out)[:, None], index.shape)[valid], index[valid]), 1.0)
    tap_mean = np.zeros((kernel, side))  # each tap's input averaged over the output positions
    np.add.at(tap_mean, (np.broadcast_to(np.arange(kernel)[None, :], index.shape)[valid], index[valid]), 1.0 / out)
    return out, box, tap_mean


Profile = list[float] | np.ndarray  # lists on small sides, where numpy's per-call cost dominates
_SMALL_SIDE = 12


@lru_cache(maxsize=4096)
def _spans(side: int, kernel: int, stride: int) -> tuple[int, tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
    """_taps as index ranges: output side, each output's valid input window, each tap's strided input range."""
    pad = (kernel - 1) // 2
    out = conv_out(side, kernel, stride)
    windows = tuple((max(0, o * stride - pad), min(side, o * stride - pad + kernel)) for o in range(out))
    taps = []
    for d in range(kernel):
        inputs = [o * stride - pad + d for o in range(out) if 0 <= o * stride - pad + d < side]
        if inputs:
            taps.append((inputs[0], inputs[-1] + 1))
    return out, windows, tuple(taps)


def _conv_profile(
    side: int, kernel: int, stride: int, profile: Profile, root: Profile
) -> tuple[int, float, float, Profile, Profile]:
    """One conv on a per-axis profile: (out side, mean box sum, sum of squared tap means of sqrt, profile, sqrt)."""
    if side <= _SMALL_SIDE:
        out, windows, taps = _spans(side, kernel, stride)
        cumulative = [0.0, *accumulate(profile)]
        summed = [cumulative[b] - cumulative[a] for a, b in windows]
        box_mean = sum(summed) / out
        tap_sq = sum((sum(root[a:b:stride]) / out) ** 2 for a, b in taps)
        profile = [v / box_mean for v in summed]
        return out, box_mean, tap_sq, profile, [math.sqrt(v) for v in profile]
    out, box, tap_mean = _taps(side, kernel, stride)
    summed = box @ profile  # [out]
    box_mean = float(summed.sum()) / out
    taps = tap_mean @ root  # [k]
    profile = summed / box_mean
    root = np.sqrt(profile)
    if out <= _SMALL_SIDE:
        return out, box_mean, float(taps @ taps), profile.tolist(), root.tolist()
    return out, box_mean, float(taps @ taps), profile, root


def _relu_eps(eps: float) -> float:
    """1 - corr(relu(z), relu(z')), centred, for unit normals with corr(z, z') = 1 - eps (arc-cosine kernel)."""
    theta = 2.0 * math.asin(math.sqrt(min(eps, 2.0) * 0.5))  # arccos(1 - eps) without cancellation
    return (math.pi * eps + theta - math.sin(theta) - theta * eps) / (math.pi - 1.0)


class _Memo:
    """Memo of `expected_zen`: per-axis profiles and block terms, shared by all architectures.

    A profile depends only on the resolution and the (kernel, stride) history, so it is named by an
    int state; `step` moves a state through a conv. Block terms are keyed by (block, entry state),
    so architectures sharing a prefix, and a search's mutated children, reuse the work. A call
    captures one memo, so `clear_memo` never mixes states of two memos.
    """

    def __init__(self) -> None:
        self.states: list[tuple[int, Profile, Profile, float]] = []  # (side, profile, sqrt, mean of sqrt)
        self.roots: dict[int, int] = {}
        self.steps: dict[tuple[int, int, int], tuple[int, float, float]] = {}
        self.blocks: dict[tuple, tuple[int, float, tuple[float, ...]]] = {}

    def root(self, resolution: int) -> int:
        """State of the input image: a flat profile."""
        if resolution not in self.roots:
            self.roots[resolution] = len(self.states)
            flat = [1.0] * resolution if resolution <= _SMALL_SIDE else np.ones(resolution)
            self.states.append((resolution, flat, flat, 1.0))
        return self.roots[resolution]

    def step(self, state: int, kernel: int, stride: int) -> tuple[int, float, float]:
        """(next state, mean taps-summed profile, sum over taps of the squared tap means of sqrt(profile))."""
        key = (state, kernel, stride)
        if key not in self.steps:
            side, profile, root, root_mean = self.states[state]
            if (kernel == 1 and stride == 1) or side == 1:
                # A 1x1 conv keeps the profile; on a 1x1 map only the centre tap is valid.
                self.steps[key] = (state, 1.0, root_mean * root_mean)
            else:
                out, box_mean, tap_sq, profile, root = _conv_profile(side, kernel, stride, profile, root)
                self.steps[key] = (len(self.states), box_mean, tap_sq)
                self.states.append((out, profile, root, sum(root) / out))
        return self.steps[key]

    def block(
        self, block: object, state: int, first: bool, batch_size: int, mode: str
    ) -> tuple[int, float, tuple[float, ...]]:
        """(next state, sum of ln sigma_i, per-conv eps dilution) of one block entered at `state`."""
        key = (block, state, first, batch_size, mode)
        if key in self.blocks:
            return self.blocks[key]
        states, paper, log = self.states, mode == "paper", math.log
        log_sigma, dilution = 0.0, []
        for index, (fan_c, kernel, stride) in enumerate(_block_convs(block)):
            if kernel == 1 and stride == 1:
                box_mean, tap_sq = 1.0, states[state][3] ** 2  # a 1x1 conv keeps the profile
            else:
                state, box_mean, tap_sq = self.step(state, kernel, stride)
            taps2, offsets2 = box_mean * box_mean, tap_sq * tap_sq  # 2-D figures: squares of per-axis ones
            if first and index == 0:
                centred, offset = taps2, 0.0  # x is zero-mean with unit variance
            else:
                # The ReLU mean, seen through fewer taps at the border, leaves a spread of per-position
                # offsets that BN keeps; it is the same for x and x', so it dilutes eps.
                centred, offset = _RELU_VAR * taps2, _RELU_MEAN2 * (taps2 - offsets2)
            variance = fan_c * (centred + offset)  # expected per-channel BN input variance
            if paper:
                n = batch_size * states[state][0] ** 2  # samples per channel
                log_sigma += 0.5 * log(variance * (n - 1) / n)  # the biased batch variance BN divides by
            else:
                log_sigma += 0.5 * log(0.81 + 0.19 * variance)  # running_var after the two forwards
            dilution.append(centred / (centred + offset))
        self.blocks[key] = result = (state, log_sigma, tuple(dilution))
        return result

    def __len__(self) -> int:
        return len(self.steps) + len(self.blocks)


_MEMO = _Memo()
_MEMO_LOCK = threading.RLock()  # candidates may be scored from several threads (zennas.proxies.inflight)


class ZenEstimate(NamedTuple):
    """The expected Zen-Score and its terms."""

    score: float
    log_delta: float
    log_sigma: float
    bn_layers: int


def expected_zen(
    spec: ArchSpec, *, resolution: int, batch_size: int = 64, gamma: float = 1e-2, mode: str = "paper"
) -> ZenEstimate:
    """Closed-form expectation of the Zen-Score of `spec` (zennas-v1 or genet) over weights and inputs."""
    if mode not in MODES:
        raise ConfigError(f"unknown Zen mode {mode!r}; use one of {', '.join(MODES)}")
    blocks = conv_blocks(spec)
    eps = 1.0 - 1.0 / math.sqrt(1.0 + gamma * gamma)  # 1 - corr(x, x + gamma * eps): kept by the first conv
    log_sigma, layers = 0.0, 0
    # A new state's number is the memo's length when it is appended: one thread in the memo at a time.
    with _MEMO_LOCK:
        if len(_MEMO) > _MEMO_LIMIT:
            clear_memo()
        memo = _MEMO
        state = memo.root(resolution)
        for index, block in enumerate(blocks):
            state, block_log_sigma, dilution = memo.block(block, state, index == 0, batch_size, mode)
            log_sigma += block_log_sigma
            for position, ratio in enumerate(dilution):
                if index or position:
                    eps = _relu_eps(eps)  # every conv but the first reads a ReLU output
                eps *= ratio
            layers += len(dilution)
        side, _, _, root_mean = memo.states[state]
    channels = spec.blocks[-1].out_channels
    # Delta = C x sum over positions of sqrt(eps / pi) x sqrt(profile(h) profile(w)).
    log_delta = math.log(channels) + 0.5 * math.log(eps / math.pi) + 2.0 * math.log(side * root_mean)
    return ZenEstimate(log_delta + log_sigma, log_delta, log_sigma, layers)


def clear_memo() -> None:
    """Forget the memoised profiles and block terms of `expected_zen` (results do not change)."""
    global _MEMO
    with _MEMO_LOCK:
        _MEMO = _Memo()
    _block_convs.cache_clear()
    _taps.cache_clear()
    _spans.cache_clear()


@register_proxy(
    "zen-analytic",
    description="Closed-form expectation of the Zen-Score (mode paper or zennas, same gamma and batch size) "
    "for zennas-v1 and GENet networks, without a forward pass: a mean-field model of the plain conv-BN-ReLU "
    "chain with N(0, 1) weights. Each BN's sigma^2 = (input channels per group) x (valid taps under zero "
    "padding) x the centred second moment of its input (1 for x, (pi - 1) / 2pi after a ReLU) plus the "
    "border spread of the ReLU mean; the correlation 1 - eps between the two forwards starts at "
    "1 / sqrt(1 + gamma^2), is kept by conv and BN, and goes through ReLU by the arc-cosine kernel "
    "(eps grows by pi / (pi - 1) per layer while small, then saturates); Delta = C x sum over positions of "
    "sqrt(eps / pi), since E|relu(z) - relu(z')| = sqrt((1 - rho) / pi). Spatial maps are tracked per axis.",
    source="zennas derivation (mean-field theory of random ReLU/BN networks: Poole et al. NeurIPS'16, "
    "Yang et al. ICLR'19) of the Zen-Score of Lin et al. ICCV'21; REFERENCE 3.1",
    batch_size=64,
    options={"mode": Option("paper", MODES, _MODE_HELP), "gamma": Option(1e-2, None, _GAMMA_HELP)},
    uses_data=False,
)
def zen_analytic_proxy(ctx: ProxyContext) -> float:
    """Expected Zen-Score from the architecture alone."""
    mode, gamma = ctx.option("mode"), _gamma(ctx)
    estimate = expected_zen(ctx.spec, resolution=ctx.resolution, batch_size=ctx.batch_size, gamma=gamma, mode=mode)
    ctx.meta.update(
        input="none (analytic)", init="normal (expectation)", bn_mode="train", mode=mode, gamma=gamma,
        bn_layers=estimate.bn_layers,
    )  # fmt: skip
    return estimate.score
