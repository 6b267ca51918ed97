"""counting.<dialect>.layers: the one lowering of every dialect agrees with its counter and its builder."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from torch import nn

from zennas.arch import list_dialects, parse
from zennas.build import BuildOptions, build
from zennas.counting import LayerRecord, count, layer_groups
from zennas.models import get_model_entry, list_models, settings_for
from zennas.spaces import get_space, list_spaces

MODULES = {
    "binas": "zennas.counting.binas",
    "genet": "zennas.counting.genet",
    "nb201": "zennas.counting.nb201",
    "tinynas": "zennas.counting.tinynas",
    "zennas-v1": "zennas.counting.zennas",
}
SAMPLES_PER_SPACE = 6
# TinyNAS structures beyond the spaces' seeds: grouped convs, reduced padding, SE blocks, forced projections.
TINYNAS_EXTRA = (
    "[{'class': 'ConvKXBNRELU', 'in': 3, 'out': 16, 's': 2, 'k': 5, 'p': 1, 'g': 1},"
    " {'class': 'SuperResK1DWSEK1', 'in': 16, 'out': 32, 's': 2, 'k': 3, 'L': 2, 'btn': 48},"
    " {'class': 'SuperResKXKX', 'in': 32, 'out': 32, 's': 2, 'k': 3, 'L': 1, 'btn': 16, 'force_resproj': True},"
    " {'class': 'SuperResK1KX', 'in': 32, 'out': 64, 's': 1, 'k': 5, 'L': 2, 'btn': 16, 'g': 4},"
    " {'class': 'SuperResK1DWK1', 'in': 64, 'out': 64, 's': 1, 'k': 3, 'L': 1, 'btn': 96}]",
)


def _layers(spec, resolution, num_classes, use_se):
    module = importlib.import_module(MODULES[spec.dialect])
    return module.layers(spec, resolution, num_classes=num_classes, use_se=use_se)


def _cases():
    """(id, spec, resolution, num_classes, use_se): the zoo, every space's seeds and seeded samples, extras."""
    cases = []
    for name in list_models():
        entry = get_model_entry(name)
        spec = entry.spec()
        resolution, num_classes, use_se = settings_for(spec, entry)
        cases.append((name, spec, resolution, num_classes, use_se))
    for space_name in list_spaces():
        space = get_space(space_name)
        resolution = space.constraints.get("resolution", 32 if space.dialect == "nb201" else 224)
        rng = np.random.default_rng(0)
        members = [*space.initial(), *(space.sample(rng) for _ in range(SAMPLES_PER_SPACE))]
        cases += [(f"{space_name}-{i}", spec, resolution, 10, None) for i, spec in enumerate(members)]
    cases += [(f"tinynas-extra-{i}", parse(text, "tinynas"), 64, 0, None) for i, text in enumerate(TINYNAS_EXTRA)]
    return cases


CASES = _cases()


def test_every_dialect_has_a_lowering():
    assert set(MODULES) == set(list_dialects())
    assert {spec.dialect for _, spec, *_ in CASES} == set(MODULES)


@pytest.mark.parametrize(
    ("spec", "resolution", "num_classes", "use_se"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_layer_sums_are_the_counters_figures(spec, resolution, num_classes, use_se):
    se_settings = [use_se] if spec.dialect in ("genet", "nb201") else [use_se, False, True]
    for se in se_settings:
        for classes in (num_classes, 0):
            records = _layers(spec, resolution, classes, se)
            cx = count(spec, resolution=resolution, num_classes=classes, use_se=se)
            assert all(isinstance(r, LayerRecord) for r in records)
            assert sum(r.params for r in records) == cx.params
            assert sum(r.macs for r in records) == cx.macs


def _weight_modules(model: nn.Module) -> list[tuple]:
    return [
        (m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.groups, m.bias is not None)
        if isinstance(m, nn.Conv2d)
        else (m.in_features, m.out_features, 1, 1, 1, m.bias is not None)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]


@pytest.mark.parametrize(
    ("spec", "num_classes", "use_se"), [(c[1], c[3], c[4]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_layers_are_the_built_modules_in_order(spec, num_classes, use_se):
    for se in [use_se] if spec.dialect in ("genet", "nb201") else [use_se, True]:
        with torch.device("meta"):  # shapes only: no weights are allocated
            model = build(spec, BuildOptions(num_classes=num_classes, use_se=se))
        records = [r for r in _layers(spec, 64, num_classes, se) if r.kind != "bn"]
        assert _weight_modules(model) == [(r.c_in, r.c_out, r.kernel, r.stride, r.groups, r.bias) for r in records]


@pytest.mark.parametrize(
    ("spec", "resolution", "num_classes", "use_se"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_layer_groups_are_the_counters_blocks_then_the_head(spec, resolution, num_classes, use_se):
    """One group per ModelComplexity.blocks entry (a stem the spec does not list included), the head last."""
    groups = layer_groups(spec, resolution, num_classes=num_classes, use_se=use_se)
    cx = count(spec, resolution=resolution, num_classes=num_classes, use_se=use_se)
    *blocks, head = groups
    sums = [(sum(r.params for r in g), sum(r.macs for r in g)) for g in blocks]
    assert sums == [(b.params, b.macs) for b in cx.blocks]
    assert (sum(r.params for r in head), sum(r.macs for r in head)) == (cx.head_params, cx.head_macs)
    assert all(r.role == "head" for r in head) and (not head or head[0].pooled == cx.blocks[-1].out_size)
    assert [r for g in groups for r in g] == _layers(spec, resolution, num_classes, use_se)
    # Every SE pair's squeeze conv knows the side of the map it pools; the excite conv pools nothing.
    se = [r for g in groups for r in g if r.role == "se"]
    assert all(squeeze.pooled > 0 and excite.pooled == 0 for squeeze, excite in zip(se[::2], se[1::2], strict=True))
