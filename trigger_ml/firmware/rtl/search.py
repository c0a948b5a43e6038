"""Latency-budget design search for alkaid RTL: the cheapest pipeline whose latency fits a budget.

Knobs searched (what alkaid exposes):

* ``delay_constraint`` — alkaid's CMVM option ``hard_dc`` (adder levels allowed beyond the minimum
  in each constant-matrix-vector product; ``-1`` unconstrained): trades LUTs for combinational depth;
* the clock period (``clock_ns``; the candidates, e.g. the 240 MHz of the CMS uGT boards);
* the pipelining: where the register layers go.  alkaid's own cut (``latency_cutoff`` / ``n_stages``)
  balances stages in its surrogate delay units (about one adder level each, not ns); here the
  stage boundaries come from an ASAP schedule in ns of the delay model
  (:mod:`trigger_ml.firmware.timing`): an operation stays in the stage of its latest operand while
  the stage's estimated register-to-register delay fits the clock, else it starts the next stage.
  alkaid's ``to_pipeline`` then cuts the graph at those boundaries (``Op.latency`` = stage + fraction),
  so the written design has exactly the scheduled stages.

For every (delay constraint, clock) candidate the record holds the pipeline depth, latency =
depth × clock period, alkaid's LUT estimate (its cost of the written graph), the pipeline register
bits (FF estimate), the worst estimated stage delay and the verdict.  The cheapest candidate that
meets the budget and whose stages fit the clock (by the estimate) is chosen: fewest LUTs, then fewest
registers, then lowest latency.  :func:`trigger_ml.firmware.convert.convert_run` writes it and
measures its pipeline depth in Verilator before it is accepted; only vendor timing closure (Vivado)
confirms the clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trigger_ml.core.errors import ConfigError
from trigger_ml.firmware.timing import (
    DEFAULT_MODEL,
    SOURCE,
    DelayModel,
    op_delay_ns,
    pipeline_timing,
)

#: alkaid CMVM delay constraints tried by default (hard_dc; -1 = alkaid's unconstrained default)
DELAY_CONSTRAINTS: tuple[int, ...] = (-1, 4, 2, 0)
#: clocks tried when none is given (MHz); 240 MHz is the CMS Global Trigger (uGT) clock
CLOCKS_MHZ: tuple[float, ...] = (200.0, 240.0, 280.0, 320.0, 360.0)
_NS_TOL = 1e-9
#: how the search ranks designs that meet the budget
COST_RULE = "fewest LUTs (alkaid estimate), then fewest pipeline register bits (FF estimate), then lowest latency"


@dataclass(frozen=True)
class Candidate:
    """One searched design: knobs, depth, latency, estimated resources and stage delay, verdict."""

    delay_constraint: int
    clock_mhz: float
    n_stages: int
    luts: float  # alkaid's LUT estimate of the written graph
    ffs: int  # pipeline register bits
    worst_stage_ns: float  # estimated register-to-register delay of the slowest stage
    meets_timing: bool  # every stage fits the clock (estimate)
    budget_ns: float
    split: str = "ns schedule (trigger_ml delay model) cut by alkaid to_pipeline"

    @property
    def clock_ns(self) -> float:
        return 1e3 / self.clock_mhz

    @property
    def latency_ns(self) -> float:
        return self.n_stages * self.clock_ns

    @property
    def meets_budget(self) -> bool:
        return self.latency_ns <= self.budget_ns + _NS_TOL

    @property
    def ok(self) -> bool:
        return self.meets_budget and self.meets_timing

    @property
    def verdict(self) -> str:
        if self.ok:
            return "meets budget and (estimated) timing"
        why = []
        if not self.meets_budget:
            why.append(f"latency {self.latency_ns:.1f} ns > budget {self.budget_ns:g} ns")
        if not self.meets_timing:
            why.append(f"a stage needs {self.worst_stage_ns:.2f} ns > clock {self.clock_ns:.3f} ns (estimate)")
        return "; ".join(why)

    def rank(self) -> tuple[float, int, float]:
        return (self.luts, self.ffs, self.latency_ns)

    def describe(self) -> str:
        return (f"delay_constraint={self.delay_constraint}, {self.clock_mhz:g} MHz, {self.n_stages} stages = "
                f"{self.latency_ns:.1f} ns, ~{self.luts:,.0f} LUT + {self.ffs:,} FF (alkaid estimate), worst stage "
                f"{self.worst_stage_ns:.2f} ns (estimate)")

    def to_json(self) -> dict[str, Any]:
        return {"delay_constraint": self.delay_constraint, "clock_mhz": self.clock_mhz,
                "clock_ns": round(self.clock_ns, 6), "n_stages": self.n_stages,
                "latency_ns": round(self.latency_ns, 4), "luts_estimate": round(self.luts, 1),
                "ffs_estimate": self.ffs, "worst_stage_ns_estimate": round(self.worst_stage_ns, 4),
                "meets_timing_estimate": self.meets_timing, "meets_budget": self.meets_budget,
                "split": self.split, "verdict": self.verdict}


@dataclass
class BudgetSearch:
    """Every candidate of a search, the chosen one (None: no design meets the budget) and its graph."""

    budget_ns: float
    candidates: list[Candidate] = field(default_factory=list)
    graphs: dict[tuple[int, float], Any] = field(default_factory=dict)  # (dc, MHz) -> scheduled CombLogic
    model: DelayModel = DEFAULT_MODEL

    @property
    def chosen(self) -> Candidate | None:
        ok = [c for c in self.candidates if c.ok]
        return min(ok, key=Candidate.rank) if ok else None

    @property
    def closest(self) -> Candidate | None:
        """The design nearest the budget: lowest latency among those whose stages fit the clock
        (else lowest latency of all)."""
        timed = [c for c in self.candidates if c.meets_timing] or self.candidates
        return min(timed, key=lambda c: (c.latency_ns, c.luts)) if timed else None

    def graph(self, c: Candidate) -> Any:
        return self.graphs[(c.delay_constraint, c.clock_mhz)]

    def refusal(self) -> str:
        """One line: no design meets the budget, the closest one and what to change."""
        c = self.closest
        if c is None:
            return f"no design searched for the {self.budget_ns:g} ns budget"
        fixes = ["narrower bit widths (e.g. HGQ2 learned bit-widths, fewer activation/score bits)",
                 "fewer or smaller layers"]
        if not c.meets_timing:
            fixes.insert(0, "a slower clock (a single operation exceeds the clock period)")
        else:
            fixes.append("a faster clock if the board allows it (--clock-mhz)")
        return (f"no searched design meets the {self.budget_ns:g} ns latency budget; closest: {c.describe()}; "
                f"to meet it try {', or '.join(fixes)}, or a budget >= {c.latency_ns:.1f} ns")

    def to_json(self) -> dict[str, Any]:
        ch = self.chosen
        return {"budget_ns": self.budget_ns, "budget_bx": self.budget_ns / 25.0, "cost_rule": COST_RULE,
                "delay_model": {"source": SOURCE, **self.model.to_json()},
                "chosen": ch.to_json() if ch else None,
                "closest": None if ch else (self.closest.to_json() if self.closest else None),
                "candidates": [c.to_json() for c in self.candidates],
                "note": "latency = pipeline depth x clock period; depth of the chosen design measured in "
                        "Verilator at conversion; stage delays and resources are estimates, only vendor "
                        "timing closure (Vivado) confirms the clock"}


def fused(comb: Any) -> Any:
    """The graph alkaid writes HDL from: ternary adders fused, dead code removed, re-costed (what
    ``alkaid.codegen.RTLModel`` does with ``ternary_fuse=True``)."""
    from alkaid.trace.passes.dce import dead_code_elimin
    from alkaid.trace.passes.surrogate import add_surrogate
    from alkaid.trace.passes.ternary import fuse_ternary_adders

    return add_surrogate(dead_code_elimin(fuse_ternary_adders(comb)), _skip_op8_cost=True)


def schedule(comb: Any, clock_ns: float, model: DelayModel = DEFAULT_MODEL) -> tuple[Any, int]:
    """ASAP stage schedule of ``comb`` (already :func:`fused`) at ``clock_ns`` under ``model``.

    Returns (the graph with ``Op.latency = stage + fraction``, so that alkaid's ``to_pipeline`` with
    that many stages cuts exactly at the stage boundaries; the number of stages).  An operation
    longer than a whole stage gets a stage of its own (the timing check then flags it)."""
    from alkaid.types import CombLogic

    usable = model.usable_ns(clock_ns)
    ops = comb.ops
    stage: list[int] = []
    t_in: list[float] = []  # arrival within its stage (ns after the stage's registers)
    for op in ops:
        ins = [j for j in op.input_ids if j >= 0]
        d = op_delay_ns(op, ops, model)
        s = max((stage[j] for j in ins), default=0)
        t = max((t_in[j] for j in ins if stage[j] == s), default=0.0) + d
        if t > usable and d > 0:
            s, t = s + 1, d
        stage.append(s)
        t_in.append(t)
    n = max(max(stage, default=0) + 1, 1)
    last_max = max((t for s, t in zip(stage, t_in) if s == n - 1), default=0.0)
    new_ops = []
    for op, s, t in zip(ops, stage, t_in):
        if op.opcode == -1 or op.opcode == 5:  # inputs / constants: start of stage 0
            lat = 0.0
        elif s == n - 1 and last_max > 0:  # scale so the latest op sits exactly at n (alkaid cuts at k*L/n)
            lat = s + 0.01 + 0.99 * t / last_max
        else:
            lat = s + 0.01 + 0.98 * min(t / usable, 1.0)
        new_ops.append(op._replace(latency=float(lat)))
    if last_max == 0:  # degenerate: nothing but wiring
        new_ops = [op._replace(latency=0.0) for op in ops]
        new_ops[-1] = new_ops[-1]._replace(latency=float(n))
    out = CombLogic(comb.shape, comb.inp_shifts, comb.out_idxs, comb.out_shifts, comb.out_negs, new_ops,
                    comb.carry_size, comb.adder_size, comb.lookup_tables)
    return out, n


def evaluate(comb_sched: Any, n_stages: int, clock_ns: float, model: DelayModel = DEFAULT_MODEL) -> tuple[Any, int, Any]:
    """Cut ``comb_sched`` into ``n_stages`` with alkaid's ``to_pipeline`` (as ``RTLModel`` will);
    returns (FSM, pipeline register bits, :class:`~trigger_ml.firmware.timing.PipelineTiming`)."""
    from alkaid.trace.pipeline import to_pipeline

    fsm = to_pipeline(comb_sched, n_stages=n_stages, verbose=False)
    reg_bits = sum(sig.width for sig in fsm.signals.values() if sig.reg)
    return fsm, int(reg_bits), pipeline_timing(fsm.logic, clock_ns, model)


def search(
    trace: Callable[[int], Any],
    budget_ns: float,
    *,
    clocks_mhz: Sequence[float] | None = None,
    delay_constraints: Iterable[int] | None = None,
    model: DelayModel = DEFAULT_MODEL,
    log: Callable[[str], None] = print,
) -> BudgetSearch:
    """Search (delay constraint × clock) for the cheapest pipeline meeting ``budget_ns``.

    ``trace(delay_constraint)`` returns the traced ALIR ``CombLogic`` (e.g.
    ``lambda dc: trace_comb(model, delay_constraint=dc)``).  Nothing is written; the result holds
    every candidate and the scheduled graph of each (see :func:`schedule`)."""
    if not (math.isfinite(budget_ns) and budget_ns > 0):
        raise ConfigError(f"latency budget must be a positive number of ns, got {budget_ns}")
    clocks = tuple(float(c) for c in (clocks_mhz or CLOCKS_MHZ))
    if any(not (math.isfinite(c) and c > 0) for c in clocks):
        raise ConfigError(f"clock frequencies must be positive, got {clocks}")
    res = BudgetSearch(float(budget_ns), model=model)
    seen: dict[tuple[int, float], int] = {}
    for dc in delay_constraints if delay_constraints is not None else DELAY_CONSTRAINTS:
        comb = fused(trace(int(dc)))
        key = (len(comb.ops), round(float(comb.cost), 3))
        if key in seen:  # the constraint changed nothing: same graph as an earlier one
            log(f"[budget] delay_constraint={dc}: same graph as delay_constraint={seen[key]}, skipped")
            continue
        seen[key] = int(dc)
        for mhz in clocks:
            sched, n = schedule(comb, 1e3 / mhz, model)
            _, reg_bits, timing = evaluate(sched, n, 1e3 / mhz, model)
            if timing.n_stages != n:
                raise ConfigError(f"alkaid cut the scheduled graph into {timing.n_stages} stages, not {n}")
            c = Candidate(int(dc), mhz, n, float(comb.cost), reg_bits, timing.worst_stage_ns, timing.meets_timing,
                          float(budget_ns))
            res.candidates.append(c)
            res.graphs[(int(dc), mhz)] = sched
            log(f"[budget] {c.describe()}: {c.verdict}")
    return res
