"""Per-stage delay model in ns for pipelined alkaid designs on AMD/Xilinx UltraScale+ (an ESTIMATE).

alkaid splits a design into pipeline stages with its own surrogate delay (``Op.latency``), whose
unit is roughly "one adder level" (``1.09 + 0.025 × carry bits`` per adder), *not* ns.  Whether a
stage fits a clock period in ns needs a model in ns; this module is that model.  It walks every
stage's ALIR graph (the ``CombLogic`` of each ``logicN`` module alkaid writes), assigns each
operation a delay in ns, and takes the longest register-to-register path:

    stage delay = t_clk_to_q + max over paths (Σ op delays) + t_setup
    meets timing ⇔ stage delay ≤ clock period − clock uncertainty

Per-operation delays (:class:`DelayModel`, UltraScale+ ``-2`` speed grade, CLB as in UG574):

* two-input adder / subtractor of ``w`` output bits (opcodes 0, 1): one LUT level (the propagate
  LUT feeding the CARRY8 ``S`` input) + the first CARRY8 (``S`` → ``CO``/``O``) + ``ceil(w/8) − 1``
  cascaded CARRY8 blocks (``CI`` → ``CO``) + one routed net to the consumer;
* ternary adder (opcode 11, alkaid fuses ``a + b + c``): the same carry chain with one more LUT level
  (the 3:2 compressor LUT6_2) in front;
* MSB multiplexer, binary bit operation, small lookup table (opcodes 6, 10, 8 up to 6 inputs): one
  LUT level + net; a table of 7–9 inputs adds the F7/F8/F9 muxes, a larger one one LUT level + net
  per further 5 input bits;
* multiplication (opcode 7): operands that fit a DSP48E2 (27 × 18 signed) use its combinational
  multiplier (A/B → P, no internal registers) + net; larger ones a LUT multiplier of
  ``ceil(log2(min width)) + 1`` adder levels of the product width;
* ReLU, constant addition, negation, quantisation/wrap, unary bit operations, constants and input
  reads (opcodes 2, 4, −2, 3, 9, 5, −1): 0 — they are wiring or are absorbed into the consumer's LUT
  (alkaid's surrogate also gives them no delay).

Figures (all assumptions, not measurements): FDRE clock-to-Q 0.10 ns and setup 0.05 ns, LUT6
0.10 ns, CARRY8 ``S`` → ``CO`` 0.20 ns and ``CI`` → ``CO`` 0.035 ns per further block, F7–F9 mux
0.05 ns each, DSP48E2 combinational multiply 2.9 ns — the order of the UltraScale+ switching
characteristics (DS923, -2 speed grade) and of the cell delays in Vivado post-route timing reports of
xcvu9p/xcvu13p designs; one routed net 0.55 ns, the larger of the typical 0.2–1 ns local nets, since
these designs are dense (tens of thousands of LUTs); clock uncertainty 0.1 ns (what alkaid writes
into the design's ``.xdc``).  Routing in a congested design can be slower, and placement can put a
stage's logic far apart: the model says which stages are *plausible* at the clock; only vendor timing
closure (Vivado place & route, ``report_timing_summary`` with WNS ≥ 0) confirms that a design meets
its clock.  Every figure derived from it is labelled ``estimated (trigger_ml UltraScale+ delay model)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: label of every figure derived from this model
SOURCE = "estimated (trigger_ml UltraScale+ delay model; only Vivado timing closure confirms it)"
#: part families the default figures stand for
FAMILY = "UltraScale+ (-2 speed grade)"


@dataclass(frozen=True)
class DelayModel:
    """Delays in ns of the primitives of a pipeline stage (defaults: UltraScale+ -2, see the module doc)."""

    t_clk_to_q_ns: float = 0.10
    t_setup_ns: float = 0.05
    clock_uncertainty_ns: float = 0.10
    t_lut_ns: float = 0.10
    t_net_ns: float = 0.55
    t_carry_first_ns: float = 0.20
    t_carry8_ns: float = 0.035
    t_fmux_ns: float = 0.05
    t_dsp_mult_ns: float = 2.9
    dsp_a_bits: int = 27
    dsp_b_bits: int = 18
    family: str = FAMILY

    def adder_ns(self, width: int) -> float:
        """Two-input carry-chain adder of ``width`` bits, including its input LUT and output net."""
        blocks = max(1, math.ceil(max(width, 1) / 8))
        return self.t_lut_ns + self.t_carry_first_ns + (blocks - 1) * self.t_carry8_ns + self.t_net_ns

    def ternary_adder_ns(self, width: int) -> float:
        """Three-input adder (compressor LUT level in front of the carry chain)."""
        return self.adder_ns(width) + self.t_lut_ns

    def lut_ns(self, n_inputs: int) -> float:
        """A logic function of ``n_inputs`` bits (LUT6, F7–F9 muxes, then more LUT levels) + net."""
        if n_inputs <= 6:
            return self.t_lut_ns + self.t_net_ns
        if n_inputs <= 9:
            return self.t_lut_ns + (n_inputs - 6) * self.t_fmux_ns + self.t_net_ns
        levels = 1 + math.ceil((n_inputs - 6) / 5)
        return levels * (self.t_lut_ns + self.t_net_ns)

    def multiplier_ns(self, width_a: int, width_b: int) -> float:
        """``width_a × width_b`` multiplier: DSP48E2 when it fits, else a LUT adder tree."""
        lo, hi = sorted((width_a, width_b))
        if lo <= self.dsp_b_bits and hi <= self.dsp_a_bits:
            return self.t_dsp_mult_ns + self.t_net_ns
        levels = math.ceil(math.log2(max(lo, 2))) + 1
        return levels * self.adder_ns(width_a + width_b)

    @property
    def overhead_ns(self) -> float:
        """Register overhead of a stage: clock-to-Q + setup."""
        return self.t_clk_to_q_ns + self.t_setup_ns

    def usable_ns(self, clock_ns: float) -> float:
        """Combinational time available in a stage at ``clock_ns``."""
        return clock_ns - self.clock_uncertainty_ns - self.overhead_ns

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_MODEL = DelayModel()


def _width(qint: Any) -> int:
    return max(int(sum(qint.kif)), 0)


def op_delay_ns(op: Any, ops: Sequence[Any], model: DelayModel = DEFAULT_MODEL) -> float:
    """Delay in ns of one ALIR operation ``op`` (operands looked up in ``ops``); see the module doc."""
    code = int(op.opcode)
    if code in (0, 1):
        return model.adder_ns(_width(op.qint))
    if code == 11:
        return model.ternary_adder_ns(_width(op.qint))
    if code in (6, 10):
        return model.lut_ns(6)
    if code == 8:
        return model.lut_ns(_width(ops[op.addr[0]].qint))
    if code == 7:
        return model.multiplier_ns(_width(ops[op.addr[0]].qint), _width(ops[op.addr[1]].qint))
    return 0.0  # -1 read, -2 neg, 2 relu, 3 wrap, 4 cadd, 5 const, 9 unary bit-ops: wiring / absorbed


def comb_delay_ns(comb: Any, model: DelayModel = DEFAULT_MODEL) -> float:
    """Longest input → output path of an ALIR ``CombLogic`` in ns (no register overhead)."""
    arrival: list[float] = []
    ops = comb.ops
    for op in ops:
        before = max((arrival[j] for j in op.input_ids if j >= 0), default=0.0)
        arrival.append(before + op_delay_ns(op, ops, model))
    outs = [arrival[i] for i in comb.out_idxs if i >= 0]
    return max(outs, default=0.0)


@dataclass(frozen=True)
class PipelineTiming:
    """Estimated timing of a pipeline at a clock: per-stage register-to-register delays in ns."""

    clock_ns: float
    stage_delays_ns: tuple[float, ...]  # clock-to-Q + combinational + setup, per stage
    model: DelayModel = DEFAULT_MODEL

    @property
    def n_stages(self) -> int:
        return len(self.stage_delays_ns)

    @property
    def worst_stage_ns(self) -> float:
        return max(self.stage_delays_ns, default=0.0)

    @property
    def required_ns(self) -> float:
        """Register-to-register time a stage may take: the clock period minus the clock uncertainty."""
        return self.clock_ns - self.model.clock_uncertainty_ns

    @property
    def slack_ns(self) -> float:
        """Estimated worst slack (negative: some stage does not fit the clock)."""
        return self.required_ns - self.worst_stage_ns

    @property
    def meets_timing(self) -> bool:
        """Every stage's estimated delay fits the clock (an estimate, see the module doc)."""
        return self.slack_ns >= 0

    @property
    def fmax_mhz(self) -> float:
        """Estimated maximum clock frequency of the worst stage."""
        return 1e3 / (self.worst_stage_ns + self.model.clock_uncertainty_ns) if self.stage_delays_ns else math.inf

    def to_json(self) -> dict[str, Any]:
        return {"clock_ns": self.clock_ns, "n_stages": self.n_stages,
                "stage_delays_ns": [round(d, 4) for d in self.stage_delays_ns],
                "worst_stage_ns": round(self.worst_stage_ns, 4), "required_ns": round(self.required_ns, 4),
                "slack_ns": round(self.slack_ns, 4), "meets_timing": self.meets_timing,
                "fmax_mhz": round(self.fmax_mhz, 1), "source": SOURCE, "family": self.model.family}


