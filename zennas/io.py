"""Crash-safe file writes: a temporary file in the same folder, fsync, then an atomic rename.

`os.replace` is atomic on POSIX and Windows, so a reader (or a run resumed after SIGKILL) sees
either the old file or the whole new one, never a torn write.

Output folders are claimed by one helper (`claim_output_folder`): a run writes only into a new or
empty folder, a folder of its own kind (continued with resume), or any folder with overwrite; the
user's own files are never replaced without being asked.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zennas.errors import ConfigError, OutputError


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


# -- output folders --------------------------------------------------------------------------------
RUN_MARKER = "zennas-run.json"  # written into an output folder when a run claims it
RUN_MARKER_FORMAT = "zennas-run"


@dataclass(frozen=True)
class RunKind:
    """What one kind of run (a search, a training task) keeps in its output folder."""

    name: str  # stored in the marker: "search", "train-classification", ...
    label: str  # in messages: "a search", "a training checkpoint"
    checkpoint: str | None  # the file a resumed run continues from; None: the run cannot be resumed
    files: tuple[str, ...]  # every name the run writes (glob patterns allowed); --overwrite deletes these first
    recognise: Callable[[Path], bool] | None = None  # a folder of this kind written before the marker existed


def json_field(path: str | os.PathLike, key: str) -> Any:
    """`key` of the JSON object in `path`, or None when the file is missing, unreadable or not such an object."""
    try:
        data = read_json_file(path, str(path), ConfigError)
    except ConfigError:
        return None
    return data.get(key) if isinstance(data, dict) else None


def _marker_kind(out: Path) -> str | None:
    """The kind named by `out`'s marker; None without one."""
    path = out / RUN_MARKER
    if not path.exists():
        return None
    data = read_json_file(path, f"run marker {str(path)!r}", ConfigError)
    if not isinstance(data, dict) or data.get("format") != RUN_MARKER_FORMAT or not isinstance(data.get("kind"), str):
        raise ConfigError(f"{str(path)!r} is not a zennas run marker; move it away or choose another --out")
    return data["kind"]


def _listing(out: Path) -> list[str]:
    """Names in `out` other than the marker (and a marker being written right now by another rank)."""
    try:
        names = sorted(p.name for p in out.iterdir())
    except OSError as exc:
        raise OutputError(f"cannot list output folder {str(out)!r}: {exc.strerror or exc}") from None
    return [n for n in names if n != RUN_MARKER and not n.startswith(f".{RUN_MARKER}.")]


def claim_output_folder(
    out: str | os.PathLike, kind: RunKind, *, resume: bool = False, overwrite: bool = False
) -> Path:
    """Make `out` the output folder of a run of `kind` (one-line ZennasError otherwise) and return it.

    - `out` must not be a file; a new folder is created (OutputError when that is not possible).
    - A folder holding a run of `kind` (its marker names `kind`, or `kind.recognise` accepts it) is
      continued with `resume` (it must hold `kind.checkpoint`) and refused without it.
    - A non-empty folder holding anything else is refused, with `resume` too.
    - `overwrite` starts afresh in any folder: the files the run writes (`kind.files`) are deleted
      first, so that a later `resume` continues the new run; other files are left alone.
    A refusal modifies nothing. A fresh start writes the marker, which also proves the folder writable.
    """
    out = Path(out)
    if resume and overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite starts it afresh: give one of them")
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {str(out)!r} is a file, not a folder; give a folder path (a new one, for example)")
    names = _listing(out) if out.is_dir() else []
    marked = _marker_kind(out) if out.is_dir() else None
    same = marked == kind.name or (marked is None and bool(names) and kind.recognise is not None
                                   and kind.recognise(out))  # fmt: skip
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    if marked is not None and not same:
        held = f"holds a zennas {marked} run ({RUN_MARKER}), not a {kind.name} run"
    else:
        held = f"holds files that are not {kind.label} ({shown})" if names else "is empty"
    if resume:
        _check_resumable(out, kind, same, held)
        return out
    if same and names and not overwrite:
        if kind.checkpoint is not None and (out / kind.checkpoint).is_file():
            raise ConfigError(
                f"{str(out)!r} already holds {kind.label}: add --resume to continue it, --overwrite to start afresh "
                "there, or choose another --out"
            )
        raise ConfigError(
            f"{str(out)!r} already holds the files of a {kind.name} run that cannot be resumed: add --overwrite to "
            "start afresh there, or choose another --out"
        )
    if names and not same and not overwrite:
        raise ConfigError(
            f"{str(out)!r} {held}: choose a new or empty --out, or add --overwrite to write there (the files this "
            "run writes are replaced, others are left alone)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create output folder {str(out)!r}: {exc.strerror or exc}; choose another --out"
        ) from None
    if overwrite:
        _delete_run_files(out, kind)
    atomic_write_json(out / RUN_MARKER, {"format": RUN_MARKER_FORMAT, "version": 1, "kind": kind.name})
    return out


def _check_resumable(out: Path, kind: RunKind, same: bool, held: str) -> None:
    """`resume` asked: `out` must hold a checkpoint of `kind` and take writes; nothing is modified."""
    if not out.is_dir():
        raise ConfigError(f"--resume: {str(out)!r} does not exist, so there is no run to continue; drop --resume")
    if not same:
        raise ConfigError(f"--resume: {str(out)!r} {held}, so there is no {kind.name} run to continue")
    if kind.checkpoint is None:
        raise ConfigError(f"--resume: a {kind.name} run cannot be resumed; add --overwrite to start it afresh")
    if not (out / kind.checkpoint).is_file():
        raise ConfigError(
            f"--resume: {str(out)!r} holds no {kind.checkpoint} to continue from (the run stopped before its first "
            "checkpoint, or it was removed); add --overwrite instead of --resume to start afresh there"
        )
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {str(out)!r} (read-only or not permitted); copy the run somewhere writable")


def _delete_run_files(out: Path, kind: RunKind) -> None:
    """--overwrite: the files a run of `kind` writes, its checkpoint first (so no half-deleted run resumes)."""
    patterns = [kind.checkpoint, *kind.files] if kind.checkpoint else list(kind.files)
    for pattern in patterns:
        for path in sorted(out.glob(pattern)):
            if path.is_file() or path.is_symlink():
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    raise OutputError(f"--overwrite cannot remove {str(path)!r}: {exc.strerror or exc}") from None
