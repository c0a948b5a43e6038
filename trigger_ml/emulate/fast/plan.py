"""The fast path: a per-block program of ops over feature-major float buffers holding exact integers.

Raw integers are carried in ``(features, events)`` float32/float64 buffers.  When the plan is
built, exact integer intervals are propagated through every layer; a layer runs on the fast path
only if every intermediate (including every partial sum of a matrix product, in any order) stays
below 2**52 (float64) -- float32 buffers are used where everything stays below 2**24 -- otherwise
it falls back to the reference implementation (:mod:`trigger_ml.emulate.reference`, raising
:class:`_NotFast` while the layer is planned).  Matrix products go to BLAS (sparse ones to a
gather kernel), and all element-wise work of a layer chain (bias, accumulator wrap, result cast,
ReLU, batchnorm, per-element HGQ2 quantizers, the merge op itself) is fused into one numba pass
per layer group (:mod:`trigger_ml.emulate.fast.kernels`).  Events are processed in blocks on all
cores (Python threads; BLAS pinned to one thread meanwhile).

Layers the BLAS + stage-chain scheme cannot express get their own numba kernels, still exact by
the same interval proofs: dense/conv with an accumulator narrower than the products or a saturating
accumulator (every product cast to accum_t, summed in input order: ``pp_dense``), ``dot`` (Σx²),
pooling, sigmoid/tanh/... tables, softmax (latency/stable/argmax), concatenate, transpose and
merges incl. maximum/minimum.  Any other single-input element-wise layer (parametrised ReLUs, ELU,
SELU, unary LUTs) becomes a lookup table over the input codes its proven interval allows, filled by
the reference executor itself.  What is left goes to the reference executor -- never silently:
:meth:`_FastPlan.plan_report` (public as :meth:`trigger_ml.emulate.Emulator.plan_report`) names
every layer's path and, for the reference path, the reason.

A *stage* is one fused element-wise pass ``y = ovf(round(relu?(x * pm + ad) * mu))`` with
per-column parameters (``pm`` = exact integer multiplier, ``ad`` = integer addend, ``mu`` =
power of two moving to the destination grid, ``relu`` via ``max(v, rlo)``), where ``round`` and
``ovf`` are the destination type's modes.  Every value is an integer below 2**52 in magnitude
(checked on intervals when the plan is built), so each float64 operation is exact and the
result equals the ap_fixed assignment.  Kernels are specialised for the common modes
(TRN / RND / RND_CONV x WRAP / SAT(_SYM), per-column or uniform parameters); the remaining
modes go through a generic kernel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from trigger_ml.core.errors import UnsupportedLayerError
from trigger_ml.core.fixed import (
    O_SAT,
    O_SAT_ZERO,
    O_WRAP,
    OVERFLOW_MODES,
    Q_RND,
    Q_TRN,
    Q_TRN_ZERO,
    ROUNDING_CODE,
    ROUNDING_MODES,
    FixedType,
    from_float,
    requantize,
)
from trigger_ml.emulate.fast.kernels import _kernels, _Runner
from trigger_ml.emulate.reference import _floorlog2, _RefLayer, _Step
from trigger_ml.ir import FirmwareModel, Layer

#: saturation kind of an overflow mode for the fast kernels: SAT_SYM runs as SAT with lo = -hi
_OMODE = {"WRAP": O_WRAP, "SAT": O_SAT, "SAT_SYM": O_SAT, "SAT_ZERO": O_SAT_ZERO}


def _plain_stage_params(C: int, pm: float = 1.0, mu: float = 1.0) -> np.ndarray:
    """Parameters ``(7, C)`` of a stage without a cast: ``v * pm`` (plus no offset) times ``mu``, no
    overflow bounds (rows as in the chain kernel: pm, ad, mu, lo, hi, M, 1/M)."""
    P = np.zeros((7, C))
    P[0], P[2], P[3], P[4], P[5], P[6] = pm, mu, -math.inf, math.inf, 1.0, 1.0
    return P


def _stage_name(rm: int, om: int) -> str:
    return f"{ROUNDING_MODES[rm]}/{OVERFLOW_MODES[om]}"


_F32_LIMIT = 2**24  # every integer of magnitude <= 2**24 is exact in float32
_EXACT = 2**52  # ... and below 2**52 every float64 operation used here is exact


# -- interval bookkeeping (build time only; Python ints, exact) ---------------------------------


def _iv_type(t: FixedType, size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(size, t.raw_min, dtype=object), np.full(size, t.raw_max, dtype=object)


def _absmax(lo: np.ndarray, hi: np.ndarray) -> int:
    if len(lo) == 0:
        return 0
    return int(max(max(abs(int(v)) for v in lo), max(abs(int(v)) for v in hi)))


def _obj(v, C: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(v, dtype=object), (C,)).copy()


class _NotFast(Exception):
    """A layer the fast path does not cover exactly (the reference implementation is used)."""


class _NeedPerProduct(_NotFast):
    """A dense/conv whose products must be cast to accum_t one by one (or that may saturate)."""


#: kinds whose output element c depends only on input element c (a lookup table can replace them)
_ELEMENTWISE = frozenset({"activation", "table_activation", "elu", "selu", "unary_lut", "quantizer", "batchnorm"})
_LUT_MAX_ENTRIES = 1 << 21  # total table entries of one lookup layer (float64: 16 MB)
_NO_OVF = np.array([-1.0, 0.0, 0.0, 1.0, 1.0])


def _ovf_params(t: FixedType) -> np.ndarray:
    """(om, lo, hi, M, iM) of a cast's overflow handling for the numba kernels."""
    lo = t.sat_min if t.overflow != "WRAP" else t.raw_min
    return np.array([float(_OMODE[t.overflow]), float(lo), float(t.raw_max), math.ldexp(1.0, t.width), math.ldexp(1.0, -t.width)])


def _round_iv(lo: int, hi: int, d: int) -> tuple[int, int]:
    """Bounds of any rounding of [lo, hi] * 2**-d to an integer."""
    if d <= 0:
        return lo << -d, hi << -d
    return lo >> d, -((-hi) >> d)


def _pp_analysis(at: FixedType, d: int, plo: np.ndarray, phi: np.ndarray, bias: np.ndarray):
    """Per-product casts to ``at`` of exact products in [plo, phi] (shape (K, F), raw at frac
    ``fp = at.frac + d``), summed in order after ``bias`` (F,): the kernel parameters and the
    accumulator interval, or _NotFast when float64 arithmetic would not be exact."""
    K, F = plo.shape
    tlo = at.sat_min if at.overflow != "WRAP" else at.raw_min
    if at.overflow == "WRAP" and at.sat_bits:
        raise _NotFast("WRAP accumulator with saturation bits")
    if at.width > 50 or d > 51 or d < -60:
        raise _NotFast(f"accumulator {at.to_hls()} (> 50 bits) or product shift {d} beyond exact float64 arithmetic (2**52)")
    pmax = max((max(abs(int(a)), abs(int(b))) for a, b in zip(plo.reshape(-1), phi.reshape(-1))), default=0)
    if pmax + (1 << max(d, 0)) >= _EXACT:
        raise _NotFast("products exceed 2**52")
    wrap_acc = at.overflow == "WRAP"
    vlo = np.empty((K, F), dtype=object)
    vhi = np.empty((K, F), dtype=object)
    pov = False
    for i in range(K):
        for j in range(F):
            a, b = _round_iv(int(plo[i, j]), int(phi[i, j]), d)
            if not wrap_acc and (a < tlo or b > at.raw_max):
                pov = True
            vlo[i, j], vhi[i, j] = a, b
    if pov:  # saturating product casts
        for i in range(K):
            for j in range(F):
                a, b = min(max(int(vlo[i, j]), tlo), at.raw_max), max(min(int(vhi[i, j]), at.raw_max), tlo)
                if at.overflow == "SAT_ZERO":
                    a, b = min(a, 0), max(b, 0)
                vlo[i, j], vhi[i, j] = a, b
    acc_lo = np.array([int(bias[j]) + sum(int(v) for v in vlo[:, j]) for j in range(F)], dtype=object)
    acc_hi = np.array([int(bias[j]) + sum(int(v) for v in vhi[:, j]) for j in range(F)], dtype=object)
    neg = [min(int(bias[j]), 0) + sum(min(int(v), 0) for v in vlo[:, j]) for j in range(F)]
    pos = [max(int(bias[j]), 0) + sum(max(int(v), 0) for v in vhi[:, j]) for j in range(F)]
    step_ovf = not wrap_acc and any(n < tlo or p > at.raw_max for n, p in zip(neg, pos))
    if max([abs(v) for v in neg + pos] or [0]) >= _EXACT:
        raise _NotFast("accumulator partial sums exceed 2**52")
    if step_ovf:
        acc_lo = np.full(F, tlo if at.overflow != "SAT_ZERO" else min(tlo, 0), dtype=object)
        acc_hi = np.full(F, at.raw_max, dtype=object)
    rm = ROUNDING_CODE[at.rounding] if d > 0 else Q_TRN
    pq = _ovf_params(at) if pov else _NO_OVF
    aq = _ovf_params(at) if step_ovf else _NO_OVF
    # float32 arithmetic is exact when every product (and the rounding increment) and every partial
    # sum stays below 2**24 and only the plain TRN / RND loops run
    f32 = (not pov and not step_ovf and rm in (Q_TRN, ROUNDING_CODE["RND"]) and pmax + (1 << max(d, 0)) < _F32_LIMIT
           and max([abs(v) for v in neg + pos] or [0]) < _F32_LIMIT and max(abs(int(v)) for v in bias) < _F32_LIMIT)
    return math.ldexp(1.0, -d), rm, pq, aq, acc_lo, acc_hi, f32


