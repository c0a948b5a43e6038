"""C++ emulator export for CMSSW: the firmware IR as straight-line integer C++ behind the
``hls4mlEmulator::Model`` interface that CMSSW's L1 emulation loads with ``hls4mlEmulator::ModelLoader``.

:func:`export_cpp` writes a directory with

* ``<name>.h`` — namespace ``tml_<name>``: ``input_t`` / ``result_t`` (the model's ``ap_fixed``
  types), ``N_INPUT`` / ``N_OUTPUT`` and ``predict_raw(const int64_t*, int64_t*)``, the model on
  raw integers;
* ``<name>.cpp`` — ``predict_raw``: one straight-line statement per product / cast, generated from
  the IR (weights, biases and tables are constants; zero weights are skipped), exact ``ap_fixed``
  rounding and overflow (``tml_fixed.h``, the same semantics as :mod:`trigger_ml.core.fixed`), in
  ``int64_t`` or ``__int128`` where a bound needs it — no HLS templates, so it is fast on a CPU;
* ``<name>_emulator.cpp`` — class ``<name>_emulator : public hls4mlEmulator::Model`` with
  ``prepare_input(std::any)`` (an ``input_t*``), ``predict()``, ``read_result(std::any)`` (a
  ``result_t*``), and ``extern "C"`` ``create_model()`` / ``destroy_model()``;
* ``Makefile`` — builds ``<name>.so`` with g++ against the ``ap_types`` headers (``AP_TYPES``, default:
  the copy hls4ml ships) and CMSSW's ``emulator.h`` (``EMULATOR_INCLUDE``, from hls4mlEmulatorExtras);
  ``make driver`` builds ``driver.cpp``, which loads the library through ``create_model`` (dlopen),
  runs it on raw integer inputs from a file and reports events/s;
* ``export.json`` — what was exported (types, sizes, IR hash).

Layers: every IR kind the emulator executes except ``softmax``, ``elu`` and ``selu``, which are
refused with a one-line :class:`~trigger_ml.core.errors.UnsupportedLayerError` naming the layer, as
are models with several inputs or outputs and types wider than 63 bits.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from trigger_ml.core.errors import ArtifactError, UnsupportedLayerError
from trigger_ml.core.fixed import ROUNDING_CODE, FixedType, requantize
from trigger_ml.ir import FirmwareModel, Layer

__all__ = ["SUPPORTED_KINDS", "export_cpp", "generate_cpp", "default_ap_types_dir"]

SUPPORTED_KINDS = frozenset({
    "input", "quantizer", "dense", "conv1d", "conv2d", "pooling1d", "pooling2d", "global_pooling1d",
    "global_pooling2d", "batchnorm", "activation", "table_activation", "unary_lut", "merge", "dot",
    "concatenate", "reshape", "transpose",
})
_OVF = {"WRAP": 0, "SAT": 1, "SAT_ZERO": 2, "SAT_SYM": 3}
_I62 = 1 << 62

_FIXED_H = r"""// tml_fixed.h: exact ap_fixed casts on raw integers (written by trigger_ml.emulate.export_cpp).
// cast<D, W, S, RND, OVF, N>(v): v holds value v * 2^-(f + D); returns the raw integer of
// ap_(u)fixed<W, W - f, RND, OVF, N> that `dst_t d = src;` gives (rounding, then overflow).
#ifndef TML_FIXED_H_
#define TML_FIXED_H_
#include <cstdint>

