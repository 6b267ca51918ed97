"""ONNX export of any torch module, its numeric check against PyTorch, BN folding and safetensors weights.

Conventions (REFERENCE.md 8): the torch.export-based ("dynamo") exporter by default, opset >= 18,
a named dynamic batch dimension on dim 0 when asked, `onnx.checker.check_model(full_check=True)`
on every written file, and an onnxruntime CPU check in strict FP32. Nothing here prints.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import re
import secrets
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zennas.blocks.network import Network
from zennas.device import strict_fp32
from zennas.errors import ConfigError, DependencyError, ExportError, OutputError, ZennasError
from zennas.io import writable_file

EXPORTERS = ("auto", "dynamo", "torchscript")
MIN_OPSET = 18  # the dynamo exporter's op library targets 18 and only converts down where it can
REL_TOLERANCE = 1e-4  # max |ort - torch| / max |torch|, per output (FP32 on the CPU)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the exporters colour their messages
_PROTOBUF_LIMIT = 2**31 - 2**20  # a ModelProto must stay below 2 GiB; keep a margin for the graph itself

Shape = tuple[int | str | None, ...]  # ONNX dims: a size, a symbolic name ("batch") or unknown


@dataclass(frozen=True)
class ExportInfo:
    """What `export_onnx` wrote: file, exporter actually used, names and ONNX shapes of inputs/outputs."""

    path: str
    opset: int
    exporter: str  # "dynamo" (torch.export-based) or "torchscript" (legacy fallback)
    input_names: tuple[str, ...]
    input_shapes: tuple[Shape, ...]
    output_names: tuple[str, ...]
    output_shapes: tuple[Shape, ...]
    dynamic_batch: bool
    example_batch_size: int  # the batch the model was traced with
    notes: tuple[str, ...] = ()  # fallbacks and adjustments, in words

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (shapes as lists)."""
        out = asdict(self)
        out["input_shapes"] = [list(s) for s in self.input_shapes]
        out["output_shapes"] = [list(s) for s in self.output_shapes]
        out["input_names"], out["output_names"], out["notes"] = (
            list(self.input_names),
            list(self.output_names),
            list(self.notes),
        )
        return out


@dataclass(frozen=True)
class OutputCheck:
    """One output at one batch size: onnxruntime vs PyTorch."""

    name: str
    batch_size: int
    shape: tuple[int, ...]
    max_abs_error: float  # max |ort - torch|
    max_rel_error: float  # max |ort - torch| / max |torch| (see check_onnx)


