"""Gradient saliency proxies at initialisation: SynFlow, GradNorm, SNIP, ZiCo (REFERENCE 3.6-3.8, 3.12)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zennas.errors import ConfigError, DegenerateNetworkError
from zennas.proxies import Option, register_proxy
from zennas.proxies.classic_common import (
    fast_layout,
    flat_outputs,
    model_and_batch,
    random_labels,
    real_or_random_labels,
    require_classifier,
    train_mode,
    weight_layers,
)
from zennas.proxies.context import ProxyContext

GRAD_BATCH = 64  # Abdelfattah et al. ICLR'21 ran grad_norm/snip/synflow/jacob_cov on one batch of 64
ZICO_BATCH = 64  # per batch; ZiCo averages over batches


def _grads(loss: torch.Tensor, params: list[nn.Parameter]) -> list[torch.Tensor]:
    """d loss / d param for each param; zeros for a param the loss does not reach."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def _weights(model: nn.Module) -> list[nn.Parameter]:
    return [layer.weight for layer in weight_layers(model)]


# --- SynFlow ---------------------------------------------------------------------------------------


@register_proxy(
    "synflow",
    description="SynFlow, sign=standard: PyTorch default init, network built without BatchNorm, every parameter "
    "replaced by its absolute value, float64; input = all-ones [1, 3, R, R] (the batch size setting is not "
    "used); R = sum of all outputs; one backward; score = sum over conv/linear weights of sum |theta * dR/dtheta| "
    "(>= 0; 0 when no path links input and output). sign=zennas (ZenNAS compute_syncflow_score.py): N(0,1) "
    "conv/linear weights (BN 1/0), absolute value of every state tensor (BN buffers included), float64, BN kept "
    "in training mode on the batch of 1; per conv/linear layer |w * dR/dw| summed over all axes but the output "
    "channel and averaged over output channels; summed over layers and returned as -1 x the sum (ZenNAS "
    "maximised negative SynFlow).",
    source="Tanaka et al. NeurIPS'20, as a zero-cost proxy in Abdelfattah et al. ICLR'21; ZenNAS "
    "compute_syncflow_score.py for sign=zennas; REFERENCE 3.6",
    higher_is_better=True,
    batch_size=1,
    options={"sign": Option("standard", ("standard", "zennas"), "standard (positive) or zennas (ZenNAS, negative)")},
)
def synflow(ctx: ProxyContext) -> float:
    """Synaptic flow through the absolute-valued network."""
    zennas = ctx.option("sign") == "zennas"
    if zennas:
        model = train_mode(ctx.build(init="normal"), ctx)
        ctx.meta["bn_mode"] = "train (batch statistics of the single all-ones input)"
        tensors = list(model.state_dict().values())  # parameters and buffers, sharing storage
    else:
        model = ctx.build(bn=False)
        ctx.meta["bn_mode"] = "none (built without BatchNorm)"
        tensors = list(model.parameters())
    with torch.no_grad():
        for tensor in tensors:
            tensor.abs_()  # the model is fresh and discarded, so the signs need no restoring
    model.double()
    ctx.meta.update(input="all-ones [1, 3, R, R]", batch_size=1, precision="fp64")
    ones = torch.ones(1, 3, ctx.resolution, ctx.resolution, dtype=torch.float64, device=ctx.device)
    weights = _weights(model)
    with torch.enable_grad():
        total = flat_outputs(model(ones)).sum()
        grads = _grads(total, weights)
    if not zennas:
        return float(sum((w.detach() * g).abs().sum() for w, g in zip(weights, grads, strict=True)))
    per_layer = []
    for w, g in zip(weights, grads, strict=True):
        saliency = (w.detach() * g).abs().reshape(w.shape[0], -1)  # [C_out, rest]
        per_layer.append(saliency.sum(dim=1).mean())
    return -float(sum(per_layer))


# --- GradNorm and SNIP ------------------------------------------------------------------------------


def _cross_entropy_grads(
    ctx: ProxyContext, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, params: list[nn.Parameter]
) -> list[torch.Tensor]:
    """Gradients of the mean cross-entropy of one batch w.r.t. `params` (one forward, one backward)."""
    ctx.meta["loss"] = "cross-entropy (mean over the batch)"
    with torch.enable_grad():
        logits = model(images)  # [B, num_classes]
        return _grads(F.cross_entropy(logits, labels), params)