namespace tml {
typedef __int128 i128;
enum { TRN = 0, TRN_ZERO = 1, RND = 2, RND_ZERO = 3, RND_INF = 4, RND_MIN_INF = 5, RND_CONV = 6 };
enum { WRAP = 0, SAT = 1, SAT_ZERO = 2, SAT_SYM = 3 };

template <int D, int MODE, typename T>
static inline T rnd(T v) {  // D >= 1: exact round(v / 2^D) in the quantization mode
  constexpr int B = sizeof(T) * 8 - 1;
  constexpr int DS = D < B ? D : B;
  T t = v >> DS;
  if constexpr (MODE == TRN) {
    return t;
  } else {
    constexpr int D1 = (D - 1) < B ? (D - 1) : B;
    const bool qb = ((v >> D1) & 1) != 0;
    bool r;
    if constexpr (D - 1 >= B) r = v != 0;
    else if constexpr (D == 1) r = false;
    else r = (v & ((T(1) << (D1 > 0 ? D1 : 1)) - 1)) != 0;
    const bool s = v < 0;
    bool inc;
    if constexpr (MODE == RND) inc = qb;
    else if constexpr (MODE == RND_ZERO) inc = qb && (s || r);
    else if constexpr (MODE == RND_MIN_INF) inc = qb && r;
    else if constexpr (MODE == RND_INF) inc = qb && (!s || r);
    else if constexpr (MODE == RND_CONV) inc = qb && ((t & 1) != 0 || r);
    else inc = s && (qb || r);  // TRN_ZERO
    return t + (inc ? 1 : 0);
  }
}

template <int W, bool S, int OVF, int N, typename T>
static inline int64_t ovf(T q) {
  constexpr int64_t hi = S ? (int64_t)((((uint64_t)1) << (W - 1)) - 1) : (int64_t)((((uint64_t)1) << W) - 1);
  constexpr int64_t lo0 = S ? -(int64_t)(((uint64_t)1) << (W - 1)) : 0;
  constexpr int64_t lo = (OVF == SAT_SYM && S && W > 1) ? lo0 + 1 : lo0;
  if (q >= lo && q <= hi) return (int64_t)q;
  if constexpr (OVF == SAT || OVF == SAT_SYM) {
    return q > hi ? hi : lo;
  } else if constexpr (OVF == SAT_ZERO) {
    return 0;
  } else {
    constexpr uint64_t mask = (((uint64_t)1) << W) - 1;
    uint64_t bits = (uint64_t)q & mask;
    if constexpr (N > 0) {
      const uint64_t low = bits & ((((uint64_t)1) << (W - N)) - 1);
      if constexpr (!S) bits = low | (((((uint64_t)1) << N) - 1) << (W - N));
      else if (q > hi) bits = low | (((((uint64_t)1) << (N - 1)) - 1) << (W - N));
      else bits = low | (((uint64_t)1) << (W - 1));
    }
    if constexpr (S) {
      return (int64_t)(bits << (64 - W)) >> (64 - W);
    } else {
      return (int64_t)bits;
    }
  }
}

// value v * 2^K (K >= 1, no rounding) into the type: overflow decided without computing v << K
template <int K, int W, bool S, int OVF, int N, typename T>
static inline int64_t lshift(T v) {
  constexpr int KK = K < 63 ? K : 63;
  constexpr int64_t hi = S ? (int64_t)((((uint64_t)1) << (W - 1)) - 1) : (int64_t)((((uint64_t)1) << W) - 1);
  constexpr int64_t lo0 = S ? -(int64_t)(((uint64_t)1) << (W - 1)) : 0;
  constexpr int64_t lo = (OVF == SAT_SYM && S && W > 1) ? lo0 + 1 : lo0;
  const bool pos = v > (T)(hi >> KK);
  const bool neg = v < (T)(-((-lo) >> KK));
  const uint64_t low = K >= 64 ? 0 : ((uint64_t)v << (K < 64 ? K : 0));
  if (!pos && !neg) return (int64_t)low;
  if constexpr (OVF == SAT || OVF == SAT_SYM) {
    return pos ? hi : lo;
  } else if constexpr (OVF == SAT_ZERO) {
    return 0;
  } else {
    constexpr uint64_t mask = (((uint64_t)1) << W) - 1;
    uint64_t bits = low & mask;
    if constexpr (N > 0) {
      const uint64_t l = bits & ((((uint64_t)1) << (W - N)) - 1);
      if constexpr (!S) bits = l | (((((uint64_t)1) << N) - 1) << (W - N));
      else if (pos) bits = l | (((((uint64_t)1) << (N - 1)) - 1) << (W - N));
      else bits = l | (((uint64_t)1) << (W - 1));
    }
    if constexpr (S) return (int64_t)(bits << (64 - W)) >> (64 - W);
    else return (int64_t)bits;
  }
}

template <int D, int W, bool S, int MODE, int OVF, int N, typename T>
static inline int64_t cast(T v) {
  if constexpr (D < 0) return lshift<-D, W, S, OVF, N>(v);
  else if constexpr (D == 0) return ovf<W, S, OVF, N>(v);
  else return ovf<W, S, OVF, N>(rnd<D, MODE>(v));
}

// WRAP accumulators: sums modulo 2^64, then the low W bits (exact: wrapping is modular)
template <int W, bool S>
static inline int64_t wrap(uint64_t u) {
  if constexpr (S) return (int64_t)(u << (64 - W)) >> (64 - W);
  else return (int64_t)(u & ((((uint64_t)1) << W) - 1));
}
}  // namespace tml
#endif
"""


def default_ap_types_dir() -> Path | None:
    """The ``ap_types`` headers hls4ml ships (``hls4ml/templates/vivado/ap_types``), if installed."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("hls4ml")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "templates" / "vivado" / "ap_types"
    return d if (d / "ap_fixed.h").is_file() else None


def _bound(t: FixedType) -> int:
    return max(abs(t.raw_min), abs(t.raw_max))


def _ctype(bound: int) -> str:
    if bound >= 1 << 125:
        raise UnsupportedLayerError(f"an intermediate value needs {bound.bit_length()} bits, more than the C++ export's "
                                    f"128-bit integers hold")
    return "int64_t" if bound < _I62 else "tml::i128"


def _hls(t: FixedType) -> str:
    base = f"ap_{'' if t.signed else 'u'}fixed<{t.width},{t.integer}"
    if t.rounding == "TRN" and t.overflow == "WRAP" and not t.sat_bits:
        return base + ">"
    return base + f",AP_{t.rounding},AP_{t.overflow},{t.sat_bits}>"


def _lit(v: int, ctype: str = "int64_t") -> str:
    v = int(v)
    if ctype == "tml::i128" and not (-(1 << 63) < v < (1 << 63)):
        return f"((tml::i128)({v >> 64}LL) * ((tml::i128)1 << 64) + (tml::i128)({v & ((1 << 64) - 1)}ULL))"
    if v == -(1 << 63):
        return "INT64_MIN"
    return f"INT64_C({v})" if abs(v) >= 1 << 31 else str(v)


