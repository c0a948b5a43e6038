"""The one threshold module: value → grid, rate → threshold, range checks, score choice."""

from __future__ import annotations

import numpy as np
import pytest

from trigger_ml.core.errors import ConfigError
from trigger_ml.core.fixed import FixedType
from trigger_ml.core.threshold import Threshold, calibrate_threshold, fires, place_threshold, resolve_score


def test_place_threshold_rule_exhaustive():
    t = FixedType(8, 3, True)  # grid 1/32 on [-4, 4)
    grid = np.arange(-128, 128)
    rng = np.random.default_rng(0)
    for v in [*rng.uniform(-3.99, 3.9, 300), 0.0, 1.0, -4.0, 3.90625, 1 / 64, -1 / 64]:
        q = place_threshold(t, float(v))
        assert q.value == q.raw / 32.0 and q.requested == float(v)
        assert np.array_equal(grid / 32.0 > q.value, grid / 32.0 > v)  # same decision for every score
        assert np.array_equal(fires(grid, q), grid / 32.0 > v)
    for bad in (-4.01, 3.96875, 10.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ConfigError):
            place_threshold(t, bad)
    with pytest.raises(ConfigError, match="never fire"):
        place_threshold(t, raw=127)
    with pytest.raises(ConfigError, match="every event"):
        place_threshold(t, raw=-129)
    assert place_threshold(t, raw=-128).raw == -128


def test_place_threshold_negative_frac_and_unsigned():
    t = FixedType(6, 8, False)  # step 4, [0, 252]
    assert place_threshold(t, 9.0).raw == 2 and place_threshold(t, 8.0).raw == 2 and place_threshold(t, 7.9).raw == 1
    with pytest.raises(ConfigError, match="every event"):
        place_threshold(t, -0.5)


def test_calibration_rate_round_trip_and_refusals():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 5000, 100_000)
    t = FixedType(16, 12, False)
    for khz in (1.0, 20.0, 400.0):
        thr = calibrate_threshold(raw, t, khz)
        assert thr.rate_khz <= khz and (raw > thr.raw - 1).mean() * 40e3 > khz
        assert thr.score_type == t.to_hls() and thr.n_total == len(raw) and thr.requested is None
        assert Threshold.from_json(thr.to_json()) == thr
    with pytest.raises(ConfigError, match="needs at least 4,000,000 background events"):
        calibrate_threshold(raw, t, 0.01)  # FPR 2.5e-7 with 1e5 events: not one event above threshold
    for bad in (0.0, -5.0, float("nan"), 40_000.0):
        with pytest.raises(ConfigError):
            calibrate_threshold(raw, t, bad)
    # saturated scores at the type maximum: the trigger could never fire there
    with pytest.raises(ConfigError, match="never fire"):
        calibrate_threshold(np.full(1000, t.raw_max), t, 400.0)


def test_resolve_score():
    assert resolve_score([("out", 1)]) == ("out", 0, 0)
    assert resolve_score([("a", 3), ("b", 2)], "b[1]") == ("b", 1, 4)
    assert resolve_score([("a", 3), ("b", 2)], "b") == ("b", 0, 3)
    with pytest.raises(ConfigError, match="5 output values"):
        resolve_score([("a", 3), ("b", 2)])
    with pytest.raises(ConfigError, match="not a model output"):
        resolve_score([("a", 1)], "nope")
    with pytest.raises(ConfigError, match="out of range"):
        resolve_score([("a", 3)], "a[3]")
