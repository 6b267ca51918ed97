"""Property tests: parsers raise only ZennasError subclasses, never hang, and round-trip what they print."""

from __future__ import annotations

import json

from conftest import ZOO_PATH
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