class _Gen:
    """Straight-line C++ of one FirmwareModel (one statement list, one constant list)."""

    def __init__(self, fm: FirmwareModel) -> None:
        self.fm = fm
        self.lines: list[str] = []
        self.consts: list[str] = []
        self.var: dict[str, str] = {}
        self.pos = {layer.name: i for i, layer in enumerate(fm.layers)}

    # -- casts ---------------------------------------------------------------------------------
    def cast(self, expr: str, src_frac: int, dst: FixedType, ctype: str = "int64_t") -> str:
        d = src_frac - dst.frac
        return (f"tml::cast<{d},{dst.width},{'true' if dst.signed else 'false'},{ROUNDING_CODE[dst.rounding]},"
                f"{_OVF[dst.overflow]},{dst.sat_bits},{ctype}>(({ctype})({expr}))")

    def emit(self, s: str) -> None:
        self.lines.append("  " + s)

    # -- layers ------------------------------------------------------------------------------------
    def run(self) -> None:
        for layer in self.fm.layers:
            if layer.kind not in SUPPORTED_KINDS:
                raise UnsupportedLayerError(
                    f"layer {layer.name!r}: kind {layer.kind!r} is not supported by the C++ export (supported: "
                    f"{', '.join(sorted(SUPPORTED_KINDS))}); emulate this model in Python (trigger-ml emulate)")
            for t in [layer.type, *layer.types.values()]:
                if t.width > 63:
                    raise UnsupportedLayerError(f"layer {layer.name!r}: type {t.to_hls()} is wider than 63 bits, "
                                                f"which the C++ export does not support")
            ins = [self.fm.layers[self.pos[n]] for n in layer.inputs]
            v = f"v{self.pos[layer.name]}"
            self.var[layer.name] = v
            if layer.kind == "reshape":
                self.var[layer.name] = self.var[layer.inputs[0]]
                continue
            self.emit(f"// {layer.name}: {layer.kind} -> {layer.type.to_hls()}")
            self.emit(f"int64_t {v}[{max(layer.size, 1)}];")
            getattr(self, f"_k_{layer.kind}")(layer, ins, v)

    def _x(self, layer: Layer, i: int = 0) -> str:
        return self.var[layer.inputs[i]]

    def _k_input(self, layer, ins, v):
        k = [s.name for s in self.fm.inputs].index(layer.name)
        if k != 0:
            raise UnsupportedLayerError(f"layer {layer.name!r}: models with several inputs are not supported by the C++ export")
        for j in range(layer.size):
            self.emit(f"{v}[{j}] = in[{j}];")

    def _k_quantizer(self, layer, ins, v):
        a = layer.arrays
        k, b, i = (np.asarray(a[n]).reshape(-1) for n in ("k", "b", "i"))
        rnd, sat = layer.params["rounding"], layer.params["overflow"]
        x, fin = self._x(layer), ins[0].type.frac
        for j in range(layer.size):
            if int(b[j]) <= 0:
                self.emit(f"{v}[{j}] = 0;")
                continue
            t = FixedType(int(b[j]), int(i[j]), bool(k[j]), rnd, sat)
            self.emit(f"{v}[{j}] = {self.cast(self.cast(f'{x}[{j}]', fin, t), t.frac, layer.type)};")

    def _dense(self, layer: Layer, x_t: FixedType, idx: np.ndarray, w: np.ndarray, b: np.ndarray, src: str, out: str) -> None:
        """Dense arithmetic of ``nnet_dense_latency.h`` for every pixel: ``idx[p, i]`` is the element of ``src``
        feeding input i of pixel p (-1: zero padding); output ``out[p * n_out + j]``.

        Weights (and bias) are constant tables and the loops have fixed trip counts: the compiler unrolls
        or vectorises them and compiles in seconds whatever the layer size. Zero products change nothing
        (0 cast to accum_t is 0, and acc + 0 cast to accum_t is acc, which is already in range)."""
        T = layer.types
        wt, bt, at = T["weight"], T["bias"], T["accum"]
        fp = x_t.frac + wt.frac
        bias_acc = requantize(np.asarray(b, np.int64).reshape(-1), bt.frac, at)
        n_in, n_out = w.shape
        n_pix = idx.shape[0]
        k = self.pos[layer.name]
        sgn = "true" if at.signed else "false"
        if n_pix == 1 and np.array_equal(idx[0], np.arange(n_in)):
            gather = f"{src}[i]"
        else:
            self.consts.append(f"static const int32_t I{k}[{n_pix}][{n_in}] = {{"
                               + ", ".join("{" + ", ".join(str(int(c)) for c in row) + "}" for row in idx) + "};")
            gather = f"(I{k}[p][i] < 0 ? 0 : {src}[I{k}[p][i]])"
        if at.frac >= fp and at.overflow == "WRAP" and at.sat_bits == 0 and at.width <= 32:
            # WRAP accumulator of <= 32 bits with exact products: the sum modulo 2^32 (uint32, vectorised) then
            # the low W bits are exactly the sequential accum_t sums (wrapping is modular)
            sh = at.frac - fp
            self.consts.append(f"alignas(64) static const uint32_t W{k}[{n_in}][{n_out}] = {{" + ", ".join(
                "{" + ", ".join(f"{(int(w[i, j]) << sh) & 0xFFFFFFFF}u" for j in range(n_out)) + "}" for i in range(n_in)) + "};")
            self.consts.append(f"static const uint32_t B{k}[{n_out}] = {{"
                               + ", ".join(f"{int(v) & 0xFFFFFFFF}u" for v in bias_acc) + "};")
            self.emit(f"for (int p = 0; p < {n_pix}; ++p) {{")
            self.emit(f"  uint32_t a[{n_out}];")
            self.emit(f"  for (int j = 0; j < {n_out}; ++j) a[j] = B{k}[j];")
            self.emit(f"  for (int i = 0; i < {n_in}; ++i) {{ const uint32_t x = (uint32_t){gather};")
            self.emit(f"    for (int j = 0; j < {n_out}; ++j) a[j] += x * W{k}[i][j]; }}")
            acc = f"tml::wrap<{at.width},{sgn}>((uint64_t)a[j])"
            self.emit(f"  for (int j = 0; j < {n_out}; ++j) {out}[p * {n_out} + j] = {self.cast(acc, at.frac, layer.type)};")
            self.emit("}")
            return
        simple = at.frac >= fp and at.overflow == "WRAP" and at.sat_bits == 0
        bw = int(np.max(np.abs(w))) if w.size else 0
        self.consts.append(f"static const int64_t W{k}[{n_in}][{n_out}] = {{" + ", ".join(
            "{" + ", ".join(_lit(int(w[i, j])) for j in range(n_out)) + "}" for i in range(n_in)) + "};")
        self.consts.append(f"static const int64_t B{k}[{n_out}] = {{" + ", ".join(_lit(int(v)) for v in bias_acc) + "};")
        self.emit(f"for (int p = 0; p < {n_pix}; ++p) {{")
        if simple:  # WRAP, exact products, up to 63 bits: sums modulo 2^64, then the low W bits
            self.emit(f"  uint64_t a[{n_out}];")
            self.emit(f"  for (int j = 0; j < {n_out}; ++j) a[j] = (uint64_t)B{k}[j];")
            self.emit(f"  for (int i = 0; i < {n_in}; ++i) {{ const uint64_t x = (uint64_t){gather};")
            self.emit(f"    for (int j = 0; j < {n_out}; ++j) a[j] += (x * (uint64_t)W{k}[i][j]) << {at.frac - fp}; }}")
            acc = f"tml::wrap<{at.width},{sgn}>(a[j])"
        else:  # hls4ml order: every product cast to accum_t, every partial sum cast to accum_t
            ct = _ctype(_bound(x_t) * max(bw, 1))
            cs = _ctype(2 * _bound(at))
            m = self.cast(f"({ct})x * ({ct})W{k}[i][j]", fp, at, ct)
            self.emit(f"  int64_t a[{n_out}];")
            self.emit(f"  for (int j = 0; j < {n_out}; ++j) a[j] = B{k}[j];")
            self.emit(f"  for (int i = 0; i < {n_in}; ++i) {{ const int64_t x = {gather};")
            self.emit(f"    for (int j = 0; j < {n_out}; ++j) a[j] = {self.cast(f'({cs})a[j] + {m}', at.frac, at, cs)}; }}")
            acc = "a[j]"
        self.emit(f"  for (int j = 0; j < {n_out}; ++j) {out}[p * {n_out} + j] = {self.cast(acc, at.frac, layer.type)};")
        self.emit("}")

    def _k_dense(self, layer, ins, v):
        w = np.asarray(layer.arrays["weight"], dtype=object).astype(np.int64)
        self._dense(layer, ins[0].type, np.arange(w.shape[0]).reshape(1, -1), w, layer.arrays["bias"], self._x(layer), v)

    def _ref(self, layer, ins):
        from trigger_ml.emulate.reference import _RefLayer

        return _RefLayer(layer, ins)

    def _k_conv(self, layer, ins, v):
        ref = self._ref(layer, ins)
        self._dense(layer, ins[0].type, np.asarray(ref.im2col), np.asarray(ref.w2, np.int64), layer.arrays["bias"],
                    self._x(layer), v)

    _k_conv1d = _k_conv
    _k_conv2d = _k_conv

    def _k_pool(self, layer, ins, v):
        ref = self._ref(layer, ins)
        F, dt, at = ref.pool_F, ins[0].type, layer.types["accum"]
        op, x = layer.params["op"], self._x(layer)
        for o in range(ref.pool_idx.shape[0]):
            win = [int(c) for c in ref.pool_idx[o]]
            for f in range(F):
                if op == "max":
                    pad = dt.raw_min if dt.signed else (1 << (dt.width - 1))
                    vals = [f"{x}[{c * F + f}]" if c >= 0 else _lit(pad) for c in win]
                    self.emit(f"{{ int64_t y = {vals[0]};")
                    for e in vals[1:]:
                        self.emit(f"  {{ int64_t z = {e}; if (z > y) y = z; }}")
                    self.emit(f"  y = {self.cast('y', dt.frac, at)};")
                else:
                    ff = max(at.frac, dt.frac)
                    ct = _ctype((_bound(at) + _bound(dt)) << (ff - min(at.frac, dt.frac)))
                    self.emit("{ int64_t y = 0;")
                    for c in win:
                        if c < 0:
                            continue
                        s = f"({ct})y * (({ct})1 << {ff - at.frac}) + ({ct}){x}[{c * F + f}] * (({ct})1 << {ff - dt.frac})"
                        self.emit(f"  y = {self.cast(s, ff, at, ct)};")
                    self.emit(f"  y = y / {int(ref.pool_len[o])};")  # C division: toward zero
                    self.emit(f"  y = {self.cast('y', at.frac, at)};")
                self.emit(f"  {v}[{o * F + f}] = {self.cast('y', at.frac, layer.type)}; }}")

    _k_pooling1d = _k_pool
    _k_pooling2d = _k_pool
    _k_global_pooling1d = _k_pool
    _k_global_pooling2d = _k_pool

    def _k_batchnorm(self, layer, ins, v):
        A, T = layer.arrays, layer.types
        nf = layer.params["n_filt"]
        dt, st, bt = ins[0].type, T["scale"], T["bias"]
        s, b = np.asarray(A["scale"]).reshape(-1), np.asarray(A["bias"]).reshape(-1)
        fp = dt.frac + st.frac
        f = max(fp, bt.frac)
        ct = _ctype((_bound(dt) * _bound(st) << (f - fp)) + (_bound(bt) << (f - bt.frac)))
        x = self._x(layer)
        for j in range(layer.size):
            k = j if nf == -1 else j % nf
            bias = int(b[k]) << (f - bt.frac)
            e = f"({ct}){x}[{j}] * {_lit(int(s[k]) << (f - fp), ct)} + {_lit(bias, ct)}"
            self.emit(f"{v}[{j}] = {self.cast(e, f, layer.type, ct)};")

    def _k_activation(self, layer, ins, v):
        fn, dt, x = layer.params["fn"], ins[0].type, self._x(layer)
        out = layer.type
        pt = layer.types.get("param")
        for j in range(layer.size):
            xj = f"{x}[{j}]"
            if fn == "linear":
                e = self.cast(xj, dt.frac, out)
            elif fn == "relu":
                e = self.cast(f"({xj} > 0 ? {xj} : 0)", dt.frac, out)
            elif fn == "relu_max":
                m = int(layer.params["max_int"])
                mval = int(requantize(np.array([m], np.int64), 0, out)[0])
                if dt.frac >= 0:
                    over = f"(tml::i128){xj} > (tml::i128){_lit(m << dt.frac, 'tml::i128')}"
                else:
                    over = f"(tml::i128){xj} * ((tml::i128)1 << {-dt.frac}) > {m}"
                e = f"({over} ? (int64_t){_lit(mval)} : {self.cast(f'({xj} < 0 ? 0 : {xj})', dt.frac, out)})"
            elif fn in ("leaky_relu", "prelu"):
                a = int(layer.params["param_raw"]) if fn == "leaky_relu" else int(np.asarray(layer.arrays["alpha"]).reshape(-1)[j])
                ct = _ctype(_bound(dt) * _bound(pt))
                e = (f"({xj} > 0 ? {self.cast(xj, dt.frac, out)} : "
                     f"{self.cast(f'({ct}){xj} * {_lit(a, ct)}', dt.frac + pt.frac, out, ct)})")
            elif fn == "thresholded_relu":
                theta = int(layer.params["param_raw"])
                f = max(dt.frac, pt.frac)
                e = (f"((tml::i128){xj} * ((tml::i128)1 << {f - dt.frac}) > {_lit(theta << (f - pt.frac), 'tml::i128')} ? "
                     f"{self.cast(xj, dt.frac, out)} : 0)")
            else:
                raise UnsupportedLayerError(f"layer {layer.name!r}: activation {fn!r} is not supported by the C++ export")
            self.emit(f"{v}[{j}] = {e};")

    def _table(self, layer, role: str = "table") -> str:
        name = f"T{self.pos[layer.name]}"
        tab = np.asarray(layer.arrays[role]).reshape(-1)
        self.consts.append(f"static const int64_t {name}[{len(tab)}] = {{{', '.join(_lit(int(t)) for t in tab)}}};")
        return name

    def _k_table_activation(self, layer, ins, v):
        p = layer.params
        n, div, off = int(p["table_size"]), int(p["range_div"]), int(p["offset"])
        dt, x = ins[0].type, self._x(layer)
        tab = self._table(layer)
        den = abs(div) << dt.frac if dt.frac >= 0 else abs(div)
        mul = n * (1 << -dt.frac) if dt.frac < 0 else n
        for j in range(layer.size):
            q = f"(tml::i128){x}[{j}] * {mul} / {den}"  # C division truncates toward zero, as (int)(x * N / R)
            self.emit(f"{{ tml::i128 q = {'-' if div < 0 else ''}({q}) + {off}; int64_t i = q < 0 ? 0 : (q > {n - 1} ? {n - 1} : (int64_t)q);")
            self.emit(f"  {v}[{j}] = {self.cast(f'{tab}[i]', layer.types['table'].frac, layer.type)}; }}")

    def _k_unary_lut(self, layer, ins, v):
        dt, x = ins[0].type, self._x(layer)
        tab = self._table(layer)
        size = np.asarray(layer.arrays["table"]).size
        mask = (1 << dt.width) - 1
        for j in range(layer.size):
            self.emit(f"{{ uint64_t u = (uint64_t){x}[{j}] & {mask}ULL; int64_t i = u > {size - 1}ULL ? {size - 1} : (int64_t)u;")
            self.emit(f"  {v}[{j}] = {self.cast(f'{tab}[i]', layer.types['table'].frac, layer.type)}; }}")

    def _k_merge(self, layer, ins, v):
        p = layer.params
        op, n1, n2 = p["op"], int(p["n_elem1"]), int(p["n_elem2"])
        t1, t2 = ins[0].type, ins[1].type
        xa, xb = self._x(layer, 0), self._x(layer, 1)
        f = max(t1.frac, t2.frac)
        sa, sb = f - t1.frac, f - t2.frac
        ct_mul = _ctype(_bound(t1) * _bound(t2))
        ct_add = _ctype((_bound(t1) << sa) + (_bound(t2) << sb))
        for j in range(layer.size):
            a, b = f"{xa}[{j % n1}]", f"{xb}[{j % n2}]"
            A, B = f"({ct_add}){a} * (({ct_add})1 << {sa})", f"({ct_add}){b} * (({ct_add})1 << {sb})"
            if op == "multiply":
                e = self.cast(f"({ct_mul}){a} * ({ct_mul}){b}", t1.frac + t2.frac, layer.type, ct_mul)
            elif op == "add":
                e = self.cast(f"{A} + {B}", f, layer.type, ct_add)
            elif op == "subtract":
                e = self.cast(f"{A} - {B}", f, layer.type, ct_add)
            elif op == "average":
                e = self.cast(f"{A} + {B}", f + 1, layer.type, ct_add)
            elif op in ("maximum", "minimum"):
                cmp = ">" if op == "maximum" else "<"
                e = f"(({A}) {cmp} ({B}) ? {self.cast(a, t1.frac, layer.type)} : {self.cast(b, t2.frac, layer.type)})"
            else:
                raise UnsupportedLayerError(f"layer {layer.name!r}: merge op {op!r} is not supported by the C++ export")
            self.emit(f"{v}[{j}] = {e};")

    def _k_dot(self, layer, ins, v):
        t1, t2, at = ins[0].type, ins[1].type, layer.types["accum"]
        xa, xb = self._x(layer, 0), self._x(layer, 1)
        ct = _ctype(_bound(t1) * _bound(t2))
        self.emit("{ int64_t a = 0;")
        for i in range(ins[0].size):
            m = self.cast(f"({ct}){xa}[{i}] * ({ct}){xb}[{i}]", t1.frac + t2.frac, at, ct)
            self.emit(f"  a = {self.cast(f'({_ctype(2 * _bound(at))})a + {m}', at.frac, at, _ctype(2 * _bound(at)))};")
        self.emit(f"  {v}[0] = {self.cast('a', at.frac, layer.type)}; }}")

    def _k_concatenate(self, layer, ins, v):
        axis = int(layer.params["axis"])
        parts = [np.stack([np.full(l.size, k), np.arange(l.size)], -1).reshape(tuple(l.shape) + (2,))
                 for k, l in enumerate(ins)]
        cat = np.concatenate(parts, axis=axis).reshape(-1, 2)
        for j, (k, e) in enumerate(cat.tolist()):
            self.emit(f"{v}[{j}] = {self.cast(f'{self._x(layer, k)}[{e}]', ins[k].type.frac, layer.type)};")

    def _k_transpose(self, layer, ins, v):
        src = np.arange(ins[0].size).reshape(ins[0].shape).transpose(list(layer.params["perm"])).reshape(-1)
        x = self._x(layer)
        for j, e in enumerate(src.tolist()):
            self.emit(f"{v}[{j}] = {self.cast(f'{x}[{e}]', ins[0].type.frac, layer.type)};")


