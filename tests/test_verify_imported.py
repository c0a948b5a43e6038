"""`trigger-ml verify FIRMWARE_DIR`: a directory written by `trigger-ml import` is cross-checked on its
own (no training run): IR emulator vs the C simulation (hls4ml's compile()/predict() of an imported
ONNX model; the project's own C++ compiled with g++ for a C++-only import), on seeded random
inputs that overflow, on `--inputs X.npy`, or on events through the recorded preprocessing."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from trigger_ml.core.errors import TriggerMLError

REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real_models"
ONNX = REAL / "example-models" / "onnx" / "three_layer_keras.onnx"


def _cli(*args: str):
    from typer.testing import CliRunner

    from trigger_ml.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _json(r) -> dict:
    return json.loads(r.stdout[r.stdout.index("{"):])


@pytest.fixture(scope="module")
def onnx_fw(tmp_path_factory):
    if not ONNX.is_file():
        pytest.skip("shared real-model fixtures not present")
    from trigger_ml.importers import import_model

    d = tmp_path_factory.mktemp("onnx")
    shutil.copy(ONNX, d / ONNX.name)
    import_model(d / ONNX.name, d / "fw", tb_events=200, log=lambda s: None)
    return d / "fw"


def test_verify_imported_onnx_cli_random_and_inputs(onnx_fw, tmp_path, bkg_file):
    """10^4 seeded random inputs (a third overflowing): emulator == hls4ml C-sim, counted exactly,
    with the overflow report; --inputs X.npy; the input choice is refused in one line when wrong."""
    rep = tmp_path / "verify.json"
    r = _cli("verify", onnx_fw, "--random", 10_000, "--seed", 7, "--json", "--report", rep)
    assert r.exit_code == 0, r.output
    res = _json(r)
    assert res["kind"] == "firmware" and res["stages"] == ["csim", "emulator"] and res["source_format"] == "onnx"
    assert "hls4ml C simulation" in res["csim"]
    p = res["exact_pairs"]["csim:emulator"]
    assert p["n_events"] == 10_000 and p["n_values"] == 50_000 and p["mismatches"] == 0
    assert res["total_mismatches"] == 0 and "localization" not in res
    assert res["input_source"] == {"kind": "random", "n": 10_000, "seed": 7, "note": res["input_source"]["note"]}
    ov = res["overflow"]
    assert ov["n_events"] == 10_000 and ov["layers"]["global_in"]["input"] > 2000  # the overflowing third
    assert json.loads(rep.read_text())["stage"] == "verify"

    x = np.random.default_rng(2).normal(0, 4, (3000, 16))
    np.save(tmp_path / "x.npy", x)
    r = _cli("verify", onnx_fw, "--inputs", tmp_path / "x.npy", "--n-events", 1200)
    assert r.exit_code == 0, r.output
    assert "x.npy rows 0-1,200" in r.output and "overflow report (1,200 inputs)" in r.output

    np.save(tmp_path / "bad.npy", x[:, :7])
    for args, msg in [(("--inputs", tmp_path / "bad.npy"), "takes 16"),
                      ((), "give exactly one of --events"),
                      (("--random", 10, "--inputs", tmp_path / "x.npy"), "give exactly one of"),
                      (("--events", bkg_file), "give the model inputs with --inputs"),
                      (("--random", 10, "--hls", onnx_fw), "verified on its own")]:
        r = _cli("verify", onnx_fw, *args)  # a TriggerMLError: the entry point prints its one line, exit 1
        assert r.exit_code == 1 and isinstance(r.exception, TriggerMLError) and msg in str(r.exception), (args, r)


def test_verify_imported_counts_and_localizes_a_mismatch(onnx_fw, tmp_path):
    """The check can fail: an IR whose ReLU saturates where the C++ wraps differs from the C-sim on
    exactly the events where that ReLU overflows; exit 1, localized as an overflow."""
    from trigger_ml.core.fixed import FixedType
    from trigger_ml.emulate import Emulator
    from trigger_ml.importers.common import random_inputs
    from trigger_ml.ir import FirmwareModel
    from trigger_ml.verify import verify

    fw = tmp_path / "fw"
    shutil.copytree(onnx_fw, fw)  # mtimes kept: the built C-sim library stays valid
    fm = FirmwareModel.load(fw / "firmware_model.json")
    relu = fm.layer("Relu_0")
    sat = dataclasses.replace(relu, type=FixedType.parse("ap_fixed<16,6,AP_TRN,AP_SAT>"))
    bad_fm = dataclasses.replace(fm, layers=tuple(sat if lay.name == "Relu_0" else lay for lay in fm.layers))
    bad_fm.save(fw / "firmware_model.json")
    res = verify(fw, n_random=2000, seed=3, log=lambda s: None)
    x = random_inputs([fm.inputs[0].type], [fm.inputs[0].shape], 2000, 3)[0]
    ref = np.asarray(Emulator(fm).predict(x), np.float64).reshape(2000, -1)  # the unmodified IR == the C-sim
    got = np.asarray(Emulator(bad_fm).predict(x), np.float64).reshape(2000, -1)
    p = res["exact_pairs"]["csim:emulator"]
    assert p["mismatches"] == int((ref != got).sum()) > 0 and res["total_mismatches"] == p["mismatches"]
    assert p["mismatched_events"] == int((ref != got).any(1).sum())
    loc = res["localization"]
    assert loc["kind"] == "overflow" and loc["overflow_counts"]["Relu_0"]["result"] > 0
    r = _cli("verify", fw, "--random", 2000, "--seed", 3)
    assert r.exit_code == 1 and "bit-exact mismatches" in str(r.exception)


def _cpp_only_project(tmp: Path, n_in: int) -> Path:
    """hls4ml writes (no compile) a small mixed-precision project; only its generated C++ is kept."""
    import hls4ml
    import keras

    keras.utils.set_random_seed(4)
    x = keras.Input((n_in,), name="inp")
    h = keras.layers.Dense(8, name="d1")(x)
    h = keras.layers.Activation("relu", name="r1")(h)
    y = keras.layers.Dense(1, name="d2")(h)
    m = keras.Model(x, y)
    cfg = hls4ml.utils.config_from_keras_model(m, granularity="name", backend="Vitis")
    L = cfg["LayerName"]
    L["inp"]["Precision"] = {"result": "ap_fixed<10,8,AP_RND_CONV,AP_SAT>"}
    for d in ("d1", "d2"):  # products have 5 fractional bits, accumulators 3
        L[d]["Precision"] = {"weight": "ap_fixed<6,3>", "bias": "ap_fixed<6,3>", "accum": "ap_fixed<14,11>",
                             "result": "ap_fixed<14,11>"}
    L["r1"]["Precision"] = {"result": "ap_ufixed<8,6>"}
    hls4ml.converters.convert_from_keras_model(m, output_dir=str(tmp / "hls"), hls_config=cfg, backend="Vitis",
                                               io_type="io_parallel", project_name="myproject").write()
    dst = tmp / "published"
    dst.mkdir()
    shutil.copytree(tmp / "hls" / "firmware", dst / "firmware",
                    ignore=shutil.ignore_patterns("*.so", "nnet_utils", "ap_types"))
    return dst


def test_verify_cpp_only_import_on_events_and_random(tmp_path, bkg_file):
    """A C++-only import (no hls4ml_config.yml) with a recorded preprocessing: `verify` runs events
    through it and compares the emulator with the project's own C++ (g++) bit for bit; the firmware
    directory is not written."""
    from trigger_ml.data import preprocess as P
    from trigger_ml.data.adc2021 import read_events
    from trigger_ml.importers import import_model
    from trigger_ml.verify import verify

    pre = P.Pipeline([P.HardwareQuantizer(), P.IntegerScaler()]).fit(read_events(bkg_file, stop=2000))
    (tmp_path / "pre.json").write_text(json.dumps(pre.to_json()))
    fw = tmp_path / "fw"
    import_model(_cpp_only_project(tmp_path, 57), fw, preprocessing=tmp_path / "pre.json", tb_events=200,
                 log=lambda s: None)
    before = sorted((p.relative_to(fw), p.stat().st_mtime_ns) for p in fw.rglob("*"))
    lines: list[str] = []
    res = verify(fw, bkg_file, n_events=5000, log=lines.append)
    assert res["stages"] == ["csim", "emulator"] and "own generated C++" in res["csim"]
    assert res["input_source"]["kind"] == "events" and res["n_events"] == 5000
    assert "training run unknown" in res["input_source"]["note"]
    p = res["exact_pairs"]["csim:emulator"]
    assert p["n_events"] == 5000 and p["mismatches"] == 0 and res["total_mismatches"] == 0
    res = verify(fw, n_random=10_000, log=lines.append)
    assert res["exact_pairs"]["csim:emulator"]["mismatches"] == 0 and res["overflow"]["values"] > 0
    assert sorted((p.relative_to(fw), p.stat().st_mtime_ns) for p in fw.rglob("*")) == before
    assert any("C simulation: the project's own" in s for s in lines)


KERAS = REAL / "example-models" / "keras"


@pytest.mark.slow
@pytest.mark.parametrize("files,fmt,n", [(("hgq_jet_classifier.h5",), "hgq1", 100_000),
                                         (("qkeras_3layer.json", "qkeras_3layer_weights.h5"), "qkeras", 10_000),
                                         (("KERAS_3layer.json", "KERAS_3layer_weights.h5"), "keras2", 10_000)])
def test_verify_imported_keras_model_stage(tmp_path, files, fmt, n):
    """The Keras model a Keras 2 import rebuilt is a verify stage. HGQ-1 (quantized outputs): Keras
    model == C-sim == emulator bit for bit on 10^5 overflowing inputs (the model receives them cast
    to the firmware input type, as the firmware does). The QKeras jet tagger's float softmax is compared statistically (said); a float Keras 2
    model is the float reference."""
    if not KERAS.is_dir():
        pytest.skip("shared real-model fixtures not present")
    from trigger_ml.importers import import_model
    from trigger_ml.verify import verify

    for f in files:
        shutil.copy(KERAS / f, tmp_path / f)
    fw = tmp_path / "fw"
    import_model(tmp_path / files[0], fw, tb_events=200, log=lambda s: None)
    assert (fw / "keras_model.keras").is_file()
    lines: list[str] = []
    res = verify(fw, n_random=n, log=lines.append)
    assert res["source_format"] == fmt and res["exact_pairs"]["csim:emulator"]["mismatches"] == 0
    assert all(p["n_events"] == n for p in res["exact_pairs"].values())
    if fmt == "hgq1":
        assert set(res["exact_pairs"]) == {"csim:keras", "csim:emulator", "keras:emulator"}
        assert res["total_mismatches"] == 0 and res["keras_inputs"].endswith("ap_fixed<12,5>")
        assert res["overflow"]["layers"]["input_1"]["input"] > 0  # the inputs overflow, the model still agrees
    elif fmt == "qkeras":
        assert set(res["exact_pairs"]) == {"csim:emulator"} and "keras" in res["stages"]
        assert res["keras_vs_csim"]["pearson"] > 0.9 and any("not quantized" in s for s in lines)
    else:
        assert res["stages"] == ["csim", "emulator", "float"] and "quantized_vs_float" in res
        assert res["total_mismatches"] == 0
