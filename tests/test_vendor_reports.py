"""Vendor-report parsing (via hls4ml.report) and the FPGA part table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from trigger_ml.core.errors import ArtifactError, ConfigError, TriggerMLError
from trigger_ml.reports.parts import known_parts, lookup_part
from trigger_ml.reports.vendor import (
    VendorFigure,
    find_vendor_reports,
    missing_reports_message,
    parse_vendor_reports,
    require_vendor_reports,
)

FIXTURES = Path(__file__).parent / "fixtures" / "vendor_reports"
VIVADO = FIXTURES / "vivado_hls_2019.2_pynq_autoencoder"  # real Vivado HLS 2019.2.1 output
VITIS = FIXTURES / "vitis_hls_handmade_vu13p"  # hand-made Vitis layout (see its README)
VIVADO_SRC = "parsed (Vivado HLS 2019.2.1 csynth)"
VITIS_SRC = "parsed (Vitis HLS 2023.2 csynth)"


@pytest.fixture
def vitis_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "prj"
    shutil.copytree(VITIS, dst)
    return dst


@pytest.fixture
def vivado_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "prj"
    shutil.copytree(VIVADO, dst)
    return dst


# ----------------------------------------------------------------------------- real Vivado HLS 2019.2 output


def test_vivado_hls_2019_figures_exact() -> None:
    rep = parse_vendor_reports(VIVADO)
    assert rep is not None
    assert rep.tool == "Vivado HLS"
    assert rep.tool_version == "2019.2.1"
    assert rep.part == "xc7z020-clg400-1"
    assert rep.clock_target_ns == 5.0
    assert rep.clock_estimated_ns == 4.429
    assert rep.latency_min_cycles == 96014
    assert rep.latency_max_cycles == 96165
    assert (rep.interval_min, rep.interval_max) == (4625, 95949)
    # hls4ml renames DSP48E to DSP
    assert rep.resources == {"LUT": 33365, "FF": 51414, "DSP": 118, "BRAM_18K": 285, "URAM": 0}
    assert rep.csynth_resources == rep.resources
    assert rep.available == {"LUT": 53200, "FF": 106400, "DSP": 220, "BRAM_18K": 280, "URAM": 0}


def test_vivado_hls_2019_sources_and_partial_fields() -> None:
    rep = parse_vendor_reports(VIVADO)
    assert rep is not None
    assert rep.figure("latency_max_cycles") == VendorFigure(96165, "cycles", VIVADO_SRC)
    assert rep.figure("clock_estimated_ns") == VendorFigure(4.429, "ns", VIVADO_SRC)
    assert rep.figure("resources.DSP") == VendorFigure(118, "DSP", VIVADO_SRC)
    # only csynth exists: no Vivado synth, no cosim
    assert set(rep.sources.values()) == {VIVADO_SRC}
    assert rep.figure("cosim_latency_max_cycles") is None
    assert rep.cosim_status is None
    assert set(find_vendor_reports(VIVADO)) == {"csynth_xml", "csynth_rpt"}


def test_to_json_roundtrips_through_json() -> None:
    rep = parse_vendor_reports(VIVADO)
    assert rep is not None
    data = json.loads(json.dumps(rep.to_json()))
    assert data["figures"]["latency_max_cycles"] == {"value": 96165, "unit": "cycles", "source": VIVADO_SRC}
    assert data["resources"]["BRAM_18K"] == 285
    assert data["tool_version"] == "2019.2.1"
    assert data["files"]["csynth_xml"].endswith("myproject_prj/solution1/syn/report/myproject_csynth.xml")


def test_figure_unknown_name_raises() -> None:
    rep = parse_vendor_reports(VIVADO)
    assert rep is not None
    with pytest.raises(KeyError):
        rep.figure("latency_typo")


# ----------------------------------------------------------------------------- hand-made Vitis layout


def test_vitis_layout_csynth_vsynth_cosim() -> None:
    rep = parse_vendor_reports(VITIS)
    assert rep is not None
    assert (rep.tool, rep.tool_version, rep.part) == ("Vitis HLS", "2023.2", "xcvu13p-flga2577-2-e")
    assert (rep.clock_target_ns, rep.clock_estimated_ns) == (5.0, 3.912)
    assert (rep.latency_min_cycles, rep.latency_max_cycles) == (9, 11)
    assert (rep.interval_min, rep.interval_max) == (1, 1)
    # Vitis <DSP> tag; csynth estimate kept separately
    assert rep.csynth_resources == {"LUT": 98765, "FF": 23567, "DSP": 1035, "BRAM_18K": 4, "URAM": 0}
    # post-synthesis figures win; "Block RAM Tile" 2.5 (36 Kb tiles) -> 5 BRAM_18K
    assert rep.resources == {"LUT": 61234, "FF": 20111, "DSP": 1020, "BRAM_18K": 5, "URAM": 0}
    assert rep.available == {"LUT": 1728000, "FF": 3456000, "DSP": 12288, "BRAM_18K": 5376, "URAM": 1280}
    assert rep.figure("resources.LUT") == VendorFigure(61234, "LUT", "parsed (Vivado synth)")
    assert rep.figure("latency_max_cycles") == VendorFigure(11, "cycles", VITIS_SRC)
    assert rep.cosim_status == "Pass"
    assert (rep.cosim_latency_min_cycles, rep.cosim_latency_max_cycles) == (9, 11)
    assert rep.figure("cosim_interval_max") == VendorFigure(1, "cycles", "parsed (cosim)")
    assert set(find_vendor_reports(VITIS)) == {"project_tcl", "app", "csynth_xml", "cosim_rpt", "vivado_synth_rpt"}


def test_wrapper_agrees_with_hls4ml_on_a_complete_project() -> None:
    """The Vitis fixture is a complete hls4ml project, so hls4ml's parser runs on it directly."""
    from hls4ml.report import parse_vivado_report

    raw = parse_vivado_report(str(VITIS))
    rep = parse_vendor_reports(VITIS)
    assert rep is not None
    csynth = raw["CSynthesisReport"]
    assert int(csynth["WorstLatency"]) == rep.latency_max_cycles
    assert float(csynth["EstimatedClockPeriod"]) == rep.clock_estimated_ns
    assert {k: int(csynth[k]) for k in rep.csynth_resources} == rep.csynth_resources
    assert int(raw["VivadoSynthReport"]["LUT"]) == rep.resources["LUT"]
    assert int(raw["CosimReport"]["LatencyMax"]) == rep.cosim_latency_max_cycles


