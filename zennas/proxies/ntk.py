"""TE-NAS condition number of the neural tangent kernel (REFERENCE 3.11)."""

from __future__ import annotations

import torch
from torch import nn

from zennas.errors import DegenerateNetworkError
from zennas.proxies import register_proxy
from zennas.proxies.classic_common import flat_outputs, model_and_batch, require_input_dependence
from zennas.proxies.context import ProxyContext

NTK_BATCH = 32


def tangent_kernel(per_sample: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    """Theta [B, B] (float64) = J J^T with J[i] = d per_sample[i] / d params, one backward per sample.

    `per_sample` [B] comes from one forward pass of the whole batch, so in training mode BN couples
    the samples and each row also carries the path through the batch statistics, as in TE-NAS. That
    coupling is why this is a loop of B backward passes over the shared graph, not a vmap of
    independent per-sample gradients (and why its cost grows as B^2).
    """
    batch = per_sample.shape[0]
    rows = [torch.empty(batch, p.numel(), dtype=p.dtype, device=p.device) for p in params]  # per param [B, n]
    for i in range(batch):
        grads = torch.autograd.grad(per_sample[i], params, retain_graph=i < batch - 1, allow_unused=True)
        for row, g in zip(rows, grads, strict=True):
            if g is None:
                row[i].zero_()
            else:
                row[i].copy_(g.reshape(-1))
    theta = torch.zeros(batch, batch, dtype=torch.float64, device=per_sample.device)
    for row in rows:
        r = row.to(torch.float64)  # per parameter, so the float64 copy stays small
        theta += r @ r.T
    return theta


@register_proxy(
    "ntk",
    description="TE-NAS NTK condition number: PyTorch default init, BN training mode; one mini-batch (real "
    "images if passed, else N(0,1)) through one forward pass; J[i] = gradient of the sum of sample i's "
    "outputs (logits) w.r.t. every parameter named 'weight' (conv, linear, BN gamma), one backward per sample "
    "through the shared batch graph (BN batch statistics couple the samples, as in TE-NAS); Theta = J J^T "
    "(float64); score = kappa = lambda_max / lambda_min (symmetric eigensolver). Lower is better. Default "
    "batch 32 (the cost grows as batch^2). An output independent of the input or a singular Theta raises "
    "DegenerateNetworkError.",
    source="Chen, Gong, Wang 'Neural Architecture Search on ImageNet in Four GPU Hours: A Theoretically Inspired "
    "Perspective' (TE-NAS) ICLR'21, get_ntk_n with train_mode=True; REFERENCE 3.11",
    higher_is_better=False,
    batch_size=NTK_BATCH,
)
def ntk(ctx: ProxyContext) -> float:
    """Condition number of the empirical NTK."""
    model, images = model_and_batch(ctx, pairs="ntk needs a batch of at least 2 for a condition number")
    # TE-NAS differentiates every parameter named "weight": conv, linear and BN gamma.
    params = [p for name, p in model.named_parameters() if "weight" in name]
    with torch.enable_grad():
        output = flat_outputs(model(images))  # [B, D]
        require_input_dependence(output, "ntk")
        theta = tangent_kernel(output.sum(dim=1), params)  # [B, B]
    eigenvalues = torch.linalg.eigvalsh(theta)  # ascending
    smallest, largest = float(eigenvalues[0]), float(eigenvalues[-1])
    # Numerical rank test of a float64 matrix: below this, kappa is rounding noise, not a property of the net.
    if smallest <= theta.shape[0] * torch.finfo(torch.float64).eps * largest:
        raise DegenerateNetworkError(
            f"ntk is undefined: the tangent kernel is singular (eigenvalues {smallest:.3g} .. {largest:.3g}); "
            "the per-sample gradients are linearly dependent"
        )
    return largest / smallest
