"""Property tests: parsers raise only ZennasError subclasses, never hang, and round-trip what they print.

The mutation fuzz (tests/fuzzing.py) goes further: seeds of every dialect, token-aware mutations,
and everything `zennas info` computes, in-process for a quick sample and in a child process (peak
memory measured) for the slow run of 10,000 inputs; a CLI sample checks the one-line `Error:` contract.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ZOO_PATH
from fuzzing import MEMORY_LIMIT_MIB, TIME_LIMIT_S, fuzz, mutated_inputs, seed_texts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cli
from zennas.arch import parse
from zennas.errors import ZennasError

ZOO_STRINGS = [e["arch_string"] for e in json.loads(ZOO_PATH.read_text())]
ALPHABET = st.sampled_from(list("SuperConvResKBNRELUIDWEX0123456789(),|;.-+~_ {}[]'\":xyzabc\n\t\\"))
# A 10 s deadline per example catches pathological (e.g. exponential) parsing without flaking on a busy runner.
FAST = settings(max_examples=300, deadline=10_000, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_zennas_error(text: str) -> None:
    try:
        spec = parse(text)
    except ZennasError as error:
        assert str(error)  # a message, always
        return
    # Anything accepted must print and re-parse to the same network.
    assert parse(spec.canonical, spec.dialect) == spec


@FAST
@given(st.text(min_size=0, max_size=200))
def test_arbitrary_unicode_text(text):
    _parse_or_zennas_error(text)


@FAST
@given(st.text(alphabet=ALPHABET, max_size=300))
def test_grammar_like_text(text):
    _parse_or_zennas_error(text)


@FAST
@given(
    st.sampled_from(ZOO_STRINGS),
    st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["", "(", ")", ",", "|", "1", "x", "9999", ".5", "-"])),
             min_size=1, max_size=4),
)  # fmt: skip
def test_mutated_published_strings(text, edits):
    for position, replacement in edits:
        i = position % (len(text) + 1)
        text = text[:i] + replacement + text[i + 1 :]
    _parse_or_zennas_error(text)


@FAST
@given(st.integers(1, 60))
def test_deep_nesting_terminates(depth):
    _parse_or_zennas_error("SuperConvK3BNRELU" + "(" * depth + "3,8,2,1" + ")" * depth)
    _parse_or_zennas_error("[" * (depth * 20) + "]" * (depth * 20))
    _parse_or_zennas_error("{" * (depth * 20))


def _zennas_arch(draw) -> str:
    channels = [3]
    tokens = []
    c = draw(st.integers(1, 64))
    tokens.append(f"SuperConvK3BNRELU(3,{c},{draw(st.sampled_from([1, 2]))},1)")
    channels.append(c)
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["K{k}K{k}", "K1K{k}K1", "IDWE{e}K{k}"]))
        name = "SuperRes" + kind.format(k=draw(st.sampled_from([3, 5, 7])), e=draw(st.sampled_from([1, 2, 4, 6])))
        out = draw(st.integers(1, 128))
        args = (channels[-1], out, draw(st.sampled_from([1, 2])), draw(st.integers(1, 64)), draw(st.integers(1, 7)))
        tokens.append(f"{name}({','.join(map(str, args))})")
        channels.append(out)
    tokens.append(f"SuperConvK1BNRELU({channels[-1]},{draw(st.integers(1, 4096))},1,1)")
    return "".join(tokens)


@FAST
@given(st.data())
def test_valid_zennas_strings_round_trip(data):
    text = _zennas_arch(data.draw)
    spec = parse(text)
    assert spec.dialect == "zennas-v1"
    assert spec.to_string() == text == spec.canonical
    assert parse(spec.canonical).hash == spec.hash


@FAST
@given(st.data())
def test_valid_genet_strings_round_trip(data):
    c = data.draw(st.integers(1, 64))
    tokens = [f"ConvKX(3,{c},3,2)", f"BN({c})", f"RELU({c})"]
    for _ in range(data.draw(st.integers(0, 4))):
        kind = data.draw(st.sampled_from(["KXKX", "K1KXK1", "K1DWK1", "K1KX", "K1DW"]))
        expansion = 1.0 if kind in ("K1KX", "K1DW") else data.draw(st.sampled_from([0.25, 0.5, 1.0, 3.0, 6.0]))
        out = data.draw(st.integers(4, 96))
        tokens.append(f"SuperRes{kind}({c},{out},{data.draw(st.sampled_from([1, 3, 5]))},2,{expansion},1)")
        c = out
    text = "".join(tokens) + f"AdaptiveAvgPool({c},1)"
    spec = parse(text)
    assert spec.dialect == "genet" and spec.to_string() == text


# --- mutation fuzz of every dialect through what `zennas info` runs ------------------------------------

SLOW_FUZZ_INPUTS = 10_000


@pytest.fixture(scope="module")
def seeds() -> list[str]:
    return seed_texts(ZOO_PATH)


def test_fuzz_seeds_cover_every_dialect(seeds):
    assert {parse(text).dialect for text in seeds} == {"zennas-v1", "genet", "tinynas", "binas", "nb201"}


def test_mutation_fuzz_sample(seeds):
    stats = fuzz(mutated_inputs(seeds, 300, seed=7))
    assert stats.failures == []
    assert stats.inputs == 300 and stats.accepted > 0 and stats.refused > 0
    assert stats.slowest_s < TIME_LIMIT_S


@pytest.mark.slow
def test_mutation_fuzz_10k_inputs_in_a_child_process():
    """10,000 inputs: no exception but ZennasError, none over 5 s, the child's peak RSS under 1 GiB."""
    script = Path(__file__).resolve().parent / "fuzzing.py"
    command = [sys.executable, str(script), "--zoo", str(ZOO_PATH), "--inputs", str(SLOW_FUZZ_INPUTS), "--seed", "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3_600, check=False)
    assert done.returncode == 0, done.stderr[-2_000:]
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\nfuzz: {json.dumps({k: v for k, v in stats.items() if k != 'failures'})}")
    assert stats["failures"] == [], stats["failures"][:5]
    assert stats["inputs"] == SLOW_FUZZ_INPUTS
    assert stats["slowest_s"] < TIME_LIMIT_S, stats["slowest_input"]
    assert stats["peak_rss_mib"] < MEMORY_LIMIT_MIB, stats["first_input_over_memory"]
    assert set(stats["accepted_by_dialect"]) == {"zennas-v1", "genet", "tinynas", "binas", "nb201"}


@pytest.mark.parametrize("command", [["info"], ["score", "-p", "params"]])
def test_cli_fuzz_sample_gives_exit_0_or_a_one_line_error(seeds, command):
    runner = CliRunner()
    codes = []
    for text in mutated_inputs(seeds, 40, seed=11):
        if "\x00" in text or any("\ud800" <= ch <= "\udfff" for ch in text):
            continue  # not passable as a command-line argument
        result = runner.invoke(cli.main, [*command, text])
        codes.append(result.exit_code)
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert "Traceback" not in result.output
        if result.exit_code:
            assert result.exit_code == 1
            assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output[:300]
    assert len(codes) >= 30 and 0 in codes and 1 in codes
