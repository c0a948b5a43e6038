"""The numba kernels of the fast path and the runner of a fused stage chain.

Buffers are feature-major ``(n_features, n_events)`` floats holding exact integers (see
:mod:`trigger_ml.emulate.fast.plan`). The kernels are compiled lazily on first use and cached on
disk by numba (``cache=True``: ``__pycache__`` next to this file), so importing this module does
not import numba.
"""

from __future__ import annotations

import numpy as np

from trigger_ml.core.fixed import (
    O_SAT,
    O_WRAP,
    Q_RND,
    Q_RND_CONV,
    Q_RND_INF,
    Q_RND_ZERO,
    Q_TRN,
    Q_TRN_ZERO,
)

_KERNELS: dict | None = None


def _kernels() -> dict:
    """Compile (or load from numba's on-disk cache) the fixed fast-path kernels, lazily.

    Buffers are feature-major: ``(n_features, n_events)``, so element-wise work loops over long
    contiguous runs of events with per-feature scalar parameters (vectorises for any width)."""
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS
    import numba as nb

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

    _KERNELS = {"ell": ell, "narrow_dense": narrow_dense, "to_float": to_float, "copy_check": copy_check}
    return _KERNELS


_BINOPS = {None: 0, "add": 1, "subtract": 2, "multiply": 3}


def _chain_kernel():
    """One kernel for every stage chain: ``chain(x, x2, y, P, codes, R, binop, ma, mb)``.

    Per feature row it loads the events into an L1-resident scratch row (combining two inputs first
    when ``binop`` is 1: ``x*ma + x2*mb``, 2: ``x*ma - x2*mb``, 3: ``x*x2``), runs every stage over it
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
            else:
                for r in range(n):
                    t[r] = np.float64(x[c1, r]) * np.float64(x2[c2, r])
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
                        t[r] = np.floor(v * mu)
                elif rm == Q_RND:
                    for r in range(n):
                        v = t[r] * pm + ad
                        v = v if v > rlo else rlo
                        t[r] = np.floor(v * mu + 0.5)
                elif rm == Q_RND_CONV:
                    for r in range(n):
                        v = t[r] * pm + ad
                        v = v if v > rlo else rlo
                        t[r] = np.rint(v * mu)
                elif rm == Q_TRN_ZERO:
                    for r in range(n):
                        v = t[r] * pm + ad
                        v = v if v > rlo else rlo
                        t[r] = np.trunc(v * mu)
                elif rm == Q_RND_ZERO:
                    for r in range(n):
                        v = t[r] * pm + ad
                        v = (v if v > rlo else rlo) * mu
                        t[r] = np.ceil(v - 0.5) if v >= 0 else np.floor(v + 0.5)
                elif rm == Q_RND_INF:
                    for r in range(n):
                        v = t[r] * pm + ad
                        v = (v if v > rlo else rlo) * mu
                        t[r] = np.floor(v + 0.5) if v >= 0 else np.ceil(v - 0.5)
                else:  # RND_MIN_INF
                    for r in range(n):
                        v = t[r] * pm + ad
                        v = (v if v > rlo else rlo) * mu
                        t[r] = np.ceil(v - 0.5)
                # overflow
                if om == O_WRAP:
                    for r in range(n):
                        v = t[r]
                        t[r] = v - M * np.floor((v - lo) * iM)
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
