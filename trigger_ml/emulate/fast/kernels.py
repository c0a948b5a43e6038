"""The numba kernels of the fast path and the runner of a fused stage chain.

Buffers are feature-major ``(n_features, n_events)`` floats holding exact integers (see
:mod:`trigger_ml.emulate.fast.plan`). The kernels are compiled lazily on first use and cached on
disk by numba (``cache=True``; where: :func:`trigger_ml.core.fixed.numba_cache_setup`).  The
rounding/overflow helpers and LLVM float intrinsics they call are module globals, which is what
lets numba reuse the cached machine code in the next process.
"""

from __future__ import annotations

import numpy as np

from trigger_ml.core.fixed import (
    O_SAT,
    O_SAT_ZERO,
    O_WRAP,
    Q_RND,
    Q_RND_CONV,
    Q_RND_INF,
    Q_RND_ZERO,
    Q_TRN,
    Q_TRN_ZERO,
)

_KERNELS: dict | None = None


def _llvm_unary(name: str):
    """A numba intrinsic calling the LLVM float intrinsic ``name`` (``llvm.floor`` ...): inlined
    and vectorised (``vroundpd``), where ``np.floor`` compiles to a libm call per element."""
    from numba.core import types as nbt
    from numba.extending import intrinsic

    @intrinsic
    def f(typingctx, x):
        if not isinstance(x, nbt.Float):
            return None

        def codegen(context, builder, signature, args):
            fn = builder.module.declare_intrinsic(name, [args[0].type])
            return builder.call(fn, args)

        return x(x), codegen

    return f


# Module-level helpers of the kernels (numba caches a kernel on disk only when everything it calls
# is a stable module global; fixed.py imports numba anyway, so defining them here costs nothing).
import numba as _nb  # noqa: E402

floor, ceil, trunc, rint = (_llvm_unary(f"llvm.{f}") for f in ("floor", "ceil", "trunc", "rint"))


@_nb.njit(inline="always", cache=True)
def rnd(v, rm):  # pragma: no cover - compiled
    """Round an exact value to an integer the way ap_fixed rounding mode ``rm`` does."""
    if rm == Q_TRN:
        return floor(v)
    if rm == Q_RND:
        return floor(v + 0.5)
    if rm == Q_RND_CONV:
        return rint(v)
    if rm == Q_TRN_ZERO:
        return trunc(v)
    if rm == Q_RND_ZERO:
        return ceil(v - 0.5) if v >= 0 else floor(v + 0.5)
    if rm == Q_RND_INF:
        return floor(v + 0.5) if v >= 0 else ceil(v - 0.5)
    return ceil(v - 0.5)  # RND_MIN_INF

@_nb.njit(inline="always", cache=True)
def ovf(v, om, lo, hi, M, iM):  # pragma: no cover - compiled
    """Overflow handling of an integer ``v`` (om -1: none, else the O_* code; SAT_SYM runs as SAT)."""
    if om == O_WRAP:
        return v - M * floor((v - lo) * iM)
    if om == O_SAT:
        v = v if v > lo else lo
        return v if v < hi else hi
    if om == O_SAT_ZERO:
        return v if (v >= lo and v <= hi) else 0.0
    return v


# -- 16-lane int32 vectors for the integer convolution kernel ---------------------------------------
# A numba type whose value is an LLVM ``<16 x i32>`` vector held in a register, and intrinsics on it
# (load / store, the pair product, lane-wise operations with a scalar), written as plain LLVM IR (no
# target intrinsic): LLVM's x86 back end selects ``vpdpwssd`` (AVX-512 VNNI) or ``vpmaddwd`` +
# ``vpaddd`` (AVX-512BW / AVX2) for :func:`vdp`, and any other target still gets correct code.  All additions are modular (no ``nsw``), as are ``vpdpwssd`` / ``vpmaddwd``: a sum whose
# exact value fits int32 comes out exact whatever its partial sums do.
from llvmlite import ir as _ir  # noqa: E402
from numba.core import types as _nbt  # noqa: E402
from numba.extending import intrinsic as _intrinsic  # noqa: E402
from numba.extending import models as _models  # noqa: E402
from numba.extending import register_model as _register_model  # noqa: E402

_V16 = _ir.VectorType(_ir.IntType(32), 16)


class _I32x16(_nbt.Type):
    def __init__(self) -> None:
        super().__init__(name="int32x16")


i32x16 = _I32x16()


@_register_model(_I32x16)
class _I32x16Model(_models.PrimitiveModel):
    def __init__(self, dmm, fe_type) -> None:
        super().__init__(dmm, fe_type, _V16)


