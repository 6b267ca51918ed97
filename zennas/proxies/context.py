"""What a proxy sees: a seeded, isolated scoring context on one device in strict FP32."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn

from zennas.arch import ArchSpec
from zennas.build import BuildOptions, build

# ProxyContext.build seeds the global RNG for PyTorch's default init; candidates scored in threads
# take turns there, so no build ever runs under another candidate's seed.
_GLOBAL_RNG_LOCK = threading.Lock()


@dataclass
class ProxyContext:
    """Everything one repeat of one proxy may use. All randomness comes from `generator`.

    `generator` is a seeded CPU generator: tensors drawn from it and then moved to `device` are the
    same on every device. `device_generator` draws on the device itself (no host work, no copy); on
    the CPU it is `generator`, so CPU values do not change, while on CUDA it is a CUDA generator with
    the same seed, and scores drawn from it are reproducible per device kind (PyTorch lays out its
    CUDA random stream by the GPU's SM count), not equal to CPU scores.
    """

    spec: ArchSpec
    resolution: int
    num_classes: int
    batch_size: int
    device: torch.device
    generator: torch.Generator
    options: Mapping[str, Any] = field(default_factory=dict)
    data: tuple[torch.Tensor, torch.Tensor] | None = None  # optional real (images, labels) batch
    meta: dict[str, Any] = field(default_factory=dict)  # what the proxy did (input, init, BN mode...)

    def option(self, name: str) -> Any:
        """Value of a declared proxy option (defaults are filled in by the registry)."""
        return self.options[name]

    def seed(self) -> int:
        """A fresh 63-bit seed drawn from the generator (for APIs that take a seed, not a generator)."""
        return int(torch.randint(0, 2**62, (1,), generator=self.generator).item())

    @cached_property
    def device_generator(self) -> torch.Generator:
        """A generator on the scoring device: `generator` itself on the CPU, else one seeded as it was."""
        if self.device.type == self.generator.device.type:
            return self.generator
        return torch.Generator(device=self.device).manual_seed(self.generator.initial_seed())

    def gaussian(self, *shape: int) -> torch.Tensor:
        """N(0, 1) tensor of `shape` on the scoring device, drawn on the CPU (the same on every device)."""
        return torch.randn(*shape, generator=self.generator).to(self.device)

    def device_gaussian(self, *shape: int) -> torch.Tensor:
        """N(0, 1) tensor of `shape` drawn on the scoring device from `device_generator` (no copy)."""
        return torch.randn(*shape, generator=self.device_generator, device=self.device)

    def images(self, batch_size: int | None = None) -> torch.Tensor:
        """The input batch [B, 3, R, R]: the real batch if one was given, else N(0, 1) noise."""
        b = self.batch_size if batch_size is None else batch_size
        if self.data is not None:
            self.meta["input"] = "real images"
            return self.data[0][:b].to(self.device)
        self.meta["input"] = "gaussian N(0,1)"
        return self.gaussian(b, 3, self.resolution, self.resolution)

    def labels(self, batch_size: int | None = None) -> torch.Tensor:
        """Labels [B]: the real ones if a batch was given, else uniform over num_classes."""
        b = self.batch_size if batch_size is None else batch_size
        if self.data is not None:
            return self.data[1][:b].to(self.device)
        return torch.randint(0, self.num_classes, (b,), generator=self.generator).to(self.device)

    def build(self, *, init: str = "default", **options: Any) -> nn.Module:
        """A fresh FP32 model of `spec` on the device.

        init='default' is PyTorch's own initialisation, drawn under a seed from the generator in a
        forked RNG (the global RNG state is restored); init='normal' sets conv/linear weights to
        N(0, 1), biases to 0, BN gamma 1 and beta 0 (ZenNAS / MAE-DET practice).
        """
        settings = {"num_classes": self.num_classes, **options}
        seed = self.seed()
        with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build(self.spec, BuildOptions(**settings))
        if init == "normal":
            normal_init_(model, self.generator)
        elif init != "default":
            raise ValueError(f"unknown init {init!r}; use 'default' or 'normal'")
        self.meta["init"] = init
        return model.to(self.device).float()


@torch.no_grad()
def normal_init_(model: nn.Module, generator: torch.Generator) -> None:
    """Conv/Linear weights ~ N(0, 1), their biases 0; BN gamma 1, beta 0 (running stats untouched)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.BatchNorm2d) and module.affine:
            module.weight.fill_(1.0)
            module.bias.zero_()
