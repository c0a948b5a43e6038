"""Preprocessing of L1 events into model inputs, with exact JSON round trips for firmware.

Three steps, each an object with ``fit``, ``transform``, ``to_json`` and ``from_json``:

* :class:`HardwareQuantizer` — physics values to L1 hardware integers (pT in 0.5 GeV steps,
  eta/phi in fixed LSBs, saturation at the field width), configurable per object type.
* :class:`IntegerScaler` — AXOL1TL-style ``(x - offset) >> shift`` with integer offsets and
  shifts fitted on background; the result is an exact fixed-point number.
* :class:`Standardizer` — float ``(x - mean) / std`` for float baselines.

:class:`Pipeline` chains them; ``preprocessing_from_json`` rebuilds any of them from JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from trigger_ml.core.errors import ConfigError
from trigger_ml.data.adc2021 import N_FEATURES, N_OBJECTS, OBJECT_SLICES


@dataclass(frozen=True)
class FieldSpec:
    """One hardware field: value = integer * lsb, ``bits`` wide, signed or not."""

    lsb: float
    bits: int
    signed: bool
    rounding: str = "round"  # "round" (to nearest, half away from zero) or "floor"

    @property
    def int_min(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def int_max(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1


@dataclass(frozen=True)
class ObjectSpec:
    """Hardware representation of one object type (pT, eta, phi fields)."""

    pt: FieldSpec
    eta: FieldSpec
    phi: FieldSpec


_CALO_PHI = 2 * math.pi / 144
_MU_PHI = 2 * math.pi / 576
#: CMS-uGT-like defaults: pT LSB 0.5 GeV; calo eta LSB 0.087/2, muon eta LSB 0.087/8
DEFAULT_OBJECTS: dict[str, ObjectSpec] = {
    "met": ObjectSpec(FieldSpec(0.5, 12, False, "floor"), FieldSpec(0.0435, 8, True), FieldSpec(_CALO_PHI, 8, True)),
    "egamma": ObjectSpec(FieldSpec(0.5, 9, False, "floor"), FieldSpec(0.0435, 8, True), FieldSpec(_CALO_PHI, 8, True)),
    "muon": ObjectSpec(FieldSpec(0.5, 9, False, "floor"), FieldSpec(0.010875, 9, True), FieldSpec(_MU_PHI, 10, True)),
    "jet": ObjectSpec(FieldSpec(0.5, 11, False, "floor"), FieldSpec(0.0435, 8, True), FieldSpec(_CALO_PHI, 8, True)),
}


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


# -- compiled path (numba, cached on disk): the numpy code in the classes is the specification ------
_PRE_KERNELS: dict = {}
_PAR_MIN_EVENTS = 32768  # below this, one thread


def _pre_kernels() -> dict:
    """The fused preprocessing kernels (compiled once, cached on disk by numba)."""
    if _PRE_KERNELS:
        return _PRE_KERNELS
    import numba as nb

    from trigger_ml.core.fixed import numba_cache_setup

    numba_cache_setup()

    @nb.njit(cache=True, nogil=True, error_model="numpy")
    def hw_quantize(ev, s, e, lsb, lo, hi, isfloor, nbins, mode, offset, up, down, scale, out):  # pragma: no cover
        """Events s..e -> out rows s..e: HardwareQuantizer (mode 0, int32 out), fused with
        IntegerScaler (mode 1: frac_bits None, d * 2**-shift; mode 2: ((d << up) >> down) * 2**-f)."""
        pi = np.pi
        two_pi = 2 * np.pi
        n_obj = lsb.shape[0]
        for r in range(s, e):
            for o in range(n_obj):
                pt = np.float64(ev[r, o, 0])
                for c in range(3):
                    v = np.float64(ev[r, o, c])
                    if c == 2:  # (v + pi) % 2pi - pi; the modulo is the identity inside [0, 2pi)
                        w = v + pi
                        v = (w if (w >= 0.0 and w < two_pi) else w % two_pi) - pi
                    v = v / lsb[o, c]
                    if isfloor[o, c]:
                        q = np.floor(v)
                    else:
                        q = np.sign(v) * np.floor(np.abs(v) + 0.5)
                    if c == 2:
                        nb_ = nbins[o]
                        h = nb_ // 2
                        w = q + h
                        q = (w if (w >= 0.0 and w < nb_) else w % nb_) - h
                    if q < lo[o, c]:
                        q = lo[o, c]
                    elif q > hi[o, c]:
                        q = hi[o, c]
                    if pt <= 0:
                        q = 0.0
                    k = o * 3 + c
                    qi = np.int32(-2147483648) if np.isnan(q) else np.int32(q)
                    if mode == 0:
                        out[r, k] = qi
                    elif mode == 1:
                        out[r, k] = np.float64(np.int64(qi) - offset[k]) * scale[k]
                    else:
                        d = np.int64(qi) - offset[k]
                        out[r, k] = np.float64((d << up[k]) >> down[k]) * scale[0]

    _PRE_KERNELS["hw_quantize"] = hw_quantize
    return _PRE_KERNELS


def _run_rows(fn, n: int, threads: int | None = None) -> None:
    """Run ``fn(s, e)`` over event ranges on the cores (nogil kernels, Python threads)."""
    import os

    nt = max(1, min(int(threads or os.cpu_count() or 1), 8))
    if n < _PAR_MIN_EVENTS or nt == 1:
        fn(0, n)
        return
    from concurrent.futures import ThreadPoolExecutor

    step = -(-n // nt)
    with ThreadPoolExecutor(max_workers=nt - 1) as pool:
        futs = [pool.submit(fn, s, min(n, s + step)) for s in range(step, n, step)]
        fn(0, min(n, step))
        for f in futs:
            f.result()


def _events_array(events) -> np.ndarray:
    ev = np.asarray(events)
    if ev.ndim != 3 or ev.shape[1] != N_OBJECTS or ev.shape[2] < 3:
        raise ConfigError(f"hardware_quantizer: expected events of shape (n, {N_OBJECTS}, >=3), got {ev.shape}")
    if ev.dtype not in (np.float32, np.float64):
        ev = ev.astype(np.float64)
    return ev


class HardwareQuantizer:
    """Physics values (n, 19, 4) -> L1 hardware integers (n, 57) int32, (pT, eta, phi) per object.

    pT is truncated to its LSB and saturates at the field maximum; eta is rounded and saturates;
    phi is rounded and wraps into the signed range [-pi, pi). Zero-padded objects stay 0.
    """

    kind = "hardware_quantizer"

    def __init__(self, objects: dict[str, ObjectSpec] | None = None) -> None:
        self.objects = dict(DEFAULT_OBJECTS if objects is None else objects)
        missing = set(OBJECT_SLICES) - set(self.objects)
        if missing:
            raise ConfigError(f"hardware_quantizer: missing object types {sorted(missing)}; give met, egamma, muon, jet")
        self._lsb = np.zeros((N_OBJECTS, 3))
        self._lo = np.zeros((N_OBJECTS, 3))
        self._hi = np.zeros((N_OBJECTS, 3))
        self._floor = np.zeros((N_OBJECTS, 3), bool)
        for name, sl in OBJECT_SLICES.items():
            for c, f in enumerate((self.objects[name].pt, self.objects[name].eta, self.objects[name].phi)):
                self._lsb[sl, c], self._lo[sl, c], self._hi[sl, c] = f.lsb, f.int_min, f.int_max
                self._floor[sl, c] = f.rounding == "floor"

    def fit(self, events: np.ndarray) -> "HardwareQuantizer":
        """Nothing to fit (the hardware format is fixed); present for a uniform interface."""
        return self

    def transform(self, events: np.ndarray) -> np.ndarray:
        """(n, 19, 4) physics events -> (n, 57) int32 hardware integers (compiled; equal bit for bit
        to :meth:`transform_numpy`, the specification)."""
        ev = _events_array(events)
        out = np.empty((len(ev), N_FEATURES), dtype=np.int32)
        self._run(ev, 0, None, None, None, None, out)
        return out

    def _run(self, ev, mode, offset, up, down, scale, out) -> None:
        k = _pre_kernels()["hw_quantize"]
        z = np.zeros(N_FEATURES, dtype=np.int64)
        args = (self._lsb, self._lo, self._hi, self._floor, np.round(2 * math.pi / self._lsb[:, 2]), mode,
                z if offset is None else offset, z if up is None else up, z if down is None else down,
                np.ones(N_FEATURES) if scale is None else scale, out)
        _run_rows(lambda s, e: k(ev, s, e, *args), len(ev))

    def transform_numpy(self, events: np.ndarray) -> np.ndarray:
        """The numpy reference of :meth:`transform` (float64 throughout)."""
        x = np.asarray(events, dtype=np.float64)[:, :, :3]
        phi = x[:, :, 2]
        x = x.copy()
        x[:, :, 2] = (phi + math.pi) % (2 * math.pi) - math.pi
        scaled = x / self._lsb
        q = np.where(self._floor, np.floor(scaled), _round_half_away(scaled))
        # phi wraps modulo the number of phi bins (it is an angle), pT and eta saturate
        nbins = np.round(2 * math.pi / self._lsb[:, 2])
        q[:, :, 2] = (q[:, :, 2] + nbins // 2) % nbins - nbins // 2
        q = np.clip(q, self._lo, self._hi)
        q[x[:, :, 0] <= 0] = 0
        return q.astype(np.int32).reshape(len(q), N_FEATURES)

    def to_physical(self, hw: np.ndarray) -> np.ndarray:
        """(n, 57) hardware integers -> (n, 19, 3) physics values at the LSB grid points."""
        return np.asarray(hw, dtype=np.float64).reshape(-1, N_OBJECTS, 3) * self._lsb

    def feature_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature (min, max) hardware integers, shape (57,) each."""
        return self._lo.reshape(-1).astype(np.int64), self._hi.reshape(-1).astype(np.int64)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "objects": {k: asdict(v) for k, v in self.objects.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "HardwareQuantizer":
        try:
            objs = {
                k: ObjectSpec(**{f: FieldSpec(**v[f]) for f in ("pt", "eta", "phi")}) for k, v in d["objects"].items()
            }
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"hardware_quantizer JSON: bad or missing field ({exc}); expected objects.<type>.pt/eta/phi") from None
        return cls(objs)


