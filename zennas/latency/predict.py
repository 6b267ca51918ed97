"""Latency prediction from a table: sum the network's operators, then the table's fitted correction.

latency_ms_per_batch = correction(sum over operators of table.op_ms(op, batch)); the correction is
the identity unless the table carries one fitted by `zennas latency validate --fit`
(intercept_ms + slope * sum). Operator kinds the table does not tabulate (e.g. SE and the head in
the TinyNAS V100 table) are left out and reported in `not_costed`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from zennas.arch import ArchSpec
from zennas.errors import LatencyError
from zennas.latency.ops import Op, network_op_groups
from zennas.latency.table import LatencyTable


@dataclass(frozen=True)
class LatencyPrediction:
    """A predicted latency and how it was obtained."""

    latency_ms_per_batch: float
    latency_ms_per_image: float
    batch_size: int
    resolution: int
    table: str
    table_sum_ms_per_batch: float  # before the correction
    corrected: bool
    operators: int
    extrapolated_operators: int
    not_costed: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return dict(self.__dict__)


def apply_correction(table: LatencyTable, total_ms: float) -> float:
    """The table's fitted correction of an additive sum (identity when it has none).

    A latency that is not finite and positive is a LatencyError, never a figure: NaN passes every
    `latency > budget` test, and zero or a negative time would pass every budget.
    """
    correction = table.correction
    value = total_ms if not correction else correction["intercept_ms"] + correction["slope"] * total_ms
    if not (0 < total_ms < math.inf and 0 < value < math.inf):
        raise LatencyError(
            f"latency table {table.name!r} gives {value:g} ms per batch for this network (operator sum {total_ms:g} "
            "ms), not a finite positive time: it costs none of the network's operators or its figures are corrupt; "
            "use another table"
        )
    return value


def group_ms(table: LatencyTable, group: tuple[Op, ...], batch: int) -> tuple[float, int, dict[str, int]]:
    """(ms, extrapolated operators, {kind: count} not costed) of one block's operators."""
    kinds = table.op_kinds
    total, extrapolated = 0.0, 0
    skipped: Counter[str] = Counter()
    for op in group:
        if op.kind not in kinds:
            skipped[op.kind] += 1
            continue
        ms, flag = table.op_ms(op, batch)
        total += ms
        extrapolated += flag
    return total, extrapolated, dict(skipped)


GROUP_MEMO_LIMIT = 500_000  # memoised block sums per table before the memo is cleared (bounded memory)


def _entry(table: LatencyTable, group: tuple[Op, ...], batch: int) -> tuple:
    """(group, ms, extrapolated, {kind: not costed}) of one block's operators, memoised on the table.

    Keyed by identity: the group tuples are memoised by zennas.latency.ops and each entry keeps its
    group alive, so an id cannot be reused while its entry exists; this avoids hashing every operator.
    """
    memo = table.group_memo
    entry = memo.get((id(group), batch))
    if entry is None or entry[0] is not group:
        if len(memo) >= GROUP_MEMO_LIMIT:
            memo.clear()
        entry = memo[(id(group), batch)] = (group, *group_ms(table, group, batch))
    return entry


def latency_ms_per_batch(
    spec: ArchSpec, table: LatencyTable, *, resolution: int, batch_size: int, num_classes: int = 0,
    use_se: bool | None = None,
) -> float:  # fmt: skip
    """`predict(...).latency_ms_per_batch` without the report: the call a search makes per candidate."""
    groups = network_op_groups(spec, resolution=resolution, num_classes=num_classes, use_se=use_se)
    total = 0.0
    for group in groups:
        total += _entry(table, group, batch_size)[1]
    return apply_correction(table, total)


def predict(
    spec: ArchSpec,
    table: LatencyTable,
    *,
    resolution: int,
    num_classes: int = 0,
    use_se: bool | None = None,
    batch_size: int | None = None,
) -> LatencyPrediction:
    """Predicted latency of `spec` from `table` (batch: the table's budget batch by default)."""
    batch = table.batch_size_or_default(batch_size)
    groups = network_op_groups(spec, resolution=resolution, num_classes=num_classes, use_se=use_se)
    total, extrapolated, operators = 0.0, 0, 0
    skipped: dict[str, int] = {}
    for group in groups:
        entry = _entry(table, group, batch)
        total += entry[1]
        extrapolated += entry[2]
        operators += len(group)
        for kind, n in entry[3].items():
            skipped[kind] = skipped.get(kind, 0) + n
    per_batch = apply_correction(table, total)
    return LatencyPrediction(
        latency_ms_per_batch=per_batch,
        latency_ms_per_image=per_batch / batch,
        batch_size=batch,
        resolution=resolution,
        table=table.name,
        table_sum_ms_per_batch=total,
        corrected=bool(table.correction),
        operators=operators,
        extrapolated_operators=extrapolated,
        not_costed=skipped,
    )
