"""Images/s of `zennas train classification` against a bare PyTorch loop (issue 15 item 3).

The data: sklearn's 1,797 digits saved as 32x32 RGB PNGs in an ImageFolder (1,347 train, 450 val).
The net: a small zennas-res network (ARCH below; `zennas info` gives its size). The batch: 32 by default.

Rows, each against the bare loop (the same net from `zennas.create_model`, the training images as one
normalised float tensor in memory, a permutation per epoch, SGD with Nesterov momentum and cross-
entropy, the channels_last layout the trainer uses by default and autocast on CUDA, nothing else):

- trainer, default loader: `data_cache` auto, which keeps this set's pixels in memory (on the GPU when
  training there) and augments them a batch at a time: the compute-bound case.
- trainer, files every epoch: `data_cache` off, the default number of worker processes decoding the
  PNGs: the data-bound case.

Per row: training-step images/s (the trainer's own figure, steps only), the share of that time spent
waiting for data, the whole epoch's images/s (with evaluation of the weights and of their EMA on
the val split, and the checkpoint), and the ratios to the bare loop. Figures are medians over the
epochs after the first (warm-up). Runs alternate (trainer, bare, trainer, ...) so drift hits both.

    python benchmarks/bench_train_speed.py [--device cpu|cuda] [--amp off,bf16] [--epochs 4] [--batch-size 32]
    python benchmarks/bench_train_speed.py --layouts [--device cpu]

`--layouts` times one training step (forward, backward, SGD) of a few zoo networks in the NCHW and the
NHWC (channels_last) layout, the choice behind the trainer's `--channels-last` default.

Targets: CPU compute-bound >= 80 % of the bare loop; GPU >= 80 % with the images in memory and >= 50 %
with the default loader on the ImageFolder.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _record import append_result  # noqa: E402

import zennas  # noqa: E402
from zennas.train.classification import TrainConfig, train_classification  # noqa: E402
from zennas.train.data import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from zennas.train.loading import default_workers  # noqa: E402
from zennas.train.synthetic import write_digits_folder  # noqa: E402

ARCH = "SuperConvK3BNRELU(3,16,1,1)SuperResK3K3(16,32,2,16,1)SuperResK3K3(32,64,2,32,1)SuperConvK1BNRELU(64,128,1,1)"


def write_data(root: Path, side: int = 32) -> Path:
    """The digits as side x side RGB PNGs (bilinear upsampling of the 8x8 originals)."""
    from PIL import Image

    write_digits_folder(root, val_per_class=45)
    for path in root.rglob("*.png"):
        Image.open(path).convert("RGB").resize((side, side), Image.BILINEAR).save(path)
    return root


def tensors(root: Path, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split as normalised float images [N, 3, H, W] and labels [N] on `device`."""
    from PIL import Image

    classes = sorted(p.name for p in (root / "train").iterdir())
    files = [(p, i) for i, c in enumerate(classes) for p in sorted((root / "train" / c).glob("*.png"))]
    x = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p, _ in files]))
    x = x.permute(0, 3, 1, 2).float() / 255  # [N, 3, H, W]
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    return x.to(device), torch.tensor([i for _, i in files], device=device)


def bare_epoch(state: dict, x: torch.Tensor, y: torch.Tensor, batch: int, amp: str, epoch: int) -> float:
    """One epoch of the bare loop; returns its images/s."""
    net, optimizer = state["net"], state["optimizer"]
    cuda = x.device.type == "cuda"
    net.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch)).to(x.device)
    steps = len(x) // batch
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for step in range(steps):
        index = order[step * batch : (step + 1) * batch]
        xb = x[index].contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and amp == "bf16" else contextlib.nullcontext()
        with autocast:
            loss = F.cross_entropy(net(xb).float(), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    float(loss)  # waits for the device
    return steps * batch / (time.perf_counter() - started)


def bare_state(device: torch.device, classes: int) -> dict:
    torch.manual_seed(0)
    net = zennas.create_model(ARCH, num_classes=classes).to(device, memory_format=torch.channels_last)
    return {"net": net, "optimizer": torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)}


def trainer_run(data: Path, out: Path, args: argparse.Namespace, amp: str, cache: str) -> list[dict]:
    config = TrainConfig(data=str(data), out=str(out), arch=ARCH, epochs=args.epochs, batch_size=args.batch_size,
                         resolution=32, hflip=0.0, amp=amp, device=args.device,
                         data_cache=cache)  # fmt: skip
    records: list[dict] = []
    train_classification(config, on_epoch=records.append)
    return records