def pipeline_timing(stages: Sequence[Any] | Mapping[str, Any], clock_ns: float,
                    model: DelayModel = DEFAULT_MODEL) -> PipelineTiming:
    """Estimated timing of pipeline ``stages`` (the ``CombLogic`` of each stage, in order, or alkaid's
    ``FSM.logic`` dict ``{'logic0': ..., ...}``) at ``clock_ns``: each stage is register to register."""
    if isinstance(stages, Mapping):
        stages = [stages[k] for k in sorted(stages, key=lambda s: int(s.removeprefix("logic")))]
    delays = tuple(model.overhead_ns + comb_delay_ns(c, model) for c in stages)
    return PipelineTiming(float(clock_ns), delays, model)


def with_delay_model(comb: Any, model: DelayModel = DEFAULT_MODEL) -> Any:
    """``comb`` with every operation's ``latency`` replaced by its arrival time in ns under ``model``.

    alkaid's pipeliner (``to_pipeline``) cuts the graph where the ``latency`` field crosses equal
    fractions of the total, so on this graph it balances the stages by this model's ns rather than
    by its own surrogate units.  Costs and everything else are unchanged."""
    from alkaid.types import CombLogic

    ops = comb.ops
    arrival: list[float] = []
    new_ops = []
    for op in ops:
        before = max((arrival[j] for j in op.input_ids if j >= 0), default=0.0)
        t = before + op_delay_ns(op, ops, model)
        arrival.append(t)
        new_ops.append(op._replace(latency=float(t)))
    return CombLogic(comb.shape, comb.inp_shifts, comb.out_idxs, comb.out_shifts, comb.out_negs, new_ops,
                     comb.carry_size, comb.adder_size, comb.lookup_tables)
