"""ADC2021 I/O, synthetic generator and preprocessing."""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest

from trigger_ml.core.errors import ArtifactError, DataFormatError
from trigger_ml.data import adc2021, synth
from trigger_ml.data import preprocess as P


def _sha(path):
    return hashlib.sha256(adc2021.read_events(path).tobytes()).hexdigest()


def test_roundtrip_write_read(tmp_path):
    ev, codes = synth.generate(3000, "background", seed=1)
    p = adc2021.write_events(tmp_path / "a.h5", ev, extra={"process": codes})
    back = adc2021.read_events(p)
    assert back.dtype == np.float32 and np.array_equal(back, ev)
    assert np.array_equal(adc2021.read_extra(p, "process"), codes)
    with pytest.raises(ArtifactError, match="exists"):
        adc2021.write_events(p, ev)
    adc2021.write_events(p, ev[:10], force=True)
    assert adc2021.count_events(p) == 10


def test_chunked_equals_full(bkg_file):
    full = adc2021.read_events(bkg_file)
    chunks = list(adc2021.iter_chunks(bkg_file, chunk_size=3001))
    assert len(chunks) == -(-len(full) // 3001)
    assert np.array_equal(np.concatenate(chunks), full)
    part = adc2021.read_events(bkg_file, start=1234, stop=5678)
    assert np.array_equal(part, full[1234:5678])


def test_features_drop_type(bkg_file):
    ev = adc2021.read_events(bkg_file, stop=5)
    f = adc2021.to_features(ev)
    assert f.shape == (5, 57)
    assert np.array_equal(f[:, 3:6], ev[:, 1, :3])


def test_generator_deterministic(tmp_path):
    a = synth.generate_file(tmp_path / "a.h5", 60_000, "background", seed=5)
    b = synth.generate_file(tmp_path / "b.h5", 60_000, "background", seed=5)
    c = synth.generate_file(tmp_path / "c.h5", 60_000, "background", seed=6)
    assert _sha(a) == _sha(b)
    assert _sha(a) != _sha(c)
    ev, _ = synth.generate(60_000, "background", seed=5)  # same bytes via the in-memory API
    assert hashlib.sha256(ev.tobytes()).hexdigest() == _sha(a)


def test_generator_layout_and_filter():
    for sample in ("background",) + synth.SIGNALS:
        ev, codes = synth.generate(2000, sample, seed=2)
        assert ev.shape == (2000, 19, 4)
        adc2021.validate_chunk(ev, adc2021.Path("mem"), 0)
        assert ((ev[:, 1:9, 0] > 23).any(1)).all(), sample  # lepton filter
        pt = ev[:, :, 0]
        for sl in adc2021.OBJECT_SLICES.values():  # pT-ordered within each type
            assert (np.diff(pt[:, sl], axis=1) <= 0).all()
        eta = np.abs(ev[:, :, 1])
        present = ev[:, :, 0] > 0
        # ADC2021 acceptances: e/gamma |eta| < 3.0, muons < 2.1, jets < 4.0
        assert eta[:, 1:5][present[:, 1:5]].max() < 3.0 and eta[:, 5:9][present[:, 5:9]].max() < 2.1
        assert eta[:, 9:][present[:, 9:]].max() < 4.0, sample


def test_background_fractions():
    _, codes = synth.generate(100_000, "background", seed=3)
    frac = {k: (codes == v).mean() for k, v in synth.PROCESS_CODES.items() if v < 10}
    for k, f in synth.BACKGROUND_FRACTIONS.items():
        assert abs(frac[k] - f) < 4 * np.sqrt(f * (1 - f) / 1e5) + 1e-4, (k, frac[k], f)


def _m_inv(objs):
    pt, eta, phi = objs[..., 0].astype(float), objs[..., 1], objs[..., 2]
    p = np.stack([pt * np.cosh(eta), pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], -1).sum(1)
    return np.sqrt(np.maximum(p[:, 0] ** 2 - (p[:, 1:] ** 2).sum(1), 0))


def test_a_to_4l_kinematics():
    ev, _ = synth.generate(20_000, "Ato4l", seed=4)
    nlep = (ev[:, 1:9, 0] > 0).sum(1)
    assert (nlep >= 3).mean() > 0.7
    m = _m_inv(ev[nlep == 4][:, 1:9])
    hist, edges = np.histogram(m, bins=20, range=(0, 100))
    peak = edges[np.argmax(hist)]
    assert 40 <= peak <= 55, peak
    assert abs(np.median(m) - 50) < 5


def test_z_peak_in_background():
    ev, codes = synth.generate(50_000, "background", seed=8)
    z = ev[codes == synth.PROCESS_CODES["Z_ll"]]
    mu2 = z[(z[:, 5:9, 0] > 0).sum(1) == 2][:, 5:7]
    m = _m_inv(mu2)
    assert 80 < np.median(m) < 100


def test_signals_differ_from_background():
    bkg, _ = synth.generate(20_000, "background", seed=9)
    met_b = bkg[:, 0, 0].mean()
    hp, _ = synth.generate(5_000, "hplus_taunu", seed=9)
    lq, _ = synth.generate(5_000, "LQ_btau", seed=9)
    assert hp[:, 0, 0].mean() > 1.3 * met_b  # neutrinos feed MET
    assert (lq[:, 9:, 0] > 0).sum(1).mean() > (bkg[:, 9:, 0] > 0).sum(1).mean() + 1  # b jets


def test_background_matches_real_data_summary(tmp_path):
    """The generated background reproduces the shipped real ADC2021 per-object summary within 10 %
    (the same check as ``trigger-ml data compare FILE.h5``; the README shows it for 1e6 events)."""
    from trigger_ml.data.compare import compare_to_reference

    p = synth.generate_file(tmp_path / "b.h5", 300_000, "background", seed=0)
    res = compare_to_reference(p)
    bad = [(r["object"], r["quantity"], r["statistic"], r["sample"], r["reference"]) for r in res["rows"] if not r["within"]]
    assert len(res["rows"]) == 11 and not bad, bad


def test_tau_decay_branching_and_visible_fractions():
    n = 200_000
    rng = np.random.default_rng(0)
    ev = synth._Event(n)
    tau = synth._p4_from(np.full(n, 100.0), np.zeros(n), np.zeros(n), synth.M_TAU)
    ev.add_tau(rng, tau)
    jet, e, mu = (ev.objs[k][0][0] / 100.0 for k in ("jet", "egamma", "muon"))
    had, lep = jet > 0, (e > 0) | (mu > 0)
    assert abs(had.mean() - 0.648) < 0.005 and abs((e > 0).mean() - 0.178) < 0.004
    # hadronic: x ~ U(r, 1) per mode (pi, rho, a1) -> <x> = sum f (1 + r) / 2 = 0.643; leptonic V-A: <x> = 0.35
    assert abs(jet[had].mean() - 0.643) < 0.005 and abs(np.r_[e[e > 0], mu[mu > 0]].mean() - 0.35) < 0.005
    assert jet[had].min() >= 0.0063 - 1e-9 and not (had & lep).any()
    nu = np.hypot(*ev.nu.T) / 100.0  # the neutrinos take the rest of the tau momentum
    np.testing.assert_allclose(nu + jet + e + mu, 1.0, atol=1e-6)


def test_met_from_lost_and_unclustered_objects(monkeypatch):
    """MET = -(sum of reconstructed objects) - 0.6 x unclustered (switch off noise and pileup to see it)."""
    monkeypatch.setattr(synth, "MET_NOISE", 0.0)
    monkeypatch.setattr(synth, "PU_JETS", (0.0, 12.0, 7.0))
    n = 2000
    rng = np.random.default_rng(1)
    zero, one = np.zeros(n), np.ones(n)

    def event(other_kind, other_eta):
        ev = synth._Event(n)
        ev.add("egamma", synth._p4_from(40.0 * one, zero, zero, 0.0))  # e: 40 GeV at phi 0, in acceptance
        other = synth._p4_from(40.0 * one, other_eta * one, np.pi * one, 0.0)  # balancing it at phi pi
        ev.add_nu(other) if other_kind == "nu" else ev.add(other_kind, other)
        return synth._detector(rng, ev)[:, 0, 0]

    assert abs(np.median(event("nu", 0.0)) - 40) < 2  # neutrino: full MET
    assert abs(np.median(event("muon", 2.5)) - 40) < 2  # muon outside |eta| < 2.1: lost, full MET
    assert np.median(event("muon", 1.0)) < 8  # reconstructed muon: only its resolution
    assert abs(np.median(event("jet", 4.5)) - 0.4 * 40) < 2  # jet beyond |eta| < 4 but in the calorimeter: unclustered


def test_fake_leptons_and_pileup_eta():
    ev, codes = synth.generate(200_000, "background", seed=13)
    nlep = (ev[:, 1:9, 0] > 0).sum(1)
    assert 1e-5 < (nlep >= 3).mean() < 2e-3  # fake / non-prompt leptons: a small 3-lepton background exists
    w = ev[codes == synth.PROCESS_CODES["W_lnu"]]
    assert 1e-4 < ((w[:, 1:9, 0] > 0).sum(1) >= 2).mean() < 0.02  # W + a fake lepton from a jet
    eta = np.abs(ev[:, 9:, 1][ev[:, 9:, 0] > 0])
    assert 0.05 < (eta > 3.0).mean() < 0.2 and eta.max() < 4.0  # forward jets, within the |eta| < 4 acceptance


# ------------------------------------------------------------------ malformed files
def _write_raw(path, name="Particles", data=None):
    with h5py.File(path, "w") as f:
        f.create_dataset(name, data=data)
    return path


@pytest.fixture
def good():
    ev, _ = synth.generate(500, "background", seed=12)
    return ev


def test_error_wrong_dataset(tmp_path, good):
    p = _write_raw(tmp_path / "x.h5", "Events", good)
    with pytest.raises(DataFormatError, match=r"x\.h5: no dataset 'Particles' \(found: Events\)"):
        adc2021.read_events(p)


@pytest.mark.parametrize("shape", [(10, 19, 3), (10, 20, 4), (10, 76)])
def test_error_shape(tmp_path, shape):
    p = _write_raw(tmp_path / "s.h5", data=np.zeros(shape, np.float32))
    with pytest.raises(DataFormatError, match=r"s\.h5: dataset 'Particles' has shape"):
        adc2021.read_events(p)


def test_error_dtype(tmp_path):
    p = _write_raw(tmp_path / "d.h5", data=np.zeros((4, 19, 4), np.int32))
    with pytest.raises(DataFormatError, match="dtype int32"):
        adc2021.read_events(p)


def test_error_nan_names_event(tmp_path, good):
    bad = good.copy()
    bad[321, 9, 1] = np.nan
    p = _write_raw(tmp_path / "n.h5", data=bad)
    with pytest.raises(DataFormatError, match=r"n\.h5: dataset 'Particles': event 321 object 9 column 1 is not finite"):
        list(adc2021.iter_chunks(p, chunk_size=100))


def test_error_bad_type_code(tmp_path, good):
    bad = good.copy()
    bad[77, 2, 3] = 7
    p = _write_raw(tmp_path / "t.h5", data=bad)
    with pytest.raises(DataFormatError, match=r"event 77 object 2 has type code 7, expected 2"):
        adc2021.read_events(p)


def test_error_truncated(tmp_path, good):
    p = adc2021.write_events(tmp_path / "full.h5", np.concatenate([good] * 40))
    raw = p.read_bytes()
    (tmp_path / "cut.h5").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataFormatError, match=r"cut\.h5: "):
        adc2021.read_events(tmp_path / "cut.h5")