LAYOUT_NETS = ((ARCH, 32, 32), ("zennet-cifar10-1m", 32, 32), ("zennet-400m-se", 224, 8), ("genet-light", 192, 8),
               ("zennet-0.5ms", 224, 8))  # fmt: skip


def layouts(device: torch.device, steps: int) -> str:
    """Median seconds per training step in each memory layout, per network of LAYOUT_NETS."""
    rows = []
    for arch, side, batch in LAYOUT_NETS:
        seconds = {}
        for layout in (torch.contiguous_format, torch.channels_last):
            torch.manual_seed(0)
            net = zennas.create_model(arch, num_classes=10).to(device, memory_format=layout)
            x = torch.randn(batch, 3, side, side, device=device).contiguous(memory_format=layout)
            y = torch.randint(0, 10, (batch,), device=device)
            optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
            times = []
            for _ in range(steps + 1):  # the first step warms up
                started = time.perf_counter()
                loss = F.cross_entropy(net(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                float(loss)
                times.append(time.perf_counter() - started)
            seconds[layout] = statistics.median(times[1:])
        nchw, nhwc = seconds[torch.contiguous_format], seconds[torch.channels_last]
        name = "the benchmark's net" if arch == ARCH else arch
        macs = zennas.info(arch, resolution=side)["macs"] / 1e6
        rows.append(
            f"| {name} | {macs:,.0f}M | {side} | {batch} | {nchw * 1e3:,.1f} | {nhwc * 1e3:,.1f} | {nhwc / nchw:.2f} |"
        )
        print(rows[-1], flush=True)
    return (
        f"One training step per memory layout on {device.type}, median of {steps} after a warm-up step.\n\n"
        "| network | MACs | side | batch | NCHW ms | NHWC ms | NHWC / NCHW |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="off", help="comma-separated: off (fp32), bf16 (CUDA only)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of trainer and bare loop per row")
    parser.add_argument("--layouts", action="store_true", help="time NCHW against NHWC training steps instead")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per layout (--layouts)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.layouts:
        table = layouts(device, args.steps)
        print(table)
        append_result(f"bench_train_speed --layouts on {args.device}", table)
        return
    info = zennas.info(ARCH, resolution=32, num_classes=10)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(Path(tmp) / "digits")
        x, y = tensors(data, device)
        for amp in args.amp.split(","):
            for name, cache in (("default loader (images kept in memory)", "auto"),
                                (f"files every epoch ({default_workers(device)} workers)", "off")):  # fmt: skip
                steps, waits, wholes, bares = [], [], [], []
                for r in range(args.rounds):
                    records = trainer_run(data, Path(tmp) / f"run-{amp}-{cache}-{r}", args, amp, cache)
                    train_images = len(x) // args.batch_size * args.batch_size  # the last partial batch is dropped
                    for record in records[1:]:
                        steps.append(record["images_per_s"])
                        waits.append(record["data_wait"])
                        wholes.append(train_images / record["seconds"])
                    state = bare_state(device, 10)
                    bares += [bare_epoch(state, x, y, args.batch_size, amp, e) for e in range(args.epochs)][1:]
                step, whole, bare = statistics.median(steps), statistics.median(wholes), statistics.median(bares)
                rows.append(
                    f"| {args.device} | {amp} | {name} | {step:,.0f} | {statistics.median(waits):.0%} | {whole:,.0f} | "
                    f"{bare:,.0f} | {step / bare:.0%} | {whole / bare:.0%} |"
                )
                print(rows[-1], flush=True)
    head = (
        f"`zennas train classification` against a bare loop: {ARCH} ({info['params']:,} params, "
        f"{info['macs'] / 1e6:.1f}M MACs at 32 px), digits as 32x32 PNGs (1,347 train / 450 val), batch "
        f"{args.batch_size}, medians over epochs 2-{args.epochs} of {args.rounds} runs each. 'steps' counts the "
        "training steps only; 'epoch' adds evaluation (weights and EMA) and the checkpoint.\n\n"
        "| device | precision | trainer data path | trainer steps img/s | waiting for data | trainer epoch img/s | "
        "bare loop img/s | steps / bare | epoch / bare |\n|---|---|---|---|---|---|---|---|---|"
    )
    table = head + "\n" + "\n".join(rows)
    print(table)
    append_result(f"bench_train_speed - trainer vs bare loop on {args.device}", table)


if __name__ == "__main__":
    main()
