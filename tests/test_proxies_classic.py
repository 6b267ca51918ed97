"""Classic zero-cost proxies, each checked against an independent computation on a tiny network.

Replays: a proxy draws its model and inputs from a seeded ProxyContext; a second context with the
same seed, asked for the same things in the same order, rebuilds exactly that model and batch, and
the test then recomputes the score its own way (numpy, explicit Jacobians, .backward()).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zennas.arch import parse
from zennas.arch.nb201 import is_degenerate
from zennas.errors import ConfigError
from zennas.proxies import get_proxy, list_proxies, score
from zennas.proxies.classic_common import fast_layout
from zennas.proxies.context import ProxyContext
from zennas.proxies.saliency import zico_from_grads

CLASSIC = ("naswot", "jacov", "synflow", "grad_norm", "snip", "zico", "ntk")
CELL = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|"
# Node 3 reads only `none` edges: the output ignores the input, though cell 1's convs still see it.
CUT_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ZEN = "SuperConvK3BNRELU(3,8,2,1)SuperResK1K3K1(8,16,2,8,1)SuperResK3K3(16,16,1,8,1)SuperConvK1BNRELU(16,32,1,1)"
GENET = "ConvKX(3,8,3,2)BN(8)RELU(8)SuperResK1KXK1(8,16,3,2,0.25,1)SuperResKXKX(16,16,3,1,1.0,1)ConvKX(16,32,1,1)"
BINAS = "[['ds_r1_k3_s2_e1_c8_nre_se0.25'], ['ir_r1_k3_s2_e3_c16'], ['ir_r1_k5_s1_e3_c16_se0.25'], ['cn_r1_k1_s1_c32']]"
TINYNAS = "[{'class': 'ConvKXBNRELU', 'in': 3, 'out': 8, 'k': 3, 's': 2}]"
SMALL = {"resolution": 8, "num_classes": 5, "batch_size": 4}  # NB201 at 8 x 8: stages of 8, 4, 2 pixels


def make_ctx(
    arch: str, dialect: str = "nb201", *, seed: int = 0, options: dict | None = None, **settings
) -> ProxyContext:
    """A scoring context as `score` makes one for a repeat (CPU, seeded generator)."""
    s = {**SMALL, **settings}
    generator = torch.Generator().manual_seed(seed)
    return ProxyContext(
        parse(arch, dialect), s["resolution"], s["num_classes"], s["batch_size"], torch.device("cpu"), generator,
        dict(options or {}), s.get("data"),
    )  # fmt: skip


def run(name: str, arch: str, dialect: str = "nb201", **kw) -> float:
    """The proxy's own value on a fresh context."""
    return float(get_proxy(name).fn(make_ctx(arch, dialect, **kw)))


