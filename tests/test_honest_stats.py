"""Honest trigger statistics (issue 14): the 10/FPR rule, bootstrap intervals that hold the threshold's
uncertainty, the per-process composition of the background tail, and seed ensembles in the report."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from trigger_ml.core.metrics import (
    background_shortfall,
    clopper_pearson,
    mean_std,
    min_background_events,
    signal_metrics,
    tail_composition,
    tpr_at_fpr,
)

ZOO = Path(__file__).resolve().parents[1] / "models"


def _sklearn_tpr(b, s, f):
    y = np.r_[np.zeros(len(b)), np.ones(len(s))]
    fpr, tpr, thr = roc_curve(y, np.r_[b, s], drop_intermediate=False)
    i = int(np.searchsorted(fpr, f, side="right") - 1)
    return tpr[i], fpr[i], thr[i]


def test_tpr_at_fpr_is_sklearns_roc_point_with_ties() -> None:
    """The sorted-sample implementation gives exactly roc_curve's TPR, FPR and threshold (ties included)."""
    rng = np.random.default_rng(3)
    for trial in range(60):
        b = rng.normal(0, 1, int(rng.integers(2_000, 20_000)))
        s = rng.normal(rng.uniform(0, 3), 1, int(rng.integers(1, 2_000)))
        if trial % 2:  # quantized scores: many ties, signal values equal to background values
            b, s = np.round(b * 8) / 8, np.r_[np.round(s * 8) / 8, b[:30]]
        for f in (1e-3, 4e-3, 0.05, 0.5):
            r = tpr_at_fpr(b, s, f, n_bootstrap=0)
            if len(b) * f < 10:
                assert r["tpr"] is None
                continue
            tpr, fpr, thr = _sklearn_tpr(b, s, f)
            assert (r["tpr"], r["fpr"], r["threshold"]) == (tpr, fpr, thr), (trial, f)
            assert r["n_background_above"] == round(fpr * len(b)) and r["n_signal_above"] == round(tpr * len(s))
        assert signal_metrics(b, s, n_bootstrap=0)["auc"] == pytest.approx(
            roc_auc_score(np.r_[np.zeros(len(b)), np.ones(len(s))], np.r_[b, s]), abs=1e-12)


def test_ten_over_fpr_rule() -> None:
    """A TPR at FPR f needs 10/f background events; below that: None and the reason, in every caller."""
    assert min_background_events(1e-5) == 1_000_000 and min_background_events(1e-4) == 100_000
    assert min_background_events(5e3 / 40e6) == 80_000  # 5 kHz at 40 MHz
    assert background_shortfall(100_000, 1e-5) == "needs >= 1,000,000 background events, have 100,000"
    rng = np.random.default_rng(0)
    b, s = rng.normal(0, 1, 100_000), rng.normal(2, 1, 1_000)
    r = tpr_at_fpr(b[:99_999], s, 1e-4)
    assert r["tpr"] is None and r["reason"] == "needs >= 100,000 background events, have 99,999"
    assert tpr_at_fpr(b, s, 1e-4)["n_background_above"] == 10  # exactly 10/FPR events: quoted
    m = signal_metrics(b, s, 10.0)  # 10 kHz = FPR 2.5e-4 needs 40,000: quoted; 1e-5 is not
    assert m["tpr_at_fpr_1e-5"]["tpr"] is None and "1,000,000" in m["tpr_at_fpr_1e-5"]["reason"]
    assert m["tpr_at_rate"]["tpr"] is not None and m["tpr_at_rate"]["n_background_above"] == 25


def test_bootstrap_interval_is_the_resampling_interval() -> None:
    """The exact-draw bootstrap equals a brute-force bootstrap (resample both samples, redo the threshold),
    is seeded, and is wider than the signal-only Clopper-Pearson interval when the threshold is uncertain."""
    rng = np.random.default_rng(7)
    b, s = np.round(rng.normal(0, 1, 20_000) * 16) / 16, np.round(rng.normal(2.5, 1, 2_000) * 16) / 16
    r = tpr_at_fpr(b, s, 1e-3, n_bootstrap=4000, seed=5)
    assert r == tpr_at_fpr(b, s, 1e-3, n_bootstrap=4000, seed=5)  # seeded: reproducible
    brute = [tpr_at_fpr(rng.choice(b, len(b)), rng.choice(s, len(s)), 1e-3, n_bootstrap=0)["tpr"] for _ in range(400)]
    lo_b, hi_b = np.quantile(brute, [0.1585, 0.8415])
    lo, hi = r["tpr_interval_68_bootstrap"]
    assert lo < r["tpr"] < hi
    assert abs(lo - lo_b) < 0.006 and abs(hi - hi_b) < 0.006, (lo, hi, lo_b, hi_b)
    cp = r["tpr_interval_68"]
    assert tuple(cp) == clopper_pearson(r["n_signal_above"], len(s))
    assert hi - lo > 1.3 * (cp[1] - cp[0])  # the threshold's own uncertainty (20 background events) dominates