def test_vitis_plain_csynth_xml_fallback(vitis_copy: Path) -> None:
    (vitis_copy / "myproject_prj/solution1/syn/report/myproject_csynth.xml").unlink()
    rep = parse_vendor_reports(vitis_copy)
    assert rep is not None
    assert rep.files["csynth_xml"].name == "csynth.xml"
    assert rep.latency_max_cycles == 11
    assert rep.csynth_resources["DSP"] == 1035


def test_tool_detected_from_xml_without_app_file(vitis_copy: Path) -> None:
    (vitis_copy / "myproject_prj/hls.app").unlink()
    rep = parse_vendor_reports(vitis_copy)
    assert rep is not None
    assert rep.tool == "Vitis HLS"  # from <FlowTarget> / <DSP>


def test_accelerator_backend_top_name(tmp_path: Path) -> None:
    """VivadoAccelerator projects name the top <name>_axi, as hls4ml's parser expects."""
    prj = tmp_path / "acc"
    rep_dir = prj / "myproject_prj/solution1/syn/report"
    rep_dir.mkdir(parents=True)
    src = VIVADO / "myproject_prj/solution1/syn/report/myproject_csynth.xml"
    shutil.copy(src, rep_dir / "myproject_axi_csynth.xml")
    (prj / "project.tcl").write_text('set project_name "myproject"\nset backend "vivadoaccelerator"\n')
    rep = parse_vendor_reports(prj)
    assert rep is not None
    assert rep.latency_max_cycles == 96165