def test_error_not_hdf5(tmp_path):
    (tmp_path / "junk.h5").write_text("hello")
    with pytest.raises(DataFormatError, match=r"junk\.h5: cannot be opened as HDF5"):
        adc2021.count_events(tmp_path / "junk.h5")


def test_failed_write_leaves_nothing(tmp_path, good):
    with pytest.raises(ValueError):
        with adc2021.EventsWriter(tmp_path / "w.h5") as w:
            w.append(good)
            w.append(good[:, :, :3])
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ preprocessing
def test_hardware_quantizer_units(good):
    hq = P.HardwareQuantizer()
    hw = hq.transform(good)
    assert hw.dtype == np.int32 and hw.shape == (500, 57)
    pt = good[:, :, 0]
    assert np.array_equal(hw.reshape(-1, 19, 3)[:, :, 0], np.minimum(np.floor(pt / 0.5), [4095] + [511] * 8 + [2047] * 10))
    # saturation at the field width and phi wrap-around
    ev = np.zeros((1, 19, 4), np.float32)
    ev[0, 0] = [3000.0, 0, 3.1416, 1]
    ev[0, 1] = [400.0, 9.0, -3.1416, 2]
    q = hq.transform(ev).reshape(19, 3)
    assert q[0, 0] == 4095 and q[1, 0] == 511 and q[1, 1] == 127
    assert q[0, 2] == -72 and q[1, 2] == -72  # +pi and -pi are the same angle
    assert (q[2:] == 0).all()  # padding stays 0


