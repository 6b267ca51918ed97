"""NAS-Bench-201: dialect, official index order, analytic counts vs built networks, search space."""

from __future__ import annotations

import csv
import subprocess
import sys
import tomllib
from importlib import resources

import numpy as np
import pytest
import torch
from conftest import NB201_SAMPLE, hook_macs, param_count
from hypothesis import given, settings
from hypothesis import strategies as st

from zennas.arch import parse
from zennas.arch.nb201 import (
    NUM_CELLS,
    OPS,
    NB201Cell,
    all_cells,
    from_index,
    from_ops,
    index_of,
    is_degenerate,
    isomorphism_key,
)
from zennas.blocks.nb201 import NB201CellModule, build_nb201
from zennas.build import BuildOptions
from zennas.counting.nb201 import count_nb201, dataset_complexity
from zennas.errors import ArchSyntaxError, ConfigError, SearchSpaceError, ZennasError
from zennas.spaces.nb201 import NB201Space

GOLDEN = {  # REFERENCE.md 2.5: index -> (arch, params M per dataset, FLOPs M per dataset)
    0: (
        "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
        (0.129306, 0.135156, 0.136456),
        (15.64737, 15.65322, 3.91948),
    ),
    11: (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|",
        (0.802426, 0.808276, 0.809576),
        (113.95137, 113.95722, 28.49548),
    ),
    284: (
        "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|none~0|nor_conv_1x1~1|none~2|",
        (0.101306, 0.107156, 0.108456),
        (11.71521, 11.72106, 2.93644),
    ),
    13714: (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
        (1.073466, 1.079316, 1.080616),
        (153.27297, 153.27882, 38.32588),
    ),
}
DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
ALL_NONE = from_ops(("none",) * 6)
ALL_CONV3 = from_ops(("nor_conv_3x3",) * 6)
VALID = GOLDEN[13714][0]


@pytest.fixture(scope="module")
def sample_rows() -> list[dict[str, str]]:
    with NB201_SAMPLE.open(newline="") as handle:
        return list(csv.DictReader(handle))


def nb201_space(**overrides: object) -> NB201Space:
    """The shipped space built from its TOML file (optionally with edited keys)."""
    definition = tomllib.loads(resources.files("search_spaces").joinpath("nb201.toml").read_text())
    definition.update(overrides)
    return NB201Space("nb201", definition)


# --- dialect ----------------------------------------------------------------------------------------


def test_csv_round_trip_and_official_index(sample_rows: list[dict[str, str]]) -> None:
    assert len(sample_rows) == 1000
    for row in sample_rows:
        spec = parse(row["arch"])  # auto-detected from the leading pipe
        assert spec.dialect == "nb201"
        assert spec.to_string() == row["arch"] == spec.canonical
        assert index_of(spec) == int(row["index"])
        assert from_index(int(row["index"])) == spec


def test_golden_indices() -> None:
    for index, (arch, _, _) in GOLDEN.items():
        assert from_index(index).to_string() == arch
        assert index_of(parse(arch, "nb201")) == index


def test_all_cells_is_the_official_order() -> None:
    cells = list(all_cells())
    assert len(cells) == NUM_CELLS == 15625
    assert len({c.to_string() for c in cells}) == NUM_CELLS
    assert len({c.hash for c in cells[:2000]}) == 2000
    assert all(index_of(cell) == i for i, cell in enumerate(cells))
    assert cells[7777] == from_index(7777)


def test_spec_shape() -> None:
    spec = parse(VALID, "nb201")
    (cell,) = spec.blocks
    assert isinstance(cell, NB201Cell)
    assert cell.ops == ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")
    assert (cell.in_channels, cell.out_channels, cell.stride) == (16, 16, 1)
    assert spec.layers == 17
    assert parse("  " + VALID + "\n", "nb201") == spec  # surrounding whitespace is not part of the cell


