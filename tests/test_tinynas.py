"""TinyNAS family: dialect, stage bookkeeping, torch blocks, analytic counts, search spaces."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import hook_macs, param_count
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from zennas.arch import get_dialect, parse
from zennas.arch.tinynas import (
    SUPER_CLASSES,
    StageInfo,
    TinyConv,
    TinyRes,
    inner_blocks,
    parse_all,
    se_width,
    stage_info,
)
from zennas.blocks.tinynas import TinyResInner, TinySE
from zennas.build import build
from zennas.counting import count
from zennas.errors import (
    ArchSyntaxError,
    ArchValueError,
    ChannelMismatchError,
    ConfigError,
    SearchSpaceError,
    ZennasError,
)
from zennas.proxies.entropy import STAGE_WEIGHTS
from zennas.spaces import get_space
from zennas.spaces import tinynas as tinynas_spaces

DIALECT = get_dialect("tinynas")


R50_SEED = (
    "{'space_arch': 'CnnNet', 'best_structures': [[{'class': 'ConvKXBNRELU', 'in': 3, 'out': 32, 's': 2, 'k': 3}, "
    "{'class': 'SuperResK1KXK1', 'in': 32, 'out': 256, 's': 2, 'k': 3, 'L': 1, 'btn': 64}, "
    "{'class': 'SuperResK1KXK1', 'in': 256, 'out': 512, 's': 2, 'k': 3, 'L': 1, 'btn': 128}, "
    "{'class': 'SuperResK1KXK1', 'in': 512, 'out': 768, 's': 2, 'k': 3, 'L': 1, 'btn': 256}, "
    "{'class': 'SuperResK1KXK1', 'in': 768, 'out': 1024, 's': 1, 'k': 3, 'L': 1, 'btn': 256}, "
    "{'class': 'SuperResK1KXK1', 'in': 1024, 'out': 2048, 's': 2, 'k': 3, 'L': 1, 'btn': 512}]]}"
)

# A published file as TinyNAS writes it: pretty-printed, keys sorted, inner_class written back.
DEEPMAD_FILE = """{ 'best_structures':[ [
{'class': 'ConvKXBNRELU', 'in': 3, 'k': 3, 'out': 40, 's': 2},
{ 'L': 2, 'btn': 240, 'class': 'SuperResK1DWSEK1', 'in': 40, 'inner_class': 'ResK1DWSEK1', 'k': 5, 'out': 40, 's': 1},
{ 'L': 4, 'btn': 512, 'class': 'SuperResK1DWSEK1', 'in': 40, 'inner_class': 'ResK1DWSEK1', 'k': 5, 'out': 85, 's': 2},
{'class': 'ConvKXBNRELU', 'in': 85, 'k': 1, 'out': 1792, 's': 1}]],
'space_arch': 'CnnNet'}

