"""Registry-driven matrix: every shipped space, every dialect, the same contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import hook_macs, param_count

from zennas.arch import parse
from zennas.build import BuildOptions, build
from zennas.counting import count
from zennas.spaces import get_space, list_spaces

SPACES = list_spaces()
# Small sides keep real forwards cheap; each must keep every stage non-empty for its space.
TEST_SIDE = {"nb201": 32, "maedet": 64, "deepmad-se": 64}


def test_all_published_spaces_are_shipped():
    assert set(SPACES) == {"zennas-res", "zennas-idw", "genet", "maedet", "deepmad-se", "binas", "nb201"}


@pytest.mark.parametrize("name", SPACES)
def test_mutation_chains_stay_inside_and_reproduce(name):
    space = get_space(name)
    seeds = space.initial()
    assert seeds and all(space.contains(s) for s in seeds)

    def chain(seed: int, steps: int) -> list[str]:
        rng = np.random.default_rng(seed)
        arch, hashes = seeds[0], []
        for _ in range(steps):
            arch = space.mutate(arch, rng) if rng.random() < 0.9 else space.sample(rng)
            assert space.contains(arch), space.why_not(arch)
            # Members print and parse back to themselves in their dialect.
            assert parse(arch.canonical, space.dialect) == arch
            hashes.append(arch.hash)
        return hashes

    first = chain(7, 300)
    assert chain(7, 300) == first
    assert chain(8, 50) != first[:50]
    assert len(set(first)) > 50  # the chain explores, it does not stall


@pytest.mark.parametrize("name", SPACES)
def test_sampled_members_count_exactly_what_they_build(name):
    space = get_space(name)
    rng = np.random.default_rng(0)
    side = TEST_SIDE.get(name, 64)
    for arch in (space.initial()[0], space.sample(rng)):
        num_classes = 0 if space.dialect == "tinynas" else 10
        cx = count(arch, resolution=side, num_classes=num_classes)
        with torch.device("meta"):
            net = build(arch, BuildOptions(num_classes=num_classes))
        net = net.to_empty(device="cpu")
        with torch.no_grad():
            for tensor in [*net.parameters(), *net.buffers()]:
                tensor.zero_()
        assert param_count(net) == cx.params
        assert hook_macs(net, (1, 3, side, side)) == cx.macs


def test_score_sections_name_registered_proxies_with_valid_options():
    from zennas.proxies import score

    checked = 0
    for name in SPACES:
        space = get_space(name)
        section = space.definition.get("score")
        if section is None:
            continue
        result = score(space.initial()[0], section["proxy"], options=section.get("options", {}), resolution=64)
        assert result[section["proxy"]].mean is not None
        checked += 1
    assert checked >= 2  # maedet (entropy) and deepmad-se (deepmad)