def _elem_ptr(context, builder, aty, arr, off, vt=_V16):
    """Pointer to ``arr.flat[off]`` as a pointer to the vector type ``vt``."""
    return builder.bitcast(builder.gep(context.make_array(aty)(context, builder, arr).data, [off]), vt.as_pointer())


def _splat(builder, c):
    """The int32 scalar ``c`` (wider integers truncated, narrower sign-extended) in all 16 lanes."""
    i32 = _ir.IntType(32)
    c = builder.trunc(c, i32) if c.type.width > 32 else (builder.sext(c, i32) if c.type.width < 32 else c)
    c = builder.insert_element(_ir.Constant(_V16, None), c, _ir.Constant(i32, 0))
    return builder.shuffle_vector(c, c, _ir.Constant(_V16, None))


@_intrinsic
def vzero(typingctx):
    """A zero vector."""
    return i32x16(), lambda context, builder, sig, args: _ir.Constant(_V16, None)


@_intrinsic
def vload(typingctx, arr, off):
    """The 16 int32 at ``arr.flat[off:off+16]`` (C-contiguous int32 array; no bounds check)."""
    if not (isinstance(arr, _nbt.Array) and arr.dtype == _nbt.int32 and isinstance(off, _nbt.Integer)):
        return None

    def cg(context, builder, sig, args):
        return builder.load(_elem_ptr(context, builder, sig.args[0], args[0], args[1]), align=4)

    return i32x16(arr, off), cg


@_intrinsic
def vstore(typingctx, arr, off, v):
    """Store ``v`` at ``arr.flat[off:off+16]`` (C-contiguous int32 array; no bounds check)."""
    if not (isinstance(arr, _nbt.Array) and arr.dtype == _nbt.int32 and v == i32x16):
        return None

    def cg(context, builder, sig, args):
        builder.store(args[2], _elem_ptr(context, builder, sig.args[0], args[0], args[1]), align=4)
        return context.get_dummy_value()

    return _nbt.void(arr, off, v), cg


@_intrinsic
def vstoref(typingctx, arr, off, v):
    """Store ``v`` converted to the array's float type at ``arr.flat[off:off+16]`` (C-contiguous
    float32 / float64 array; no bounds check; int32 -> float is exact in float64, and in float32 for
    the |values| < 2**24 the plan allows there)."""
    if not (isinstance(arr, _nbt.Array) and arr.dtype in (_nbt.float32, _nbt.float64) and v == i32x16):
        return None

    def cg(context, builder, sig, args):
        vt = _ir.VectorType(_ir.FloatType() if sig.args[0].dtype == _nbt.float32 else _ir.DoubleType(), 16)
        builder.store(builder.sitofp(args[2], vt), _elem_ptr(context, builder, sig.args[0], args[0], args[1], vt), align=4)
        return context.get_dummy_value()

    return _nbt.void(arr, off, v), cg


@_intrinsic
def vdp(typingctx, acc, x, w):
    """``acc + lo16(x)*lo16(w) + hi16(x)*hi16(w)`` per lane: ``x`` holds two int16 per lane, ``w`` is
    one int32 scalar holding two int16, broadcast to every lane."""
    if not (acc == i32x16 and x == i32x16 and w == _nbt.int32):
        return None

    def cg(context, builder, sig, args):
        acc_, x_, w_ = args
        h16, w32 = _ir.VectorType(_ir.IntType(16), 32), _ir.VectorType(_ir.IntType(32), 32)
        wv = _splat(builder, w_)
        m = builder.mul(builder.sext(builder.bitcast(x_, h16), w32), builder.sext(builder.bitcast(wv, h16), w32))
        even = builder.shuffle_vector(m, m, _ir.Constant(_V16, [2 * i for i in range(16)]))
        odd = builder.shuffle_vector(m, m, _ir.Constant(_V16, [2 * i + 1 for i in range(16)]))
        return builder.add(acc_, builder.add(even, odd))

    return i32x16(acc, x, w), cg


def _vec_scalar(op: str):
    """A numba intrinsic ``f(v, s)``: lane-wise ``v op s`` on an int32x16 vector and an integer scalar
    (truncated to int32): mul / add / sub / and wrap modulo 2**32, ashr shifts right arithmetically,
    max / min are signed."""

    @_intrinsic
    def f(typingctx, v, s):
        if not (v == i32x16 and isinstance(s, _nbt.Integer)):
            return None

        def cg(context, builder, sig, args):
            x, c = args[0], _splat(builder, args[1])
            if op == "mul":
                return builder.mul(x, c)
            if op == "add":
                return builder.add(x, c)
            if op == "sub":
                return builder.sub(x, c)
            if op == "and":
                return builder.and_(x, c)
            if op == "ashr":
                return builder.ashr(x, c)
            return builder.select(builder.icmp_signed(">" if op == "max" else "<", x, c), x, c)

        return i32x16(v, s), cg

    return f


