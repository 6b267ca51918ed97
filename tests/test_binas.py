"""BINAS / HardCoRe-NAS family: dialect, analytic counts vs built modules and torchvision, space, encoding."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import FrozenInstanceError

import numpy as np
import pytest
import torch
from conftest import hook_macs, param_count
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from zennas.arch import get_dialect, parse
from zennas.arch.binas import (
    BINAS,
    DEFAULT_STEM_WIDTH,
    BinasConv,
    BinasDS,
    BinasIR,
    block_from_string,
    decode,
    encode,
    expand_repeats,
    stem_width,
    with_stem_width,
)
from zennas.arch.ir import ArchSpec
from zennas.blocks.binas import BinasLayer, SqueezeExcite
from zennas.build import BuildOptions, build
from zennas.counting import count
from zennas.counting.binas import make_divisible, unroll
from zennas.errors import (
    ArchSyntaxError,
    ArchValueError,
    ChannelMismatchError,
    ConfigError,
    SearchSpaceError,
    ZennasError,
)
from zennas.spaces import get_space

DIALECT = get_dialect("binas")

# HardCoRe-NAS A-F as published in timm (hardcorenas.py): the search space's own output form.
HARDCORENAS = {
    "a": [
        ["ds_r1_k3_s1_e1_c16_nre"],
        ["ir_r1_k5_s2_e3_c24_nre", "ir_r1_k5_s1_e3_c24_nre_se0.25"],
        ["ir_r1_k5_s2_e3_c40_nre", "ir_r1_k5_s1_e6_c40_nre_se0.25"],
        ["ir_r1_k5_s2_e6_c80_se0.25", "ir_r1_k5_s1_e6_c80_se0.25"],
        ["ir_r1_k5_s1_e6_c112_se0.25", "ir_r1_k5_s1_e6_c112_se0.25"],
        ["ir_r1_k5_s2_e6_c192_se0.25", "ir_r1_k5_s1_e6_c192_se0.25"],
        ["cn_r1_k1_s1_c960"],
    ],
    "b": [
        ["ds_r1_k3_s1_e1_c16_nre"],
        ["ir_r1_k5_s2_e3_c24_nre", "ir_r1_k5_s1_e3_c24_nre_se0.25", "ir_r1_k3_s1_e3_c24_nre"],
        ["ir_r1_k5_s2_e3_c40_nre", "ir_r1_k5_s1_e3_c40_nre", "ir_r1_k5_s1_e3_c40_nre"],
        ["ir_r1_k5_s2_e3_c80", "ir_r1_k5_s1_e3_c80", "ir_r1_k3_s1_e3_c80", "ir_r1_k3_s1_e3_c80"],
        ["ir_r1_k5_s1_e3_c112", "ir_r1_k3_s1_e3_c112", "ir_r1_k3_s1_e3_c112", "ir_r1_k3_s1_e3_c112"],
        ["ir_r1_k5_s2_e6_c192_se0.25", "ir_r1_k5_s1_e6_c192_se0.25", "ir_r1_k3_s1_e3_c192_se0.25"],
        ["cn_r1_k1_s1_c960"],
    ],
    "c": [
        ["ds_r1_k3_s1_e1_c16_nre"],
        ["ir_r1_k5_s2_e3_c24_nre", "ir_r1_k5_s1_e3_c24_nre_se0.25"],
        ["ir_r1_k5_s2_e3_c40_nre", "ir_r1_k5_s1_e3_c40_nre", "ir_r1_k5_s1_e3_c40_nre", "ir_r1_k5_s1_e3_c40_nre"],
        ["ir_r1_k5_s2_e4_c80", "ir_r1_k5_s1_e6_c80_se0.25", "ir_r1_k3_s1_e3_c80", "ir_r1_k3_s1_e3_c80"],
        ["ir_r1_k5_s1_e6_c112_se0.25", "ir_r1_k3_s1_e3_c112", "ir_r1_k3_s1_e3_c112", "ir_r1_k3_s1_e3_c112"],
        ["ir_r1_k5_s2_e6_c192_se0.25", "ir_r1_k5_s1_e6_c192_se0.25", "ir_r1_k3_s1_e3_c192_se0.25"],
        ["cn_r1_k1_s1_c960"],
    ],
    "d": [
        ["ds_r1_k3_s1_e1_c16_nre"],
        ["ir_r1_k5_s2_e3_c24_nre_se0.25", "ir_r1_k5_s1_e3_c24_nre_se0.25"],
        ["ir_r1_k5_s2_e3_c40_nre_se0.25", "ir_r1_k5_s1_e4_c40_nre_se0.25", "ir_r1_k3_s1_e3_c40_nre_se0.25"],
        [
            "ir_r1_k5_s2_e4_c80_se0.25",
            "ir_r1_k3_s1_e3_c80_se0.25",
            "ir_r1_k3_s1_e3_c80_se0.25",
            "ir_r1_k3_s1_e3_c80_se0.25",
        ],
        [
            "ir_r1_k3_s1_e4_c112_se0.25",
            "ir_r1_k5_s1_e4_c112_se0.25",
            "ir_r1_k3_s1_e3_c112_se0.25",
            "ir_r1_k5_s1_e3_c112_se0.25",
        ],
        [
            "ir_r1_k5_s2_e6_c192_se0.25",
            "ir_r1_k5_s1_e6_c192_se0.25",
            "ir_r1_k5_s1_e6_c192_se0.25",
            "ir_r1_k3_s1_e6_c192_se0.25",
        ],
        ["cn_r1_k1_s1_c960"],
    ],
    "e": [
        ["ds_r1_k3_s1_e1_c16_nre"],
        ["ir_r1_k5_s2_e3_c24_nre_se0.25", "ir_r1_k5_s1_e3_c24_nre_se0.25"],
        [
            "ir_r1_k5_s2_e6_c40_nre_se0.25",
            "ir_r1_k5_s1_e4_c40_nre_se0.25",
            "ir_r1_k5_s1_e4_c40_nre_se0.25",
            "ir_r1_k3_s1_e3_c40_nre_se0.25",
        ],
        ["ir_r1_k5_s2_e4_c80_se0.25", "ir_r1_k3_s1_e6_c80_se0.25"],
        [
            "ir_r1_k5_s1_e6_c112_se0.25",
            "ir_r1_k5_s1_e6_c112_se0.25",
            "ir_r1_k5_s1_e6_c112_se0.25",
            "ir_r1_k5_s1_e3_c112_se0.25",
        ],
        [
            "ir_r1_k5_s2_e6_c192_se0.25",
            "ir_r1_k5_s1_e6_c192_se0.25",
            "ir_r1_k5_s1_e6_c192_se0.25",
            "ir_r1_k3_s1_e6_c192_se0.25",
        ],
        ["cn_r1_k1_s1_c960"],
    ],
    "f": [
        ["ds_r1_k3_s1_e1_c16_nre"],
        ["ir_r1_k5_s2_e3_c24_nre_se0.25", "ir_r1_k5_s1_e3_c24_nre_se0.25"],
        ["ir_r1_k5_s2_e6_c40_nre_se0.25", "ir_r1_k5_s1_e6_c40_nre_se0.25"],
        [
            "ir_r1_k5_s2_e6_c80_se0.25",
            "ir_r1_k5_s1_e6_c80_se0.25",
            "ir_r1_k3_s1_e3_c80_se0.25",
            "ir_r1_k3_s1_e3_c80_se0.25",
        ],
        [
            "ir_r1_k3_s1_e6_c112_se0.25",
            "ir_r1_k5_s1_e6_c112_se0.25",
            "ir_r1_k5_s1_e6_c112_se0.25",
            "ir_r1_k3_s1_e3_c112_se0.25",
        ],
        [
            "ir_r1_k5_s2_e6_c192_se0.25",
            "ir_r1_k5_s1_e6_c192_se0.25",
            "ir_r1_k3_s1_e6_c192_se0.25",
            "ir_r1_k3_s1_e6_c192_se0.25",
        ],
        ["cn_r1_k1_s1_c960"],
    ],
}
HARDCORENAS_TEXT = {name: repr(stages) for name, stages in HARDCORENAS.items()}  # repr = canonical form
HC_A = HARDCORENAS_TEXT["a"]

# timm mobilenetv3_large_100 (stem width 16): torchvision's mobilenet_v3_large, written in this dialect.
MOBILENET_V3_LARGE = (
    "[['ds_r1_k3_s1_e1_c16_nre'], ['ir_r1_k3_s2_e4_c24_nre', 'ir_r1_k3_s1_e3_c24_nre'], "
    "['ir_r3_k5_s2_e3_c40_se0.25_nre'], ['ir_r1_k3_s2_e6_c80', 'ir_r1_k3_s1_e2.5_c80', 'ir_r2_k3_s1_e2.3_c80'], "
    "['ir_r2_k3_s1_e6_c112_se0.25'], ['ir_r3_k5_s2_e6_c160_se0.25'], ['cn_r1_k1_s1_c960']]"
)
# timm mobilenetv3_small_100: the only published ds block with SE (on its input width) and stride 2.
MOBILENET_V3_SMALL = (
    "[['ds_r1_k3_s2_e1_c16_nre_se0.25'], ['ir_r1_k3_s2_e4.5_c24_nre', 'ir_r1_k3_s1_e3.67_c24_nre'], "
    "['ir_r1_k5_s2_e4_c40_se0.25', 'ir_r2_k5_s1_e6_c40_se0.25'], ['ir_r2_k5_s1_e3_c48_se0.25'], "
    "['ir_r3_k5_s2_e6_c96_se0.25'], ['cn_r1_k1_s1_c576']]"
)
TORCHVISION_MBV3_LARGE_PARAMS = 5_483_032
TORCHVISION_MBV3_LARGE_MACS_224 = 216_589_760


# --------------------------------------------------------------------------------------------
# Dialect


def test_published_hardcorenas_strings_are_canonical_and_detected():
    for text in HARDCORENAS_TEXT.values():
        spec = parse(text)  # auto-detected: no other dialect claims [[' texts
        assert spec.dialect == "binas"
        assert spec.canonical == text and spec.to_string() == text
        assert parse(spec.canonical) == spec
    # Pinned: a change here silently invalidates every score/latency cache keyed on it.
    assert parse(HC_A).hash == "eb98343457f72305"


def test_canonical_form_normalises_quotes_whitespace_and_option_order():
    messy = """[ [ "ds_r1_k3_s1_e1_c16_nre" ],
        ["ir_r2_se0.25_nre_c24_e3_s2_k5", 'ir_r1_k3_s1_e3.0_c24_nhs',],
        ['cn_r1_k1_s1_c960'] ]"""
    spec = parse(messy)
    assert spec.canonical == (
        "[['ds_r1_k3_s1_e1_c16_nre'], ['ir_r2_k5_s2_e3_c24_nre_se0.25', 'ir_r1_k3_s1_e3_c24'], ['cn_r1_k1_s1_c960']]"
    )
    assert parse(spec.canonical) == spec and parse(spec.canonical).hash == spec.hash
    # ds blocks print e1 even when the text leaves it out.
    assert parse("[['ds_r1_k3_s1_c16']]").canonical == "[['ds_r1_k3_s1_e1_c16']]"


def test_typed_ir_fields_follow_the_channel_chain():
    spec = parse(HC_A)
    ds, first, *_, last = spec.blocks
    assert isinstance(ds, BinasDS) and (ds.in_channels, ds.out_channels, ds.kernel, ds.relu) == (32, 16, 3, True)
    assert isinstance(first, BinasIR)
    assert (first.in_channels, first.out_channels, first.stride, first.expansion, first.se_ratio) == (16, 24, 2, 3, 0)
    assert first.stage == 1 and first.relu
    assert isinstance(last, BinasConv) and (last.in_channels, last.out_channels, last.relu) == (192, 960, False)
    assert [b.stage for b in spec.blocks] == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    se_block = spec.blocks[2]
    assert se_block.se_ratio == 0.25 and se_block.name == "ir_r1_k5_s1_e3_c24_nre_se0.25"
    with pytest.raises(FrozenInstanceError):
        first.kernel = 3  # type: ignore[misc]


def test_float_expansions_and_repeats_are_kept():
    spec = DIALECT.parse(MOBILENET_V3_LARGE, stem_width=16)
    ir80 = [b for b in spec.blocks if b.out_channels == 80]
    assert [(b.expansion, b.repeats) for b in ir80] == [(6, 1), (2.5, 1), (2.3, 2)]
    assert spec.layers == 1 + 2 + 3 + 4 + 2 + 3 + 1  # sum of repeats
    flat = expand_repeats(spec)
    assert len(flat.blocks) == spec.layers and all(b.repeats == 1 for b in flat.blocks)
    assert [(b.in_channels, b.stride) for b in flat.blocks if b.out_channels == 40] == [(24, 2), (40, 1), (40, 1)]
    # The same network spelled with repeats is a different text (timm's arch defs do the same).
    assert flat.canonical != spec.canonical


def test_stem_width_is_the_first_blocks_input():
    spec = parse(HC_A)
    assert stem_width(spec) == DEFAULT_STEM_WIDTH == 32
    narrow = DIALECT.parse(HC_A, stem_width=16)
    assert stem_width(narrow) == 16 and narrow == with_stem_width(spec, 16)
    # A non-default stem is written as a leading ['stem_c16'] stage so identities never collide.
    assert narrow != spec and narrow.hash != spec.hash
    assert narrow.canonical == "[['stem_c16'], " + spec.canonical[1:]
    assert parse(narrow.canonical) == narrow and DIALECT.parse(narrow.canonical, stem_width=16) == narrow
    with pytest.raises(ArchValueError, match="sets stem width 16 but stem_width=24"):
        DIALECT.parse(narrow.canonical, stem_width=24)
    with pytest.raises(ArchSyntaxError, match="stem marker is a first stage of its own"):
        parse("[['stem_c16', 'ds_r1_k3_s1_e1_c16_nre']]")
    with pytest.raises(ArchValueError, match="stem width must be a positive integer"):
        DIALECT.parse(HC_A, stem_width=0)


def test_block_string_decoder_reports_positions_inside_the_text():
    block = block_from_string("ir_r1_k5_s2_e6_c40_nre_se0.25", in_channels=24)
    assert isinstance(block, BinasIR) and (block.kernel, block.expansion, block.se_ratio) == (5, 6, 0.25)
    with pytest.raises(ArchValueError) as info:
        parse("[['ds_r1_k3_s1_e1_c16'], ['ir_r1_k4_s2_e3_c24']]")
    # Positions are offsets in the text: 'k4' starts right after "[['ds_r1_k3_s1_e1_c16'], ['ir_r1_".
    assert info.value.position == len("[['ds_r1_k3_s1_e1_c16'], ['ir_r1_") and info.value.token == "k4"
    assert "block 1 ('ir_r1_k4_s2_e3_c24')" in str(info.value)


@pytest.mark.parametrize(
    ("text", "error", "fragment"),
    [
        ("[['xx_r1_k3_s1_c16']]", ArchSyntaxError, "unknown block type 'xx'; use ds"),
        ("[['ir_r1_k3_s1_e3_c16_foo']]", ArchSyntaxError, "unknown option 'foo' for block type ir"),
        ("[['ir_r1_k3_s1_e3_c16_nsw']]", ArchSyntaxError, "only nre (ReLU) and nhs"),
        ("[['cn_r1_k1_s1_e3_c16']]", ArchSyntaxError, "unknown option 'e3' for block type cn"),
        ("[['ir_r1_k3_s1_e3_c16_k5']]", ArchSyntaxError, "option 'k' given twice"),
        ("[['ir_r1_k3_s1_e3_c16_nre_nre']]", ArchSyntaxError, "activation given twice"),
        ("[['ir_r1_k3_s1_c16']]", ArchSyntaxError, "missing option(s) e"),
        ("[['ir_r1_k3_s1_e3_c16__']]", ArchSyntaxError, "empty option"),
        ("[['ir_r1.5_k3_s1_e3_c16']]", ArchSyntaxError, "repeats (r) must be a positive integer"),
        ("[['ir_r1_k3_s1_e3x_c16']]", ArchSyntaxError, "expansion (e) must be a plain decimal number"),
        ("[['ir_r1_k3_s1_e1e3_c16']]", ArchSyntaxError, "expansion (e) must be a plain decimal number"),
        ("[['ir_r1_k3_s1_e3_c1234567890']]", ArchSyntaxError, "at most 9 digits"),
        ("[['ir_r1_k4_s1_e3_c16']]", ArchValueError, "kernel (k) must be odd"),
        ("[['ir_r1_k3_s3_e3_c16']]", ArchValueError, "stride (s) must be 1 or 2, got 3"),
        ("[['ir_r0_k3_s1_e3_c16']]", ArchValueError, "repeats (r) must be at least 1"),
        ("[['ir_r1_k3_s1_e0_c16']]", ArchValueError, "expansion (e) must be positive"),
        ("[['ir_r1_k3_s1_e3_c0']]", ArchValueError, "out channels (c) must be at least 1"),
        ("[['ir_r1_k3_s1_e3_c16_se0']]", ArchValueError, "omit se for no SE"),
        ("[['ir_r1_k3_s1_e3_c16_se1.5']]", ArchValueError, "SE ratio must be in (0, 1]"),
        ("[['ds_r1_k3_s1_e6_c16']]", ArchValueError, "a ds block has no expansion"),
        ("[['']]", ArchSyntaxError, "empty block string"),
        ("[]", ArchSyntaxError, "has no stages"),
        ("[[]]", ArchSyntaxError, "stage 0 is empty"),
        ("['ir_r1_k3_s1_e3_c16']", ArchSyntaxError, "stage 0 must be a list of block strings"),
        ("[('ir_r1_k3_s1_e3_c16',)]", ArchSyntaxError, "stage 0 must be a list"),
        ("{'a': 1}", ArchSyntaxError, "must be a list of stages"),
        ("[[ir_r1]]", ArchSyntaxError, "every item must be a quoted block string"),
        ("[[3]]", ArchSyntaxError, "every item must be a quoted block string"),
        ("[['ir_r1_k3' '_s1_e3_c16']]", ArchSyntaxError, "one plain quoted string"),
        ("[[r'ir_r1_k3_s1_e3_c16']]", ArchSyntaxError, "one plain quoted string"),
        ("[['ir_r1_k3_s1_e3_c\\x31']]", ArchSyntaxError, "one plain quoted string"),
        ("[['ir_r1_k3_s1_e3_c16']]  # comment", ArchSyntaxError, "unexpected character '#'"),
        ("[(['ir_r1_k3_s1_e3_c16'])]", ArchSyntaxError, "unexpected character '('"),
        ("[['ir_r1_k3_s1_e3_c16']", ArchSyntaxError, "not a Python list literal"),
        ("[['ir_r1_k3_s1_e3_c16']]]", ArchSyntaxError, "not a Python list literal"),
        ("   ", ArchSyntaxError, "empty BINAS text"),
        ("[['a\x00']]", ArchSyntaxError, "not a Python list literal"),
    ],
)
def test_error_messages_name_the_problem_and_the_fix(text, error, fragment):
    with pytest.raises(error) as info:
        DIALECT.parse(text)
    assert fragment in str(info.value)


def test_non_text_and_huge_text_are_refused():
    with pytest.raises(ArchSyntaxError, match="must be a string"):
        DIALECT.parse(123)  # type: ignore[arg-type]
    with pytest.raises(ArchSyntaxError, match="more than the 100000 allowed"):
        DIALECT.parse("[['ir_r1_k3_s1_e3_c16']]" + " " * 100_000)
    with pytest.raises(ArchSyntaxError):
        DIALECT.parse("[" * 5000 + "]" * 5000)


def test_specs_built_by_hand_are_checked_before_printing():
    good = parse(HC_A)
    broken_chain = good.replace_blocks((good.blocks[0], good.blocks[2]))
    with pytest.raises(ChannelMismatchError, match="takes 24 input channels"):
        broken_chain.canonical  # noqa: B018
    odd = good.replace_blocks((BinasIR(in_channels=32, out_channels=8, stride=1, kernel=3, expansion=1e-30),))
    with pytest.raises(ArchValueError, match="no plain-decimal spelling"):
        odd.canonical  # noqa: B018
    skipped = good.replace_blocks((BinasConv(in_channels=32, out_channels=8, stride=1, kernel=1, stage=1),))
    with pytest.raises(ArchValueError, match="stage index 1"):
        skipped.canonical  # noqa: B018


_KINDS = st.sampled_from(["ds", "ir", "cn"])


@st.composite
def canonical_texts(draw) -> str:
    """Random canonical texts: 1-4 stages of 1-3 blocks with varied options."""
    stages = []
    for _ in range(draw(st.integers(1, 4))):
        stage = []
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(_KINDS)
            parts = [kind, f"r{draw(st.integers(1, 3))}", f"k{draw(st.sampled_from([1, 3, 5, 7]))}"]
            parts.append(f"s{draw(st.sampled_from([1, 2]))}")
            if kind == "ir":
                parts.append(f"e{draw(st.sampled_from(['1', '2.3', '2.5', '3', '4', '6', '0.5']))}")
            elif kind == "ds":
                parts.append("e1")
            parts.append(f"c{draw(st.integers(1, 300))}")
            if draw(st.booleans()):
                parts.append("nre")
            if kind != "cn" and draw(st.booleans()):
                parts.append(f"se{draw(st.sampled_from(['0.25', '0.5', '1']))}")
            stage.append("_".join(parts))
        stages.append(stage)
    return repr(stages)


@settings(max_examples=150, deadline=None)
@given(canonical_texts())
def test_format_parse_is_the_identity_on_canonical_texts(text):
    spec = DIALECT.parse(text)
    assert DIALECT.format(spec, canonical=True) == text
    assert DIALECT.parse(DIALECT.format(spec)) == spec


_GRAMMAR_CHARS = st.sampled_from([*"[]'\",_ rksecn0123456789.#()\\\n", "nre", "se0.25", "ir_", "ds_", "cn_"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(max_size=200),
        st.lists(_GRAMMAR_CHARS, max_size=60).map("".join),
        st.tuples(st.sampled_from(sorted(HARDCORENAS_TEXT.values())), st.data()),
    )
)
def test_parser_raises_only_zennas_errors(sample):
    if isinstance(sample, tuple):  # a valid text with one random edit
        text, data = sample
        i = data.draw(st.integers(0, len(text) - 1))
        edit = data.draw(st.sampled_from(["delete", "insert", "replace"]))
        char = data.draw(st.sampled_from(list("[]'\",_ rksecn0123456789.#x\\")))
        text = text[:i] + ("" if edit == "delete" else char) + text[i + (edit != "insert") :]
    else:
        text = sample
    try:
        spec = DIALECT.parse(text)
    except ZennasError:
        return
    # Whatever parses prints and re-parses to itself.
    assert DIALECT.parse(spec.canonical) == spec


# --------------------------------------------------------------------------------------------
# Counting and building


def test_make_divisible_follows_timm():
    assert [make_divisible(v) for v in (16 * 4, 80 * 2.3, 80 * 2.5, 18, 30, 4, 72 * 0.25)] == [
        64,
        184,
        200,
        24,
        32,
        8,
        24,
    ]


def test_mobilenet_v3_large_matches_torchvision_exactly():
    import torchvision  # a test dependency ([test] extra): an independent MobileNetV3 reference

    spec = DIALECT.parse(MOBILENET_V3_LARGE, stem_width=16)
    model = build(spec, num_classes=1000)
    reference = torchvision.models.mobilenet_v3_large()
    assert param_count(reference) == param_count(model) == TORCHVISION_MBV3_LARGE_PARAMS
    assert count(spec, resolution=224, num_classes=1000).params == TORCHVISION_MBV3_LARGE_PARAMS
    # Hook MACs at 64 keep the test fast; the analytic count, equal to the built module at any
    # resolution, carries the comparison to 224 (the pinned figure is torchvision's hook count at 224).
    analytic = count(spec, resolution=64, num_classes=1000)
    assert hook_macs(reference, (1, 3, 64, 64)) == hook_macs(model, (1, 3, 64, 64)) == analytic.macs
    assert count(spec, resolution=224, num_classes=1000).macs == TORCHVISION_MBV3_LARGE_MACS_224

    # Layer by layer: the same weight shapes in the same order (SE widths included); torchvision's
    # 960 -> 1280 head is a Linear, ours timm's 1x1 conv with bias (same params and MACs).
    def shapes(net: nn.Module) -> list[tuple[int, int, int]]:
        return [
            (m.weight.shape[0], m.weight.shape[1], m.weight[0, 0].numel())
            for m in net.modules()
            if isinstance(m, nn.Conv2d | nn.Linear)
        ]

    assert shapes(model) == shapes(reference)


def test_mobilenet_v3_small_backbone_matches_torchvision():
    import torchvision  # a test dependency ([test] extra): an independent MobileNetV3 reference

    # Backbone only: MobileNetV3-Small's head is 1024 wide, the BINAS head 1280.
    spec = DIALECT.parse(MOBILENET_V3_SMALL, stem_width=16)
    model = build(spec, num_classes=0)
    reference = torchvision.models.mobilenet_v3_small().features
    analytic = count(spec, resolution=64, num_classes=0)
    assert param_count(model) == param_count(reference) == analytic.params == 927_008
    assert hook_macs(model, (1, 3, 64, 64)) == hook_macs(reference, (1, 3, 64, 64)) == analytic.macs


def test_hardcorenas_a_counts_equal_the_built_module():
    spec = parse(HC_A)
    model = build(spec, num_classes=1000)
    analytic = count(spec, resolution=96, num_classes=1000)
    assert param_count(model) == analytic.params
    assert hook_macs(model, (1, 3, 96, 96)) == analytic.macs
    assert analytic.use_se is True and analytic.head_params == 960 * 1280 + 1280 + 1280 * 1000 + 1000


BLOCK_CASES = {
    "ds s1 residual": "[['ds_r1_k3_s1_e1_c24_nre']]",
    "ds s2 se": "[['ds_r1_k5_s2_e1_c16_se0.25']]",
    "ds widen": "[['ds_r2_k3_s1_c40_nre']]",
    "ir s1 residual": "[['ir_r1_k3_s1_e4_c24']]",
    "ir s2 se": "[['ir_r1_k5_s2_e6_c40_nre_se0.25']]",
    "ir float e repeats": "[['ir_r3_k3_s2_e2.5_c32_se0.5']]",
    "ir e1": "[['ir_r1_k7_s1_e1_c24']]",
    "cn k3 s2": "[['cn_r2_k3_s2_c48_nre']]",
    "cn k1": "[['ir_r1_k3_s2_e3_c24'], ['cn_r1_k1_s1_c96']]",
}


@pytest.mark.parametrize("use_se", [None, True, False])
@pytest.mark.parametrize("name", sorted(BLOCK_CASES))
def test_analytic_counts_equal_the_built_module_per_block(name, use_se):
    spec = DIALECT.parse(BLOCK_CASES[name], stem_width=24)
    for num_classes in (0, 10):
        options = BuildOptions(num_classes=num_classes, use_se=use_se)
        model = build(spec, options)
        analytic = count(spec, resolution=32, num_classes=num_classes, use_se=use_se)
        assert param_count(model) == analytic.params
        assert hook_macs(model, (1, 3, 32, 32)) == analytic.macs
        assert len(model.blocks) == len(analytic.blocks) == len(spec.blocks) + 1  # stem first
        for module, block in zip(model.blocks, analytic.blocks, strict=True):
            assert param_count(module) == block.params
    has_se = any(isinstance(m, SqueezeExcite) for m in model.modules())
    assert has_se == analytic.use_se
    if use_se is False:
        assert not has_se


def test_block_counts_record_shapes_and_cumulative_strides():
    spec = parse(HC_A)
    analytic = count(spec, resolution=64, num_classes=0)
    assert [(b.out_channels, b.out_size, b.stride) for b in analytic.blocks[:4]] == [
        (32, 32, 2),
        (16, 32, 2),
        (24, 16, 4),
        (24, 16, 4),
    ]
    assert (analytic.blocks[-1].out_channels, analytic.blocks[-1].out_size, analytic.blocks[-1].stride) == (960, 2, 32)
    assert [s.channels for s in analytic.stages] == [16, 24, 40, 112, 960]
    assert analytic.head_params == analytic.head_macs == 0
    features = build(spec, num_classes=0)(torch.zeros(1, 3, 64, 64))
    assert features.shape == (1, 960, 2, 2)


def test_only_the_correct_convention_is_offered():
    with pytest.raises(ConfigError, match="does not apply to binas"):
        count(parse(HC_A), resolution=224, num_classes=1000, convention="zennas")


def test_use_se_true_puts_se_on_every_ir_block():
    spec = parse(HARDCORENAS_TEXT["b"])
    model = build(spec, num_classes=0, use_se=True)
    layers = [m for m in model.modules() if isinstance(m, BinasLayer)]
    n_ir = sum(b.repeats for b in spec.blocks if isinstance(b, BinasIR))
    assert sum(isinstance(m, SqueezeExcite) for m in model.modules()) == n_ir
    assert len(layers) == spec.layers
    # An ir block without se gets 0.25 of its expanded width, rounded to 8.
    plain = next(b for b in spec.blocks if isinstance(b, BinasIR) and not b.se_ratio)
    (layer,) = unroll(plain, use_se=True)
    assert layer.se_channels == make_divisible(layer.mid_channels * 0.25)


def test_bn_false_builds_no_batchnorm():
    model = build(parse(HC_A), num_classes=10, bn=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_residual_false_removes_every_add_and_changes_the_output():
    spec = parse(HC_A)
    with_skip = build(spec, num_classes=10).eval()
    without = build(spec, num_classes=10, residual=False).eval()
    without.load_state_dict(with_skip.state_dict())  # same weights, only the wiring differs
    assert any(m.shortcut for m in with_skip.modules() if isinstance(m, BinasLayer))
    assert not any(m.shortcut for m in without.modules() if isinstance(m, BinasLayer))
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # The stride-4 features: default-initialised deep nets shrink the signal towards 0 later on.
        assert not torch.allclose(with_skip.forward_stages(x)[0], without.forward_stages(x)[0])


def test_shortcuts_follow_stride_and_width():
    spec = parse(HC_A)
    flags = [layer.shortcut for block in spec.blocks for layer in unroll(block)]
    # ds 32->16 no, then per stage: first (stride or width change) no, second yes; cn no.
    assert flags == [False, False, True, False, True, False, True, False, True, False, True, False]


def test_multi_scale_returns_the_c2_to_c5_features():
    model = build(parse(HC_A), num_classes=1000, multi_scale=True)
    outs = model(torch.zeros(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 24, 16, 16), (1, 40, 8, 8), (1, 112, 4, 4), (1, 960, 2, 2)]


# --------------------------------------------------------------------------------------------
# Search space and encoding


@pytest.fixture(scope="module")
def space():
    return get_space("binas")


def test_space_definition_and_size(space):
    assert space.dialect == "binas" and space.size() == 22_608**5 == BINAS.size()
    assert space.layout == BINAS  # the TOML file describes the published space
    assert all(space.contains(parse(text)) for text in HARDCORENAS_TEXT.values())
    smallest, middle = space.initial()
    assert space.contains(smallest) and space.contains(middle)
    assert BINAS.decisions(smallest) == ((2,) * 5, ((0, 0),) * 5) and "se" not in smallest.canonical
    assert BINAS.decisions(middle) == ((3,) * 5, ((6, 6, 6),) * 5)  # depth 3, e4 k5 no SE


def test_config_order_is_binas_order():
    configs = BINAS.configs
    assert len(configs) == 12
    assert configs[0] == (3, 3, 0.0) and configs[1] == (3, 3, 0.25) and configs[2] == (3, 5, 0.0)
    assert configs[4] == (4, 3, 0.0) and configs[11] == (6, 5, 0.25)


def test_encode_decode_round_trip(space):
    spec = parse(HC_A)
    alpha, beta = encode(spec)
    assert alpha.shape == (20, 12) and beta.shape == (5, 3) and alpha.size + beta.size == 255
    assert (alpha.sum(axis=1) == 1).all() and (beta.sum(axis=1) == 1).all()
    assert beta[:, 0].all()  # every stage of HardCoRe-NAS A has depth 2
    # Stage 1 block 1 is e3 k5 SE -> config 3; unused rows hold config 0.
    assert alpha[1].argmax() == 3 and alpha[2].argmax() == 0 and alpha[3].argmax() == 0
    assert decode(alpha, beta) == spec
    assert decode(alpha.ravel(), beta.ravel().tolist()) == spec
    rng = np.random.default_rng(7)
    for _ in range(50):
        arch = space.sample(rng)
        assert space.decode(*space.encode(arch)) == arch


def test_encoding_errors(space):
    alpha, beta = encode(parse(HC_A))
    with pytest.raises(SearchSpaceError, match="must have shape"):
        decode(alpha[:19], beta)
    bad = alpha.copy()
    bad[4, 5] = 1
    with pytest.raises(SearchSpaceError, match="alpha row 4 is not one-hot"):
        decode(bad, beta)
    with pytest.raises(SearchSpaceError, match="beta row 0 is not one-hot"):
        decode(alpha, np.zeros((5, 3)))
    with pytest.raises(SearchSpaceError, match="stem width is 16"):
        encode(DIALECT.parse(MOBILENET_V3_LARGE, stem_width=16))


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda t: t.replace("'ir_r1_k5_s2_e3_c24_nre', ", ""), "stage 1 has 1 blocks; allowed depths: 2, 3, 4"),
        (lambda t: t.replace("e3_c24_nre_se0.25", "e5_c24_nre_se0.25"), "has expansion 5; allowed: 3, 4, 6"),
        (lambda t: t.replace("k5_s1_e3_c24", "k7_s1_e3_c24"), "has kernel 7; allowed: 3, 5"),
        (lambda t: t.replace("c24_nre_se0.25", "c24_nre_se0.5"), "has SE ratio 0.5; allowed: 0, 0.25"),
        (lambda t: t.replace("e3_c24_nre_se0.25", "e3_c24_se0.25"), "stage 1 uses ReLU (nre)"),
        (lambda t: t.replace("['cn_r1_k1_s1_c960']", "['cn_r1_k1_s1_c1280']"), "the last stage must be"),
        (lambda t: t.replace("ds_r1_k3_s1_e1_c16_nre", "ds_r1_k5_s1_e1_c16_nre"), "the first stage must be"),
        (lambda t: t.replace(", ['cn_r1_k1_s1_c960']", ""), "6 stages; the space has 7"),
        (lambda t: t.replace("ir_r1_k5_s2_e3_c24_nre'", "ir_r1_k5_s1_e3_c24_nre'"), "has stride 1; it must be 2"),
    ],
)
def test_why_not_names_the_reason(space, edit, fragment):
    arch = parse(edit(HC_A))
    reason = space.why_not(arch)
    assert reason is not None and fragment in reason
    with pytest.raises(SearchSpaceError, match="not in search space 'binas'"):
        space.check(arch)


def test_repeats_inside_the_space_are_members(space):
    # Two identical stride-1 blocks written as one r2 string are the same network.
    text = HC_A.replace("'ir_r1_k5_s1_e6_c112_se0.25', 'ir_r1_k5_s1_e6_c112_se0.25'", "'ir_r2_k5_s1_e6_c112_se0.25'")
    assert space.contains(parse(text))
    assert encode(parse(text))[0].tolist() == encode(parse(HC_A))[0].tolist()


def test_draws_stay_members_and_are_reproducible(space):
    def walk(seed: int, steps: int) -> list[str]:
        rng = np.random.default_rng(seed)
        arch, seen = space.sample(rng), []
        for step in range(steps):
            arch = space.mutate(arch, rng) if step % 2 else space.sample(rng)
            assert space.contains(arch)
            seen.append(arch.canonical)
        return seen

    first = walk(0, 2000)
    assert first[:50] == walk(0, 50)
    assert first[:50] != walk(1, 50)
    assert len(set(first)) > 1900  # 5.9e21 members: repeats would point at a broken sampler


def test_mutate_changes_exactly_one_decision(space):
    rng = np.random.default_rng(3)
    n_factors = (3, 2, 2)
    for _ in range(300):
        arch = space.sample(rng)
        child = space.mutate(arch, rng)
        (d0, c0), (d1, c1) = BINAS.decisions(arch), BINAS.decisions(child)
        changed_depths = [s for s in range(5) if d0[s] != d1[s]]
        if changed_depths:
            (s,) = changed_depths
            common = min(d0[s], d1[s])
            assert c0[s][:common] == c1[s][:common]
            assert all(c0[t] == c1[t] for t in range(5) if t != s)
        else:
            diffs = [
                sum(a != b for a, b in zip(np.unravel_index(x, n_factors), np.unravel_index(y, n_factors), strict=True))
                for s in range(5)
                for x, y in zip(c0[s], c1[s], strict=True)
                if x != y
            ]
            assert diffs == [1]


def test_sampling_is_uniform_over_depth(space):
    rng = np.random.default_rng(11)
    depths = np.array([BINAS.decisions(space.sample(rng))[0] for _ in range(600)])
    shares = [(depths == d).mean() for d in (2, 3, 4)]
    assert all(abs(share - 1 / 3) < 0.05 for share in shares)


def test_space_rejects_non_members_and_global_rng(space):
    with pytest.raises(SearchSpaceError, match="not in the BINAS space"):
        space.mutate(parse("[['ir_r1_k3_s1_e3_c16']]"), np.random.default_rng(0))
    with pytest.raises(ConfigError, match=r"numpy\.random\.Generator"):
        space.sample(np.random)  # type: ignore[arg-type]
    other = ArchSpec("zennas-v1", ())
    assert "expected a 'binas' architecture" in space.why_not(other)


def test_torch_free_modules_do_not_import_torch():
    code = (
        "import sys, zennas.arch.binas, zennas.counting.binas, zennas.spaces.binas\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
