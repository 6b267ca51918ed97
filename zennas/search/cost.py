"""The cost model of a search: a candidate's layers, params, MACs and table latency against the budgets.

`BudgetCost.measure` computes the cheap figures of a candidate in the cheapest-first order (layers,
then params and MACs by analytic counting, then the table's latency) and stops at the first budget
it breaks. The latency comes from a NetworkLatency (zennas.search.interfaces) at the batch the
budget holds at, which the wiring resolves once (zennas.search.budget.latency_batch_size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zennas.arch import ArchSpec
from zennas.counting import count
from zennas.errors import LatencyError
from zennas.search.budget import Budgets
from zennas.search.interfaces import NetworkLatency


@dataclass(frozen=True, eq=False)
class BudgetCost:
    """Analytic counts at `resolution` with `num_classes` outputs, and `latency` (None: no table)."""

    budgets: Budgets
    resolution: int
    num_classes: int
    use_se: bool | None = None
    latency: NetworkLatency | None = None

    def measure(self, spec: ArchSpec) -> tuple[dict[str, Any], list[str]]:
        """Cheap figures of `spec`, cheapest first, stopping at the first broken budget: (metrics, violated).

        `violated` holds one of layers, params, macs, latency, or table (an operator the latency
        table cannot cost: such a candidate is dropped, never guessed).
        """
        b = self.budgets
        cx = count(spec, resolution=self.resolution, num_classes=self.num_classes, use_se=self.use_se)
        metrics: dict[str, Any] = {"layers": cx.layers, "macs": cx.macs, "params": cx.params}
        if b.max_layers is not None and cx.layers > b.max_layers:
            return metrics, ["layers"]
        if b.convention != "correct":  # ZenNAS searched against its repository counts, without SE; TinyNAS with its SE
            use_se = False if b.convention == "zennas" else self.use_se
            cc = count(
                spec, resolution=self.resolution, num_classes=self.num_classes, use_se=use_se, convention=b.convention
            )
            metrics["budget_macs"], metrics["budget_params"] = cc.flops, cc.convention_params
        budget_params = metrics.get("budget_params", cx.params)
        budget_macs = metrics.get("budget_macs", cx.macs)
        if b.params is not None and budget_params > b.params:
            return metrics, ["params"]
        if b.macs is not None and budget_macs > b.macs:
            return metrics, ["macs"]
        if self.latency is not None:
            batch = self.latency.batch_size
            try:
                ms = self.latency.latency_ms_per_batch(spec)
            except LatencyError as error:  # an operator far outside the table: cannot be costed, so not feasible
                metrics["note"] = str(error)
                return metrics, ["table"]
            metrics["latency_ms_per_image"] = ms / batch
            # `not <=`: a NaN latency must break the budget (`NaN > budget` is False); predict refuses NaN too.
            if b.latency_ms_per_image is not None and not ms / batch <= b.latency_ms_per_image:
                return metrics, ["latency"]
        return metrics, []
