"""Bit-exact Xilinx ``ap_fixed`` quantisation primitives on numpy integer arrays.

A fixed-point value is carried as its *raw* integer ``raw`` (the two's-complement
bit pattern read as an integer), meaning ``raw * 2**-frac``.  :func:`requantize`
reproduces what ``dst_t d = src;`` does in C++ for two *different* ap_fixed types
(``ap_fixed_base::operator=`` in ``ap_fixed_base.h``); :func:`from_float`
reproduces ``dst_t d = (double)x;`` (``ap_fixed_base(double)``).  Both were checked
bit-for-bit against the ap_types headers shipped with hls4ml (see
``tests/test_fixed.py``).

Semantics (what the headers do, restated in arithmetic terms)
--------------------------------------------------------------
1. The exact source value is rounded to the destination grid ``2**-dst.frac``
   according to the quantisation mode (``s`` = sign of the source value):

   ===============  =========================================
   ``TRN``          floor (toward -inf)
   ``TRN_ZERO``     toward zero
   ``RND``          nearest, ties toward +inf
   ``RND_ZERO``     nearest, ties toward zero
   ``RND_INF``      nearest, ties away from zero
   ``RND_MIN_INF``  nearest, ties toward -inf
   ``RND_CONV``     nearest, ties to even
   ===============  =========================================

2. The *rounded* value (rounding can carry past the top of the destination)
   is then checked against ``[raw_min, raw_max]``:

   * ``WRAP`` (``sat_bits == 0``): keep the low ``width`` bits (two's complement).
   * ``SAT``: clamp to ``[raw_min, raw_max]``.
   * ``SAT_ZERO``: out-of-range values become 0.
   * ``SAT_SYM``: clamp to ``[-raw_max, raw_max]`` for signed types, i.e. the most
     negative code is never produced (for a 1-bit signed type the header yields
     ``-1``, i.e. plain ``SAT``); for unsigned types identical to ``SAT``.
   * ``WRAP`` with ``sat_bits = N > 0``: wrap, then on overflow force the top
     ``N`` bits: signed overflow ``0 1..1``, signed underflow ``1 0..0``, unsigned
     (either direction) ``1..1``.

   ``sat_bits`` is ignored by the ``SAT*`` modes, as in the headers.

Note: C++ *same-type* copies (``ap_fixed<8,8,AP_TRN,AP_SAT_SYM> b = a;`` with ``a``
of exactly that type) copy bits verbatim; ``requantize`` always models a conversion
between distinct types, so e.g. ``requantize(raw, t.frac, t)`` applies ``t``'s
overflow mode to out-of-range raws.

Array conventions
-----------------
Inputs may be any numpy integer dtype (``uint64`` included), ``bool``, or
``object`` arrays of Python ints (arbitrary size).  Outputs are ``int64`` for
every destination type except ``ap_ufixed<64, ...>`` (``uint64``): every
``width <= 64`` raw fits one of the two exactly.

int64 fast path
---------------
All arithmetic is done with vectorised ``int64`` numpy operations (no per-element
Python) whenever the *input* values fit in ``int64`` -- i.e. the dtype is a signed
or unsigned integer of at most 32 bits, ``int64``, ``uint64`` with all values
``< 2**63``, or an object array whose elements all fit in ``int64``.  No
intermediate ever leaves int64 on this path, for any shift amount or width:

* right shifts (``src_frac > dst.frac``): shift counts are clamped (a shift by
  >= 64 only leaves the sign) and rounding is ``floor + increment`` with the
  increment computed from the guard/sticky bits, so ``|rounded| <= 2**62 + 1``;
* left shifts (``src_frac <= dst.frac``): overflow is detected *before* shifting
  by comparing the source raw against ``raw_max >> k`` / ``ceil(raw_min / 2**k)``,
  and wrapping relies on numpy's modulo-2**64 ``<<`` (a shift by >= 64 gives 0).

Otherwise (``uint64`` values ``>= 2**63`` or Python ints outside int64) an exact
Python-int (object dtype) path is used; it is correct for any magnitude but slow.
The common emulator case (int64 input, right shift, ``TRN``/``RND``,
``WRAP``/``SAT``) is 2-4 in-place numpy passes; arrays of at least
:data:`NUMBA_MIN_SIZE` elements instead go through one fused, branch-free numba
kernel doing the same int64 arithmetic (right shifts with any rounding mode and
any overflow mode except ``WRAP`` with ``sat_bits > 0``).

:func:`from_float` computes ``floor(x * 2**frac)`` plus the rounding increment in
double precision when that is exact for every element (``x`` zero or normal, and
``2**-1021 <= |x * 2**frac| < 2**62``); otherwise it decodes the IEEE bits the
way the header does and rounds/saturates with per-element int64 shifts.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

import numpy as np
from numba.extending import register_jitable

__all__ = [
    "OVERFLOW_MODES",
    "ROUNDING_MODES",
    "FixedType",
    "from_float",
    "requantize",
    "to_float",
]

ROUNDING_MODES = ("TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_INF", "RND_MIN_INF", "RND_CONV")
OVERFLOW_MODES = ("WRAP", "SAT", "SAT_ZERO", "SAT_SYM")

#: Integer codes of the modes for compiled (numba) kernels -- the one numbering every kernel uses.
#: The RND_* codes all follow Q_RND, so ``code >= Q_RND`` means "a rounding mode that may round up".
ROUNDING_CODE = {m: i for i, m in enumerate(ROUNDING_MODES)}
OVERFLOW_CODE = {m: i for i, m in enumerate(OVERFLOW_MODES)}
Q_TRN, Q_TRN_ZERO, Q_RND, Q_RND_ZERO, Q_RND_INF, Q_RND_MIN_INF, Q_RND_CONV = (ROUNDING_CODE[m] for m in ROUNDING_MODES)
O_WRAP, O_SAT, O_SAT_ZERO, O_SAT_SYM = (OVERFLOW_CODE[m] for m in OVERFLOW_MODES)

MAX_WIDTH = 64
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_U64_MAX = (1 << 64) - 1


# --------------------------------------------------------------------------------------
# FixedType
# --------------------------------------------------------------------------------------


def _as_int(value, what: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None


def _norm_mode(value, allowed: tuple[str, ...], what: str) -> str:
    """'AP_RND', 'rnd', RoundingMode.RND (hls4ml enum), None -> 'RND' / default."""
    if value is None:
        return allowed[0]
    name = getattr(value, "name", value)  # hls4ml RoundingMode / SaturationMode enums
    if not isinstance(name, str):
        raise ValueError(f"{what} mode must be a string, got {value!r}")
    key = name.strip().upper()
    if key.startswith("AP_"):
        key = key[3:]
    if key not in allowed:
        raise ValueError(f"unknown {what} mode {value!r}; expected one of {', '.join(allowed)}")
    return key


@dataclass(frozen=True)
class FixedType:
    """``ap_fixed<width, integer, AP_<rounding>, AP_<overflow>, sat_bits>`` (``ap_ufixed`` if unsigned).

    ``integer`` may be negative or larger than ``width``, as ap_fixed allows.  Mode
    names are stored without the ``AP_`` prefix; the constructor also accepts
    ``"AP_RND"``, lower case, or hls4ml ``RoundingMode``/``SaturationMode`` enums.
    ``ap_int<W>`` is ``FixedType(W, W)``.
    """

    width: int
    integer: int
    signed: bool = True
    rounding: str = "TRN"
    overflow: str = "WRAP"
    sat_bits: int = 0

    def __post_init__(self) -> None:
        width = _as_int(self.width, "width")
        integer = _as_int(self.integer, "integer")
        sat_bits = _as_int(self.sat_bits, "sat_bits")
        if not 1 <= width <= MAX_WIDTH:
            raise ValueError(f"width must be in 1..{MAX_WIDTH}, got {width}")
        if not isinstance(self.signed, (bool, np.bool_)):
            raise ValueError(f"signed must be a bool, got {self.signed!r}")
        if not 0 <= sat_bits <= width:
            raise ValueError(f"sat_bits must be in 0..width={width}, got {sat_bits}")
        object.__setattr__(self, "width", width)
        object.__setattr__(self, "integer", integer)
        object.__setattr__(self, "signed", bool(self.signed))
        object.__setattr__(self, "sat_bits", sat_bits)
        object.__setattr__(self, "rounding", _norm_mode(self.rounding, ROUNDING_MODES, "rounding"))
        object.__setattr__(self, "overflow", _norm_mode(self.overflow, OVERFLOW_MODES, "overflow"))

    # -- derived quantities ------------------------------------------------------------
    @property
    def frac(self) -> int:
        """Fractional bits ``width - integer`` (negative when the LSB weighs more than 1)."""
        return self.width - self.integer

    @property
    def raw_min(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def raw_max(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def sat_min(self) -> int:
        """Smallest raw a saturating overflow mode produces for an under-range value (SAT_SYM: -raw_max)."""
        if self.overflow == "SAT_SYM" and self.signed and self.width > 1:
            return self.raw_min + 1
        return self.raw_min

    @property
    def lsb(self) -> float:
        """Value of one raw step, ``2**-frac``."""
        return math.ldexp(1.0, -self.frac)

    @property
    def min_value(self) -> float:
        """Most negative representable value ``raw_min * 2**-frac``."""
        return math.ldexp(float(self.raw_min), -self.frac)

    @property
    def max_value(self) -> float:
        """Largest representable value ``raw_max * 2**-frac``."""
        return math.ldexp(float(self.raw_max), -self.frac)

    @property
    def raw_dtype(self) -> np.dtype:
        """dtype of the arrays the functions of this module return for this type."""
        return np.dtype(np.uint64) if (not self.signed and self.width == 64) else np.dtype(np.int64)

    # -- text forms ----------------------------------------------------------------------
    def to_hls(self) -> str:
        """Canonical C++ spelling, default trailing modes omitted: ``ap_fixed<16,6,AP_RND,AP_SAT>``."""
        args = [str(self.width), str(self.integer)]
        if self.sat_bits:
            args += [f"AP_{self.rounding}", f"AP_{self.overflow}", str(self.sat_bits)]
        elif self.overflow != "WRAP":
            args += [f"AP_{self.rounding}", f"AP_{self.overflow}"]
        elif self.rounding != "TRN":
            args += [f"AP_{self.rounding}"]
        return f"ap_{'' if self.signed else 'u'}fixed<{','.join(args)}>"

    def __str__(self) -> str:
        return self.to_hls()

    @classmethod
    def parse(cls, text: str) -> FixedType:
        """Parse ``ap_fixed<16,6>``, ``ap_ufixed<8,0,AP_RND_CONV,AP_SAT_SYM>``, ``ap_int<8>``,
        ``ap_uint<4>`` and hls4ml's own ``fixed<16,6,RND,SAT,0>`` / ``ufixed<..>`` / ``int<8>`` /
        ``uint<8>`` spellings (whitespace-tolerant, mode prefix ``AP_`` optional)."""
        if not isinstance(text, str):
            raise TypeError(f"FixedType.parse expects a string, got {type(text).__name__}")
        compact = "".join(text.split())
        m = _TYPE_RE.fullmatch(compact)
        if m is None:
            raise ValueError(f"cannot parse fixed-point type {text!r}: expected e.g. 'ap_fixed<16,6>' or 'ap_int<8>'")
        unsigned, kind, body = m.group(1), m.group(2).lower(), m.group(3)
        fields = body.split(",")
        try:
            if kind == "int":
                if len(fields) != 1:
                    raise ValueError("integer types take exactly one parameter (the width)")
                width = _parse_int_field(fields[0])
                return cls(width, width, signed=not unsigned)
            if not 2 <= len(fields) <= 5:
                raise ValueError("fixed types take 2 to 5 parameters <W,I[,Q[,O[,N]]]>")
            width = _parse_int_field(fields[0])
            integer = _parse_int_field(fields[1])
            rounding = fields[2] if len(fields) > 2 else "TRN"
            overflow = fields[3] if len(fields) > 3 else "WRAP"
            sat_bits = _parse_int_field(fields[4]) if len(fields) > 4 else 0
            if rounding == "" or overflow == "":
                raise ValueError("empty mode parameter")
            return cls(width, integer, not unsigned, rounding, overflow, sat_bits)
        except ValueError as exc:
            raise ValueError(f"cannot parse fixed-point type {text!r}: {exc}") from None

    # -- hls4ml interop ----------------------------------------------------------------------
    @classmethod
    def from_hls4ml(cls, precision) -> FixedType:
        """From an hls4ml ``FixedPrecisionType`` / ``IntegerPrecisionType`` (also ``XnorPrecisionType``,
        ``ExponentPrecisionType``) or a precision string.  Float / unspecified types are rejected."""
        if isinstance(precision, str):
            return cls.parse(precision)
        if isinstance(precision, FixedType):
            return precision
        try:
            from hls4ml.model import types as ht
        except ImportError:  # pragma: no cover - hls4ml is a hard dependency
            ht = None
        if ht is not None:
            fixed_like = (ht.FixedPrecisionType, ht.IntegerPrecisionType, ht.XnorPrecisionType, ht.ExponentPrecisionType)
            if not isinstance(precision, fixed_like):
                raise ValueError(f"not a fixed-point/integer hls4ml precision: {precision!r} ({type(precision).__name__})")
        width = getattr(precision, "width", None)
        signed = getattr(precision, "signed", None)
        if width is None or signed is None or hasattr(precision, "exponent"):
            raise ValueError(f"not a fixed-point/integer hls4ml precision: {precision!r}")
        integer = getattr(precision, "integer", width)  # ExponentPrecisionType has no .integer
        return cls(
            width=width,
            integer=integer,
            signed=bool(signed),
            rounding=getattr(precision, "rounding_mode", None),
            overflow=getattr(precision, "saturation_mode", None),
            sat_bits=getattr(precision, "saturation_bits", None) or 0,
        )

    def to_hls4ml(self):
        """The equivalent ``hls4ml.model.types.FixedPrecisionType``."""
        from hls4ml.model.types import FixedPrecisionType, RoundingMode, SaturationMode

        return FixedPrecisionType(
            width=self.width,
            integer=self.integer,
            signed=self.signed,
            rounding_mode=RoundingMode[self.rounding],
            saturation_mode=SaturationMode[self.overflow],
            saturation_bits=self.sat_bits,
        )


_TYPE_RE = re.compile(r"(?:ap_)?(u?)(fixed|int)<([^<>]*)>", re.IGNORECASE)
_INT_RE = re.compile(r"[+-]?\d+")


def _parse_int_field(field: str) -> int:
    if not _INT_RE.fullmatch(field):
        raise ValueError(f"{field!r} is not an integer")
    return int(field)


def _coerce_type(t) -> FixedType:
    if isinstance(t, FixedType):
        return t
    if isinstance(t, str):
        return FixedType.parse(t)
    return FixedType.from_hls4ml(t)


# --------------------------------------------------------------------------------------
# input normalisation
# --------------------------------------------------------------------------------------


def _to_int64(arr: np.ndarray) -> np.ndarray | None:
    """``arr`` as int64 (a view or a copy; never written to), or None if values do not fit."""
    kind = arr.dtype.kind
    if kind == "i":
        return arr if arr.dtype == np.int64 else arr.astype(np.int64)
    if kind == "b":
        return arr.astype(np.int64)
    if kind == "u":
        if arr.dtype.itemsize < 8:
            return arr.astype(np.int64)
        if arr.size == 0 or int(arr.max()) <= _I64_MAX:
            return arr.view(np.int64)
        return None
    if kind == "O":
        vals = _object_ints(arr)
        if all(_I64_MIN <= v <= _I64_MAX for v in vals.flat):
            return vals.astype(np.int64)
        return None
    raise TypeError(f"raw values must be integers, got dtype {arr.dtype} (use from_float for real values)")


def _object_ints(arr: np.ndarray) -> np.ndarray:
    """Object array of exact Python ints (validates element types)."""
    out = np.empty(arr.shape, dtype=object)
    flat_in = arr.ravel()
    flat_out = out.reshape(-1)
    for i, v in enumerate(flat_in):
        if isinstance(v, (bool, np.bool_)):
            v = int(v)
        elif not isinstance(v, (int, np.integer)):
            raise TypeError(f"raw values must be integers, got {type(v).__name__} {v!r}")
        flat_out[i] = int(v)
    return out


# --------------------------------------------------------------------------------------
# int64 kernels (all take / return 1-d arrays; never write into their input)
# --------------------------------------------------------------------------------------


def _wrap_inplace(q: np.ndarray, t: FixedType) -> np.ndarray:
    """q (int64, value mod 2**64, owned) -> low ``width`` bits in ``t.raw_dtype``."""
    w = t.width
    if w == 64:
        return q if t.signed else q.view(np.uint64)
    if t.signed:
        s = 64 - w
        np.left_shift(q, s, out=q)
        np.right_shift(q, s, out=q)
    else:
        np.bitwise_and(q, (1 << w) - 1, out=q)
    return q


def _cast_out(q: np.ndarray, t: FixedType) -> np.ndarray:
    return q.view(np.uint64) if (not t.signed and t.width == 64) else q


def _force_sat_bits(w: np.ndarray, pos, neg, t: FixedType) -> np.ndarray:
    """AP_WRAP with N > 0 (ap_fixed_base::overflow_adjust): force the top N bits on overflow."""
    n, width = t.sat_bits, t.width
    if t.signed:
        low = w & ((1 << (width - n)) - 1)
        over = low + (((1 << (n - 1)) - 1) << (width - n))  # 0 1..1 xxx
        under = low + (-(1 << (width - 1)))  # 1 0..0 xxx  (-2**63 fits int64, +2**63 would not)
        return np.where(pos, over, np.where(neg, under, w))
    top = ((1 << n) - 1) << (width - n)
    if width == 64:
        return np.where(pos | neg, w | np.uint64(top), w)
    return np.where(pos | neg, w | top, w)


def _apply_overflow_flags(q: np.ndarray, pos, neg, t: FixedType) -> np.ndarray:
    """q: int64 holding the rounded value mod 2**64 (owned); pos/neg: value > raw_max / < sat_lo."""
    o = t.overflow
    if o == "WRAP":
        w = _wrap_inplace(q, t)
        return _force_sat_bits(w, pos, neg, t) if t.sat_bits else w
    out = _cast_out(q, t)
    if o == "SAT_ZERO":
        np.putmask(out, pos | neg, 0)
    else:  # SAT, SAT_SYM
        np.putmask(out, pos, t.raw_max)
        np.putmask(out, neg, t.sat_min)
    return out


def _overflow_exact(q: np.ndarray, t: FixedType) -> np.ndarray:
    """q: int64 holding the exact rounded value (owned, may be modified)."""
    o = t.overflow
    if o == "WRAP" and not t.sat_bits:
        return _wrap_inplace(q, t)
    lo = t.sat_min if o == "SAT_SYM" else t.raw_min
    hi = min(t.raw_max, _I64_MAX)
    if o in ("SAT", "SAT_SYM"):
        np.clip(q, lo, hi, out=q)
        return _cast_out(q, t)
    return _apply_overflow_flags(q, q > hi, q < lo, t)


def _round_right(a: np.ndarray, d: int, mode: str) -> np.ndarray:
    """Exact ``round(a / 2**d)`` (d >= 1) per ap_fixed quantisation mode; fresh int64 array.

    |result| <= 2**62 + 1, so nothing downstream can overflow int64."""
    d1 = min(d - 1, 63)
    if mode == "TRN":
        return np.right_shift(a, min(d, 63))
    if mode == "RND":
        # floor((a + 2**(d-1)) / 2**d) == floor((floor(a / 2**(d-1)) + 1) / 2)
        u = np.right_shift(a, d1)
        if d >= 2:  # |u| <= 2**62: u + 1 cannot overflow
            np.add(u, 1, out=u)
            np.right_shift(u, 1, out=u)
            return u
        return (u >> 1) + (u & 1)
    t = np.right_shift(a, min(d, 63))
    qb = (np.right_shift(a, d1) & 1).astype(bool)  # first dropped bit (sign-extended)
    if d - 1 >= 64:
        r = a != 0  # every bit of a lies below the guard bit
    elif d == 1:
        r = False
    else:
        r = (a & ((1 << (d - 1)) - 1)) != 0  # sticky: any bit below the guard bit
    inc = _increment(mode, qb, r, a < 0, t)
    np.add(t, inc, out=t, casting="unsafe")
    return t


def _increment(mode: str, qb, r, s, t):
    """ap_fixed_base::quantization_adjust: add 1 to the floor result?"""
    if mode == "RND":
        return qb
    if mode == "RND_ZERO":
        return qb & (s | r)
    if mode == "RND_MIN_INF":
        return qb & r
    if mode == "RND_INF":
        return qb & (~s | r)
    if mode == "RND_CONV":
        return qb & ((t & 1).astype(bool) | r)
    if mode == "TRN_ZERO":
        return s & (qb | r)
    raise AssertionError(mode)


def _requantize_i64(a: np.ndarray, d: int, t: FixedType) -> np.ndarray:
    """a: 1-d int64 (read only); value a * 2**-(t.frac + d)."""
    if d > 0:
        kernels = _use_kernel(a.size, t)
        if kernels is not None:
            out = kernels[0](np.ascontiguousarray(a), np.empty(a.size, np.int64), d, *_kernel_args(t))
            return _cast_out(out, t)
        return _overflow_exact(_round_right(a, d, t.rounding), t)
    k = -d  # left shift, exact, no rounding
    o = t.overflow
    if o == "WRAP" and not t.sat_bits:
        q = np.left_shift(a, k) if k < 64 else np.zeros_like(a)
        return _wrap_inplace(q, t)
    lo = t.sat_min if o == "SAT_SYM" else t.raw_min
    hi_k = t.raw_max >> k  # a > hi_k  <=>  a * 2**k > raw_max
    lo_k = -((-lo) >> k)  # a < lo_k  <=>  a * 2**k < lo
    pos = (a > hi_k) if hi_k < _I64_MAX else np.zeros(a.shape, bool)
    neg = (a < lo_k) if lo_k > _I64_MIN else np.zeros(a.shape, bool)
    q = np.left_shift(a, k) if k < 64 else np.zeros_like(a)  # exact wherever ~pos & ~neg
    return _apply_overflow_flags(q, pos, neg, t)


def _requantize_var(a: np.ndarray, d: np.ndarray, t: FixedType) -> np.ndarray:
    """Like _requantize_i64 but with a per-element shift d (int64 array, same shape as a)."""
    lo = t.sat_min if t.overflow == "SAT_SYM" else t.raw_min
    hi = t.raw_max
    right = d > 0
    # right shifts: exact rounding
    dr = np.clip(d, 1, 65)
    d1 = np.minimum(dr - 1, 63)
    tr = np.right_shift(a, np.minimum(dr, 63))
    qb = (np.right_shift(a, d1) & 1).astype(bool)
    sticky_mask = np.where(dr - 1 >= 64, np.uint64(_U64_MAX), (np.uint64(1) << d1.astype(np.uint64)) - np.uint64(1))
    r = (a.view(np.uint64) & sticky_mask) != 0
    if t.rounding != "TRN":
        np.add(tr, _increment(t.rounding, qb, r, a < 0, tr), out=tr, casting="unsafe")
    # left shifts: exact where no int64 overflow, flags otherwise
    k = np.clip(-d, 0, 64)
    kc = np.minimum(k, 63)
    big = k >= 64
    if not t.signed and t.width == 64:
        au = a.view(np.uint64)
        ku = kc.astype(np.uint64)
        sh = au << ku
        exact = ((sh >> ku) == au) & (~big | (a == 0)) & (a >= 0)
        pos_l = (a > 0) & ~exact
        neg_l = a < 0
        ql = np.where(big, np.uint64(0), sh).view(np.int64)
    else:
        sh = np.left_shift(a, kc)
        exact = (np.right_shift(sh, kc) == a) & (~big | (a == 0))
        pos_l = np.where(exact, sh > hi, a > 0)
        neg_l = np.where(exact, sh < lo, a < 0)
        ql = np.where(big, 0, sh)
    q = np.where(right, tr, ql)
    pos = np.where(right, tr > min(hi, _I64_MAX), pos_l)
    neg = np.where(right, tr < lo, neg_l)
    return _apply_overflow_flags(q, pos, neg, t)


# --------------------------------------------------------------------------------------
# fused numba kernels (large arrays only; numpy code above is the fallback and the spec)
# --------------------------------------------------------------------------------------

#: Arrays with at least this many elements go through the fused numba kernels (one pass, no
#: temporaries) for right shifts / from_float; smaller ones use the numpy code (no JIT latency).
NUMBA_MIN_SIZE = 4096

_kernels_cache: list = []


@register_jitable
def _mode_flags(qcode):
    """(any-RND, RND, RND_ZERO, RND_INF, RND_CONV, TRN_ZERO) 0/1 flags of a rounding code (kernels)."""
    return (np.int64(qcode >= Q_RND), np.int64(qcode == Q_RND), np.int64(qcode == Q_RND_ZERO),
            np.int64(qcode == Q_RND_INF), np.int64(qcode == Q_RND_CONV), np.int64(qcode == Q_TRN_ZERO))


@register_jitable
def _wrap_consts(width, signed):
    """(mask, 2**width, sign-fix mask, 2**(width-1)) for WRAP of a ``width``-bit field (kernels)."""
    wmask = np.int64(-1) if width >= 64 else (np.int64(1) << width) - 1
    sfix = np.int64(-1) if (signed and width < 64) else np.int64(0)
    half = (np.int64(1) << (width - 1)) if (signed and width < 64) else np.int64(0)
    return wmask, wmask + 1, sfix, half  # 2**width unused when width == 64


@register_jitable
def _overflow_k(t, ocode, lo, hi, wmask, wspan, sfix, half):
    """The overflow mode applied to one integer ``t`` on the destination grid (kernels)."""
    if ocode == O_WRAP:
        t &= wmask
        return t - (wspan & sfix & -np.int64(t >= half))
    if ocode == O_SAT_ZERO:
        return np.int64(0) if (t < lo or t > hi) else t
    return min(max(t, lo), hi)


def _k_requantize_right(a, out, d, qcode, ocode, lo, hi, width, signed):  # pragma: no cover - jitted
    """out[i] = requantize(a[i]) for a right shift d >= 1 (overflow: WRAP with N=0, SAT*, SAT_ZERO).

    Same arithmetic as _round_right/_overflow_exact; branch-free body so LLVM vectorises it."""
    dt = min(d, 63)
    d1 = min(d - 1, 63)
    big = np.int64(d - 1 >= 64)
    smask = np.int64(0x7FFFFFFFFFFFFFFF) if d1 >= 63 else (np.int64(1) << d1) - 1
    en, c0, cs, cns, cl, tz = _mode_flags(qcode)
    wmask, wspan, sfix, half = _wrap_consts(width, signed)
    for i in range(a.size):
        v = a[i]
        t = v >> dt
        qb = (v >> d1) & 1
        r = np.int64((v & smask) != 0) | (big & np.int64(v != 0))
        s = np.int64(v < 0)
        t += (en & qb & (r | c0 | (cs & s) | (cns & (1 - s)) | (cl & t & 1))) | (tz & s & (qb | r))
        out[i] = _overflow_k(t, ocode, lo, hi, wmask, wspan, sfix, half)
    return out


def _k_from_float(x, out, scale, thr_lo, thr_hi, qcode, ocode, lo, hi, width, signed):  # pragma: no cover
    """out[i] = from_float(x[i]) via floor(x * 2**frac); returns False if some element is outside the
    range where that is exact (caller then uses the bit-decoding path for the whole array)."""
    en, c0, cs, cns, cl, tz = _mode_flags(qcode)
    wmask, wspan, sfix, half = _wrap_consts(width, signed)
    nbad = 0
    for i in range(x.size):
        v = x[i]
        av = abs(v)
        ok = (av < thr_hi) and ((av >= thr_lo) or (v == 0.0))
        nbad += np.int64(not ok)
        y = v * scale if ok else 0.0
        fl = np.floor(y)
        rem = y - fl
        t = np.int64(fl)
        s = np.int64(v < 0.0)
        gt = np.int64(rem > 0.5)
        eq = np.int64(rem == 0.5)
        t += (en & (gt | (eq & (c0 | (cs & s) | (cns & (1 - s)) | (cl & t & 1))))) | (tz & s & np.int64(rem > 0.0))
        out[i] = _overflow_k(t, ocode, lo, hi, wmask, wspan, sfix, half)
    return nbad == 0


_NUMBA_CACHE_READY: list = []


def numba_cache_setup() -> str:
    """Make numba's on-disk kernel cache (``cache=True``) work for this package wherever it is
    installed, before the first kernel is compiled; returns where kernels are cached.

    ``NUMBA_CACHE_DIR`` set by the user wins.  Otherwise an editable/source tree caches in the
    ``__pycache__`` next to each module (numba's default) and a read-only install (site-packages
    owned by root, a container image) uses numba's user-wide cache directory when that is writable,
    else ``$TMPDIR/trigger_ml-numba-<uid>`` -- never silently recompiling in every process."""
    if _NUMBA_CACHE_READY:
        return _NUMBA_CACHE_READY[0]
    import os
    import tempfile

    import numba

    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if numba.config.CACHE_DIR:
        where = str(numba.config.CACHE_DIR)
    elif os.access(pkg, os.W_OK) and os.access(os.path.join(pkg, "core"), os.W_OK):
        where = "__pycache__ next to each module"
    else:
        try:
            from numba.misc.appdirs import AppDirs

            user = AppDirs(appname="numba", appauthor=False).user_cache_dir
            os.makedirs(user, exist_ok=True)
            ok = os.access(user, os.W_OK)
        except Exception:  # pragma: no cover - no home directory
            user, ok = "", False
        if ok:
            where = user
        else:
            where = os.path.join(tempfile.gettempdir(), f"trigger_ml-numba-{os.getuid() if hasattr(os, 'getuid') else 0}")
            os.makedirs(where, exist_ok=True)
            numba.config.CACHE_DIR = where
    _NUMBA_CACHE_READY.append(where)
    return where


def _kernels():
    """(requantize_right, from_float) jitted kernels, or None if numba is unavailable."""
    if not _kernels_cache:
        try:
            import numba
        except ImportError:  # pragma: no cover - numba is a dependency
            _kernels_cache.append(None)
        else:
            numba_cache_setup()
            jit = numba.njit(cache=True, nogil=True)
            _kernels_cache.append((jit(_k_requantize_right), jit(_k_from_float)))
    return _kernels_cache[0]


def _kernel_args(t: FixedType) -> tuple:
    o = t.overflow
    lo = t.sat_min if o == "SAT_SYM" else t.raw_min
    return (ROUNDING_CODE[t.rounding], OVERFLOW_CODE[o], lo, min(t.raw_max, _I64_MAX), t.width, t.signed)


def _use_kernel(size: int, t: FixedType):
    if size < NUMBA_MIN_SIZE or (t.overflow == "WRAP" and t.sat_bits):
        return None
    return _kernels()


# --------------------------------------------------------------------------------------
# exact Python-int path (also the readable specification)
# --------------------------------------------------------------------------------------


def _round_int(v: int, d: int, mode: str) -> int:
    if d <= 0:
        return v << -d
    t = v >> d
    if mode == "TRN":
        return t
    qb = bool((v >> (d - 1)) & 1)
    r = (v & ((1 << (d - 1)) - 1)) != 0
    s = v < 0
    inc = {
        "RND": qb,
        "RND_ZERO": qb and (s or r),
        "RND_MIN_INF": qb and r,
        "RND_INF": qb and (not s or r),
        "RND_CONV": qb and (bool(t & 1) or r),
        "TRN_ZERO": s and (qb or r),
    }[mode]
    return t + int(inc)


def _overflow_int(q: int, t: FixedType) -> int:
    lo = t.sat_min if t.overflow == "SAT_SYM" else t.raw_min
    hi = t.raw_max
    w = t.width
    if lo <= q <= hi:
        return q
    if t.overflow in ("SAT", "SAT_SYM"):
        return hi if q > hi else lo
    if t.overflow == "SAT_ZERO":
        return 0
    # WRAP
    bits = q & ((1 << w) - 1)
    n = t.sat_bits
    if n:
        low = bits & ((1 << (w - n)) - 1)
        if not t.signed:
            bits = low | (((1 << n) - 1) << (w - n))
        elif q > hi:
            bits = low | (((1 << (n - 1)) - 1) << (w - n))
        else:
            bits = low | (1 << (w - 1))
    if t.signed and bits >> (w - 1):
        bits -= 1 << w
    return bits


def _requantize_int(v: int, d: int, t: FixedType) -> int:
    """Scalar reference: raw int ``v`` at frac ``t.frac + d`` -> raw int of ``t``."""
    return _overflow_int(_round_int(v, d, t.rounding), t)


def _requantize_object(arr: np.ndarray, d: int, t: FixedType) -> np.ndarray:
    vals = _object_ints(arr)
    out = np.fromiter((_requantize_int(v, d, t) for v in vals.flat), dtype=t.raw_dtype, count=vals.size)
    return out.reshape(arr.shape)


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------


def requantize(raw: np.ndarray, src_frac: int, dst: FixedType) -> np.ndarray:
    """Raw integers ``raw`` representing ``raw * 2**-src_frac`` -> raw integers of ``dst``
    (value ``out * 2**-dst.frac``), applying ``dst``'s rounding then overflow mode exactly as
    ap_fixed assignment between distinct types does.

    Returns ``int64`` (``uint64`` for ``ap_ufixed<64,..>``) with the shape of ``raw``.
    ``dst`` may also be a type string or an hls4ml precision object."""
    dst = _coerce_type(dst)
    src_frac = _as_int(src_frac, "src_frac")
    arr = np.asarray(raw)
    d = src_frac - dst.frac
    a = _to_int64(arr)
    if a is None:
        return _requantize_object(arr, d, dst)
    return _requantize_i64(a.reshape(-1), d, dst).reshape(arr.shape)


_DOUBLE_MAN_MASK = (1 << 52) - 1


def from_float(x: np.ndarray, t: FixedType) -> np.ndarray:
    """float64 values -> raw integers of ``t``, exactly as ``t v = (double)x;`` (ap_fixed_base(double)).

    The exact double value is rounded per ``t.rounding`` then overflow-handled per ``t.overflow``.
    Like the header: +-0 -> 0; +-inf behave as +-2**1024 (saturate, or wrap to 0); NaN behaves as
    a huge value with the NaN's sign bit; subnormal inputs are decoded as ``1.m * 2**-1023``
    (the header always sets the implicit bit; this only matters when ``frac >= ~1000``)."""
    t = _coerce_type(t)
    x = np.asarray(x, dtype=np.float64)
    shape = x.shape
    x = x.reshape(-1)
    f = t.frac
    # fast path: scaling by 2**frac is exact and lands in int64 range, input normal or zero
    if -1021 < f < 1021:  # thresholds below are then finite, normal doubles
        thr_lo = max(math.ldexp(1.0, -1021 - f), math.ldexp(1.0, -1022))
        thr_hi = math.ldexp(1.0, 62 - f) if 62 - f <= 1023 else math.inf
        kernels = _use_kernel(x.size, t)
        if kernels is not None:
            out = np.empty(x.size, np.int64)
            x = np.ascontiguousarray(x)
            if kernels[1](x, out, math.ldexp(1.0, f), thr_lo, thr_hi, *_kernel_args(t)):
                return _cast_out(out, t).reshape(shape)
        else:
            ax = np.abs(x)
            if bool(np.all((ax < thr_hi) & ((ax >= thr_lo) | (x == 0)))):
                return _from_float_fast(x, t).reshape(shape)
    return _from_float_bits(x, t).reshape(shape)


def _from_float_fast(x: np.ndarray, t: FixedType) -> np.ndarray:
    y = np.ldexp(x, t.frac)  # exact: 2**-1021 <= |y| < 2**62 or y == 0
    fl = np.floor(y)
    q = fl.astype(np.int64)  # exact, |fl| < 2**62
    mode = t.rounding
    if mode != "TRN":
        rem = y - fl  # exact, in [0, 1)
        if mode == "TRN_ZERO":
            inc = (x < 0) & (rem > 0)
        elif mode == "RND":
            inc = rem >= 0.5
        elif mode == "RND_MIN_INF":
            inc = rem > 0.5
        else:
            tie = rem == 0.5
            if mode == "RND_ZERO":
                tie &= x < 0
            elif mode == "RND_INF":
                tie &= x > 0
            else:  # RND_CONV
                tie &= (q & 1).astype(bool)
            inc = (rem > 0.5) | tie
        np.add(q, inc, out=q, casting="unsafe")
    return _overflow_exact(q, t)


def _from_float_bits(x: np.ndarray, t: FixedType) -> np.ndarray:
    """Decode the IEEE bits like ap_fixed_base(double): value = man * 2**(exp - 1075)."""
    bits = np.ascontiguousarray(x).view(np.uint64)
    neg = (bits >> np.uint64(63)).astype(bool)
    expf = ((bits >> np.uint64(52)) & np.uint64(0x7FF)).astype(np.int64)
    man = (bits & np.uint64(_DOUBLE_MAN_MASK)).astype(np.int64) | np.int64(1 << 52)
    man = np.where(neg, -man, man)
    zero = (bits & np.uint64(_I64_MAX)) == 0
    man[zero] = 0
    d = (1075 - expf) - t.frac
    return _requantize_var(man, d, t)


def to_float(raw: np.ndarray, t: FixedType) -> np.ndarray:
    """Raw integers of ``t`` -> float64 values ``raw * 2**-t.frac`` (exact when ``t.width <= 53``;
    otherwise correctly rounded to nearest from the int64/uint64 conversion)."""
    t = _coerce_type(t)
    arr = np.asarray(raw)
    if arr.dtype.kind == "O":
        vals = np.array([float(v) for v in _object_ints(arr).flat], dtype=np.float64).reshape(arr.shape)
    elif arr.dtype.kind in "iub":
        vals = arr.astype(np.float64)
    else:
        raise TypeError(f"raw values must be integers, got dtype {arr.dtype}")
    return np.ldexp(vals, -t.frac)
