"""ZenNAS and GENet dialects: round trips, canonical identity, and one test per error message."""

from __future__ import annotations

import pytest

from zennas.arch import get_dialect, list_dialects, parse
from zennas.arch.zennas import ZenConv, ZenRes, split_deep_blocks
from zennas.errors import (
    ArchSyntaxError,
    ArchValueError,
    ChannelMismatchError,
    UnknownDialectError,
    ZennasError,
)

SMALL = (
    "SuperConvK3BNRELU(3,16,2,1)SuperResK1K5K1(16,32,2,8,2)SuperResIDWE4K3(32,40,1,24,1)SuperConvK1BNRELU(40,64,1,1)"
)


def test_zoo_strings_round_trip_exactly_in_their_own_dialect(zoo):
    expected_dialect = {"ZenNet": "zennas-v1", "GENet": "genet"}
    for entry in zoo:
        spec = parse(entry["arch_string"])
        assert spec.dialect == expected_dialect[entry["family"]]
        assert spec.to_string() == entry["arch_string"]
        # The canonical form is label-free and itself a fixed point.
        assert parse(spec.canonical).canonical == spec.canonical
        assert "uuid" not in spec.canonical


def test_sum_of_sub_layers_matches_the_zoo(zoo):
    for entry in zoo:
        if entry["family"] == "ZenNet":
            assert parse(entry["arch_string"]).layers == entry["computed_for_this_report"]["sum_of_sub_layers"]


def test_genet_labels_do_not_change_identity(zoo):
    entry = next(e for e in zoo if e["name"] == "GENet_small")
    labelled = parse(entry["arch_string"])
    plain = parse(labelled.canonical)
    assert labelled == plain and labelled.hash == plain.hash
    assert plain.to_string() == labelled.canonical


def test_typed_ir_fields():
    spec = parse(SMALL)
    stem, k1, idw, head = spec.blocks
    assert isinstance(stem, ZenConv) and (stem.kernel, stem.stride, stem.sub_layers) == (3, 2, 1)
    assert isinstance(k1, ZenRes) and (k1.kind, k1.kernel, k1.bottleneck, k1.sub_layers) == ("K1KXK1", 5, 8, 2)
    assert (idw.kind, idw.expansion, idw.kernel) == ("IDW", 4, 3)
    assert head.out_channels == 64
    with pytest.raises(AttributeError):
        stem.kernel = 5  # frozen


def test_hash_is_stable_and_whitespace_insensitive():
    a = parse(SMALL)
    b = parse("  " + SMALL + "\n")
    assert a.hash == b.hash and len(a.hash) == 16
    # Pinned: a change here silently invalidates every score/latency cache keyed on it.
    assert a.hash == "4ef8ce1d55f5b5a5"
    assert parse(SMALL.replace("(16,32,2,8,2)", "(16,32,2,8,3)")).hash != a.hash


def test_labels_in_zennas_strings_are_kept_for_re_emission():
    text = "SuperConvK3BNRELU(stem|3,16,2,1)SuperConvK1BNRELU(16,32,1,1)"
    spec = parse(text)
    assert spec.to_string() == text
    assert spec.canonical == "SuperConvK3BNRELU(3,16,2,1)SuperConvK1BNRELU(16,32,1,1)"


def test_split_deep_blocks_follows_zennas():
    spec = parse("SuperConvK3BNRELU(3,16,2,1)SuperResK3K3(16,32,2,8,7)SuperConvK1BNRELU(32,64,1,1)")
    split = split_deep_blocks(spec)
    assert split.canonical == (
        "SuperConvK3BNRELU(3,16,2,1)SuperResK3K3(16,32,2,8,3)SuperResK3K3(32,32,1,8,4)SuperConvK1BNRELU(32,64,1,1)"
    )
    assert split.layers == spec.layers