def conv_linear(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


# --- registry -----------------------------------------------------------------------------------------


def test_registered_with_published_direction_and_batch():
    assert set(CLASSIC) <= set(list_proxies())
    batches = {"naswot": 128, "jacov": 64, "synflow": 1, "grad_norm": 64, "snip": 64, "zico": 64, "ntk": 32}
    for name in CLASSIC:
        proxy = get_proxy(name)
        assert proxy.batch_size == batches[name]
        assert proxy.higher_is_better is (name != "ntk")
        assert proxy.description and proxy.source


# --- NASWOT -------------------------------------------------------------------------------------------


def relu_codes(model: nn.Module, images: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """Binary codes [B, N_A] of every ReLU call, captured by patching torch.relu / torch.relu_ themselves.

    nn.ReLU goes through F.relu -> torch.relu(_), and ResidualUnit calls torch.relu directly, so this
    sees every ReLU without knowing where the network keeps them.
    """
    codes: list[np.ndarray] = []
    relu, relu_ = torch.relu, torch.relu_

    def record(x: torch.Tensor) -> None:
        codes.append((x > 0).reshape(x.shape[0], -1).numpy().astype(np.int64))

    monkeypatch.setattr(torch, "relu", lambda x: (record(x), relu(x))[1])
    monkeypatch.setattr(torch, "relu_", lambda x: (record(x), relu_(x))[1])
    with torch.no_grad():
        model(images)
    monkeypatch.undo()
    return np.concatenate(codes, axis=1)


def naswot_numpy(codes: np.ndarray) -> float:
    """ln|det K_H| with K_H = N_A - Hamming, distances counted pair by pair."""
    b, n_a = codes.shape
    hamming = np.array([[np.count_nonzero(codes[i] != codes[j]) for j in range(b)] for i in range(b)])
    return float(np.linalg.slogdet((n_a - hamming).astype(np.float64))[1])


@pytest.mark.parametrize(
    ("arch", "dialect", "resolution"), [(CELL, "nb201", 8), (ZEN, "zennas-v1", 16), (GENET, "genet", 16)]
)
def test_naswot_matches_explicit_hamming_kernel(arch, dialect, resolution, monkeypatch):
    options = {"variant": "standard"}
    ctx = make_ctx(arch, dialect, options=options, resolution=resolution, batch_size=6)
    value = get_proxy("naswot").fn(ctx)
    replay = make_ctx(arch, dialect, options=options, resolution=resolution, batch_size=6)
    model = replay.build().train()
    # Same memory layout as the proxy, so both see bit-identical pre-activations (codes are discrete).
    model, images = fast_layout(model, replay.images(), replay)
    codes = relu_codes(model, images, monkeypatch)
    assert ctx.meta["relu_units"] == codes.shape[1]
    assert value == pytest.approx(naswot_numpy(codes), rel=1e-9)


def test_naswot_zennas_variant_uses_normal_init_and_batch_8():
    result = score(CELL, "naswot", resolution=8, dialect="nb201", options={"variant": "zennas"})["naswot"]
    assert result.meta["batch_size"] == 8 and result.meta["init"] == "normal"
    assert result.meta["input"] == "gaussian N(0,1)" and math.isfinite(result.mean)
    explicit = score(CELL, "naswot", resolution=8, batch_size=5, dialect="nb201", options={"variant": "zennas"})
    assert explicit["naswot"].meta["batch_size"] == 5


# --- jacov --------------------------------------------------------------------------------------------


def test_jacov_matches_eigen_formula_on_explicit_jacobian():
    value = run("jacov", CELL, batch_size=5)
    replay = make_ctx(CELL, batch_size=5)
    model = replay.build().train()
    images = replay.images()
    full = torch.autograd.functional.jacobian(model, images)  # [B, K, B, 3, R, R]
    jac = full.sum(dim=(0, 1)).reshape(5, -1).double().numpy()  # d(sum of all outputs)/dx_i
    eigenvalues = np.linalg.eigvalsh(np.corrcoef(jac))
    expected = -np.sum(np.log(eigenvalues + 1e-5) + 1.0 / (eigenvalues + 1e-5))
    assert value == pytest.approx(expected, rel=1e-4)


# --- SynFlow ------------------------------------------------------------------------------------------


def test_synflow_matches_replay_is_positive_and_conserves_flow():
    value = run("synflow", CELL, options={"sign": "standard"})
    replay = make_ctx(CELL)
    model = replay.build(bn=False).double()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    for p in model.parameters():
        p.data = p.data.abs()
    total = model(torch.ones(1, 3, 8, 8, dtype=torch.float64)).sum()
    total.backward()
    layers = conv_linear(model)
    saliency = [float((m.weight.detach() * m.weight.grad).abs().sum()) for m in layers]
    assert value > 0
    assert value == pytest.approx(sum(saliency), rel=1e-10)
    # Every input-output path crosses the stem and the classifier weight once, and the positive net is
    # homogeneous in each: both carry the whole flow, R minus the classifier bias.
    flow = float(total.detach()) - float(model.head.fc.bias.detach().sum())
    assert saliency[0] == pytest.approx(flow, rel=1e-9)
    assert saliency[-1] == pytest.approx(flow, rel=1e-9)


def test_synflow_zennas_sign_is_negative_per_channel_mean():
    value = run("synflow", CELL, options={"sign": "zennas"})
    replay = make_ctx(CELL)
    model = replay.build(init="normal")
    for t in model.state_dict().values():
        t.abs_()
    model.double().train()
    model(torch.ones(1, 3, 8, 8, dtype=torch.float64)).sum().backward()
    expected = 0.0
    for m in conv_linear(model):
        s = (m.weight.detach() * m.weight.grad).abs()
        expected += float(s.sum(dim=tuple(range(1, s.dim()))).mean())
    assert value < 0
    assert value == pytest.approx(-expected, rel=1e-10)


# --- GradNorm and SNIP --------------------------------------------------------------------------------


def _replay_loss_grads(init: str = "default") -> tuple[nn.Module, ProxyContext]:
    replay = make_ctx(CELL, options={"variant": "zennas" if init == "normal" else "standard"})
    model = replay.build(init=init).train()
    if init == "normal":
        images = replay.gaussian(4, 3, 8, 8)
        labels = torch.randint(0, 5, (4,), generator=replay.generator)
    else:
        images, labels = replay.images(), replay.labels()
    F.cross_entropy(model(images), labels).backward()
    return model, replay


def test_snip_and_grad_norm_match_backward():
    model, _ = _replay_loss_grads()
    layers = conv_linear(model)
    snip = sum(float((m.weight.detach() * m.weight.grad).abs().sum()) for m in layers)
    norm = sum(float(m.weight.grad.norm()) for m in layers)
    assert run("snip", CELL) == pytest.approx(snip, rel=1e-4)
    assert run("grad_norm", CELL, options={"variant": "standard"}) == pytest.approx(norm, rel=1e-4)


def test_grad_norm_zennas_is_one_global_norm():
    model, _ = _replay_loss_grads(init="normal")
    expected = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters()))
    assert run("grad_norm", CELL, options={"variant": "zennas"}) == pytest.approx(expected, rel=1e-4)


