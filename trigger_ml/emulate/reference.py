"""Reference (oracle) executor of a :class:`~trigger_ml.ir.FirmwareModel`: per-layer ops on exact integers.

Values are ``(n_events, size)`` arrays of raw integers (``int64``, or exact Python ints when a
bound could exceed 62 bits). Every ap_fixed cast is spelled out with
:func:`trigger_ml.core.fixed.requantize`, in the order the C++ does them (e.g. a saturating
accumulator saturates step by step), following the per-kind semantics documented in
:mod:`trigger_ml.ir`. The reference executor serves :meth:`~trigger_ml.emulate.Emulator.trace`,
:meth:`~trigger_ml.emulate.Emulator.overflow_report` and every layer the fast path
(:mod:`trigger_ml.emulate.fast`) does not cover; the fast path is checked against it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from trigger_ml.core.errors import UnsupportedLayerError
from trigger_ml.core.fixed import FixedType, from_float, requantize
from trigger_ml.ir import Layer

_I62 = 2**62


# ==============================================================================================
# raw-integer helpers (reference semantics)
# ==============================================================================================


def _bound(t: FixedType) -> int:
    """max |raw| of a type."""
    return max(abs(t.raw_min), abs(t.raw_max))


def _as_obj(a: np.ndarray) -> np.ndarray:
    if a.dtype == object:
        return a
    return a.astype(object)


def _fits(bound: int) -> bool:
    return bound < _I62


def _shl(a: np.ndarray, k: int, bound: int) -> tuple[np.ndarray, int]:
    """a * 2**k exactly (k >= 0), int64 if the result bound allows, else Python ints."""
    if k == 0:
        return a, bound
    nb = bound << k
    if _fits(nb) and a.dtype != object:
        return np.left_shift(a, k), nb
    return _as_obj(a) * (1 << k), nb


def _mul(a: np.ndarray, b, ba: int, bb: int) -> tuple[np.ndarray, int]:
    nb = ba * bb
    if _fits(nb) and a.dtype != object and (not isinstance(b, np.ndarray) or b.dtype != object):
        return a * b, nb
    return _as_obj(a) * (_as_obj(b) if isinstance(b, np.ndarray) else int(b)), nb


def _align(a: np.ndarray, fa: int, ba: int, b: np.ndarray, fb: int, bb: int):
    """Bring two raws to a common frac (max of both); returns (a', b', frac, bound_a', bound_b')."""
    f = max(fa, fb)
    a2, ba2 = _shl(a, f - fa, ba)
    b2, bb2 = _shl(b, f - fb, bb)
    if a2.dtype == object or (isinstance(b2, np.ndarray) and b2.dtype == object) or not _fits(ba2 + bb2):
        a2, b2 = _as_obj(a2), (_as_obj(b2) if isinstance(b2, np.ndarray) else b2)
    return a2, b2, f, ba2, bb2


def _round_only(raw: np.ndarray, src_frac: int, dst: FixedType) -> np.ndarray:
    """The rounded (not overflow-handled) value of a cast, exactly (object dtype if huge)."""
    d = src_frac - dst.frac
    if raw.dtype != object and d >= 0:
        wide = FixedType(64, 64 - dst.frac, True, dst.rounding, "WRAP")
        return requantize(raw, src_frac, wide)
    vals = _as_obj(raw)
    if d <= 0:
        return vals * (1 << -d)
    # object path: exact rounding with Python ints via the fixed module's scalar reference
    from trigger_ml.core import fixed as _fx

    out = np.empty(vals.shape, dtype=object)
    flat, of = vals.reshape(-1), out.reshape(-1)
    for j, v in enumerate(flat):
        of[j] = _fx._round_int(int(v), d, dst.rounding)
    return out


class _Counter:
    """Collects the number of overflowing casts per layer (only when enabled)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.counts: dict[str, dict[str, int]] = {}

    def add(self, layer: str, site: str, n: int) -> None:
        d = self.counts.setdefault(layer, {})
        d[site] = d.get(site, 0) + int(n)