def _cname(name: str) -> str:
    s = re.sub(r"\W", "_", name)
    return s if s and not s[0].isdigit() else f"m_{s}"


def generate_cpp(fm: FirmwareModel, name: str | None = None) -> dict[str, str]:
    """The exported files (name → text) of a FirmwareModel; see the module docstring.

    Raises a one-line :class:`UnsupportedLayerError` naming the first layer (or model feature) the
    export does not support."""
    if len(fm.inputs) != 1:
        raise UnsupportedLayerError(f"model {fm.name!r} has {len(fm.inputs)} inputs: the C++ export supports one input (input_t*)")
    if len(fm.outputs) != 1:
        raise UnsupportedLayerError(f"model {fm.name!r} has {len(fm.outputs)} outputs: the C++ export supports one output "
                                    f"(result_t*)")
    name = _cname(name or fm.name)
    g = _Gen(fm)
    g.run()
    it, ot = fm.inputs[0].type, fm.outputs[0].type
    n_in, n_out = fm.inputs[0].size, fm.outputs[0].size
    ov = g.var[fm.outputs[0].name]
    ir_hash = hashlib.sha256(fm.to_json().encode()).hexdigest()
    ns = f"tml_{name}"
    header = f"""// {name}.h: generated by trigger_ml.emulate.export_cpp from the firmware IR (sha256 {ir_hash[:16]})
#ifndef {name.upper()}_TML_H_
#define {name.upper()}_TML_H_
#include <cstdint>
#include "ap_fixed.h"

namespace {ns} {{
typedef {_hls(it)} input_t;
typedef {_hls(ot)} result_t;
constexpr int N_INPUT = {n_in};
constexpr int N_OUTPUT = {n_out};
constexpr int INPUT_WIDTH = {it.width};
constexpr bool INPUT_SIGNED = {'true' if it.signed else 'false'};
constexpr int RESULT_WIDTH = {ot.width};
constexpr bool RESULT_SIGNED = {'true' if ot.signed else 'false'};
// the model on raw integers: in[i] = raw bits of input_t (value * 2^{it.frac}), out[j] of result_t (2^{ot.frac})
void predict_raw(const int64_t* in, int64_t* out);
}}  // namespace {ns}
#endif
"""
    body = "\n".join(g.lines)
    consts = "\n".join(g.consts)
    core = f"""// {name}.cpp: generated by trigger_ml.emulate.export_cpp: straight-line integer arithmetic, bit-exact with the
// firmware IR (ap_fixed rounding and overflow spelled out in tml_fixed.h). Do not edit.
#include "{name}.h"
#include "tml_fixed.h"

namespace {ns} {{
{consts}

void predict_raw(const int64_t* in, int64_t* out) {{
{body}
  for (int j = 0; j < N_OUTPUT; ++j) out[j] = {ov}[j];
}}
}}  // namespace {ns}
"""
    emul = f"""// {name}_emulator.cpp: the hls4mlEmulator::Model CMSSW loads with hls4mlEmulator::ModelLoader("{name}").
#include <any>
#include <cstdint>
#include "ap_fixed.h"
#include "emulator.h"
#include "{name}.h"

using namespace {ns};

class {name}_emulator : public hls4mlEmulator::Model {{
 private:
  input_t _input[N_INPUT];
  result_t _result[N_OUTPUT];

 public:
  virtual void prepare_input(std::any input) {{
    input_t* input_p = std::any_cast<input_t*>(input);
    for (int i = 0; i < N_INPUT; ++i) _input[i] = input_p[i];
  }}

  virtual void predict() {{
    int64_t in[N_INPUT], out[N_OUTPUT];
    for (int i = 0; i < N_INPUT; ++i) {{
      const uint64_t u = _input[i].range(INPUT_WIDTH - 1, 0).to_uint64();
      in[i] = INPUT_SIGNED ? (int64_t)(u << (64 - INPUT_WIDTH)) >> (64 - INPUT_WIDTH) : (int64_t)u;
    }}
    predict_raw(in, out);
    for (int j = 0; j < N_OUTPUT; ++j) {{
      const uint64_t mask = RESULT_WIDTH == 64 ? ~(uint64_t)0 : ((((uint64_t)1) << RESULT_WIDTH) - 1);
      _result[j].range(RESULT_WIDTH - 1, 0) = (unsigned long long)((uint64_t)out[j] & mask);
    }}
  }}

  virtual void read_result(std::any result) {{
    result_t* result_p = std::any_cast<result_t*>(result);
    for (int j = 0; j < N_OUTPUT; ++j) result_p[j] = _result[j];
  }}
}};

extern "C" hls4mlEmulator::Model* create_model() {{ return new {name}_emulator; }}

extern "C" void destroy_model(hls4mlEmulator::Model* m) {{ delete m; }}
"""
    driver = f"""// driver.cpp: load {name}.so through create_model() (dlopen), as CMSSW's ModelLoader does, and run it
// on raw integer inputs:  ./driver ./{name}.so inputs.bin outputs.bin
// inputs.bin: int64 raw bits of input_t, N_INPUT per event; outputs.bin: int64 raw of result_t.
// Prints events/s of the prepare_input / predict / read_result loop (one thread) on stderr.
#include <chrono>
#include <cstdio>
#include <ctime>
#include <cstdint>
#include <vector>
#include <dlfcn.h>
#include "emulator.h"
#include "{name}.h"

using namespace {ns};

int main(int argc, char** argv) {{
  if (argc != 4) {{ std::fprintf(stderr, "usage: %s LIB.so INPUTS.bin OUTPUTS.bin\\n", argv[0]); return 1; }}
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {{ std::fprintf(stderr, "error: %s\\n", dlerror()); return 1; }}
  auto create = (hls4mlEmulator::Model* (*)())dlsym(lib, "create_model");
  auto destroy = (void (*)(hls4mlEmulator::Model*))dlsym(lib, "destroy_model");
  if (!create || !destroy) {{ std::fprintf(stderr, "error: create_model/destroy_model not found\\n"); return 1; }}
  FILE* f = std::fopen(argv[2], "rb");
  if (!f) {{ std::fprintf(stderr, "error: cannot read %s\\n", argv[2]); return 1; }}
  std::vector<int64_t> raw;
  int64_t buf[4096];
  size_t k;
  while ((k = std::fread(buf, sizeof(int64_t), 4096, f)) > 0) raw.insert(raw.end(), buf, buf + k);
  std::fclose(f);
  const size_t n = raw.size() / N_INPUT;
  std::vector<input_t> x(n * N_INPUT);
  for (size_t i = 0; i < n * N_INPUT; ++i) x[i].range(INPUT_WIDTH - 1, 0) = (unsigned long long)((uint64_t)raw[i]);
  std::vector<result_t> y(n * N_OUTPUT);
  hls4mlEmulator::Model* m = create();
  auto t0 = std::chrono::steady_clock::now();
  const std::clock_t c0 = std::clock();
  for (size_t e = 0; e < n; ++e) {{
    m->prepare_input(std::any(x.data() + e * N_INPUT));
    m->predict();
    m->read_result(std::any(y.data() + e * N_OUTPUT));
  }}
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double cpu = double(std::clock() - c0) / CLOCKS_PER_SEC;
  destroy(m);
  std::vector<int64_t> out(n * N_OUTPUT);
  for (size_t i = 0; i < n * N_OUTPUT; ++i) {{
    uint64_t u = y[i].range(RESULT_WIDTH - 1, 0).to_uint64();
    out[i] = RESULT_SIGNED ? (int64_t)(u << (64 - RESULT_WIDTH)) >> (64 - RESULT_WIDTH) : (int64_t)u;
  }}
  FILE* g = std::fopen(argv[3], "wb");
  if (!g) {{ std::fprintf(stderr, "error: cannot write %s\\n", argv[3]); return 1; }}
  std::fwrite(out.data(), sizeof(int64_t), out.size(), g);
  std::fclose(g);
  std::fprintf(stderr, "{{\\"events\\": %zu, \\"seconds\\": %.6f, \\"cpu_seconds\\": %.6f, \\"events_per_s\\": %.0f, "
               "\\"events_per_cpu_s\\": %.0f}}\\n", n, s, cpu, n / (s > 0 ? s : 1e-12), n / (cpu > 0 ? cpu : 1e-12));
  return 0;
}}
"""
    return {f"{name}.h": header, f"{name}.cpp": core, f"{name}_emulator.cpp": emul, "tml_fixed.h": _FIXED_H,
            "driver.cpp": driver, "_name": name, "_ir_hash": ir_hash}