# ----------------------------------------------------------------------------- missing / partial / corrupt


def test_missing_reports_returns_none_with_message(tmp_path: Path) -> None:
    (tmp_path / "myproject_prj/solution1").mkdir(parents=True)  # project created, csynth never ran / failed
    (tmp_path / "project.tcl").write_text('set project_name "myproject"\nset backend "vitis"\n')
    assert parse_vendor_reports(tmp_path) is None
    assert find_vendor_reports(tmp_path) == {"project_tcl": tmp_path / "project.tcl"}
    msg = missing_reports_message(tmp_path)
    assert str(tmp_path) in msg and "run csynth (a failed synthesis leaves no report)" in msg
    assert "\n" not in msg
    with pytest.raises(ArtifactError, match="no synthesis report") as exc:
        require_vendor_reports(tmp_path)
    assert str(tmp_path) in str(exc.value)


def test_nonexistent_project_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ArtifactError) as exc:
        parse_vendor_reports(missing)
    assert str(missing) in str(exc.value)
    assert isinstance(exc.value, TriggerMLError)


def test_partial_csynth_without_vsynth_and_cosim(vitis_copy: Path) -> None:
    (vitis_copy / "vivado_synth.rpt").unlink()
    shutil.rmtree(vitis_copy / "myproject_prj/solution1/sim")
    rep = parse_vendor_reports(vitis_copy)
    assert rep is not None
    assert rep.resources == {"LUT": 98765, "FF": 23567, "DSP": 1035, "BRAM_18K": 4, "URAM": 0}
    assert rep.figure("resources.LUT") == VendorFigure(98765, "LUT", VITIS_SRC)
    assert rep.cosim_status is None and rep.cosim_latency_max_cycles is None
    assert "vivado_synth_rpt" not in rep.files


def test_partial_vsynth_only(vitis_copy: Path) -> None:
    shutil.rmtree(vitis_copy / "myproject_prj")
    rep = parse_vendor_reports(vitis_copy)
    assert rep is not None
    assert rep.latency_max_cycles is None and rep.clock_target_ns is None and rep.part is None
    assert rep.resources == {"LUT": 61234, "FF": 20111, "DSP": 1020, "BRAM_18K": 5, "URAM": 0}
    assert rep.available == {}
    assert set(rep.sources.values()) == {"parsed (Vivado synth)"}


def test_corrupt_csynth_xml_names_file(vivado_copy: Path) -> None:
    xml = vivado_copy / "myproject_prj/solution1/syn/report/myproject_csynth.xml"
    xml.write_text(xml.read_text()[:700])  # truncated mid-element
    with pytest.raises(ArtifactError) as exc:
        parse_vendor_reports(vivado_copy)
    msg = str(exc.value)
    assert str(xml) in msg and "corrupt csynth XML" in msg and "\n" not in msg


def test_csynth_xml_missing_elements_names_file(vivado_copy: Path) -> None:
    xml = vivado_copy / "myproject_prj/solution1/syn/report/myproject_csynth.xml"
    xml.write_text("<profile><UserAssignments><TargetClockPeriod>5</TargetClockPeriod></UserAssignments></profile>")
    with pytest.raises(ArtifactError) as exc:
        parse_vendor_reports(vivado_copy)
    assert str(xml) in str(exc.value) and "lacks an expected element" in str(exc.value)


def test_corrupt_app_file_names_file(vitis_copy: Path) -> None:
    app = vitis_copy / "myproject_prj/hls.app"
    app.write_text("<project><solutions>")
    with pytest.raises(ArtifactError) as exc:
        parse_vendor_reports(vitis_copy)
    assert str(app) in str(exc.value)


def test_cosim_without_result_row_names_file(vitis_copy: Path) -> None:
    rpt = vitis_copy / "myproject_prj/solution1/sim/report/myproject_cosim.rpt"
    rpt.write_text("Report time : now.\n")
    with pytest.raises(ArtifactError) as exc:
        parse_vendor_reports(vitis_copy)
    assert str(rpt) in str(exc.value)