@register_proxy(
    "grad_norm",
    description="GradNorm. variant=standard: PyTorch default init, BN training mode, one mini-batch (real images "
    "and labels if passed, else N(0,1) images and uniform labels), mean cross-entropy, one backward; score = "
    "sum over conv/linear layers of the L2 norm of dL/dW. variant=zennas (ZenNAS compute_gradnorm_score.py): "
    "N(0,1) conv/linear weights (BN 1/0), N(0,1) images and uniform random labels (always), same loss; score = "
    "one global L2 norm over the gradients of all parameters (BN included). Default batch 64. Needs a classifier.",
    source="Abdelfattah et al. 'Zero-Cost Proxies for Lightweight NAS' ICLR'21; ZenNAS compute_gradnorm_score.py "
    "for variant=zennas; REFERENCE 3.7",
    higher_is_better=True,
    batch_size=GRAD_BATCH,
    options={"variant": Option("standard", ("standard", "zennas"), "standard (Abdelfattah et al.) or zennas")},
)
def grad_norm(ctx: ProxyContext) -> float:
    """Norm of the loss gradient at initialisation."""
    require_classifier(ctx, "grad_norm")
    if ctx.option("variant") == "zennas":
        model = train_mode(ctx.build(init="normal"), ctx)
        images = ctx.gaussian(ctx.batch_size, 3, ctx.resolution, ctx.resolution)
        model, images = fast_layout(model, images, ctx)
        labels = random_labels(ctx, ctx.batch_size)
        ctx.meta.update(input="gaussian N(0,1)", labels="uniform random")
        grads = _cross_entropy_grads(ctx, model, images, labels, list(model.parameters()))
        return math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
    model, images = model_and_batch(ctx)
    labels = real_or_random_labels(ctx, images.shape[0])
    grads = _cross_entropy_grads(ctx, model, images, labels, _weights(model))
    return float(sum(g.norm() for g in grads))


@register_proxy(
    "snip",
    description="SNIP: PyTorch default init, BN training mode, one mini-batch (real images and labels if passed, "
    "else N(0,1) images and uniform labels), mean cross-entropy, one backward; score = sum over conv/linear "
    "weights of |theta * dL/dtheta|. Default batch 64. Needs a classifier.",
    source="Lee et al. ICLR'19, as a zero-cost proxy in Abdelfattah et al. ICLR'21; REFERENCE 3.8",
    higher_is_better=True,
    batch_size=GRAD_BATCH,
)
def snip(ctx: ProxyContext) -> float:
    """Connection sensitivity summed over the network."""
    require_classifier(ctx, "snip")
    model, images = model_and_batch(ctx)
    labels = real_or_random_labels(ctx, images.shape[0])
    weights = _weights(model)
    grads = _cross_entropy_grads(ctx, model, images, labels, weights)
    return float(sum((w.detach() * g).abs().sum() for w, g in zip(weights, grads, strict=True)))


# --- ZiCo --------------------------------------------------------------------------------------------


def zico_from_grads(per_batch: list[list[torch.Tensor]]) -> float:
    """ZiCo from per_batch[b][l] = gradient of layer l's weight on batch b (same shapes across batches)."""
    score, used = 0.0, 0
    for layer_grads in zip(*per_batch, strict=True):
        g = torch.stack([t.reshape(-1) for t in layer_grads]).to(torch.float64)  # [batches, weights]
        std = g.std(dim=0, correction=0)  # population std over batches, as numpy's default in the ZiCo code
        mean_abs = g.abs().mean(dim=0)
        keep = std != 0
        z = float((mean_abs[keep] / std[keep]).sum())
        if z > 0:  # a layer whose gradients never vary across batches carries no signal: skipped
            score += math.log(z)
            used += 1
    if used == 0:
        raise DegenerateNetworkError("zico is undefined: no layer's gradient varies across batches")
    return score


@register_proxy(
    "zico",
    description="ZiCo: PyTorch default init, BN training mode; `batches` mini-batches (default 2, each of the "
    "batch size, default 64; real images and labels if passed - batches x batch_size of them - else N(0,1) "
    "images and uniform labels); per batch one forward/backward of the mean cross-entropy and the gradient g "
    "of every conv/linear weight. Per layer: Z_l = sum over weights with std(g) != 0 of mean_batches|g| / "
    "std_batches(g) (population std of the signed gradient); ZiCo = sum_l ln Z_l, layers with Z_l = 0 "
    "skipped. Needs a classifier.",
    source="Li et al. 'ZiCo: Zero-shot NAS via Inverse Coefficient of Variation on Gradients' ICLR'23; REFERENCE 3.12",
    higher_is_better=True,
    batch_size=ZICO_BATCH,
    options={"batches": Option(2, None, "number of mini-batches (>= 2)")},
)
def zico(ctx: ProxyContext) -> float:
    """Sum over layers of ln(sum over weights of mean|g| / std(g) across batches)."""
    require_classifier(ctx, "zico")
    batches = ctx.option("batches")
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 2:
        raise ConfigError(f"zico needs batches >= 2 (a std across batches), got {batches!r}")
    b = ctx.batch_size
    model = train_mode(ctx.build(), ctx)
    images = ctx.images(batches * b)  # [batches * B, 3, R, R]
    if images.shape[0] < batches * b:
        raise ConfigError(
            f"zico needs {batches} batches of {b} = {batches * b} images, but the data has {images.shape[0]}; "
            "pass more images or lower the batch size"
        )
    labels = real_or_random_labels(ctx, batches * b)
    model, images = fast_layout(model, images, ctx)
    ctx.meta["batches"] = batches
    weights = _weights(model)
    per_batch = [
        _cross_entropy_grads(ctx, model, images[i * b : (i + 1) * b], labels[i * b : (i + 1) * b], weights)
        for i in range(batches)
    ]
    return zico_from_grads(per_batch)