def test_integer_scaler_shift_semantics(bkg_file):
    ev = adc2021.read_events(bkg_file, stop=5000)
    hq = P.HardwareQuantizer()
    hw = hq.transform(ev)
    sc = P.IntegerScaler().fit(hw, in_range=hq.feature_ranges())
    x = sc.transform(hw)
    assert np.array_equal(x * 2.0 ** sc.shift, hw - sc.offset)  # exact: (x - offset) / 2**shift
    sc0 = P.IntegerScaler(sc.offset, sc.shift, frac_bits=0)
    assert np.array_equal(sc0.transform(hw), (hw.astype(np.int64) - sc.offset) >> sc.shift)  # integer >>
    t = sc.output_type()
    frac = t["width"] - t["integer"]
    lo, hi = -(2.0 ** (t["integer"] - 1)), 2.0 ** (t["integer"] - 1) - 2.0**-frac
    assert x.min() >= lo and x.max() <= hi


def test_preprocessing_json_roundtrip_exact(bkg_file):
    ev = adc2021.read_events(bkg_file, stop=5000)
    pipe = P.Pipeline([P.HardwareQuantizer(), P.IntegerScaler()]).fit(ev)
    std = P.Standardizer().fit(adc2021.to_features(ev))
    for obj, x in ((pipe, ev), (std, adc2021.to_features(ev))):
        d = json.loads(json.dumps(obj.to_json()))
        back = P.preprocessing_from_json(d)
        assert back.to_json() == obj.to_json()
        assert np.array_equal(back.transform(x), obj.transform(x))