"""

# MAE-DET-S as published (configs/detection/models/maedet_s.txt).
MAEDET_S = """{ 'best_structures':[ [
    {'class': 'ConvKXBNRELU', 'in': 3, 'out': 32, 's': 2, 'k': 3},
    {'class': 'SuperResK1KXK1', 'in': 32, 'out': 48, 's': 2, 'k': 5, 'L': 2, 'btn': 32},
    {'class': 'SuperResK1KXK1', 'in': 48, 'out': 272, 's': 2, 'k': 3, 'L': 4, 'btn': 120},
    {'class': 'SuperResK1KXK1', 'in': 272, 'out': 1024, 's': 2, 'k': 5, 'L': 10, 'btn': 80},
    {'class': 'SuperResK1KXK1', 'in': 1024, 'out': 2048, 's': 2, 'k': 3, 'L': 10, 'btn': 240}]],
'space_arch': 'CnnNet'}
"""


def block_text(**entries) -> str:
    """A one-block structure as a bare list."""
    return "[" + repr(entries) + "]"


def conv(c_in=3, c_out=8, s=2, k=3, **extra) -> dict:
    return {"class": "ConvKXBNRELU", "in": c_in, "out": c_out, "s": s, "k": k, **extra}


def res(cls, c_in, c_out, s=1, k=3, L=1, btn=8, **extra) -> dict:  # noqa: N803 (TinyNAS key name)
    return {"class": cls, "in": c_in, "out": c_out, "s": s, "k": k, "L": L, "btn": btn, **extra}


def text_of(blocks: list[dict]) -> str:
    return repr(blocks)


# ---------------------------------------------------------------------------------------------
# Dialect: round trip and canonical form
# ---------------------------------------------------------------------------------------------


def test_canonical_round_trip_of_the_r50_seed():
    spec = parse(R50_SEED)  # auto-detected
    assert spec.dialect == "tinynas"
    assert spec.canonical == R50_SEED
    assert DIALECT.format(parse(R50_SEED, "tinynas"), canonical=True) == R50_SEED
    assert spec.layers == 16
    assert [b.depth for b in spec.blocks] == [1, 3, 3, 3, 3, 3]


def test_json_python_and_bare_list_spellings_are_one_network():
    spec = parse(R50_SEED)
    as_json = json.dumps({"space_arch": "CnnNet", "best_structures": [[_dict(b) for b in spec.blocks]]}, indent=2)
    bare = text_of([_dict(b) for b in spec.blocks])
    single = "{'best_structures': " + bare + "}"  # one structure without the outer list
    for text in (as_json, bare, single, "\n\t " + R50_SEED + "  \n\n"):
        other = parse(text, "tinynas")
        assert other == spec and other.hash == spec.hash and other.canonical == R50_SEED


def _dict(block) -> dict:
    from zennas.arch.tinynas import block_dict

    return block_dict(block)


def test_published_file_keeps_informational_keys_for_re_emission():
    spec = parse(DEEPMAD_FILE)
    assert spec.source is not None
    assert "inner_class" not in spec.canonical
    emitted = spec.to_string()
    assert "'inner_class': 'ResK1DWSEK1'" in emitted
    again = parse(emitted)
    assert again == spec and again.to_string() == emitted
    # Informational keys never change identity.
    assert parse(spec.canonical).hash == spec.hash


def test_explicit_defaults_compare_equal_and_are_re_emitted():
    plain = parse(text_of([conv(), res("SuperResK1DWSEK1", 8, 8, btn=16)]))
    spelled = parse(
        text_of([conv(g=1, p=1, act="relu"), res("SuperResK1DWSEK1", 8, 8, btn=16, act="swish", force_resproj=False)])
    )
    assert spelled == plain and spelled.canonical == plain.canonical
    assert "'act': 'swish'" in spelled.to_string() and "'force_resproj': False" in spelled.to_string()
    # Non-default optional keys are part of the network and of the canonical text.
    custom = parse(text_of([conv(p=0, act="relu6", g=1), res("SuperResK1KX", 8, 16, g=4, btn=8)]))
    assert "'p': 0" in custom.canonical and "'act': 'relu6'" in custom.canonical and "'g': 4" in custom.canonical
    assert custom != plain


def test_missing_stride_defaults_to_one():
    spec = parse("[{'class': 'ConvKXBNRELU', 'in': 3, 'out': 8, 'k': 3}]", "tinynas")
    assert spec.blocks[0].stride == 1 and "'s': 1" in spec.canonical


def test_quantised_and_json_boolean_keys():
    text = json.dumps(
        [
            {"class": "ConvKXBNRELU", "in": 3, "out": 8, "s": 2, "k": 3, "nbitsA": 8, "nbitsW": 4},
            {**res("SuperResK1KXK1", 8, 16, L=2), "force_resproj": True, "nbitsA": [8] * 6, "nbitsW": [4] * 6},
        ]
    )
    spec = parse(text, "tinynas")
    assert "'nbitsW': [4, 4, 4, 4, 4, 4]" in spec.to_string() and "'force_resproj': True" in spec.to_string()
    assert parse(spec.to_string()).to_string() == spec.to_string()


def test_rechain_repairs_and_parse_all_reads_every_structure():
    broken = text_of([conv(c_out=8), conv(c_in=9, c_out=16, s=1)])
    with pytest.raises(ChannelMismatchError):
        parse(broken, "tinynas")
    assert parse(broken, "tinynas", rechain=True).blocks[1].in_channels == 8
    first = R50_SEED[R50_SEED.index("[[") + 1 : -2]  # the seed's block list
    two = "{'space_arch': 'CnnNet', 'best_structures': [" + first + ", " + text_of([conv()]) + "]}"
    specs = parse_all(two)
    assert [len(s.blocks) for s in specs] == [6, 1]
    assert specs[0].canonical == R50_SEED


def test_looks_like_is_syntactic_and_leaves_binas_lists_alone():
    assert DIALECT.looks_like("  {'best_structures': []}")
    assert DIALECT.looks_like("[{'class': 'ConvKXBNRELU'}]")
    assert DIALECT.looks_like("[\n [{'class': 'ConvKXBNRELU'}]]")
    assert not DIALECT.looks_like("[['ds_r1_k3_s1_e1_c16'], ['ir_r2_k3_s2_e6_c24']]")
    assert not DIALECT.looks_like('[ [ "ds_r1_k3_s1_e1_c16"]]')
    assert not DIALECT.looks_like("SuperResK1KXK1(3,8,1,8,1)")


@st.composite
def structures(draw) -> list[dict]:
    """Valid TinyNAS structures with chained channels and a random mix of blocks and optional keys."""
    c = draw(st.sampled_from([3, 12]))
    blocks = []
    for _ in range(draw(st.integers(1, 5))):
        cls = draw(st.sampled_from(["ConvKXBNRELU", *SUPER_CLASSES]))
        out = draw(st.integers(1, 64)) * (4 if cls != "ConvKXBNRELU" else 1)
        entry = {
            "class": cls,
            "in": c,
            "out": out,
            "s": draw(st.sampled_from([1, 2])),
            "k": draw(st.sampled_from([1, 3, 5, 7])),
        }
        if cls == "ConvKXBNRELU":
            if draw(st.booleans()):
                entry["p"] = draw(st.integers(0, (entry["k"] - 1) // 2))
        else:
            entry["L"] = draw(st.integers(1, 4))
            entry["btn"] = draw(st.integers(1, 32)) * 4
            if draw(st.booleans()) and c % 4 == 0:
                entry["g"] = 4 if cls not in ("SuperResK1DWK1", "SuperResK1DWSEK1") or out % 4 == 0 else 1
        if draw(st.booleans()):
            entry["act"] = draw(st.sampled_from(["relu", "relu6", "sigmoid", "swish", "learkyrelu"]))
        blocks.append(entry)
        c = out
    return blocks


@settings(max_examples=150, deadline=None)
@given(structures())
def test_property_format_parse_round_trip(blocks):
    spec = parse(text_of(blocks), "tinynas")
    canonical = spec.canonical
    assert DIALECT.format(parse(canonical, "tinynas"), canonical=True) == canonical
    assert parse(canonical, "tinynas") == spec
    assert parse(spec.to_string(), "tinynas").to_string() == spec.to_string()


# ---------------------------------------------------------------------------------------------
# Dialect: errors name the position, the token and the fix
# ---------------------------------------------------------------------------------------------

GOOD_CONV = "{'class': 'ConvKXBNRELU', 'in': 3, 'out': 8, 's': 2, 'k': 3}"

ERROR_CASES = [
    # (text, error class, message fragment, token, text at the reported position)
    ("   ", ArchSyntaxError, "empty TinyNAS structure", None, None),
    ("[{'class': }]", ArchSyntaxError, "not a Python/JSON literal", None, ": }"),
    ("[{'class':\x00}]", ArchSyntaxError, "NUL character", None, "\x00"),
    ("__import__('os').system('x')", ArchSyntaxError, "expected a dict or a list, got a Call", None, "__import__"),
    (
        "[{'class': 'ConvKXBNRELU', 'in': 1+2, 'out': 8, 'k': 3}]",
        ArchSyntaxError,
        "'in' must be an integer",
        "in",
        "1+2",
    ),
    ("[{'class': 'Foo', 'in': 3}]", ArchSyntaxError, "unknown block class 'Foo'", "Foo", "'Foo'"),
    ("[{'class': 'ResK1KXK1', 'in': 3}]", ArchSyntaxError, "use the Super* class", "ResK1KXK1", "'ResK1KXK1'"),
    ("[{'in': 3}]", ArchSyntaxError, "no 'class' key", None, "{'in'"),
    ("[{'class': 'ConvKXBNRELU', 'in': 3, 'out': 8}]", ArchSyntaxError, "missing key 'k'", "k", "{'class'"),
    ("[{'class': 'ConvKXBNRELU', 'in': 3, 'out': 8, 'k': 3, 'L': 1}]", ArchSyntaxError, "unknown key 'L'", "L", "'L'"),
    ("[{'class': 'ConvKXBNRELU', 'in': 3, 'out': 8, 'k': 3, 'kt': 3}]", ArchSyntaxError, "3-D video", "kt", "'kt'"),
    (
        "[{'class': 'ConvKXBNRELU', 'in': 3, 'in': 3, 'out': 8, 'k': 3}]",
        ArchSyntaxError,
        "duplicate key 'in'",
        "in",
        "'in': 3, 'out'",
    ),
    (
        "[{'class': 'ConvKXBNRELU', 'in': 3, 'out': True, 'k': 3}]",
        ArchSyntaxError,
        "'out' must be an integer, got the boolean",
        "out",
        "True",
    ),
    (
        "[{'class': 'ConvKXBNRELU', 'in': 3, 'out': 8, 'k': 3.0}]",
        ArchSyntaxError,
        "'k' must be an integer, got float",
        "k",
        "3.0",
    ),
    (
        "[{'class': 'ConvKXBNRELU', 'in': 3, 'out': 8, 'k': 3, 's': 3}]",
        ArchValueError,
        "stride 's' must be 1 or 2",
        "s",
        "3}",
    ),
    ("[{'class': 'ConvKXBNRELU', 'in': 3, 'out': 8, 'k': 4}]", ArchValueError, "must be odd", "k", "4}"),
    (
        "[{'class': 'ConvKXBNRELU', 'in': -3, 'out': 8, 'k': 3}]",
        ArchValueError,
        "input channels 'in' must be in",
        "in",
        "-3",
    ),
    (
        "[" + res.__call__("SuperResK1KXK1", 3, 8, btn=0).__repr__() + "]",
        ArchValueError,
        "'btn' must be in [1,",
        "btn",
        "0",
    ),
    ("[" + repr(res("SuperResK1KXK1", 3, 8, L=0)) + "]", ArchValueError, "'L' must be in [1,", "L", "0,"),
    ("[" + repr(res("SuperResK1KXK1", 3, 8, p=0)) + "]", ArchValueError, "padding 'p' must be (k-1)//2", "p", "0}"),
    (
        "[" + repr(res("SuperResK1KX", 6, 8, g=4, btn=8)) + "]",
        ArchValueError,
        "groups 'g' must be a positive divisor",
        "g",
        "4}",
    ),
    ("[" + repr(conv(act="gelu")) + "]", ArchValueError, "unknown activation 'gelu'", "act", "'gelu'"),
    (
        "[" + repr(res("SuperResK1KXK1", 3, 8, inner_class="ResKXKX")) + "]",
        ArchValueError,
        "'inner_class' must be 'ResK1KXK1'",
        "inner_class",
        "'ResKXKX'",
    ),
    (
        "[" + repr(res("SuperResK1KXK1", 3, 8, L=2, nbitsA=[8, 8, 8], nbitsW=[8] * 6)) + "]",
        ArchValueError,
        "needs one per inner conv (6",
        "nbitsA",
        "[8, 8, 8]",
    ),
    ("[" + repr(conv(nbitsA=8)) + "]", ArchSyntaxError, "need both 'nbitsA' and 'nbitsW'", "nbitsW", "{'class'"),
    (
        "{'space_arch': 'Cnn3DNet', 'best_structures': [[" + GOOD_CONV + "]]}",
        ArchValueError,
        "space_arch must be 'CnnNet'",
        "space_arch",
        "'Cnn3DNet'",
    ),
    (
        "{'space_arch': 'CnnNet', 'structures': []}",
        ArchSyntaxError,
        "unknown key 'structures'",
        "structures",
        "'structures'",
    ),
    ("{'space_arch': 'CnnNet'}", ArchSyntaxError, "no 'best_structures' key", None, "{"),
    ("{'best_structures': []}", ArchSyntaxError, "structure list is empty", None, "[]"),
    ("[]", ArchSyntaxError, "at least one block dict", None, "[]"),
    ("[" + GOOD_CONV + ", 7]", ArchSyntaxError, "expected a block dict", None, "7]"),
    (
        "{'best_structures': [[" + GOOD_CONV + "], [" + GOOD_CONV + "]]}",
        ArchSyntaxError,
        "parse_all(text)",
        None,
        "[{'class'",
    ),
    (
        "[" + GOOD_CONV + ",\n " + repr(conv(c_in=9, s=1)) + "]",
        ChannelMismatchError,
        "takes 9 input channels but block 0",
        "ConvKXBNRELU",
        "{'class'",
    ),
    ("{1: 2}", ArchSyntaxError, "keys must be strings", None, "1: 2"),
    ("[{'class': '\ud800'}]", ArchSyntaxError, "unpaired surrogate", None, "\ud800"),
    ("[" * 300 + "]" * 300, ArchSyntaxError, "not a Python/JSON literal", None, None),
    ("-" * 100_000 + "1", ArchSyntaxError, None, None, None),
    ("[{'in': " + "9" * 5000 + "}]", ArchSyntaxError, "not a Python/JSON literal", None, None),
]


@pytest.mark.parametrize(("text", "error", "fragment", "token", "at"), ERROR_CASES)
def test_errors_name_position_token_and_fix(text, error, fragment, token, at):
    with pytest.raises(error) as info:
        DIALECT.parse(text)
    exc = info.value
    assert type(exc) is error
    if fragment is not None:
        assert fragment in str(exc)
    assert exc.token == token
    if at is not None:
        assert exc.position is not None and text[exc.position :].startswith(at), (exc.position, str(exc))
        assert f"at position {exc.position}" in str(exc)


def test_positions_are_character_offsets_across_lines_and_non_ascii():
    text = "{'space_arch': 'CnnNet', # é ü 多\n 'best_structures': [[\n  " + repr(conv(s=3)) + "]]}"
    with pytest.raises(ArchValueError) as info:
        parse(text, "tinynas")
    assert text[info.value.position :].startswith("3,")


def test_parse_refuses_non_strings():
    with pytest.raises(ArchSyntaxError, match="must be a string"):
        DIALECT.parse(b"[]")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text_raises_only_zennas_errors(text):
    with contextlib.suppress(ZennasError):
        parse(text, "tinynas")


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([R50_SEED, DEEPMAD_FILE, MAEDET_S]),
    st.lists(
        st.tuples(
            st.integers(0, 10_000), st.integers(0, 2), st.sampled_from(list("{}[]()'\":,-0123456789 \nTFLks.eé"))
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_fuzz_mutated_valid_texts_raise_only_zennas_errors(text, edits):
    for position, kind, char in edits:
        position %= len(text) + 1
        if kind == 0:
            text = text[:position] + char + text[position:]
        elif kind == 1:
            text = text[:position] + text[position + 1 :]
        else:
            text = text[:position] + char + text[position + 1 :]
    try:
        spec = parse(text, "tinynas")
    except ZennasError:
        return
    assert parse(spec.to_string(), "tinynas") == spec


# ---------------------------------------------------------------------------------------------
# Stage bookkeeping (REFERENCE 1.3, golden values of 3.3)
# ---------------------------------------------------------------------------------------------


def test_stage_info_of_the_r50_seed_matches_the_reference():
    spec = parse(R50_SEED)
    stages = stage_info(spec, 224)
    assert [s.end_block for s in stages] == [0, 1, 2, 4, 5]
    assert [s.inner_blocks for s in stages] == [1, 2, 3, 5, 6]
    assert [s.layers for s in stages] == [1, 4, 7, 13, 16]
    assert [s.channels for s in stages] == [32, 256, 512, 1024, 2048]
    assert [s.side for s in stages] == [112, 56, 28, 14, 7]
    assert [s.side for s in stage_info(spec, 480)] == [240, 120, 60, 30, 15]
    assert stages[0] == StageInfo(end_block=0, inner_blocks=1, channels=32, layers=1, side=112)


def test_stage_info_floor_sides_and_the_se_defect_flag():
    spec = parse(
        text_of(
            [
                conv(c_out=16),
                res("SuperResK1DWSEK1", 16, 24, s=2, L=2, btn=48),
                res("SuperResK1DWSEK1", 24, 32, s=2, btn=64),
                res("SuperResK1DWSEK1", 32, 48, s=2, L=3, btn=96),
                res("SuperResK1DWSEK1", 48, 64, s=2, btn=128),
                conv(64, 128, s=1, k=1),
            ]
        )
    )
    stages = stage_info(spec, 225)
    assert [s.side for s in stages] == [112, 56, 28, 14, 7]
    assert [s.inner_blocks for s in stages] == [1, 3, 4, 7, 9]
    assert [s.layers for s in stages] == [1, 7, 10, 19, 23]
    assert stages[-1].end_block == 5 and stages[-1].channels == 128
    assert [s.side for s in stage_info(spec, 225, tinynas_compat=True)] == [112, 1, 1, 1, 1]
    with pytest.raises(ConfigError, match="resolution must be a positive integer"):
        stage_info(spec, 0)


def test_inner_block_expansion_and_shortcut_rules():
    k1kxk1 = inner_blocks(
        TinyRes(in_channels=8, out_channels=8, stride=2, kind="SuperResK1KXK1", kernel=3, bottleneck=4, num_inner=3)
    )
    assert [(b.in_channels, b.stride, b.force_resproj, b.projection, b.pooled) for b in k1kxk1] == [
        (8, 2, True, True, True),  # forced projection on the first inner block only
        (8, 1, False, False, False),
        (8, 1, False, False, False),
    ]
    dw = inner_blocks(
        TinyRes(in_channels=8, out_channels=16, stride=2, kind="SuperResK1DWK1", kernel=3, bottleneck=4, num_inner=2)
    )
    assert [(b.residual, b.projection, b.pooled) for b in dw] == [(False, False, False), (True, False, False)]
    kxkx = inner_blocks(
        TinyRes(in_channels=8, out_channels=16, stride=1, kind="SuperResKXKX", kernel=3, bottleneck=4, num_inner=2)
    )
    assert [(b.projection, b.force_resproj) for b in kxkx] == [(True, False), (False, False)]
    assert [se_width(c) for c in (8, 32, 48, 64, 100, 240)] == [8, 8, 8, 16, 24, 56]


# ---------------------------------------------------------------------------------------------
# Torch blocks vs the analytic twin
# ---------------------------------------------------------------------------------------------

VARIANTS = [
    (cls, stride, kernel, c_out)
    for cls in SUPER_CLASSES
    for stride in (1, 2)
    for kernel in (3, 5)
    for c_out in (16, 24)  # 16: in == out (identity or forced projection), 24: projection / no residual
]


@pytest.mark.parametrize(("cls", "stride", "kernel", "c_out"), VARIANTS)
def test_every_block_variant_matches_its_analytic_count(cls, stride, kernel, c_out):
    spec = parse(text_of([conv(3, 16, s=1), res(cls, 16, c_out, s=stride, k=kernel, L=2, btn=32)]))
    model = build(spec, num_classes=10)
    for side in (16, 17):  # even and odd: the ceil-mode shortcut pool keeps the add well-shaped
        counted = count(spec, resolution=side, num_classes=10)
        assert counted.params == param_count(model)
        assert counted.macs == hook_macs(model, (1, 3, side, side))
        assert counted.blocks[-1].out_size == -(-side // stride)


@pytest.mark.parametrize(
    "stem",
    [
        conv(3, 8, s=2, k=3),
        conv(3, 8, s=1, k=5, p=0),
        conv(3, 8, s=2, k=7, p=1, g=1),
        conv(3, 6, s=2, k=3, act="relu6"),
    ],
)
def test_conv_variants_match_their_analytic_count(stem):
    spec = parse(text_of([stem, conv(stem["out"], 12, s=1, k=3, g=stem["out"] // 2 if stem["out"] % 2 == 0 else 1)]))
    model = build(spec, num_classes=0)
    counted = count(spec, resolution=19, num_classes=0)
    assert counted.params == param_count(model)
    assert counted.macs == hook_macs(model, (1, 3, 19, 19))
    assert model(torch.zeros(1, 3, 19, 19)).shape[-1] == counted.blocks[-1].out_size


def test_whole_maedet_backbone_matches_its_analytic_count():
    spec = parse(MAEDET_S)
    model = build(spec, num_classes=0)
    counted = count(spec, resolution=64, num_classes=0)
    assert counted.params == param_count(model) == 21_233_120
    assert counted.macs == hook_macs(model, (1, 3, 64, 64))
    assert counted.layers == 79 and counted.head_params == 0
    assert [s.stride for s in counted.stages] == [2, 4, 8, 16, 32]
    with_head = count(spec, resolution=64, num_classes=1000)
    assert with_head.params - counted.params == 2048 * 1000 + 1000 and with_head.head_macs == 2048 * 1000


def test_se_blocks_count_with_and_without_se():
    spec = parse(text_of([conv(3, 16), res("SuperResK1DWSEK1", 16, 16, btn=64, L=2)]))
    on, off = count(spec, resolution=32, num_classes=0), count(spec, resolution=32, num_classes=0, use_se=False)
    m = se_width(64)
    assert on.params - off.params == 2 * (64 * m + m * 64 + 2 * m + 2 * 64)
    assert on.macs - off.macs == 2 * 2 * 64 * m
    assert on.use_se and not off.use_se
    assert param_count(build(spec, num_classes=0, use_se=False)) == off.params
    assert param_count(build(spec, num_classes=0, use_se=True)) == on.params


def test_impossible_shapes_are_clear_errors():
    spec = parse(text_of([conv(3, 8, s=1, k=7, p=0)]))
    with pytest.raises(ConfigError, match="resolution 5 is too small"):
        count(spec, resolution=5, num_classes=0)
    model = build(spec, num_classes=0)
    with pytest.raises(ConfigError, match="needs an input side of at least 7"):
        model(torch.zeros(1, 3, 5, 5))
    assert count(spec, resolution=7, num_classes=0).blocks[0].out_size == 1
    with pytest.raises(ConfigError, match="does not apply to TinyNAS"):
        count(spec, resolution=32, num_classes=0, convention="zennas")


# ---------------------------------------------------------------------------------------------
# TinyNAS conventions, by hand from REFERENCE 1.3
# ---------------------------------------------------------------------------------------------


def test_tinynas_convention_against_a_hand_calculation():
    spec = parse(
        text_of(
            [
                conv(3, 8, s=2, k=3),
                res("SuperResK1KXK1", 8, 16, s=2, k=3, L=2, btn=8),
                res("SuperResK1DWSEK1", 16, 16, s=1, k=3, L=1, btn=32),
            ]
        )
    )
    # R = 32. Per conv+BN: (c_in*c_out*k^2/g + 2*c_out) * (R/s)^2 FLOPs, c_in*c_out*k^2/g + 2*c_out size.
    stem = (3 * 8 * 9 + 2 * 8) * 16**2 + 8 * 16**2  # conv+BN, then ReLU outputs
    stem_size = 3 * 8 * 9 + 2 * 8
    # K1KXK1 inner 0: 8 -> 16, btn 8, stride 2 at side 16 (-> 8); forced projection; AvgPool on the shortcut.
    inner0 = (
        (8 * 8 + 16) * 16**2  # 1x1 reduce
        + (8 * 8 * 9 + 16) * 8**2  # 3x3, stride 2
        + (8 * 16 + 32) * 8**2  # 1x1 expand
        + 8 * 16**2
        + 8 * 8**2
        + 16 * 8**2  # three activations
        + 8 * 16**2  # avg-pool input elements
        + (8 * 16 + 32) * 8**2
        + 16 * 8**2  # projection conv+BN and the add
    )
    inner0_size = (8 * 8 + 16) + (8 * 8 * 9 + 16) + (8 * 16 + 32) + (8 * 16 + 32)
    # K1KXK1 inner 1: 16 -> 16 at side 8, identity shortcut (the add is not counted without projection).
    inner1 = (16 * 8 + 16) * 8**2 + (8 * 8 * 9 + 16) * 8**2 + (8 * 16 + 32) * 8**2 + (8 + 8 + 16) * 8**2
    inner1_size = (16 * 8 + 16) + (8 * 8 * 9 + 16) + (8 * 16 + 32)
    # K1DWSEK1 16 -> 16, btn 32, side 8: depthwise 3x3 (groups 32); SE weights counted, SE FLOPs not.
    m = 8  # max(1, round(32 / 4) // 8) * 8
    dwse = (16 * 32 + 64) * 8**2 + (32 * 32 * 9 // 32 + 64) * 8**2 + (32 * 16 + 32) * 8**2 + (32 + 32 + 16) * 8**2
    dwse_size = (16 * 32 + 64) + (32 * 9 + 64) + (32 * 16 + 32) + (32 * m + 2 * m + m * 32 + 2 * 32)
    counted = count(spec, resolution=32, num_classes=0, convention="tinynas")
    assert counted.flops == stem + inner0 + inner1 + dwse == 305_664
    assert counted.convention_params == stem_size + inner0_size + inner1_size + dwse_size == 4_184
    assert counted.layers == 1 + 3 * 2 + 3 * 1 == 10
    assert counted.convention == "tinynas"
    # The correct count is still reported next to the convention.
    assert counted.params == count(spec, resolution=32, num_classes=0).params


def test_tinynas_convention_scales_quantised_convs():
    spec = parse(text_of([conv(3, 8, s=2, k=3, nbitsA=4, nbitsW=4)]))
    counted = count(spec, resolution=32, num_classes=0, convention="tinynas")
    assert counted.flops == (3 * 8 * 9 * 4 * 4 / 64 + 2 * 8) * 16**2 + 8 * 16**2
    assert counted.convention_params == 3 * 8 * 9 * 4 / 8 + 2 * 8


# ---------------------------------------------------------------------------------------------
# Build switches
# ---------------------------------------------------------------------------------------------

SWITCH_NET = [
    conv(3, 16, s=2),
    res("SuperResK1KXK1", 16, 32, s=2, L=2, btn=16),
    res("SuperResK1DWSEK1", 32, 32, s=2, L=2, btn=64),
    res("SuperResKXKX", 32, 48, s=2, btn=24),
    res("SuperResK1DWK1", 48, 48, s=2, btn=96, k=5),
]


def test_bn_false_has_no_batchnorm_and_residual_false_no_shortcut():
    spec = parse(text_of(SWITCH_NET))
    plain = build(spec, num_classes=0, bn=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    flat = build(spec, num_classes=0, residual=False)
    inners = [m for m in flat.modules() if isinstance(m, TinyResInner)]
    assert inners and all(m.shortcut is None for m in inners)
    assert not any(isinstance(m, nn.AvgPool2d) for m in flat.modules())
    full = build(spec, num_classes=0)
    assert any(m.shortcut is not None for m in full.modules() if isinstance(m, TinyResInner))
    for model in (plain, flat):
        assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 48, 2, 2)


def test_use_se_switch_and_head():
    spec = parse(text_of(SWITCH_NET))
    for use_se, expected in ((None, True), (True, True), (False, False)):
        model = build(spec, num_classes=0, use_se=use_se)
        assert any(isinstance(m, TinySE) for m in model.modules()) is expected
    model = build(spec, num_classes=7)
    assert isinstance(model.head.fc, nn.Linear) and model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    assert build(spec, num_classes=0).head is None


def test_activations_follow_act_and_the_dwse_default():
    spec = parse(
        text_of(
            [
                conv(3, 16, act="relu6"),
                res("SuperResK1DWSEK1", 16, 16, btn=32),
                res("SuperResK1KX", 16, 16, act="swish"),
            ]
        )
    )
    model = build(spec, num_classes=0)
    stem, dwse, k1kx = model.blocks
    assert isinstance(stem.layers[-1], nn.ReLU6)
    assert isinstance(dwse.inner[0].act, nn.SiLU) and not any(isinstance(m, nn.ReLU) for m in dwse.modules())
    assert isinstance(k1kx.inner[0].act, nn.SiLU)
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


def test_multi_scale_outputs_at_strides_4_8_16_32():
    spec = parse(MAEDET_S)
    model = build(spec, num_classes=0, multi_scale=True)
    outs = model(torch.zeros(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 48, 16, 16), (1, 272, 8, 8), (1, 1024, 4, 4), (1, 2048, 2, 2)]


# ---------------------------------------------------------------------------------------------
# Search spaces
# ---------------------------------------------------------------------------------------------

SPACES = ("maedet", "deepmad-se")


@pytest.fixture(scope="module", params=SPACES)
def space(request):
    return get_space(request.param)


def test_space_definitions_and_seeds():
    maedet = get_space("maedet")
    assert maedet.constraints["max_layers"] == 91 and maedet.constraints["budget_flops"] == 188e8
    assert maedet.constraints["resolution"] == 480 and maedet.score["proxy"] == "entropy"
    assert list(STAGE_WEIGHTS[maedet.score["options"]["weights"]]) == [0, 0, 1, 1, 6]
    assert maedet.initial()[0].canonical == R50_SEED
    deepmad = get_space("deepmad-se")
    assert deepmad.constraints["max_rho"] == 0.5 and deepmad.score["proxy"] == "deepmad"
    assert list(STAGE_WEIGHTS[deepmad.score["options"]["weights"]]) == [1, 1, 1, 1, 8]
    seed = deepmad.initial()[0]
    assert len(seed.blocks) == 7 and seed.blocks[-1].out_channels == 1792
    for sp in (maedet, deepmad):
        assert all(sp.contains(s) for s in sp.initial())
        assert len(stage_info(sp.initial()[0], sp.resolution)) == 5


def test_thousands_of_draws_stay_members(space):
    rng = np.random.default_rng(0)
    arch = space.initial()[0]
    for _ in range(1500):
        arch = space.mutate(arch, rng)
        assert space.why_not(arch) is None
    for _ in range(500):
        assert space.contains(space.sample(rng))


def test_same_seed_same_sequence_different_seed_different(space):
    def walk(seed: int) -> list[str]:
        rng = np.random.default_rng(seed)
        arch, out = space.initial()[0], []
        for _ in range(40):
            arch = space.mutate(arch, rng)
            out.append(arch.canonical)
        out += [space.sample(rng).canonical for _ in range(10)]
        return out

    assert walk(7) == walk(7)
    assert walk(7) != walk(8)


def test_every_choice_is_reachable(space):
    rng = np.random.default_rng(1)
    n = len(space.block_strides)
    kernels = [set() for _ in range(n)]
    depths = [set() for _ in range(n)]
    stems = set()
    for _ in range(2000):
        arch = space.sample(rng)
        stems.add(arch.blocks[0].out_channels)
        for i in range(n):
            kernels[i].add(arch.blocks[i + 1].kernel)
            depths[i].add(arch.blocks[i + 1].num_inner)
    assert stems == set(space._stem_widths)
    assert kernels == [set(k) for k in space._kernels]
    assert depths == [set(range(1, space._max_inner[i] + 1)) for i in range(n)]
    # Mutation reaches every block (the last super-block included) and every field; the head stays fixed.
    changed: set[tuple[int, str]] = set()
    arch = space.initial()[0]
    for _ in range(1500):
        child = space.mutate(arch, rng)
        diffs = [i for i, (a, b) in enumerate(zip(arch.blocks, child.blocks, strict=True)) if a != b]
        index = diffs[0]
        before, after = arch.blocks[index], child.blocks[index]
        for field, attr in (("out", "out_channels"), ("btn", "bottleneck"), ("k", "kernel"), ("L", "num_inner")):
            if getattr(before, attr, None) != getattr(after, attr, None):
                changed.add((index, field))
        if space.head_width is not None:
            assert child.blocks[-1].out_channels == space.head_width
        arch = child
    expected = {(0, "out")} | {(i, f) for i in range(1, n + 1) for f in ("out", "btn", "k", "L")}
    expected -= {(i + 1, "k") for i in range(n) if len(space._kernels[i]) == 1}
    assert changed == expected


def test_mutate_refuses_non_members_and_membership_reasons():
    sp = get_space("maedet")
    seed = sp.initial()[0]
    wide = seed.replace_blocks([*seed.blocks[:-1], replace(seed.blocks[-1], out_channels=4096)])
    assert "width 4096" in sp.why_not(wide)
    with pytest.raises(SearchSpaceError, match="not in search space 'maedet'"):
        sp.mutate(wide, np.random.default_rng(0))
    narrow = seed.replace_blocks(
        [*seed.blocks[:2], replace(seed.blocks[2], out_channels=128, bottleneck=64), *seed.blocks[3:]]
    )
    assert "takes 512 input channels but block 2" in sp.why_not(narrow)
    narrow = narrow.replace_blocks([*narrow.blocks[:3], replace(narrow.blocks[3], in_channels=128), *narrow.blocks[4:]])
    assert "block 2 narrows the network (256 -> 128)" in sp.why_not(narrow)
    deep = seed.replace_blocks([*seed.blocks[:1], replace(seed.blocks[1], num_inner=4), *seed.blocks[2:]])
    assert "L = 4 is outside [1, 3]" in sp.why_not(deep)
    assert "dialect" in sp.why_not(parse("SuperConvK3BNRELU(3,8,2,1)", "zennas-v1"))
    big_kernel = get_space("deepmad-se").initial()[0]
    last = big_kernel.blocks[5]
    assert "kernel 5 is not allowed" in get_space("deepmad-se").why_not(
        big_kernel.replace_blocks([*big_kernel.blocks[:5], replace(last, kernel=5), big_kernel.blocks[6]])
    )


def _definition(name: str, **changes) -> dict:
    import tomllib
    from importlib import resources

    with resources.files("search_spaces").joinpath(f"{name}.toml").open("rb") as handle:
        definition = tomllib.load(handle)
    for key, value in changes.items():
        if value is None:
            definition.pop(key)
        else:
            definition[key] = value
    return definition


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"block_classes": ["x"]}, "unknown key(s) block_classes"),
        ({"block_class": "SuperResK3K3"}, "block_class must be one of"),
        ({"dialect": "zennas-v1"}, "needs dialect 'tinynas'"),
        ({"btn_ratio_range": [1.5, 6.0, 0.1]}, "exactly one of btn_min_divisor"),
        ({"max_width": 1000}, "is not a member: block 4: width 1024"),
        ({"constraints": {"resolution": 480, "max_layers": 10}}, "is not a member: it has 16 layers"),
        ({"constraints": {"resolution": 480, "budget_gflops": 1}}, "unknown constraint(s) budget_gflops"),
        ({"seeds": {}}, "no seeds"),
        ({"depth_steps": [0, 1]}, "must not contain 0"),
    ],
)
def test_bad_definitions_are_search_space_errors(changes, fragment):
    with pytest.raises(SearchSpaceError) as info:
        tinynas_spaces.TinyNASSpace("maedet", _definition("maedet", **changes))
    assert fragment in str(info.value)


def test_sampling_is_bounded(monkeypatch):
    # Only L = 1 everywhere fits 16 layers: about 1 draw in 7,000 is a member.
    sp = tinynas_spaces.TinyNASSpace("tight", _definition("maedet", constraints={"resolution": 480, "max_layers": 16}))
    monkeypatch.setattr(tinynas_spaces, "MAX_ATTEMPTS", 5)
    with pytest.raises(SearchSpaceError, match="no member found in 5 draws"):
        sp.sample(np.random.default_rng(0))
    assert sp.contains(sp.mutate(sp.initial()[0], np.random.default_rng(0)))


def test_torch_free_modules_do_not_import_torch():
    code = (
        "import sys; import zennas.arch.tinynas, zennas.counting.tinynas, zennas.spaces.tinynas; "
        "from zennas.spaces import get_space; get_space('maedet'); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_block_specs_are_frozen_and_typed():
    spec = parse(R50_SEED)
    assert isinstance(spec.blocks[0], TinyConv) and isinstance(spec.blocks[1], TinyRes)
    with pytest.raises(AttributeError):
        spec.blocks[1].kernel = 5  # type: ignore[misc]
    assert spec.blocks[1].inner_class == "ResK1KXK1" and spec.blocks[1].depth == 3