class IntegerScaler:
    """AXOL1TL-style integer scaling ``(x - offset) >> shift``, fitted on background.

    ``offset`` is the rounded per-feature mean and ``shift`` the power of two closest to the
    per-feature standard deviation (0 for constant features). With ``frac_bits=None`` the shift
    keeps every bit (value = (x - offset) / 2**shift, an exact fixed-point number); with an
    integer ``frac_bits`` the result is truncated (floor) to that many fractional bits, which with
    ``frac_bits=0`` is the plain arithmetic right shift of integers.
    """

    kind = "integer_scaler"

    def __init__(
        self,
        offset: np.ndarray | None = None,
        shift: np.ndarray | None = None,
        frac_bits: int | None = None,
        in_min: np.ndarray | None = None,
        in_max: np.ndarray | None = None,
    ) -> None:
        self.offset = None if offset is None else np.asarray(offset, dtype=np.int64)
        self.shift = None if shift is None else np.asarray(shift, dtype=np.int64)
        self.frac_bits = frac_bits
        self.in_min = None if in_min is None else np.asarray(in_min, dtype=np.int64)
        self.in_max = None if in_max is None else np.asarray(in_max, dtype=np.int64)

    def fit(self, hw: np.ndarray, in_range: tuple[np.ndarray, np.ndarray] | None = None) -> "IntegerScaler":
        """Fit offsets/shifts on background hardware integers (n, 57).

        ``in_range`` gives the hardware (min, max) of each input (from the HardwareQuantizer) so
        the output type covers every representable input, not only the fitted sample.
        """
        x = np.asarray(hw, dtype=np.float64)
        self.offset = np.round(x.mean(0)).astype(np.int64)
        std = x.std(0)
        self.shift = np.where(std > 0, np.maximum(np.round(np.log2(np.maximum(std, 1.0))), 0), 0).astype(np.int64)
        lo, hi = in_range if in_range is not None else (x.min(0), x.max(0))
        self.in_min, self.in_max = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
        return self

    def _check(self) -> None:
        if self.offset is None or self.shift is None:
            raise ConfigError("integer_scaler: not fitted; call fit() on background hardware integers first")

    @property
    def out_frac_bits(self) -> int:
        """Fractional bits of the output fixed-point type."""
        self._check()
        return int(self.shift.max()) if self.frac_bits is None else int(self.frac_bits)

    def _kernel_args(self):
        """(mode, offset, up, down, scale) of the fused compiled kernel."""
        self._check()
        if self.frac_bits is None:
            return 1, self.offset, None, None, np.exp2(-self.shift.astype(np.float64))
        f = int(self.frac_bits)
        return (2, self.offset, np.maximum(f - self.shift, 0).astype(np.int64),
                np.maximum(self.shift - f, 0).astype(np.int64), np.array([2.0**-f]))

    def transform_events(self, hq: HardwareQuantizer, events: np.ndarray) -> np.ndarray:
        """``self.transform(hq.transform(events))`` in one compiled pass (same bits, no temporaries)."""
        ev = _events_array(events)
        if self.offset is None or len(self.offset) != N_FEATURES:
            return self.transform(hq.transform(ev))
        mode, off, up, down, scale = self._kernel_args()
        out = np.empty((len(ev), N_FEATURES), dtype=np.float64)
        hq._run(ev, mode, off, up, down, scale, out)
        return out

    def transform(self, hw: np.ndarray) -> np.ndarray:
        """(n, 57) hardware integers -> (n, 57) float64 exact fixed-point values."""
        self._check()
        d = np.asarray(hw, dtype=np.int64) - self.offset
        if self.frac_bits is None:
            return d * np.exp2(-self.shift.astype(np.float64))
        f = int(self.frac_bits)
        # floor((x - offset) * 2**(f - shift)) / 2**f, in exact integer arithmetic
        up = np.maximum(f - self.shift, 0)
        down = np.maximum(self.shift - f, 0)
        raw = np.left_shift(d, up) >> down
        return raw * 2.0**-f

    def output_type(self) -> dict[str, Any]:
        """Signed fixed-point type {width, integer, signed} holding every output value exactly."""
        self._check()
        lo = self.transform(self.in_min[None])[0].min()
        hi = self.transform(self.in_max[None])[0].max()
        mag = max(abs(lo), abs(hi), 1.0)
        integer = int(math.floor(math.log2(mag))) + 2  # sign bit + magnitude
        return {"width": integer + self.out_frac_bits, "integer": integer, "signed": True}

    def to_json(self) -> dict[str, Any]:
        self._check()
        return {
            "kind": self.kind,
            "offset": self.offset.tolist(),
            "shift": self.shift.tolist(),
            "frac_bits": self.frac_bits,
            "in_min": None if self.in_min is None else self.in_min.tolist(),
            "in_max": None if self.in_max is None else self.in_max.tolist(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "IntegerScaler":
        return cls(d["offset"], d["shift"], d.get("frac_bits"), d.get("in_min"), d.get("in_max"))


class Standardizer:
    """Float standardization ``(x - mean) / std`` per feature (std of constant features set to 1)."""

    kind = "standardizer"

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> None:
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)

    def fit(self, x: np.ndarray) -> "Standardizer":
        x = np.asarray(x, dtype=np.float64)
        self.mean = x.mean(0)
        s = x.std(0)
        self.std = np.where(s > 0, s, 1.0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        if self.mean is None:
            raise ConfigError("standardizer: not fitted; call fit() on background features first")
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Standardizer":
        return cls(d["mean"], d["std"])


@dataclass
class Pipeline:
    """A chain of preprocessing steps applied in order; the first one receives (n, 19, 4) events."""

    steps: list = field(default_factory=list)

    def fit(self, events: np.ndarray) -> "Pipeline":
        x = events
        for i, s in enumerate(self.steps):
            if isinstance(s, IntegerScaler) and i and isinstance(self.steps[i - 1], HardwareQuantizer):
                s.fit(x, in_range=self.steps[i - 1].feature_ranges())
            else:
                s.fit(x)
            x = s.transform(x)
        return self

    def transform(self, events: np.ndarray) -> np.ndarray:
        steps = list(self.steps)
        x = events
        if len(steps) >= 2 and isinstance(steps[0], HardwareQuantizer) and isinstance(steps[1], IntegerScaler):
            x = steps[1].transform_events(steps[0], events)  # the fused compiled pass
            steps = steps[2:]
        for s in steps:
            x = s.transform(x)
        return x

    def to_json(self) -> dict[str, Any]:
        return {"kind": "pipeline", "steps": [s.to_json() for s in self.steps]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Pipeline":
        return cls([preprocessing_from_json(s) for s in d["steps"]])


_KINDS = {c.kind: c for c in (HardwareQuantizer, IntegerScaler, Standardizer)}


def preprocessing_from_json(d: dict[str, Any]):
    """Rebuild a preprocessing object (or Pipeline) from its ``to_json`` dict."""
    kind = d.get("kind")
    if kind == "pipeline":
        return Pipeline.from_json(d)
    if kind not in _KINDS:
        raise ConfigError(f"preprocessing kind {kind!r} unknown; expected one of pipeline, {', '.join(_KINDS)}")
    return _KINDS[kind].from_json(d)
