"""Deployed firmware published only as hls4ml-generated C++: hls4ml writes a mixed-precision project
inside the test (narrow accumulators, saturating/rounding input, unsigned ReLU outputs, a Resource
dense, batch norm, an elementwise square), it is imported from its C++ files alone and the
emulator must equal the project's own C simulation bit for bit on 10^5 heavily overflowing inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from trigger_ml.core.errors import DataFormatError, UnsupportedLayerError


def _write_project(out: Path, compile_: bool = False):
    import hls4ml
    import keras

    keras.utils.set_random_seed(5)
    x = keras.Input((16,), name="inp")
    h = keras.layers.Dense(32, name="dense1")(x)
    h = keras.layers.Activation("relu", name="relu1")(h)
    h = keras.layers.Dense(8, name="dense2")(h)
    h = keras.layers.Activation("relu", name="relu2")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h2 = keras.layers.Dense(4, name="dense3")(h)
    y = keras.layers.Multiply(name="sq")([h2, h2])
    m = keras.Model(x, y)
    rng = np.random.default_rng(1)
    m.get_layer("bn").set_weights([rng.uniform(0.5, 2, 8), rng.normal(size=8), rng.normal(size=8),
                                   rng.uniform(0.5, 2, 8)])
    cfg = hls4ml.utils.config_from_keras_model(m, granularity="name", backend="Vitis")
    L = cfg["LayerName"]
    L["inp"]["Precision"] = {"result": "ap_fixed<8,6,AP_RND_CONV,AP_SAT>"}
    for d in ("dense1", "dense2", "dense3"):  # products have 5 fractional bits, accumulators 4
        L[d]["Precision"] = {"weight": "ap_fixed<6,3>", "bias": "ap_fixed<6,3>", "accum": "ap_fixed<12,8>",
                             "result": "ap_fixed<12,8>"}
    L["dense2"]["Strategy"] = "Resource"
    L["relu1"]["Precision"] = {"result": "ap_ufixed<10,7>"}
    L["relu2"]["Precision"] = {"result": "ap_ufixed<10,7>"}
    L["bn"]["Precision"] = {"scale": "ap_fixed<8,3>", "bias": "ap_fixed<8,3>", "result": "ap_fixed<10,5>"}
    L["sq"]["Precision"] = {"result": "ap_fixed<12,6,AP_RND,AP_SAT>"}
    hm = hls4ml.converters.convert_from_keras_model(m, output_dir=str(out), hls_config=cfg, backend="Vitis",
                                                    io_type="io_parallel", project_name="myproject")
    hm.write()
    if compile_:
        hm.compile()
    return hm


def _cpp_only(project: Path, dst: Path) -> Path:
    """Only what a publication of deployed firmware holds: the generated C++ and weights."""
    dst.mkdir()
    shutil.copytree(project / "firmware", dst / "firmware",
                    ignore=shutil.ignore_patterns("*.so", "nnet_utils", "ap_types"))
    return dst


@pytest.fixture(scope="module")
def cpp_project(tmp_path_factory):
    d = tmp_path_factory.mktemp("cpp")
    _write_project(d / "hls")
    return _cpp_only(d / "hls", d / "published")


def test_import_cpp_only_matches_own_csim_on_1e5_overflowing(cpp_project, tmp_path):
    from trigger_ml.emulate import Emulator
    from trigger_ml.importers import import_model
    from trigger_ml.importers.common import random_inputs
    from trigger_ml.importers.hls4ml_project import build_csim, read_project
    from trigger_ml.scoring import load_firmware

    out = tmp_path / "fw"
    res = import_model(cpp_project, out, score="sq[0]", tb_events=500, log=lambda s: None)
    assert res["format"] == "hls4ml C++" and res["emulator_vs_csim_mismatches"] == 0
    fm, _, _ = load_firmware(out)
    assert [lay.kind for lay in fm.layers] == ["input", "dense", "activation", "dense", "activation", "batchnorm",
                                               "dense", "merge"]
    assert fm.inputs[0].type.to_hls() == "ap_fixed<8,6,AP_RND_CONV,AP_SAT>"
    assert fm.layer("relu1").type.to_hls() == "ap_ufixed<10,7>"
    assert fm.layer("dense1").types["accum"].frac == 4 and fm.layer("dense1").types["weight"].frac == 3
    man = json.loads((out / "manifest.json").read_text())
    assert man["stage"] == "firmware.hls" and man["config"]["project_name"] == "myproject"

    x = random_inputs([fm.inputs[0].type], [fm.inputs[0].shape], 100_000, seed=5)[0]
    ref = build_csim(read_project(out), out / "firmware").predict(x)  # the build made by the import
    emu = Emulator(fm)
    got = np.asarray(emu.predict(x), np.float64).reshape(ref.shape)
    assert int((got != ref).sum()) == 0
    ov = emu.overflow_report(x[:20_000])
    assert ov["inp"]["input"] > 20_000  # the input type saturates on a large fraction of the values
    assert ov["sq"]["result"] > 0 and ov["bn"]["result"] > 0


def test_unsupported_nnet_call_is_named(cpp_project, tmp_path):
    from trigger_ml.importers import import_model

    src = tmp_path / "p"
    shutil.copytree(cpp_project, src)
    cpp = src / "firmware" / "myproject.cpp"
    cpp.write_text(cpp.read_text().replace("nnet::relu<", "nnet::hard_tanh<", 1))
    with pytest.raises(UnsupportedLayerError, match=r"layer 'relu1' \(nnet::hard_tanh\) is not supported; supported"):
        import_model(src, tmp_path / "fw", log=lambda s: None)
    assert not (tmp_path / "fw").exists()
    (src / "firmware" / "parameters.h").unlink()
    with pytest.raises(DataFormatError, match="firmware/parameters.h"):
        from trigger_ml.importers.hls4ml_project import read_project

        read_project(src)


@pytest.mark.slow
def test_own_csim_harness_equals_hls4ml_bridge(tmp_path):
    """The g++ harness computes what hls4ml's own compile()/predict() computes (slow: two builds)."""
    from trigger_ml.importers.hls4ml_project import build_csim, read_project

    hm = _write_project(tmp_path / "hls", compile_=True)
    src = read_project(_cpp_only(tmp_path / "hls", tmp_path / "pub"))
    x = np.random.default_rng(0).uniform(-200, 200, (100_000, 16))
    a = build_csim(src, tmp_path).predict(x)
    b = np.asarray(hm.predict(x), np.float64).reshape(a.shape)
    assert int((a != b).sum()) == 0


