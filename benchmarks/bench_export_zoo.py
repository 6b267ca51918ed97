"""ONNX export + onnxruntime check of every zoo model and of multi-output detection backbones.

Each model is built with seeded weights and non-trivial BatchNorm statistics, exported at its own
resolution (batch 1, opset 18, the default exporter) and checked against PyTorch on the CPU
(max relative error = max|ort - torch| / max|torch|, target <= 1e-4 in FP32); the BN-folded copy
(`fuse_bn`) is checked against the original. Detection backbones: members of the maedet and
deepmad-se spaces built with multi_scale=True (outputs c2..c5). Prints a table and appends it to
benchmarks/RESULTS.md. Usage: python benchmarks/bench_export_zoo.py [--only PATTERN]
"""

from __future__ import annotations

import argparse
import fnmatch
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _record import append_result
from torch import nn

import zennas
from zennas.api import settings_for
from zennas.export import check_onnx, export_onnx, fuse_bn, output_names_for, randomize_bn_
from zennas.models import list_models, resolve_arch
from zennas.spaces import get_space


def run(label: str, model: nn.Module, resolution: int, folder: Path) -> str:
    start = time.perf_counter()
    shape = (1, 3, resolution, resolution)
    path = folder / "model.onnx"
    names = output_names_for(model)
    info = export_onnx(model, path, input_shape=shape, output_names=names, name=label)
    report = check_onnx(path, model, input_shape=shape)
    fused = fuse_bn(model)
    fused_path = folder / "fused.onnx"
    export_onnx(fused, fused_path, input_shape=shape, output_names=names, name=label)
    fused_report = check_onnx(fused_path, model, input_shape=shape)  # the folded file vs the original model
    seconds = time.perf_counter() - start
    outs = ", ".join(f"{n} {tuple(s)}" for n, s in zip(info.output_names, info.output_shapes, strict=True))
    return (
        f"| {label} | {resolution} | {info.exporter} | {outs} | {report.max_rel_error:.2e} | "
        f"{fused_report.max_rel_error:.2e} | {'PASS' if report.passed and fused_report.passed else 'FAIL'} | "
        f"{seconds:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="*", help="Shell pattern of zoo names (detection backbones always run).")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in list_models():
            if not fnmatch.fnmatch(name, args.only):
                continue
            spec, entry = resolve_arch(name)
            resolution, _, _ = settings_for(spec, entry)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = randomize_bn_(zennas.create_model(name))
            rows.append(run(name, model, resolution, folder))
            print(rows[-1], flush=True)
        rng = np.random.default_rng(0)
        for space in ("maedet", "deepmad-se"):
            for i, spec in enumerate([get_space(space).initial()[0], get_space(space).sample(rng)]):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    model = randomize_bn_(zennas.create_model(spec, num_classes=0, multi_scale=True))
                rows.append(run(f"{space} {'seed' if i == 0 else 'sample'} (multi-scale)", model, 320, folder))
                print(rows[-1], flush=True)
    text = "\n".join(
        [
            "| model | R | exporter | outputs | max rel err | max rel err (BN folded) | check | s |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    append_result("bench_export_zoo - ONNX export and onnxruntime check (FP32, CPU)", text)


if __name__ == "__main__":
    main()
