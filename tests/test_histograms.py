"""Exact, mergeable trigger statistics: the histogram path gives exactly the per-event results."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from trigger_ml.core.errors import ConfigError  # noqa: E402
from trigger_ml.core.fixed import FixedType  # noqa: E402
from trigger_ml.core.metrics import clopper_pearson  # noqa: E402
from trigger_ml.core.threshold import calibrate_threshold, fires  # noqa: E402
from trigger_ml.trigger import menu as T  # noqa: E402
from trigger_ml.trigger.histograms import HistogramAccumulator, ScoreHistogram, calibrate_threshold_hist  # noqa: E402


def per_event_menu_table(background, signals, score, menu_khz, bx_rate_hz):
    """The menu computed from per-event arrays (what `menu_table` did before the histograms): the oracle."""
    n_b = len(background.score_raw)
    ref_any_b = background.ref_bits.any(1)
    rows = {}
    ref_rate = ref_any_b.sum() / n_b * bx_rate_hz / 1e3
    for wp, khz in menu_khz.items():
        try:
            thr = calibrate_threshold(background.score_raw, score, khz, bx_rate_hz)
        except ConfigError as err:
            rows[wp] = {"threshold": None, "target_rate_khz": khz, "error": str(err), "signals": {}}
            continue
        bit_b = fires(background.score_raw, thr)
        pure = int((bit_b & ~ref_any_b).sum())
        plo, phi = clopper_pearson(pure, n_b)
        row = {"threshold": thr.to_json(), "pure_rate_khz": pure / n_b * bx_rate_hz / 1e3,
               "pure_rate_interval_khz_68": [plo * bx_rate_hz / 1e3, phi * bx_rate_hz / 1e3], "signals": {}}
        for s in signals:
            bit = fires(s.score_raw, thr)
            n = len(bit)
            k, ku = int(bit.sum()), int((bit & ~s.ref_bits.any(1)).sum())
            row["signals"][s.name] = {
                "efficiency": k / n, "efficiency_interval_68": list(clopper_pearson(k, n)),
                "unique_efficiency": ku / n, "unique_efficiency_interval_68": list(clopper_pearson(ku, n)),
                "reference_efficiency": float(s.ref_bits.any(1).mean()), "n_events": n}
        rows[wp] = row
    return {"bx_rate_hz": bx_rate_hz, "n_background": n_b, "reference_menu_rate_khz": ref_rate, "working_points": rows}


def _sample(rng, name, n, hi, n_seeds=5, p_seed=0.1):
    return T.SampleScores(name, rng.integers(0, hi, n), rng.random((n, n_seeds)) < p_seed)


@pytest.mark.parametrize("seed", range(6))
def test_threshold_from_histogram_is_calibrate_threshold(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30_000))
    hi = int(rng.choice([3, 50, 5000, 1 << 20]))
    raw = rng.integers(-hi, hi, n) if seed % 2 else rng.integers(0, hi, n)
    t = FixedType(24, 10, True)
    h = ScoreHistogram.from_scores("b", raw, n_seeds=0)
    for khz in (1.0, 7.5, 40.0, 400.0, 4000.0, 39_999.0, 40_000.0, -1.0):
        try:
            a = calibrate_threshold(raw, t, khz)
        except ConfigError as e:
            with pytest.raises(ConfigError) as e2:
                calibrate_threshold_hist(h, t, khz)
            assert str(e2.value) == str(e)
            continue
        b = calibrate_threshold_hist(h, t, khz)
        assert a == b and a.to_json() == b.to_json()


def test_merge_any_order_and_accumulator_equal_whole():
    rng = np.random.default_rng(1)
    s, bits = rng.integers(-(1 << 40), 1 << 40, 50_000) // 12345, rng.random((50_000, 5)) < 0.3
    whole = ScoreHistogram.from_scores("x", s, bits)
    parts = [ScoreHistogram.from_scores("x", s[a:a + 7000], bits[a:a + 7000]) for a in range(0, 50_000, 7000)]
    acc = HistogramAccumulator("x", 5)
    for i in rng.permutation(len(parts)):
        acc.add(parts[i])
    for h in (ScoreHistogram.merge(parts[::-1]), acc.result()):
        assert np.array_equal(h.score_raw, whole.score_raw) and np.array_equal(h.pattern, whole.pattern)
        assert np.array_equal(h.count, whole.count) and h.n_events == 50_000
    assert np.array_equal(whole.expand(), np.sort(s))
    assert whole.seed_counts() == bits.sum(0).tolist()
    # scores spanning more than 62 bits with the seed bits: the lexicographic path, same counts
    wide = np.array([-(1 << 62), 1 << 62, 5, 5, -(1 << 62)], np.int64)
    wb = np.array([[1, 0], [0, 0], [1, 1], [1, 1], [1, 0]], bool)
    hw = ScoreHistogram.from_scores("w", wide, wb)
    assert hw.score_raw.tolist() == [-(1 << 62), 5, 1 << 62] and hw.count.tolist() == [2, 2, 1]
    assert hw.pattern.tolist() == [1, 3, 0]


@pytest.mark.parametrize("seed", range(4))
def test_menu_from_histograms_equals_per_event_menu_exactly(seed):
    rng = np.random.default_rng(seed)
    t = FixedType(20, 12, False)
    bkg = _sample(rng, "background", int(rng.integers(2000, 60_000)), int(rng.choice([30, 4000, 1 << 19])))
    sigs = [_sample(rng, f"sig{i}", int(rng.integers(1, 5000)), 1 << 19, p_seed=0.5) for i in range(2)]
    menu = {"VLoose": 20.0, "Loose": 10.0, "Tight": 2.0, "x": 0.3, "big": 3000.0}
    old = per_event_menu_table(bkg, sigs, t, menu, 40e6)
    assert T.menu_table(bkg, sigs, t, menu, 40e6) == old
    hb = ScoreHistogram.merge([ScoreHistogram.from_scores("background", bkg.score_raw[a:a + 999], bkg.ref_bits[a:a + 999])
                               for a in range(0, len(bkg.score_raw), 999)])
    assert T.menu_table(hb, [T.as_histogram(s) for s in sigs], t, menu, 40e6) == old


def met_score(ev):
    return np.floor(ev[:, 0, 0] / 0.5).astype(np.int64)


def test_streamed_histograms_equal_per_event_scores(tmp_path):
    """histogram_samples (chunked, in-process) counts exactly what score_files returns per event."""
    from trigger_ml.data.synth import generate_file

    a = generate_file(tmp_path / "a.h5", 6000, "background", 3)
    b = generate_file(tmp_path / "b.h5", 3000, "Ato4l", 4)
    hs = T.histogram_samples({"bkg": [a, (str(a), 100, 2500)], "sig": [b]}, met_score, chunk_size=1100)
    s, bits = T.score_files([a, (str(a), 100, 2500)], met_score, chunk_size=5000)
    ref = ScoreHistogram.from_scores("bkg", s, bits)
    assert np.array_equal(hs["bkg"].score_raw, ref.score_raw) and np.array_equal(hs["bkg"].count, ref.count)
    assert np.array_equal(hs["bkg"].pattern, ref.pattern) and hs["sig"].n_events == 3000


def test_emulate_equals_per_event_path(tmp_path, bkg_file, sig_files):
    """`emulate` (histograms streamed from chunks) == the per-event path on the same inputs, exactly;
    the catalog (re-scored chunk by chunk) holds exactly the events above the loosest threshold."""
    from _fwdir import make_firmware_dir

    from trigger_ml.data import adc2021
    from trigger_ml.scoring import FirmwareScorer
    from trigger_ml.trigger.run import emulate

    fw = make_firmware_dir(tmp_path / "fw", bkg_file)
    menu = {"A": 4000.0, "B": 400.0, "C": 1.0}
    sig = sig_files["Ato4l"]
    res = emulate(fw, [bkg_file], [sig], menu_khz=menu, chunk_size=3000, catalog=tmp_path / "cat.h5")
    sc = FirmwareScorer(fw)
    s_b, r_b = T.score_files([bkg_file], sc, chunk_size=50_000)
    s_s, r_s = T.score_files([sig], sc, chunk_size=50_000)
    old = per_event_menu_table(T.SampleScores("background", s_b, r_b), [T.SampleScores(Path(sig).stem, s_s, r_s)],
                               sc.score_type, menu, 40e6)
    assert {k: res[k] for k in old} == old
    assert res["events"] == len(s_b) + len(s_s)
    loose = res["working_points"]["A"]["threshold"]["raw"]
    allsc = np.concatenate([s_b, s_s])
    assert res["catalog"]["events"] == int((allsc > loose).sum()) > 0
    assert np.array_equal(adc2021.read_extra(tmp_path / "cat.h5", "score_raw"), allsc[allsc > loose])
