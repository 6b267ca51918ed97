"""Helpers shared by the classic zero-cost proxies (NASWOT, SynFlow, GradNorm, SNIP, jacov, NTK, ZiCo)."""

from __future__ import annotations

import torch
from torch import nn

from zennas.errors import ConfigError, DegenerateNetworkError
from zennas.proxies.context import ProxyContext

TRAIN_MODE = "train (batch statistics)"


def weight_layers(model: nn.Module) -> list[nn.Conv2d | nn.Linear]:
    """The conv and linear layers, in module order: the layers pruning-at-init proxies sum over."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def require_classifier(ctx: ProxyContext, proxy: str) -> None:
    """ConfigError unless the network has a classifier (a cross-entropy loss needs logits)."""
    if ctx.num_classes <= 0:
        raise ConfigError(
            f"proxy {proxy} computes a cross-entropy loss and needs a classifier, but this network is built "
            "as a backbone (num_classes 0, the TinyNAS default); pass num_classes > 0 (e.g. num_classes=10 / "
            "--num-classes 10)"
        )


def train_mode(model: nn.Module, ctx: ProxyContext) -> nn.Module:
    """Put BN in training mode (batch statistics), as every reference implementation scores, and record it."""
    model.train()
    ctx.meta["bn_mode"] = TRAIN_MODE
    return model


def flat_outputs(output: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """Network output as [B, D] (logits, or a backbone's feature map flattened)."""
    if not isinstance(output, torch.Tensor):
        raise ConfigError("classic proxies score single-output networks; build without multi_scale")
    return output.reshape(output.shape[0], -1)


def require_input_dependence(output: torch.Tensor, proxy: str) -> None:
    """DegenerateNetworkError if every sample of the batch gives the same output (it ignores its input)."""
    flat = flat_outputs(output).detach()  # [B, D]
    if flat.shape[0] < 2:
        return
    spread = (flat - flat[:1]).abs().max()
    scale = flat.abs().max()
    # Relative tolerance: exact equality would miss rounding noise, yet real networks vary by far more.
    if spread <= 1e-6 * scale or spread == 0:
        raise DegenerateNetworkError(
            f"{proxy} is undefined: the network gives the same output for every input of the batch"
        )


def random_labels(ctx: ProxyContext, batch_size: int) -> torch.Tensor:
    """Uniform labels [B] from the proxy's generator, whatever batch was passed (ZenNAS practice)."""
    return torch.randint(0, ctx.num_classes, (batch_size,), generator=ctx.generator).to(ctx.device)


def real_or_random_labels(ctx: ProxyContext, batch_size: int) -> torch.Tensor:
    """ctx.labels(): the real labels of a passed batch, else uniform; records which in meta."""
    ctx.meta["labels"] = "real" if ctx.data is not None else "uniform random"
    return ctx.labels(batch_size)


def require_pairs(batch: int, needs: str) -> None:
    """ConfigError for a batch of one: a proxy that compares inputs with each other has nothing to compare.

    `needs` says why the proxy wants two inputs; the message adds the batch it got.
    """
    if batch < 2:
        raise ConfigError(f"{needs}, got {batch}")


def model_and_batch(ctx: ProxyContext, *, pairs: str | None = None) -> tuple[nn.Module, torch.Tensor]:
    """The model at PyTorch's default init in BN training mode and the input batch, both in the fast layout.

    The setting of most classic proxies (jacov, NTK, GradNorm, SNIP). With `pairs`, a batch of one is
    refused first (`require_pairs`).
    """
    model = train_mode(ctx.build(), ctx)
    images = ctx.images()
    if pairs is not None:
        require_pairs(images.shape[0], pairs)
    return fast_layout(model, images, ctx)


def fast_layout(model: nn.Module, images: torch.Tensor, ctx: ProxyContext) -> tuple[nn.Module, torch.Tensor]:
    """On the CPU, channels-last model and input: oneDNN convolutions run about 1.5-2x faster that way.

    Only the memory layout changes (values agree to rounding); flattening keeps the logical NCHW order.
    """
    if ctx.device.type != "cpu":
        return model, images
    ctx.meta["memory_format"] = "channels_last"
    return model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
