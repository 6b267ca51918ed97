"""Shared test helpers: independent counts from a built module and a real forward pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

# Small fixtures carried by the tests themselves (attribution in tests/data/NOTICE): a clone of the
# project alone runs its tests.
DATA = Path(__file__).resolve().parent / "data"
ZOO_PATH = DATA / "zennas_model_zoo.json"
NB201_SAMPLE = DATA / "nb201_sample_1000.csv"
V100_LUT_SAMPLE = DATA / "v100_trt_fp16_conv_lut_sample.txt"


def param_count(model: nn.Module) -> int:
    """Learnable elements of a built module, as torch reports them."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def hook_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Conv2d + Linear multiply-accumulates of one forward of a zero batch, counted by hooks (per image)."""
    total = 0

    def conv_hook(module: nn.Conv2d, inputs, output):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += output.numel() // output.shape[0] * (module.in_channels // module.groups) * k

    def linear_hook(module: nn.Linear, inputs, output):
        nonlocal total
        total += output.numel() // output.shape[0] * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(input_shape))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Test networks are tiny: one intra-op thread is faster and immune to a busy 2-core runner; set for
    every test (a test that changes it cannot leak its setting) and restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def zoo() -> list[dict]:
    """The published model zoo with independently computed figures."""
    return json.loads(ZOO_PATH.read_text())