def test_rechain_is_explicit():
    legacy = "SuperConvK3BNRELU(3,32,2,1)SuperResK3K3(32,64,2,32,1)SuperConvK1BNRELU(256,512,1,1)"
    with pytest.raises(ChannelMismatchError, match=r"block 2 \(SuperConvK1BNRELU\) takes 256 input channels"):
        parse(legacy)
    repaired = parse(legacy, rechain=True)
    assert repaired.blocks[-1].in_channels == 64


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("", ArchSyntaxError, "empty architecture text"),
        ("   ", ArchSyntaxError, "empty architecture text"),
        ("SuperConvK3BNRELU(3,16,2,1)SuperResK2K2(16,32,1,8,1)", ArchValueError, "kernel must be one of 3, 5, 7"),
        ("SuperConvK3BNRELU(3,16,2,1)SuperResK3K5(16,32,1,8,1)", ArchSyntaxError, "both kernels"),
        ("SuperConvK3BNRELU(3,16,2,1)SuperResFoo(16,32,1,8,1)", ArchSyntaxError, "unknown block 'SuperResFoo'"),
        ("SuperConvK3BNRELU(3,16,2)", ArchSyntaxError, "takes 4 arguments"),
        ("SuperConvK3BNRELU(3,16,2,1)SuperResK3K3(16,32,1,8)", ArchSyntaxError, "takes 5 arguments"),
        ("SuperConvK3BNRELU(3,16.0,2,1)", ArchSyntaxError, "out must be an integer, got '16.0'"),
        ("SuperConvK3BNRELU(3,x,2,1)", ArchSyntaxError, "out must be an integer"),
        ("SuperConvK3BNRELU(3,16,3,1)", ArchValueError, "stride must be one of 1, 2"),
        ("SuperConvK3BNRELU(3,16,2,0)", ArchValueError, "sub_layers must be a positive integer"),
        ("SuperConvK3BNRELU(3,0,2,1)", ArchValueError, "out channels must be a positive integer"),
        ("SuperConvK3BNRELU(3,16,2,1", ArchSyntaxError, "unbalanced parentheses"),
        ("SuperConvK3BNRELU(3,16,2,1))", ArchSyntaxError, "closes nothing"),
        ("SuperConvK3BNRELU(3,16,2,1)SuperConvK1BNRELU(8,32,1,1)", ChannelMismatchError, "takes 8 input channels"),
        ("SuperConvK3BNRELU(4,16,2,1)", ChannelMismatchError, "the image gives 3"),
        ("SuperConvK3BNRELU(3,16,2,,1)", ArchSyntaxError, "empty argument"),
        ("SuperConvK3BNRELU()", ArchSyntaxError, "has no arguments"),
        ("SuperConvK3BNRELU 3,16", ArchSyntaxError, "expected '\\(' after block name"),
        ("SuperResIDWE3K3(3,16,2,8,1)", ArchValueError, "expansion must be one of 1, 2, 4, 6"),
        ("Sequential(SuperConvK3BNRELU(3,16,2,1))", ArchSyntaxError, "containers"),
        ("123", UnknownDialectError, "matches no dialect"),
    ],
)
def test_zennas_errors_name_the_problem(text, error, message):
    with pytest.raises(error, match=message) as info:
        parse(text)
    assert isinstance(info.value, ZennasError)
    assert "\n" not in str(info.value)


def test_error_positions_point_at_the_token():
    text = "SuperConvK3BNRELU(3,16,2,1)SuperResK3K3(16,32,7,8,1)"
    with pytest.raises(ArchValueError) as info:
        parse(text, "zennas-v1")
    assert info.value.position == text.index("SuperResK3K3")
    assert info.value.token == "SuperResK3K3"
    with pytest.raises(ArchSyntaxError) as info:
        parse("SuperConvK3BNRELU(3,1x6,2,1)", "zennas-v1")
    assert info.value.position == 20


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ConvKX(3,8,3,2)BN(8)RELU(8)SuperResK1KXK1(8,16,3,2,0.0,1)", "expansion must be > 0"),
        ("ConvKX(3,8,3,2)BN(8)RELU(8)SuperResK1KX(8,16,3,2,2.0,1)", "expansion must be 1.0"),
        ("ConvKX(3,8,3,2)BN(16)", "takes 16 input channels"),
        ("ConvKX(3,8,4,2)", "kernel must be one of"),
        ("ConvKX(3,8,3,2)AdaptiveAvgPool(8,1)BN(8)", "may only be the last token"),
        ("ConvKX(3,8,3,2)AdaptiveAvgPool(8,2)", "only output size 1"),
        ("ConvKX(3,8,3,2)SuperResKXKX(8,16,3,2,x,1)", "expansion must be a number"),
        ("ConvKX(3,8,3,2)SuperResK1KXK1Z(8,16,3,2,1.0,1)", "unknown block"),
    ],
)
def test_genet_errors(text, message):
    with pytest.raises(ArchSyntaxError, match=message):
        parse(text, "genet")


def test_genet_exact_names_not_prefixes():
    # GENet's own loader matches by prefix, so SuperResK1KX would swallow SuperResK1KXK1; we do not.
    spec = parse("ConvKX(3,8,3,2)SuperResK1KXK1(8,16,3,2,0.25,1)", "genet")
    assert spec.blocks[1].kind == "K1KXK1"
    spec = parse("ConvKX(3,8,3,2)SuperResK1KX(8,16,3,2,1.0,1)", "genet")
    assert spec.blocks[1].kind == "K1KX"


def test_dialect_registry():
    assert {"zennas-v1", "genet"} <= set(list_dialects())
    with pytest.raises(UnknownDialectError, match="unknown dialect 'nope'"):
        get_dialect("nope")
    # An explicit dialect is obeyed: a GENet string is not ZenNAS.
    with pytest.raises(ArchSyntaxError, match="unknown block 'ConvKX'"):
        parse("ConvKX(3,8,3,2)", "zennas-v1")
