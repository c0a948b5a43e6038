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
                "pp_dense": pp_dense, "pp_dot": pp_dot, "lut": lut, "pool": pool, "table_act": table_act,
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
