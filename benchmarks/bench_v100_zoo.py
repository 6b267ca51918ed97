"""The shipped V100 TensorRT FP16 table against the published V100 latencies of the model zoo.

For every zoo model with a published V100 figure: the table's prediction (ms per image at batch 64,
the model's resolution, 1000 classes; SE and the head are not in the table) next to the published
ms/image, their ratio, and Spearman over the models. The published figures are not TensorRT
measurements (Zen-NAS timed PyTorch FP16 eager; GENet's engine is not stated), so agreement is
expected in order, not in value. Prints a table and appends it to benchmarks/RESULTS.md.
Usage: python benchmarks/bench_v100_zoo.py [--zoo FILE]  (default: the zoo zennas ships, zennas/data/zoo.json)
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

from _record import append_result
from scipy import stats

from zennas.arch import parse
from zennas.errors import ZennasError
from zennas.latency.predict import predict
from zennas.latency.shipped import open_table

ZOO = Path(str(resources.files("zennas").joinpath("data/zoo.json")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=ZOO, help="model zoo JSON (default: the one zennas ships)")
    args = parser.parse_args()
    table = open_table("v100-trt-fp16")
    rows, pairs = [], []
    for entry in json.loads(args.zoo.read_text()):
        v100 = [f for f in entry["latency"] if f["device"] == "NVIDIA V100"]
        if not v100:
            continue
        published = v100[0]["value"]
        spec = parse(entry["arch_string"])
        try:
            p = predict(spec, table, resolution=entry["resolution"], num_classes=1000, use_se=entry["use_se"])
        except ZennasError as error:
            rows.append(f"| {entry['name']} | {entry['resolution']} | {published} | outside table: {error} | | |")
            continue
        ratio = p.latency_ms_per_image / published
        pairs.append((p.latency_ms_per_image, published))
        skipped = ", ".join(f"{k} x{v}" for k, v in p.not_costed.items())
        rows.append(
            f"| {entry['name']} | {entry['resolution']} | {published} | {p.latency_ms_per_image:.4f} | {ratio:.2f} "
            f"| {p.extrapolated_operators}/{p.operators} extrapolated; not costed: {skipped} |"
        )
    rho = stats.spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic
    text = "\n".join(
        [
            "| model | R | published V100 ms/image | table ms/image (batch 64) | ratio | notes |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Spearman (table vs published) over {len(pairs)} models: {rho:.3f}",
        ]
    )
    print(text)
    append_result("bench_v100_zoo - shipped V100 TensorRT FP16 table vs published zoo latencies", text)


if __name__ == "__main__":
    main()