def test_tail_composition_counts_and_rules() -> None:
    scores = np.array([0.0, 1, 2, 3, 3, 4, 5, 6])
    labels = np.array([0, 0, 1, 1, 2, 0, 3, 3], np.int8)
    names = {0: "W_lnu", 1: "QCD", 2: "Z_ll", 3: "ttbar"}
    t = tail_composition(scores, labels, 3.0, names=names)  # >= 3: five events
    assert t["n_above"] == 5 and t["rule"] == "score >= threshold"
    rows = {r["process"]: r for r in t["processes"]}
    assert rows["ttbar"]["n_above"] == 2 and rows["ttbar"]["fraction_of_tail"] == 0.4 and rows["ttbar"]["efficiency"] == 1
    assert rows["QCD"]["n_above"] == 1 and rows["QCD"]["efficiency"] == 0.5
    assert t["processes"][0]["process"] == "ttbar"  # largest share first
    s = tail_composition(scores, labels, 3.0, strict=True, names=names)  # the firmware's rule: > 3
    assert s["n_above"] == 3 and {r["process"]: r["n_above"] for r in s["processes"]}["Z_ll"] == 0
    assert sum(r["fraction_of_tail"] for r in s["processes"]) == pytest.approx(1)


def test_tail_composition_of_a_file_without_process_codes(bkg_file, tmp_path) -> None:
    """Background without the generator's per-event process codes (e.g. real data): said, not guessed."""
    import h5py

    from trigger_ml.core.metrics import SortedScores
    from trigger_ml.reports.collect import _process_labels, tail_composition_section

    labels, why = _process_labels(bkg_file, 0, 20_000)
    assert labels is not None and len(labels) == 20_000 and not why
    plain = tmp_path / "plain.h5"
    shutil.copy(bkg_file, plain)
    with h5py.File(plain, "a") as f:
        del f["process"]
    labels, why = _process_labels(plain, 0, 100)
    assert labels is None and "no per-event 'process' dataset" in why
    sc = np.random.default_rng(0).normal(0, 1, 20_000)
    sec = tail_composition_section({"firmware": SortedScores(sc)}, {"firmware": sc}, None, why, (1e-4,), 5.0, 40e6)
    assert sec["status"] == "absent" and "unknown" in sec["reason"]
    codes, _ = _process_labels(bkg_file, 0, 20_000)
    sec = tail_composition_section({"firmware": SortedScores(sc)}, {"firmware": sc}, codes, "", (1e-5, 1e-3), 5.0,
                                   40e6, firmware_points={"Tight": 2.0})
    rows = sec["models"]["firmware"]
    assert rows["FPR 1e-05"]["threshold"] is None and "1,000,000" in rows["FPR 1e-05"]["reason"]
    assert rows["FPR 0.001"]["n_above"] == 20 and rows["menu Tight"]["rule"] == "score > threshold"
    assert {p["process"] for p in rows["FPR 0.001"]["processes"]} <= {"W_lnu", "QCD", "Z_ll", "ttbar"}


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory, bkg_file) -> Path:
    """Two tiny training seeds of one model, in the layout of `trigger-ml train --seeds 2`."""
    import yaml

    from trigger_ml.train import train

    d = tmp_path_factory.mktemp("ens")
    cfg = yaml.safe_load((ZOO / "adc-dnn-ae.yaml").read_text()) | {"hidden": [8], "latent": 2}
    (d / "small.yaml").write_text(yaml.safe_dump(cfg))
    (d / "ens").mkdir()
    for i in range(2):
        train(d / "small.yaml", bkg_file, d / "ens" / f"seed{i}", epochs=1, max_events=3000, seed=i, float_twin=False,
              log=lambda s: None)
    return d / "ens"


def test_report_of_a_seed_ensemble(ensemble_dir, bkg_file, sig_files, tmp_path) -> None:
    """An ensemble directory gives mean ± std over the seeds (each run's own metrics, as evaluate computes
    them), beside the trivial-cut baselines on the same events; the rendered report shows both."""
    from trigger_ml.evaluate import evaluate_artifact
    from trigger_ml.reports.collect import collect_report
    from trigger_ml.reports.render import write_report

    sig = sig_files["Ato4l"]
    # 100 kHz = FPR 2.5e-3 needs 4,000 background events: quoted on the 17,000 held-out ones
    rep = collect_report(ensemble_dir, signals=[sig], background=bkg_file, target_rate_khz=100.0)
    m = rep["metrics"]
    assert m["status"] == "ok" and m["n_background"] == 17_000  # the held-out rule: events after the 3,000 trained on
    ens = m["ensemble"]
    assert ens["status"] == "ok" and ens["n_runs"] == 2
    # seed0 is the report's own run; seed1 as `trigger-ml evaluate` computes it
    per = [m["signals"]["Ato4l"]["quantized"],
           evaluate_artifact(ensemble_dir / "seed1", [sig], bkg_file, target_rate_khz=100.0, baselines=False)
           ["signals"]["Ato4l"]["quantized"]]
    assert rep["inputs"]["run"] == str(ensemble_dir / "seed0") and ens["runs"] == [str(ensemble_dir / f"seed{i}")
                                                                                 for i in range(2)]
    q = ens["signals"]["Ato4l"]["quantized"]
    assert q["auc"] == mean_std([p["auc"] for p in per]) and q["auc"]["std"] > 0
    assert q["tpr_at_rate"] == mean_std([p["tpr_at_rate"]["tpr"] for p in per]) and q["tpr_at_rate"]["n"] == 2
    assert q["tpr_at_fpr_1e-5"] == {"mean": None, "std": None, "n": 0}  # not quoted by any seed
    assert set(m["baselines"]["Ato4l"]) == {"ht", "met", "n_leptons", "n_objects"}
    assert m["tail_composition"]["status"] == "ok"
    out = write_report(rep, tmp_path / "report")
    md = (out / "report.md").read_text()
    assert "**Training-seed ensemble** (2 runs)" in md and "baseline: HT" in md
    assert "→" in md  # the model-vs-trivial-cut verdict line