@dataclass(frozen=True)
class CheckReport:
    """Per-output errors of an ONNX file against its PyTorch module; `passed` against `rel_tolerance`."""

    path: str
    seed: int
    rel_tolerance: float
    batch_sizes: tuple[int, ...]
    outputs: tuple[OutputCheck, ...]

    @property
    def max_rel_error(self) -> float:
        """The largest relative error over all outputs and batch sizes (nan if any output was not finite)."""
        values = [o.max_rel_error for o in self.outputs]
        return math.nan if any(math.isnan(v) for v in values) else max(values)

    @property
    def passed(self) -> bool:
        """True when every output's relative error is within the tolerance (nan never passes)."""
        return all(o.max_rel_error <= self.rel_tolerance for o in self.outputs)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite errors as strings, which JSON cannot hold as numbers)."""

        def number(value: float) -> float | str:
            return value if math.isfinite(value) else str(value)

        return {
            "path": self.path,
            "seed": self.seed,
            "rel_tolerance": self.rel_tolerance,
            "batch_sizes": list(self.batch_sizes),
            "passed": self.passed,
            "max_rel_error": number(self.max_rel_error),
            "outputs": [
                {**asdict(o), "shape": list(o.shape), "max_abs_error": number(o.max_abs_error),
                 "max_rel_error": number(o.max_rel_error)}
                for o in self.outputs
            ],
        }  # fmt: skip


def output_names_for(model: nn.Module) -> tuple[str, ...] | None:
    """Output names of a zennas Network: c2..c5 (strides 4..32) when multi-scale, else logits or features."""
    if not isinstance(model, Network):
        return None
    if model.multi_scale:
        return tuple(f"c{stride.bit_length() - 1}" for stride in model.feature_strides)  # 4 -> c2 ... 32 -> c5
    return ("features",) if model.head is None else ("logits",)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the block; the caller's train/eval flags of every submodule are restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def _placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first parameter (CPU, float32 for parameter-free modules)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def _check_opset(opset: int) -> None:
    import onnx

    highest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= highest:
        raise ConfigError(
            f"opset must be an integer from {MIN_OPSET} to {highest} (the installed onnx's newest), got {opset!r}; "
            f"use 18 for TensorRT 10 and onnxruntime 1.2x"
        )


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ConfigError(f"input_shape must be positive integers, batch first (B, C, H, W), got {input_shape!r}")
    return shape


def _flat_outputs(out: object, what: str) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, list | tuple) and out and all(isinstance(t, torch.Tensor) for t in out):
        return list(out)
    raise ExportError(
        f"{what} must return a tensor or a list/tuple of tensors to be exported, got {type(out).__name__}"
    )


def _dims(value_info: Any) -> Shape:
    dims: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in _ANSI.sub("", str(error)).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:240] if lines else 'no message'}"


def _reason(error: BaseException) -> str:
    """First line of an exporter's (often pages-long) error, plus that of its root cause."""
    root = error
    while (root.__cause__ or root.__context__) is not None:
        root = root.__cause__ or root.__context__
    if root is error:
        return _first_line(error)
    return f"{_first_line(error)} (root cause {_first_line(root)})"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow what the exporters write (graph dumps, logs, deprecation warnings): library code does not print."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        yield


def _export_dynamo(model, x, opset, input_name, names, dynamic_batch):
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    program = torch.onnx.export(
        model, (x,), dynamo=True, opset_version=opset, input_names=[input_name], output_names=list(names),
        dynamic_shapes=dynamic_shapes, verbose=False,
    )  # fmt: skip
    return program.model_proto


def _export_torchscript(model, x, opset, input_name, names, dynamic_batch):
    import onnx

    axes = {n: {0: "batch"} for n in (input_name, *names)} if dynamic_batch else None
    buffer = io.BytesIO()
    torch.onnx.export(
        model, (x,), buffer, dynamo=False, opset_version=opset, input_names=[input_name], output_names=list(names),
        dynamic_axes=axes,
    )  # fmt: skip
    return onnx.load_from_string(buffer.getvalue())


