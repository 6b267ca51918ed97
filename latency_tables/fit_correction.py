"""Fit one affine correction for a table from several `zennas latency validate --json` reports.

    python latency_tables/fit_correction.py TABLE OUT REPORT.json [REPORT.json ...]

Each report splits its networks into the same two halves as `validate --fit` (split_halves). The
correction measured = intercept_ms + slope x sum is fitted by least squares on relative error over the
fit halves of all reports together, then reported on each held-out half before and after; OUT is
TABLE with the correction in its header. Pooling spaces gives one correction a search can use for any
of them (a per-space fit on 30 networks follows that space's noise).
"""

from __future__ import annotations

import json
import sys

import numpy as np

from zennas.latency.table import load_table, save_table
from zennas.latency.validate import accuracy, fit_correction, split_halves


def main(table_path: str, out: str, reports: list[str]) -> None:
    table = load_table(table_path)
    halves = []
    for path in reports:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
        nets = report["networks"]
        sums = np.array([n["table_sum_ms"] for n in nets])
        measured = np.array([n["measured_ms"] for n in nets])
        fit_idx, held = split_halves(len(nets), report["settings"]["seed"])
        halves.append((report["settings"]["space"], sums, measured, fit_idx, held))
    intercept, slope = fit_correction(
        np.concatenate([s[f] for _, s, _, f, _ in halves]), np.concatenate([m[f] for _, _, m, f, _ in halves])
    )
    fitted_on = sum(len(f) for *_, f, _ in halves)
    print(f"pooled fit on {fitted_on} networks: measured = {intercept:.4f} ms + {slope:.4f} x sum")
    print("| space | held out | within +-10% | within +-5% | MAPE | Spearman |  (before -> after)")
    print("|---|---|---|---|---|---|")
    for space, sums, measured, _, held in halves:
        before = accuracy(sums[held], measured[held])
        after = accuracy(intercept + slope * sums[held], measured[held])
        print(
            f"| {space} | {before.n} | {before.within_10pct:.1%} -> {after.within_10pct:.1%} | "
            f"{before.within_5pct:.1%} -> {after.within_5pct:.1%} | {before.mape:.2f}% -> {after.mape:.2f}% | "
            f"{after.spearman:.3f} |"
        )
    correction = {
        "intercept_ms": intercept,
        "slope": slope,
        "fitted_on": fitted_on,
        "fitted_with": {"reports": [r.split("/")[-1] for r in reports], "spaces": [h[0] for h in halves]},
    }
    save_table(out, {**table.header, "correction": correction}, table.entries)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
