"""Architecture dialects: text <-> :class:`ArchSpec`.

Dialects register themselves here; :func:`parse` takes an explicit dialect or detects it from
the text's *syntax* (never from block names alone) and refuses ambiguous text.
"""

from __future__ import annotations

from typing import Protocol

from zennas.arch.ir import ArchSpec, BlockSpec
from zennas.arch.limits import check_text_size
from zennas.errors import ArchSyntaxError, UnknownDialectError, UnknownTokenError, excerpt
from zennas.registry import Registry, family_modules


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


# The built-in dialect modules register themselves when the first lookup imports them.
DIALECTS: Registry[Dialect] = Registry(
    "dialect",
    family_modules("zennas.arch"),
    error=UnknownDialectError,
)


def register_dialect(dialect: Dialect) -> Dialect:
    """Add a dialect to the registry; duplicate names are an error."""
    return DIALECTS.register(dialect.name, dialect)


def get_dialect(name: str) -> Dialect:
    """Look up a dialect by name."""
    return DIALECTS.get(name)


def list_dialects() -> list[str]:
    """Names of all registered dialects."""
    return DIALECTS.names()


def parse(text: str, dialect: str | None = None, *, rechain: bool = False) -> ArchSpec:
    """Parse `text` in `dialect`, or in the one dialect whose syntax it matches."""
    DIALECTS.load()
    if not isinstance(text, str):
        raise ArchSyntaxError(f"architecture text must be a string, got {type(text).__name__}")
    check_text_size(text)  # before anything reads the text
    if not text.strip():
        raise ArchSyntaxError("empty architecture text; give a string such as 'SuperConvK3BNRELU(3,16,2,1)...'")
    if dialect is not None:
        return get_dialect(dialect).parse(text, rechain=rechain)
    candidates = [d for _, d in DIALECTS.items() if d.looks_like(text)]
    if not candidates:
        raise UnknownDialectError(
            f"text matches no dialect's syntax (starts with {excerpt(text.strip(), 40)!r}); "
            f"dialects: {', '.join(DIALECTS.names())}"
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


__all__ = [
    "DIALECTS",
    "ArchSpec",
    "BlockSpec",
    "Dialect",
    "get_dialect",
    "list_dialects",
    "parse",
    "register_dialect",
]
