"""Command-line options generated from a config dataclass: one option per field.

The field gives the option its name (`--batch-size` for `batch_size`), its default, whether it is
required (a field without a default) and, from its annotation, its value type; a `Flag` adds what
the dataclass does not know: help, a range or a choice, and other spellings (`-P`). A field added to
a config is on the command line at once, with the config's default, and no default is written twice.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import click

from zennas.cli.common import F
from zennas.cli.options import options

_BASIC_TYPES = {int: click.INT, float: click.FLOAT, str: click.STRING}


@dataclasses.dataclass(frozen=True)
class Flag:
    """How one config field shows on the command line (its name and default come from the field)."""

    help: str | None = None
    type: click.ParamType | None = None  # default: from the field's annotation
    decls: tuple[str, ...] = ()  # spellings instead of --field-name, e.g. ("--ids-per-batch", "-P")


def _value_type(annotation: Any) -> Any:
    """The one type of `X` or `X | None`."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return annotation


def field_option(field: dataclasses.Field, kind: Any, flag: Flag) -> Callable[[F], F]:
    """The click option of one dataclass field."""
    name = f"--{field.name.replace('_', '-')}"
    required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    default = None if required else field.default
    decls = flag.decls or (name,)
    if kind is bool:
        if default and "/" not in decls[0]:  # on by default: the option is the way to turn it off
            decls = (f"{decls[0]}/--no-{decls[0][2:]}", *decls[1:])
        return click.option(*decls, field.name, is_flag=True, default=bool(default), show_default=bool(default),
                            help=flag.help)  # fmt: skip
    value: dict[str, Any] = {"required": True}
    if not required:  # click 8.3 counts an explicit default=None as a value: a required option must have none
        value = {"default": default, "show_default": default is not None}
    return click.option(*decls, field.name, type=flag.type or _BASIC_TYPES[kind], help=flag.help, **value)


def config_options(
    config: type, flags: Mapping[str, Flag], shared: Mapping[str, Flag] = types.MappingProxyType({})
) -> Callable[[F], F]:
    """Options for every field of the dataclass `config`, in field order, refined by `flags[name]`,
    else by `shared[name]` (what several configs' fields of that name have in common).

    A name in `flags` that is no field of `config` is refused, so that a renamed field cannot leave
    its flag behind unnoticed.
    """
    fields = dataclasses.fields(config)
    unknown = set(flags) - {f.name for f in fields}
    if unknown:
        raise TypeError(f"{config.__name__} has no field {', '.join(sorted(unknown))}")
    hints = typing.get_type_hints(config)
    return options(
        *(field_option(f, _value_type(hints[f.name]), flags.get(f.name) or shared.get(f.name, Flag())) for f in fields)
    )
