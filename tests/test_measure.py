"""Yosys (yowasp) synth_xilinx measurement of da4ml designs: counts, cache, timeout."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from trigger_ml.core.errors import ArtifactError, TriggerMLError
from trigger_ml.reports.measure import SynthResult, count_resources, synthesize


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
    ticks: list[float] = []
    t0 = time.perf_counter()
    res = synthesize(tiny_design.path, tiny_design.top, family="xcup", cache_dir=synth_cache, progress=ticks.append)
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
    assert 0.9 * d.da4ml_cost <= res.luts <= 1.3 * d.da4ml_cost
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
    # progress ticks: about once a second, increasing, last one = total run time
    assert ticks and ticks == sorted(ticks) and abs(ticks[-1] - res.seconds) < 0.5
    assert res.seconds <= wall


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
    with pytest.raises(TriggerMLError, match=r"timed out .*timeout_s=0\.001"):
        synthesize(tiny_design.path, "model", cache_dir=tmp_path / "fresh", timeout_s=0.001)
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
    assert p.memfiles()
    res = synthesize(p.path, "model", cache_dir=tmp_path / "cache")
    assert res.brams == 0 and res.dsps == 0
    # register bits behind constant table-output bits are removed (measured 204 of 216)
    assert 0.8 * p.reg_bits <= res.ffs <= p.reg_bits
    assert res.luts > 0 and res.cells.get("LUT6", 0) > 0
