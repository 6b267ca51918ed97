"""A disk cache of proxy results: one small JSON file per (architecture, proxy, settings), written atomically.

Each entry is written to a temporary file in the same folder and moved into place with
`os.replace`, which is atomic on POSIX and Windows: a reader sees the old state or the whole new
entry, never half of one. A crash at any moment therefore loses at most the entry being written;
stray temporary files are ignored and unreadable entries count as misses.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zennas.errors import ConfigError
from zennas.io import atomic_write_bytes

DEFAULT_CACHE_DIR = ".zennas-cache"
_FORMAT = 1  # bump when the entry layout changes


def cache_key(fields: Mapping[str, Any]) -> str:
    """Stable hex key of a JSON-serialisable mapping (sorted keys, no whitespace)."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class ScoreCache:
    """Proxy results on disk under `root/<proxy>/<key[:2]>/<key>.json`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0
        self.writes = 0
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"cache path {str(self.root)!r} exists and is not a folder; choose another --cache")

    def _path(self, proxy: str, key: str) -> Path:
        return self.root / _safe(proxy) / key[:2] / f"{key}.json"

    def get(self, proxy: str, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        """The cached result for these key fields, or None (a missing or unreadable entry is a miss)."""
        key = cache_key(fields)
        try:
            entry = json.loads(self._path(proxy, key).read_text())
        except (OSError, ValueError):
            self.misses += 1
            return None
        # The stored key fields guard against a (practically impossible) hash collision and old formats.
        if entry.get("format") != _FORMAT or entry.get("key") != json.loads(json.dumps(fields, default=str)):
            self.misses += 1
            return None
        self.hits += 1
        return entry["result"]

    def put(self, proxy: str, fields: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        """Store a result atomically (temporary file + os.replace)."""
        key = cache_key(fields)
        path = self._path(proxy, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._ignore_in_git()
        payload = json.dumps({"format": _FORMAT, "key": fields, "result": result}, default=str)
        atomic_write_bytes(path, payload.encode())  # fsync before the rename: bytes on disk first
        self.writes += 1

    def _ignore_in_git(self) -> None:
        # Like .pytest_cache: the folder ignores itself, so no project .gitignore needs editing.
        marker = self.root / ".gitignore"
        if not marker.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            marker.write_text("# created by zennas bench: scores cache\n*\n")


def _safe(name: str) -> str:
    """A proxy name as a folder name (registry names are already simple; keep it that way)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
