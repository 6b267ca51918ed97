"""#Params and FLOPs as proxies (REFERENCE 3.14): exact analytic counts, no forward pass."""

from __future__ import annotations

from zennas.counting import count
from zennas.proxies import Option, register_proxy
from zennas.proxies.context import ProxyContext


@register_proxy(
    "params",
    description="Learnable parameters of the network with its classifier (BN gamma/beta included), counted "
    "analytically from the architecture (zennas.counting).",
    source="baseline proxy (Abdelfattah et al. ICLR'21; NAS-Bench-Suite-Zero NeurIPS'22); REFERENCE 3.14",
    uses_data=False,
)
def params_proxy(ctx: ProxyContext) -> float:
    """Exact learnable-parameter count."""
    ctx.meta["input"] = "none (analytic)"
    return float(count(ctx.spec, resolution=ctx.resolution, num_classes=ctx.num_classes).params)


@register_proxy(
    "flops",
    description="Multiply-accumulates of convolutions and linear layers at the scoring resolution, counted "
    "analytically; convention='nb201' uses NAS-Bench-201's FLOPs (Linear bias counted), available for nb201 "
    "cells only.",
    source="baseline proxy (Abdelfattah et al. ICLR'21; NAS-Bench-Suite-Zero NeurIPS'22); REFERENCE 2.5, 3.14",
    uses_data=False,
    options={"convention": Option("macs", ("macs", "nb201"), "macs: conv+linear MACs; nb201: benchmark FLOPs")},
)
def flops_proxy(ctx: ProxyContext) -> float:
    """Exact MACs (or NAS-Bench-201 FLOPs)."""
    ctx.meta["input"] = "none (analytic)"
    cx = count(ctx.spec, resolution=ctx.resolution, num_classes=ctx.num_classes)
    if ctx.option("convention") == "nb201":
        if "nb201_flops" not in cx.extra:
            from zennas.errors import ConfigError

            raise ConfigError("flops convention 'nb201' applies to NAS-Bench-201 cells only; use 'macs'")
        return float(cx.extra["nb201_flops"])
    return float(cx.macs)