class _Stages:
    """A chain of fused element-wise stages over C columns, with exact interval propagation."""

    def __init__(self, lo: np.ndarray, hi: np.ndarray) -> None:
        self.lo, self.hi = _obj(lo, len(lo)), _obj(hi, len(hi))
        self.stages: list[tuple[str, int, int, np.ndarray, float]] = []  # (kernel, rm, om, P, rlo)
        self.exact = True
        self._pm: np.ndarray | None = None
        self._ad: np.ndarray | None = None
        self._relu = False

    @property
    def C(self) -> int:
        return len(self.lo)

    def snapshot(self):
        return (list(self.stages), self.lo.copy(), self.hi.copy(), self.exact, self._pm, self._ad, self._relu)

    def restore(self, s) -> None:
        self.stages, self.lo, self.hi, self.exact, self._pm, self._ad, self._relu = list(s[0]), s[1], s[2], s[3], s[4], s[5], s[6]

    def _check(self) -> None:
        if _absmax(self.lo, self.hi) >= _EXACT:
            self.exact = False

    # pending pre-operations: v = relu?(x * pm + ad)
    def mul(self, m) -> None:
        m = _obj(m, self.C)
        if all(int(v) == 1 for v in m):
            return
        if self._ad is not None or self._relu:
            self.flush()
        self._pm = m if self._pm is None else self._pm * m
        a, b = self.lo * m, self.hi * m
        self.lo = np.array([min(x, y) for x, y in zip(a, b)], dtype=object)
        self.hi = np.array([max(x, y) for x, y in zip(a, b)], dtype=object)
        self._check()

    def add(self, b) -> None:
        b = _obj(b, self.C)
        if not any(int(v) for v in b):
            return
        if self._relu:
            self.flush()
        self._ad = b if self._ad is None else self._ad + b
        self.lo, self.hi = self.lo + b, self.hi + b
        self._check()

    def relu(self) -> None:
        if all(int(v) >= 0 for v in self.lo):
            return
        self._relu = True
        self.lo = np.array([max(int(v), 0) for v in self.lo], dtype=object)
        self.hi = np.array([max(int(v), 0) for v in self.hi], dtype=object)

    def _pending(self) -> bool:
        return self._pm is not None or self._ad is not None or self._relu

    def _emit(self, rm: int, om: int, P: np.ndarray) -> None:
        C = self.C
        P[0] = [1.0] * C if self._pm is None else [float(int(v)) for v in self._pm]
        P[1] = [0.0] * C if self._ad is None else [float(int(v)) for v in self._ad]
        rlo = 0.0 if self._relu else -math.inf
        self.stages.append((_stage_name(rm, om), rm, om, np.ascontiguousarray(P), rlo))
        self._pm = self._ad = None
        self._relu = False

    def flush(self) -> None:
        """Emit the pending pre-operations as a stage without a cast."""
        if not self._pending():
            return
        self._emit(0, 1, _plain_stage_params(self.C))

    def cast(self, src_frac, dst_types) -> None:
        """Cast every column from ``src_frac`` (int or per-column) to ``dst_types`` (a FixedType, or
        per-column FixedType / None meaning 'always 0')."""
        C = self.C
        if isinstance(dst_types, FixedType):
            dst_types = [dst_types] * C
        sf = np.broadcast_to(np.asarray(src_frac, dtype=object), (C,))
        rnd = {t.rounding for t in dst_types if t is not None}
        ovf = {_OMODE[t.overflow] for t in dst_types if t is not None}
        if len(rnd) > 1 or len(ovf) > 1:
            raise _NotFast("mixed rounding/overflow modes in one cast")
        if any(t is not None and t.overflow == "WRAP" and t.sat_bits for t in dst_types):
            raise _NotFast("WRAP with saturation bits")
        rm = ROUNDING_CODE[rnd.pop()] if rnd else Q_TRN
        om = ovf.pop() if ovf else O_SAT
        P = np.zeros((7, C))
        new_lo = np.empty(C, dtype=object)
        new_hi = np.empty(C, dtype=object)
        noop = True
        for c, t in enumerate(dst_types):
            lo_c, hi_c = int(self.lo[c]), int(self.hi[c])
            if t is None:
                P[2:, c] = (0.0, 0.0, 0.0, 1.0, 1.0)
                new_lo[c] = new_hi[c] = 0
                if lo_c != 0 or hi_c != 0:
                    noop = False
                continue
            d = int(sf[c]) - t.frac  # right shift by d (left shift by -d)
            if abs(d) > 1000:
                raise _NotFast("extreme shift")
            tlo = t.sat_min if t.overflow != "WRAP" else t.raw_min
            P[2:, c] = (math.ldexp(1.0, -d), float(tlo), float(t.raw_max), math.ldexp(1.0, t.width), math.ldexp(1.0, -t.width))
            if d <= 0:
                a, b = lo_c << -d, hi_c << -d
            else:  # any rounding lies between the floor and the ceiling of the exact quotient
                a, b = lo_c >> d, -((-hi_c) >> d)
            if max(abs(a), abs(b)) >= _EXACT:
                self.exact = False
            if a >= tlo and b <= t.raw_max:
                new_lo[c], new_hi[c] = a, b
                if d != 0:
                    noop = False
                continue
            noop = False
            if t.width > 51:
                self.exact = False  # wrap/saturation arithmetic on such wide types is not exact here
            if t.overflow == "WRAP":
                new_lo[c], new_hi[c] = t.raw_min, t.raw_max
            elif t.overflow == "SAT_ZERO":
                new_lo[c], new_hi[c] = min(max(a, tlo), 0), max(min(b, t.raw_max), 0)
            else:
                new_lo[c], new_hi[c] = min(max(a, tlo), t.raw_max), max(min(b, t.raw_max), tlo)
        self.lo, self.hi = new_lo, new_hi
        if noop:
            return
        self._emit(rm, om, P)

    def finish(self) -> list[tuple[str, int, int, np.ndarray, float]]:
        self.flush()
        return self.stages


@dataclass
class _Slot:
    """A feature-major buffer ``(size, n_events)`` (plus one zero row when ``pad``)."""

    size: int
    lo: np.ndarray
    hi: np.ndarray
    dtype: type = np.float64
    f64_needed: bool = False
    pad: bool = False

    def absmax(self) -> int:
        return _absmax(self.lo, self.hi)


class _Op:
    """One step of a fast plan; ops that end in a stage chain can absorb following element-wise layers."""

    fusable = False
    out_slot: int
    chain: _Stages | None = None

    def finalize(self, plan: _FastPlan) -> None:
        self.stages = self.chain.finish() if self.chain is not None else []
        self.runner = _Runner(self.stages, plan.slots[self.out_slot].size)

    def scratch(self, n: int) -> list[tuple[int, int]]:
        """Shapes of the int32 scratch arrays the op needs for a block of ``n`` events (after the
        slots in each workspace, from ``self.scratch_at`` on)."""
        return []