def _write_checked(proto: Any, path: Path, what: str) -> None:
    """Write `proto` next to `path`, run the full ONNX checker on it, then move it into place atomically."""
    import onnx

    weight_bytes = sum(len(t.raw_data) for t in proto.graph.initializer)
    # Not mkstemp: its 0600 mode would survive the rename; "xb" creates the file with the umask's mode.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        if weight_bytes < _PROTOBUF_LIMIT:
            with tmp.open("xb") as file:
                file.write(proto.SerializeToString())
        else:
            # Large weights go to `<name>.data` beside the final file; the location is relative, so it stays valid.
            onnx.save_model(
                proto, tmp, save_as_external_data=True, all_tensors_to_one_file=True, location=f"{path.name}.data"
            )
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as error:
            raise ExportError(f"the ONNX file exported from {what} fails onnx.checker ({_reason(error)})") from None
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {str(path)!r}: {exc.strerror or exc}; choose another path") from None
    finally:
        tmp.unlink(missing_ok=True)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    input_shape: tuple[int, ...],
    opset: int = 18,
    dynamic_batch: bool = False,
    output_names: Sequence[str] | None = None,
    input_name: str = "input",
    name: str | None = None,
    exporter: str = "auto",
) -> ExportInfo:
    """Export `model` (eval mode, one input tensor) to an ONNX file at `path`; returns what was written.

    exporter="auto" tries the dynamo exporter first and falls back to the TorchScript one, recording
    the reason in `notes`; "dynamo" or "torchscript" use only that one (the TorchScript exporter is
    about 10x faster on small modules, which matters when profiling thousands of operators).
    With `dynamic_batch`, dim 0 is named "batch" and the trace uses a batch of at least 2
    (torch.export specialises a batch of 1). Outputs are named `output_names`, else "output" for
    one output and "output0", "output1", ... for several. `name` only labels error messages.
    """
    _check_opset(opset)
    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown ONNX exporter {exporter!r}; use one of {', '.join(EXPORTERS)}")
    shape = _check_shape(input_shape)
    path = Path(path)
    what = f"{name or type(model).__name__} to {str(path)!r}"
    if not path.parent.is_dir():
        raise ConfigError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist; create it first")
    writable_file(path)  # a folder or a read-only place is refused before the export's work
    notes: list[str] = []
    batch = shape[0]
    if dynamic_batch and batch < 2:
        batch = 2
        notes.append(f"dynamic batch: traced with batch 2 (torch.export specialises a batch of {shape[0]})")
    device, dtype = _placement(model)
    x = torch.randn((batch, *shape[1:]), generator=torch.Generator().manual_seed(0)).to(device, dtype)  # [B, C, H, W]
    with eval_mode(model):
        try:
            with torch.no_grad():
                out = model(x)
        except (RuntimeError, ValueError, IndexError) as error:  # a ZennasError passes through as it is
            if isinstance(error, ZennasError):
                raise
            raise ExportError(
                f"{what}: the module fails on an input of shape {tuple(x.shape)} ({_reason(error)}); "
                "check the input shape (resolution, channels)"
            ) from None
        outputs = _flat_outputs(out, what)
        if output_names is None:
            names = ("output",) if len(outputs) == 1 else tuple(f"output{i}" for i in range(len(outputs)))
        else:
            names = tuple(output_names)
            if len(names) != len(outputs) or len(set(names)) != len(names) or input_name in names:
                raise ConfigError(
                    f"{len(outputs)} distinct output names (not {input_name!r}) are needed for {what}, got {names}"
                )
        with _quiet():  # failures are raised and fallbacks recorded in `notes`, so the chatter adds nothing
            if exporter == "torchscript":
                try:
                    proto = _export_torchscript(model, x, opset, input_name, names, dynamic_batch)
                except Exception as error:
                    raise ExportError(f"cannot export {what}: TorchScript exporter: {_reason(error)}") from None
            else:
                try:
                    proto = _export_dynamo(model, x, opset, input_name, names, dynamic_batch)
                    exporter = "dynamo"
                except Exception as dynamo_error:
                    if exporter == "dynamo":
                        raise ExportError(f"cannot export {what}: dynamo exporter: {_reason(dynamo_error)}") from None
                    exporter = "torchscript"
                    notes.append(f"dynamo exporter failed ({_reason(dynamo_error)}); used the TorchScript exporter")
                    try:
                        proto = _export_torchscript(model, x, opset, input_name, names, dynamic_batch)
                    except Exception as error:
                        raise ExportError(
                            f"cannot export {what}: dynamo exporter: {_reason(dynamo_error)}; "
                            f"TorchScript exporter: {_reason(error)}"
                        ) from None
    _write_checked(proto, path, what)
    return ExportInfo(
        path=str(path),
        opset=opset,
        exporter=exporter,
        input_names=tuple(i.name for i in proto.graph.input),
        input_shapes=tuple(_dims(i) for i in proto.graph.input),
        output_names=tuple(o.name for o in proto.graph.output),
        output_shapes=tuple(_dims(o) for o in proto.graph.output),
        dynamic_batch=dynamic_batch,
        example_batch_size=batch,
        notes=tuple(notes),
    )


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise DependencyError(
            "checking an ONNX file needs onnxruntime; install it with `pip install onnxruntime`"
        ) from None
    return onnxruntime


