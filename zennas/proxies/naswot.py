"""NASWOT (REFERENCE 3.5) and its first version, the Jacobian covariance `jacov` (REFERENCE 3.10)."""

from __future__ import annotations

import torch
from torch import nn

from zennas.blocks.common import ResidualUnit
from zennas.errors import DegenerateNetworkError, ProxyError
from zennas.proxies import Option, register_proxy
from zennas.proxies.classic_common import fast_layout, flat_outputs, model_and_batch, require_pairs, train_mode
from zennas.proxies.context import ProxyContext

NASWOT_BATCH = 128  # Mellor et al.: one mini-batch of 128 images on NAS-Bench-201
ZENNAS_NASWOT_BATCH = 8  # ZenNAS compute_NASWOT_score.py
JACOV_BATCH = 64  # Abdelfattah et al. ICLR'21
JACOV_K = 1e-5
# nn.ReLU, nn.ReLU6 and nn.LeakyReLU: the modules whose type name contains "ReLU", the rule of the
# NASWOT and ZenNAS code.
RELU_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU)
_EXACT_FP32 = 2**24  # integers up to this are exact in float32, so a +-1 Gram of that width is exact


class ActivationKernel:
    """Accumulates K_H = N_A - Hamming over the binary codes of every ReLU unit a forward pass meets.

    Codes are read from ReLU *inputs* (unit active iff input > 0): a pre-hook on each ReLU-family
    module (it runs before an in-place ReLU overwrites its input), and a forward hook on each
    ResidualUnit, whose torch.relu after the add is no module (relu(y) > 0 iff y > 0).
    """

    def __init__(self, batch_size: int):
        self.gram = torch.zeros(batch_size, batch_size, dtype=torch.float64)  # sum of s s^T, s = 2c - 1
        self.units = 0  # N_A
        self.layers = 0
        # A NB201 node feeds up to three conv edges, each with its own ReLU on the same tensor: the last
        # few (tensor, version, gram) triples let such repeats reuse one product.
        self._recent: list[tuple[torch.Tensor, int, torch.Tensor]] = []

    def add(self, pre_activation: torch.Tensor) -> None:
        """Add the codes of one activation tensor [B, ...]."""
        t = pre_activation  # identity matters here: a detach() would make a new object every call
        width = t[0].numel()
        gram = next((g for seen, version, g in self._recent if seen is t and seen._version == version), None)
        if gram is None:
            gram = self._signed_gram(t.detach())
            self._recent = [*self._recent[-3:], (t, t._version, gram)]
        self.gram += gram
        self.units += width
        self.layers += 1

    @staticmethod
    def _signed_gram(t: torch.Tensor) -> torch.Tensor:
        """S S^T [B, B] (float64) of the +-1 codes S [B, units] of one tensor."""
        active = t > 0  # same memory layout as t
        if active.dim() == 4 and active.is_contiguous(memory_format=torch.channels_last):
            active = active.permute(0, 2, 3, 1)  # a view in memory order: the unit order does not matter
        active = active.reshape(active.shape[0], -1)  # [B, units]
        dtype = torch.float32 if active.shape[1] <= _EXACT_FP32 else torch.float64
        one = torch.ones((), dtype=dtype, device=t.device)
        signs = torch.where(active, one, -one)  # [B, units] in {-1, +1}
        # s_i . s_j = agreements - disagreements = N - 2 Hamming: one matmul instead of c c^T + (1-c)(1-c)^T.
        return (signs @ signs.T).to(torch.float64).cpu()

    def attach(self, model: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        """Hook every ReLU of `model`; returns the handles to remove."""
        handles = []
        for module in model.modules():
            if isinstance(module, RELU_MODULES):
                handles.append(module.register_forward_pre_hook(self._pre_hook))
            elif isinstance(module, ResidualUnit):
                handles.append(module.register_forward_hook(self._post_hook))
        return handles

    def _pre_hook(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self.add(args[0])

    def _post_hook(self, module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self.add(output)

    def hamming_kernel(self) -> torch.Tensor:
        """K_H [B, B] = N_A - Hamming(c_i, c_j)."""
        return (self.gram + self.units) / 2


def activation_kernel(model: nn.Module, images: torch.Tensor) -> ActivationKernel:
    """One forward pass of `images` [B, 3, R, R] collecting the ReLU codes; hooks are always removed."""
    kernel = ActivationKernel(images.shape[0])
    handles = kernel.attach(model)
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return kernel


@register_proxy(
    "naswot",
    description="NASWOT: network at initialisation in BN training mode; one forward pass of a mini-batch; "
    "for each input the binary code of every ReLU unit (active iff the ReLU input > 0; nn.ReLU/ReLU6/LeakyReLU "
    "modules plus the ReLU after each residual add), concatenated; K_H[i,j] = N_A - Hamming(c_i, c_j); "
    "score = ln|det K_H| (slogdet, float64). variant=standard: PyTorch default init, the given batch (real "
    "images if passed, else N(0,1)), default batch 128. variant=zennas: N(0,1) conv/linear weights (BN 1/0), "
    "N(0,1) images, batch 8 when the batch size is left at its default (ZenNAS ran a backward pass only to "
    "set hook flags; it does not change the codes and is skipped). Two inputs with identical codes make "
    "K_H singular: DegenerateNetworkError.",
    source="Mellor et al., 'Neural Architecture Search without Training', ICML'21; ZenNAS "
    "compute_NASWOT_score.py for variant=zennas; REFERENCE 3.5",
    higher_is_better=True,
    batch_size=NASWOT_BATCH,
    options={"variant": Option("standard", ("standard", "zennas"), "standard (Mellor et al.) or zennas (ZenNAS)")},
)
def naswot(ctx: ProxyContext) -> float:
    """ln|det K_H| of the ReLU-code Hamming kernel."""
    zennas = ctx.option("variant") == "zennas"
    batch = ctx.batch_size
    if zennas:
        batch = ZENNAS_NASWOT_BATCH if batch == NASWOT_BATCH else batch
        model = train_mode(ctx.build(init="normal"), ctx)
        images = ctx.gaussian(batch, 3, ctx.resolution, ctx.resolution)
        ctx.meta["input"] = "gaussian N(0,1)"
    else:
        model = train_mode(ctx.build(), ctx)
        images = ctx.images(batch)
    batch = images.shape[0]
    ctx.meta["batch_size"] = batch
    require_pairs(batch, "naswot compares inputs with each other and needs a batch of at least 2")
    kernel = activation_kernel(*fast_layout(model, images, ctx))
    if kernel.units == 0:
        raise ProxyError("naswot reads ReLU codes, but the network has no ReLU units")
    ctx.meta.update(relu_units=kernel.units, relu_layers=kernel.layers)
    k_h = kernel.hamming_kernel()  # [B, B]
    off_diagonal = k_h[~torch.eye(batch, dtype=torch.bool)]
    if bool((off_diagonal == kernel.units).any()):
        raise DegenerateNetworkError(
            "naswot is undefined: two inputs activate exactly the same ReLU units (K_H is singular)"
        )
    _, logabsdet = torch.linalg.slogdet(k_h)
    return float(logabsdet)


def input_jacobian(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(J [B, 3*R*R], output): gradient of the sum of all outputs w.r.t. each input, one backward pass."""
    model.requires_grad_(False)  # only input gradients are needed: skip every weight gradient
    x = images.detach().clone().requires_grad_(True)  # [B, 3, R, R]
    with torch.enable_grad():
        output = flat_outputs(model(x))  # [B, D]
        (grad,) = torch.autograd.grad(output.sum(), x)
    return grad.reshape(grad.shape[0], -1), output.detach()


def jacov_score(jacobian: torch.Tensor, k: float = JACOV_K) -> float:
    """-sum_n [ln(lambda_n + k) + 1/(lambda_n + k)] over the eigenvalues of the row-correlation matrix."""
    rows = jacobian.to(torch.float64)  # [B, D]
    std = rows.std(dim=1)
    if bool((std == 0).any()) or not bool(torch.isfinite(std).all()):
        raise DegenerateNetworkError(
            "jacov is undefined: the Jacobian of the output w.r.t. some input is constant (zero): "
            "the output does not depend on the input"
        )
    corr = torch.corrcoef(rows)  # [B, B]
    eigenvalues = torch.linalg.eigvalsh(corr)  # symmetric: real eigenvalues, ascending
    return float(-(torch.log(eigenvalues + k) + 1.0 / (eigenvalues + k)).sum())


@register_proxy(
    "jacov",
    description="Jacobian covariance: PyTorch default init, BN training mode; one mini-batch (real images if "
    "passed, else N(0,1)); J_i = d(sum of all outputs)/dx_i from one backward pass, flattened; Sigma_J = "
    "correlation matrix of the rows (B x B); score = -sum_n [ln(lambda_n + k) + 1/(lambda_n + k)], k = 1e-5, "
    "over its eigenvalues (symmetric solver, float64). Default batch 64. A zero Jacobian (output independent "
    "of the input) raises DegenerateNetworkError.",
    source="Mellor et al. arXiv:2006.04647v1 (first NASWOT version); as run by Abdelfattah et al. ICLR'21 "
    "(batch 64); REFERENCE 3.10",
    higher_is_better=True,
    batch_size=JACOV_BATCH,
)
def jacov(ctx: ProxyContext) -> float:
    """Jacobian-correlation score."""
    model, images = model_and_batch(ctx, pairs="jacov correlates inputs and needs a batch of at least 2")
    jacobian, _ = input_jacobian(model, images)
    return jacov_score(jacobian)


__all__: list[str] = ["ActivationKernel", "activation_kernel", "input_jacobian", "jacov_score"]
