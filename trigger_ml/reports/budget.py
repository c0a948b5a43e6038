"""Latency-budget profile: per-layer latency against an L1 budget, and resources against a part.

All functions are pure. Times are in ns; 1 bunch crossing (BX) = 25 ns.
The latency check is ``total_ns <= budget_ns`` (being exactly at the budget passes);
a tolerance of 1e-9 ns absorbs float rounding of ``cycles * clock_period_ns`` and is far
below one clock cycle. The resource check is ``used <= part total`` in integers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from trigger_ml.core.errors import ConfigError
from trigger_ml.reports.parts import RESOURCE_KEYS, lookup_part

BX_NS = 25.0
_NS_TOLERANCE = 1e-9


@dataclass(frozen=True)
class LayerLatency:
    """Input: one layer's latency in clock cycles and where the number came from."""

    name: str
    cycles: int
    source: str  # e.g. "parsed (Vitis HLS csynth)", "estimated (da4ml)", "measured (verilator)"


@dataclass(frozen=True)
class LayerRow:
    """Output: one layer's latency in cycles and ns, and the running total."""

    name: str
    cycles: int
    ns: float
    cumulative_ns: float
    source: str


@dataclass(frozen=True)
class BudgetProfile:
    """Latency (and optionally resource) verdict of one design against a budget."""

    layers: tuple[LayerRow, ...]
    clock_period_ns: float
    ii_cycles: int
    total_cycles: int
    total_source: str  # "sum of layers" or the source of an explicit total
    total_ns: float
    budget_ns: float
    slack_ns: float
    latency_passed: bool
    part: str | None = None
    resources: dict[str, int] | None = None
    part_totals: dict[str, int] | None = None
    resource_percent: dict[str, float | None] = field(default_factory=dict)  # None: part has none of it
    resources_passed: bool | None = None  # None: no resources given

    @property
    def ii_ns(self) -> float:
        return self.ii_cycles * self.clock_period_ns

    @property
    def budget_bx(self) -> float:
        return self.budget_ns / BX_NS

    @property
    def passed(self) -> bool:
        """Latency within budget and, if resources were given, every resource within the part."""
        return self.latency_passed and self.resources_passed is not False

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {
            "layers": [
                {"name": r.name, "cycles": r.cycles, "ns": r.ns, "cumulative_ns": r.cumulative_ns, "source": r.source}
                for r in self.layers
            ],
            "clock_period_ns": self.clock_period_ns,
            "ii_cycles": self.ii_cycles,
            "ii_ns": self.ii_ns,
            "total_cycles": self.total_cycles,
            "total_source": self.total_source,
            "total_ns": self.total_ns,
            "budget_ns": self.budget_ns,
            "budget_bx": self.budget_bx,
            "slack_ns": self.slack_ns,
            "latency_passed": self.latency_passed,
            "part": self.part,
            "resources": self.resources,
            "part_totals": self.part_totals,
            "resource_percent": dict(self.resource_percent),
            "resources_passed": self.resources_passed,
            "passed": self.passed,
        }

    def render_table(self) -> Table:
        """A rich Table of the per-layer profile; the verdict and resources are in the caption."""
        verdict = "[green]PASS[/green]" if self.passed else "[red]FAIL[/red]"
        table = Table(title=f"Latency budget {self.budget_ns:g} ns ({self.budget_bx:g} BX): {verdict}")
        table.add_column("Layer")
        for col in ("Cycles", "ns", "Cumulative ns"):
            table.add_column(col, justify="right")
        table.add_column("Source")
        for row in self.layers:
            table.add_row(row.name, str(row.cycles), f"{row.ns:.3f}", f"{row.cumulative_ns:.3f}", row.source)
        table.add_section()
        table.add_row("total", str(self.total_cycles), f"{self.total_ns:.3f}", "", self.total_source, style="bold")
        lines = [
            f"clock {self.clock_period_ns:g} ns, II {self.ii_cycles} cycles ({self.ii_ns:g} ns), "
            f"slack {self.slack_ns:.3f} ns"
        ]
        if self.resources is not None:
            usage = ", ".join(
                f"{k} {v}/{(self.part_totals or {}).get(k, 0)} ({_fmt_pct(self.resource_percent.get(k))})"
                for k, v in self.resources.items()
            )
            lines.append(f"{self.part}: {usage}")
        table.caption = "\n".join(lines)
        return table


def _fmt_pct(percent: float | None) -> str:
    return "n/a" if percent is None else f"{percent:.1f} %"


def resolve_budget_ns(*, budget_ns: float | None = None, budget_bx: float | None = None) -> float:
    """The budget in ns from exactly one of ``budget_ns`` and ``budget_bx`` (1 BX = 25 ns)."""
    if (budget_ns is None) == (budget_bx is None):
        raise ConfigError("give the latency budget in ns (budget_ns) or in bunch crossings (budget_bx): exactly one")
    value = budget_ns if budget_ns is not None else float(budget_bx) * BX_NS  # type: ignore[arg-type]
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"latency budget must be a positive number of ns, got {value}")
    return float(value)


def layer_rows(layers: Iterable[LayerLatency | tuple[str, int, str]], clock_period_ns: float) -> tuple[LayerRow, ...]:
    """Per-layer ns and cumulative ns; accepts LayerLatency or (name, cycles, source) tuples."""
    rows: list[LayerRow] = []
    cumulative_cycles = 0
    for item in layers:
        layer = item if isinstance(item, LayerLatency) else LayerLatency(*item)
        if isinstance(layer.cycles, bool) or not isinstance(layer.cycles, int) or layer.cycles < 0:
            raise ConfigError(
                f"layer {layer.name!r}: latency must be a non-negative whole number of cycles, got {layer.cycles!r}"
            )
        cumulative_cycles += layer.cycles
        rows.append(
            LayerRow(
                name=layer.name,
                cycles=layer.cycles,
                ns=layer.cycles * clock_period_ns,
                cumulative_ns=cumulative_cycles * clock_period_ns,
                source=layer.source,
            )
        )
    return tuple(rows)