def _cast(raw: np.ndarray, src_frac: int, dst: FixedType, ctr: _Counter | None = None, layer: str = "", site: str = "result") -> np.ndarray:
    """``dst_t d = src;`` on raw integers (optionally counting the values that overflow ``dst``)."""
    if ctr is not None and ctr.enabled:
        r = _round_only(raw, src_frac, dst)
        n = int(np.count_nonzero((r > dst.raw_max) | (r < dst.sat_min)))
        ctr.add(layer, site, n)
    return requantize(raw, src_frac, dst)


def _trunc_div(num: np.ndarray, den: int) -> np.ndarray:
    """C integer division (toward zero) of raw integers by a positive int."""
    if num.dtype == object:
        q = np.array([abs(int(v)) // den for v in num.reshape(-1)], dtype=object).reshape(num.shape)
        return np.where(num < 0, -q, q)
    q = np.abs(num) // den
    return np.where(num < 0, -q, q)


def _floorlog2(x: int) -> int:
    return 0 if x < 2 else 1 + _floorlog2(x // 2)


def _tree_reduce(cols: list, op: Callable) -> np.ndarray:
    """nnet_common.h ``reduce``: balanced tree, left part = pow2(floorlog2(N - 1))."""
    n = len(cols)
    if n == 1:
        return cols[0]
    if n == 2:
        return op(cols[0], cols[1])
    left = 2 ** _floorlog2(n - 1)
    return op(_tree_reduce(cols[:left], op), _tree_reduce(cols[left:], op))


def _top_bits(raw: np.ndarray, t: FixedType, nbits: int) -> np.ndarray:
    """``x(x.width-1, x.width-N)``: the top N bits of the two's complement pattern, unsigned."""
    u = np.bitwise_and(raw.astype(np.int64), (1 << t.width) - 1) if t.width < 64 else raw.astype(np.int64)
    return np.right_shift(u, t.width - nbits) & ((1 << nbits) - 1)


# ==============================================================================================
# reference executor: one function per kind, values are (n, size) raw integer arrays
# ==============================================================================================


class _RefLayer:
    """Reference implementation of one layer (precomputes index maps etc.)."""

    def __init__(self, layer: Layer, in_layers: Sequence[Layer]) -> None:
        self.layer = layer
        self.ins = list(in_layers)
        self.fn = getattr(self, f"_k_{layer.kind}")
        self._prep = getattr(self, f"_p_{layer.kind}", None)
        if self._prep is not None:
            self._prep()

    def __call__(self, xs: list[np.ndarray], ctr: _Counter | None) -> np.ndarray:
        return self.fn(xs, ctr)

    # -- helpers --------------------------------------------------------------------------------
    @property
    def out_t(self) -> FixedType:
        return self.layer.type

    def _in_t(self, i: int = 0) -> FixedType:
        return self.ins[i].type

    def _res(self, raw, frac, ctr, site="result"):
        return _cast(raw, frac, self.out_t, ctr, self.layer.name, site)

    # -- input ----------------------------------------------------------------------------------
    def _k_input(self, xs, ctr):
        return xs[0]

    # -- reshape / transpose / concatenate ------------------------------------------------------------
    def _k_reshape(self, xs, ctr):
        return xs[0]

    def _k_transpose(self, xs, ctr):
        x = xs[0]
        shp = (x.shape[0],) + tuple(self.ins[0].shape)
        perm = [0] + [p + 1 for p in self.layer.params["perm"]]
        y = np.ascontiguousarray(x.reshape(shp).transpose(perm)).reshape(x.shape[0], -1)
        return self._res(y, self._in_t().frac, ctr)

    def _k_concatenate(self, xs, ctr):
        axis = self.layer.params["axis"]
        parts = []
        for i, x in enumerate(xs):
            c = self._res(x, self._in_t(i).frac, ctr)
            parts.append(c.reshape((x.shape[0],) + tuple(self.ins[i].shape)))
        return np.concatenate(parts, axis=axis + 1).reshape(xs[0].shape[0], -1)

    # -- quantizer -------------------------------------------------------------------------------
    def _p_quantizer(self):
        a = self.layer.arrays
        k, b, i = (np.asarray(a[n]).reshape(-1) for n in ("k", "b", "i"))
        groups: dict[tuple[int, int, int], list[int]] = {}
        for j, key in enumerate(zip(k.tolist(), b.tolist(), i.tolist())):
            groups.setdefault(key, []).append(j)
        rnd, sat = self.layer.params["rounding"], self.layer.params["overflow"]
        self.q_groups = []
        for (kk, bb, ii), idx in groups.items():
            t = None if bb <= 0 else FixedType(int(bb), int(ii), bool(kk), rnd, sat)
            self.q_groups.append((t, np.asarray(idx, dtype=np.int64)))

    def _k_quantizer(self, xs, ctr):
        x = xs[0]
        fin = self._in_t().frac
        out = np.zeros(x.shape, dtype=np.int64)
        for t, idx in self.q_groups:
            if t is None:
                continue
            q = _cast(x[:, idx], fin, t, ctr, self.layer.name, "quantizer")
            out[:, idx] = _cast(q, t.frac, self.out_t, ctr, self.layer.name, "result")
        return out

    # -- dense / conv ------------------------------------------------------------------------------
    def _dense_core(self, x: np.ndarray, x_t: FixedType, w: np.ndarray, b: np.ndarray, ctr, site_prefix="") -> tuple[np.ndarray, int]:
        """Latency dense on raw ints. Returns (acc raw in accum_t, accum frac)."""
        T = self.layer.types
        wt, bt, at = T["weight"], T["bias"], T["accum"]
        name = self.layer.name
        fp = x_t.frac + wt.frac
        bias_acc = _cast(b.reshape(1, -1), bt.frac, at, ctr, name, "bias")
        n_in = w.shape[0]
        bx, bw = _bound(x_t), int(np.max(np.abs(w.astype(object)))) if w.size else 0
        simple = at.frac >= fp and at.overflow == "WRAP" and at.sat_bits == 0
        if simple:
            # products exact in accum_t; WRAP sums are associative mod 2**W -> one wrap at the end
            k = at.frac - fp
            bound = bx * bw * n_in
            if _fits((bound << k) + _bound(at)) and x.dtype != object:
                s = x.astype(np.int64) @ w.astype(np.int64)
                s = np.left_shift(s, k) + bias_acc
            else:
                s = (_as_obj(x) @ _as_obj(w)) * (1 << k) + _as_obj(bias_acc)
            if ctr is not None and ctr.enabled:
                ctr.add(name, "accum", int(np.count_nonzero((s > at.raw_max) | (s < at.raw_min))))
            return requantize(s, at.frac, at), at.frac
        # general path: cast every product, accumulate sequentially with a cast at every step
        acc = np.broadcast_to(bias_acc, (x.shape[0], w.shape[1])).copy()
        if acc.dtype != object:
            acc = acc.astype(np.int64)
        sat_hit = np.zeros(acc.shape, dtype=bool) if (ctr is not None and ctr.enabled) else None
        exact = acc.astype(object) if sat_hit is not None else None
        for i in range(n_in):
            p, _ = _mul(x[:, i : i + 1], w[i : i + 1, :], bx, bw)
            m = _cast(p, fp, at, ctr, name, "product")
            if sat_hit is not None:
                exact = exact + m.astype(object)
                r = acc.astype(object) + m.astype(object)
                sat_hit |= (r > at.raw_max) | (r < at.sat_min)
            acc = requantize(acc.astype(object) + m.astype(object) if (acc.dtype == object or m.dtype == object) else acc + m, at.frac, at)
        if sat_hit is not None:
            if at.overflow == "WRAP":
                n = int(np.count_nonzero((exact > at.raw_max) | (exact < at.raw_min)))
            else:
                n = int(np.count_nonzero(sat_hit))
            ctr.add(name, "accum", n)
        return acc, at.frac

    def _k_dense(self, xs, ctr):
        A = self.layer.arrays
        acc, fa = self._dense_core(xs[0], self._in_t(), A["weight"], A["bias"], ctr)
        return self._res(acc, fa, ctr)

    def _p_conv1d(self):
        p = self.layer.params
        W, C, OW, F = p["in_width"], p["n_chan"], p["out_width"], p["n_filt"]
        fw, sw, pl = p["filt_width"], p["stride_width"], p["pad_left"]
        idx = np.full((OW, fw * C), -1, dtype=np.int64)
        for ow in range(OW):
            for kw in range(fw):
                iw = ow * sw + kw - pl
                if 0 <= iw < W:
                    for c in range(C):
                        idx[ow, kw * C + c] = iw * C + c
        self.im2col = idx
        self.w2 = np.asarray(self.layer.arrays["weight"]).reshape(fw * C, F)

    def _p_conv2d(self):
        p = self.layer.params
        H, W, C = p["in_height"], p["in_width"], p["n_chan"]
        OH, OW, F = p["out_height"], p["out_width"], p["n_filt"]
        fh, fw = p["filt_height"], p["filt_width"]
        sh, sw, pt, pl = p["stride_height"], p["stride_width"], p["pad_top"], p["pad_left"]
        idx = np.full((OH * OW, fh * fw * C), -1, dtype=np.int64)
        for oh in range(OH):
            for ow in range(OW):
                for kh in range(fh):
                    ih = oh * sh + kh - pt
                    if not 0 <= ih < H:
                        continue
                    for kw in range(fw):
                        iw = ow * sw + kw - pl
                        if 0 <= iw < W:
                            for c in range(C):
                                idx[oh * OW + ow, (kh * fw + kw) * C + c] = (ih * W + iw) * C + c
        self.im2col = idx
        self.w2 = np.asarray(self.layer.arrays["weight"]).reshape(fh * fw * C, F)

    def _conv(self, xs, ctr):
        x = xs[0]
        n = x.shape[0]
        idx = self.im2col
        xp = np.concatenate([x, np.zeros((n, 1), dtype=x.dtype)], axis=1)  # index -1 -> the zero column
        cols = xp[:, idx].reshape(n * idx.shape[0], idx.shape[1])
        acc, fa = self._dense_core(cols, self._in_t(), self.w2, self.layer.arrays["bias"], ctr)
        return self._res(acc, fa, ctr).reshape(n, -1)

    _k_conv1d = _conv
    _k_conv2d = _conv

    # -- pooling --------------------------------------------------------------------------------------
    def _p_pool_common(self, windows: list[list[int]], n_filt: int, npix_in: int, patch_sizes: list[int]):
        K = max(len(w) for w in windows)
        idx = np.full((len(windows), K), -1, dtype=np.int64)
        for o, w in enumerate(windows):
            idx[o, : len(w)] = w
        self.pool_idx = idx  # pixel indices, -1 = padding
        self.pool_len = np.asarray(patch_sizes, dtype=np.int64)
        self.pool_F = n_filt
        self.pool_npix = npix_in

    def _p_pooling2d(self):
        p = self.layer.params
        H, W, F = p["in_height"], p["in_width"], p["n_filt"]
        ph, pw, sh, sw = p["pool_height"], p["pool_width"], p["stride_height"], p["stride_width"]
        pt, pb, pl, pr = p["pad_top"], p["pad_bottom"], p["pad_left"], p["pad_right"]
        fh_full, fw_full = H + pt + pb, W + pl + pr
        rh = (fh_full - ph) // sh * sh + 1
        rw = (fw_full - pw) // sw * sw + 1
        windows, sizes = [], []
        for ii in range(0, rh, sh):
            for jj in range(0, rw, sw):
                win, overlap = [], 0
                for kk in range(ph):
                    for ll in range(pw):
                        r, c = ii + kk - pt, jj + ll - pl
                        if 0 <= r < H and 0 <= c < W:
                            win.append(r * W + c)
                            overlap += 1
                        else:
                            win.append(-1)
                windows.append(win)
                sizes.append(ph * pw if p["count_pad"] else overlap)
        self._p_pool_common(windows, F, H * W, sizes)

    def _p_pooling1d(self):
        p = self.layer.params
        N, F = p["n_in"], p["n_filt"]
        pw, sw, pl, pr = p["pool_width"], p["stride_width"], p["pad_left"], p["pad_right"]
        full = N + pl + pr
        rw = (full - pw) // sw * sw + 1
        windows, sizes = [], []
        for ii in range(0, rw, sw):
            win, overlap = [], 0
            for jj in range(pw):
                c = ii + jj - pl
                if 0 <= c < N:
                    win.append(c)
                    overlap += 1
                else:
                    win.append(-1)
            windows.append(win)
            sizes.append(pw if p["count_pad"] else overlap)
        self._p_pool_common(windows, F, N, sizes)

    def _p_global(self):
        p = self.layer.params
        n = p["n_pixels"]
        self._p_pool_common([list(range(n))], p["n_filt"], n, [n])

    _p_global_pooling1d = _p_global
    _p_global_pooling2d = _p_global

    def _pool(self, xs, ctr):
        x = xs[0]
        n = x.shape[0]
        F = self.pool_F
        dt = self._in_t()
        at = self.layer.types["accum"]
        op = self.layer.params["op"]
        name = self.layer.name
        xv = x.reshape(n, self.pool_npix, F)
        outs = []
        for o in range(self.pool_idx.shape[0]):
            win = [int(v) for v in self.pool_idx[o] if True]
            if op == "max":
                pad = (dt.raw_min if dt.signed else (1 << (dt.width - 1)))  # pad_val: only the top bit set
                vals = [xv[:, v, :] if v >= 0 else np.full((n, F), pad, dtype=np.int64) for v in win]
                y = vals[0]
                for v in vals[1:]:
                    y = np.where(v > y, v, y)
                y = _cast(y, dt.frac, at, ctr, name, "accum")
            else:
                y = np.zeros((n, F), dtype=np.int64)
                for v in win:
                    xi = xv[:, v, :] if v >= 0 else np.zeros((n, F), dtype=np.int64)
                    a2, b2, f, _, _ = _align(y, at.frac, _bound(at), xi, dt.frac, _bound(dt))
                    y = _cast(a2 + b2, f, at, ctr, name, "accum")
                y = _trunc_div(y, int(self.pool_len[o]))
                y = requantize(y, at.frac, at)
            outs.append(self._res(y, at.frac, ctr))
        return np.stack(outs, axis=1).reshape(n, -1)

    _k_pooling1d = _pool
    _k_pooling2d = _pool
    _k_global_pooling1d = _pool
    _k_global_pooling2d = _pool

    # -- batchnorm -----------------------------------------------------------------------------------
    def _k_batchnorm(self, xs, ctr):
        x = xs[0]
        A, T = self.layer.arrays, self.layer.types
        nf = self.layer.params["n_filt"]
        size = x.shape[1]
        sel = np.arange(size) if nf == -1 else np.arange(size) % nf
        s, b = np.asarray(A["scale"])[sel], np.asarray(A["bias"])[sel]
        dt, st, bt = self._in_t(), T["scale"], T["bias"]
        p, bp = _mul(x, s.reshape(1, -1), _bound(dt), _bound(st))
        a2, b2, f, _, _ = _align(p, dt.frac + st.frac, bp, np.broadcast_to(b.reshape(1, -1), x.shape), bt.frac, _bound(bt))
        return self._res(a2 + b2, f, ctr)

    # -- activations ------------------------------------------------------------------------------------
    def _k_activation(self, xs, ctr):
        x = xs[0]
        fn = self.layer.params["fn"]
        dt = self._in_t()
        if fn == "linear":
            return self._res(x, dt.frac, ctr)
        if fn == "relu":
            return self._res(np.where(x > 0, x, 0), dt.frac, ctr)
        if fn == "relu_max":
            m = int(self.layer.params["max_int"])
            big = _shl(np.array([m], dtype=np.int64), max(dt.frac, 0), m)[0][0] if dt.frac >= 0 else None
            y = self._res(np.where(x < 0, 0, x), dt.frac, ctr)
            if dt.frac >= 0:
                over = x > big
            else:
                over = x * (1 << -dt.frac) > m
            mval = requantize(np.array([m], dtype=np.int64), 0, self.out_t)[0]
            return np.where(over, mval, y)
        pt = self.layer.types.get("param")
        if fn in ("leaky_relu", "prelu"):
            if fn == "leaky_relu":
                alpha = np.full((1, x.shape[1]), int(self.layer.params["param_raw"]), dtype=np.int64)
            else:
                alpha = np.asarray(self.layer.arrays["alpha"]).reshape(1, -1)
            pos = self._res(x, dt.frac, ctr, "result")
            ax, _ = _mul(x, alpha, _bound(dt), _bound(pt))
            neg = self._res(ax, dt.frac + pt.frac, ctr, "result")
            return np.where(x > 0, pos, neg)
        if fn == "thresholded_relu":
            theta = int(self.layer.params["param_raw"])
            a2, t2, _, _, _ = _align(x, dt.frac, _bound(dt), np.array([theta], dtype=np.int64), pt.frac, _bound(pt))
            return np.where(a2 > t2, self._res(x, dt.frac, ctr), 0)
        raise UnsupportedLayerError(f"layer {self.layer.name!r}: activation {fn!r}")

    def _table_index(self, x: np.ndarray, dt: FixedType, n: int, div: int) -> np.ndarray:
        """``(int)(x * N / div)`` with truncation toward zero (div may be negative)."""
        num = x.astype(object) * n if x.dtype == object or _bound(dt) * n >= _I62 else x * n
        den = abs(div)
        if dt.frac >= 0:
            den = den << dt.frac
        else:
            num = num * (1 << -dt.frac)
        q = _trunc_div(num, den)
        return -q if div < 0 else q

    def _k_table_activation(self, xs, ctr):
        x = xs[0]
        p = self.layer.params
        n = int(p["table_size"])
        idx = self._table_index(x, self._in_t(), n, int(p["range_div"])) + int(p["offset"])
        idx = np.clip(idx.astype(np.int64), 0, n - 1)
        vals = np.asarray(self.layer.arrays["table"])[idx]
        return self._res(vals, self.layer.types["table"].frac, ctr)

    def _k_elu(self, xs, ctr):
        x = xs[0]
        p, T = self.layer.params, self.layer.types
        n = int(p["table_size"])
        dt = self._in_t()
        idx = np.clip(self._table_index(x, dt, n, -8).astype(np.int64), None, n - 1)
        idx = np.clip(idx, 0, n - 1)  # (never negative for x < 0)
        tab = np.asarray(self.layer.arrays["table"])[idx]
        alpha = int(p["param_raw"])
        neg = self._res(tab * alpha, T["table"].frac + T["param"].frac, ctr)
        pos = self._res(x, dt.frac, ctr)
        return np.where(x >= 0, pos, neg)

    def _k_selu(self, xs, ctr):
        x = xs[0]
        n = int(self.layer.params["table_size"])
        dt = self._in_t()
        lam_t = FixedType(16, 1, False)
        lam = int(from_float(np.array([1.0507009873554805]), lam_t)[0])
        idx = np.clip(self._table_index(x, dt, n, -8).astype(np.int64), 0, n - 1)
        tab = np.asarray(self.layer.arrays["table"])[idx]
        neg = self._res(tab, self.layer.types["table"].frac, ctr)
        px, _ = _mul(x, lam, _bound(dt), lam)
        pos = self._res(px, dt.frac + lam_t.frac, ctr)
        return np.where(x >= 0, pos, neg)

    def _k_unary_lut(self, xs, ctr):
        x = xs[0]
        dt = self._in_t()
        table = np.asarray(self.layer.arrays["table"])
        u = np.bitwise_and(x.astype(np.int64), (1 << dt.width) - 1) if dt.width < 64 else x.astype(np.int64)
        idx = np.clip(u, 0, table.size - 1)
        return self._res(table[idx], self.layer.types["table"].frac, ctr)

    # -- softmax ------------------------------------------------------------------------------------------
    def _k_softmax(self, xs, ctr):
        x = xs[0]
        p = self.layer.params
        n = x.shape[0]
        S, inner, outer = int(p["n_slice"]), int(p["n_inner"]), int(p["n_outer"])
        xv = x.reshape(n, outer, S, inner).transpose(0, 1, 3, 2).reshape(n * outer * inner, S)
        y = self._softmax_slices(xv, ctr)
        return y.reshape(n, outer, inner, S).transpose(0, 1, 3, 2).reshape(n, -1)

    def _softmax_slices(self, x: np.ndarray, ctr) -> np.ndarray:
        p, T, A = self.layer.params, self.layer.types, self.layer.arrays
        impl = p["implementation"]
        dt = self._in_t()
        name = self.layer.name
        S = x.shape[1]
        if impl == "argmax":
            first = np.argmax(x, axis=1)  # first maximum (strict '>' scan)
            one = requantize(np.array([1], dtype=np.int64), 0, self.out_t)[0]
            out = np.zeros(x.shape, dtype=np.int64)
            out[np.arange(x.shape[0]), first] = one
            return out
        if impl == "legacy":
            tt = T["table"]
            ne, ni = int(p["exp_table_size"]), int(p["inv_table_size"])
            exp_table, inv_table = np.asarray(A["exp_table"]), np.asarray(A["inv_table"])
            one = requantize(np.array([1], dtype=np.int64), 0, tt)[0]
            outs = []
            for i in range(S):
                acc = np.zeros(x.shape[0], dtype=np.int64)
                for j in range(S):
                    if i == j:
                        e = np.full(x.shape[0], one, dtype=np.int64)
                    else:
                        idx = self._table_index(x[:, j] - x[:, i], dt, ne, 16) + (8 * ne // 16)
                        e = exp_table[np.clip(idx.astype(np.int64), 0, ne - 1)]
                    acc = _cast(acc + e, tt.frac, tt, ctr, name, "accum")
                idx = self._table_index(acc, tt, ni, 64)
                outs.append(inv_table[np.clip(idx.astype(np.int64), 0, ni - 1)])
            return self._res(np.stack(outs, axis=1), tt.frac, ctr)
        et, it, at, iit = T["exp_table"], T["inv_table"], T["accum"], T["inv_inp"]
        exp_table, inv_table = np.asarray(A["exp_table"]), np.asarray(A["inv_table"])
        eb, ib = int(p["exp_bits"]), int(p["inv_bits"])
        if impl == "stable":
            nt = T["inp_norm"]
            xmax = np.max(x, axis=1, keepdims=True)
            d = _cast(xmax - x, dt.frac, nt, ctr, name, "inp_norm")
            idx = _top_bits(d, nt, eb)
        else:
            idx = _top_bits(x, dt, eb)
        e = _cast(exp_table[idx], et.frac, at, ctr, name, "accum")
        cols = [e[:, j] for j in range(S)]
        s = _tree_reduce(cols, lambda a, b: _cast(a + b, at.frac, at, ctr, name, "accum"))
        s = _cast(s, at.frac, iit, ctr, name, "inv_inp")
        inv = inv_table[_top_bits(s, iit, ib)]
        prod, _ = _mul(e, inv.reshape(-1, 1), _bound(at), _bound(it))
        return self._res(prod, at.frac + it.frac, ctr)

    # -- merges ---------------------------------------------------------------------------------------------
    def _k_merge(self, xs, ctr):
        p = self.layer.params
        op = p["op"]
        n1, n2 = int(p["n_elem1"]), int(p["n_elem2"])
        ne = max(n1, n2)
        a, b = xs[0], xs[1]
        if n1 != ne:
            a = a[:, np.arange(ne) % n1]
        if n2 != ne:
            b = b[:, np.arange(ne) % n2]
        t1, t2 = self._in_t(0), self._in_t(1)
        if op == "multiply":
            r, _ = _mul(a, b, _bound(t1), _bound(t2))
            return self._res(r, t1.frac + t2.frac, ctr)
        a2, b2, f, _, _ = _align(a, t1.frac, _bound(t1), b, t2.frac, _bound(t2))
        if op == "add":
            return self._res(a2 + b2, f, ctr)
        if op == "subtract":
            return self._res(a2 - b2, f, ctr)
        if op == "average":
            return self._res(a2 + b2, f + 1, ctr)  # (a + b) * ap_ufixed<1,0>(0.5)
        if op == "maximum":
            return np.where(a2 > b2, self._res(a, t1.frac, ctr), self._res(b, t2.frac, ctr))
        if op == "minimum":
            return np.where(a2 < b2, self._res(a, t1.frac, ctr), self._res(b, t2.frac, ctr))
        raise UnsupportedLayerError(f"layer {self.layer.name!r}: merge op {op!r}")

    def _k_dot(self, xs, ctr):
        a, b = xs
        t1, t2 = self._in_t(0), self._in_t(1)
        at = self.layer.types["accum"]
        name = self.layer.name
        acc = np.zeros((a.shape[0], 1), dtype=np.int64)
        for i in range(a.shape[1]):
            prod, _ = _mul(a[:, i : i + 1], b[:, i : i + 1], _bound(t1), _bound(t2))
            m = _cast(prod, t1.frac + t2.frac, at, ctr, name, "product")
            acc = _cast(acc + m, at.frac, at, ctr, name, "accum")
        return self._res(acc, at.frac, ctr)

    # -- input scaling (trigger_ml.ir kind scale_input) -----------------------------------------------
    def _k_scale_input(self, xs, ctr):
        x = xs[0]
        t_in, wt, ot = self._in_t(), self.layer.types["work"], self.layer.types["offset"]
        off = np.asarray(self.layer.arrays["offset"], dtype=np.int64).reshape(1, -1)
        sh = np.asarray(self.layer.arrays["shift"], dtype=np.int64).reshape(1, -1)
        f = max(t_in.frac, ot.frac)
        xa, _ = _shl(x, f - t_in.frac, _bound(t_in))
        oa, _ = _shl(off, f - ot.frac, _bound(ot))
        d = _cast(xa - oa, f, wt, ctr, self.layer.name, "work")  # work_t d = x - offset
        m = 1 << wt.width
        left = np.left_shift(d, np.maximum(-sh, 0)) % m  # << wraps within the width (raw bits)
        if wt.signed:
            left = np.where(left >= m >> 1, left - m, left)
        y = np.where(sh >= 0, np.right_shift(d, np.maximum(sh, 0)), left)
        return self._res(y, wt.frac, ctr)


@dataclass
class _Step:
    layer: Layer
    ref: _RefLayer
    in_idx: list[int]


def _to_float_out(raw: np.ndarray, t: FixedType, dtype) -> np.ndarray:
    """Raw -> float as the C-sim returns it (``ap_fixed::to_float``/``to_double``: round half even)."""
    if raw.dtype == object:
        v = np.array([math.ldexp(float(int(r)), -t.frac) for r in raw.reshape(-1)], dtype=np.float64).reshape(raw.shape)
    else:
        v = np.ldexp(raw.astype(np.float64), -t.frac)
    return v.astype(dtype, copy=False)