def test_scale_input_layer_equals_ap_fixed_cpp(tmp_path):
    """``(x - offset) >> shift`` inside a declared ap_fixed type (half-integer offsets, negative
    shifts = left shifts that wrap, truncation) as an IR layer: the emulator equals the C++ compiled
    with the ap_fixed headers, on 2*10^5 values that overflow the work type often."""
    import ctypes
    import subprocess

    from trigger_ml.core.fixed import FixedType, from_float
    from trigger_ml.emulate import Emulator
    from trigger_ml.importers.hls4ml_project import _ap_types_dir
    from trigger_ml.ir import FirmwareModel, Layer, TensorSpec

    t_in, t_work, t_off = (FixedType.parse("ap_fixed<12,10>"), FixedType.parse("ap_fixed<10,6,AP_RND,AP_WRAP>"),
                           FixedType.parse("ap_fixed<10,8>"))
    t_out = FixedType.parse("ap_fixed<8,4,AP_RND_CONV,AP_SAT>")
    offsets = [33.5, -2.25, 0.0, 7.75, 120.5]
    shifts = [1, -2, 0, 3, -1]
    layers = (Layer("x", "input", (), (5,), t_in),
              Layer("scaled", "scale_input", ("x",), (5,), t_out, types={"work": t_work, "offset": t_off},
                    arrays={"offset": from_float(np.array(offsets), t_off), "shift": np.array(shifts)}))
    fm = FirmwareModel("scaler", (TensorSpec("x", (5,), t_in),), (TensorSpec("scaled", (5,), t_out),), layers)
    assert FirmwareModel.from_json(fm.to_json()) == fm
    cpp = tmp_path / "s.cpp"
    cpp.write_text(
        '#include "ap_fixed.h"\n'
        "typedef ap_fixed<12,10> in_t; typedef ap_fixed<10,6,AP_RND,AP_WRAP> work_t; typedef ap_fixed<10,8> offset_t;\n"
        "typedef ap_fixed<8,4,AP_RND_CONV,AP_SAT> out_t;\n"
        f"static const offset_t off[5] = {{{', '.join(map(str, offsets))}}};\n"
        f"static const int sh[5] = {{{', '.join(map(str, shifts))}}};\n"
        'extern "C" void run(int n, const double* x, double* y) {\n'
        "  for (int i = 0; i < n * 5; i++) { in_t v = x[i]; work_t d = v - off[i % 5]; d = d >> sh[i % 5];\n"
        "    out_t r = d; y[i] = r.to_double(); }\n}\n")
    lib = tmp_path / "s.so"
    subprocess.run(["g++", "-O1", "-shared", "-fPIC", f"-I{_ap_types_dir(tmp_path)}", str(cpp), "-o", str(lib)],
                   check=True, capture_output=True)
    x = np.random.default_rng(2).uniform(-600, 600, (40_000, 5))
    ref = np.zeros_like(x)
    p = ctypes.POINTER(ctypes.c_double)
    ctypes.cdll.LoadLibrary(str(lib)).run(ctypes.c_int(len(x)), x.ctypes.data_as(p), ref.ctypes.data_as(p))
    emu = Emulator(fm)
    got = np.asarray(emu.predict(x), np.float64)
    assert int((got != ref).sum()) == 0
    assert emu.overflow_report(x)["scaled"]["work"] > 10_000