def check_onnx(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    input_shape: tuple[int, ...],
    seed: int = 0,
    batch_sizes: Sequence[int] | None = None,
    rel_tolerance: float = REL_TOLERANCE,
) -> CheckReport:
    """Run the ONNX file (onnxruntime, CPU) and `model` (eval, strict FP32) on one seeded random batch.

    Relative error of an output = max |ort - torch| / max |torch| over the whole tensor: an
    elementwise ratio is meaningless where the reference is near zero. An all-zero reference gives
    0 when ORT matches it exactly and inf otherwise; non-finite outputs give nan (a failure).
    `batch_sizes` defaults to input_shape[0], plus input_shape[0] + 2 when the file's batch is dynamic.
    """
    ort = _onnxruntime()
    shape = _check_shape(input_shape)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ONNX file {str(path)!r} not found; export it first")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: library code does not write to the terminal
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise ExportError(f"onnxruntime cannot load {str(path)!r} ({_reason(error)})") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ExportError(f"{str(path)!r} has {len(inputs)} inputs; check_onnx handles single-input models only")
    file_batch = inputs[0].shape[0]
    dynamic = not isinstance(file_batch, int)
    if batch_sizes is None:
        batch_sizes = (shape[0], shape[0] + 2) if dynamic else (shape[0],)
    batch_sizes = tuple(batch_sizes)
    if not batch_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise ConfigError(f"batch_sizes must be positive integers, got {batch_sizes!r}")
    if not dynamic and any(b != file_batch for b in batch_sizes):
        raise ConfigError(f"{str(path)!r} has a fixed batch of {file_batch}; export with dynamic_batch to check others")
    names = [o.name for o in session.get_outputs()]
    device, dtype = _placement(model)
    generator = torch.Generator().manual_seed(seed)
    checks: list[OutputCheck] = []
    for batch in batch_sizes:
        # [B, C, H, W]: drawn in FP32 on the CPU (same values on every device), then cast to the model's dtype
        x = torch.randn((batch, *shape[1:]), generator=generator).to(dtype)
        with eval_mode(model), strict_fp32(), torch.no_grad():
            expected = [t.detach().cpu().double() for t in _flat_outputs(model(x.to(device)), type(model).__name__)]
        try:
            actual = session.run(None, {inputs[0].name: x.numpy()})
        except Exception as error:
            raise ExportError(f"onnxruntime fails to run {str(path)!r} at batch {batch} ({_reason(error)})") from None
        if len(actual) != len(expected):
            raise ExportError(f"{str(path)!r} has {len(actual)} outputs but the module returns {len(expected)}")
        for name, ort_out, ref in zip(names, actual, expected, strict=True):
            got = torch.from_numpy(ort_out).double()
            if tuple(got.shape) != tuple(ref.shape):
                raise ExportError(
                    f"output {name!r} of {str(path)!r} has shape {tuple(got.shape)} at batch {batch}, "
                    f"PyTorch gives {tuple(ref.shape)}"
                )
            abs_error = (got - ref).abs().max().item() if ref.numel() else 0.0
            scale = ref.abs().max().item() if ref.numel() else 0.0
            if not (math.isfinite(abs_error) and math.isfinite(scale)):
                rel_error = math.nan
            elif scale > 0:
                rel_error = abs_error / scale
            else:
                rel_error = 0.0 if abs_error == 0 else math.inf
            checks.append(OutputCheck(name, batch, tuple(ref.shape), abs_error, rel_error))
    return CheckReport(str(path), seed, rel_tolerance, batch_sizes, tuple(checks))


def _traced_pairs(module: nn.Module) -> list[tuple[str, str]] | None:
    """(conv, bn) names where the BN's only input is a conv output used nowhere else; None if fx cannot trace."""
    try:
        graph = torch.fx.Tracer().trace(module)
    except Exception:  # data-dependent Python in some forward: fall back to the structural walk
        return None
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(module.get_submodule(node.target), nn.BatchNorm2d):
            continue
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if (
            isinstance(source, torch.fx.Node)
            and source.op == "call_module"
            and isinstance(module.get_submodule(source.target), nn.Conv2d)
            and len(source.users) == 1
            and calls[source.target] == calls[node.target] == 1
        ):
            pairs.append((source.target, node.target))
    return pairs


