"""Architecture dialects: text <-> :class:`ArchSpec`.

Dialects register themselves here; :func:`parse` takes an explicit dialect or detects it from
the text's *syntax* (never from block names alone) and refuses ambiguous text.
"""

from __future__ import annotations

from typing import Protocol

from zennas._once import Once
from zennas.arch.ir import ArchSpec, BlockSpec
from zennas.arch.limits import check_text_size
from zennas.errors import ArchSyntaxError, UnknownDialectError, UnknownTokenError, excerpt


class Dialect(Protocol):
    """What every dialect module provides."""

    name: str
    description: str

    def parse(self, text: str, *, rechain: bool = False) -> ArchSpec:
        """Parse strictly; raise an ArchSyntaxError subclass naming position and token."""
        ...

    def format(self, spec: ArchSpec, *, canonical: bool = False) -> str:
        """Print `spec`; canonical=False re-emits imported labels/extras byte-identically."""
        ...

    def looks_like(self, text: str) -> bool:
        """Cheap syntactic test used by auto-detection (true for any text it might accept)."""
        ...


_DIALECTS: dict[str, Dialect] = {}


def register_dialect(dialect: Dialect) -> Dialect:
    """Add a dialect to the registry; duplicate names are an error."""
    if dialect.name in _DIALECTS:
        raise ValueError(f"dialect {dialect.name!r} is already registered")
    _DIALECTS[dialect.name] = dialect
    return dialect


def get_dialect(name: str) -> Dialect:
    """Look up a dialect by name."""
    _load_builtin_dialects()
    try:
        return _DIALECTS[name]
    except KeyError:
        raise UnknownDialectError(f"unknown dialect {name!r}; choose one of: {', '.join(sorted(_DIALECTS))}") from None


def list_dialects() -> list[str]:
    """Names of all registered dialects."""
    _load_builtin_dialects()
    return sorted(_DIALECTS)


def parse(text: str, dialect: str | None = None, *, rechain: bool = False) -> ArchSpec:
    """Parse `text` in `dialect`, or in the one dialect whose syntax it matches."""
    _load_builtin_dialects()
    if not isinstance(text, str):
        raise ArchSyntaxError(f"architecture text must be a string, got {type(text).__name__}")
    check_text_size(text)  # before anything reads the text
    if not text.strip():
        raise ArchSyntaxError("empty architecture text; give a string such as 'SuperConvK3BNRELU(3,16,2,1)...'")
    if dialect is not None:
        return get_dialect(dialect).parse(text, rechain=rechain)
    candidates = [d for d in _DIALECTS.values() if d.looks_like(text)]
    if not candidates:
        raise UnknownDialectError(
            f"text matches no dialect's syntax (starts with {excerpt(text.strip(), 40)!r}); "
            f"dialects: {', '.join(sorted(_DIALECTS))}"
        )
    parsed: list[ArchSpec] = []
    errors: list[ArchSyntaxError] = []
    for candidate in candidates:
        try:
            parsed.append(candidate.parse(text, rechain=rechain))
        except ArchSyntaxError as error:
            errors.append(error)
    if len(parsed) == 1:
        return parsed[0]
    if len(parsed) > 1:
        names = ", ".join(spec.dialect for spec in parsed)
        raise UnknownDialectError(f"text is valid in several dialects ({names}); pass dialect= to choose one")
    # No dialect accepted it: report the error of the parser that got furthest; at equal
    # positions prefer a dialect that knew the token over one that did not.
    best = max(errors, key=lambda e: (-1 if e.position is None else e.position, not isinstance(e, UnknownTokenError)))
    raise best


def _import_builtin_dialects() -> None:
    """Import the dialect modules (they register themselves)."""
    from zennas.arch import binas, genet, nb201, tinynas, zennas_dialect  # noqa: F401


_load_builtin_dialects = Once(_import_builtin_dialects)


__all__ = [
    "ArchSpec",
    "BlockSpec",
    "Dialect",
    "get_dialect",
    "list_dialects",
    "parse",
    "register_dialect",
]
