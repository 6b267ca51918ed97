"""`zennas eval`: accuracy of trained weights on a dataset's val/ split, and a confusion-matrix PNG.

The checkpoint is a training --out folder or its `model.safetensors`; the architecture, classes,
resolution and SE setting come from the `model.json` written beside the weights. The dataset's
classes must be the checkpoint's classes, in the same order (one-line error otherwise).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zennas.device import resolve_device
from zennas.errors import ConfigError
from zennas.io import atomic_write_bytes, writable_file


def _weights_and_sidecar(checkpoint: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    path = Path(checkpoint)
    weights = path / "model.safetensors" if path.is_dir() else path
    sidecar = weights.with_suffix(".json")
    if not weights.is_file():
        raise ConfigError(f"no weights at {str(weights)!r}; give a training --out folder or its model.safetensors")
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
        missing = [key for key in ("arch", "num_classes", "resolution") if key not in info]
        if missing:
            raise KeyError(", ".join(missing))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{str(sidecar)!r} is missing or unreadable ({error}); it describes the weights") from None
    return weights, info


def evaluate_checkpoint(
    checkpoint: str | os.PathLike, data_dir: str | os.PathLike, *, batch_size: int = 256, device: str = "cpu",
    plot: str | os.PathLike | None = None,
) -> dict[str, Any]:  # fmt: skip
    """top1/top5 (percent), per-class accuracy and the confusion matrix [true, predicted] on val/."""
    from zennas.arch import parse
    from zennas.train.checkpoint import load_weights
    from zennas.train.classification import build_trained
    from zennas.train.data import load_classification_data, screen_folder_images
    from zennas.train.loading import default_workers, feed
    from zennas.train.memory import check_memory, inference_values

    if plot is not None:
        writable_file(plot)  # before the evaluation, not after it
    weights, info = _weights_and_sidecar(checkpoint)
    spec = parse(info["arch"], info.get("dialect"))
    side = info["resolution"]
    check_memory(inference_values(spec, side, side, info.get("use_se")), batch_size, resolve_device(device),
                 what=f"evaluating {batch_size} images of {side}x{side} at once", lower="--batch-size")  # fmt: skip
    net = build_trained(spec, info["num_classes"], info.get("use_se"), info.get("head", "linear"))
    load_weights(weights, net, spec.canonical)
    data = load_classification_data(data_dir, side)
    screen_folder_images(data, skip=False, splits=("val",), fix="replace or delete them")
    if info.get("classes") is not None and list(data.classes) != list(info["classes"]):
        raise ConfigError(
            f"the dataset's classes {data.classes[:5]}... differ from the checkpoint's {info['classes'][:5]}...; "
            "evaluate on data with the training classes"
        )
    target = resolve_device(device)
    loader = feed(data.val, batch_size=batch_size, train=False, generator=torch.Generator(),
                  workers=default_workers(target), device=target, seed=0)  # fmt: skip
    net = net.to(target).eval()
    k = info["num_classes"]
    confusion = np.zeros((k, k), dtype=np.int64)  # [true, predicted]
    top5 = 0
    with torch.no_grad():
        for x, y in loader:
            logits = net(x.to(target)).float().cpu()  # [B, K]
            predicted = logits.argmax(dim=1)
            np.add.at(confusion, (y.numpy(), predicted.numpy()), 1)
            top5 += (logits.topk(min(5, k), dim=1).indices == y[:, None]).any(dim=1).sum().item()
    seen = int(confusion.sum())
    if seen == 0:
        raise ConfigError(f"val/ of {str(data_dir)!r} holds no images")
    support = confusion.sum(axis=1)
    per_class = [None if n == 0 else 100.0 * confusion[c, c] / n for c, n in enumerate(support)]
    result = {
        "top1": 100.0 * np.trace(confusion) / seen,
        "top5": 100.0 * top5 / seen,
        "images": seen,
        "classes": list(data.classes),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "arch": spec.canonical,
        "weights": str(weights),
    }
    if plot is not None:
        _confusion_png(Path(plot), confusion, list(data.classes))
        result["plot"] = str(plot)
    return result


def _confusion_png(path: Path, confusion: np.ndarray, classes: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)  # row-normalised [true, predicted]
    size = min(12.0, 3.0 + 0.35 * len(classes))
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    if len(classes) <= 30:
        ax.set_xticks(range(len(classes)), classes, rotation=90)
        ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (rows normalised)")
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
