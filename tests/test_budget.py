"""Latency-budget profile: boundaries, BX conversion, resources against the part table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from trigger_ml.core.errors import ConfigError
from trigger_ml.reports.budget import (
    BX_NS,
    LayerLatency,
    build_budget_profile,
    resolve_budget_ns,
)
from trigger_ml.reports.vendor import parse_vendor_reports

LAYERS = [("dense_1", 3, "parsed (Vitis HLS csynth)"), ("relu_1", 1, "estimated"), ("dense_2", 4, "estimated")]


def test_per_layer_and_cumulative_ns() -> None:
    prof = build_budget_profile(LAYERS, clock_period_ns=2.5, ii_cycles=1, budget_ns=100.0)
    assert [(r.name, r.cycles, r.ns, r.cumulative_ns) for r in prof.layers] == [
        ("dense_1", 3, 7.5, 7.5),
        ("relu_1", 1, 2.5, 10.0),
        ("dense_2", 4, 10.0, 20.0),
    ]
    assert prof.layers[0].source == "parsed (Vitis HLS csynth)"
    assert (prof.total_cycles, prof.total_ns, prof.slack_ns) == (8, 20.0, 80.0)
    assert prof.total_source == "sum of layers"
    assert prof.ii_ns == 2.5
    assert prof.passed is True


def test_exactly_at_budget_passes_one_cycle_over_fails() -> None:
    # 5 ns clock, budget 40 ns = 8 cycles
    at = build_budget_profile([("a", 8, "s")], clock_period_ns=5.0, ii_cycles=1, budget_ns=40.0)
    assert at.total_ns == 40.0 and at.slack_ns == 0.0
    assert at.latency_passed is True and at.passed is True
    over = build_budget_profile([("a", 9, "s")], clock_period_ns=5.0, ii_cycles=1, budget_ns=40.0)
    assert over.slack_ns == -5.0
    assert over.latency_passed is False and over.passed is False


def test_boundary_with_inexact_float_clock() -> None:
    # cycles * period is not exact in binary floats: 3 * 0.1 ns > 0.3 ns
    assert 3 * 0.1 > 0.3
    assert build_budget_profile([("a", 3, "s")], clock_period_ns=0.1, ii_cycles=1, budget_ns=0.3).passed is True
    assert build_budget_profile([("a", 4, "s")], clock_period_ns=0.1, ii_cycles=1, budget_ns=0.3).passed is False


def test_bx_conversion() -> None:
    assert BX_NS == 25.0
    assert resolve_budget_ns(budget_bx=4) == 100.0
    assert resolve_budget_ns(budget_ns=12.5) == 12.5
    # 1 BX at 320 MHz (3.125 ns): 8 cycles fit exactly, 9 do not
    fit = build_budget_profile([("a", 8, "s")], clock_period_ns=3.125, ii_cycles=1, budget_bx=1)
    assert (fit.budget_ns, fit.budget_bx, fit.total_ns, fit.passed) == (25.0, 1.0, 25.0, True)
    assert build_budget_profile([("a", 9, "s")], clock_period_ns=3.125, ii_cycles=1, budget_bx=1).passed is False


@pytest.mark.parametrize("kwargs", [{}, {"budget_ns": 10.0, "budget_bx": 1}, {"budget_ns": 0.0}, {"budget_bx": -1}])
def test_budget_must_be_exactly_one_positive(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        build_budget_profile(LAYERS, clock_period_ns=5.0, ii_cycles=1, **kwargs)


def test_resources_within_part_pass_and_percentages() -> None:
    prof = build_budget_profile(
        LAYERS, 5.0, 1, budget_bx=2, resources={"LUT": 17_280, "DSP": 12_288, "URAM": 0}, part="xcvu13p-flga2577-2-e"
    )
    assert prof.resource_percent == {"LUT": 1.0, "DSP": 100.0, "URAM": 0.0}
    assert prof.resources_passed is True and prof.passed is True  # exactly 100 % fits


def test_resource_overflow_fails_even_within_latency() -> None:
    prof = build_budget_profile(LAYERS, 5.0, 1, budget_bx=2, resources={"DSP": 12_289}, part="xcvu13p")
    assert prof.latency_passed is True
    assert prof.resources_passed is False and prof.passed is False


def test_resource_on_part_without_it_fails() -> None:
    prof = build_budget_profile(LAYERS, 5.0, 1, budget_bx=2, resources={"URAM": 1}, part="xc7vx690t")
    assert prof.resource_percent == {"URAM": None}
    assert prof.passed is False


def test_real_vivado_fixture_overflows_zynq_bram() -> None:
    """The real 2019.2 autoencoder estimate needs 285 BRAM_18K on a 280-BRAM_18K xc7z020."""
    rep = parse_vendor_reports(Path(__file__).parent / "fixtures/vendor_reports/vivado_hls_2019.2_pynq_autoencoder")
    assert rep is not None and rep.latency_max_cycles is not None and rep.clock_target_ns is not None
    prof = build_budget_profile(
        [("myproject", rep.latency_max_cycles, rep.sources["latency_max_cycles"])],
        clock_period_ns=rep.clock_target_ns,
        ii_cycles=rep.interval_max or 1,
        budget_ns=1e6,
        resources=rep.resources,
        part=rep.part,
    )
    assert prof.total_ns == 480_825.0
    assert prof.latency_passed is True
    assert prof.resource_percent["BRAM_18K"] == pytest.approx(101.7857142857, abs=1e-9)
    assert prof.resources_passed is False and prof.passed is False


def test_total_override_for_overlapping_layers() -> None:
    prof = build_budget_profile(LAYERS, 5.0, 1, budget_ns=30.0, total_cycles=6, total_source="parsed (csynth)")
    assert (prof.total_cycles, prof.total_ns, prof.total_source, prof.passed) == (6, 30.0, "parsed (csynth)", True)
    assert prof.layers[-1].cumulative_ns == 40.0  # the per-layer sum is still shown


def test_input_validation() -> None:
    with pytest.raises(ConfigError, match="resources were given without an FPGA part"):
        build_budget_profile(LAYERS, 5.0, 1, budget_ns=100.0, resources={"LUT": 1})
    with pytest.raises(ConfigError, match="unknown FPGA part"):
        build_budget_profile(LAYERS, 5.0, 1, budget_ns=100.0, part="xc9z999")
    with pytest.raises(ConfigError, match="unknown resource"):
        build_budget_profile(LAYERS, 5.0, 1, budget_ns=100.0, resources={"CLB": 1}, part="xcvu9p")
    with pytest.raises(ConfigError, match="clock period"):
        build_budget_profile(LAYERS, 0.0, 1, budget_ns=100.0)
    with pytest.raises(ConfigError, match="initiation interval"):
        build_budget_profile(LAYERS, 5.0, 0, budget_ns=100.0)
    with pytest.raises(ConfigError, match="layer 'x'"):
        build_budget_profile([("x", -1, "s")], 5.0, 1, budget_ns=100.0)
    with pytest.raises(ConfigError, match="layer 'x'"):
        build_budget_profile([("x", 2.5, "s")], 5.0, 1, budget_ns=100.0)


def test_to_json_is_serialisable_and_complete() -> None:
    prof = build_budget_profile(
        [LayerLatency("dense", 4, "s")], 5.0, 2, budget_bx=1, resources={"LUT": 100}, part="xcku115-flvb2104-2-e"
    )
    data = json.loads(json.dumps(prof.to_json()))
    assert data["layers"] == [{"name": "dense", "cycles": 4, "ns": 20.0, "cumulative_ns": 20.0, "source": "s"}]
    assert (data["total_ns"], data["budget_ns"], data["budget_bx"], data["slack_ns"]) == (20.0, 25.0, 1.0, 5.0)
    assert (data["ii_cycles"], data["ii_ns"]) == (2, 10.0)
    assert data["part_totals"]["LUT"] == 663_360
    assert data["passed"] is True and data["resources_passed"] is True


def test_render_table() -> None:
    prof = build_budget_profile(LAYERS, 5.0, 1, budget_ns=30.0, resources={"LUT": 10}, part="xcvu9p")
    table = prof.render_table()
    assert isinstance(table, Table)
    assert table.row_count == len(LAYERS) + 1  # layers + total
    console = Console(width=160, record=True, color_system=None)
    console.print(table)
    text = console.export_text()
    assert "dense_2" in text and "FAIL" in text and "40.000" in text and "xcvu9p" in text


def test_rtl_budget_search_summary() -> None:
    from trigger_ml.reports.budget import rtl_budget_search

    assert rtl_budget_search({}) is None and rtl_budget_search({"budget_search": {"chosen": None}}) is None
    man = {"budget_search": {"budget_ns": 50.0, "cost_rule": "r", "candidates": [{"n_stages": 11}],
                             "chosen": {"clock_mhz": 240.0, "delay_constraint": -1, "worst_stage_ns_estimate": 4.07,
                                        "luts_estimate": 1.0, "ffs_estimate": 2},
                             "measured": {"latency_cycles": 11, "latency_ns": 45.8, "source": "measured (Verilator)"}}}
    s = rtl_budget_search(man)
    assert s["passed"] and s["budget_bx"] == 2.0 and s["latency_cycles"] == 11 and len(s["candidates"]) == 1
    man["budget_search"]["measured"]["latency_ns"] = 50.1
    assert not rtl_budget_search(man)["passed"]