def test_failed_cosim_gives_status_and_no_latency(vitis_copy: Path) -> None:
    rpt = vitis_copy / "myproject_prj/solution1/sim/report/myproject_cosim.rpt"
    rpt.write_text(rpt.read_text().replace("Pass", "Fail").replace("|              9|", "|             NA|"))
    rep = parse_vendor_reports(vitis_copy)
    assert rep is not None
    assert rep.cosim_status == "Fail"
    assert rep.cosim_latency_min_cycles is None
    assert rep.latency_max_cycles == 11


def test_undefined_latency_is_none(vivado_copy: Path) -> None:
    xml = vivado_copy / "myproject_prj/solution1/syn/report/myproject_csynth.xml"
    xml.write_text(xml.read_text().replace("<Worst-caseLatency>96165<", "<Worst-caseLatency>undef<"))
    rep = parse_vendor_reports(vivado_copy)
    assert rep is not None
    assert rep.latency_max_cycles is None and rep.figure("latency_max_cycles") is None
    assert rep.latency_min_cycles == 96014


def test_parser_prints_are_captured(capsys: pytest.CaptureFixture[str]) -> None:
    parse_vendor_reports(VIVADO)
    assert capsys.readouterr().out == ""


def test_several_hls_projects_without_project_tcl(tmp_path: Path) -> None:
    (tmp_path / "a_prj").mkdir()
    (tmp_path / "b_prj").mkdir()
    with pytest.raises(ArtifactError, match="several HLS projects"):
        parse_vendor_reports(tmp_path)


# ----------------------------------------------------------------------------- FPGA parts


@pytest.mark.parametrize(
    ("name", "device", "family", "totals"),
    [
        ("xcvu13p-flga2577-2-e", "xcvu13p", "xcup", (1_728_000, 3_456_000, 12_288, 5_376, 1_280)),
        ("xcvu9p-flga2104-2L-e", "xcvu9p", "xcup", (1_182_240, 2_364_480, 6_840, 4_320, 960)),
        ("xc7vx690t-ffg1927-2", "xc7vx690t", "xc7", (433_200, 866_400, 3_600, 2_940, 0)),
        ("xcku115-flvb2104-2-e", "xcku115", "xcu", (663_360, 1_326_720, 5_520, 4_320, 0)),
        ("xc7z020-clg400-1", "xc7z020", "xc7", (53_200, 106_400, 220, 280, 0)),
    ],
)
def test_part_table(name: str, device: str, family: str, totals: tuple[int, ...]) -> None:
    part = lookup_part(name)
    assert (part.device, part.family) == (device, family)
    assert tuple(part.totals().values()) == totals
    assert list(part.totals()) == ["LUT", "FF", "DSP", "BRAM_18K", "URAM"]


def test_part_lookup_ignores_case_package_and_speed() -> None:
    assert lookup_part("XCVU13P").device == "xcvu13p"
    assert lookup_part("xcvu9p-flgb2104-1-i").device == "xcvu9p"
    assert lookup_part("xc7z020clg400-1").device == "xc7z020"  # 7-series spelling without a dash
    assert lookup_part("xcvu13p").bram_36k == 2_688


def test_part_table_matches_fixture_available_resources() -> None:
    rep = parse_vendor_reports(VIVADO)
    assert rep is not None and rep.part is not None
    assert lookup_part(rep.part).totals() == rep.available


@pytest.mark.parametrize("name", ["xcvu19p-fsva3824-2-e", "xcvu1", "xcvu13", "xc7z0201-clg400-1", ""])
def test_unknown_part_lists_known_parts(name: str) -> None:
    with pytest.raises(ConfigError) as exc:
        lookup_part(name)
    msg = str(exc.value)
    assert repr(name) in msg
    for device in known_parts():
        assert device in msg
