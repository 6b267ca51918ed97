"""ONNX export, the onnxruntime-vs-PyTorch check, BN folding, safetensors weights and `zennas export`.

Exports run the dynamo exporter, which costs seconds per network on a CPU, so the tests use tiny
networks, one MAE-DET space member and a few zoo models; every zoo model (at its own resolution) and
the multi-output detection backbones are checked by benchmarks/bench_export_zoo.py, whose figures
are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import sys

import onnx
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file
from torch import nn

import cli
import zennas
from zennas.errors import ConfigError, DependencyError, ExportError
from zennas.export import check_onnx, export_onnx, fuse_bn, load_safetensors, output_names_for, randomize_bn_
from zennas.spaces import get_space

ZEN_TINY = "SuperConvK3BNRELU(3,8,2,1)SuperResK3K3(8,16,2,8,1)SuperConvK1BNRELU(16,32,1,1)"
# A TinyNAS backbone reaching strides 4..32 (C2..C5); the stem's p=0 makes its forward untraceable by fx.
TINY_DET = (
    "[{'class': 'ConvKXBNRELU', 'in': 3, 'out': 8, 's': 2, 'k': 3, 'p': 0}, "
    "{'class': 'SuperResK1KXK1', 'in': 8, 'out': 16, 's': 2, 'k': 3, 'L': 1, 'btn': 8}, "
    "{'class': 'SuperResK1KXK1', 'in': 16, 'out': 24, 's': 2, 'k': 3, 'L': 1, 'btn': 8}, "
    "{'class': 'SuperResK1KXK1', 'in': 24, 'out': 32, 's': 2, 'k': 3, 'L': 1, 'btn': 8}, "
    "{'class': 'SuperResK1KXK1', 'in': 32, 'out': 40, 's': 2, 'k': 3, 'L': 1, 'btn': 8}]"
)
SHAPE = (1, 3, 32, 32)


def seeded(factory, *args, seed: int = 0, **kwargs):
    """factory(*args, **kwargs) with torch's init drawn under `seed`; the global RNG state is restored."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(*args, **kwargs)


def build(arch, *, seed: int = 0, **options) -> nn.Module:
    """create_model under a fixed seed, without touching the global RNG."""
    return seeded(zennas.create_model, arch, seed=seed, **options)


def bn_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |a - e| / max |e|, the definition check_onnx uses."""
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """A tiny ZenNAS network (left in train mode) exported once with a static batch of 1."""
    model = randomize_bn_(build(ZEN_TINY, num_classes=10)).train()
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    info = export_onnx(model, path, input_shape=SHAPE, output_names=output_names_for(model), name="tiny")
    return model, info, path


# ---- export_onnx -------------------------------------------------------------------------------------


def test_export_writes_a_checked_file_and_describes_it(tiny_export):
    model, info, path = tiny_export
    onnx.checker.check_model(str(path), full_check=True)
    assert (info.path, info.exporter, info.opset, info.notes) == (str(path), "dynamo", 18, ())
    assert (info.input_names, info.input_shapes) == (("input",), ((1, 3, 32, 32),))
    assert (info.output_names, info.output_shapes) == (("logits",), ((1, 10),))
    assert (info.dynamic_batch, info.example_batch_size) == (False, 1)
    assert any(o.domain in ("", "ai.onnx") and o.version == 18 for o in onnx.load(str(path)).opset_import)
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.onnx"]  # the temporary file was moved, not left
    plain = path.parent / "plain"
    plain.write_bytes(b"")
    assert path.stat().st_mode == plain.stat().st_mode  # the umask's mode, as for any file written directly
    plain.unlink()
    assert model.training  # exported in eval mode, the caller's mode restored
    assert json.loads(json.dumps(info.to_json()))["output_shapes"] == [[1, 10]]


def test_check_matches_pytorch_and_defines_relative_error(tiny_export):
    model, _, path = tiny_export
    report = check_onnx(path, model, input_shape=SHAPE)
    assert report.passed and report.batch_sizes == (1,) and len(report.outputs) == 1
    out = report.outputs[0]
    assert (out.name, out.batch_size, out.shape) == ("logits", 1, (1, 10))
    assert out.max_rel_error <= 1e-4
    assert check_onnx(path, model, input_shape=SHAPE) == report  # seeded: the same input every time
    assert model.training

    # A model whose logits are shifted by exactly 0.01: abs error 0.01, relative to the largest |logit|.
    shifted = build(ZEN_TINY, num_classes=10)
    shifted.load_state_dict(model.state_dict())
    with torch.no_grad():
        shifted.head.fc.bias += 0.01
    bad = check_onnx(path, shifted, input_shape=SHAPE)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        reference = shifted.eval()(torch.randn(SHAPE, generator=generator))
    assert not bad.passed
    assert bad.outputs[0].max_abs_error == pytest.approx(0.01, rel=1e-3)
    assert bad.max_rel_error == pytest.approx(0.01 / reference.abs().max().item(), rel=1e-3)
    assert json.loads(json.dumps(bad.to_json()))["passed"] is False


class Twice(nn.Module):
    """The wrapped module's output, twice."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        y = self.inner(x)
        return y, y