vmuls, vadds, vsubs, vands, vsras, vmaxs, vmins = (_vec_scalar(o) for o in ("mul", "add", "sub", "and", "ashr", "max", "min"))

#: rows of the integer stage parameters ``SP[s, row, filter]`` used by :func:`istage`
IS_PM, IS_AD, IS_RLO, IS_HALF, IS_SHIFT, IS_WLO, IS_MASK, IS_LO, IS_HI = range(9)


@_nb.njit(inline="always", cache=True)
def istage(v, pm, ad, rlo, half, shift, wlo, mask, lo, hi):  # pragma: no cover - compiled
    """One stage of a fused chain in int32 lanes, branch-free (neutral parameters do nothing):
    ``max(v*pm + ad, rlo)``, rounding ``(v + half) >> shift``, wrap ``((v - wlo) & mask) + wlo``,
    saturation to ``[lo, hi]``.  Every intermediate value is proven to fit int32."""
    if pm != 1:
        v = vmuls(v, pm)
    v = vmaxs(vadds(v, ad), rlo)
    v = vsras(vadds(v, half), shift)
    v = vadds(vands(vsubs(v, wlo), mask), wlo)
    return vmins(vmaxs(v, lo), hi)


@_nb.njit(inline="always", cache=True)
def _stage2(a, c, SP, s, f):  # pragma: no cover - compiled
    """:func:`istage` of filter ``f`` on its two accumulator vectors (parameters loaded once)."""
    pm, ad, rlo, half, shift = SP[s, IS_PM, f], SP[s, IS_AD, f], SP[s, IS_RLO, f], SP[s, IS_HALF, f], SP[s, IS_SHIFT, f]
    wlo, mask, lo, hi = SP[s, IS_WLO, f], SP[s, IS_MASK, f], SP[s, IS_LO, f], SP[s, IS_HI, f]
    return (istage(a, pm, ad, rlo, half, shift, wlo, mask, lo, hi),
            istage(c, pm, ad, rlo, half, shift, wlo, mask, lo, hi))


