"""`zennas export`: an architecture to ONNX, optionally checked against PyTorch with onnxruntime."""

from __future__ import annotations

import json
import sys

import click

from zennas.cli.common import one_line_errors
from zennas.cli.options import (
    SE_OPTION,
    batch_size_option,
    dialect_option,
    json_option,
    num_classes_option,
    resolution_option,
)


@click.command("export")
@click.argument("arch")
@click.option("--onnx", "onnx_path", required=True, metavar="FILE", help="Where to write the ONNX file.")
@resolution_option()
@batch_size_option("Input batch.", default=1, show_default=True)
@click.option("--dynamic-batch", is_flag=True, help="Name dim 0 'batch' instead of fixing it (traced at batch >= 2).")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset, 18 or newer.")
@click.option("--weights", metavar="FILE.safetensors", help="Load these weights first (default: random init).")
@click.option("--fuse-bn", "fuse", is_flag=True, help="Fold every BatchNorm that directly follows a conv into it.")
@click.option(
    "--check", is_flag=True, help="Compare onnxruntime (CPU) with the unfused PyTorch model in FP32; exit 1 on FAIL."
)
@num_classes_option("Classifier outputs; 0 = backbone only.")
@SE_OPTION
@click.option("--multi-scale", is_flag=True, help="Outputs c2..c5: the stage features at strides 4, 8, 16, 32.")
@dialect_option()
@json_option()
@one_line_errors
def export_command(
    arch, onnx_path, resolution, batch_size, dynamic_batch, opset, weights, fuse, check, num_classes, use_se,
    multi_scale, dialect, as_json,
) -> None:  # fmt: skip
    """Export ARCH (a model name, a string or a file) to ONNX, optionally checked against PyTorch."""
    from torch import nn

    from zennas.api import create_model, settings_for
    from zennas.counting import check_forward_size, count
    from zennas.export import check_onnx, export_onnx, fuse_bn, load_safetensors, output_names_for
    from zennas.models import resolve_arch

    spec, entry = resolve_arch(arch, dialect)
    resolution, num_classes, use_se = settings_for(spec, entry, resolution, num_classes, use_se)
    # The check of a dynamic-batch file also runs batch + 2 (zennas.export.check_onnx).
    largest_batch = batch_size + 2 if dynamic_batch else batch_size
    check_forward_size(count(spec, resolution=resolution, num_classes=num_classes, use_se=use_se), largest_batch)
    model = create_model(spec, num_classes=num_classes, use_se=use_se, multi_scale=multi_scale)
    if weights:
        load_safetensors(model, weights)
    exported = fuse_bn(model) if fuse else model
    shape = (batch_size, 3, resolution, resolution)
    label = entry.name if entry else f"architecture {spec.hash}"
    info = export_onnx(
        exported, onnx_path, input_shape=shape, opset=opset, dynamic_batch=dynamic_batch,
        output_names=output_names_for(model), name=label,
    )  # fmt: skip
    report = check_onnx(onnx_path, model, input_shape=shape) if check else None
    bn_count = [sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) for net in (model, exported)]
    if as_json:
        result = {
            "name": entry.name if entry else None,
            "hash": spec.hash,
            "dialect": spec.dialect,
            "resolution": resolution,
            "batch_size": batch_size,
            "num_classes": num_classes,
            "use_se": use_se,
            "multi_scale": multi_scale,
            "weights": weights,
            "batchnorm": {"before": bn_count[0], "after": bn_count[1]},
            "export": info.to_json(),
            "check": report.to_json() if report else None,
        }
        click.echo(json.dumps(result))
    else:
        click.echo(f"wrote {info.path} ({label}): exporter {info.exporter}, opset {info.opset}")
        if fuse:
            click.echo(f"  BatchNorm layers: {bn_count[0]} -> {bn_count[1]} after folding into convs")
        for name, dims in zip(info.input_names, info.input_shapes, strict=True):
            click.echo(f"  input  {name:<8} [{', '.join(str(d) for d in dims)}]")
        for name, dims in zip(info.output_names, info.output_shapes, strict=True):
            click.echo(f"  output {name:<8} [{', '.join(str(d) for d in dims)}]")
        for note in info.notes:
            click.echo(f"  note: {note}")
        if report is not None:
            click.echo(
                f"check: onnxruntime CPU vs PyTorch FP32 (eval, seed {report.seed}); "
                "rel = max|ort - torch| / max|torch|"
            )
            for o in report.outputs:
                errors = f"max abs {o.max_abs_error:.3g}  max rel {o.max_rel_error:.3g}"
                click.echo(f"  {o.name:<8} batch {o.batch_size:<3} {errors}")
            verdict = "PASS" if report.passed else "FAIL"
            click.echo(f"{verdict}: max relative error {report.max_rel_error:.3g} (tolerance {report.rel_tolerance:g})")
    if report is not None and not report.passed:
        sys.exit(1)