def test_check_errors_are_explained(tiny_export, tmp_path):
    model, _, path = tiny_export
    with pytest.raises(ConfigError, match="fixed batch of 1; export with dynamic_batch"):
        check_onnx(path, model, input_shape=SHAPE, batch_sizes=[2])
    with pytest.raises(ConfigError, match="batch_sizes must be positive integers"):
        check_onnx(path, model, input_shape=SHAPE, batch_sizes=[0])
    with pytest.raises(ConfigError, match="not found; export it first"):
        check_onnx(tmp_path / "none.onnx", model, input_shape=SHAPE)
    with pytest.raises(
        ExportError, match=r"output 'logits' of .* has shape \(1, 10\) at batch 1, PyTorch gives \(1, 5\)"
    ):
        check_onnx(path, build(ZEN_TINY, num_classes=5), input_shape=SHAPE)
    with pytest.raises(ExportError, match="has 1 outputs but the module returns 2"):
        check_onnx(path, Twice(model), input_shape=SHAPE)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ExportError, match="onnxruntime cannot load"):
        check_onnx(junk, model, input_shape=SHAPE)


def test_check_without_onnxruntime_names_the_pip_command(tiny_export, monkeypatch):
    model, _, path = tiny_export
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(DependencyError, match=r"needs onnxruntime; install it with `pip install onnxruntime`"):
        check_onnx(path, model, input_shape=SHAPE)


def test_dynamic_batch_any_module_at_two_batch_sizes(tmp_path):
    block = randomize_bn_(seeded(nn.Sequential, nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU()))
    path = tmp_path / "block.onnx"
    info = export_onnx(block, path, input_shape=(1, 3, 16, 16), dynamic_batch=True)
    assert info.example_batch_size == 2 and "traced with batch 2" in info.notes[0]
    assert info.input_shapes == (("batch", 3, 16, 16),)
    assert (info.output_names, info.output_shapes) == (("output",), (("batch", 8, 8, 8),))
    report = check_onnx(path, block, input_shape=(1, 3, 16, 16))
    assert report.passed and report.batch_sizes == (1, 3)
    assert [o.shape for o in report.outputs] == [(1, 8, 8, 8), (3, 8, 8, 8)]
    assert check_onnx(path, block, input_shape=(1, 3, 16, 16), batch_sizes=[2, 5]).passed


def test_multi_scale_maedet_member_exports_c2_to_c5(tmp_path):
    space = get_space("maedet")
    spec = space.initial()[0]
    assert space.contains(spec)
    model = randomize_bn_(build(spec, num_classes=0, multi_scale=True))
    names = output_names_for(model)
    assert names == ("c2", "c3", "c4", "c5")
    path = tmp_path / "maedet.onnx"
    info = export_onnx(model, path, input_shape=(1, 3, 64, 64), output_names=names)
    assert info.output_names == names
    assert info.output_shapes == ((1, 256, 16, 16), (1, 512, 8, 8), (1, 1024, 4, 4), (1, 2048, 2, 2))
    report = check_onnx(path, model, input_shape=(1, 3, 64, 64))
    assert report.passed, report
    assert [o.name for o in report.outputs] == list(names)


