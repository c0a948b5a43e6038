"""Bring your own model: ``trigger-ml import`` of the real third-party models in
../shared/fixtures/real_models (copied to a temporary directory; the fixtures are read-only)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from trigger_ml.core.errors import ConfigError, DataFormatError, UnsupportedLayerError

REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real_models"
KERAS = REAL / "example-models" / "keras"
ONNX = REAL / "example-models" / "onnx"
QONNX = REAL / "qonnx_model_zoo" / "qkeras_jettagging.onnx"
REFS = REAL / "reference_outputs"

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="shared real-model fixtures not present")


def _copy(tmp_path: Path, *files: Path) -> list[Path]:
    out = []
    for f in files:
        dst = tmp_path / "src" / f.name
        dst.parent.mkdir(exist_ok=True)
        shutil.copy(f, dst)
        out.append(dst)
    return out


def _keras2(tmp_path: Path, stem: str) -> Path:
    return _copy(tmp_path, KERAS / f"{stem}.json", KERAS / f"{stem}_weights.h5")[0]


# ------------------------------------------------------------------ QKeras semantics (no hls4ml)
@pytest.mark.parametrize("stem", ["qkeras_3layer", "qkeras_mnist_cnn"])
def test_qkeras_rebuild_equals_original_qkeras_outputs(tmp_path, stem):
    """The HGQ2 rebuild of the QKeras model gives the original QKeras float outputs exactly
    (reference computed once with QKeras 0.9.0, see SOURCE.md): RND_CONV weights, SAT relu."""
    from trigger_ml.importers.keras2 import read_keras2, rebuild

    model = rebuild(read_keras2(_keras2(tmp_path, stem)))
    ref = np.load(REFS / f"{stem}_reference.npz")
    y = model.predict(ref["x"], batch_size=1000, verbose=0)
    assert y.shape == ref["y"].shape
    assert int((y != ref["y"]).sum()) == 0


def test_qkeras_quantizer_spec_semantics():
    from trigger_ml.importers.keras2 import qkeras_spec

    s = qkeras_spec("quantized_bits(6,0,alpha=1)", "w")
    assert (s.bits, s.integer, s.signed, s.rounding, s.overflow) == (6, 0, True, "RND_CONV", "SAT")
    s = qkeras_spec({"class_name": "quantized_relu", "config": {"bits": 6, "integer": 0}}, "a")
    assert (s.bits, s.integer, s.signed, s.rounding, s.overflow) == (6, 0, False, "RND_CONV", "SAT")
    assert qkeras_spec("quantized_bits(4,0,1,alpha=1)", "w").overflow == "SAT_SYM"
    with pytest.raises(UnsupportedLayerError, match="alpha"):
        qkeras_spec("quantized_bits(6,0,alpha='auto_po2')", "w")


# ------------------------------------------------------------------ end to end (hls4ml + g++)
def test_import_qonnx_cli_matches_csim_and_scores(tmp_path):
    """One command imports the QONNX jet tagger; the directory has the convert layout, the
    emulator equals the C-sim on 10^4 heavily overflowing random events, and the scorer opens it."""
    from typer.testing import CliRunner

    from trigger_ml.cli import app
    from trigger_ml.firmware.hls import load_project
    from trigger_ml.importers.common import count_mismatches, random_inputs
    from trigger_ml.scoring import FirmwareScorer, load_firmware

    (src,) = _copy(tmp_path, QONNX)
    out = tmp_path / "fw"
    r = CliRunner().invoke(app, ["import", str(src), "--out", str(out), "--score", "Softmax_0[0]", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout[r.stdout.index("{"):])
    assert res["format"] == "qonnx" and res["emulator_vs_csim_mismatches"] == 0
    for f in ("firmware_model.json", "preprocessing.json", "input_info.json", "manifest.json",
              "firmware/myproject.cpp", "tb_data/tb_input_features.dat"):
        assert (out / f).is_file(), f
    proj = load_project(out)
    assert proj.project_name == "myproject"
    fm, pre, info = load_firmware(out)
    assert [o.name for o in fm.outputs] == ["Softmax_0"] and fm.score.output == "Softmax_0"
    assert json.loads((out / "preprocessing.json").read_text()) == {"kind": "pipeline", "steps": []}
    man = json.loads((out / "manifest.json").read_text())
    assert any("default precision" in n for n in man["config"]["notes"])
    # quantized by the Quant nodes: 6-bit weights
    dense = [lay for lay in fm.layers if lay.kind == "dense"]
    assert len(dense) == 4 and all(lay.types["weight"].width <= 8 for lay in dense)
    x = random_inputs([fm.inputs[0].type], [fm.inputs[0].shape], 10_000, seed=3)[0]
    chk = count_mismatches(fm, out, x)
    assert chk["mismatching_values"] == 0 and chk["values"] == 10_000 * 5
    s = FirmwareScorer(out).score_inputs(x[:100])
    assert s.dtype == np.int64 and s.shape == (100,)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary left


def test_ir_resolves_onnx_variable_names(tmp_path):
    """hls4ml's ONNX front end names inputs by output variable (``MatMul_0_out0``, ``global_out``);
    the IR wires layers by the producing layer."""
    import hls4ml

    from trigger_ml.importers.onnx import clean_onnx
    from trigger_ml.ir import FirmwareModel, from_hls_model

    model = clean_onnx(str(_copy(tmp_path, ONNX / "conv1d_small_keras.onnx")[0]))
    cfg = hls4ml.utils.config_from_onnx_model(model, granularity="name", backend="Vitis")
    g = hls4ml.converters.convert_from_onnx_model(model, output_dir=str(tmp_path / "p"), hls_config=cfg,
                                                  backend="Vitis", io_type="io_parallel")
    assert g.outputs == ["global_out"]
    fm = from_hls_model(g)
    names = fm.layer_names
    assert fm.outputs[0].name == "Softmax_0" and fm.inputs[0].name == "global_in"
    for lay in fm.layers:
        assert all(i in names for i in lay.inputs)
    assert fm.layer("Relu_0").inputs == ("Conv1D_Conv_0",)
    assert fm.layer("Dense_MatMul_0").inputs == ("Flatten_0",)
    assert FirmwareModel.from_json(fm.to_json()) == fm


# ------------------------------------------------------------------ bad input: one line, nothing written
def test_not_what_the_extension_says(tmp_path):
    from trigger_ml.importers import import_model

    bad = tmp_path / "model.onnx"
    bad.write_text("this is not an onnx file\n")
    with pytest.raises(DataFormatError, match="not a readable ONNX model") as e:
        import_model(bad, tmp_path / "fw", log=lambda s: None)
    assert "\n" not in str(e.value)
    h5 = tmp_path / "m.h5"
    h5.write_text("{}")
    with pytest.raises(DataFormatError, match="not an HDF5 file"):
        import_model(h5, tmp_path / "fw", log=lambda s: None)
    js = tmp_path / "m.json"
    js.write_bytes(b"\x89HDF\r\n")
    with pytest.raises(DataFormatError, match="not a JSON file"):
        import_model(js, tmp_path / "fw", log=lambda s: None)
    pt = tmp_path / "m.pt"
    pt.write_text("x")
    with pytest.raises(DataFormatError, match="unknown model format"):
        import_model(pt, tmp_path / "fw", log=lambda s: None)
    assert not (tmp_path / "fw").exists()


def test_unsupported_layer_is_named(tmp_path):
    from trigger_ml.importers import import_model

    src = _keras2(tmp_path, "KERAS_3layer")
    arch = json.loads(src.read_text())
    arch["config"]["layers"][2]["class_name"] = "LSTM"
    src.write_text(json.dumps(arch))
    with pytest.raises(UnsupportedLayerError, match=r"layer 'fc2_relu' of class LSTM is not supported; supported: ") as e:
        import_model(src, tmp_path / "fw", log=lambda s: None)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "fw").exists()


def test_precision_config_forms(tmp_path):
    from trigger_ml.importers.common import load_precision_config

    ours = tmp_path / "p.yaml"
    ours.write_text("default: ap_fixed<18,8>\nlayers:\n  fc1: {weight: 'ap_fixed<6,3>', result: 'ap_fixed<10,4>'}\n"
                    "  input_1: 'ap_fixed<8,6,AP_RND_CONV,AP_SAT>'\n")
    cfg = load_precision_config(ours)
    assert cfg["Model"]["Precision"] == "ap_fixed<18,8>"
    assert cfg["LayerName"]["fc1"]["Precision"] == {"weight": "ap_fixed<6,3>", "result": "ap_fixed<10,4>"}
    assert cfg["LayerName"]["input_1"]["Precision"] == "ap_fixed<8,6,AP_RND_CONV,AP_SAT>"
    hls = tmp_path / "h.yml"
    hls.write_text("Model: {Precision: 'fixed<16,6>'}\nLayerName: {fc1: {Precision: {weight: 'fixed<6,3>'}}}\n")
    assert load_precision_config(hls)["LayerName"]["fc1"]["Precision"]["weight"] == "fixed<6,3>"
    bad = tmp_path / "b.yaml"
    bad.write_text("default: ap_fixed<8>\n")
    with pytest.raises(ConfigError, match="default"):
        load_precision_config(bad)
    bad.write_text("precision: 3\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_precision_config(bad)


# ------------------------------------------------------------------ the full sweep (slow: g++ per model)
SWEEP = [KERAS / "KERAS_3layer.json", KERAS / "KERAS_3layer_batch_norm.json", KERAS / "KERAS_conv2d_model.json",
         KERAS / "qkeras_3layer.json", KERAS / "hgq_jet_classifier.h5", ONNX / "three_layer_keras.onnx",
         ONNX / "three_layer_pytorch.onnx", ONNX / "conv1d_small_keras.onnx", ONNX / "conv2d_small_keras.onnx",
         QONNX, KERAS / "qkeras_mnist_cnn.json"]


@pytest.mark.slow
@pytest.mark.parametrize("source", SWEEP, ids=lambda p: p.name)
def test_every_fixture_imports_and_matches_csim_on_1e5(tmp_path, source):
    from trigger_ml.importers import import_model
    from trigger_ml.importers.common import count_mismatches, random_inputs
    from trigger_ml.ir import FirmwareModel

    files = [source] + ([source.with_name(source.stem + "_weights.h5")] if source.suffix == ".json" else [])
    src = _copy(tmp_path, *files)[0]
    out = tmp_path / "fw"
    import_model(src, out, log=lambda s: None)
    fm = FirmwareModel.load(out / "firmware_model.json")
    x = random_inputs([s.type for s in fm.inputs], [s.shape for s in fm.inputs], 100_000, seed=11)[0]
    chk = count_mismatches(fm, out, x)
    assert chk["events"] == 100_000
    assert chk["mismatching_values"] == 0


@pytest.mark.slow
def test_resource_strategy_dense_and_conv_emulated(tmp_path):
    """Resource strategy (transposed weights, another summation order) equals Latency arithmetic when
    accum_t wraps: the IR of such a graph matches its C-sim; a saturating accum_t is refused."""
    import hls4ml
    import keras

    from trigger_ml.emulate import Emulator
    from trigger_ml.ir import from_hls_model

    keras.utils.set_random_seed(3)
    x = keras.Input((12, 3), name="x")
    h = keras.layers.Conv1D(4, 3, name="conv")(x)
    h = keras.layers.Activation("relu", name="r")(h)
    h = keras.layers.Flatten(name="f")(h)
    y = keras.layers.Dense(5, name="d")(h)
    m = keras.Model(x, y)
    cfg = hls4ml.utils.config_from_keras_model(m, granularity="name", backend="Vitis")
    for n in ("conv", "d"):
        cfg["LayerName"][n]["Strategy"] = "Resource"
        cfg["LayerName"][n]["ReuseFactor"] = 2
        cfg["LayerName"][n]["Precision"] = {"weight": "ap_fixed<6,2>", "accum": "ap_fixed<10,5>", "result": "ap_fixed<10,5>"}
    g = hls4ml.converters.convert_from_keras_model(m, output_dir=str(tmp_path / "p"), hls_config=cfg, backend="Vitis",
                                                   io_type="io_parallel")
    g.compile()
    fm = from_hls_model(g)
    xs = np.random.default_rng(0).uniform(-40, 40, (20_000, 12, 3))
    ref = np.asarray(g.predict(xs), np.float64).reshape(len(xs), -1)
    got = np.asarray(Emulator(fm).predict(xs), np.float64).reshape(ref.shape)
    assert int((got != ref).sum()) == 0
