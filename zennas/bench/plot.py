"""Scatter plots of proxy rank vs accuracy: a dependency-free SVG writer, or matplotlib for other formats."""

from __future__ import annotations

import html
import io
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from scipy import stats

from zennas.bench.rank import Correlation
from zennas.errors import ConfigError
from zennas.io import atomic_write_bytes, atomic_write_text

_PANEL = 220  # px per panel side
_MARGIN = 36


def _percentiles(oriented: np.ndarray) -> np.ndarray:
    """Rank of each finite score as 0..1 (higher = predicted better); NaN (degenerate) stays NaN."""
    out = np.full(oriented.shape, np.nan)
    finite = ~np.isnan(oriented)
    if finite.sum() > 1:
        out[finite] = (stats.rankdata(oriented[finite]) - 1) / (finite.sum() - 1)
    elif finite.sum() == 1:
        out[finite] = 1.0
    return out


def write_plot(
    path: str | os.PathLike[str],
    oriented: Mapping[str, np.ndarray],
    accuracy: np.ndarray,
    correlations: Mapping[str, Correlation],
    acc_label: str,
) -> None:
    """One panel per proxy: x = proxy rank percentile (degenerate at x = -0.05, red), y = accuracy."""
    path = Path(path)
    if path.suffix.lower() == ".svg":
        atomic_write_text(path, _svg(oriented, accuracy, correlations, acc_label))
        return
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(
            f"--plot {path.name} needs matplotlib (pip install matplotlib); or give a .svg file, written without it"
        ) from None
    names = list(oriented)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        x = _percentiles(oriented[name])
        bad = np.isnan(x)
        ax.scatter(x[~bad], accuracy[~bad], s=3)
        ax.scatter(np.full(bad.sum(), -0.05), accuracy[bad], s=3, c="red")
        c = correlations[name]
        ax.set_title(f"{name}  rho={c.spearman:.3f} tau={c.kendall:.3f}", fontsize=8)
        ax.set_xlabel("proxy rank (higher = better)", fontsize=7)
        ax.set_ylabel(acc_label, fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, dpi=120, format=path.suffix.lstrip(".").lower() or "png")
    except ValueError as error:  # a format matplotlib cannot write
        raise ConfigError(f"cannot write plot {str(path)!r}: {error}") from None
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _svg(
    oriented: Mapping[str, np.ndarray], accuracy: np.ndarray, correlations: Mapping[str, Correlation], acc_label: str
) -> str:
    names = list(oriented)
    cols = min(4, max(1, len(names)))
    rows = math.ceil(len(names) / cols)
    side = _PANEL + 2 * _MARGIN
    lo, hi = float(np.min(accuracy)), float(np.max(accuracy))
    span = (hi - lo) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{cols * side}" height="{rows * side}" '
        f'font-family="sans-serif" font-size="10">',
        f'<rect width="{cols * side}" height="{rows * side}" fill="white"/>',
    ]
    for i, name in enumerate(names):
        ox, oy = (i % cols) * side + _MARGIN, (i // cols) * side + _MARGIN
        c = correlations[name]
        parts.append(f'<rect x="{ox}" y="{oy}" width="{_PANEL}" height="{_PANEL}" fill="none" stroke="#888"/>')
        parts.append(
            f'<text x="{ox}" y="{oy - 6}">{html.escape(name)} rho={c.spearman:.3f} tau={c.kendall:.3f} n={c.n}</text>'
        )
        parts.append(f'<text x="{ox}" y="{oy + _PANEL + 14}">proxy rank (higher = better)</text>')
        parts.append(
            f'<text x="{ox - 8}" y="{oy + _PANEL}" transform="rotate(-90 {ox - 8} {oy + _PANEL})">'
            f"{html.escape(acc_label)} {lo:.3g}..{hi:.3g}</text>"
        )
        for x, y in zip(_percentiles(oriented[name]), accuracy, strict=True):
            colour = "#c00" if np.isnan(x) else "#1f77b4"
            px = ox + (0.0 if np.isnan(x) else 0.05 + 0.9 * x) * _PANEL
            py = oy + (1 - (y - lo) / span) * _PANEL
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="1.5" fill="{colour}"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
