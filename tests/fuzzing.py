"""Seeded, token-aware mutation fuzzing of architecture text through what `zennas info` runs.

Seeds come from every dialect: the ZenNet/GENet zoo, the registered models, and each search
space's seeds and samples (ZenNAS, GENet, TinyNAS/MAE-DET/DeepMAD, BINAS, NB201). Each input is
one to three mutations of a seed (numbers -> 0, -1, huge, 1e400, nan, floats; blocks duplicated,
deleted, swapped or nested; names swapped; truncation; splices across dialects), then parsed and
counted at the default resolution and classes. Anything but a ZennasError is a failure, and so is
an input that runs over the time limit.

Run as a script it fuzzes in this process and prints one JSON line of statistics (peak memory
included): tests/test_fuzz.py runs the long fuzz that way, in a child process of its own.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import re
import resource
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

TIME_LIMIT_S = 5.0
MEMORY_LIMIT_MIB = 1024

NUMBERS = (
    "0", "-1", "1", "2", "3", "5", "7", "8", "15", "16", "17", "64", "255", "4096", "10001", "16384", "65536",
    "65537", "1000000000000", "1" + "0" * 400, "9" * 30, "1e400", "-1e400", "1e-400", "1e308", "nan", "NaN",
    "inf", "-inf", "Infinity", "2.5", "0.5", "0.25", "-0.0", "1.0", "6.0", "64.5", "0x10", "1_000", "",
)  # fmt: skip
NAMES = (
    "SuperConvK3BNRELU", "SuperConvK1BNRELU", "SuperResK3K3", "SuperResK1K5K1", "SuperResIDWE6K7", "SuperResKXKX",
    "SuperResK1KXK1", "SuperResK1DWK1", "SuperResK1DWSEK1", "ConvKX", "BN", "RELU", "AdaptiveAvgPool",
    "ConvKXBNRELU", "ResBlock", "SE", "class", "in", "out", "s", "k", "L", "btn", "g", "p", "act", "nbitsA",
    "space_arch", "best_structures", "CnnNet", "ds", "ir", "cn", "nre", "se", "stem", "none", "skip_connect",
    "nor_conv_3x3", "avg_pool_3x3", "True", "None", "null", "nan", "inf",
)  # fmt: skip
JUNK = [*"()[]{},;:|~+-_.'\"\\/ \n\t0123456789eExXkrscL", "\x00", "\u00e9", "\ud800", "(((", "]]]", "|+|"]

_LEXEME = re.compile(r"[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|[A-Za-z_][A-Za-z0-9_]*|\s+|.", re.DOTALL)
# One block in any dialect: NAME(...), a TinyNAS dict, a BINAS quoted block string, an NB201 edge.
_BLOCK = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\([^()]*\)|\{[^{}]*\}|'[^'\[\]]*'|\"[^\"\[\]]*\"|[a-z_0-9]+~[0-9]+")


def seed_texts(zoo_path: Path) -> list[str]:
    """Published and sampled architecture texts of every dialect (distinct, in a fixed order)."""
    import numpy as np

    from zennas.models import get_model_entry, list_models
    from zennas.spaces import get_space, list_spaces

    texts = [entry["arch_string"] for entry in json.loads(zoo_path.read_text())]
    texts += [get_model_entry(name).arch for name in list_models()]
    for name in list_spaces():
        space = get_space(name)
        texts += [spec.to_string() for spec in space.initial()]
        rng = np.random.default_rng(0)
        texts += [space.sample(rng).to_string() for _ in range(4)]
    # Other spellings the dialects accept: TinyNAS as indented JSON, BINAS with double quotes.
    for text in list(texts):
        if text.startswith("{'space_arch'"):
            texts.append(json.dumps(ast.literal_eval(text), indent=1))
        elif text.startswith("[['"):
            texts.append(text.replace("'", '"'))
    return list(dict.fromkeys(texts))


def _spans(pattern: re.Pattern[str], text: str) -> list[tuple[int, int]]:
    return [m.span() for m in pattern.finditer(text)]


def _replace_lexeme(text: str, rng: random.Random, wanted: Callable[[str], bool], choices: Callable[[], str]) -> str:
    spans = [m.span() for m in _LEXEME.finditer(text) if wanted(m.group())]
    if not spans:
        return text
    lo, hi = rng.choice(spans)
    return text[:lo] + choices() + text[hi:]


def _number(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return rng.choice(NUMBERS)
    return str(rng.randint(0, 10 ** rng.randint(1, 25)) * rng.choice((1, 1, 1, -1)))


def _copies(rng: random.Random) -> int:
    return rng.choice((1, 1, 2, 3, 10, 100, 2_000, 12_000))


def mutate_once(text: str, rng: random.Random, seeds: list[str]) -> str:
    """One random token-aware edit of `text`."""
    kind = rng.randrange(15)
    blocks = _spans(_BLOCK, text)
    if kind <= 2:  # a number becomes 0, -1, huge, 1e400, nan, a float ...
        return _replace_lexeme(text, rng, lambda s: s[0].isdigit(), lambda: _number(rng))
    if kind >= 12:  # every copy of one number changes alike: channels still chain, so counting runs
        numbers = sorted({m.group() for m in _LEXEME.finditer(text) if m.group()[0].isdigit()})
        if numbers:
            old, new = rng.choice(numbers), _number(rng)
            return re.sub(rf"(?<![0-9.]){re.escape(old)}(?![0-9.])", lambda _: new, text)
        return text
    if kind == 3:  # a name becomes another dialect's name, or loses / gains a character
        if rng.random() < 0.7:
            return _replace_lexeme(text, rng, lambda s: s[0].isalpha() or s[0] == "_", lambda: rng.choice(NAMES))
        i = rng.randrange(len(text) + 1)
        return text[:i] + rng.choice("KXE0123456789_") + text[i:]
    if kind == 4 and blocks:  # duplicate a block, up to past the block and depth limits
        lo, hi = rng.choice(blocks)
        joiner = "" if text[lo].isalpha() and text[hi - 1] == ")" else ", "
        return text[:hi] + (joiner + text[lo:hi]) * _copies(rng) + text[hi:]
    if kind == 5 and blocks:  # delete a block
        lo, hi = rng.choice(blocks)
        return text[:lo] + text[hi:]
    if kind == 6 and len(blocks) >= 2:  # swap two blocks
        (a, b), (c, d) = sorted(rng.sample(blocks, 2))
        return text[:a] + text[c:d] + text[b:c] + text[a:b] + text[d:]
    if kind == 7:  # truncate
        return text[: rng.randrange(len(text) + 1)]
    if kind == 8 and blocks:  # nest: a block inside another block's brackets, or wrapped many times
        lo, hi = rng.choice(blocks)
        depth = rng.choice((1, 2, 50, 1_000))
        opener, closer = rng.choice((("(", ")"), ("[", "]"), ("{", "}")))
        inner = text[lo:hi]
        if rng.random() < 0.5 and text[hi - 1] in ")}":
            inner = text[lo : hi - 1] + "," + text[lo:hi] + text[hi - 1]
        return text[:lo] + opener * depth + inner + closer * depth + text[hi:]
    if kind == 9:  # splice the head of this text onto the tail of another dialect's
        other = rng.choice(seeds)
        return text[: rng.randrange(len(text) + 1)] + other[rng.randrange(len(other) + 1) :]
    if kind == 10:  # a separator becomes another
        return _replace_lexeme(text, rng, lambda s: s in ",;|+~:_", lambda: rng.choice(",;|+~:_. "))
    i = rng.randrange(len(text) + 1)  # junk characters
    return text[:i] + rng.choice(JUNK) * rng.choice((1, 1, 3, 500)) + text[i:]


def mutated_inputs(seeds: list[str], count: int, seed: int) -> Iterator[str]:
    """`count` inputs, each one to three mutations of a seed text, reproducible from `seed`."""
    rng = random.Random(seed)
    for _ in range(count):
        text = rng.choice(seeds)
        for _ in range(rng.choice((1, 1, 2, 3))):
            text = mutate_once(text, rng, seeds)
        yield text


class TimeLimitExceeded(BaseException):
    """Raised by the interval timer in an input that runs too long (not an Exception: nothing swallows it)."""


def run_info(text: str) -> str:
    """What `zennas info ARCH` (and `--convention` of the dialect) computes; returns the dialect."""
    from zennas.api import info

    result = info(text)
    json.dumps(result, allow_nan=False)  # what --json prints: no NaN or infinity may leak into it
    convention = {"zennas-v1": "zennas", "tinynas": "tinynas"}.get(result["dialect"])
    if convention is not None:
        json.dumps(info(text, convention=convention), allow_nan=False)
    return result["dialect"]


@dataclass
class FuzzStats:
    """Outcome of a fuzz run."""

    inputs: int = 0
    accepted: int = 0
    refused: int = 0
    accepted_by_dialect: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    slowest_s: float = 0.0
    slowest_input: str = ""
    peak_rss_mib: float = 0.0
    first_input_over_memory: str | None = None

    def to_json(self) -> dict:
        return self.__dict__


def _excerpt(text: str, limit: int = 160) -> str:
    return repr(text[:limit]) + (f"... ({len(text):,} characters)" if len(text) > limit else "")


def _peak_rss_mib() -> float:
    """This process's peak resident memory. Linux's VmHWM belongs to the address space, so it starts
    afresh at exec; ru_maxrss survives exec and would report the parent's peak (pytest's, here)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def fuzz(texts: Iterator[str], *, time_limit_s: float = TIME_LIMIT_S) -> FuzzStats:
    """Run `run_info` on every text; a non-ZennasError or an input over `time_limit_s` is a failure."""
    from zennas.errors import ZennasError

    stats = FuzzStats()

    def on_alarm(signum: int, frame: object) -> None:
        raise TimeLimitExceeded

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        for text in texts:
            stats.inputs += 1
            start = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, time_limit_s)
            try:
                dialect = run_info(text)
            except ZennasError as error:
                stats.refused += 1
                message = str(error)
                if not message or len(message) > 4_000:
                    stats.failures.append({"input": _excerpt(text), "error": f"bad message ({len(message)} chars)"})
            except TimeLimitExceeded:
                stats.failures.append({"input": _excerpt(text), "error": f"ran over {time_limit_s} s"})
            except BaseException as error:  # the point of the fuzz: anything else is a defect
                if isinstance(error, KeyboardInterrupt):
                    raise
                stats.failures.append(
                    {"input": _excerpt(text), "error": f"{type(error).__name__}: {str(error)[:200]}",
                     "where": traceback.format_exc(limit=-3)[-600:]}
                )  # fmt: skip
            else:
                stats.accepted += 1
                stats.accepted_by_dialect[dialect] = stats.accepted_by_dialect.get(dialect, 0) + 1
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            elapsed = time.perf_counter() - start
            if elapsed > stats.slowest_s:
                stats.slowest_s, stats.slowest_input = elapsed, _excerpt(text, 100)
            if stats.first_input_over_memory is None and _peak_rss_mib() > MEMORY_LIMIT_MIB:
                stats.first_input_over_memory = _excerpt(text)
    finally:
        signal.signal(signal.SIGALRM, previous)
    stats.peak_rss_mib = round(_peak_rss_mib(), 1)
    stats.slowest_s = round(stats.slowest_s, 3)
    return stats


def main(argv: list[str] | None = None) -> None:
    """Fuzz in this process and print one JSON line of FuzzStats."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, required=True, help="The model-zoo JSON (tests/data).")
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # A backstop only: peak RSS is what the test checks; this keeps a runaway input from taking the machine.
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = 8 * 1024**3 if hard == resource.RLIM_INFINITY else min(8 * 1024**3, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    seeds = seed_texts(args.zoo)
    stats = fuzz(mutated_inputs(seeds, args.inputs, args.seed))
    print(json.dumps({"seeds": len(seeds), **stats.to_json()}))


if __name__ == "__main__":
    main()
