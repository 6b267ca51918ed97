"""A search's constraints and where each came from: the caller, the space's preset, the space, a default.

A preset names one published search setting (Zen-NAS's scripts, REFERENCE 5.3), which fixes layers,
params, FLOPs, latency, resolution and classes together, in the counting convention those scripts used
(the space's `budget_convention`: ZenNAS repository counts without SE, REFERENCE 2.2). Every constraint
the space or its preset states applies unless the caller gives its own value, which then overrides
that one constraint alone. The result records, per constraint, where its value came from, so that a
search can say so before it starts and record it with its result.

Two defaults are decided here:
- A latency budget stated by a preset was a V100 FP16 time at batch 64 (REFERENCE 7.1). Without a
  table, the shipped V100 table costs it; with another table the same number is applied to that table.
- Zen-Score grows with depth without bound (every BN layer adds ln sigma_i), so a search with a budget
  but no layer cap drives toward very deep, narrow networks; Zen-NAS's scripts always set a cap with
  the budget. Without one from the caller, the space or a preset, the cap is borrowed from the space's
  published preset of the same kind of budget (latency first, then FLOPs, then params) at the same
  resolution: the nearest budget at or above the one asked for, else the largest published one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zennas.errors import ConfigError
from zennas.search.budget import Budgets, latency_batch_size

PUBLISHED_LATENCY_GPU = "V100"  # Zen-NAS states its latency budgets as V100 FP16 ms/image at batch 64 (REFERENCE 7.1)
PUBLISHED_LATENCY_BATCH = 64
# Space constraint key -> constraint name (Budgets field, or a Problem field for resolution and classes).
SPACE_KEYS = {
    "budget_latency_ms_per_image": "latency",
    "budget_flops": "macs",
    "budget_model_size": "params",
    "max_layers": "layers",
    "resolution": "resolution",
    "num_classes": "num_classes",
}
COUNT_NAMES = ("macs", "params")
ORDER = ("latency", "macs", "params", "layers", "resolution", "num_classes")  # as printed
SOURCES = ("given", "preset", "space", "default", "borrowed", "none")
_BUDGET_FIELDS = {"latency": "latency_ms_per_image", "macs": "macs", "params": "params", "layers": "max_layers"}
_KIND_WORDS = {"latency": "latency", "macs": "FLOPs", "params": "params"}


@dataclass(frozen=True)
class Origin:
    """Where one constraint's value came from.

    source: given (by the caller), preset, space (its own definition), default (the dialect's),
    borrowed (a layer cap taken from the preset `preset`), none (no value: `note` says why).
    """

    source: str
    preset: str | None = None  # the preset it came from, whose value it overrides, or whose cap it borrows
    replaced: float | None = None  # the value of the space or preset that a given value overrides
    note: str = ""  # more, in words: why a cap was borrowed, how a preset's latency is applied

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"unknown constraint origin {self.source!r}; choose one of {', '.join(SOURCES)}")

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "preset": self.preset, "replaced": self.replaced, "note": self.note}


@dataclass(frozen=True)
class Constraints:
    """What `resolve_constraints` decided: budgets, resolution, classes, the table, and each one's origin."""

    budgets: Budgets
    resolution: int
    num_classes: int
    origins: Mapping[str, Origin]  # by constraint name (ORDER), plus "table" when the table was not given
    table: Any = None  # the LatencyTable that costs the latency budget (None: no table)
    space: str = ""
    unchecked: Mapping[str, Any] = field(default_factory=dict)  # published constraints no search checks

    def origin_items(self) -> tuple[tuple[str, Origin], ...]:
        """The origins as sorted pairs (Problem.origins)."""
        return tuple(sorted(self.origins.items()))


def resolve_constraints(
    space: Any, *, table: Any = None, table_for_gpu: Callable[[str], Any] | None = None,
    latency_ms_per_image: float | None = None, latency_batch_size: int | None = None, macs: int | None = None,
    params: int | None = None, max_layers: int | None = None, convention: str | None = None,
    resolution: int | None = None, num_classes: int | None = None,
) -> Constraints:  # fmt: skip
    """Every constraint of a search in `space` (a preset already applied); given values override the space's.

    `table` is the LatencyTable the caller chose (None: none, or the shipped V100 table when the
    preset states a latency budget, which `table_for_gpu` opens: zennas.latency.shipped.table_for_gpu,
    as zennas.wiring passes it). `convention` counts every MACs/params budget (None: the space's
    convention while the space or its preset states such a budget, else correct counts).
    """
    from zennas.models import DIALECT_DEFAULTS

    preset = getattr(space, "preset", None)
    stated = _stated(space, preset)
    given = {"latency": latency_ms_per_image, "macs": macs, "params": params, "layers": max_layers,
             "resolution": resolution, "num_classes": num_classes}  # fmt: skip
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for name in ORDER:
        if given[name] is not None:
            values[name] = given[name]
            was = stated.get(name)
            replaced = was[0] if was is not None and was[0] != given[name] else None
            origins[name] = Origin("given", was[1] if replaced is not None else None, replaced)
        elif name in stated:
            values[name], where = stated[name]
            origins[name] = Origin("preset" if where else "space", where)
    default_res, default_classes = DIALECT_DEFAULTS.get(space.dialect, (224, 1000))
    for name, default in (("resolution", default_res), ("num_classes", default_classes)):
        if name not in values:
            values[name], origins[name] = default, Origin("default")
    convention = _convention(space, preset, stated, origins, convention)
    table, table_origin = _latency_table(origins.get("latency"), stated.get("latency"), table, table_for_gpu)
    if table_origin is not None:
        origins["table"] = table_origin
    batch = _latency_batch(table, latency_batch_size)
    if table is not None and origins.get("latency", Origin("none")).source in ("preset", "space"):
        origins["latency"] = _applied_to(origins["latency"], table, batch)
    _check_layers(space, values.get("layers"), origins.get("layers"))
    if "layers" not in values:
        values["layers"], origins["layers"] = _borrowed_cap(space, values, int(values["resolution"]), table)
    budgets = Budgets(
        latency_ms_per_image=_number(values.get("latency")),
        latency_batch_size=batch,
        macs=_count(values.get("macs")), params=_count(values.get("params")), max_layers=_count(values["layers"]),
        convention=convention,
    )  # fmt: skip
    unchecked = {k: v for k, v in space.constraints.items() if k not in SPACE_KEYS}
    return Constraints(
        budgets, int(values["resolution"]), int(values["num_classes"]), origins, table,
        getattr(space, "base_name", space.name), unchecked,
    )  # fmt: skip


def _stated(space: Any, preset: str | None) -> dict[str, tuple[Any, str | None]]:
    """name -> (value, the preset that states it or None for the space itself) of every known constraint."""
    plain = space.with_preset(None).constraints if preset is not None else space.constraints
    out = {}
    for key, value in space.constraints.items():
        if key in SPACE_KEYS:
            from_preset = preset is not None and plain.get(key) != value
            out[SPACE_KEYS[key]] = (value, preset if from_preset else None)
    return out


def _convention(
    space: Any, preset: str | None, stated: dict, origins: dict[str, Origin], convention: str | None
) -> str:
    """The counting of MACs/params budgets: the given one, else the space's while it states a count budget."""
    from zennas.counting import CONVENTIONS

    own = getattr(space, "budget_convention", "correct")
    states_counts = [n for n in COUNT_NAMES if n in stated]
    if convention is not None and convention not in CONVENTIONS:
        raise ConfigError(f"unknown counting convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    if convention is None:
        return own if states_counts else "correct"
    still = [n for n in states_counts if origins[n].source != "given"]
    if still and convention != own:
        where = f"preset {preset}" if stated[still[0]][1] else f"space {getattr(space, 'base_name', space.name)}"
        raise ConfigError(
            f"{where} states its {' and '.join(_KIND_WORDS[n] for n in still)} budget in {own} counts, not "
            f"{convention}: count it as stated, or give that budget too"
        )
    return convention


def _latency_batch(table: Any, given: int | None) -> int | None:
    """The batch of the latency budget (zennas.search.budget.latency_batch_size); None without a table."""
    return latency_batch_size(table, given) if table is not None else None


def _latency_table(
    latency: Origin | None, stated: tuple[Any, str | None] | None, table: Any,
    table_for_gpu: Callable[[str], Any] | None,
) -> tuple[Any, Origin | None]:  # fmt: skip
    """(the table that costs the latency budget, its origin when not given).

    Without a table, a latency budget the space or preset states (or a given one that overrides it)
    is costed by the shipped table of the GPU the published budgets were stated for.
    """
    if latency is None or table is not None:
        return table, None
    if stated is None or table_for_gpu is None:
        raise ConfigError("a latency budget needs a latency table; choose one (zennas tables lists the shipped ones)")
    chosen = table_for_gpu(PUBLISHED_LATENCY_GPU)
    note = f"the {PUBLISHED_LATENCY_GPU} table: the GPU the published latency budget was stated for"
    return chosen, Origin("preset" if stated[1] else "space", stated[1], note=note)


def _applied_to(origin: Origin, table: Any, batch: int) -> Origin:
    """A published latency budget costed by `table`: say so when the table is not a V100 one or the batch differs."""
    family = str(table.header.get("device", {}).get("family", "")).upper()
    if family == PUBLISHED_LATENCY_GPU and batch == PUBLISHED_LATENCY_BATCH:
        return origin
    note = (
        f"stated for {PUBLISHED_LATENCY_GPU} FP16 at batch {PUBLISHED_LATENCY_BATCH}; applied as it is to "
        f"table {table.name} at batch {batch}"
    )
    return Origin(origin.source, origin.preset, origin.replaced, note)


def _check_layers(space: Any, cap: int | None, origin: Origin | None) -> None:
    """A given cap above the space's own must be one the space can lift (Problem.search_space lifts it)."""
    own = getattr(space, "max_layers", None)
    if cap is None or own is None or cap <= own or origin is None or origin.source != "given":
        return
    if not hasattr(space, "with_options"):
        raise ConfigError(
            f"space {space.name!r} caps networks at {own} layers in its definition; a cap of {cap} cannot lift it"
        )


def _borrowed_cap(space: Any, values: dict[str, Any], resolution: int, table: Any) -> tuple[int | None, Origin]:
    """The layer cap of the space's published preset nearest the asked budget (module docstring)."""
    asked = next((name for name in ("latency", "macs", "params") if values.get(name) is not None), None)
    name = getattr(space, "base_name", space.name)
    if asked is None:
        return None, Origin("none", note="no budget asks for one")
    key = next(k for k, v in SPACE_KEYS.items() if v == asked)
    published, caps = [], []
    for preset in getattr(space, "presets", ()):
        c = space.with_preset(preset).constraints
        if "max_layers" in c and c.get("resolution", resolution) == resolution:
            caps.append((c["max_layers"], preset))
            if key in c:
                published.append((float(c[key]), c["max_layers"], preset))
    kind = _KIND_WORDS[asked]
    if not published and caps:  # no preset of this kind: the largest cap published for the space
        cap, preset = max(caps)
        note = f"the largest published layer cap of the space, which publishes no {kind} preset at {resolution} px"
        return int(cap), Origin("borrowed", preset, note=note)
    if not published:
        return None, Origin("none", note=f"space {name} publishes no preset with a layer cap at {resolution} px")
    want = float(values[asked])
    published.sort()
    above = [p for p in published if p[0] >= want]
    shown = _show(asked, want)
    if above:
        budget, cap, preset = above[0]
        note = f"the nearest published {kind} budget at or above {shown}"
    else:
        budget, cap, preset = published[-1]
        note = f"the largest published {kind} budget, {_show(asked, budget)}, is below {shown}"
    family = str(getattr(table, "header", {}).get("device", {}).get("family", "")).upper() if table else ""
    if asked == "latency" and family != PUBLISHED_LATENCY_GPU:
        note += f" (published budgets are {PUBLISHED_LATENCY_GPU} times)"
    return int(cap), Origin("borrowed", preset, note=note)


def _show(name: str, value: float) -> str:
    return f"{value:g} ms" if name == "latency" else f"{value:,.0f}"


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _count(value: Any) -> int | None:
    if value is None:
        return None
    if not math.isfinite(float(value)):
        raise ConfigError(f"a count budget must be finite, got {value!r}")
    return round(float(value))


def describe_constraints(c: Constraints, names: Mapping[str, str] | None = None) -> str:
    """One line: every constraint, its value and where it came from.

    `names` says how the caller sets each constraint (e.g. {"params": "--params-budget"}): a given
    value is attributed to it, and a default one says it overrides it.
    """
    names = dict(names or {})
    b, parts, named = c.budgets, [], set()

    def said(preset: str | None) -> str:
        if preset in named:
            return "preset"
        named.add(preset)
        return f"preset {preset}"

    values = {"latency": b.latency_ms_per_image, "macs": b.macs, "params": b.params, "layers": b.max_layers,
              "resolution": c.resolution, "num_classes": c.num_classes}  # fmt: skip
    for name in ORDER:
        origin = c.origins.get(name)
        if origin is None:
            continue
        setter = names.get(name, f"given {name}")
        if origin.source == "none":
            if any(v is not None for v in (b.latency_ms_per_image, b.macs, b.params)):
                parts.append(f"layers: no cap ({origin.note}; {setter} sets one)")
            elif not parts:
                parts.append("no budget")
            continue
        label, value = _label(name, values[name], b, c)
        if origin.source == "given":
            where = setter
            if origin.replaced is not None:
                where += f", overrides {'preset' if origin.preset else 'space'}'s {_format(name, origin.replaced)}"
        elif origin.source == "preset":
            where = said(origin.preset)
        elif origin.source == "borrowed":
            where = f"from {said(origin.preset)}, {origin.note}; {setter} overrides"
        else:
            where = f"space {c.space}" if origin.source == "space" else origin.source
        if origin.note and origin.source in ("preset", "space", "given"):
            where += f"; {origin.note}"
        if name in COUNT_NAMES and b.convention != "correct":
            where = f"{b.convention} counts; {where}"
        parts.append(f"{label}{value} ({where})")
    table = c.origins.get("table")
    if table is not None and c.table is not None:
        parts.append(f"table {c.table.name} ({table.note}; {names.get('table', 'a given table')} overrides)")
    for key, value in c.unchecked.items():
        parts.append(f"{key} {value:g} (space {c.space}; not checked by the search)")
    return ", ".join(parts)


def _label(name: str, value: Any, b: Budgets, c: Constraints) -> tuple[str, str]:
    """('params <= ', '1,000,000') and the like."""
    if name == "latency":
        return "latency <= ", f"{value:g} ms/image at batch {b.latency_batch_size}"
    if name == "macs":
        return ("MACs <= " if b.convention == "correct" else "FLOPs <= "), f"{value:,}"
    if name in ("params", "layers"):
        return f"{name} <= ", f"{value:,}"
    return ("classes " if name == "num_classes" else f"{name} "), f"{value}"


def _format(name: str, value: Any) -> str:
    if name == "latency":
        return f"{value:g} ms"
    return f"{value:,.0f}" if name in COUNT_NAMES else f"{value}"
