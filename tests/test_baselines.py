"""Trivial-cut baselines (HT, MET, lepton / object counts) and their place beside the model in evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from trigger_ml.core.errors import ConfigError
from trigger_ml.core.metrics import signal_metrics
from trigger_ml.data import baselines as B

ZOO = Path(__file__).resolve().parents[1] / "models"


def _events():
    ev = np.zeros((3, 19, 4), np.float32)
    ev[:, 0, 0] = [10.0, 55.0, 0.5]  # MET
    ev[0, 1, 0], ev[0, 5, 0], ev[0, 6, 0] = 30.0, 25.0, 4.0  # 1 e/gamma, 2 muons
    ev[0, 9:12, 0] = [100.0, 40.0, 16.0]
    ev[1, 1:5, 0] = [40.0, 30.0, 20.0, 10.0]  # 4 e/gamma, no jets
    ev[2, 5, 0] = 24.0
    ev[2, 9:19, 0] = 15.5  # 10 jets
    return ev


def test_baseline_values():
    s = B.baseline_scores(_events())
    assert list(s) == ["ht", "met", "n_leptons", "n_objects"]
    np.testing.assert_array_equal(s["ht"], [156.0, 0.0, 155.0])
    np.testing.assert_array_equal(s["met"], [10.0, 55.0, 0.5])
    np.testing.assert_array_equal(s["n_leptons"], [3, 4, 1])
    np.testing.assert_array_equal(s["n_objects"], [6, 4, 11])
    assert list(B.baseline_scores(_events(), ["met"])) == ["met"]
    with pytest.raises(ConfigError, match="unknown baseline 'mht'"):
        B.baseline_scores(_events(), ["mht"])
    with pytest.raises(ConfigError, match=r"\(n, 19, 4\)"):
        B.baseline_scores(np.zeros((3, 57), np.float32))


def test_baselines_from_file_in_chunks(tmp_path, bkg_file):
    from trigger_ml.data.adc2021 import read_events

    full = B.baseline_scores(read_events(bkg_file, start=100, stop=9000))
    streamed = B.baseline_scores_file(bkg_file, start=100, stop=9000)
    for k in full:
        np.testing.assert_array_equal(full[k], streamed[k])


def test_lepton_count_separates_four_leptons(bkg_file, sig_files):
    b = B.baseline_scores_file(bkg_file)["n_leptons"]
    s = B.baseline_scores_file(sig_files["Ato4l"])["n_leptons"]
    m = signal_metrics(b, s)
    assert m["auc"] > 0.9  # A -> 4 l: most events keep >= 3 leptons, the background almost never has them


@pytest.mark.slow
def test_evaluate_shows_baselines_beside_model(tmp_path, bkg_file, sig_files):
    from trigger_ml.cli import app

    runner = CliRunner()
    cfg = yaml.safe_load((ZOO / "adc-dnn-ae.yaml").read_text()) | {"hidden": [8], "latent": 2}
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["train", str(tmp_path / "small.yaml"), "--data", str(bkg_file), "--out", str(tmp_path / "run"),
                            "--epochs", "1", "--max-events", "3000"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--signals", str(sig_files["Ato4l"]), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    base = res["baselines"]["Ato4l"]
    assert set(base) == {"ht", "met", "n_leptons", "n_objects"}
    b = B.baseline_scores_file(bkg_file, start=3000)  # the held-out background: after the training sample
    s = B.baseline_scores_file(sig_files["Ato4l"])
    assert base["met"]["auc"] == pytest.approx(signal_metrics(b["met"], s["met"])["auc"], abs=1e-12)
    assert base["met"]["tpr_at_fpr_1e-4"]["n_background"] == res["n_background"]
    r = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--signals", str(sig_files["Ato4l"])])
    assert r.exit_code == 0 and "n_leptons" in r.stdout and "baseline" in r.stdout
