"""The trigger threshold: the one home for the rules that turn a threshold or a rate into the
integer the firmware compares with.

The firmware's trigger bit is ``score_raw > threshold_raw`` on the raw integers of the score's
fixed-point type ``T`` (``value = raw * 2**-frac``). Three ways to get ``threshold_raw``:

* from a **value** ``t`` (:func:`place_threshold`): rounded *down* onto the score grid,
  ``raw = floor(t * 2**frac)``. For every representable score s, ``s > raw*lsb  <=>  s > t``
  (if s > raw*lsb then s >= (raw+1)*lsb > t; the converse holds because raw*lsb <= t), so the
  decision is the one the user asked for. (Rounding up would need ``>=``.)
* from a **target rate** (:func:`calibrate_threshold`): the smallest raw threshold whose
  background rate ``#(score_raw > raw) / n × bx_rate`` does not exceed the target. The raw value is
  a score the background actually produced (or one below the smallest), so ties are never split
  and the rate is never exceeded.
* from a **raw integer** (:func:`place_threshold` with ``raw=``), as stored in the IR.

Range rules, the same for every caller (convert, emulate, the IR, the hls4ml trigger wrapper):
a threshold below the score type's smallest value would fire on every event, one at or above its
largest value never: both are refused with a :class:`~trigger_ml.core.errors.ConfigError`. A rate
target must be positive and below the bunch-crossing rate, and the background sample must hold
at least one event above the threshold at that rate (``n × FPR >= 1``): otherwise the
calibration is refused and the message says how many background events it needs.

The score output is chosen by :func:`resolve_score` from the output names and sizes (the only
output if it has one value; otherwise ``name`` or ``name[i]``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from trigger_ml.core.constants import BX_RATE_HZ
from trigger_ml.core.errors import ConfigError
from trigger_ml.core.fixed import FixedType

__all__ = ["RULE", "Threshold", "calibrate_threshold", "fires", "place_threshold", "resolve_score"]

RULE = ("trigger = score > value, value = floor(requested * 2^frac_bits) * 2^-frac_bits "
        "(same decision as score > requested for every representable score)")


@dataclass(frozen=True)
class Threshold:
    """A firmware threshold: the trigger fires when ``score_raw > raw``.

    ``frac`` is the score type's number of fractional bits (``value = raw * 2**-frac``);
    ``requested`` the value asked for (None when calibrated from a rate); ``target_rate_khz``,
    ``n_pass`` / ``n_total`` and ``bx_rate_hz`` describe a rate calibration (``n_pass`` background
    events of ``n_total`` fire)."""

    raw: int
    frac: int
    score_type: str | None = None
    requested: float | None = None
    target_rate_khz: float | None = None
    n_pass: int | None = None
    n_total: int | None = None
    bx_rate_hz: float = BX_RATE_HZ

    @property
    def value(self) -> float:
        return math.ldexp(self.raw, -self.frac)

    @property
    def lsb(self) -> float:
        return math.ldexp(1.0, -self.frac)

    @property
    def rate_khz(self) -> float | None:
        if not self.n_total:
            return None
        return self.n_pass / self.n_total * self.bx_rate_hz / 1e3

    def rate_interval_khz(self, cl: float = 0.683) -> tuple[float, float] | None:
        if not self.n_total:
            return None
        from trigger_ml.core.metrics import clopper_pearson

        lo, hi = clopper_pearson(self.n_pass, self.n_total, cl)
        return lo * self.bx_rate_hz / 1e3, hi * self.bx_rate_hz / 1e3

    def to_json(self) -> dict[str, Any]:
        d = asdict(self) | {"value": self.value, "frac_bits": self.frac, "rule": RULE}
        if self.n_total:
            d |= {"rate_khz": self.rate_khz, "rate_interval_khz_68": list(self.rate_interval_khz())}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Threshold:
        """Inverse of :meth:`to_json` (extra keys such as the score location are ignored)."""
        frac = d.get("frac", d.get("frac_bits"))
        if frac is None or "raw" not in d:
            raise ConfigError(f"threshold record {d!r} lacks 'raw' or 'frac'")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d} | {"raw": int(d["raw"]), "frac": int(frac)})


def _frac_of(score: FixedType | float | int) -> tuple[int, FixedType | None]:
    if isinstance(score, FixedType):
        return score.frac, score
    lsb = float(score)
    frac = -math.log2(lsb) if lsb > 0 else math.nan
    if not (math.isfinite(frac) and frac == int(frac)):
        raise ConfigError(f"score LSB {score!r} is not a power of two")
    return int(frac), None


def _check_range(raw: int, t: FixedType | None, what: str) -> None:
    if t is None:
        return
    lo, hi = t.raw_min, t.raw_max
    if raw < lo:
        raise ConfigError(f"threshold {what} is below the smallest score {math.ldexp(lo, -t.frac)!r} of type "
                          f"{t.to_hls()}: the trigger would fire on every event; choose a threshold inside the score range")
    if raw >= hi:
        raise ConfigError(f"threshold {what} is at or above the largest score {math.ldexp(hi, -t.frac)!r} of type "
                          f"{t.to_hls()}: the trigger would never fire; choose a threshold inside the score range")


def place_threshold(score_type: FixedType, value: float | None = None, *, raw: int | None = None) -> Threshold:
    """The threshold ``value`` (or a ``raw`` integer) on the grid of ``score_type``, range-checked.

    A value is rounded down onto the grid (see the module docstring: the decision ``score > value``
    is unchanged for every representable score)."""
    if (value is None) == (raw is None):
        raise ConfigError("give a threshold value or a raw threshold (not both)")
    if raw is not None:
        if isinstance(raw, bool) or not isinstance(raw, (int, np.integer)):
            raise ConfigError(f"a raw threshold must be an integer, got {raw!r}")
        r = int(raw)
        _check_range(r, score_type, f"raw {r}")
        return Threshold(r, score_type.frac, score_type.to_hls())
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(value)):
        raise ConfigError(f"threshold must be a finite number, got {value!r}")
    # exact: a double times a power of two, floored (no rounding of the product)
    r = math.floor(math.ldexp(float(value), score_type.frac)) if score_type.frac >= 0 else \
        math.floor(float(value) / math.ldexp(1.0, -score_type.frac))
    _check_range(r, score_type, repr(float(value)))
    return Threshold(r, score_type.frac, score_type.to_hls(), requested=float(value))


def target_fpr(target_rate_khz: float, bx_rate_hz: float = BX_RATE_HZ) -> float:
    """The background fraction (FPR) a target rate in kHz means at ``bx_rate_hz``; a one-line
    ConfigError unless the rate is a positive number of kHz below the bunch-crossing rate."""
    if not (isinstance(target_rate_khz, (int, float, np.floating, np.integer)) and math.isfinite(target_rate_khz)
            and target_rate_khz > 0):
        raise ConfigError(f"target rate must be a positive number of kHz, got {target_rate_khz!r}")
    fpr = target_rate_khz * 1e3 / bx_rate_hz
    if fpr >= 1:
        raise ConfigError(f"target rate {target_rate_khz:g} kHz is not below the bunch-crossing rate "
                          f"{bx_rate_hz / 1e6:g} MHz; choose a smaller rate")
    return fpr


def calibrate_threshold(
    bkg_raw: np.ndarray, score: FixedType | float, target_rate_khz: float, bx_rate_hz: float = BX_RATE_HZ,
) -> Threshold:
    """Smallest raw threshold whose background rate (``score_raw > thr``) does not exceed the target.

    ``bkg_raw`` are firmware score integers of the background; ``score`` the score's fixed-point
    type (range-checked) or its LSB. Refused when the target is not a rate below the bunch-crossing
    rate or when the sample is too small to hold one event above the threshold."""
    frac, t = _frac_of(score)
    fpr = target_fpr(target_rate_khz, bx_rate_hz)
    s = np.sort(np.asarray(bkg_raw, dtype=np.int64).ravel())
    n = len(s)
    allowed = int(np.floor(fpr * n))
    if allowed < 1:
        need = math.ceil(1 / fpr)
        raise ConfigError(f"rate {target_rate_khz:g} kHz (FPR {fpr:.3g}) needs at least {need:,} background events "
                          f"to calibrate, got {n:,}; give more background events or a threshold value")
    thr = int(s[n - allowed - 1])  # events strictly above it are at most `allowed`
    _check_range(thr, t, f"for {target_rate_khz:g} kHz (raw {thr})")
    n_pass = int(n - np.searchsorted(s, thr, side="right"))
    return Threshold(thr, frac, t.to_hls() if t is not None else None, None, float(target_rate_khz), n_pass, n,
                     float(bx_rate_hz))


def fires(score_raw: np.ndarray, thr: Threshold | int) -> np.ndarray:
    """The trigger bit, exactly as the firmware computes it: score > threshold (integers)."""
    t = thr.raw if isinstance(thr, Threshold) else int(thr)
    return np.asarray(score_raw, dtype=np.int64) > t


def resolve_score(outputs: Sequence[tuple[str, int]], score_output: str | None = None) -> tuple[str, int, int]:
    """(output name, index inside it, flat index across all outputs) of the score.

    ``outputs`` are (name, number of values) in output order. None picks the only output value
    (refused when there are several); ``"name"`` the first value of an output, ``"name[i]"`` value i.
    """
    offsets, off = {}, 0
    for name, size in outputs:
        offsets[name] = off
        off += int(size)
    listing = ", ".join(f"{n}[{int(s)}]" for n, s in outputs)
    if score_output is None:
        if off != 1:
            raise ConfigError(f"the model has {off} output values ({listing}); choose the score as 'name' or 'name[i]'")
        return outputs[0][0], 0, 0
    m = re.fullmatch(r"\s*([^\[\]\s]+)\s*(?:\[\s*(\d+)\s*\])?\s*", str(score_output))
    if not m or m.group(1) not in offsets:
        raise ConfigError(f"score output {score_output!r} is not a model output; outputs are {listing}")
    name, idx = m.group(1), int(m.group(2) or 0)
    size = dict(outputs)[name]
    if idx >= int(size):
        raise ConfigError(f"score output {score_output!r}: index {idx} out of range for {name}[{int(size)}]")
    return name, idx, offsets[name] + idx
