"""Size limits (zennas.arch.limits) and bounded error messages: huge numbers, depths, resolutions,
texts and missing files are refused at once with a one-line ZennasError, never a traceback or a hang."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

import cli
from zennas.api import info, settings_for
from zennas.arch import ArchSpec, parse
from zennas.arch.limits import MAX_TEXT_CHARS
from zennas.arch.zennas import ZenConv, ZenRes
from zennas.build import build
from zennas.counting import check_forward_size, count
from zennas.errors import (
    ArchSyntaxError,
    ArchValueError,
    ConfigError,
    UnknownModelError,
    ZennasError,
    bounded_message,
    excerpt,
)
from zennas.models import resolve_arch

STEM = "SuperConvK3BNRELU(3,16,2,1)"
HEAD = "SuperConvK1BNRELU(64,128,1,1)"
GENET = "ConvKX(3,16,3,2)BN(16)RELU(16)SuperResK1KXK1(16,64,3,2,{e},{n})AdaptiveAvgPool(64,1)"
BINAS = "[['ds_r1_k3_s1_e1_c16_nre'], ['{block}']]"
TINY = "[{{'class': 'ConvKXBNRELU', 'in': 3, 'out': 16, 's': 2, 'k': 3}}, {block}]"


def refused_fast(fn, error=ZennasError, match: str | None = None, seconds: float = 2.0) -> str:
    """Run `fn`, expect `error` (message containing `match`) within `seconds`; return the message."""
    start = time.perf_counter()
    with pytest.raises(error) as caught:
        fn()
    assert time.perf_counter() - start < seconds
    message = str(caught.value)
    assert "\n" not in message and len(message) < 2_000
    if match is not None:
        assert match in message
    return message


# --- depth: refused before anything is expanded ----------------------------------------------------


def test_zennas_repeat_count_of_a_trillion_is_refused_at_its_token():
    text = f"{STEM}SuperResK1K5K1(16,64,2,16,1000000000000){HEAD}"
    message = refused_fast(lambda: info(text), ArchValueError, "10,000-layer limit")
    assert "SuperResK1K5K1: repeat count (sub_layers) 1000000000000" in message
    assert "at position 27" in message and "published networks" in message


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (GENET.format(e=0.25, n=10**12), "repeat count (sub_layers) 1000000000000"),
        (BINAS.format(block="ir_r999999999_k3_s2_e3_c24"), "repeats (r) 999999999"),
        (f"{STEM}SuperResK3K3(16,64,2,16,6000)SuperResK3K3(64,64,1,16,6000){HEAD}", "sub_layers add up to"),
        ("[['ds_r1_k3_s1_e1_c16_nre'], [" + ", ".join(["'ir_r9000_k3_s1_e3_c16'"] * 2) + "]]", "repeats add up to"),
        (
            "[" + ", ".join(["{'class': 'SuperResK1KXK1', 'in': 8, 'out': 8, 's': 1, 'k': 3, 'L': 256, 'btn': 8}"] * 14)
            + "]",
            "conv layers add up to",
        ),
    ],
)  # fmt: skip
def test_depth_limit_in_every_dialect(text, match):
    message = refused_fast(lambda: info(text), ArchValueError, match)
    assert "10,000-layer limit" in message


def test_token_and_block_counts_are_bounded():
    zennas = STEM + "SuperConvK1BNRELU(16,16,1,1)" * 10_000
    refused_fast(lambda: parse(zennas), ArchValueError, "token count 10001 exceeds the 10,000-block limit")
    genet = "ConvKX(3,16,3,2)" + "BN(16)" * 10_000
    refused_fast(lambda: parse(genet), ArchValueError, "10,000-block limit")
    tinynas = "[" + ", ".join(["{'class': 'ConvKXBNRELU', 'in': 3, 'out': 3, 's': 1, 'k': 1}"] * 10_001) + "]"
    refused_fast(lambda: parse(tinynas), ArchValueError, "block count 10001 exceeds the 10,000-block limit")


def test_counting_refuses_a_deep_spec_built_in_code():
    deep = ZenRes(
        in_channels=16, out_channels=16, stride=1, kind="KXKX", kernel=3, bottleneck=16, sub_layers=10**12
    )  # never parsed, so only count() stands between it and a 10^12-unit expansion
    spec = ArchSpec("zennas-v1", (ZenConv(in_channels=3, out_channels=16, stride=2, kernel=3, sub_layers=1), deep))
    refused_fast(lambda: count(spec, resolution=224, num_classes=10), ArchValueError, "10,000-layer limit")


# --- widths and numbers that overflow ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        (f"SuperConvK3BNRELU(3,{10**400},2,1)", ArchValueError, "has 401 digits"),
        (f"SuperConvK3BNRELU(3,{10**15},2,1)", ArchValueError, "out channels 1000000000000000 exceeds the 65,536"),
        (f"{STEM}SuperResK3K3(16,64,2,70000,1){HEAD}", ArchValueError, "bottleneck 70000 exceeds the 65,536"),
        (f"ConvKX(3,{10**400},3,2)", ArchValueError, "has 401 digits"),
        (GENET.format(e="1e400", n=1), ArchValueError, "expansion '1e400' overflows a float"),
        (GENET.format(e="65.0", n=1), ArchValueError, "expansion 65 exceeds the 64-times expansion limit"),
        (GENET.format(e="nan", n=1), ArchSyntaxError, "expansion must be a number, got 'nan'"),
        (GENET.format(e="inf", n=1), ArchSyntaxError, "expansion must be a number, got 'inf'"),
        (BINAS.format(block="ir_r1_k3_s2_e3_c70000"), ArchValueError, "out channels (c) 70000 exceeds the 65,536"),
        (BINAS.format(block="ir_r1_k17_s2_e3_c24"), ArchValueError, "kernel (k) 17 exceeds the 15-pixel kernel"),
        (BINAS.format(block="ir_r1_k3_s2_e65_c24"), ArchValueError, "expansion (e) 65 exceeds the 64-times"),
        ("[['stem_c99999999'], ['ds_r1_k3_s1_e1_c16']]", ArchValueError, "stem width 99999999 exceeds"),
        (TINY.format(block="{'class': 'ConvKXBNRELU', 'in': 16, 'out': " + "1" + "0" * 40 + ", 's': 1, 'k': 3}"),
         ArchValueError, "exceeds the 65,536-channel limit"),
        (TINY.format(block="{'class': 'ConvKXBNRELU', 'in': 16, 'out': " + "1" * 5000 + ", 's': 1, 'k': 3}"),
         ArchSyntaxError, "not a Python/JSON literal"),
        (TINY.format(block="{'class': 'ConvKXBNRELU', 'in': 16, 'out': 1e400, 's': 1, 'k': 3}"),
         ArchSyntaxError, "'out' must be an integer, got float inf"),
        (TINY.format(block="{'class': 'ConvKXBNRELU', 'in': 16, 'out': nan, 's': 1, 'k': 3}"),
         ArchSyntaxError, "'out' must be an integer, got the name 'nan'"),
    ],
)  # fmt: skip
def test_huge_and_non_finite_numbers_are_refused(text, error, match):
    refused_fast(lambda: info(text), error, match)


# --- resolution, classes, builds and forwards ------------------------------------------------------------


def test_resolution_and_classes_are_bounded_before_counting():
    refused_fast(lambda: info("zennet-400m-se", resolution=10**12), ConfigError, "16,384-pixel limit")
    refused_fast(lambda: info("zennet-400m-se", num_classes=10**12), ConfigError, "10,000,000-class limit")
    spec = parse(f"{STEM}SuperResK3K3(16,64,2,16,1){HEAD}")
    refused_fast(lambda: count(spec, resolution=16_385, num_classes=10), ConfigError, "16,384-pixel limit")
    assert count(spec, resolution=16_384, num_classes=10).blocks[-1].out_size == 4_096  # the limit itself counts
    refused_fast(lambda: settings_for(spec, None, 10**6, None), ConfigError, "use a smaller resolution")


def test_a_forward_too_large_to_allocate_is_refused_before_any_tensor():
    spec = parse(f"{STEM}SuperResK3K3(16,64,2,16,1){HEAD}")
    check_forward_size(count(spec, resolution=224, num_classes=10), 64)  # the zen proxy's setting: fine
    message = refused_fast(
        lambda: check_forward_size(count(spec, resolution=8192, num_classes=10), 64), ConfigError, "2,147,483,647"
    )
    assert "the output of SuperConvK1BNRELU holds 34,359,738,368 values" in message  # 64 x 128 x 4096 x 4096
    assert "smaller batch size or resolution" in message
    from zennas.proxies import score

    refused_fast(lambda: score(spec, "zen", resolution=8192), ConfigError, "batch 64")


def test_a_build_too_large_for_memory_is_refused_before_allocating():
    text = "SuperConvK3BNRELU(3,65536,2,1)SuperConvK7BNRELU(65536,65536,1,1)"
    info(text)  # counting it is arithmetic: fine
    refused_fast(lambda: build(parse(text), num_classes=10), ConfigError, "parameters, more than the 2,000,000,000")


# --- texts, files and messages -------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", [None, "zennas-v1", "genet", "tinynas", "binas", "nb201"])
def test_text_over_the_size_limit_is_refused_unread(dialect):
    text = "[" * (MAX_TEXT_CHARS + 1)
    refused_fast(lambda: parse(text, dialect), ArchSyntaxError, "1,000,001 characters, more than the 1,000,000")


def test_echoed_input_is_cut_to_an_excerpt():
    long_arg = "x" * 900_000
    message = refused_fast(lambda: parse(f"SuperConvK3BNRELU(3,{long_arg},2,1)"), ArchSyntaxError)
    assert "(900,000 characters)" in message and len(message) < 400
    message = refused_fast(lambda: parse(f"SuperConvK3BNRELU(3,16,2,1){'Q' * 900_000}("), ArchSyntaxError)
    assert len(message) < 400
    assert excerpt("abc") == "abc" and excerpt("a" * 100, 10) == "aaaaaaaaaa... (100 characters)"
    words = bounded_message("bad value " + "y" * 5_000 + " at position 3")
    assert words.endswith(" at position 3") and "(5,000 characters)" in words and len(words) < 200
    spaced = bounded_message("bad label " + "y " * 5_000 + "; fix it")
    assert len(spaced) < 2_100 and spaced.startswith("bad label") and spaced.endswith("; fix it")
    assert "characters cut" in spaced


def test_cli_prints_a_bounded_one_line_error_for_50_mb_of_garbage():
    result = CliRunner().invoke(cli.main, ["info", "(" * 50_000_000])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1 and len(result.output) < 400


@pytest.mark.parametrize("arch", ["missing.txt", "./nofile", "archs/zennet.arch", "C:\\archs\\net", "nofile"])
def test_a_missing_file_is_reported_as_such(arch):
    message = refused_fast(lambda: resolve_arch(arch), UnknownModelError)
    assert "no such file or model name" in message or "neither a registered model" in message
    result = CliRunner().invoke(cli.main, ["info", arch])
    assert result.exit_code == 1 and "matches no dialect" not in result.output


def test_path_like_text_that_is_architecture_text_still_parses_or_names_its_syntax_error():
    refused_fast(lambda: resolve_arch("SuperConvK3BNRELU(3,8/2,2,1)"), ArchSyntaxError, "must be an integer")
    refused_fast(lambda: resolve_arch("zennet-400m-se", dialect="genet"), ConfigError, "registered model name")


def test_an_oversized_file_is_refused_unread(tmp_path):
    path = tmp_path / "big.txt"
    with path.open("wb") as handle:
        handle.truncate(5 * MAX_TEXT_CHARS)  # sparse: nothing is written
    refused_fast(lambda: resolve_arch(str(path)), ConfigError, "5,000,000 bytes")
    path.write_text(f"{STEM}SuperResK3K3(16,64,2,16,1){HEAD}")
    assert resolve_arch(str(path))[0].dialect == "zennas-v1"


@pytest.mark.parametrize(
    "args",
    [
        ["info", "-r", "1000000000000", "zennet-400m-se"],
        ["info", "--num-classes", "1000000000000", "zennet-400m-se"],
        ["score", "-p", "params", "-r", "1000000000000", "zennet-400m-se"],
        ["score", "-p", "zen", "-r", "8192", "zennet-cifar10-1m"],
        ["export", "--onnx", "never-written.onnx", "-r", "100000", "zennet-400m-se"],
        ["export", "--onnx", "never-written.onnx", "-r", "4096", "-b", "64", "zennet-cifar10-1m"],
        ["info", f"{STEM}SuperResK1K5K1(16,64,2,16,1000000000000){HEAD}"],
    ],
)
def test_cli_refuses_huge_settings_on_one_line(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    result = CliRunner().invoke(cli.main, args)
    assert time.perf_counter() - start < 10
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert not (tmp_path / "never-written.onnx").exists()


def test_spaces_without_max_width_stop_at_the_channel_limit():
    from zennas.spaces import get_space
    from zennas.spaces.common import width_choices

    assert width_choices(60_000, (2.5, 1.0), 8, 8, None) == (60_000, 65_536)
    # Without max_width (zennas-idw; zennas-res lifted) a long mutation chain used to walk past 65,536 channels.
    space = get_space("zennas-res").with_options(max_width=None)
    seed = space.initial()[0]
    wide = seed.replace_blocks(
        [
            *seed.blocks[:-1],
            ZenConv(in_channels=seed.blocks[-2].out_channels, out_channels=70_000, stride=1, kernel=1, sub_layers=1),
        ]
    )
    assert "exceeds the 65,536-channel limit" in (space.why_not(wide) or "")


def _largest_conv_output(model, resolution: int) -> int:
    """Values per image of the largest Conv2d output in a real forward (or of the input, if larger)."""
    import torch

    largest = 3 * resolution**2

    def hook(module, inputs, output):
        nonlocal largest
        largest = max(largest, output[0].numel())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, resolution, resolution))
    for handle in handles:
        handle.remove()
    return largest


@pytest.mark.parametrize(
    ("arch", "resolution"),
    [
        ("zennet-cifar10-1m", 32),
        ("zennet-400m-se", 64),
        ("genet-light", 64),
        (f"{STEM}SuperResIDWE6K3(16,8,2,512,2)SuperConvK1BNRELU(8,16,1,1)", 32),  # inner width >> outputs
        ("ConvKX(3,8,3,2)SuperResK1DWK1(8,8,3,2,48.0,2)AdaptiveAvgPool(8,1)", 32),
        (BINAS.format(block="ir_r2_k3_s2_e6_c24"), 64),
        (TINY.format(block="{'class': 'SuperResK1KXK1', 'in': 16, 'out': 8, 's': 2, 'k': 3, 'L': 2, 'btn': 256}"), 32),
        ("|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|none~1|nor_conv_3x3~2|", 32),
    ],
)
def test_forward_size_estimate_is_the_largest_feature_map_of_a_real_forward(arch, resolution):
    from zennas.api import create_model

    spec, entry = resolve_arch(arch)
    _, classes, use_se = settings_for(spec, entry)
    cx = count(spec, resolution=resolution, num_classes=classes, use_se=use_se)
    estimate = max(3 * resolution**2, *(max(b.out_channels * b.out_size**2, b.peak) for b in cx.blocks))
    assert estimate == _largest_conv_output(create_model(spec, num_classes=classes, use_se=use_se), resolution)


def test_a_wide_inner_map_counts_even_when_block_outputs_are_small():
    text = TINY.format(block="{'class': 'SuperResK1KXK1', 'in': 16, 'out': 8, 's': 1, 'k': 3, 'L': 1, 'btn': 65536}")
    cx = count(parse(text), resolution=256, num_classes=0)
    assert max(b.out_channels * b.out_size**2 for b in cx.blocks) * 64 < 2**31  # outputs alone would pass
    refused_fast(lambda: check_forward_size(cx, 64), ConfigError, "a feature map inside SuperResK1KXK1")