def _conv_bn_pairs(module: nn.Module, prefix: str = "") -> list[tuple[str, str]]:
    """Fusable (conv, bn) names: from the fx graph where it traces, else adjacent children of Sequentials."""
    traced = _traced_pairs(module)
    if traced is not None:
        return [(prefix + conv, prefix + bn) for conv, bn in traced]
    children = list(module.named_children())
    pairs = []
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        for (conv_name, conv), (bn_name, bn) in pairwise(children):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                pairs.append((prefix + conv_name, prefix + bn_name))
    for child_name, child in children:
        pairs += _conv_bn_pairs(child, f"{prefix}{child_name}.")
    return pairs


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """conv <- bn(conv) in eval mode: w' = w * g / sqrt(var + eps), b' = (b - mean) * g / sqrt(var + eps) + beta."""
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)  # [C_out]
    if bn.affine:
        scale = scale * bn.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    shift = (bias - bn.running_mean.double()) * scale + (bn.bias.double() if bn.affine else 0.0)
    conv.weight.copy_(conv.weight.double() * scale.reshape(-1, 1, 1, 1))
    if conv.bias is None:
        conv.bias = nn.Parameter(shift.to(conv.weight))
    else:
        conv.bias.copy_(shift)


@torch.no_grad()
def randomize_bn_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm2d seeded, non-trivial statistics and affine terms, in place.

    A freshly built network has mean 0, variance 1, gamma 1 and beta 0, for which folding BN into
    the convolutions is the identity; checks of `fuse_bn` and of an exported graph use this so that
    folding is really exercised.
    """
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            m.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            m.weight.copy_(0.5 + torch.rand(n, generator=generator))
            m.bias.copy_(0.1 * torch.randn(n, generator=generator))
    return model


def fuse_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with each BatchNorm2d that directly follows a Conv2d folded into it.

    Pairs come from the torch.fx graph of the whole model (so a conv ending one block and the BN
    starting the next, as in GENet, are found), or, for modules fx cannot trace, from adjacent
    (Conv2d, BatchNorm2d) children of plain Sequentials. A pair is fused only when the conv output
    feeds nothing but the BN, both are called once, and the BN tracks running statistics; the BN is
    replaced by nn.Identity. Other BNs (after a sum, a pool, or an activation) stay.
    """
    fused = copy.deepcopy(model).eval()
    used: set[str] = set()
    for conv_name, bn_name in _conv_bn_pairs(fused):
        conv, bn = fused.get_submodule(conv_name), fused.get_submodule(bn_name)
        if conv_name in used or bn_name in used or bn.running_mean is None or bn.num_features != conv.out_channels:
            continue
        used.update((conv_name, bn_name))
        _fold(conv, bn)
        parent_name, _, child_name = bn_name.rpartition(".")
        setattr(fused.get_submodule(parent_name), child_name, nn.Identity())
    return fused


def load_safetensors(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load weights from a .safetensors file into `model` (in place, strict); returns `model`."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ConfigError(
            f"weights load only from .safetensors files (no pickle), got {str(path)!r}; convert a state dict with "
            "`safetensors.torch.save_file(model.state_dict(), 'w.safetensors')`"
        )
    if not path.is_file():
        raise ConfigError(f"weights file {str(path)!r} not found")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(path, device="cpu")
    except (SafetensorError, OSError) as error:
        raise ConfigError(f"cannot read weights file {str(path)!r}: {error}") from None
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    for label, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("shape mismatch (file vs model)", mismatched),
    ):
        if items:
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
    if problems:
        raise ConfigError(
            f"weights in {str(path)!r} do not fit this model ({'; '.join(problems)}); "
            "check ARCH, --num-classes and --se against the model the weights were saved from"
        )
    model.load_state_dict(state, strict=True)
    return model


__all__ = [
    "MIN_OPSET",
    "REL_TOLERANCE",
    "CheckReport",
    "ExportInfo",
    "OutputCheck",
    "check_onnx",
    "export_onnx",
    "fuse_bn",
    "load_safetensors",
    "output_names_for",
]
