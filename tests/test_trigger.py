"""Trigger emulation: threshold ↔ rate, pure rate arithmetic, catalog, Dask equals local."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from trigger_ml.data import adc2021
from trigger_ml.trigger import menu as T


def test_threshold_rate_round_trip():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 5000, 1_000_000)
    for khz in (1.0, 5.0, 20.0, 400.0):
        thr = T.calibrate_threshold(raw, 2.0**-4, khz, 40e6)
        assert thr.rate_khz <= khz + 1e-9
        # one LSB lower would exceed the target: the threshold is the tightest representable one
        assert (raw > thr.raw - 1).sum() / len(raw) * 40e6 / 1e3 > khz
        assert thr.value == thr.raw * 2.0**-4
        assert T.fires(raw, thr).sum() == thr.n_pass
        lo, hi = thr.rate_interval_khz()
        assert lo <= thr.rate_khz <= hi
    # a filled-bunch rate changes the FPR target
    a = T.calibrate_threshold(raw, 1.0, 10.0, 40e6)
    b = T.calibrate_threshold(raw, 1.0, 10.0, 28.6e6)
    assert b.raw <= a.raw and b.n_pass >= a.n_pass


def test_threshold_with_ties_never_exceeds_rate():
    raw = np.array([0] * 90 + [7] * 10)  # 10 % at the same score
    thr = T.calibrate_threshold(raw, 1.0, 0.05 * 40e3, 40e6)  # 5 % target
    assert thr.raw == 7 and thr.n_pass == 0  # firing on the tie would be 10 % > 5 %


def _event(mu=(), eg=(), jets=(), met=0.0):
    ev = np.zeros((19, 4), np.float32)
    ev[0] = [met, 0, 0, 1]
    for i, pt in enumerate(eg):
        ev[1 + i] = [pt, 0.1, 0, 2]
    for i, pt in enumerate(mu):
        ev[5 + i] = [pt, 0.1, 0, 3]
    for i, (pt, eta) in enumerate(jets):
        ev[9 + i] = [pt, eta, 0, 4]
    return ev


def test_reference_seeds_and_pure_rate_hand_made():
    events = np.stack([
        _event(mu=(25,)),                     # SingleMu22
        _event(eg=(31,)),                     # SingleEG30
        _event(mu=(16, 8)),                   # DoubleMu15_7 only
        _event(mu=(16, 6)),                   # nothing (second muon too soft)
        _event(jets=[(200, 0.5), (170, 1.0)]),  # HT 370 > 360
        _event(jets=[(200, 0.5), (170, 3.0)]),  # forward jet not in HT
        _event(met=95),                        # MET90
        _event(mu=(20,), eg=(29,)),            # nothing
    ])
    bits = T.reference_bits(events)
    expected = np.array([
        [1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0],
        [0, 0, 0, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0],
    ], bool)
    assert np.array_equal(bits, expected)
    # AD scores: events 0, 3, 5 are above threshold 10 -> rate 3/8, pure (no seed) 2/8
    scores = np.array([50, 1, 2, 40, 3, 30, 4, 5])
    bkg = T.SampleScores("bkg", scores, bits)
    sig = T.SampleScores("sig", scores, bits)
    table = T.menu_table(bkg, [sig], 1.0, {"wp": 3 / 8 * 40e3 * 1.0001}, 40e6)
    row = table["working_points"]["wp"]
    assert row["threshold"]["raw"] == 5 and row["threshold"]["n_pass"] == 3
    assert row["pure_rate_khz"] == pytest.approx(2 / 8 * 40e3)
    assert row["signals"]["sig"]["efficiency"] == pytest.approx(3 / 8)
    assert row["signals"]["sig"]["unique_efficiency"] == pytest.approx(2 / 8)
    assert table["reference_menu_rate_khz"] == pytest.approx(5 / 8 * 40e3)


def met_score(ev):
    """A stand-in firmware score for the streaming tests: MET in 0.5 GeV hardware units."""
    return np.floor(ev[:, 0, 0] / 0.5).astype(np.int64)


@pytest.fixture(scope="module")
def two_files(tmp_path_factory):
    from trigger_ml.data.synth import generate_file

    d = tmp_path_factory.mktemp("trig")
    return [generate_file(d / "a.h5", 7000, "background", 1), generate_file(d / "b.h5", 5000, "background", 2)]


def test_streaming_equals_in_memory_and_catalog(two_files, tmp_path):
    s, bits = T.score_files(two_files, met_score, chunk_size=1500)  # chunks smaller than the files
    allev = np.concatenate([adc2021.read_events(f) for f in two_files])
    assert np.array_equal(s, met_score(allev))
    assert np.array_equal(bits, T.reference_bits(allev))
    thr = {"a": T.calibrate_threshold(s, 0.5, 400.0), "b": T.calibrate_threshold(s, 0.5, 100.0)}
    n = T.write_catalog(tmp_path / "cat.h5", two_files, s, 0.5, thr, chunk_size=1500)
    expect = (s > thr["a"].raw) | (s > thr["b"].raw)
    assert n == expect.sum() > 0
    cat = adc2021.read_events(tmp_path / "cat.h5")
    assert np.array_equal(cat, allev[expect])
    src_f = adc2021.read_extra(tmp_path / "cat.h5", "source_file")
    src_e = adc2021.read_extra(tmp_path / "cat.h5", "source_event")
    glob = np.where(src_f == 0, src_e, src_e + 7000)
    assert np.array_equal(glob, np.flatnonzero(expect))
    assert np.array_equal(adc2021.read_extra(tmp_path / "cat.h5", "score_raw"), s[expect])


def test_dask_equals_local(two_files):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    local = T.score_files(two_files, met_score, chunk_size=2000)
    dask = T.score_files(two_files, met_score, chunk_size=2000, scheduler="local")
    assert np.array_equal(local[0], dask[0]) and np.array_equal(local[1], dask[1])


def test_wrong_scheduler_address_fails_fast_with_one_line_error(two_files):
    """An unreachable scheduler is a TriggerMLError naming the address and the fix, within ~10 s."""
    import time

    from trigger_ml.core.cluster import dask_client
    from trigger_ml.core.errors import TriggerMLError

    t0 = time.perf_counter()
    with pytest.raises(TriggerMLError) as err:
        with dask_client("tcp://127.0.0.1:1"):
            pass
    assert time.perf_counter() - t0 < 15
    msg = str(err.value)
    assert "tcp://127.0.0.1:1" in msg and "dask scheduler" in msg and "--scheduler" in msg and "\n" not in msg
    # not an address at all: refused at once, also through the trigger's Dask path
    with pytest.raises(TriggerMLError, match="not a Dask scheduler address"):
        T.score_files(two_files, met_score, chunk_size=2000, scheduler="nonsense://x")


def test_compiled_reference_seeds_equal_seed_fired_at_the_thresholds():
    """The one-pass compiled seeds give exactly Seed.fired (the specification), for float32 and
    float64 events, with pT and |eta| values sitting exactly on the cuts and non-float32 cuts."""
    from trigger_ml.data.synth import generate
    from trigger_ml.trigger import menu as T

    ev = generate(20_000, "background", seed=5)[0]
    seeds = T.DEFAULT_SEEDS + (T.Seed("SingleJet180p1", "single", "jet", (180.1,), 2.4),
                               T.Seed("HT360p1", "ht", pt_min=(360.1,)),
                               T.Seed("DoubleEG", "double", "egamma", (22.3, 11.7)),
                               T.Seed("TripleJet", "double", "jet", (50.0, 40.0, 30.0), 2.5),
                               T.Seed("SingleMuNoEta", "single", "muon", (22.0,)))
    rng = np.random.default_rng(1)
    for thr in (22.0, 30.0, 15.0, 7.0, 90.0, 180.1, 22.3, 11.7, 50.0, 40.0, 30.0):
        ev[..., 0][(rng.random(ev.shape[:2]) < 0.03) & (ev[..., 3] > 0)] = np.float32(thr)
    ev[..., 1][(rng.random(ev.shape[:2]) < 0.05) & (ev[..., 3] > 0)] = np.float32(2.4)
    for e in (ev, ev.astype(np.float64)):
        got = T.reference_bits(e, seeds)
        want = np.stack([s.fired(e) for s in seeds], axis=1)
        assert got.dtype == bool and got.shape == want.shape
        assert int((got != want).sum()) == 0
        assert want[:, :4].any(0).all()  # the seeds do fire on this sample (the comparison is not vacuous)
