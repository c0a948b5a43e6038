"""CLI smoke tests of every subcommand on tiny data (typer's CliRunner), exit codes, demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from trigger_ml.cli import app

runner = CliRunner()
ZOO = Path(__file__).resolve().parents[1] / "models"


def ok(args: list[str]):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, (args, r.output, r.exception)
    return r


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, bkg_file):
    d = tmp_path_factory.mktemp("cli")
    cfg = yaml.safe_load((ZOO / "adc-dnn-ae.yaml").read_text()) | {"hidden": [8], "latent": 2}
    (d / "small.yaml").write_text(yaml.safe_dump(cfg))
    ok(["train", d / "small.yaml", "--data", bkg_file, "--out", d / "run", "--epochs", "1", "--max-events", "3000"])
    return d


def test_train_evaluate(small_run, sig_files):
    assert (small_run / "run" / "model.keras").exists() and (small_run / "run" / "float_model.onnx").exists()
    r = ok(["evaluate", small_run / "run", "--signals", sig_files["Ato4l"], "--json"])
    res = json.loads(r.stdout)
    m = res["signals"]["Ato4l"]
    assert set(m) == {"quantized", "float"} and 0 <= m["quantized"]["auc"] <= 1


def test_convert_verify_emulate_report(small_run, bkg_file, sig_files):
    d = small_run
    ok(["convert", d / "run", "--out", d / "fw" / "hls", "--rate-khz", "2000"])
    ok(["convert", d / "run", "--out", d / "fw" / "rtl", "--flavor", "verilog"])
    r = ok(["verify", d / "run", "--events", bkg_file, "--hls", d / "fw" / "hls", "--rtl", d / "fw" / "rtl",
            "--n-events", "2000", "--json", "--report", d / "verify.json"])
    res = json.loads((d / "verify.json").read_text())
    assert res["total_mismatches"] == 0 and len(res["exact_pairs"]) == 6
    r = ok(["emulate", d / "fw" / "hls", "--background", bkg_file, "--signals", sig_files["Ato4l"],
            "--menu", "L=4000,T=1000", "--catalog", d / "cat.h5", "--json"])
    menu = json.loads(r.stdout)
    assert set(menu["working_points"]) == {"L", "T"} and menu["catalog"]["events"] > 0
    ok(["report", d / "fw", "--no-measure", "--out", d / "report"])
    html = (d / "report" / "report.html").read_text()
    assert html.count("<img") >= 2 and "data:image/png;base64," in html
    # existing outputs are refused without --force, with exit code 1 and a one-line message
    r = runner.invoke(app, ["convert", str(d / "run"), "--out", str(d / "fw" / "hls")])
    assert r.exit_code != 0


def test_scan_in_process(small_run, bkg_file, sig_files, tmp_path):
    scan = {"base": str(small_run / "small.yaml"), "grid": {"quantization.weight.bits": [6]},
            "settings": {"epochs": 1, "max_events": 2000, "eval_events": 3000, "flavor": "verilog"}}
    (tmp_path / "scan.yaml").write_text(yaml.safe_dump(scan))
    ok(["scan", tmp_path / "scan.yaml", "--out", tmp_path / "s", "--background", bkg_file,
        "--signals", sig_files["Ato4l"], "--scheduler", "none"])
    assert (tmp_path / "s" / "results.csv").exists() and (tmp_path / "s" / "pareto.png").exists()


def test_config_error_exit_code(tmp_path, bkg_file):
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nkind: autoencoder\nlatent: -1\n")
    p = subprocess.run([sys.executable, "-m", "trigger_ml", "train", str(bad), "--data", str(bkg_file), "--out",
                        str(tmp_path / "r")], capture_output=True, text=True)
    assert p.returncode == 1 and "field 'latent'" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "r").exists()


def test_demo_quick(tmp_path):
    r = ok(["demo", "--out", tmp_path / "demo", "--quick", "--no-measure"])
    m = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert set(m["mismatches"].values()) == {0} and len(m["mismatches"]) == 6
    for k in ("auc", "tpr_at_fpr_1e-5", "emulator_events_per_s", "latency_cycles", "latency_ns", "luts", "ffs", "dsps"):
        assert k in m, k
    for k in ("emulator_events_per_s", "latency_cycles", "latency_ns", "luts", "ffs", "dsps"):
        assert m[k]["source"], k
    assert set(m["auc"]) == {"Ato4l", "LQ_btau", "h0_tautau", "hplus_taunu"}
    assert (tmp_path / "demo" / "report" / "report.html").exists()


@pytest.mark.slow
def test_demo_full(tmp_path):
    ok(["demo", "--out", tmp_path / "demo"])
    m = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert set(m["mismatches"].values()) == {0} and m["verify_events"] == 100_000
    assert m["timings_s"]["total"] < 300
