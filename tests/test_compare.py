"""Two-sample tests (per-feature KS / W1, sliced permutation tests) and reference-summary comparison."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from trigger_ml.cli import app
from trigger_ml.core.errors import DataFormatError
from trigger_ml.data import compare as C
from trigger_ml.data import synth

runner = CliRunner()


def test_vectorised_ks_w1_equal_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(700, 3)), rng.normal(0.2, 1.3, size=(500, 3))
    x[:, 2], y[:, 2] = np.round(x[:, 2]), np.round(y[:, 2])  # heavy ties, like zero padding
    ks, w1 = C._PooledECDF(np.concatenate([x, y])).stats(np.r_[np.ones(700, bool), np.zeros(500, bool)])
    for j in range(3):
        assert ks[j] == pytest.approx(stats.ks_2samp(x[:, j], y[:, j]).statistic, abs=1e-12)
        assert w1[j] == pytest.approx(stats.wasserstein_distance(x[:, j], y[:, j]), rel=1e-10)


def test_sliced_tests_power_and_calibration():
    rng = np.random.default_rng(1)
    same = C.sliced_tests(rng.normal(size=(2000, 6)), rng.normal(size=(2000, 6)), n_permutations=60, seed=3)
    # a correlation change with identical marginals: invisible to per-feature tests, seen by projections
    a = rng.normal(size=(2000, 6))
    b = rng.normal(size=(2000, 6))
    b[:, 1] = 0.9 * b[:, 0] + np.sqrt(1 - 0.81) * b[:, 1]
    diff = C.sliced_tests(a, b, n_permutations=60, seed=3)
    for s in C.STATISTICS:
        assert same[s]["p_value"] > 0.02, (s, same[s])
    assert diff["sliced_ks"]["p_value"] == diff["sliced_wasserstein"]["p_value"] == 1 / 61
    assert diff["mean_ks"]["p_value"] > 0.02  # marginals unchanged
    again = C.sliced_tests(a, b, n_permutations=60, seed=3)
    assert again == diff  # seeded


def _summary(met_mean, eg_std):
    return {"objects": {"met": {"pt_gev": {"mean": met_mean, "std": 21.2}}, "egamma": {"eta": {"std": eg_std}}}}


def test_compare_summary_rows_and_verdict():
    ref = {"name": "r", "objects": {"met": {"pt_gev": {"mean": 40.0, "std": 20.0}}, "egamma": {"eta": {"std": 1.6}}}}
    r = C.compare_summary(_summary(43.0, 1.6), ref, tolerance=0.1)
    rows = {(x["object"], x["quantity"], x["statistic"]): x for x in r["rows"]}
    assert rows[("met", "pt_gev", "mean")]["rel_diff"] == pytest.approx(0.075) and r["all_within"]
    assert rows[("met", "pt_gev", "std")]["rel_diff"] == pytest.approx(0.06)
    r = C.compare_summary(_summary(45.0, 1.6), ref, tolerance=0.1)  # MET mean +12.5 %: out
    assert [x["within"] for x in r["rows"]] == [False, True, True] and not r["all_within"]
    r = C.compare_summary({"objects": {"met": {"pt_gev": {"mean": 40.0, "std": 20.0}}}}, ref)  # missing figure
    assert r["rows"][2]["sample"] is None and not r["rows"][2]["within"] and not r["all_within"]


def test_reference_file_checked(tmp_path):
    ref = C.load_reference()  # the shipped real-data summary
    assert ref["objects"]["met"]["pt_gev"] == {"mean": 41.5, "std": 21.2}
    with pytest.raises(DataFormatError, match="not found"):
        C.load_reference(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text(json.dumps({"objects": {"tau": {}}}))
    with pytest.raises(DataFormatError, match=r"objects\.tau: unknown object type"):
        C.load_reference(tmp_path / "bad.json")


@pytest.fixture(scope="module")
def two_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp")
    return (synth.generate_file(d / "a.h5", 3000, "background", seed=1),
            synth.generate_file(d / "b.h5", 3000, "Ato4l", seed=2))


def test_cli_compare_two_files_and_plots(two_files, tmp_path):
    a, b = two_files
    r = runner.invoke(app, ["data", "compare", str(a), str(b), "--permutations", "20", "--perm-events", "1500",
                            "--plots", str(tmp_path / "plots"), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    ts = res["two_sample"]
    assert len(ts["features"]) == 57 and ts["multivariate"]["n_a"] == 1500
    assert ts["multivariate"]["sliced_ks"]["p_value"] == 1 / 21  # 4-lepton signal vs background: distinct
    assert "permutation tests on 1,500 + 1,500 events" in " ".join(ts["notes"])
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == ["egamma.png", "jet.png", "met.png", "muon.png"]
    assert json.loads((tmp_path / "plots" / "manifest.json").read_text())["stage"] == "data.compare"
    r = runner.invoke(app, ["data", "compare", str(a), str(b), "--plots", str(tmp_path / "plots")])
    assert r.exit_code == 1 and "--force" in str(r.exception)  # an existing output is refused up front
    r = runner.invoke(app, ["data", "compare", str(a), str(b), "--permutations", "5", "--top", "3"])
    assert r.exit_code == 0 and "(3 of 57 features" in r.stdout


def test_cli_compare_reference_default(two_files):
    r = runner.invoke(app, ["data", "compare", str(two_files[0]), "--json"])
    assert r.exit_code == 0, r.output
    (ref,) = json.loads(r.stdout)["reference"]
    assert ref["reference"] == "ADC2021 background (real data)" and len(ref["rows"]) == 11
    assert all(isinstance(x["sample"], float) for x in ref["rows"])