def test_real_batch_is_used():
    generator = torch.Generator().manual_seed(5)
    data = (torch.rand(8, 3, 8, 8, generator=generator), torch.randint(0, 5, (8,), generator=generator))
    with_data = score(CELL, "snip", dialect="nb201", data=data, **SMALL)["snip"]
    without = score(CELL, "snip", dialect="nb201", **SMALL)["snip"]
    assert with_data.meta["input"] == "real images" and with_data.meta["labels"] == "real"
    assert with_data.mean != without.mean


# --- ZiCo ---------------------------------------------------------------------------------------------


def test_zico_matches_formula_on_two_explicit_gradient_draws():
    options = {"batches": 2}
    value = run("zico", CELL, options=options)
    replay = make_ctx(CELL, options=options)
    model = replay.build().train()
    images, labels = replay.images(8), replay.labels(8)
    model, images = fast_layout(model, images, replay)  # bit-identical gradients: std ~ |g1 - g2| is touchy
    draws = []
    for half in (slice(0, 4), slice(4, 8)):
        model.zero_grad()
        F.cross_entropy(model(images[half]), labels[half]).backward()
        draws.append([m.weight.grad.double().numpy().ravel().copy() for m in conv_linear(model)])
    expected = 0.0
    for g1, g2 in zip(*draws, strict=True):
        g = np.stack([g1, g2])
        std, mean_abs = np.std(g, axis=0), np.mean(np.abs(g), axis=0)
        z = np.sum(mean_abs[std != 0] / std[std != 0])
        if z > 0:
            expected += math.log(z)
    assert value == pytest.approx(expected, rel=1e-9)


def test_zico_skips_layers_without_variation():
    varying = [torch.tensor([1.0, 2.0]), torch.tensor([3.0])]
    constant = [torch.tensor([1.0, 5.0]), torch.tensor([3.0])]  # layer 2 never varies: skipped
    # layer 1: weight 0 varies (mean 1, std 0) -> skipped; weight 1: mean|g| 3.5, std 1.5
    assert zico_from_grads([varying, constant]) == pytest.approx(math.log(3.5 / 1.5))


def test_zico_option_and_data_errors():
    with pytest.raises(ConfigError, match="batches >= 2"):
        score(CELL, "zico", dialect="nb201", options={"batches": 1}, **SMALL)
    data = (torch.zeros(6, 3, 8, 8), torch.zeros(6, dtype=torch.long))
    with pytest.raises(ConfigError, match="8 images"):
        score(CELL, "zico", dialect="nb201", data=data, **SMALL)


# --- NTK ----------------------------------------------------------------------------------------------