def test_output_names_of_networks():
    assert output_names_for(build(ZEN_TINY, num_classes=10)) == ("logits",)
    assert output_names_for(build(TINY_DET)) == ("features",)  # TinyNAS: backbone by default
    assert output_names_for(build(TINY_DET, multi_scale=True)) == ("c2", "c3", "c4", "c5")
    cell = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|none~1|none~2|"
    assert output_names_for(build(cell, multi_scale=True)) == ("c2",)  # NB201 reaches strides 1, 2, 4 only
    assert output_names_for(nn.Conv2d(3, 3, 1)) is None


def test_zoo_model_exports_and_matches(tmp_path):
    # Every zoo model at its own resolution: benchmarks/bench_export_zoo.py.
    model = randomize_bn_(build("genet-light"))
    path = tmp_path / "genet.onnx"
    info = export_onnx(model, path, input_shape=SHAPE, output_names=output_names_for(model), name="genet-light")
    assert info.exporter == "dynamo" and info.output_shapes == ((1, 1000),)
    assert check_onnx(path, model, input_shape=SHAPE).passed


class Branchy(nn.Module):
    """Python control flow on a tensor value: torch.export refuses it, TorchScript traces the taken branch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        if y.abs().sum() >= 0:  # always true, but data-dependent
            y = y * 2
        return y, y.mean((2, 3))


def test_dynamo_failure_falls_back_to_torchscript_and_says_so(tmp_path):
    model = seeded(Branchy)
    path = tmp_path / "branchy.onnx"
    info = export_onnx(model, path, input_shape=(1, 3, 8, 8))
    assert info.exporter == "torchscript"
    assert "dynamo exporter failed" in info.notes[0] and "used the TorchScript exporter" in info.notes[0]
    assert info.output_names == ("output0", "output1")
    assert info.output_shapes == ((1, 4, 8, 8), (1, 4))
    assert check_onnx(path, model, input_shape=(1, 3, 8, 8)).passed


class Kth(nn.Module):
    def forward(self, x):
        return torch.kthvalue(x, 2, dim=-1)[0]


def test_both_exporters_failing_is_one_export_error(tmp_path):
    with pytest.raises(
        ExportError, match=r"cannot export Kth to .*: dynamo exporter: .*; TorchScript exporter: .*kthvalue"
    ):
        export_onnx(Kth(), tmp_path / "kth.onnx", input_shape=(1, 3, 4, 4))
    assert list(tmp_path.iterdir()) == []


def test_checker_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "old.onnx"
    path.write_text("previous export")

    def reject(model, full_check=False):
        raise onnx.checker.ValidationError("node 3 is broken")

    monkeypatch.setattr(onnx.checker, "check_model", reject)
    with pytest.raises(ExportError, match=r"exported from blk to '.*old.onnx' fails onnx.checker .*node 3 is broken"):
        export_onnx(nn.Conv2d(3, 4, 1), path, input_shape=(1, 3, 4, 4), name="blk")
    assert path.read_text() == "previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["old.onnx"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"opset": 17}, ConfigError, "opset must be an integer from 18 to"),
        ({"opset": 99}, ConfigError, "opset must be an integer from 18 to"),
        ({"opset": "18"}, ConfigError, "opset must be an integer from 18 to"),
        ({"input_shape": (0, 3, 8, 8)}, ConfigError, r"input_shape must be positive integers, batch first"),
        ({"output_names": ["a", "b"]}, ConfigError, r"1 distinct output names \(not 'input'\) are needed"),
        ({"output_names": ["input"]}, ConfigError, r"1 distinct output names \(not 'input'\) are needed"),
    ],
)
def test_export_input_errors(tmp_path, kwargs, error, message):
    options = {"input_shape": (1, 3, 8, 8), **kwargs}
    with pytest.raises(error, match=message):
        export_onnx(nn.Conv2d(3, 4, 1), tmp_path / "x.onnx", **options)


def test_export_path_and_output_type_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"folder .* does not exist; create it first"):
        export_onnx(nn.Conv2d(3, 4, 1), tmp_path / "no" / "x.onnx", input_shape=(1, 3, 8, 8))

    class Dict(nn.Module):
        def forward(self, x):
            return {"y": x}

    with pytest.raises(ExportError, match="must return a tensor or a list/tuple of tensors to be exported, got dict"):
        export_onnx(Dict(), tmp_path / "x.onnx", input_shape=(1, 3, 8, 8))
    with pytest.raises(ExportError, match=r"fails on an input of shape \(1, 3, 2, 2\) .*; check the input shape"):
        export_onnx(nn.Conv2d(3, 4, 5), tmp_path / "x.onnx", input_shape=(1, 3, 2, 2))
    with pytest.raises(ConfigError, match="needs an input side of at least 3"):  # zennas errors pass through
        export_onnx(build(TINY_DET), tmp_path / "x.onnx", input_shape=(1, 3, 2, 2))
    assert list(tmp_path.iterdir()) == []


# ---- fuse_bn ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["genet-light", "zennet-400m-se", "zennet-cifar10-0.5m"])
def test_fuse_bn_removes_every_bn_of_zoo_models_and_keeps_outputs(name):
    # GENet's BN is a block of its own after a conv block; ZenNet-SE has BNs inside the SE gates.
    model = randomize_bn_(build(name)).eval()
    fused = fuse_bn(model)
    assert bn_count(model) > 0 and bn_count(fused) == 0
    assert not fused.training and model is not fused
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert rel_error(fused(x), model(x)) <= 1e-5


def test_fuse_bn_falls_back_to_sequentials_where_fx_cannot_trace():
    model = randomize_bn_(build(TINY_DET, multi_scale=True)).eval()
    with pytest.raises(torch.fx.proxy.TraceError):  # ConvKXBNAct checks the input side in Python
        torch.fx.symbolic_trace(model)
    fused = fuse_bn(model)
    assert bn_count(model) > 0 and bn_count(fused) == 0
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for a, b in zip(fused(x), model(x), strict=True):
            assert rel_error(a, b) <= 1e-5


class NotFusable(nn.Module):
    """BN after an activation, and a conv whose output also feeds the residual: neither may be folded."""

    def __init__(self):
        super().__init__()
        self.pre = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4))
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.last = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))

    def forward(self, x):
        y = self.conv(self.pre(x))
        return self.last(self.bn(y) + y)


def test_fuse_bn_only_folds_a_bn_that_is_a_conv_output_s_sole_consumer():
    model = randomize_bn_(seeded(NotFusable)).eval()
    fused = fuse_bn(model)
    assert isinstance(fused.pre[2], nn.BatchNorm2d) and isinstance(fused.bn, nn.BatchNorm2d)
    assert isinstance(fused.last[1], nn.Identity) and fused.last[0].bias is not None
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert rel_error(fused(x), model(x)) <= 1e-5


# ---- safetensors --------------------------------------------------------------------------------------


def test_safetensors_round_trip(tmp_path):
    source = randomize_bn_(build(ZEN_TINY, num_classes=10, seed=1)).eval()
    path = tmp_path / "w.safetensors"
    save_file(source.state_dict(), path)
    target = build(ZEN_TINY, num_classes=10, seed=2).eval()
    assert load_safetensors(target, path) is target
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(target(x), source(x))


def test_safetensors_errors(tmp_path):
    model = build(ZEN_TINY, num_classes=10)
    pt = tmp_path / "w.pt"
    torch.save(model.state_dict(), pt)
    with pytest.raises(ConfigError, match=r"weights load only from \.safetensors files \(no pickle\)") as info:
        load_safetensors(model, pt)
    assert "safetensors.torch.save_file(model.state_dict(), 'w.safetensors')" in str(info.value)
    with pytest.raises(ConfigError, match=r"weights file '.*nothing.safetensors' not found"):
        load_safetensors(model, tmp_path / "nothing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 16)
    with pytest.raises(ConfigError, match="cannot read weights file"):
        load_safetensors(model, junk)

    other = tmp_path / "other.safetensors"
    state = build(ZEN_TINY, num_classes=5).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["blocks.0.layers.0.weight"]
    save_file(state, other)
    with pytest.raises(ConfigError, match="do not fit this model") as info:
        load_safetensors(model, other)
    message = str(info.value)
    assert "1 missing: blocks.0.layers.0.weight" in message and "1 unexpected: extra.weight" in message
    assert "2 shape mismatch (file vs model): head.fc.weight (5, 32) vs (10, 32), head.fc.bias (5,) vs (10,)" in message


# ---- CLI ----------------------------------------------------------------------------------------------


def test_cli_help():
    result = CliRunner().invoke(cli.main, ["export", "--help"])
    assert result.exit_code == 0
    for option in ("--onnx", "--dynamic-batch", "--opset", "--weights", "--fuse-bn", "--check", "--multi-scale"):
        assert option in result.output


def test_cli_end_to_end_json(tmp_path):
    weights = tmp_path / "w.safetensors"
    save_file(randomize_bn_(build(ZEN_TINY, num_classes=10, seed=3)).state_dict(), weights)
    out = tmp_path / "tiny.onnx"
    args = ["export", ZEN_TINY, "--onnx", str(out), "-r", "32", "--num-classes", "10", "--weights", str(weights)]
    result = CliRunner().invoke(cli.main, [*args, "--fuse-bn", "--dynamic-batch", "--check", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["export"]["exporter"] == "dynamo" and data["export"]["path"] == str(out)
    assert data["export"]["input_shapes"] == [["batch", 3, 32, 32]]
    assert data["export"]["output_names"] == ["logits"] and data["export"]["output_shapes"] == [["batch", 10]]
    assert data["batchnorm"] == {"before": 5, "after": 0}
    assert data["check"]["passed"] and data["check"]["batch_sizes"] == [1, 3]
    assert data["check"]["max_rel_error"] <= 1e-4
    assert out.is_file()


def test_cli_text_output_and_failed_check_exit_code(tmp_path, monkeypatch):
    import zennas.export

    strict = zennas.export.check_onnx
    monkeypatch.setattr(zennas.export, "check_onnx", lambda *a, **k: strict(*a, **k, rel_tolerance=-1.0))
    out = tmp_path / "det.onnx"
    result = CliRunner().invoke(
        cli.main, ["export", TINY_DET, "--onnx", str(out), "-r", "64", "--multi-scale", "--check"]
    )
    lines = result.output.splitlines()
    assert result.exit_code == 1, result.output
    assert lines[0].startswith(f"wrote {out} (architecture ") and "exporter dynamo, opset 18" in lines[0]
    assert "  input  input    [1, 3, 64, 64]" in lines
    assert "  output c2       [1, 16, 16, 16]" in lines and "  output c5       [1, 40, 2, 2]" in lines
    assert lines[-1].startswith("FAIL: max relative error") and "(tolerance -1)" in lines[-1]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--opset", "17"], "opset must be an integer from 18 to"),
        (["--weights", "missing.safetensors"], "weights file 'missing.safetensors' not found"),
        (["--weights", "w.pth"], "weights load only from .safetensors files"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, extra, message):
    result = CliRunner().invoke(cli.main, ["export", ZEN_TINY, "--onnx", str(tmp_path / "x.onnx"), *extra])
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_cli_unknown_arch_is_one_line(tmp_path):
    result = CliRunner().invoke(cli.main, ["export", "resnet-9000", "--onnx", str(tmp_path / "x.onnx")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "neither a registered model nor an architecture string" in result.output