def _makefile(name: str, ap_types: Path | None) -> str:
    ap = str(ap_types) if ap_types is not None else "/path/to/ap_types"
    return f"""# Builds {name}.so, the hls4mlEmulator::Model of this model, for CMSSW (hls4mlEmulator::ModelLoader("{name}")).
#   make AP_TYPES=<dir with ap_fixed.h> EMULATOR_INCLUDE=<dir with emulator.h (hls4mlEmulatorExtras)>
#   make driver     # a small loader (dlopen + create_model) that runs the model on raw inputs
# In CMSSW: AP_TYPES=$(scram tool tag hls INCLUDE), EMULATOR_INCLUDE=$(scram tool tag hls4mlEmulatorExtras INCLUDE)
NAME := {name}
AP_TYPES ?= {ap}
EMULATOR_INCLUDE ?= .
CXX ?= g++
# x86-64-v2 (SSE4.2) is the baseline of EL9 and of CMSSW's el9 builds: it vectorises the 32-bit products
ARCH_FLAGS ?= $(if $(filter x86_64,$(shell uname -m)),-march=x86-64-v2,)
CXXFLAGS ?= -O3 -std=c++17 $(ARCH_FLAGS)
INCLUDES := -I. -I$(AP_TYPES) -I$(EMULATOR_INCLUDE)

$(NAME).so: $(NAME).cpp $(NAME)_emulator.cpp $(NAME).h tml_fixed.h
\t$(CXX) $(CXXFLAGS) -fPIC -shared $(INCLUDES) $(NAME).cpp $(NAME)_emulator.cpp -o $@

driver: driver.cpp $(NAME).h
\t$(CXX) $(CXXFLAGS) $(INCLUDES) driver.cpp -o $@ -ldl

clean:
\trm -f $(NAME).so driver

.PHONY: clean
"""


