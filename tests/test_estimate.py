"""Vendor-tool-free estimates: the analytic hls4ml Latency model, EBOPs, da4ml figures, calibration.

The analytic-model tests use hand-built FirmwareModels whose multiplier / DSP / LUT counts are
derived by hand in the comments (rules in ``trigger_ml/reports/estimate.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from trigger_ml.core.errors import ArtifactError, TriggerMLError  # noqa: E402
from trigger_ml.core.fixed import FixedType  # noqa: E402
from trigger_ml.ir import FirmwareModel, Layer, TensorSpec  # noqa: E402
from trigger_ml.reports import estimate as E  # noqa: E402

X_T = FixedType(8, 3, True)  # 8-bit signed inputs
W_T = FixedType(8, 2, True)
ACC_T = FixedType(16, 8, True)
RES_T = FixedType(12, 6, True)


def _model(layers, n_in=4, in_type=X_T) -> FirmwareModel:
    inp = Layer("x", "input", (), (n_in,), in_type)
    last = layers[-1]
    return FirmwareModel(
        "hand", (TensorSpec("x", (n_in,), in_type),), (TensorSpec(last.name, last.shape, last.type),), (inp, *layers)
    )


def _dense(name, src, weight, bias, acc=ACC_T, res=RES_T) -> Layer:
    w = np.asarray(weight, dtype=np.int64)
    return Layer(name, "dense", (src,), (w.shape[1],), res,
                 types={"weight": W_T, "bias": W_T, "accum": acc},
                 params={"n_in": w.shape[0], "n_out": w.shape[1]},
                 arrays={"weight": w, "bias": np.asarray(bias, dtype=np.int64)})


# ----------------------------------------------------------------------------- product rules


def test_csd_digits() -> None:
    assert [E.csd_digits(n) for n in (0, 1, 2, 3, 5, 7, 45, 63, -45)] == [0, 1, 1, 2, 2, 2, 4, 2, 4]
    # 45 = 64 - 16 - 4 + 1 ; 63 = 64 - 1


def test_classify_product_rules() -> None:
    a = E.AnalyticAssumptions()
    assert E.classify_product(0, 8).kind == "zero"
    assert E.classify_product(45, 0).kind == "zero"  # input pruned by HGQ2 (0 bits)
    assert E.classify_product(16, 8).kind == "shift"  # power of two
    assert E.classify_product(-16, 8).kind == "shift"  # negative power of two: subtraction in the tree
    assert E.classify_product(1, 8).kind == "shift"
    assert E.classify_product(45, 1).kind == "bit"  # 1-bit input: AND gate, absorbed by the adder
    # 40 = 5 << 3: the trailing zeros are a free shift, 5 has 3 significant bits <= 4 -> LUT multiplier,
    # CSD(5) = 4 + 1: one adder as wide as the 8-bit input
    c = E.classify_product(40, 8, True, a)
    assert (c.kind, c.lut, c.dsp, c.levels) == ("lut", 8, 0, 1)
    # narrow input (3 bits) with a wide constant: LUT; CSD(45) has 4 digits -> 3 adders x 3 bits
    c = E.classify_product(45, 3)
    assert (c.kind, c.lut, c.levels) == ("lut", 9, 2)
    # 45 (6 significant bits) x 8-bit input: both > 4 bits -> one DSP48E2 (7 x 8 signed fits 27 x 18)
    c = E.classify_product(45, 8)
    assert (c.kind, c.dsp, c.lut) == ("dsp", 1, 0)
    # unsigned 17-bit input needs 18 signed bits: still one DSP
    assert E.classify_product(45, 17, False).dsp == 1
    # 20-bit constant (21 signed) x 30-bit input: 21 on the 27-bit port, 30 over two 18-bit slices -> 2
    assert E.classify_product((1 << 19) + 1, 30, True).dsp == 2
    # 31-bit constant (32 signed) x 30-bit input: min(2*2, 2*2) = 4 DSPs
    assert E.classify_product((1 << 30) + 1, 30, True).dsp == 4
    # the threshold is a parameter
    assert E.classify_product(45, 8, True, E.AnalyticAssumptions(dsp_min_width=8)).kind == "lut"


def test_levels_per_cycle_and_dsp_cycles() -> None:
    assert E.AnalyticAssumptions(clock_ns=5.0).levels_per_cycle == 3  # (4.375 - 0.4) / 1.0
    assert E.AnalyticAssumptions(clock_ns=3.125).levels_per_cycle == 2
    assert E.AnalyticAssumptions(clock_ns=2.5).levels_per_cycle == 1
    assert E.AnalyticAssumptions(clock_ns=5.0).dsp_cycles == 1
    assert E.AnalyticAssumptions(clock_ns=2.5).dsp_cycles == 2
    with pytest.raises(TriggerMLError):
        E.AnalyticAssumptions(clock_ns=0)


# ----------------------------------------------------------------------------- analytic model


def test_dense_layer_counts_by_hand() -> None:
    # column 0: 0 (free), 4 (shift), -8 (shift), 1 (shift)           -> 0 multipliers, 3 terms
    # column 1: 5 (LUT: CSD 4+1, 8 LUTs), 3 (LUT: CSD 4-1, 8 LUTs),
    #           45 (DSP: 6 x 8 bits), 0 (free); bias 3 != 0           -> 3 multipliers, 4 terms
    w = [[0, 5], [4, 3], [-8, 45], [1, 0]]
    fm = _model([_dense("d", "x", w, [0, 3])])
    est = E.analytic_hls_estimate(fm, clock_ns=5.0)
    row = next(r for r in est.layers if r.layer == "d")
    assert row.multipliers == 3
    assert row.dsp == 1
    assert row.products == {"zero": 2, "shift": 3, "bit": 0, "lut": 2, "dsp": 1}
    assert row.lut_multipliers == 16
    # adders: (3 - 1) + (4 - 1) = 5, each as wide as the 16-bit accumulator
    assert row.lut_adders == 5 * 16
    assert row.lut == 16 + 80
    # tree depth ceil(log2 4) = 2 levels; DSP stage 1 cycle + ceil(2 / 3) = 1 cycle
    assert row.adder_levels == 2
    assert row.cycles == 2
    assert row.ff > 0
    assert est.totals == {"multipliers": 3, "DSP": 1, "LUT": 96, "FF": row.ff, "cycles": 2}
    assert est.latency_ns == pytest.approx(10.0)
    # a faster clock: 1 adder level per cycle and a 2-cycle DSP -> 2 + 2 = 4 cycles
    assert E.analytic_hls_estimate(fm, clock_ns=2.5).totals["cycles"] == 4


def test_free_products_cost_nothing() -> None:
    # only zero / power-of-two weights: no multiplier, no DSP; the adder tree still costs LUTs
    w = [[0, 2], [-4, 0], [1, 0], [0, 0]]
    est = E.analytic_hls_estimate(_model([_dense("d", "x", w, [0, 0])]))
    row = est.layers[-1]
    assert (row.multipliers, row.dsp, row.lut_multipliers) == (0, 0, 0)
    assert row.lut_adders == (2 - 1) * 16  # column 0 sums two terms, column 1 has one
    assert row.cycles == 1
    # an all-zero layer computes nothing (constant bias)
    est0 = E.analytic_hls_estimate(_model([_dense("d", "x", np.zeros((4, 2), int), [1, 2])]))
    assert est0.layers[-1].cycles == 0 and est0.layers[-1].lut == 0


def test_per_element_input_widths_from_quantizer() -> None:
    # HGQ2 quantizer before the dense: widths 8, 0 (pruned), 3, 1 bits
    b = np.array([8, 0, 3, 1])
    q = Layer("q", "quantizer", ("x",), (4,), X_T, params={"rounding": "TRN", "overflow": "WRAP"},
              arrays={"k": np.ones(4, int), "b": b, "i": np.full(4, 3)})
    fm = _model([q, _dense("d", "q", [[45], [45], [45], [45]], [0])])
    row = E.analytic_hls_estimate(fm).layers[-1]
    # x0: DSP; x1: pruned; x2: 3-bit -> LUT, CSD(45) = 4 digits -> 3 x 3 LUTs; x3: 1 bit -> free AND
    assert row.products == {"zero": 1, "shift": 0, "bit": 1, "lut": 1, "dsp": 1}
    assert (row.multipliers, row.dsp, row.lut_multipliers) == (2, 1, 9)
    assert row.lut_adders == (3 - 1) * 16
    # the same model without per-element widths sees four 8-bit inputs: four DSPs
    row = E.analytic_hls_estimate(fm, assumptions=E.AnalyticAssumptions(per_element_inputs=False)).layers[-1]
    assert (row.multipliers, row.dsp) == (4, 4)


def test_model_latency_is_the_sum_and_feeds_the_budget() -> None:
    d1 = _dense("d1", "x", [[45, 3], [0, 5], [2, 0], [7, 9]], [1, 0])
    relu = Layer("r", "activation", ("d1",), (2,), FixedType(8, 4, False), params={"fn": "relu"})
    d2 = _dense("d2", "r", [[11], [13]], [0])
    est = E.analytic_hls_estimate(_model([d1, relu, d2]))
    cycles = {r.layer: r.cycles for r in est.layers}
    assert cycles["x"] == 0 and cycles["r"] == 1
    assert est.totals["cycles"] == sum(cycles.values())
    from trigger_ml.reports.budget import build_budget_profile

    prof = build_budget_profile(est.layer_latencies(), 5.0, 1, budget_bx=2)
    assert prof.total_cycles == est.totals["cycles"]
    assert all(r.source == E.SOURCE_ANALYTIC for r in prof.layers)
    js = est.to_json()
    json.dumps(js)
    assert js["figures"]["LUT"]["source"] == E.SOURCE_ANALYTIC
    assert {r["layer"] for r in js["layers"]} == {"x", "d1", "r", "d2"}


def test_analytic_rejects_unknown_input(tmp_path) -> None:
    with pytest.raises(TriggerMLError):
        E.analytic_hls_estimate(42)
    with pytest.raises(ArtifactError):
        E.analytic_hls_estimate(tmp_path)  # no firmware_model.json


def test_analytic_from_saved_firmware_model(tmp_path) -> None:
    fm = _model([_dense("d", "x", [[0, 5], [4, 3], [-8, 45], [1, 0]], [0, 3])])
    fm.save(tmp_path / "firmware_model.json")
    assert E.analytic_hls_estimate(tmp_path).totals == E.analytic_hls_estimate(fm).totals


# ----------------------------------------------------------------------------- EBOPs and da4ml


def test_ebops_estimate_formulas() -> None:
    out = E.ebops_estimate(1974.0, "alkaid")
    assert out["LUT"].value == 1974 and out["LUT"].source == E.SOURCE_EBOPS
    out = E.ebops_estimate(E.Figure(1974.0, "EBOPs", "x"), "hls4ml", dsp=15)
    assert out["LUT+55DSP"].value == 1974
    assert out["LUT"].value == 1974 - 55 * 15
    assert E.ebops_estimate(100.0, "hls4ml", dsp=10)["LUT"].value == 0  # never negative
    assert "LUT" not in E.ebops_estimate(100.0, "hls4ml")
    with pytest.raises(TriggerMLError):
        E.ebops_estimate(-1.0)
    with pytest.raises(TriggerMLError):
        E.ebops_estimate(1.0, "vhdl-magic")


def test_da4ml_estimate_from_manifest(tmp_path) -> None:
    (tmp_path / "rtl_manifest.json").write_text(json.dumps(
        {"da4ml_cost": 45808.4, "reg_bits": 8716, "latency_cycles": 7, "clock_ns": 5.0, "latency_cutoff": 5.0}))
    f = E.da4ml_estimate(tmp_path)
    assert f["LUT"].value == 45808 and f["FF"].value == 8716
    assert f["latency_cycles"].value == 7 and f["latency_ns"].value == 35.0
    assert all(fig.source == E.SOURCE_DA4ML for k, fig in f.items() if k != "clock_ns")
    with pytest.raises(ArtifactError):
        E.da4ml_estimate(tmp_path / "nothing")
    (tmp_path / "rtl_manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt"):
        E.da4ml_estimate(tmp_path)


def test_calibrate_relative_errors_and_comparability() -> None:
    from trigger_ml.reports.vendor import parse_vendor_reports

    # reference numbers of the 57-32-8-32-57 AE (module docstring), used here as test data
    da = {"LUT": E.Figure(45808, "LUT", E.SOURCE_DA4ML), "FF": E.Figure(8716, "FF", E.SOURCE_DA4ML),
          "latency_cycles": E.Figure(6, "cycles", E.SOURCE_DA4ML)}
    synth = {"luts": 52970, "ffs": 8659, "source": "measured (yosys 0.70 synth_xilinx -family xcup)"}
    rows = E.calibrate(da4ml=da, synth=synth, verilator_cycles=6)
    by = {(r["figure"], r["estimate_source"]): r for r in rows}
    assert by[("LUT", E.SOURCE_DA4ML)]["rel_error"] == pytest.approx((45808 - 52970) / 52970)
    assert by[("FF", E.SOURCE_DA4ML)]["rel_error"] == pytest.approx((8716 - 8659) / 8659)
    assert by[("latency_cycles", E.SOURCE_DA4ML)]["rel_error"] == 0.0
    assert "LUT" in E.format_calibration(rows)

    # the vendor fixture is io_stream / Resource: never comparable with the analytic Latency model
    vendor = parse_vendor_reports(Path(__file__).parent / "fixtures" / "vendor_reports" / "vivado_hls_2019.2_pynq_autoencoder")
    est = E.analytic_hls_estimate(_model([_dense("d", "x", [[0, 5], [4, 3], [-8, 45], [1, 0]], [0, 3])]))
    rows = E.calibrate(analytic=est, ebops=1000.0, vendor=vendor, hls_io_type="io_stream", hls_strategy="Resource")
    assert rows and all(r["comparable"] is False and r["rel_error"] is None for r in rows)
    assert "io_stream" in rows[0]["note"]
    rows = E.calibrate(analytic=est, vendor=vendor)  # unknown project settings: not comparable either
    assert all(r["comparable"] is False for r in rows) and "unknown" in rows[0]["note"]
    rows = E.calibrate(analytic=est, vendor=vendor, hls_io_type="io_parallel", hls_strategy="Latency")
    lut = next(r for r in rows if r["figure"] == "LUT")
    assert lut["comparable"] and lut["rel_error"] == pytest.approx((96 - 33365) / 33365)
    assert E.relative_error(1.0, 0) is None and E.relative_error(None, 1.0) is None


# ----------------------------------------------------------------------------- with HGQ2 / hls4ml


@pytest.fixture(scope="module")
def tiny_hgq():
    """QDense 8 -> 4 (relu) -> 1 with fixed bit widths, converted by hls4ml (no C compile)."""
    import keras
    from hgq.config import QuantizerConfigScope
    from hgq.layers import QDense

    with (
        QuantizerConfigScope(place="weight", q_type="kbi", b0=6, i0=1, trainable=False),
        QuantizerConfigScope(place="bias", q_type="kbi", b0=6, i0=1, trainable=False),
        QuantizerConfigScope(place="datalane", q_type="kbi", default_q_type="kbi", b0=8, i0=3, overflow_mode="SAT",
                             trainable=False),
    ):
        inp = keras.Input((8,), name="x")
        h = QDense(4, activation="relu", name="d1")(inp)
        model = keras.Model(inp, QDense(1, name="d2")(h))
    rng = np.random.default_rng(3)
    for layer in model.layers[1:]:
        layer._kernel.assign(rng.normal(0, 1, layer._kernel.shape).astype("float32"))
        layer.bias.assign(rng.normal(0, 0.5, layer.bias.shape).astype("float32"))
    return model


def test_model_ebops_recomputes_without_training(tiny_hgq) -> None:
    import keras
    from keras import ops

    stored = sum(float(ops.convert_to_numpy(layer.ebops)) for layer in tiny_hgq.layers if hasattr(layer, "ebops"))
    assert stored == 0.0  # never trained: HGQ2 has not stored anything yet
    before = [keras.ops.convert_to_numpy(v) for v in tiny_hgq.weights]
    value = E.model_ebops(tiny_hgq)
    assert value > 0
    assert all(np.array_equal(a, keras.ops.convert_to_numpy(b)) for a, b in zip(before, tiny_hgq.weights))  # no state change
    fig = E.ebops_of(tiny_hgq)
    assert fig.value == value and fig.unit == "EBOPs"
    # HGQ2's own number after one training-mode call is the same
    tiny_hgq(np.zeros((2, 8), np.float32), training=True)
    assert E.model_ebops(tiny_hgq, recompute=False) == pytest.approx(value)
    est = E.ebops_estimate(fig, "alkaid")
    assert est["LUT"].value == round(value)


def test_analytic_on_converted_hls4ml_graph(tiny_hgq, tmp_path) -> None:
    from trigger_ml.firmware import hls
    from trigger_ml.ir import from_hls_model

    _, graph = hls.convert(tiny_hgq, tmp_path / "prj", compile=False)
    fm = from_hls_model(graph)
    est = E.analytic_hls_estimate(graph, clock_ns=5.0)
    assert est.totals == E.analytic_hls_estimate(fm, clock_ns=5.0).totals
    # every weight is classified exactly once; multipliers = LUT + DSP products; the count of
    # non-free products is computed independently from the IR here
    n_nonfree = 0
    for layer in fm.layers:
        if layer.kind != "dense":
            continue
        row = next(r for r in est.layers if r.layer == layer.name)
        w = np.asarray(layer.arrays["weight"])
        assert sum(row.products.values()) == w.size
        src = fm.layer(layer.inputs[0])
        m = np.abs(w[w != 0])
        odd = m // (m & -m)
        n_nonfree += int(np.count_nonzero(odd > 1)) if src.type.width > 1 else 0
        assert row.multipliers == row.products["lut"] + row.products["dsp"]
    assert est.totals["multipliers"] == n_nonfree
    assert est.totals["cycles"] >= 3  # two dense layers and a ReLU
