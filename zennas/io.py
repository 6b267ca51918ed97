"""Crash-safe file writes: a temporary file in the same folder, fsync, then an atomic rename.

`os.replace` is atomic on POSIX and Windows, so a reader (or a run resumed after SIGKILL) sees
either the old file or the whole new one, never a torn write.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from zennas.errors import OutputError


def _cannot_write(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {str(path)!r}: {exc.strerror or exc}; choose another path or free it")


def writable_file(path: str | os.PathLike) -> Path:
    """`path` checked before any long work writes it: not a folder, and its folder exists (or can be made)
    and takes new files. OutputError otherwise."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{str(path)!r} is a folder, not a file; give a file path (one inside it, for example)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot_write(path.parent, exc) from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {str(path)!r}: its folder is not writable; choose another path")
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary sibling file, fsync it, and rename it into place.

    A path that cannot be written (a folder, a read-only or full file system) is an OutputError."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)  # after a successful rename there is nothing left to remove


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 1) -> None:
    """`atomic_write_bytes` for JSON (strict: NaN and infinity are refused)."""
    atomic_write_bytes(path, json.dumps(data, indent=indent, allow_nan=False).encode("utf-8"))


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number (zennas never writes NaN or infinity)")


def parse_json_text(text: str | bytes, where: str, error: type[Exception]) -> Any:
    """Strict JSON from outside: NaN/Infinity and nesting deep enough to exhaust the parser are refused
    with `error` (a ZennasError subclass) naming `where`, never a ValueError or RecursionError."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise error(f"{where} nests JSON too deeply to read; it was not written by zennas") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"{where} is not valid JSON ({exc})") from None


def read_json_file(path: str | os.PathLike, where: str, error: type[Exception]) -> Any:
    """`parse_json_text` of a file; a missing or unreadable file is `error` too."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise error(f"cannot read {where} ({exc.strerror or exc})") from None
    return parse_json_text(data, where, error)