def test_ntk_matches_per_sample_backward_loop():
    value = run("ntk", CELL)
    replay = make_ctx(CELL)
    model = replay.build().train()
    model, images = fast_layout(model, replay.images(), replay)  # same rounding: BN gamma terms are small
    logits = model(images)
    rows = []
    for i in range(4):  # TE-NAS: backward of sample i's logits through the shared batch graph
        model.zero_grad()
        logits[i : i + 1].backward(torch.ones_like(logits[i : i + 1]), retain_graph=True)
        rows.append(torch.cat([p.grad.reshape(-1) for n, p in model.named_parameters() if "weight" in n]))
    jac = torch.stack(rows).double().numpy()
    eigenvalues = np.linalg.eigvalsh(jac @ jac.T)
    assert value >= 1.0
    assert value == pytest.approx(eigenvalues[-1] / eigenvalues[0], rel=1e-7)


# --- shared contract ----------------------------------------------------------------------------------


def test_deterministic_per_seed_seeds_differ_global_rng_untouched_bn_mode_recorded():
    state = torch.get_rng_state()
    first = score(CELL, list(CLASSIC), dialect="nb201", seed=3, **SMALL)
    assert torch.equal(state, torch.get_rng_state())
    again = score(CELL, list(CLASSIC), dialect="nb201", seed=3, **SMALL)
    other = score(CELL, list(CLASSIC), dialect="nb201", seed=4, **SMALL)
    for name in CLASSIC:
        assert first[name].values == again[name].values
        assert first[name].values != other[name].values, name
        expected = "none (built without BatchNorm)" if name == "synflow" else "train (batch statistics)"
        assert first[name].meta["bn_mode"] == expected


def test_degenerate_cells_are_flagged_where_the_proxy_is_undefined():
    assert is_degenerate(parse(CUT_CELL, "nb201")) and is_degenerate(parse(ALL_NONE, "nb201"))
    cut = score(CUT_CELL, ["jacov", "ntk", "naswot", "synflow"], dialect="nb201", **SMALL)
    assert cut["jacov"].degenerate and cut["ntk"].degenerate
    assert cut["jacov"].mean is None and "input" in cut["jacov"].meta["reason"]
    # NASWOT stays defined while cell 1's ReLUs still tell inputs apart; SynFlow has a constant input.
    assert not cut["naswot"].degenerate and not cut["synflow"].degenerate
    empty = score(ALL_NONE, ["naswot", "zico"], dialect="nb201", **SMALL)
    assert empty["naswot"].degenerate and empty["zico"].degenerate


@pytest.mark.parametrize("name", ["grad_norm", "snip", "zico"])
def test_cross_entropy_proxies_need_a_classifier(name):
    with pytest.raises(ConfigError, match="num_classes > 0"):
        score(TINYNAS, name, dialect="tinynas", resolution=16, batch_size=4)


@pytest.mark.parametrize(("arch", "dialect"), [(ZEN, "zennas-v1"), (GENET, "genet"), (BINAS, "binas")])
def test_every_family_scores(arch, dialect):
    results = score(arch, list(CLASSIC), dialect=dialect, resolution=16, num_classes=5, batch_size=4)
    assert all(math.isfinite(r.mean) and not r.degenerate for r in results.values())


def test_backbones_score_without_cross_entropy():
    results = score(TINYNAS, ["naswot", "jacov", "synflow", "ntk"], dialect="tinynas", resolution=16, batch_size=4)
    assert all(math.isfinite(r.mean) for r in results.values())


def test_no_hooks_left_behind(monkeypatch):
    built: list[nn.Module] = []
    original = ProxyContext.build

    def build(self, **kw):
        model = original(self, **kw)
        built.append(model)
        return model

    monkeypatch.setattr(ProxyContext, "build", build)
    global_hooks = (dict(nn.modules.module._global_forward_hooks), dict(nn.modules.module._global_forward_pre_hooks))
    score(ZEN, "naswot", dialect="zennas-v1", resolution=16, num_classes=5, batch_size=4)
    score(CELL, "naswot", dialect="nb201", **SMALL)
    assert len(built) == 2
    for model in built:
        for module in model.modules():
            assert not module._forward_hooks and not module._forward_pre_hooks
    assert global_hooks == (
        dict(nn.modules.module._global_forward_hooks),
        dict(nn.modules.module._global_forward_pre_hooks),
    )