@pytest.mark.parametrize(
    ("text", "fragment", "position", "token"),
    [
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "allowed: none, skip_connect", 1, "conv"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "must read none~0", 6, "~1"),
        ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", "must read none~0", 15, "~1"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~01|", "must read none~2", 45, "~01"),
        ("|none~0|+|none~0|none~1|", "has 3 node groups", 24, "+"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|+|none~0|", "has 3 node groups", 47, "+"),
        ("|none~0|none~1|+|none~0|+|none~0|none~1|none~2|", "takes exactly 1 input edge", 0, None),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|", "takes exactly 3 input edge", 25, None),
        ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "must start with '|'", 0, "n"),
        ("|none~0+|none~0|none~1|+|none~0|none~1|none~2|", "must end with '|'", 7, None),
        ("|none~0|+|none~0||none~1|+|none~0|none~1|none~2|", "empty edge", 17, "||"),
        ("|none|+|none~0|none~1|+|none~0|none~1|none~2|", "names no source node; write none~0", 1, "none"),
        ("|none~0|+|none~0| none~1|+|none~0|none~1|none~2|", "whitespace", 17, " "),
    ],
)
def test_syntax_errors_name_position_and_token(text: str, fragment: str, position: int, token: str | None) -> None:
    with pytest.raises(ArchSyntaxError) as info:
        parse(text, "nb201")
    assert fragment in str(info.value)
    assert info.value.position == position
    if token is not None:
        assert info.value.token == token


def test_empty_text_and_bad_specs() -> None:
    with pytest.raises(ArchSyntaxError, match="empty"):
        parse("", "nb201")
    with pytest.raises(ArchSyntaxError, match="empty NAS-Bench-201"):
        from zennas.arch import get_dialect

        get_dialect("nb201").parse("   ")
    with pytest.raises(ZennasError, match="allowed: none"):
        from_ops(("none",) * 5 + ("conv",))
    with pytest.raises(ZennasError, match="tuple of 6"):
        NB201Cell(ops=("none",) * 5)
    with pytest.raises(ConfigError, match=r"0\.\.15624"):
        from_index(15625)
    with pytest.raises(ConfigError, match="rechain"):
        parse(VALID, "nb201", rechain=True)


_PIECES = st.sampled_from(["|", "+", "~", "0", "1", "2", "3", " ", "none", "skip_connect", "nor_conv_3x3", "", "é"])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_arbitrary_text_raises_only_zennas_errors(text: str) -> None:
    try:
        spec = parse(text, "nb201")
    except ZennasError:
        return
    assert spec.to_string() == text.strip()


@settings(max_examples=400, deadline=None)
@given(st.integers(0, NUM_CELLS - 1), st.lists(st.tuples(st.integers(0, 120), st.integers(0, 3), _PIECES), max_size=4))
def test_fuzz_mutated_valid_strings(index: int, edits: list[tuple[int, int, str]]) -> None:
    text = from_index(index).to_string()
    for where, kind, piece in edits:
        where %= len(text) + 1
        if kind == 0:
            text = text[:where] + piece + text[where:]  # insert
        elif kind == 1:
            text = text[:where] + text[where + 1 :]  # delete
        elif kind == 2:
            text = text[:where] + piece + text[where + 1 :]  # replace
        else:
            text = text[:where] + text[where:] * 2  # duplicate a tail
    try:
        spec = parse(text, "nb201")
    except ZennasError as error:
        assert isinstance(error, ArchSyntaxError)
        return
    assert spec.to_string() == text.strip()


# --- degenerate cells and isomorphism -------------------------------------------------------------


def test_degenerate_and_isomorphism_counts() -> None:
    cells = list(all_cells())
    assert sum(is_degenerate(c) for c in cells) == 341
    assert len({isomorphism_key(c) for c in cells}) == 6466
    assert is_degenerate(ALL_NONE) and not is_degenerate(ALL_CONV3)
    # node 3 reads only node 2, which reads nothing: degenerate although it has convs
    assert is_degenerate(parse("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|nor_conv_3x3~2|", "nb201"))
    # a path 0 -> 1 -> 3 through pooling and skip keeps the input
    assert not is_degenerate(parse("|avg_pool_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|", "nb201"))
    a = parse("|skip_connect~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|", "nb201")
    b = parse("|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|", "nb201")
    c = parse("|none~0|+|none~0|none~1|+|nor_conv_1x1~0|none~1|none~2|", "nb201")
    assert isomorphism_key(a) == isomorphism_key(b) != isomorphism_key(c)


@torch.no_grad()
def test_degenerate_cell_output_ignores_its_input() -> None:
    torch.manual_seed(0)
    ops = ("nor_conv_3x3", "none", "none", "none", "none", "nor_conv_1x1")  # node 3 = conv(node 2 = 0)
    assert is_degenerate(from_ops(ops))
    cell = NB201CellModule(ops, 8).eval()
    x1, x2 = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)  # [B, C, H, W]
    assert torch.equal(cell(x1), cell(x2))
    live = NB201CellModule(("nor_conv_3x3",) * 6, 8).eval()
    assert not torch.equal(live(x1), live(x2))