def test_preprocessing_bad_json():
    with pytest.raises(P.ConfigError, match="unknown"):
        P.preprocessing_from_json({"kind": "magic"})


def test_compiled_chunk_check_agrees_with_the_numpy_rules():
    """The one-pass compiled check passes exactly the chunks the numpy rules pass (they name the event)."""
    from pathlib import Path

    A = adc2021
    ev = synth.generate(2000, "background", seed=3)[0]
    assert A._chunk_is_valid(ev) and A._chunk_is_valid(ev.astype(np.float64))
    cases = [((5, 3, 1), np.nan), ((7, 2, 0), 1e39), ((9, 4, 3), 3.0), ((11, 6, 0), -1.0), ((12, 0, 2), np.inf)]
    for idx, val in cases:
        c = ev.astype(np.float64)
        c[idx] = val
        assert not A._chunk_is_valid(c), (idx, val)
        with pytest.raises(DataFormatError, match=f"event {idx[0]} object {idx[1]}"):
            A.validate_chunk(c, Path("f.h5"), 0)
    c = ev.copy()
    c[13, 8, 3], c[13, 8, 0] = 0, 5.0  # padding with pT
    assert not A._chunk_is_valid(c)
    with pytest.raises(DataFormatError, match="type 0"):
        A.validate_chunk(c, Path("f.h5"), 0)