def resource_usage(resources: Mapping[str, int], part: str) -> tuple[dict[str, int], dict[str, float | None], bool]:
    """(part totals, percent of the part per resource, all within the part) for ``resources`` on ``part``."""
    totals = lookup_part(part).totals()
    unknown = sorted(set(resources) - set(RESOURCE_KEYS))
    if unknown:
        raise ConfigError(f"unknown resource name(s) {unknown}; use {list(RESOURCE_KEYS)}")
    percent: dict[str, float | None] = {}
    fits = True
    for key, used in resources.items():
        total = totals[key]
        if used < 0:
            raise ConfigError(f"resource {key} must be >= 0, got {used}")
        fits = fits and used <= total
        percent[key] = 100.0 * used / total if total else (0.0 if used == 0 else None)
    return totals, percent, fits


def build_budget_profile(
    layers: Iterable[LayerLatency | tuple[str, int, str]],
    clock_period_ns: float,
    ii_cycles: int,
    *,
    budget_ns: float | None = None,
    budget_bx: float | None = None,
    resources: Mapping[str, int] | None = None,
    part: str | None = None,
    total_cycles: int | None = None,
    total_source: str | None = None,
) -> BudgetProfile:
    """Profile per-layer latency against a budget (ns or BX) and, optionally, resources against a part.

    ``total_cycles`` overrides the sum of the layers (e.g. the csynth overall latency of a
    pipelined/dataflow design, where layers overlap); ``total_source`` then says where it came from.
    Passing ``resources`` requires ``part``.
    """
    if not (math.isfinite(clock_period_ns) and clock_period_ns > 0):
        raise ConfigError(f"clock period must be a positive number of ns, got {clock_period_ns}")
    if isinstance(ii_cycles, bool) or not isinstance(ii_cycles, int) or ii_cycles < 1:
        raise ConfigError(f"initiation interval must be a whole number of cycles >= 1, got {ii_cycles!r}")
    budget = resolve_budget_ns(budget_ns=budget_ns, budget_bx=budget_bx)
    rows = layer_rows(layers, clock_period_ns)
    if total_cycles is None:
        total, source = sum(r.cycles for r in rows), "sum of layers"
    else:
        if isinstance(total_cycles, bool) or not isinstance(total_cycles, int) or total_cycles < 0:
            raise ConfigError(f"total latency must be a non-negative whole number of cycles, got {total_cycles!r}")
        total, source = total_cycles, total_source or "given"
    total_ns = total * clock_period_ns

    if resources is not None and part is None:
        raise ConfigError("resources were given without an FPGA part to compare them with; pass part=")
    totals = lookup_part(part).totals() if part is not None else None
    percent = fits = None
    if resources is not None and part is not None:
        totals, percent, fits = resource_usage(resources, part)

    return BudgetProfile(
        layers=rows,
        clock_period_ns=float(clock_period_ns),
        ii_cycles=ii_cycles,
        total_cycles=total,
        total_source=source,
        total_ns=total_ns,
        budget_ns=budget,
        slack_ns=budget - total_ns,
        latency_passed=total_ns <= budget + _NS_TOLERANCE,
        part=part,
        resources=dict(resources) if resources is not None else None,
        part_totals=totals,
        resource_percent=percent or {},
        resources_passed=fits,
    )


def rtl_budget_search(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """The latency-budget search recorded in an RTL project's ``rtl_manifest.json`` (written by
    ``trigger-ml convert --flavor verilog --budget-ns/--budget-bx``), summarised for reports and scans.

    Returns None when the project was not built for a budget; else ``budget_ns``, ``budget_bx``,
    ``passed`` (measured latency within the budget), ``latency_cycles`` / ``latency_ns`` and their
    ``source`` (Verilator), ``clock_mhz``, ``delay_constraint``, the estimated worst stage delay and
    resources of the chosen design (labelled estimates), the cost rule, and ``candidates`` (every
    searched design: knobs, depth, latency, estimated LUT/FF and stage delay, verdict)."""
    bs = manifest.get("budget_search") if isinstance(manifest, Mapping) else None
    if not isinstance(bs, Mapping) or not isinstance(bs.get("chosen"), Mapping):
        return None
    ch, meas = bs["chosen"], bs.get("measured") or {}
    budget = float(bs["budget_ns"])
    lat = meas.get("latency_ns")
    return {
        "budget_ns": budget,
        "budget_bx": budget / BX_NS,
        "passed": lat is not None and float(lat) <= budget + _NS_TOLERANCE,
        "latency_cycles": meas.get("latency_cycles"),
        "latency_ns": lat,
        "source": meas.get("source", "not measured"),
        "clock_mhz": ch.get("clock_mhz"),
        "delay_constraint": ch.get("delay_constraint"),
        "worst_stage_ns_estimate": ch.get("worst_stage_ns_estimate"),
        "luts_estimate": ch.get("luts_estimate"),
        "ffs_estimate": ch.get("ffs_estimate"),
        "cost_rule": bs.get("cost_rule"),
        "timing_note": "stage delays are estimates (trigger_ml UltraScale+ delay model); only Vivado timing "
                       "closure confirms the clock",
        "candidates": list(bs.get("candidates") or []),
    }
