"""Scoring several candidates at once: identical scores for any number in flight, flags held in every
thread, one device-to-host transfer per Zen-Score, every weight drawn on the device, no wasted init."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from zennas.arch import parse
from zennas.errors import ConfigError, ProxyError
from zennas.proxies import PROXIES, Option, register_proxy, score
from zennas.proxies.inflight import InFlight, score_many
from zennas.proxies.zen import init_plain_, plain_network, plain_skeleton
from zennas.registry import Once
from zennas.wiring import InFlightMap, Problem, make_map, parse_proxy

# Eight small networks over every dialect (zennas-v1, genet, tinynas, binas, nb201).
CANDIDATES = [
    "SuperConvK3BNRELU(3,8,1,1)SuperResK3K3(8,16,2,8,1)SuperResK1K3K1(16,16,1,8,1)"
    "SuperResIDWE2K3(16,16,1,8,1)SuperConvK1BNRELU(16,32,1,1)",
    "SuperConvK3BNRELU(3,16,2,1)SuperResK3K3(16,24,2,16,2)SuperConvK1BNRELU(24,48,1,1)",
    "SuperConvK3BNRELU(3,8,2,1)SuperResIDWE4K5(8,16,2,8,1)SuperResIDWE1K7(16,24,1,16,2)SuperConvK1BNRELU(24,64,1,1)",
    "ConvKX(3,8,3,2)BN(8)RELU(8)SuperResKXKX(8,16,3,2,1.0,1)ConvKX(16,32,1,1)BN(32)RELU(32)AdaptiveAvgPool(32,1)",
    "[{'class': 'ConvKXBNRELU', 'in': 3, 'out': 8, 's': 2, 'k': 3}, "
    "{'class': 'SuperResK1KXK1', 'in': 8, 'out': 16, 's': 2, 'k': 3, 'L': 1, 'btn': 8}]",
    "[['ds_r1_k3_s1_e1_c16'], ['ir_r2_k3_s2_e3_c24'], ['cn_r1_k1_s1_c64']]",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|",
    "|none~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
]
SMALL = {"resolution": 16, "batch_size": 4, "num_classes": 10, "seed": 3}
SYNCS = {"item", "__float__", "__int__", "__bool__", "tolist", "numpy", "cpu", "to"}


def _values(results: list[dict]) -> list[dict[str, tuple[float, ...]]]:
    return [{name: r.values for name, r in result.items()} for result in results]


def test_one_two_or_four_in_flight_give_bit_identical_scores():
    # zen draws on the scoring device; grad_norm builds with PyTorch's default init under a seed
    # set on the global RNG, which threads must take in turns.
    serial = [score(arch, "zen,grad_norm", device="cpu", **SMALL) for arch in CANDIDATES]
    for count in (1, 2, 4):
        results = score_many(CANDIDATES, "zen,grad_norm", in_flight=count, device="cpu", **SMALL)
        assert _values(results) == _values(serial), count
    assert len({r["zen"].values for r in serial}) == len(CANDIDATES)  # eight different networks


@pytest.fixture
def held():
    """A proxy that waits on events, so a test can order two concurrent scorings exactly."""
    events = {name: threading.Event() for name in ("a_in", "a_go", "b_in", "b_go")}
    flags: dict[str, str] = {}

    def fn(ctx):
        me = ctx.option("who")
        events[f"{me}_in"].set()
        assert events[f"{me}_go"].wait(10)
        flags[me] = torch.backends.cudnn.conv.fp32_precision
        return 1.0

    register_proxy("_held", description="test", source="test", options={"who": Option("a", ("a", "b"))})(fn)
    yield events, flags
    PROXIES.unregister("_held")


def test_strict_fp32_holds_in_a_thread_after_another_thread_has_finished(held):
    events, flags = held
    saved = torch.backends.cudnn.conv.fp32_precision
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    run = lambda who: score(CANDIDATES[1], "_held", options={"who": who}, device="cpu")  # noqa: E731
    try:
        a = threading.Thread(target=run, args=("a",))
        b = threading.Thread(target=run, args=("b",))
        a.start()
        assert events["a_in"].wait(10)
        b.start()
        assert events["b_in"].wait(10)
        events["a_go"].set()
        a.join(10)  # a leaves strict_fp32 while b is still scoring
        events["b_go"].set()
        b.join(10)
        assert flags == {"a": "ieee", "b": "ieee"}
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"  # restored once both have left
    finally:
        torch.backends.cudnn.conv.fp32_precision = saved


def test_in_flight_runs_concurrently_keeps_order_and_raises_the_first_error():
    active, peak, lock = [0], [0], threading.Lock()

    def work(i: int) -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        if i == 5:
            raise ValueError("five")
        return i * i

    with InFlight(4, "cpu") as pool:
        assert pool.map(work, range(5)) == [0, 1, 4, 9, 16]
        assert peak[0] > 1
        with pytest.raises(ValueError, match="five"):
            pool.map(work, range(8))
    with pytest.raises(ConfigError, match="in flight must be a positive integer"):
        InFlight(0)


def test_zen_score_moves_data_to_the_host_once():
    calls: list[str] = []

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            calls.append(getattr(func, "__name__", ""))
            return func(*args, **(kwargs or {}))

    for mode in ("paper", "zennas"):
        calls.clear()
        with Record():
            score(CANDIDATES[0], "zen", device="cpu", options={"mode": mode}, **SMALL)
        syncs = [name for name in calls if name in SYNCS]
        assert syncs[0] == "cpu" and syncs.count("cpu") == 1, syncs  # nothing read back before it


def test_plain_network_writes_every_parameter_and_buffer_and_skips_default_init():
    spec = parse(CANDIDATES[0])
    rng = torch.get_rng_state()
    skeleton = plain_skeleton(spec, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), rng)  # PyTorch's default init never ran
    with torch.no_grad():
        for tensor in [*skeleton.parameters(), *skeleton.buffers()]:
            tensor.fill_(7)  # whatever the memory held
    init_plain_(skeleton, torch.Generator().manual_seed(5))
    reference = plain_network(spec, torch.Generator().manual_seed(5), torch.device("cpu"))
    ours, theirs = skeleton.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    with pytest.raises(ProxyError, match=r"cannot initialise module 1 \(PReLU\).*init_plain_"):
        init_plain_(nn.Sequential(nn.Conv2d(3, 4, 3), nn.PReLU()), torch.Generator())


def test_once_makes_other_threads_wait_for_the_first_load():
    loaded: list[int] = []

    def loader() -> None:
        time.sleep(0.05)
        load()  # a re-entrant lookup while loading returns at once
        loaded.extend(range(3))

    load = Once(loader)
    seen: list[int] = []
    threads = [threading.Thread(target=lambda: (load(), seen.append(len(loaded)))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == [3, 3, 3, 3] and loaded == [0, 1, 2]


def test_search_keeps_candidates_in_flight_on_one_device_with_serial_scores():
    problem = Problem(space="zennas-res", proxy=parse_proxy("zen"), resolution=16, num_classes=10, proxy_batch_size=2)
    canonicals = [problem.parse(a).canonical for a in CANDIDATES[:3]]
    serial = make_map(problem)
    in_flight = InFlightMap(problem, 3)
    try:
        assert [s.score for s in in_flight(canonicals)] == [s.score for s in serial(canonicals)]
        assert in_flight.repeats(canonicals, 2) == serial.repeats(canonicals, 2)
    finally:
        in_flight.close()
        serial.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_in_flight_on_cuda_gives_identical_scores():
    serial = score_many(CANDIDATES, "zen", in_flight=1, device="cuda", **SMALL)
    for count in (2, 4, 8):
        assert _values(score_many(CANDIDATES, "zen", in_flight=count, device="cuda", **SMALL)) == _values(serial)
