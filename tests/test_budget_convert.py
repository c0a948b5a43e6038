"""Budget-driven RTL conversion: the delay model, the search/selection logic, a real search on a small
model with the depth measured in Verilator, the refusal message, and no data loss on refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from trigger_ml.core.artifacts import sha256_file
from trigger_ml.core.errors import ConfigError
from trigger_ml.firmware.rtl.search import BudgetSearch, Candidate
from trigger_ml.firmware.timing import DEFAULT_MODEL, DelayModel, PipelineTiming

ZOO = Path(__file__).resolve().parents[1] / "models"


# ------------------------------------------------------------------ delay model (no tools)


def test_delay_model_grows_with_width_and_levels() -> None:
    m = DEFAULT_MODEL
    assert m.adder_ns(8) < m.adder_ns(9) < m.adder_ns(64)  # one more CARRY8 per 8 bits
    assert m.adder_ns(8) == pytest.approx(m.t_lut_ns + m.t_carry_first_ns + m.t_net_ns)
    assert m.ternary_adder_ns(16) == pytest.approx(m.adder_ns(16) + m.t_lut_ns)
    assert m.lut_ns(6) < m.lut_ns(8) < m.lut_ns(12)
    assert m.multiplier_ns(18, 27) == pytest.approx(m.t_dsp_mult_ns + m.t_net_ns)  # fits a DSP48E2
    assert m.multiplier_ns(30, 30) > m.multiplier_ns(18, 27)  # LUT multiplier: an adder tree
    assert m.usable_ns(4.0) == pytest.approx(4.0 - m.clock_uncertainty_ns - m.t_clk_to_q_ns - m.t_setup_ns)


def test_stage_longer_than_clock_is_not_claimed_to_meet_timing() -> None:
    t = PipelineTiming(4.0, (3.0, 3.95), DEFAULT_MODEL)  # required = 4.0 - 0.1 uncertainty
    assert t.worst_stage_ns == 3.95 and not t.meets_timing and t.slack_ns < 0
    assert PipelineTiming(4.0, (3.0, 3.9), DEFAULT_MODEL).meets_timing
    j = t.to_json()
    assert "estimated" in j["source"] and "Vivado" in j["source"]
    slow = DelayModel(t_net_ns=2.0)
    assert slow.adder_ns(16) > DEFAULT_MODEL.adder_ns(16)


def _cand(dc, mhz, n, luts, ffs, worst, budget=50.0):
    return Candidate(dc, mhz, n, luts, ffs, worst, worst <= 1e3 / mhz - 0.1, budget)


def test_selection_cheapest_meeting_budget_and_timing() -> None:
    s = BudgetSearch(50.0)
    s.candidates = [
        _cand(-1, 240, 13, 100, 50, 4.0),   # 54.2 ns: over budget
        _cand(4, 240, 9, 120, 40, 4.0),     # ok
        _cand(0, 240, 8, 110, 60, 4.0),     # ok, fewer LUTs -> chosen
        _cand(0, 400, 10, 110, 10, 3.0),    # 25 ns but stage 3.0 ns > 2.4 ns: not timing clean
    ]
    assert s.chosen is s.candidates[2]
    assert not s.candidates[3].ok and "estimate" in s.candidates[3].verdict
    assert "54.2 ns > budget 50 ns" in s.candidates[0].verdict
    rec = s.to_json()
    assert rec["chosen"]["delay_constraint"] == 0 and len(rec["candidates"]) == 4
    assert all({"delay_constraint", "clock_mhz", "n_stages", "latency_ns", "luts_estimate", "ffs_estimate",
                "worst_stage_ns_estimate", "verdict"} <= set(c) for c in rec["candidates"])


def test_refusal_names_closest_design_and_what_to_change() -> None:
    s = BudgetSearch(30.0)
    s.candidates = [_cand(-1, 240, 13, 100, 50, 4.0, 30.0), _cand(0, 240, 9, 120, 40, 4.0, 30.0)]
    assert s.chosen is None and s.closest is s.candidates[1]
    msg = s.refusal()
    assert "\n" not in msg and "37.5 ns" in msg and "closest" in msg and "narrower bit widths" in msg
    assert "120 LUT" in msg and "40 FF" in msg


# ------------------------------------------------------------------ the real thing on a small model


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, bkg_file):
    from trigger_ml.train import train

    d = tmp_path_factory.mktemp("budget")
    # the AXOL1TL-style VAE, shrunk: encoder 57 -> 8 -> mu (2), score sum of mu^2 (a few hundred LUTs)
    cfg = yaml.safe_load((ZOO / "axol1tl-vae.yaml").read_text()) | {"hidden": [8], "latent": 2}
    (d / "small.yaml").write_text(yaml.safe_dump(cfg))
    train(d / "small.yaml", bkg_file, d / "run", epochs=1, max_events=3000, seed=0, float_twin=False,
          log=lambda s: None)
    return d


@pytest.mark.slow  # ~40 s: four alkaid traces + a Verilator build (the selection logic is tested fast above)
def test_budget_search_picks_design_with_verilator_measured_depth(small_run) -> None:
    from trigger_ml.firmware.convert import convert_run

    out = small_run / "rtl"
    res = convert_run(small_run / "run", out, flavor="verilog", budget_ns=50.0, clocks_mhz=(240.0, 320.0),
                      log=lambda s: None)
    man = json.loads((out / "rtl_manifest.json").read_text())
    bs = man["budget_search"]
    ch = bs["chosen"]
    assert bs["measured"]["source"] == "measured (Verilator)"
    assert bs["measured"]["latency_cycles"] == ch["n_stages"] == man["latency_cycles"] == res["latency_cycles"]
    assert bs["measured"]["latency_ns"] <= 50.0 and ch["meets_timing_estimate"] and ch["meets_budget"]
    assert len(bs["candidates"]) >= 2 and {c["clock_mhz"] for c in bs["candidates"]} == {240.0, 320.0}
    ok = [c for c in bs["candidates"] if c["meets_budget"] and c["meets_timing_estimate"]]
    assert (ch["luts_estimate"], ch["ffs_estimate"]) == min((c["luts_estimate"], c["ffs_estimate"]) for c in ok)
    assert man["timing_estimate"]["meets_timing"] and "Vivado" in man["timing_estimate"]["source"]


def test_impossible_budget_refused_and_existing_output_kept(small_run) -> None:
    from trigger_ml.firmware.convert import convert_run

    out = small_run / "rtl_keep"
    convert_run(small_run / "run", out, flavor="verilog", log=lambda s: None)
    before = {p.name: sha256_file(p) for p in out.iterdir() if p.is_file()}
    with pytest.raises(ConfigError) as e:
        convert_run(small_run / "run", out, flavor="verilog", budget_ns=5.0, clocks_mhz=(240.0,), force=True,
                    log=lambda s: None)
    msg = str(e.value)
    assert "\n" not in msg and "5 ns latency budget" in msg and "closest" in msg and "to meet it" in msg
    assert {p.name: sha256_file(p) for p in out.iterdir() if p.is_file()} == before
    assert not [p for p in small_run.iterdir() if p.name.startswith(".rtl_keep")]  # no temporaries left


def test_cli_budget_refusals(small_run) -> None:
    from trigger_ml.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["convert", str(small_run / "run"), "--out", str(small_run / "x"), "--flavor", "verilog",
                            "--budget-ns", "5", "--clock-mhz", "240"])
    assert r.exit_code == 1 and "closest" in f"{r.output} {r.exception}" and not (small_run / "x").exists()
    r = runner.invoke(app, ["convert", str(small_run / "run"), "--out", str(small_run / "y"), "--budget-bx", "2"])
    assert r.exit_code == 1 and "--flavor verilog" in f"{r.output} {r.exception}" and not (small_run / "y").exists()
    r = runner.invoke(app, ["convert", str(small_run / "run"), "--out", str(small_run / "z"), "--flavor", "verilog",
                            "--budget-ns", "50", "--budget-bx", "2"])
    assert r.exit_code == 1 and not (small_run / "z").exists()


def test_search_on_a_traced_graph_schedules_stages_that_fit_the_clock() -> None:
    """The real search path without Verilator: trace → ns schedule → alkaid's cut → estimated timing."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_rtl import _tiny_model

    from trigger_ml.firmware.rtl import trace_comb
    from trigger_ml.firmware.rtl.search import evaluate, fused, schedule, search

    model = _tiny_model()
    comb = fused(trace_comb(model))
    for mhz in (240.0, 600.0):
        sched, n = schedule(comb, 1e3 / mhz)
        _, reg_bits, timing = evaluate(sched, n, 1e3 / mhz)
        assert timing.n_stages == n >= 1 and reg_bits > 0
        assert timing.meets_timing  # no single operation of this tiny model is longer than a stage
    assert schedule(comb, 1e3 / 600.0)[1] >= schedule(comb, 1e3 / 240.0)[1]  # faster clock: no fewer stages
    lines: list[str] = []
    res = search(lambda dc: trace_comb(model, delay_constraint=dc), 25.0, clocks_mhz=(240.0,),
                 delay_constraints=(-1, 0), log=lines.append)
    assert res.chosen is not None and res.chosen.latency_ns <= 25.0 and lines
    with pytest.raises(ConfigError):
        search(lambda dc: comb, -1.0)