class _FastPlan:
    """Per-block program of ops over preallocated float buffers."""

    def __init__(self, fm: FirmwareModel, ref_steps: list[_Step], threads: int | None, block: int | None) -> None:
        self.fm = fm
        self.block = None if block is None else max(1, int(block))
        self.threads = max(1, int(threads or min(8, os.cpu_count() or 1)))
        self.slots: list[_Slot] = []
        self.ops: list[_Op] = []
        self.layer_slot: dict[str, int] = {}
        self.slot_producer: dict[int, _Op] = {}
        self.pinned: set[int] = set()
        self.ref_layers: list[str] = []
        self.consumers: dict[str, int] = {}
        for layer in fm.layers:
            for i in layer.inputs:
                self.consumers[i] = self.consumers.get(i, 0) + 1
        for o in fm.outputs:
            self.consumers[o.name] = self.consumers.get(o.name, 0) + 1
        self.ref_by_name = {st.layer.name: st for st in ref_steps}
        self.report: dict[str, dict] = {}
        for layer in fm.layers:
            self._build_layer(layer)
        self.out_slots = [self.layer_slot[o.name] for o in fm.outputs]
        self.out_types = [o.type for o in fm.outputs]
        for s in self.slots:
            s.dtype = np.float64 if (s.f64_needed or s.absmax() >= _F32_LIMIT) else np.float32
        self._skip_unread_conv_rows()
        for op in self.ops:
            op.finalize(self)
        at = len(self.slots)  # ops' int32 scratch arrays follow the slots in every workspace
        for op in self.ops:
            op.scratch_at = at
            at += len(op.scratch(1))
        if self.block is None:
            self.block = _auto_block(self.bytes_per_event())
        for layer in fm.layers:
            e = self.report[layer.name]
            sl = self.slots[self.layer_slot[layer.name]]
            e["buffer"] = np.dtype(sl.dtype).name
            e["max_abs_raw"] = sl.absmax()

    def _skip_unread_conv_rows(self) -> None:
        """An integer-path convolution read only by one pooling that never reads its last rows (a 9-row
        image pooled by 2 leaves row 8 unread) computes only the rows up to the last one read."""
        out_names = {o.name for o in self.fm.outputs}
        for op in self.ops:
            if not (isinstance(op, _ConvOp) and op.ints is not None):
                continue
            names = {n for n, sl in self.layer_slot.items() if sl == op.out_slot}
            readers = [ly for ly in self.fm.layers if ly.name not in names and any(i in names for i in ly.inputs)]
            pools = [p for p in self.ops if isinstance(p, _PoolOp) and p.src == op.out_slot]
            if names & out_names or len(readers) != 1 or len(pools) != 1:
                continue
            live = int(pools[0].rows.max()) + 1
            F = op.w_int.shape[1]
            n_pix = op.idx.shape[0]
            keep = -(-live // F)
            if keep < n_pix:
                op.live_pixels = keep
                e = self.report[op.layer_name]
                e["how"] += f"; the last {n_pix - keep} of {n_pix} output pixels, never read by {readers[0].name}, are not computed"

    def bytes_per_event(self) -> int:
        """Workspace bytes per event of a block: every slot plus the ops' int32 scratch."""
        slots = sum(s.size * np.dtype(s.dtype).itemsize for s in self.slots)
        return slots + sum(4 * rows for op in self.ops for rows, _ in op.scratch(32))

    def plan_report(self) -> list[dict]:
        """One entry per IR layer, in order: ``layer``, ``kind``, ``path`` ('fast' or 'reference'),
        ``how`` (fast) or ``reason`` (reference), ``buffer`` (float32/float64 carrying the raw
        integers) and ``max_abs_raw`` (the proven bound of the layer's raw values)."""
        return [dict(self.report[layer.name]) for layer in self.fm.layers]

    # -- construction -------------------------------------------------------------------------------
    def _new_slot(self, size: int, lo, hi) -> int:
        self.slots.append(_Slot(size, _obj(lo, size), _obj(hi, size)))
        return len(self.slots) - 1

    def _set_output(self, layer: Layer, op: _Op, lo, hi) -> None:
        if _absmax(_obj(lo, layer.size), _obj(hi, layer.size)) >= _EXACT:
            raise _NotFast("values exceed 2**52")
        dst = self._new_slot(layer.size, lo, hi)
        op.out_slot = dst
        self.slot_producer[dst] = op
        self.layer_slot[layer.name] = dst

    def _chain_from(self, src_name: str, per_element: list | None = None):
        """The chain to extend for an element-wise layer reading ``src_name`` (fused if possible).

        A convolution's chain works per filter; ``per_element`` values (one per output element) are
        then folded to one per filter, or the layer is not fused when they differ between pixels.
        Returns (owner or None, stages, per-column values)."""
        slot = self.layer_slot[src_name]
        op = self.slot_producer.get(slot)
        if (
            self.consumers.get(src_name, 0) == 1
            and slot not in self.pinned
            and op is not None
            and op.fusable
            and op.out_slot == slot
        ):
            C = op.chain.C
            if per_element is None or len(per_element) == C:
                return op, op.chain, per_element
            folded = per_element[:C]
            if all(per_element[k] == folded[k % C] for k in range(len(per_element))):
                return op, op.chain, folded
        s = self.slots[slot]
        return None, _Stages(s.lo, s.hi), per_element

    def _emit_chain(self, layer: Layer, src_name: str, owner: _Op | None, st: _Stages) -> None:
        if not st.exact:
            raise _NotFast("values exceed 2**52")
        if owner is None and not st.stages and not st._pending():
            slot = self.layer_slot[src_name]  # every cast is a no-op on these values: share the buffer
            self.pinned.add(slot)
            self.layer_slot[layer.name] = slot
            return
        if owner is None:
            owner = _ChainOp(self.layer_slot[src_name], st)
            self.ops.append(owner)
        reps = layer.size // st.C  # > 1 when fused into a convolution (chain per filter)
        self._set_output(layer, owner, np.tile(st.lo, reps), np.tile(st.hi, reps))

    def _build_layer(self, layer: Layer) -> None:
        fn = getattr(self, f"_b_{layer.kind}", None)
        snap = (len(self.ops), len(self.slots), dict(self.layer_slot), dict(self.slot_producer), set(self.pinned),
                [(op, op.out_slot, op.chain.snapshot()) for op in self.ops if op.chain is not None])
        def rollback() -> None:
            del self.ops[snap[0]:]
            del self.slots[snap[1]:]
            self.layer_slot, self.slot_producer, self.pinned = dict(snap[2]), dict(snap[3]), set(snap[4])
            for op, out, chain_snap in snap[5]:
                op.out_slot = out
                op.chain.restore(chain_snap)

        self._how = "fused element-wise stage chain"
        try:
            if fn is None:
                raise _NotFast(f"no fast implementation of layer kind {layer.kind!r}")
            try:
                fn(layer)
            except (KeyError, IndexError, TypeError, ValueError) as exc:  # params/arrays the builder cannot read
                raise _NotFast(f"layer description not understood by the fast path ({type(exc).__name__}: {exc})") from exc
        except _NotFast as exc:
            rollback()
            reason = str(exc) or layer.kind
            if layer.kind in _ELEMENTWISE:
                try:
                    self._b_lut(layer)
                    self.report[layer.name] = {"layer": layer.name, "kind": layer.kind, "path": "fast",
                                               "how": self._how, "why_not_chain": reason}
                    return
                except _NotFast as exc2:
                    rollback()
                    reason = f"{reason}; lookup table: {exc2}"
            self._b_reference(layer)
            self.report[layer.name] = {"layer": layer.name, "kind": layer.kind, "path": "reference", "reason": reason}
            return
        self.report[layer.name] = {"layer": layer.name, "kind": layer.kind, "path": "fast", "how": self._how}

    def _b_reference(self, layer: Layer) -> None:
        if layer.type.width > 52:
            raise UnsupportedLayerError(f"layer {layer.name!r}: {layer.type.to_hls()} is too wide for the fast path")
        op = _RefOp(self.ref_by_name[layer.name].ref, [self.layer_slot[n] for n in layer.inputs])
        self.ops.append(op)
        lo, hi = _iv_type(layer.type, layer.size)
        self._set_output(layer, op, lo, hi)
        self.ref_layers.append(layer.name)

    def _b_input(self, layer: Layer) -> None:
        t = layer.type
        if t.width > 51 or (t.overflow == "WRAP" and t.sat_bits):
            raise UnsupportedLayerError(f"input {layer.name!r}: {t.to_hls()} is not supported by the fast path")
        k = [s.name for s in self.fm.inputs].index(layer.name)
        # one stage straight from the float input: v = x * 2**frac (exact), then round / overflow
        rm, om = ROUNDING_CODE[t.rounding], _OMODE[t.overflow]
        tlo = t.sat_min if t.overflow != "WRAP" else t.raw_min
        P = np.zeros((7, layer.size))
        P[:, :] = np.array([math.ldexp(1.0, t.frac), 0.0, 1.0, float(tlo), float(t.raw_max),
                            math.ldexp(1.0, t.width), math.ldexp(1.0, -t.width)])[:, None]
        lo, hi = _iv_type(t, layer.size)
        op = _InputOp(k, t, [(_stage_name(rm, om), rm, om, P, -math.inf)])
        self.ops.append(op)
        self._set_output(layer, op, lo, hi)

    def _b_reshape(self, layer: Layer) -> None:
        slot = self.layer_slot[layer.inputs[0]]
        self.pinned.add(slot)
        self.layer_slot[layer.name] = slot
        self._how = "alias of its input (no copy)"

    def _b_quantizer(self, layer: Layer) -> None:
        src = layer.inputs[0]
        a = layer.arrays
        k, b, i = (np.asarray(a[n]).reshape(-1) for n in ("k", "b", "i"))
        rnd, sat = layer.params["rounding"], layer.params["overflow"]
        types = [None if bb <= 0 else FixedType(int(bb), int(ii), bool(kk), rnd, sat) for kk, bb, ii in zip(k, b, i)]
        owner, st, types = self._chain_from(src, types)
        st.cast(self.fm.layer(src).type.frac, types)
        st.cast([t.frac if t is not None else layer.type.frac for t in types], layer.type)
        self._emit_chain(layer, src, owner, st)

    def _b_activation(self, layer: Layer) -> None:
        fn = layer.params["fn"]
        if fn == "thresholded_relu" and int(layer.params["param_raw"]) == 0:
            fn = "relu"
        if fn not in ("linear", "relu"):
            raise _NotFast(fn)
        src = layer.inputs[0]
        owner, st, _ = self._chain_from(src)
        if fn == "relu":
            st.relu()
        st.cast(self.fm.layer(src).type.frac, layer.type)
        self._emit_chain(layer, src, owner, st)

    def _b_batchnorm(self, layer: Layer) -> None:
        src = layer.inputs[0]
        in_t = self.fm.layer(src).type
        A, T = layer.arrays, layer.types
        nf = layer.params["n_filt"]
        sel = np.arange(layer.size) if nf == -1 else np.arange(layer.size) % nf
        s = np.asarray(A["scale"], dtype=object)[sel]
        b = np.asarray(A["bias"], dtype=object)[sel]
        fp = in_t.frac + T["scale"].frac
        f = max(fp, T["bias"].frac)
        owner, st, sb = self._chain_from(src, list(zip(s.tolist(), b.tolist())))
        s = np.array([v[0] for v in sb], dtype=object)
        b = np.array([v[1] for v in sb], dtype=object)
        st.mul(s * (1 << (f - fp)))
        st.add(b * (1 << (f - T["bias"].frac)))
        st.cast(f, layer.type)
        self._emit_chain(layer, src, owner, st)

    def _dense_parts(self, layer: Layer, in_t: FixedType, w, b, lo, hi):
        """Integer weights scaled to the accumulator grid, the stage chain that follows the matrix
        product, the bound of the products (max over outputs of sum |w x|) and each output's interval
        ``(lo, hi)`` before the bias."""
        T = layer.types
        at = T["accum"]
        fp = in_t.frac + T["weight"].frac
        if at.frac < fp:
            raise _NeedPerProduct("accumulator narrower than the products (per-product rounding)")
        w2 = np.asarray(w, dtype=object) * (1 << (at.frac - fp))
        bias_acc = np.asarray(requantize(np.asarray(b).reshape(-1), T["bias"].frac, at), dtype=object)
        n_in, n_out = w2.shape
        out_lo = np.zeros(n_out, dtype=object)
        out_hi = np.zeros(n_out, dtype=object)
        tot_lo = np.zeros(n_out, dtype=object)
        tot_hi = np.zeros(n_out, dtype=object)
        bound = 0
        for j in range(n_out):
            s_lo = s_hi = s_abs = 0
            n_lo = p_hi = 0
            for i in range(n_in):
                wv = int(w2[i, j])
                if wv == 0:
                    continue
                a, c = int(lo[i]) * wv, int(hi[i]) * wv
                s_lo += min(a, c)
                s_hi += max(a, c)
                n_lo += min(a, c, 0)
                p_hi += max(a, c, 0)
                s_abs += max(abs(a), abs(c))
            out_lo[j], out_hi[j] = s_lo, s_hi
            tot_lo[j], tot_hi[j] = n_lo + min(int(bias_acc[j]), 0), p_hi + max(int(bias_acc[j]), 0)
            bound = max(bound, s_abs)
        if bound + max((abs(int(v)) for v in bias_acc), default=0) >= _EXACT:
            raise _NotFast("dense sums exceed 2**52")
        st = _Stages(out_lo, out_hi)
        st.add(bias_acc)
        # every partial sum (bias first, then any order) lies in [tot_lo, tot_hi]
        if any(int(lv) < at.raw_min or int(hv) > at.raw_max for lv, hv in zip(tot_lo, tot_hi)):
            if at.overflow != "WRAP" or at.sat_bits:
                raise _NeedPerProduct("saturating accumulator may saturate")
            st.cast(at.frac, at)
        st.cast(at.frac, layer.type)
        if not st.exact:
            raise _NotFast("inexact")
        return w2, st, bound, (out_lo, out_hi)

    def _b_dense(self, layer: Layer) -> None:
        src = layer.inputs[0]
        s_in = self.slots[self.layer_slot[src]]
        try:
            w2, st, bound, _ = self._dense_parts(layer, self.fm.layer(src).type, layer.arrays["weight"], layer.arrays["bias"], s_in.lo, s_in.hi)
        except _NeedPerProduct:
            self._b_pp(layer, src, np.asarray(layer.arrays["weight"]), s_in.lo, s_in.hi, None)
            return
        self._how = "matrix product (BLAS / sparse gather) + fused stage chain"
        nnz = sum(1 for v in w2.reshape(-1) if int(v) != 0)
        per_col = max((sum(1 for v in w2[:, j] if int(v) != 0) for j in range(w2.shape[1])), default=0)
        sparse = w2.size >= 256 and nnz <= 0.15 * w2.size and per_col <= 8
        if bound >= _F32_LIMIT and not sparse:
            s_in.f64_needed = True
        op = _DenseOp(self.layer_slot[src], w2, st, sparse, layer.size)
        self.ops.append(op)
        self._set_output(layer, op, st.lo, st.hi)

    def _b_conv(self, layer: Layer) -> None:
        src = layer.inputs[0]
        s_in = self.slots[self.layer_slot[src]]
        ref = self.ref_by_name[layer.name].ref
        idx = ref.im2col  # (P, K); -1 = zero padding
        P_, K = idx.shape
        lo = np.append(s_in.lo, 0)[idx]
        hi = np.append(s_in.hi, 0)[idx]
        col_lo = np.array([min(int(v) for v in lo[:, k]) for k in range(K)], dtype=object)
        col_hi = np.array([max(int(v) for v in hi[:, k]) for k in range(K)], dtype=object)
        try:
            w2, st, bound, (sum_lo, sum_hi) = self._dense_parts(layer, self.fm.layer(src).type, ref.w2, layer.arrays["bias"], col_lo, col_hi)
        except _NeedPerProduct:
            s_in.pad = True
            self._b_pp(layer, src, np.asarray(ref.w2), col_lo, col_hi, idx)
            return
        acc = self._new_slot(P_ * w2.shape[1], np.tile(st.lo, P_), np.tile(st.hi, P_))
        if bound >= _F32_LIMIT:
            s_in.f64_needed = True
        slabs = _conv_slabs(idx)
        ints = _int16_pairs(w2, s_in.lo, s_in.hi, bound) if slabs is not None else None
        if ints is not None:
            # integer SIMD dot products on int16 pairs (AVX-512 VNNI vpdpwssd where the CPU has it),
            # exact in int32 because every output's exact value fits int32 (|sum| <= bound < 2**31)
            digits = "" if ints[0] == 1 else f", inputs in 2 int16 digits (>> {ints[1]})"
            self._how = ("integer dot products on int16 pairs per output pixel on contiguous input windows "
                         f"(int32 sums, no im2col copy{digits}) + fused stage chain")
            cols = None
        elif slabs is not None:
            # every window is a contiguous run of input features (or nearly): one BLAS product per
            # output pixel straight from the input buffer, with the window's weights scattered over
            # the run (zeros where padding or skipped features fall) -- no im2col copy
            self._how = "matrix product per output pixel on contiguous input windows (BLAS, no im2col copy) + fused stage chain"
            cols = None
        else:
            self._how = "im2col + matrix product (BLAS) + fused stage chain"
            cols = self._new_slot(P_ * K, np.tile(col_lo, P_), np.tile(col_hi, P_))
            s_in.pad = True
            if bound >= _F32_LIMIT:
                self.slots[cols].f64_needed = True
        op = _ConvOp(self.layer_slot[src], cols, acc, idx, w2, st, slabs, ints)
        op.layer_name = layer.name
        op.acc_iv = [(int(a), int(b)) for a, b in zip(sum_lo, sum_hi)]  # each filter's sum, for int32 lanes
        self.ops.append(op)
        self._set_output(layer, op, np.tile(st.lo, P_), np.tile(st.hi, P_))

    _b_conv1d = _b_conv
    _b_conv2d = _b_conv

    def _b_merge(self, layer: Layer) -> None:
        p = layer.params
        op_name = p["op"]
        if op_name not in ("add", "subtract", "multiply", "average", "maximum", "minimum"):
            raise _NotFast(f"merge op {op_name!r}")
        n1, n2 = int(p["n_elem1"]), int(p["n_elem2"])
        ne = max(n1, n2)
        i1 = None if n1 == ne else np.arange(ne) % n1
        i2 = None if n2 == ne else np.arange(ne) % n2
        sa, sb = (self.slots[self.layer_slot[n]] for n in layer.inputs)
        ta, tb = (self.fm.layer(n).type for n in layer.inputs)
        alo, ahi = (sa.lo, sa.hi) if i1 is None else (sa.lo[i1], sa.hi[i1])
        blo, bhi = (sb.lo, sb.hi) if i2 is None else (sb.lo[i2], sb.hi[i2])
        ma = mb = 1
        if op_name == "multiply":
            f = ta.frac + tb.frac
            cands = [alo * blo, alo * bhi, ahi * blo, ahi * bhi]
            lo = np.array([min(int(c[j]) for c in cands) for j in range(ne)], dtype=object)
            hi = np.array([max(int(c[j]) for c in cands) for j in range(ne)], dtype=object)
        else:
            f = max(ta.frac, tb.frac)
            ma, mb = 1 << (f - ta.frac), 1 << (f - tb.frac)
            if op_name == "subtract":
                lo, hi = alo * ma - bhi * mb, ahi * ma - blo * mb
            elif op_name in ("maximum", "minimum"):
                pick = max if op_name == "maximum" else min
                lo = np.array([pick(int(u), int(v)) for u, v in zip(alo * ma, blo * mb)], dtype=object)
                hi = np.array([pick(int(u), int(v)) for u, v in zip(ahi * ma, bhi * mb)], dtype=object)
            else:
                lo, hi = alo * ma + blo * mb, ahi * ma + bhi * mb
            if op_name == "average":
                f += 1
        if _absmax(lo, hi) >= _EXACT:
            raise _NotFast("merge exceeds 2**52")
        st = _Stages(lo, hi)
        st.cast(f, layer.type)
        if not st.exact:
            raise _NotFast("inexact")
        acc = self._new_slot(ne, lo, hi)
        self.slots[acc].f64_needed = True
        op = _MergeOp(self.layer_slot[layer.inputs[0]], self.layer_slot[layer.inputs[1]], acc,
                      "add" if op_name == "average" else op_name, float(ma), float(mb), i1, i2, st)
        self.ops.append(op)
        self._set_output(layer, op, st.lo, st.hi)

    def _b_pp(self, layer: Layer, src: str, w: np.ndarray, lo, hi, idx: np.ndarray | None) -> None:
        """Dense / conv with per-product casts to accum_t (narrow accumulators) or a saturating
        accumulator: one numba pass in hls4ml's order (products cast, summed in input order)."""
        T = layer.types
        at, in_t = T["accum"], self.fm.layer(src).type
        d = in_t.frac + T["weight"].frac - at.frac
        w = np.asarray(w, dtype=object)
        K, F = w.shape
        plo = np.empty((K, F), dtype=object)
        phi = np.empty((K, F), dtype=object)
        for i in range(K):
            for j in range(F):
                a, c = int(lo[i]) * int(w[i, j]), int(hi[i]) * int(w[i, j])
                plo[i, j], phi[i, j] = min(a, c), max(a, c)
        bias = np.asarray(requantize(np.asarray(layer.arrays["bias"]).reshape(-1), T["bias"].frac, at), dtype=object)
        mu, rm, pq, aq, acc_lo, acc_hi, f32 = _pp_analysis(at, d, plo, phi, bias)
        st = _Stages(acc_lo, acc_hi)
        if at.overflow == "WRAP":
            st.cast(at.frac, at)  # the deferred wrap of the sum (WRAP sums are exact modulo 2**W)
        st.cast(at.frac, layer.type)
        if not st.exact:
            raise _NotFast("inexact")
        P = 1 if idx is None else idx.shape[0]
        src_slot = self.layer_slot[src]
        cols = None
        if idx is not None:
            cols = self._new_slot(P * K, np.tile(lo, P), np.tile(hi, P))
        acc = self._new_slot(P * F, np.tile(acc_lo, P), np.tile(acc_hi, P))
        self.slots[acc].f64_needed = not f32
        op = _PPDenseOp(src_slot, cols, acc, idx, w, bias, P, mu, rm, pq, aq, st)
        self.ops.append(op)
        self._set_output(layer, op, np.tile(st.lo, P), np.tile(st.hi, P))
        self._how = f"per-product cast to {at.to_hls()} (numba, hls4ml order) + fused stage chain"

    def _b_dot(self, layer: Layer) -> None:
        at = layer.types["accum"]
        sa, sb = (self.slots[self.layer_slot[n]] for n in layer.inputs)
        ta, tb = (self.fm.layer(n).type for n in layer.inputs)
        if sa.size != sb.size:
            raise _NotFast("dot inputs of different sizes")
        K = sa.size
        plo = np.empty((K, 1), dtype=object)
        phi = np.empty((K, 1), dtype=object)
        for i in range(K):
            c = [int(sa.lo[i]) * int(sb.lo[i]), int(sa.lo[i]) * int(sb.hi[i]), int(sa.hi[i]) * int(sb.lo[i]), int(sa.hi[i]) * int(sb.hi[i])]
            plo[i, 0], phi[i, 0] = min(c), max(c)
        d = ta.frac + tb.frac - at.frac
        mu, rm, pq, aq, acc_lo, acc_hi, _ = _pp_analysis(at, d, plo, phi, np.zeros(1, dtype=object))
        st = _Stages(acc_lo, acc_hi)
        if at.overflow == "WRAP":
            st.cast(at.frac, at)
        st.cast(at.frac, layer.type)
        if not st.exact:
            raise _NotFast("inexact")
        acc = self._new_slot(1, acc_lo, acc_hi)
        self.slots[acc].f64_needed = True
        op = _DotOp(self.layer_slot[layer.inputs[0]], self.layer_slot[layer.inputs[1]], acc, mu, rm, pq, aq, st)
        self.ops.append(op)
        self._set_output(layer, op, st.lo, st.hi)
        self._how = f"products cast to {at.to_hls()} and summed in order (numba) + fused stage chain"

    def _b_lut(self, layer: Layer) -> None:
        """An element-wise layer as a per-element lookup table over every input code it can see
        (the proven interval), filled by the reference executor itself: exact by construction."""
        if len(layer.inputs) != 1:
            raise _NotFast("not single-input")
        s_in = self.slots[self.layer_slot[layer.inputs[0]]]
        if s_in.size != layer.size:
            raise _NotFast("not element-wise")
        lo = np.array([int(v) for v in s_in.lo], dtype=np.int64)
        span = np.array([int(h) - int(l) + 1 for l, h in zip(s_in.lo, s_in.hi)], dtype=np.int64)
        if int(span.sum()) > _LUT_MAX_ENTRIES:
            raise _NotFast(f"{int(span.sum())} input codes (> {_LUT_MAX_ENTRIES})")
        R = int(span.max()) if len(span) else 1
        k = np.arange(R, dtype=np.int64)[:, None]
        codes = lo[None, :] + np.minimum(k, span[None, :] - 1)
        y = np.asarray(self.ref_by_name[layer.name].ref([codes], None))
        if y.dtype == object or y.shape != codes.shape:
            raise _NotFast("values exceed int64")
        out_lo = np.array([int(y[: span[c], c].min()) for c in range(layer.size)], dtype=object)
        out_hi = np.array([int(y[: span[c], c].max()) for c in range(layer.size)], dtype=object)
        if _absmax(out_lo, out_hi) >= _EXACT:
            raise _NotFast("values exceed 2**52")
        op = _LutOp(self.layer_slot[layer.inputs[0]], lo.astype(np.float64), np.ascontiguousarray(y.T.astype(np.float64)))
        self.ops.append(op)
        self._set_output(layer, op, out_lo, out_hi)
        self._how = f"lookup table over the {int(span.sum())} reachable input codes (filled by the reference executor)"

    def _b_pool(self, layer: Layer) -> None:
        ref = self.ref_by_name[layer.name].ref
        src = layer.inputs[0]
        s_in = self.slots[self.layer_slot[src]]
        dt, at = self.fm.layer(src).type, layer.types["accum"]
        F = ref.pool_F
        O, Kw = ref.pool_idx.shape
        rows = np.full((O * F, Kw), -1, dtype=np.int64)
        lens = np.zeros(O * F, dtype=np.int64)
        for o in range(O):
            for f in range(F):
                rows[o * F + f] = np.where(ref.pool_idx[o] >= 0, ref.pool_idx[o] * F + f, -1)
                lens[o * F + f] = ref.pool_len[o]
        if max(dt.width, at.width) > 50:
            raise _NotFast("types wider than 50 bits")
        op_name = layer.params["op"]
        if op_name == "max":
            pad = dt.raw_min if dt.signed else (1 << (dt.width - 1))
            lo = np.empty(O * F, dtype=object)
            hi = np.empty(O * F, dtype=object)
            for o in range(O * F):
                lo[o] = max(int(s_in.lo[i]) if i >= 0 else pad for i in rows[o])
                hi[o] = max(int(s_in.hi[i]) if i >= 0 else pad for i in rows[o])
            st = _Stages(lo, hi)
            st.cast(dt.frac, at)
            code, ma, mb, mu, rm, aq = 0, 1.0, 1.0, 1.0, Q_TRN, _NO_OVF
        else:
            f = max(at.frac, dt.frac)
            if abs(f - min(at.frac, dt.frac)) > 40:
                raise _NotFast("extreme grid shift")
            ma, mb = math.ldexp(1.0, f - at.frac), math.ldexp(1.0, f - dt.frac)
            if (max(abs(at.raw_min), at.raw_max) << (f - at.frac)) + (max(abs(dt.raw_min), dt.raw_max) << (f - dt.frac)) >= _EXACT:
                raise _NotFast("sums exceed 2**52")
            tlo = at.sat_min if at.overflow != "WRAP" else at.raw_min
            lo = np.full(O * F, min(tlo, 0), dtype=object)
            hi = np.full(O * F, at.raw_max, dtype=object)
            code, mu, rm, aq = 1, 1.0 / ma, ROUNDING_CODE[at.rounding], _ovf_params(at)
            if dt.frac <= at.frac:  # every step exact on the accumulator grid: can a partial sum overflow?
                k = at.frac - dt.frac
                neg = [sum(min(int(s_in.lo[i]), 0) << k for i in rows[o] if i >= 0) for o in range(O * F)]
                pos = [sum(max(int(s_in.hi[i]), 0) << k for i in rows[o] if i >= 0) for o in range(O * F)]
                if min(neg, default=0) >= tlo and max(pos, default=0) <= at.raw_max:
                    aq = _NO_OVF
                    lo = np.array([min(v, 0) for v in neg], dtype=object)  # C division keeps |q| <= |sum|
                    hi = np.array([max(v, 0) for v in pos], dtype=object)
            st = _Stages(lo, hi)
            pad = 0
        st.cast(at.frac, layer.type)
        if not st.exact:
            raise _NotFast("inexact")
        acc = self._new_slot(O * F, lo, hi)
        self.slots[acc].f64_needed = True
        op = _PoolOp(self.layer_slot[src], acc, rows, code, float(pad), ma, mb, mu, rm, aq, lens, st)
        self.ops.append(op)
        self._set_output(layer, op, st.lo, st.hi)
        if op.pair is not None:
            self._how = f"{op_name} pooling of 2-input windows as the first step of the fused stage chain (no pooling pass)"
        else:
            self._how = f"{op_name} pooling (numba) + fused stage chain"

    _b_pooling1d = _b_pool
    _b_pooling2d = _b_pool
    _b_global_pooling1d = _b_pool
    _b_global_pooling2d = _b_pool

    def _b_scale_input(self, layer: Layer) -> None:
        """``work_t d = x - offset; d = d >> shift; res = (result_t)d`` as fused stages: the shift is a
        cast of the raw bits to a grid ``shift`` bits coarser (floor; a negative shift wraps within
        work_t's width), whose raw is then read back on work_t's grid."""
        src = layer.inputs[0]
        t_in = self.fm.layer(src).type
        wt, ot = layer.types["work"], layer.types["offset"]
        n = layer.size
        off = np.broadcast_to(np.asarray(layer.arrays["offset"], dtype=object).reshape(-1), (n,))
        sh = np.broadcast_to(np.asarray(layer.arrays["shift"], dtype=object).reshape(-1), (n,))
        if wt.width > 50 or (wt.overflow == "WRAP" and wt.sat_bits):
            raise _NotFast(f"work type {wt.to_hls()} outside the exact float64 range")
        owner, st, vals = self._chain_from(src, [(int(a), int(b)) for a, b in zip(off, sh)])
        off = np.array([v[0] for v in vals], dtype=object)
        sh = [v[1] for v in vals]
        f = max(t_in.frac, ot.frac)
        st.mul(1 << (f - t_in.frac))
        st.add(-off * (1 << (f - ot.frac)))
        st.cast(f, wt)
        W = wt.width
        st.cast(wt.frac, [FixedType(W, W - (wt.frac - k), wt.signed, "TRN", "WRAP") for k in sh])
        st.cast(wt.frac, layer.type)  # the shifted raw bits are read on work_t's grid
        self._emit_chain(layer, src, owner, st)
        self._how = "offset, cast, shift and cast as fused stages"

    def _b_table_activation(self, layer: Layer) -> None:
        """sigmoid / tanh / softplus / softsign tables: the index computed in exact float64
        arithmetic, the table cast to result_t once."""
        p = layer.params
        src = layer.inputs[0]
        dt = self.fm.layer(src).type
        s_in = self.slots[self.layer_slot[src]]
        n, div, off = int(p["table_size"]), int(p["range_div"]), int(p["offset"])
        a, den = n, abs(div)
        if dt.frac >= 0:
            den = den << dt.frac
        else:
            a = a << -dt.frac
        if s_in.absmax() * a >= _EXACT or den >= _EXACT or div == 0:
            raise _NotFast("table index arithmetic exceeds 2**52")
        T = requantize(np.asarray(layer.arrays["table"], dtype=np.int64).reshape(-1), layer.types["table"].frac, layer.type)
        if len(T) < n:
            raise _NotFast("table shorter than table_size")
        T = np.asarray(T[:n], dtype=np.float64)
        op = _TableActOp(self.layer_slot[src], float(a), float(den), div < 0, off, T)
        self.ops.append(op)
        self._set_output(layer, op, np.full(layer.size, int(T.min()), dtype=object), np.full(layer.size, int(T.max()), dtype=object))
        self._how = f"{p['fn']} table ({n} entries, cast to {layer.type.to_hls()} once; numba)"

    def _b_softmax(self, layer: Layer) -> None:
        """hls4ml softmax (latency / stable / argmax) per slice in one numba pass; the tables are cast
        to accum_t once when the plan is built."""
        p, T, A = layer.params, layer.types, layer.arrays
        impl = p["implementation"]
        if impl not in ("latency", "stable", "argmax"):
            raise _NotFast(f"softmax implementation {impl!r}")
        src = layer.inputs[0]
        dt, ot = self.fm.layer(src).type, layer.type
        S, inner, outer = int(p["n_slice"]), int(p["n_inner"]), int(p["n_outer"])
        rows = np.array([[(o * S + k) * inner + i for k in range(S)] for o in range(outer) for i in range(inner)],
                        dtype=np.int64).reshape(outer * inner, S)
        one = float(requantize(np.array([1], dtype=np.int64), 0, ot)[0])
        qo = np.append(_ovf_params(ot), one)
        z = np.zeros(2)
        if impl == "argmax":
            args = (2, _NO_OVF, _NO_OVF, qo, z, z, z, np.zeros(3, np.int64), 0, 0, np.zeros(1), np.zeros(1),
                    np.zeros((0, 3), np.int64), _NO_OVF)
        else:
            et, it, at, iit = T["exp_table"], T["inv_table"], T["accum"], T["inv_inp"]
            eb, ib = int(p["exp_bits"]), int(p["inv_bits"])
            nt = T["inp_norm"] if impl == "stable" else dt
            if max(at.width, iit.width, nt.width, ot.width, dt.width) > 50 or at.width + it.width > 51:
                raise _NotFast("softmax types too wide for exact float64 arithmetic")
            if nt.width < eb or iit.width < ib or 2 * abs(at.frac + it.frac - ot.frac) > 100:
                raise _NotFast("softmax index bits wider than the indexed type")
            exp_acc = requantize(np.asarray(A["exp_table"], dtype=np.int64), et.frac, at).astype(np.float64)
            inv_tab = np.asarray(A["inv_table"], dtype=np.float64)
            if len(exp_acc) < (1 << eb) or len(inv_tab) < (1 << ib):
                raise _NotFast("softmax tables smaller than their index range")

            def cast_p(src_frac: int, t: FixedType) -> np.ndarray:
                d = src_frac - t.frac
                return np.array([math.ldexp(1.0, -d), float(ROUNDING_CODE[t.rounding] if d > 0 else Q_TRN)])

            prog: list[tuple[int, int, int]] = []
            nxt = [S]

            def tree(ids: list[int]) -> int:
                if len(ids) == 1:
                    return ids[0]
                left = 2 ** _floorlog2(len(ids) - 1) if len(ids) > 2 else 1
                a, b = tree(ids[:left]), tree(ids[left:])
                d = nxt[0]
                nxt[0] += 1
                prog.append((d, a, b))
                return d

            tree(list(range(S)))
            args = (0 if impl == "latency" else 1, _ovf_params(nt), _ovf_params(iit), qo,
                    cast_p(dt.frac, nt), cast_p(at.frac, iit), cast_p(at.frac + it.frac, ot),
                    np.array([dt.width, nt.width, iit.width], dtype=np.int64), eb, ib, exp_acc, inv_tab,
                    np.array(prog, dtype=np.int64).reshape(-1, 3), _ovf_params(at))
        op = _SoftmaxOp(self.layer_slot[src], rows, args)
        self.ops.append(op)
        lo, hi = _iv_type(ot, layer.size)
        self._set_output(layer, op, lo, hi)
        self._how = f"{impl} softmax per slice (numba, tables cast once)"

    def _b_transpose(self, layer: Layer) -> None:
        src = layer.inputs[0]
        in_l = self.fm.layer(src)
        perm = np.arange(in_l.size).reshape(in_l.shape).transpose(list(layer.params["perm"])).reshape(-1)
        s_in = self.slots[self.layer_slot[src]]
        st = _Stages(s_in.lo[perm], s_in.hi[perm])
        st.cast(in_l.type.frac, layer.type)
        if not st.exact:
            raise _NotFast("inexact")
        op = _ChainOp(self.layer_slot[src], st, rows=perm)
        self.ops.append(op)
        self._set_output(layer, op, st.lo, st.hi)
        self._how = "permutation + cast (one fused pass)"

    def _b_concatenate(self, layer: Layer) -> None:
        axis = int(layer.params["axis"])
        parts, runs, lo, hi = [], [], [], []
        off = 0
        for n in layer.inputs:
            il = self.fm.layer(n)
            s_in = self.slots[self.layer_slot[n]]
            st = _Stages(s_in.lo, s_in.hi)
            st.cast(il.type.frac, layer.type)
            if not st.exact:
                raise _NotFast("inexact")
            runs.append((self.layer_slot[n], off, st))
            parts.append(np.arange(off, off + il.size).reshape(il.shape))
            lo.append(st.lo)
            hi.append(st.hi)
            off += il.size
        perm = np.concatenate(parts, axis=axis).reshape(-1)
        lo_all, hi_all = np.concatenate(lo), np.concatenate(hi)
        ident = bool(np.array_equal(perm, np.arange(off)))
        tmp = None if ident else self._new_slot(off, lo_all, hi_all)
        op = _ConcatOp(runs, tmp, None if ident else perm)
        self.ops.append(op)
        self._set_output(layer, op, lo_all[perm], hi_all[perm])
        if tmp is not None:
            self.slots[tmp].f64_needed = True
            self.slots[op.out_slot].f64_needed = True
        self._how = "casts (fused passes)" + ("" if ident else " + row gather")

    # -- execution -----------------------------------------------------------------------------------
    def _workspace(self, n: int) -> list[np.ndarray]:
        bufs = []
        for s in self.slots:
            b = np.empty((s.size + int(s.pad), n), dtype=s.dtype)
            if s.pad:
                b[s.size] = 0
            bufs.append(b)
        for op in self.ops:
            bufs += [np.empty(shape, dtype=np.int32) for shape in op.scratch(n)]
        return bufs

    def _execute(self, n: int, inputs: list[np.ndarray], from_float_in: bool, sink: Callable) -> None:
        blocks = [(s, min(n, s + self.block)) for s in range(0, n, self.block)]
        if not blocks:
            return
        K = _kernels()
        nthreads = min(self.threads, len(blocks))

        def work(part: list[tuple[int, int]]) -> None:
            spaces: dict[int, tuple[list, list]] = {}
            for s, e in part:
                m = e - s
                if m not in spaces:
                    bufs = self._workspace(m)
                    spaces[m] = (bufs, [b[: sl.size] if sl.pad else b for b, sl in zip(bufs, self.slots)])
                bufs, views = spaces[m]
                ins = [a[s:e] for a in inputs]
                for op in self.ops:
                    op.run(bufs, views, ins, from_float_in, K)
                sink(views, s, e)

        with _blas_single_thread():
            if nthreads == 1:
                work(blocks)
            else:
                pool = _thread_pool(nthreads)
                futures = [pool.submit(work, blocks[i::nthreads]) for i in range(1, nthreads)]
                work(blocks[0::nthreads])  # the calling thread takes the first share
                for f in futures:
                    f.result()

    def predict_float(self, xs: list[np.ndarray], dtype) -> list[np.ndarray]:
        n = xs[0].shape[0]
        outs = [np.empty((n, self.slots[s].size), dtype=dtype) for s in self.out_slots]
        scales = [math.ldexp(1.0, -t.frac) for t in self.out_types]
        xs = [a if (a.dtype in (np.float32, np.float64) and a.flags.c_contiguous) else np.ascontiguousarray(a, dtype=np.float64) for a in xs]
        K = _kernels()

        def sink(views, s, e):
            for o, slot, sc in zip(outs, self.out_slots, scales):
                K["to_float"](views[slot], o[s:e], sc)

        self._execute(n, xs, True, sink)
        return outs

    def run(self, raws: list[np.ndarray]) -> list[np.ndarray]:
        n = raws[0].shape[0]
        outs = [np.empty((n, self.slots[s].size), dtype=t.raw_dtype) for s, t in zip(self.out_slots, self.out_types)]
        raws = [np.ascontiguousarray(r) for r in raws]

        def sink(views, s, e):
            for o, slot in zip(outs, self.out_slots):
                o[s:e] = views[slot].T

        self._execute(n, raws, False, sink)
        return outs

    def describe(self) -> list[str]:
        """One line per op (for debugging and the benchmark report)."""
        out = []
        for op in self.ops:
            stages = getattr(op, "stages", [])
            out.append(f"{type(op).__name__}: {[s[0] for s in stages]} -> {self.slots[op.out_slot].dtype.__name__}")
        return out


_TP_CONTROLLER = None
_POOLS: dict = {}


def _thread_pool(n: int):
    """A process-wide pool of ``n - 1`` worker threads (the caller runs the remaining share)."""
    pool = _POOLS.get(n)
    if pool is None:
        from concurrent.futures import ThreadPoolExecutor

        pool = _POOLS[n] = ThreadPoolExecutor(max_workers=max(1, n - 1), thread_name_prefix="trigger_ml-emu")
    return pool


class _blas_single_thread:
    """Limit BLAS to one thread while blocks run in parallel Python threads (no oversubscription)."""

    def __enter__(self):
        global _TP_CONTROLLER
        try:
            if _TP_CONTROLLER is None:
                from threadpoolctl import ThreadpoolController

                _TP_CONTROLLER = ThreadpoolController()
            self._ctl = _TP_CONTROLLER.limit(limits=1, user_api="blas")
        except Exception:  # pragma: no cover - threadpoolctl missing
            self._ctl = None
        return self

    def __exit__(self, *exc):
        if self._ctl is not None:
            self._ctl.restore_original_limits()
        return False


class _InputOp(_Op):
    def __init__(self, k: int, t: FixedType, stages: list) -> None:
        self.k, self.t, self.stages = k, t, stages
        self.lim = math.ldexp(1.0, 52 - t.frac)  # |x| below this: x * 2**frac is safely exact

    def finalize(self, plan: _FastPlan) -> None:
        self.runner = _Runner(self.stages, plan.slots[self.out_slot].size)

    def run(self, bufs, views, inputs, from_float_in, K) -> None:
        x = inputs[self.k]
        dst = views[self.out_slot]
        if not from_float_in:
            dst[...] = x.T
            return
        # stream the block in with a plain copy (prefetch-friendly; it also checks the values), then
        # let the chain read it transposed from cache: cheaper than a strided read from memory
        stage = np.empty(x.shape, dtype=x.dtype)
        if K["copy_check"](x, stage, self.lim):
            dst[...] = from_float(np.asarray(x, dtype=np.float64), self.t).T
        else:
            self.runner(stage.T, dst)


class _ChainOp(_Op):
    fusable = True

    def __init__(self, src: int, st: _Stages, rows: np.ndarray | None = None) -> None:
        self.src, self.chain, self.rows = src, st, rows

    def finalize(self, plan: _FastPlan) -> None:
        self.stages = self.chain.finish()
        self.runner = _Runner(self.stages, plan.slots[self.out_slot].size, rows1=self.rows)

    def run(self, bufs, views, inputs, ffi, K) -> None:
        self.runner(views[self.src], views[self.out_slot])


class _PPDenseOp(_Op):
    """Dense / conv with per-product casts: (im2col gather,) the numba pp kernel, the chain."""

    fusable = True

    def __init__(self, src, cols, acc, idx, w, bias, P, mu, rm, pq, aq, st) -> None:
        self.src, self.cols, self.acc, self.idx, self.chain = src, cols, acc, idx, st
        self.w = np.array([[float(int(v)) for v in row] for row in w], dtype=np.float64).reshape(w.shape)
        self.bias = np.array([float(int(v)) for v in bias], dtype=np.float64)
        self.P, self.mu, self.rm, self.pq, self.aq = P, float(mu), int(rm), pq, aq

    def finalize(self, plan) -> None:
        super().finalize(plan)
        self.runner = _Runner(self.stages, plan.slots[self.out_slot].size, tile=self.P)
        if self.idx is not None:
            self.flat_idx = np.where(self.idx < 0, plan.slots[self.src].size, self.idx).reshape(-1)
        dt = plan.slots[self.acc].dtype  # float32 only when the plan proved every value < 2**24
        K_, F = self.w.shape
        F4 = -(-F // 4) * 4  # the kernel updates four outputs at a time: zero columns pad the rest
        self.ws = np.zeros((K_, F4), dtype=dt)
        self.ws[:, :F] = self.w * self.mu  # exact: a power-of-two scaling
        self.bias_d = np.zeros(F4, dtype=dt)
        self.bias_d[:F] = self.bias

    def run(self, bufs, views, inputs, ffi, K) -> None:
        x = views[self.src]
        if self.idx is not None:
            x = views[self.cols]
            np.take(bufs[self.src], self.flat_idx, axis=0, out=x)
        acc = views[self.acc]
        K["pp_dense"](x, self.ws, self.bias_d, self.P, self.w.shape[0], self.rm, self.pq, self.aq, acc)
        self.runner(acc, views[self.out_slot])


class _DotOp(_Op):
    fusable = True

    def __init__(self, a, b, acc, mu, rm, pq, aq, st) -> None:
        self.a, self.b, self.acc, self.mu, self.rm, self.pq, self.aq, self.chain = a, b, acc, float(mu), int(rm), pq, aq, st

    def run(self, bufs, views, inputs, ffi, K) -> None:
        acc = views[self.acc]
        K["pp_dot"](views[self.a], views[self.b], self.mu, self.rm, self.pq, self.aq, acc)
        self.runner(acc, views[self.out_slot])


class _LutOp(_Op):
    def __init__(self, src, base, T) -> None:
        self.src, self.base, self.T = src, base, T

    def run(self, bufs, views, inputs, ffi, K) -> None:
        K["lut"](views[self.src], self.base, self.T, views[self.out_slot])


class _PoolOp(_Op):
    fusable = True

    def __init__(self, src, acc, rows, code, pad, ma, mb, mu, rm, aq, lens, st) -> None:
        self.src, self.acc, self.rows, self.code, self.pad = src, acc, rows, code, pad
        self.ma, self.mb, self.mu, self.rm, self.aq, self.lens, self.chain = ma, mb, mu, int(rm), aq, lens, st
        # windows of exactly two inputs (2x1, 1x2 pools): the stage chain's first step combines them --
        # max(a, b), or a*mb + b*mb then C division by 2 (TRN_ZERO of x/2, exact) when no partial sum
        # can overflow -- so the window needs no pass of its own.  ``pair``: the inputs' multipliers
        self.pair = None
        if rows.shape[1] == 2 and bool((rows >= 0).all()):
            if code == 0:
                self.pair = (1.0, 1.0)
            elif aq[0] < 0 and ma == 1.0 and mu == 1.0 and (lens == 2).all():
                self.pair = (mb, mb)

    def finalize(self, plan) -> None:
        super().finalize(plan)
        if self.pair is not None:
            stages = list(self.stages)
            if self.code == 1:
                stages.insert(0, ("x/2", Q_TRN_ZERO, O_SAT, _plain_stage_params(len(self.rows), mu=0.5), -math.inf))
            self.runner = _Runner(stages, plan.slots[self.out_slot].size, binop="maximum" if self.code == 0 else "add",
                                  rows1=self.rows[:, 0], rows2=self.rows[:, 1])
            plan.slots[self.acc].size = 0

    def run(self, bufs, views, inputs, ffi, K) -> None:
        if self.pair is not None:
            x = views[self.src]
            self.runner(x, views[self.out_slot], x, *self.pair)
            return
        acc = views[self.acc]
        K["pool"](views[self.src], self.rows, self.code, self.pad, self.ma, self.mb, self.mu, self.rm, self.aq, self.lens, acc)
        self.runner(acc, views[self.out_slot])


class _TableActOp(_Op):
    def __init__(self, src, a, den, neg, off, T) -> None:
        self.src, self.a, self.den, self.neg, self.off, self.T = src, a, den, neg, off, T

    def run(self, bufs, views, inputs, ffi, K) -> None:
        K["table_act"](views[self.src], self.a, self.den, self.neg, self.off, self.T, views[self.out_slot])


class _SoftmaxOp(_Op):
    def __init__(self, src, rows, args) -> None:
        self.src, self.rows, self.args = src, rows, args

    def run(self, bufs, views, inputs, ffi, K) -> None:
        K["softmax"](views[self.src], self.rows, *self.args, views[self.out_slot])


class _ConcatOp(_Op):
    def __init__(self, runs, tmp, perm) -> None:
        self.runs, self.tmp, self.perm = runs, tmp, perm

    def finalize(self, plan) -> None:
        self.stages = []
        self.runners = [(src, off, _Runner(st.finish(), plan.slots[src].size)) for src, off, st in self.runs]
        self.sizes = [plan.slots[src].size for src, _, _ in self.runs]

    def run(self, bufs, views, inputs, ffi, K) -> None:
        dst = views[self.out_slot] if self.tmp is None else views[self.tmp]
        for (src, off, runner), n in zip(self.runners, self.sizes):
            runner(views[src], dst[off : off + n])
        if self.tmp is not None:
            np.take(dst, self.perm, axis=0, out=views[self.out_slot])


class _DenseOp(_Op):
    fusable = True

    def __init__(self, src: int, w2: np.ndarray, st: _Stages, sparse: bool, n_out: int) -> None:
        self.src, self.w_int, self.chain, self.sparse, self.n_out = src, w2, st, sparse, n_out

    def finalize(self, plan: _FastPlan) -> None:
        super().finalize(plan)
        w = np.array([float(int(v)) for v in self.w_int.reshape(-1)], dtype=np.float64).reshape(self.w_int.shape)
        self.narrow = not self.sparse and w.shape[1] <= 2
        if self.sparse:
            cols = [np.nonzero(w[:, j])[0] for j in range(w.shape[1])]
            kmax = max(1, max(len(c) for c in cols))
            self.idx = np.zeros((kmax, w.shape[1]), dtype=np.int64)
            self.wv = np.zeros((kmax, w.shape[1]), dtype=np.float64)
            for j, c in enumerate(cols):
                self.idx[: len(c), j] = c
                self.wv[: len(c), j] = w[c, j]
            self.acc_dtype = np.float64
        elif self.narrow:
            self.wt = np.ascontiguousarray(w.T)
            self.acc_dtype = np.float64
        else:
            self.acc_dtype = plan.slots[self.src].dtype
            self.wt = np.ascontiguousarray(w.T.astype(self.acc_dtype))
        self.gather = self.sparse and self.idx.shape[0] == 1 and bool(self.stages) and self.stages[0][4] == -math.inf
        if self.gather:
            # one weight per output: out[j] = chain(w[j] * x[idx[j]]) -- the weight folds into the first
            # stage's integer multiplier (v * pm + ad), the gather into the chain's row map
            name, rm, om, P0, rlo = self.stages[0]
            P0 = P0.copy()
            P0[0] = P0[0] * self.wv[0]
            self.runner = _Runner([(name, rm, om, P0, rlo)] + list(self.stages[1:]), self.n_out, rows1=self.idx[0])
            self.acc_slot = self.out_slot
        elif not self.stages and (self.sparse or self.narrow or plan.slots[self.out_slot].dtype == self.acc_dtype):
            self.acc_slot = self.out_slot  # no cast after the product: write the output directly
        else:
            self.acc_slot = len(plan.slots)
            z = np.zeros(self.n_out, dtype=object)
            plan.slots.append(_Slot(self.n_out, z, z, self.acc_dtype))

    def run(self, bufs, views, inputs, ffi, K) -> None:
        if self.gather:
            self.runner(views[self.src], views[self.out_slot])
            return
        x, acc = views[self.src], views[self.acc_slot]
        if self.sparse:
            K["ell"](x, self.idx, self.wv, acc)
        elif self.narrow:
            K["narrow_dense"](x, self.wt, acc)
        else:
            np.matmul(self.wt, x, out=acc)
        if self.acc_slot != self.out_slot:
            self.runner(acc, views[self.out_slot])


class _ConvOp(_Op):
    fusable = True

    def __init__(self, src, cols, acc, idx, w2, st, slabs=None, ints=None) -> None:
        self.src, self.cols, self.acc, self.idx, self.w_int, self.chain = src, cols, acc, idx, w2, st
        self.slabs, self.ints = slabs, ints
        self.live_pixels = idx.shape[0]  # output pixels computed (fewer when the last ones are never read)

    def scratch(self, n: int) -> list[tuple[int, int]]:
        if self.ints is None:
            return []
        npad = -(-n // 32) * 32
        return [(self.n_pairs, npad), (self.live_pixels * self.Fb * 8, npad)]

    def finalize(self, plan) -> None:
        super().finalize(plan)
        self.P, self.K = self.idx.shape
        F = self.w_int.shape[1]
        if self.ints is not None:
            self._finalize_ints(plan)
            return
        # the chain was built per filter: repeat its parameters for every output pixel
        self.runner = _Runner(self.stages, plan.slots[self.out_slot].size, tile=self.P)
        # BLAS needs one dtype: the im2col copy converts, the slab products read the input as it is
        dt = plan.slots[self.src if self.slabs is not None else self.cols].dtype
        plan.slots[self.acc].dtype = dt
        w = np.array([float(int(v)) for v in self.w_int.reshape(-1)], dtype=dt).reshape(self.w_int.shape)
        self.wt = np.ascontiguousarray(w.T)  # (F, K)
        self.F = F
        if self.slabs is not None:
            by_weights: dict = {}  # output pixels with the same run length and weights
            for p, (lo, hi) in enumerate(self.slabs):
                wp = np.zeros((F, hi - lo), dtype=dt)
                for k in np.nonzero(self.idx[p] >= 0)[0]:
                    wp[:, self.idx[p, k] - lo] = self.wt[:, k]
                by_weights.setdefault((hi - lo, wp.tobytes()), (wp, []))[1].append((p, int(lo)))
            # one batched BLAS call per run of pixels equally spaced in output and input (strided views)
            self.groups = []  # (first pixel, pixel step, count, first feature, feature step, run, weights)
            for (L, _), (wp, ps) in by_weights.items():
                runs: list[list[int]] = []  # [first pixel, pixel step, count, first feature, feature step]
                for p, lo in ps:
                    r = runs[-1] if runs else None
                    if r is not None and r[2] == 1:  # a second pixel fixes the run's steps
                        r[1], r[2], r[4] = p - r[0], 2, lo - r[3]
                    elif r is not None and p == r[0] + r[2] * r[1] and lo == r[3] + r[2] * r[4]:
                        r[2] += 1
                    else:
                        runs.append([p, 0, 1, lo, 0])
                self.groups += [(p0, dp, G, lo0, dlo, int(L), wp) for p0, dp, G, lo0, dlo in runs]
            return
        size_in = plan.slots[self.src].size
        self.flat_idx = np.where(self.idx < 0, size_in, self.idx).reshape(-1)  # -1 -> the zero row

    def _finalize_ints(self, plan) -> None:
        """Pack the weights for ``conv_pairs``: per pixel, 8-filter blocks x int16 pairs of its run."""
        digits, shift, k = self.ints
        F = self.F = self.w_int.shape[1]
        self.Fb = -(-F // 8)
        size_in = plan.slots[self.src].size
        self.n_pairs = -(-size_in // 2) if digits == 1 else size_in
        wt = np.array([[int(v) >> k for v in row] for row in self.w_int.T], dtype=np.int64)  # (F, K)
        lo2, L2, packed = [], [], []
        for p, (lo, hi) in enumerate(self.slabs[: self.live_pixels]):
            a, b = (lo // 2, -(-hi // 2)) if digits == 1 else (lo, hi)
            if hi <= lo:
                a = b = 0
            W = np.zeros((self.Fb * 8, (b - a) * (2 if digits == 1 else 1)), dtype=np.int64)
            base = 2 * a if digits == 1 else a
            for j in np.nonzero(self.idx[p] >= 0)[0]:
                W[:F, self.idx[p, j] - base] = wt[:, j]
            low, high = (W[:, 0::2], W[:, 1::2]) if digits == 1 else (W, W << shift)
            pk = ((low & 0xFFFF) | (high << 16)).astype(np.int32)  # (Fb*8, pairs): int32 wraps the top half
            packed.append(pk.reshape(self.Fb, 8, b - a).transpose(0, 2, 1).reshape(-1))
            lo2.append(a)
            L2.append(b - a)
        self.lo2, self.L2 = np.array(lo2, dtype=np.int64), np.array(L2, dtype=np.int64)
        self.wofs = np.concatenate([[0], np.cumsum([len(x) for x in packed])[:-1]]).astype(np.int64)
        self.wpk = np.concatenate(packed).astype(np.int32) if packed else np.zeros(0, np.int32)
        rows = (np.arange(self.P)[:, None] * (self.Fb * 8) + np.arange(F)[None, :]).reshape(-1)
        stages = list(self.stages)
        if k:  # the sums are 2**-k of the BLAS path's: the first stage's multiplier takes the 2**k back
            if stages:
                name, rm, om, P0, rlo = stages[0]
                P0 = P0.copy()
                P0[0] *= 2.0**k
                stages[0] = (name, rm, om, P0, rlo)
            else:
                stages = [("x2**k", Q_TRN, O_SAT, _plain_stage_params(F, pm=2.0**k), -math.inf)]
        self.SP = _int_stages(stages, self.Fb * 8, [(lo >> k, hi >> k) for lo, hi in self.acc_iv])
        self.runner = _Runner(stages[len(self.SP):], plan.slots[self.out_slot].size, tile=self.P, rows1=rows)
        # the kernel stores floats itself when no stage is left; float32 holds its int32 results exactly
        # only below 2**24, which the slot's dtype choice already proved
        self.direct = len(self.SP) == len(stages)
        plan.slots[self.acc].size = 0  # the sums live in the int32 scratch instead

    def run(self, bufs, views, inputs, ffi, K) -> None:
        if self.ints is not None:
            xi, out = bufs[self.scratch_at], bufs[self.scratch_at + 1]
            K["pack_pairs"](views[self.src], self.ints[0], self.ints[1], xi)
            y = views[self.out_slot][: self.live_pixels * self.F]
            if self.direct:  # the whole chain ran in the kernel, which stores the outputs itself
                K["conv_pairs"](xi, self.wpk, self.lo2, self.L2, self.wofs, self.Fb, self.SP, self.F, y, out)
                return
            K["conv_pairs"](xi, self.wpk, self.lo2, self.L2, self.wofs, self.Fb, self.SP, self.F, y[:0], out)
            self.runner(out, y)
            return
        acc = views[self.acc]
        if self.slabs is not None:
            x, F = bufs[self.src], self.F
            n = x.shape[1]
            for p0, dp, G, lo0, dlo, L, wp in self.groups:
                if G == 1:
                    np.matmul(wp, x[lo0:lo0 + L], out=acc[p0 * F:(p0 + 1) * F])
                    continue
                xs, os_ = x.strides, acc.strides
                np.matmul(wp, as_strided(x[lo0:], (G, L, n), (dlo * xs[0], xs[0], xs[1])),
                          out=as_strided(acc[p0 * F:], (G, F, n), (dp * F * os_[0], os_[0], os_[1])))
        else:
            n = views[self.src].shape[1]
            cols = views[self.cols]
            np.take(bufs[self.src], self.flat_idx, axis=0, out=cols)
            np.matmul(self.wt, cols.reshape(self.P, self.K, n), out=acc.reshape(self.P, self.F, n))
        self.runner(acc, views[self.out_slot])


#: default block size: the most events, in steps of 128 between these bounds, whose workspace fits
#: _BLOCK_BYTES (one block's buffers stay near the caches)
_BLOCK_MIN, _BLOCK_MAX, _BLOCK_BYTES = 256, 2048, 12 << 20


def _auto_block(bytes_per_event: int) -> int:
    """Events per block when the caller does not choose: 2048 for dense models (a few kB per event),
    fewer for convolutional ones, whose per-event buffers are large.  Measured (2 threads, events/s):
    adc-cnn-ae (29 kB/event) 1.17M at 384 against 1.09M at 256, 1.12M at 512 and 0.76M at 1024; the
    dense zoo models (0.7-5 kB/event) are fastest at 2048."""
    fit = (_BLOCK_BYTES // max(1, bytes_per_event)) // 128 * 128
    return int(min(_BLOCK_MAX, max(_BLOCK_MIN, fit)))


def _int16_pairs(w2: np.ndarray, lo: np.ndarray, hi: np.ndarray, bound: int) -> tuple[int, int, int] | None:
    """How a product ``w2`` over inputs in ``[lo, hi]`` runs on int16 pairs with int32 sums, or None.

    Returns ``(digits, s, k)``: the weights are used as ``w2 >> k`` (``2**k`` divides every weight; the
    stage chain multiplies it back).  digits 1: inputs and weights fit int16, two inputs per pair.
    digits 2: each input is split into two int16 digits ``x mod 2**s`` and ``x >> s``, weighted by ``w``
    and ``w << s`` (both int16).  Sums wrap modulo 2**32 (as ``vpdpwssd`` does), so each output is exact
    when its exact value fits int32: ``bound >> k`` (max over outputs of sum |w x|) < 2**31."""
    ws = [int(v) for v in w2.reshape(-1) if int(v) != 0]
    if not ws:
        return None
    k = min((v & -v).bit_length() - 1 for v in ws)
    if bound >> k >= 2**31:
        return None
    wmax = max(abs(v) for v in ws) >> k
    xlo = min((int(v) for v in lo), default=0)
    xhi = max((int(v) for v in hi), default=0)
    if wmax < 2**15 and -(2**15) <= xlo and xhi < 2**15:
        return (1, 0, k)
    s = min(15, ((2**15 - 1) // wmax).bit_length() - 1)  # w << s still fits int16; x mod 2**s < 2**15
    if s >= 1 and -(2**15) <= (xlo >> s) and (xhi >> s) < 2**15:
        return (2, s, k)
    return None


def _int_stages(stages: list, n_cols: int, iv: list[tuple[int, int]]) -> np.ndarray:
    """Parameters ``SP[s, row, column]`` (int32, rows as in ``kernels.IS_*``) of the longest prefix of
    a stage chain that runs exactly in int32 lanes (``kernels.istage``) on values in the per-column
    intervals ``iv``: integer multiplier and offset, ReLU, rounding TRN / RND by a power of two (a left
    shift folds into the multiplier), overflow WRAP (a power-of-two span) or SAT, every intermediate
    value proven inside int32.  Columns from ``len(iv)`` to ``n_cols`` (padding) get a neutral stage."""
    from trigger_ml.emulate.fast import kernels as kn

    lim = 2**31
    neutral = np.zeros(9, dtype=np.int64)
    neutral[[kn.IS_PM, kn.IS_RLO, kn.IS_MASK, kn.IS_LO, kn.IS_HI]] = (1, -lim, -1, -lim, lim - 1)
    out: list[np.ndarray] = []

    def done() -> np.ndarray:
        return np.array(out, dtype=np.int64).astype(np.int32).reshape(-1, 9, n_cols)

    iv = list(iv)
    for _name, rm, om, P, rlo in stages:
        sp = np.repeat(neutral[:, None], n_cols, axis=1)
        new_iv = []
        for c, (a, b) in enumerate(iv):
            pm, ad, mu, slo, shi, M = (float(v) for v in P[:6, c])
            m, e = math.frexp(mu)
            e -= 1  # mu = 2**e when m == 0.5
            if pm != int(pm) or ad != int(ad) or rlo not in (0.0, -math.inf) or m != 0.5 or not -31 < e < 31:
                return done()
            pm, ad = int(pm), int(ad)
            if e > 0:  # relu(v*pm + ad) * 2**e == relu(v*(pm << e) + (ad << e))
                pm, ad, e = pm << e, ad << e, 0
            a, b = min(a * pm, b * pm) + ad, max(a * pm, b * pm) + ad
            if rlo == 0.0:
                a, b = max(a, 0), max(b, 0)
            shift = -e
            half = (1 << (shift - 1)) if (rm == Q_RND and shift) else 0
            if (shift and rm not in (Q_TRN, Q_RND)) or max(abs(pm), abs(a), abs(b) + half) >= lim:
                return done()
            a, b = (a + half) >> shift, (b + half) >> shift
            wlo, mask, lo, hi = 0, -1, -lim, lim - 1
            if om == O_WRAP:
                if M != 2.0 ** (int(M).bit_length() - 1) or slo != int(slo):
                    return done()
                wlo, M = int(slo), int(M)
                if a >= wlo and b <= wlo + M - 1:
                    wlo = 0  # nothing wraps
                elif -lim <= wlo and wlo + M - 1 < lim:
                    mask = M - 1
                    a, b = wlo, wlo + M - 1
                else:
                    return done()
            elif om == O_SAT:
                lo = -lim if slo == -math.inf else max(int(slo), -lim)
                hi = lim - 1 if shi == math.inf else min(int(shi), lim - 1)
                a, b = min(max(a, lo), hi), max(min(b, hi), lo)
            else:
                return done()
            sp[:, c] = (pm, ad, 0 if rlo == 0.0 else -lim, half, shift, wlo, mask, lo, hi)
            new_iv.append((a, b))
        out.append(sp)
        iv = new_iv
    return done()


def _conv_slabs(idx: np.ndarray) -> list[tuple[int, int]] | None:
    """Per output pixel, the contiguous run of input features its window touches -- when reading those
    runs costs no more multiply-adds than the im2col rows (padding included), else ``None``."""
    P, K = idx.shape
    runs = []
    for p in range(P):
        v = idx[p][idx[p] >= 0]
        runs.append((int(v.min()), int(v.max()) + 1) if len(v) else (0, 0))
    if sum(hi - lo for lo, hi in runs) > P * K:
        return None
    return runs


class _MergeOp(_Op):
    fusable = True

    def __init__(self, a, b, acc, op, ma, mb, i1, i2, st) -> None:
        self.a, self.b, self.acc, self.op, self.ma, self.mb, self.i1, self.i2, self.chain = a, b, acc, op, ma, mb, i1, i2, st

    def finalize(self, plan) -> None:
        super().finalize(plan)
        # the binary op (and any broadcast) is fused into the single pass
        self.runner = _Runner(self.stages, plan.slots[self.out_slot].size, binop=self.op, rows1=self.i1, rows2=self.i2)

    def run(self, bufs, views, inputs, ffi, K) -> None:
        self.runner(views[self.a], views[self.out_slot], views[self.b], self.ma, self.mb)


class _RefOp(_Op):
    def __init__(self, ref: _RefLayer, ins: list[int]) -> None:
        self.ref, self.ins = ref, ins

    def run(self, bufs, views, inputs, ffi, K) -> None:
        y = self.ref([views[i].T.astype(np.int64) for i in self.ins], None)
        views[self.out_slot][...] = y.T


def _build_fast_plan(fm: FirmwareModel, ref_steps: list[_Step], threads: int | None, block: int | None) -> _FastPlan:
    return _FastPlan(fm, ref_steps, threads, block)
