"""Write the 20 real CIFAR-10 test images shipped in the foolbox wheel as a `--data` batch (.npz).

foolbox (MIT) bundles ~20 real CIFAR-10 images as PNGs (REFERENCE 9); the wheel comes from PyPI, so
this works offline wherever pip works: `pip download foolbox --no-deps -d /tmp/fb`, then
`python benchmarks/make_foolbox_cifar10.py /tmp/fb/foolbox-*.whl /tmp/cifar10_foolbox20.npz`.
Images are normalised with the usual CIFAR-10 channel mean/std; labels come from the file names.
"""

from __future__ import annotations

import io
import re
import sys
import zipfile

import numpy as np
from PIL import Image

MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


def main(wheel: str, out: str) -> None:
    images, labels = [], []
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(n for n in z.namelist() if re.search(r"data/cifar10_\d+_\d+\.png$", n)):
            rgb = np.asarray(Image.open(io.BytesIO(z.read(name))).convert("RGB"), dtype=np.float32) / 255.0
            images.append(((rgb - MEAN) / STD).transpose(2, 0, 1))  # [3, 32, 32]
            labels.append(int(re.search(r"_(\d+)\.png$", name).group(1)))
    np.savez(out, images=np.stack(images), labels=np.array(labels))  # [N, 3, 32, 32], [N]
    print(f"{out}: {len(images)} images, labels {labels}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