# --- counting -------------------------------------------------------------------------------------


def test_golden_params_and_flops() -> None:
    for index, (_, params_m, flops_m) in GOLDEN.items():
        spec = from_index(index)
        for dataset, want_params, want_flops in zip(DATASETS, params_m, flops_m, strict=True):
            got = dataset_complexity(spec, dataset)
            assert round(got.extra["nb201_params_M"], 6) == want_params, (index, dataset)
            assert round(got.extra["nb201_flops"] / 1e6, 5) == want_flops, (index, dataset)
            assert got.extra["nb201_flops"] == got.macs + got.num_classes  # bias charged once per class


# Rows whose benchmark figure is a mean over seeds in which a record carries another cell's
# parameter count (the benchmark's known inconsistency, D-X-Y/AutoDL-Projects#134): e.g. index 296
# reads (2 x 0.129306 + 0.101306) / 3. Each is checked to decompose like that, not skipped.
POLLUTED_ROWS = frozenset(
    {296, 299, 737, 4024, 4070, 4982, 7358, 9172, 11073, 11370, 11374, 11639, 11896, 12661, 13970, 14689}
)


def test_params_match_the_benchmark_for_the_whole_sample(sample_rows: list[dict[str, str]]) -> None:
    achievable = set()  # params depend only on the numbers of 3x3 and 1x1 conv edges
    for n3 in range(7):
        for n1 in range(7 - n3):
            ops = ("nor_conv_3x3",) * n3 + ("nor_conv_1x1",) * n1 + ("none",) * (6 - n3 - n1)
            achievable.add(count_nb201(from_ops(ops), resolution=32, num_classes=10).params)
    mismatched = set()
    for row in sample_rows:
        ours = count_nb201(parse(row["arch"], "nb201"), resolution=32, num_classes=10).params
        theirs = float(row["params_M_cifar10"]) * 1e6
        if round(ours / 1e6, 6) == round(theirs / 1e6, 6):
            continue
        mismatched.add(int(row["index"]))
        # k seeds, m of them recorded with another cell's count x: theirs = ((k - m) * ours + m * x) / k
        others = [(k * theirs - (k - m) * ours) / m for k in (2, 3) for m in range(1, k)]
        assert any(abs(x - round(x)) < 1e-3 and round(x) in achievable for x in others), row["index"]
    assert mismatched == POLLUTED_ROWS


@pytest.mark.parametrize(
    ("spec", "resolution", "num_classes", "bn", "residual"),
    [
        (ALL_NONE, 32, 10, True, True),
        (ALL_CONV3, 16, 120, True, True),
        (from_index(11), 32, 100, True, True),
        (from_index(0), 16, 0, False, False),
        (from_index(13714), 32, 10, False, True),
    ],
)
def test_analytic_counts_equal_the_built_network(
    spec, resolution: int, num_classes: int, bn: bool, residual: bool
) -> None:
    options = BuildOptions(num_classes=num_classes, bn=bn, residual=residual)
    model = build_nb201(spec, options)
    counts = count_nb201(spec, resolution=resolution, num_classes=num_classes, bn=bn, residual=residual)
    assert param_count(model) == counts.params
    assert hook_macs(model, (1, 3, resolution, resolution)) == counts.macs
    assert len(model.blocks) == len(counts.blocks) == 19
    assert model.block_strides == tuple(b.stride for b in counts.blocks)
    for block, figures in zip(model.blocks, counts.blocks, strict=True):
        assert param_count(block) == figures.params
    if not bn:
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    out = model(torch.zeros(2, 3, resolution, resolution))
    last = counts.blocks[-1]
    assert out.shape == ((2, num_classes) if num_classes else (2, last.out_channels, last.out_size, last.out_size))


def test_multi_scale_returns_the_stride_4_features() -> None:
    model = build_nb201(from_index(284), BuildOptions(num_classes=10, multi_scale=True))
    features = model(torch.zeros(1, 3, 32, 32))
    assert [tuple(f.shape) for f in features] == [(1, 64, 8, 8)]