#: the stage recorded in an export directory's manifest
STAGE = "emulate.export_cpp"


def export_cpp(firmware: str | Path | FirmwareModel, out_dir: str | Path, *, name: str | None = None,
               force: bool = False, ap_types_dir: str | Path | None = None) -> dict[str, Any]:
    """Write the C++ emulator of a firmware (a firmware directory with ``firmware_model.json``, or a
    FirmwareModel) into ``out_dir`` atomically; return a summary (name, files, types, sizes).

    ``name`` (default: the IR's model name) names the library (``<name>.so``) and the class;
    ``ap_types_dir`` is written into the Makefile as the default ``AP_TYPES`` (default: hls4ml's copy).
    An existing ``out_dir`` is replaced only with ``force`` and only if it is an earlier export."""
    from trigger_ml.core.artifacts import atomic_dir, check_output, write_manifest, write_text_atomic
    from trigger_ml.core.constants import IR_FILE

    inputs: dict[str, Path] = {}
    if isinstance(firmware, FirmwareModel):
        fm = firmware
    else:
        p = Path(firmware)
        if not (p / IR_FILE).is_file():
            raise ArtifactError(f"{p}: no {IR_FILE}; the C++ export needs an hls4ml firmware directory written by "
                                f"`trigger-ml convert RUN --out {p}` (HLS flavour)")
        fm = FirmwareModel.load(p / IR_FILE)
        inputs["firmware_ir"] = p / IR_FILE
    out = check_output(out_dir, [None if isinstance(firmware, FirmwareModel) else firmware], STAGE, force)
    files = generate_cpp(fm, name)  # before any output: an unsupported layer writes nothing
    cname, ir_hash = files.pop("_name"), files.pop("_ir_hash")
    ap = Path(ap_types_dir) if ap_types_dir is not None else default_ap_types_dir()
    files["Makefile"] = _makefile(cname, ap)
    it, ot = fm.inputs[0], fm.outputs[0]
    summary = {"name": cname, "library": f"{cname}.so", "class": f"{cname}_emulator", "namespace": f"tml_{cname}",
               "input_t": _hls(it.type), "result_t": _hls(ot.type), "n_input": it.size, "n_output": ot.size,
               "layers": len(fm.layers), "statements": sum(t.count(";") for t in files.values()),
               "ir_sha256": ir_hash, "files": sorted(files), "path": str(out),
               "score": None if fm.score is None else {"output": fm.score.output, "index": fm.score.index},
               "threshold_raw": fm.threshold}
    with atomic_dir(out, force, stage=STAGE) as tmp:
        for fname, text in files.items():
            write_text_atomic(tmp / fname, text)
        write_manifest(tmp, STAGE, inputs, {"name": cname, "ap_types": str(ap) if ap else None}, summary)
    return summary
