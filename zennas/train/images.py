"""Image files checked before the first training step: every file decoded once, in a thread pool.

A truncated file, an empty one, a text file named `.png` or a broken link otherwise crashes a run
only when the loader first draws it, possibly epochs in. PIL's `verify()` reads a PNG's chunks
but not a JPEG's scan data, so it misses truncated JPEGs; a full `load()` decodes everything and
misses nothing. JPEGs decode at reduced scale (`draft`): the entropy-coded data is still read to
its end, so truncation is still found, in a fraction of the time. PIL's decoders release the GIL,
so a thread pool scales with the cores.

Every trainer that reads image files (classification, long-tail, ReID, detection) and `zennas eval`
share this check.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from zennas.errors import ConfigError

LISTED = 5  # bad files named in an error message; the count covers the rest


@dataclass(frozen=True)
class ImageProbe:
    """One file's check: its size (width, height) when it decodes, otherwise the problem."""

    path: str
    size: tuple[int, int] | None
    problem: str | None


def _probe(path: str | os.PathLike) -> ImageProbe:
    from PIL import Image

    try:
        with Image.open(path) as file:
            size = file.size
            file.draft("RGB", (1, 1))  # JPEG only: decode at 1/8 scale, still reading every byte
            file.load()
    except Exception as error:  # PIL's decoders raise OSError, SyntaxError, ValueError, struct.error ... on bad data
        return ImageProbe(str(path), None, " ".join(str(error).split()) or type(error).__name__)
    return ImageProbe(str(path), size, None)


def probe_images(paths: Sequence[str | os.PathLike], *, threads: int | None = None) -> list[ImageProbe]:
    """Decode every file of `paths` fully (in `threads` threads); one probe per path, in order."""
    if not paths:
        return []
    threads = threads or min(32, os.cpu_count() or 1, len(paths))
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(_probe, paths))


def bad_images_error(bad: Sequence[ImageProbe], total: int, where: str, fix: str) -> ConfigError:
    """One line: how many of `total` images in `where` do not decode, the first few with their problem, `fix`."""
    named = "; ".join(f"{b.path} ({b.problem})" for b in bad[:LISTED])
    more = f"; and {len(bad) - LISTED} more" if len(bad) > LISTED else ""
    return ConfigError(f"{len(bad)} of {total} images in {where} cannot be decoded: {named}{more}; {fix}")


def screen_images(
    paths: Sequence[str | os.PathLike], *, skip: bool, where: str,
    fix: str = "replace or delete them, or pass --skip-bad-images to leave them out",
) -> list[ImageProbe]:  # fmt: skip
    """The files of `paths` that do not decode; a ConfigError naming the first ones unless `skip`."""
    bad = [probe for probe in probe_images(paths) if probe.problem is not None]
    if bad and not skip:
        raise bad_images_error(bad, len(paths), where, fix)
    return bad


__all__ = ["ImageProbe", "bad_images_error", "probe_images", "screen_images"]