def test_counting_and_build_errors() -> None:
    spec = from_index(0)
    with pytest.raises(ConfigError, match="only convention='correct'"):
        count_nb201(spec, resolution=32, num_classes=10, convention="zennas")
    with pytest.raises(ConfigError, match="no SE"):
        count_nb201(spec, resolution=32, num_classes=10, use_se=True)
    with pytest.raises(ConfigError, match="divisible by 4"):
        count_nb201(spec, resolution=30, num_classes=10)
    with pytest.raises(ConfigError, match="ImageNet16-120"):
        dataset_complexity(spec, "imagenet")
    with pytest.raises(ConfigError, match="no SE"):
        build_nb201(spec, BuildOptions(use_se=True))
    assert count_nb201(spec, resolution=32, num_classes=10, use_se=False).use_se is False


def test_registries_route_to_nb201() -> None:
    from zennas.build import build
    from zennas.counting import count
    from zennas.spaces import get_space

    spec = from_index(0)
    counts = count(spec, resolution=16, num_classes=120)
    assert round(counts.extra["nb201_params_M"], 6) == 0.136456
    model = build(spec, num_classes=120)
    assert param_count(model) == counts.params
    space = get_space("nb201")
    assert isinstance(space, NB201Space) and len(space) == NUM_CELLS


def test_dialect_counter_and_space_modules_do_not_import_torch() -> None:
    code = "import sys, zennas.arch.nb201, zennas.counting.nb201, zennas.spaces.nb201; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- search space -------------------------------------------------------------------------------


def test_space_enumerates_all_cells_in_index_order() -> None:
    space = nb201_space()
    assert len(space) == NUM_CELLS
    cells = list(space.enumerate())
    assert len(cells) == NUM_CELLS and cells[0] == from_index(0) and cells[-1] == from_index(NUM_CELLS - 1)
    assert all(space.contains(c) for c in cells[:500])
    assert space.initial() and all(space.contains(a) for a in space.initial())


def test_space_samples_are_uniform_members_and_reproducible() -> None:
    space = nb201_space()
    draws = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]
    rng_a, rng_b = np.random.default_rng(123), np.random.default_rng(123)
    seq_a = [space.sample(rng_a) for _ in range(3000)]
    assert seq_a == [space.sample(rng_b) for _ in range(3000)]
    assert seq_a != [space.sample(np.random.default_rng(124)) for _ in range(3000)][:3000]
    assert all(space.contains(a) for a in seq_a)
    # each (edge, op) should appear 600 times in expectation; 6 sigma ~ 130
    counts = np.zeros((6, len(OPS)), dtype=int)
    for arch in seq_a:
        for edge, op in enumerate(arch.blocks[0].ops):
            counts[edge, OPS.index(op)] += 1
    assert np.abs(counts - 600).max() < 130


def test_space_mutation_changes_exactly_one_edge() -> None:
    space = nb201_space()
    rng = np.random.default_rng(5)
    arch = space.sample(rng)
    changed_edges = set()
    for _ in range(3000):
        child = space.mutate(arch, rng)
        diff = [e for e, (a, b) in enumerate(zip(arch.blocks[0].ops, child.blocks[0].ops, strict=True)) if a != b]
        assert len(diff) == 1 and space.contains(child)
        changed_edges.add(diff[0])
        arch = child
    assert changed_edges == set(range(6))
    first = [space.mutate(from_index(3), np.random.default_rng(9)) for _ in range(2)]
    assert first[0] == first[1]


def test_space_membership_and_errors() -> None:
    space = nb201_space(ops=["nor_conv_3x3", "skip_connect"], initial=[])
    assert space.ops == ("skip_connect", "nor_conv_3x3") and len(space) == 64 == len(list(space))
    assert "allows only" in space.why_not(ALL_NONE)
    with pytest.raises(SearchSpaceError, match="not in search space"):
        space.mutate(ALL_NONE, np.random.default_rng(0))
    assert space.mutate(ALL_CONV3, np.random.default_rng(0)).blocks[0].ops.count("skip_connect") == 1
    assert "zennas-v1" in nb201_space().why_not(parse("SuperConvK3BNRELU(3,16,2,1)"))
    with pytest.raises(ConfigError, match=r"numpy\.random\.Generator"):
        nb201_space().sample(0)  # type: ignore[arg-type]
    with pytest.raises(SearchSpaceError, match="distinct operations"):
        nb201_space(ops=["sep_conv_3x3"])
    with pytest.raises(SearchSpaceError, match="not a member"):
        nb201_space(ops=["none", "skip_connect"])  # the ResNet seed uses 3x3 convs
    with pytest.raises(SearchSpaceError, match="single op"):
        nb201_space(ops=["none"], initial=[]).mutate(ALL_NONE, np.random.default_rng(0))