def _kernels() -> dict:
    """Compile (or load from numba's on-disk cache) the fixed fast-path kernels, lazily.

    Buffers are feature-major: ``(n_features, n_events)``, so element-wise work loops over long
    contiguous runs of events with per-feature scalar parameters (vectorises for any width)."""
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS
    import numba as nb

    from trigger_ml.core.fixed import numba_cache_setup

    numba_cache_setup()

    jit = nb.njit(nogil=True, cache=True, fastmath=False, boundscheck=False, error_model="numpy")

    @jit
    def ell(x, idx, w, out):  # pragma: no cover - compiled
        """Sparse product: out[j] = sum_k w[k, j] * x[idx[k, j]] (w zero-padded)."""
        K, m, n = idx.shape[0], idx.shape[1], x.shape[1]
        for j in range(m):
            for r in range(n):
                out[j, r] = 0.0
            for k in range(K):
                wv = w[k, j]
                if wv != 0.0:
                    i = idx[k, j]
                    for r in range(n):
                        out[j, r] += x[i, r] * wv

    @jit
    def narrow_dense(x, w, out):  # pragma: no cover - compiled
        """out = w @ x for a handful of output features (w is (n_out, n_in), float64)."""
        m, k, n = w.shape[0], w.shape[1], x.shape[1]
        for j in range(m):
            for r in range(n):
                out[j, r] = 0.0
            for i in range(k):
                wv = w[j, i]
                if wv != 0.0:
                    for r in range(n):
                        out[j, r] += x[i, r] * wv

    @jit
    def to_float(src, dst, scale):  # pragma: no cover - compiled
        """dst (events, features) = src (features, events) * 2**-frac (+0.0: no negative zeros)."""
        for r in range(dst.shape[0]):
            for c in range(dst.shape[1]):
                dst[r, c] = np.float64(src[c, r]) * scale + 0.0

    @jit
    def copy_check(x, out, lim):  # pragma: no cover - compiled
        """out = x (a streaming copy); True if some |x| >= lim or is not finite (NaN included)."""
        bad = 0
        for r in range(x.shape[0]):
            for c in range(x.shape[1]):
                v = x[r, c]
                out[r, c] = v
                bad |= not (abs(v) < lim)
        return bad != 0

    @jit
    def pack_pairs(x, digits, shift, xi):  # pragma: no cover - compiled
        """Pack the exact integers of a float buffer ``x`` (features, n) into int16 pairs, one int32 per
        pair: ``xi`` (pairs, n_pad), columns from n on zero.  digits 1: pair k = (x[2k], x[2k+1]);
        digits 2: pair k = (x[k] mod 2**shift, x[k] >> shift) (one wider value in two int16 digits)."""
        n, npad = x.shape[1], xi.shape[1]
        F = x.shape[0]
        mask = (1 << shift) - 1
        for k in range(xi.shape[0]):
            if digits == 1:
                a, b = 2 * k, 2 * k + 1
                if b < F:
                    for r in range(n):
                        xi[k, r] = (np.int32(np.int64(x[a, r])) & 0xFFFF) | (np.int32(np.int64(x[b, r])) << 16)
                else:
                    for r in range(n):
                        xi[k, r] = np.int32(np.int64(x[a, r])) & 0xFFFF
            else:
                for r in range(n):
                    v = np.int64(x[k, r])
                    xi[k, r] = np.int32(v & mask) | np.int32((v >> shift) << 16)
            for r in range(n, npad):
                xi[k, r] = 0

    @jit
    def conv_pairs(xi, w, lo2, L2, wofs, Fb, SP, F, y, out):  # pragma: no cover - compiled
        """Integer convolution on packed int16 pairs: for output pixel p and filter f, the int32 sum
        ``sum_j dot2(xi[lo2[p] + j, r], w[...])``, then the first ``SP.shape[0]`` stages of the chain
        (:func:`istage`) in registers.  Stored as floats straight into ``y[p*F + f, r]`` when ``y`` has
        rows (the whole chain ran here; events past the last full 32 go through ``out``), else as int32
        into ``out[p*Fb*8 + f, r]``.  Weights of pixel p, filter block b (8 filters), pair j, filter i at
        ``wofs[p] + (b*L2[p] + j)*8 + i``.  Registers hold 8 filters x 32 events (16 vectors); each
        loaded input vector feeds 8 products."""
        npad = xi.shape[1]
        F8 = Fb * 8
        n = y.shape[1]
        direct = y.shape[0] > 0
        n_full = (n // 32) * 32 if direct else 0
        for v in range(0, npad, 32):
            for p in range(lo2.shape[0]):
                L = L2[p]
                for b in range(Fb):
                    a0 = vzero(); a1 = vzero(); a2 = vzero(); a3 = vzero()  # noqa: E702
                    a4 = vzero(); a5 = vzero(); a6 = vzero(); a7 = vzero()  # noqa: E702
                    c0 = vzero(); c1 = vzero(); c2 = vzero(); c3 = vzero()  # noqa: E702
                    c4 = vzero(); c5 = vzero(); c6 = vzero(); c7 = vzero()  # noqa: E702
                    wo = wofs[p] + b * L * 8
                    xo = lo2[p] * npad + v
                    for _ in range(L):
                        x0 = vload(xi, xo)
                        x1 = vload(xi, xo + 16)
                        w0, w1, w2, w3 = w[wo], w[wo + 1], w[wo + 2], w[wo + 3]
                        w4, w5, w6, w7 = w[wo + 4], w[wo + 5], w[wo + 6], w[wo + 7]
                        a0 = vdp(a0, x0, w0); a1 = vdp(a1, x0, w1); a2 = vdp(a2, x0, w2); a3 = vdp(a3, x0, w3)  # noqa: E702
                        a4 = vdp(a4, x0, w4); a5 = vdp(a5, x0, w5); a6 = vdp(a6, x0, w6); a7 = vdp(a7, x0, w7)  # noqa: E702
                        c0 = vdp(c0, x1, w0); c1 = vdp(c1, x1, w1); c2 = vdp(c2, x1, w2); c3 = vdp(c3, x1, w3)  # noqa: E702
                        c4 = vdp(c4, x1, w4); c5 = vdp(c5, x1, w5); c6 = vdp(c6, x1, w6); c7 = vdp(c7, x1, w7)  # noqa: E702
                        wo += 8
                        xo += npad
                    f = b * 8
                    for s in range(SP.shape[0]):
                        a0, c0 = _stage2(a0, c0, SP, s, f)
                        a1, c1 = _stage2(a1, c1, SP, s, f + 1)
                        a2, c2 = _stage2(a2, c2, SP, s, f + 2)
                        a3, c3 = _stage2(a3, c3, SP, s, f + 3)
                        a4, c4 = _stage2(a4, c4, SP, s, f + 4)
                        a5, c5 = _stage2(a5, c5, SP, s, f + 5)
                        a6, c6 = _stage2(a6, c6, SP, s, f + 6)
                        a7, c7 = _stage2(a7, c7, SP, s, f + 7)
                    if v < n_full:
                        o = (p * F + f) * n + v
                        if f + 8 <= F:
                            vstoref(y, o, a0); vstoref(y, o + 16, c0); vstoref(y, o + n, a1); vstoref(y, o + n + 16, c1)  # noqa: E702
                            o += 2 * n
                            vstoref(y, o, a2); vstoref(y, o + 16, c2); vstoref(y, o + n, a3); vstoref(y, o + n + 16, c3)  # noqa: E702
                            o += 2 * n
                            vstoref(y, o, a4); vstoref(y, o + 16, c4); vstoref(y, o + n, a5); vstoref(y, o + n + 16, c5)  # noqa: E702
                            o += 2 * n
                            vstoref(y, o, a6); vstoref(y, o + 16, c6); vstoref(y, o + n, a7); vstoref(y, o + n + 16, c7)  # noqa: E702
                            continue
                        # the last, partial block of filters: store through the scratch, copied below
                    o = (p * F8 + f) * npad + v
                    vstore(out, o, a0); vstore(out, o + npad, a1); vstore(out, o + 2 * npad, a2)  # noqa: E702
                    vstore(out, o + 3 * npad, a3); vstore(out, o + 4 * npad, a4); vstore(out, o + 5 * npad, a5)  # noqa: E702
                    vstore(out, o + 6 * npad, a6); vstore(out, o + 7 * npad, a7)  # noqa: E702
                    o += 16
                    vstore(out, o, c0); vstore(out, o + npad, c1); vstore(out, o + 2 * npad, c2)  # noqa: E702
                    vstore(out, o + 3 * npad, c3); vstore(out, o + 4 * npad, c4); vstore(out, o + 5 * npad, c5)  # noqa: E702
                    vstore(out, o + 6 * npad, c6); vstore(out, o + 7 * npad, c7)  # noqa: E702
        if direct:  # what went through the scratch: the events past n_full, and a partial last filter block
            fb = (F // 8) * 8
            for p in range(lo2.shape[0]):
                for f in range(F):
                    r0 = n_full if f < fb else 0
                    for r in range(r0, n):
                        y[p * F + f, r] = out[p * F8 + f, r]

    @jit
    def pp_dense(x, ws, bias, P, K, rm, pq, aq, out):  # pragma: no cover - compiled
        """Latency dense with every product cast to accum_t before it is summed (hls4ml's ``mult[i] =
        (accum_t)(x*w)``; ``acc = (accum_t)(acc + mult[i])`` in input order, bias first).

        ``x`` rows ``p*K + i`` (pixel p of P, input i); ``ws`` (K, F4) the raw weights already moved
        onto the accumulator grid (times 2**-shift, exact), zero-padded to a multiple of 4 columns;
        ``pq`` / ``aq`` = (om, lo, hi, M, iM) of the product and accumulator casts (om -1: cannot
        overflow / deferred to the final wrap).  With float32 ``ws`` / ``out`` (the plan proves every
        value < 2**24) the common TRN / RND loops run in float32 (twice the SIMD width); they update
        four outputs per load of an input row."""
        F, F4, n = out.shape[0] // P, ws.shape[1], x.shape[1]
        pom, plo, phi, pM, piM = int(pq[0]), pq[1], pq[2], pq[3], pq[4]
        aom, alo, ahi, aM, aiM = int(aq[0]), aq[1], aq[2], aq[3], aq[4]
        fast = pom < 0 and aom < 0 and (rm == Q_TRN or rm == Q_RND)
        TILE = 128
        t = np.empty((4, TILE), ws.dtype)
        half = ws.dtype.type(0.5) if rm == Q_RND else ws.dtype.type(0.0)
        for r0 in range(0, n, TILE):
            r1 = min(n, r0 + TILE)
            m = r1 - r0
            for p in range(P):
                for jb in range(0, F4, 4):
                    for q in range(4):
                        b = bias[jb + q]
                        for r in range(m):
                            t[q, r] = b
                    for i in range(K):
                        w0, w1, w2, w3 = ws[i, jb], ws[i, jb + 1], ws[i, jb + 2], ws[i, jb + 3]
                        if w0 == 0 and w1 == 0 and w2 == 0 and w3 == 0:
                            continue
                        row = p * K + i
                        if fast:
                            for r in range(m):
                                xv = x[row, r0 + r]
                                t[0, r] += floor(xv * w0 + half)
                                t[1, r] += floor(xv * w1 + half)
                                t[2, r] += floor(xv * w2 + half)
                                t[3, r] += floor(xv * w3 + half)
                        else:
                            for q in range(4):
                                wv = np.float64(ws[i, jb + q])
                                if wv == 0:
                                    continue
                                for r in range(m):
                                    v = ovf(rnd(np.float64(x[row, r0 + r]) * wv, rm), pom, plo, phi, pM, piM)
                                    t[q, r] = ovf(np.float64(t[q, r]) + v, aom, alo, ahi, aM, aiM)
                    for q in range(4):
                        if jb + q < F:
                            o = p * F + jb + q
                            for r in range(m):
                                out[o, r0 + r] = t[q, r]

    @jit
    def pp_dot(a, b, mu, rm, pq, aq, out):  # pragma: no cover - compiled
        """``dot1d``: out[0] = sum_i (accum_t)(a[i] * b[i]), summed into accum_t in order."""
        K, n = a.shape[0], a.shape[1]
        pom, plo, phi, pM, piM = int(pq[0]), pq[1], pq[2], pq[3], pq[4]
        aom, alo, ahi, aM, aiM = int(aq[0]), aq[1], aq[2], aq[3], aq[4]
        for r in range(n):
            out[0, r] = 0.0
        for i in range(K):
            for r in range(n):
                v = ovf(rnd(np.float64(a[i, r]) * np.float64(b[i, r]) * mu, rm), pom, plo, phi, pM, piM)
                out[0, r] = ovf(out[0, r] + v, aom, alo, ahi, aM, aiM)

    @jit
    def table_act(x, a, den, neg, off, T, out):  # pragma: no cover - compiled
        """nnet_activation.h table lookup: ``index = (int)(x * N / R) + offset`` (C division toward
        zero on exact integers: ``a`` = N (times 2**-frac), ``den`` = |R| (times 2**frac), ``neg``
        when R < 0), clamped to the table, ``out = T[index]`` (T already cast to result_t)."""
        N = T.shape[0]
        for c in range(out.shape[0]):
            for r in range(out.shape[1]):
                q = trunc(np.float64(x[c, r]) * a / den)
                if neg:
                    q = -q
                k = int(q) + off
                k = 0 if k < 0 else (N - 1 if k > N - 1 else k)
                out[c, r] = T[k]

    @jit
    def lut(x, base, T, out):  # pragma: no cover - compiled
        """Element-wise lookup: out[c] = T[c, x[c] - base[c]] (x holds integers inside the table)."""
        for c in range(out.shape[0]):
            b = base[c]
            for r in range(out.shape[1]):
                out[c, r] = T[c, int(np.float64(x[c, r]) - b)]

    @jit
    def pool(x, rows, op, padval, ma, mb, mu, rm, aq, lens, out):  # pragma: no cover - compiled
        """Pooling windows: out row o reduces x rows ``rows[o, :]`` (-1 = padding).  op 0: max
        (padding = ``padval``); op 1: average: ``acc = (accum_t)(acc*ma + x*mb)`` step by step (``mu``
        = grid move, ``aq`` the accumulator overflow), then C division by ``lens[o]`` toward zero."""
        aom, alo, ahi, aM, aiM = int(aq[0]), aq[1], aq[2], aq[3], aq[4]
        n = out.shape[1]
        for o in range(out.shape[0]):
            if op == 0:
                for r in range(n):
                    out[o, r] = -np.inf
                for k in range(rows.shape[1]):
                    i = rows[o, k]
                    for r in range(n):
                        v = np.float64(x[i, r]) if i >= 0 else padval
                        if v > out[o, r]:
                            out[o, r] = v
            else:
                for r in range(n):
                    out[o, r] = 0.0
                for k in range(rows.shape[1]):
                    i = rows[o, k]
                    if aom < 0 and ma == 1.0 and mu == 1.0:  # exact sum, no overflow possible
                        if i >= 0:
                            for r in range(n):
                                out[o, r] += np.float64(x[i, r]) * mb
                        continue
                    for r in range(n):
                        xi = np.float64(x[i, r]) if i >= 0 else 0.0
                        v = rnd((out[o, r] * ma + xi * mb) * mu, rm)
                        out[o, r] = ovf(v, aom, alo, ahi, aM, aiM)
                if lens[o] & (lens[o] - 1) == 0:  # a power of two: v / L == v * (1/L) exactly, no divide
                    iL = 1.0 / np.float64(lens[o])
                    for r in range(n):
                        out[o, r] = trunc(out[o, r] * iL)
                else:
                    L = np.float64(lens[o])
                    for r in range(n):
                        out[o, r] = trunc(out[o, r] / L)

    @jit
    def softmax(x, rows, impl, qn, qi, qo, cast_n, cast_i, cast_o, wd, eb, ib, exp_acc, inv_tab, prog, qa, out):  # pragma: no cover
        """nnet_activation.h softmax per slice (``rows``: the S feature rows of each slice).  impl 0:
        latency, 1: stable, 2: argmax.  ``cast_*`` = (mu, rounding) and ``q*`` = overflow parameters of
        the casts to inp_norm_t (n), inv_inp_t (i) and result_t (o); ``wd`` = (width of the indexed
        type for latency, width of inp_norm_t, width of inv_inp_t); ``exp_acc`` the exp table already
        cast to accum_t; ``prog`` the (dst, a, b) additions of hls4ml's balanced reduction tree, each
        cast to accum_t (``qa``)."""
        S = rows.shape[1]
        n = x.shape[1]
        e = np.empty(2 * S + 1, np.float64)
        nom, nlo, nhi, nM, niM = int(qn[0]), qn[1], qn[2], qn[3], qn[4]
        iom, ilo, ihi, iM, iiM = int(qi[0]), qi[1], qi[2], qi[3], qi[4]
        oom, olo, ohi, oM, oiM = int(qo[0]), qo[1], qo[2], qo[3], qo[4]
        aom, alo, ahi, aM, aiM = int(qa[0]), qa[1], qa[2], qa[3], qa[4]
        rn, ri, ro = int(cast_n[1]), int(cast_i[1]), int(cast_o[1])
        e_sh = 2.0 ** -(wd[impl if impl < 2 else 0] - eb)
        e_mod = 2.0 ** wd[impl if impl < 2 else 0]
        i_sh, i_mod = 2.0 ** -(wd[2] - ib), 2.0 ** wd[2]
        for sl in range(rows.shape[0]):
            for r in range(n):
                if impl == 2:
                    best = 0
                    bv = np.float64(x[rows[sl, 0], r])
                    for k in range(1, S):
                        v = np.float64(x[rows[sl, k], r])
                        if v > bv:
                            bv = v
                            best = k
                    for k in range(S):
                        out[rows[sl, k], r] = qo[5] if k == best else 0.0
                    continue
                xmax = np.float64(x[rows[sl, 0], r])
                if impl == 1:
                    for k in range(1, S):
                        v = np.float64(x[rows[sl, k], r])
                        if v > xmax:
                            xmax = v
                for k in range(S):
                    v = np.float64(x[rows[sl, k], r])
                    if impl == 1:
                        v = ovf(rnd((xmax - v) * cast_n[0], rn), nom, nlo, nhi, nM, niM)
                    u = v if v >= 0 else v + e_mod
                    e[k] = exp_acc[int(floor(u * e_sh))]
                for q in range(prog.shape[0]):
                    e[prog[q, 0]] = ovf(e[prog[q, 1]] + e[prog[q, 2]], aom, alo, ahi, aM, aiM)
                tot = e[prog[prog.shape[0] - 1, 0]] if prog.shape[0] else e[0]
                si = ovf(rnd(tot * cast_i[0], ri), iom, ilo, ihi, iM, iiM)
                u = si if si >= 0 else si + i_mod
                inv = inv_tab[int(floor(u * i_sh))]
                for k in range(S):
                    out[rows[sl, k], r] = ovf(rnd(e[k] * inv * cast_o[0], ro), oom, olo, ohi, oM, oiM)

    _KERNELS = {"softmax": softmax, "ell": ell, "narrow_dense": narrow_dense, "to_float": to_float, "copy_check": copy_check,
                "pp_dense": pp_dense, "pack_pairs": pack_pairs, "conv_pairs": conv_pairs, "pp_dot": pp_dot, "lut": lut, "pool": pool, "table_act": table_act,
}
    return _KERNELS


_BINOPS = {None: 0, "add": 1, "subtract": 2, "multiply": 3, "maximum": 4, "minimum": 5}


def _chain_kernel():
    """One kernel for every stage chain: ``chain(x, x2, y, P, codes, R, binop, ma, mb)``.

    Per feature row it loads the events into an L1-resident scratch row (combining two inputs first
    when ``binop`` is 1: ``x*ma + x2*mb``, 2: ``x*ma - x2*mb``, 3: ``x*x2``, 4 / 5: max / min of
    ``x*ma`` and ``x2*mb``), runs every stage over it
    with a loop specialised for the stage's rounding mode and then for its overflow mode (branches
    hoisted out of the event loop), and stores the row once."""
    K = _kernels()
    if "chain" in K:
        return K["chain"]
    import numba as nb


    @nb.njit(nogil=True, cache=True, fastmath=False, boundscheck=False, error_model="numpy")
    def chain(x, x2, y, P, codes, R, binop, ma, mb, rows1, rows2):  # pragma: no cover - compiled
        n = y.shape[1]
        S = codes.shape[0]
        t = np.empty(n, np.float64)
        for c in range(y.shape[0]):
            c1, c2 = rows1[c], rows2[c]  # input rows feeding output row c (gathers / broadcasts)
            if binop == 0:
                for r in range(n):
                    t[r] = x[c1, r]
            elif binop == 1:
                for r in range(n):
                    t[r] = np.float64(x[c1, r]) * ma + np.float64(x2[c2, r]) * mb
            elif binop == 2:
                for r in range(n):
                    t[r] = np.float64(x[c1, r]) * ma - np.float64(x2[c2, r]) * mb
            elif binop == 3:
                for r in range(n):
                    t[r] = np.float64(x[c1, r]) * np.float64(x2[c2, r])
            elif binop == 4:
                for r in range(n):
                    t[r] = max(np.float64(x[c1, r]) * ma, np.float64(x2[c2, r]) * mb)
            else:
                for r in range(n):
                    t[r] = min(np.float64(x[c1, r]) * ma, np.float64(x2[c2, r]) * mb)
            for s in range(S):
                pm, ad, mu = P[s, 0, c], P[s, 1, c], P[s, 2, c]
                lo, hi, M, iM = P[s, 3, c], P[s, 4, c], P[s, 5, c], P[s, 6, c]
                rlo = R[s]
                rm, om = codes[s, 0], codes[s, 1]
                # v = relu?(v * pm + ad) * mu, then rounding
                if rm == Q_TRN:
                    for r in range(n):
                        v = t[r] * pm + ad
                        v = v if v > rlo else rlo
                        t[r] = floor(v * mu)
                elif rm == Q_RND:
                    for r in range(n):
                        v = t[r] * pm + ad
                        v = v if v > rlo else rlo
                        t[r] = floor(v * mu + 0.5)
                elif rm == Q_RND_CONV:
                    for r in range(n):
                        v = t[r] * pm + ad
                        v = v if v > rlo else rlo
                        t[r] = rint(v * mu)
                elif rm == Q_TRN_ZERO:
                    for r in range(n):
                        v = t[r] * pm + ad
                        v = v if v > rlo else rlo
                        t[r] = trunc(v * mu)
                elif rm == Q_RND_ZERO:
                    for r in range(n):
                        v = t[r] * pm + ad
                        v = (v if v > rlo else rlo) * mu
                        t[r] = ceil(v - 0.5) if v >= 0 else floor(v + 0.5)
                elif rm == Q_RND_INF:
                    for r in range(n):
                        v = t[r] * pm + ad
                        v = (v if v > rlo else rlo) * mu
                        t[r] = floor(v + 0.5) if v >= 0 else ceil(v - 0.5)
                else:  # RND_MIN_INF
                    for r in range(n):
                        v = t[r] * pm + ad
                        v = (v if v > rlo else rlo) * mu
                        t[r] = ceil(v - 0.5)
                # overflow
                if om == O_WRAP:
                    for r in range(n):
                        v = t[r]
                        t[r] = v - M * floor((v - lo) * iM)
                elif om == O_SAT:  # SAT / SAT_SYM (lo = -hi)
                    for r in range(n):
                        v = t[r]
                        v = v if v > lo else lo
                        t[r] = v if v < hi else hi
                else:  # SAT_ZERO
                    for r in range(n):
                        v = t[r]
                        t[r] = v if (v >= lo and v <= hi) else 0.0
            for r in range(n):
                y[c, r] = t[r]

    K["chain"] = chain
    return chain


class _Runner:
    """Runs a stage chain (optionally preceded by a binary op) in one pass over the data.

    ``rows1`` / ``rows2`` map each output row to the input row it reads (gathers, broadcasts)."""

    def __init__(self, stages: list, size: int, binop: str | None = None, tile: int = 1,
                 rows1: np.ndarray | None = None, rows2: np.ndarray | None = None) -> None:
        self.binop = _BINOPS[binop]
        S = len(stages)
        n_rows = size
        self.rows1 = np.arange(n_rows, dtype=np.int64) if rows1 is None else np.ascontiguousarray(rows1, dtype=np.int64)
        self.rows2 = np.arange(n_rows, dtype=np.int64) if rows2 is None else np.ascontiguousarray(rows2, dtype=np.int64)
        self.copy = not stages and self.binop == 0 and rows1 is None
        self.codes = np.array([[int(st[1]), int(st[2])] for st in stages], dtype=np.int64).reshape(S, 2)
        self.R = np.array([float(st[4]) for st in stages], dtype=np.float64)
        if S:
            self.P = np.ascontiguousarray(np.stack([np.tile(st[3], (1, tile)) for st in stages]))
        else:
            self.P = np.zeros((0, 7, 1))

    def __call__(self, x: np.ndarray, dst: np.ndarray, x2: np.ndarray | None = None, ma: float = 1.0, mb: float = 1.0) -> None:
        if self.copy:
            dst[...] = x
            return
        _chain_kernel()(x, x if x2 is None else x2, dst, self.P, self.codes, self.R, self.binop, ma, mb,
                        self.rows1, self.rows2)
