"""Lookup tables of table activations, computed the way hls4ml's ``nnet_activation.h`` fills them
(float arithmetic emulated), so the emulator loads the same raw integers as the C++."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from trigger_ml.core.errors import UnsupportedLayerError
from trigger_ml.core.fixed import FixedType, from_float

# ----------------------------------------------------------------------------------------------
# lookup tables, computed the way nnet_activation.h fills them (float arithmetic emulated)
# ----------------------------------------------------------------------------------------------

_f32 = np.float32


def _ceillog2(x: int) -> int:
    """nnet_helpers.h ``ceillog2`` (note: 1 for x <= 2)."""
    return 1 if x <= 2 else 1 + _ceillog2((x + 1) // 2)


def _expf(x: np.ndarray) -> np.ndarray:
    """std::exp(float) (glibc expf is correctly rounded in practice): exp in double, rounded."""
    with np.errstate(over="ignore"):
        return np.exp(x.astype(np.float64)).astype(np.float32)


def _cast_table(values: np.ndarray, t: FixedType) -> np.ndarray:
    return from_float(np.asarray(values, dtype=np.float64), t).astype(np.int64)


def _table_in_val(n: int, span: float) -> np.ndarray:
    """``float in_val = 2 * span * (ii - float(N) / 2.0) / float(N)`` (double math, then float)."""
    ii = np.arange(n, dtype=np.float64)
    return (2 * span * (ii - float(np.float32(n)) / 2.0) / float(np.float32(n))).astype(np.float32)


def build_tables(fn: str, table_size: int, table_t: FixedType) -> np.ndarray:
    """Raw table of ``table_t`` for sigmoid / tanh / softplus / softsign / elu / selu (nnet_activation.h)."""
    n = int(table_size)
    if fn == "sigmoid":
        x = _table_in_val(n, 8.0)
        e = _expf(-x)
        d = (_f32(1) + e).astype(np.float32)  # 1 + float -> float
        with np.errstate(divide="ignore"):
            v = (1.0 / d.astype(np.float64)).astype(np.float32)  # double division, returned as float
    elif fn == "tanh":
        x = _table_in_val(n, 4.0)
        v = np.tanh(x.astype(np.float64))  # ::tanh(double) (the nnet::tanh template is not yet declared)
    elif fn == "softplus":
        x = _table_in_val(n, 8.0)
        e = _expf(x)
        v = np.log(e.astype(np.float64) + 1.0).astype(np.float32)  # std::log(double), returned as float
    elif fn == "softsign":
        x = _table_in_val(n, 8.0)
        v = (x.astype(np.float64) / (np.abs(x).astype(np.float64) + 1.0)).astype(np.float32)
    elif fn == "elu":
        ii = np.arange(n, dtype=np.float64)
        x = (-8.0 * ii / float(np.float32(n))).astype(np.float32)
        v = (_expf(x).astype(np.float64) - 1.0).astype(np.float32)
    elif fn == "selu":
        ii = np.arange(n, dtype=np.float64)
        x = (-8.0 * ii / float(np.float32(n))).astype(np.float32)
        v = (1.0507009873554804934193349852946 * (1.6732632423543772848170429916717 * (_expf(x).astype(np.float64) - 1.0))).astype(
            np.float32
        )
    else:
        raise UnsupportedLayerError(f"no lookup table for activation {fn!r}")
    return _cast_table(v, table_t)


def _real_val_from_idx(t: FixedType, table_size: int) -> np.ndarray:
    """softmax_real_val_from_idx<t, table_size>(i) for every i: top N bits set to i, as float."""
    nbits = _ceillog2(table_size)
    w = t.width
    if nbits > w:
        raise UnsupportedLayerError(f"softmax table of {table_size} entries needs {nbits} address bits > width of {t.to_hls()}")
    i = np.arange(table_size, dtype=np.int64)
    raw = i << (w - nbits)
    if t.signed:
        raw = np.where(raw >= (1 << (w - 1)), raw - (1 << w), raw)
    return np.ldexp(raw.astype(np.float64), -t.frac).astype(np.float32)  # (float)x (round-half-even)


def _softmax_tables(impl: str, types: Mapping[str, FixedType], exp_size: int, inv_size: int, exp_scale: float, data_t: FixedType):
    if impl in ("latency", "stable"):
        addr_t = types["inp_norm"] if impl == "stable" else data_t
        x = _real_val_from_idx(addr_t, exp_size)
        x = (x * _f32(exp_scale)).astype(np.float32)
        if impl == "stable":
            x = -x
        exp_table = _cast_table(_expf(x), types["exp_table"])
        xi = _real_val_from_idx(types["inv_inp"], inv_size)
        with np.errstate(divide="ignore"):
            inv = (_f32(1) / xi).astype(np.float32)
        inv_table = _cast_table(inv, types["inv_table"])
        return exp_table, inv_table
    if impl == "legacy":
        t = types["table"]
        x = _table_in_val(exp_size, 8.0)
        exp_table = _cast_table(_expf(x), t)
        ii = np.arange(inv_size, dtype=np.float64)
        xin = (64.0 * ii / float(np.float32(inv_size))).astype(np.float32)
        with np.errstate(divide="ignore"):
            v = np.where(xin > 0, 1.0 / xin.astype(np.float64), 0.0)
        inv_table = _cast_table(v, t)
        return exp_table, inv_table
    return np.zeros(0, np.int64), np.zeros(0, np.int64)


