"""C++ emulator export for CMSSW: the generated hls4mlEmulator::Model, built with g++ against the ap_types
headers and a minimal emulator.h (as CMSSW's hls4mlEmulatorExtras declares it), loaded through
create_model() (dlopen, as ModelLoader does) and compared with the Python emulator bit for bit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from trigger_ml.core.errors import UnsupportedLayerError  # noqa: E402
from trigger_ml.core.fixed import FixedType  # noqa: E402
from trigger_ml.emulate import Emulator  # noqa: E402
from trigger_ml.emulate.export_cpp import default_ap_types_dir, export_cpp  # noqa: E402
from trigger_ml.ir import FirmwareModel, Layer, TensorSpec  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("g++") is None or shutil.which("make") is None, reason="needs g++ and make")

# hls4mlEmulator::Model as CMSSW declares it (hls4mlEmulatorExtras/include/hls4ml/emulator.h)
EMULATOR_H = """#ifndef HLS4ML_EMULATOR_H_
#define HLS4ML_EMULATOR_H_
#include <any>
namespace hls4mlEmulator {
class Model {
 public:
  virtual void prepare_input(std::any input) = 0;
  virtual void predict() = 0;
  virtual void read_result(std::any result) = 0;
  virtual ~Model() = default;
};
typedef Model* create_model_cls();
typedef void destroy_model_cls(Model*);
}  // namespace hls4mlEmulator
#endif
"""


@pytest.fixture(scope="module")
def emulator_include(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmssw_include")
    (d / "emulator.h").write_text(EMULATOR_H)
    return d


def build(fm: FirmwareModel, out: Path, include: Path) -> dict:
    """Export, `make NAME.so driver`; the export summary."""
    info = export_cpp(fm, out)
    r = subprocess.run(["make", "-s", "-C", str(out), f"EMULATOR_INCLUDE={include}", info["library"], "driver"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return info


def run_cpp(out: Path, info: dict, x_raw: np.ndarray) -> tuple[np.ndarray, dict]:
    """The exported library on raw inputs, through create_model / prepare_input / predict / read_result."""
    np.ascontiguousarray(x_raw, np.int64).tofile(out / "in.bin")
    r = subprocess.run([str(out / "driver"), str(out / info["library"]), str(out / "in.bin"), str(out / "out.bin")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return np.fromfile(out / "out.bin", np.int64).reshape(len(x_raw), -1), json.loads(r.stderr.strip().splitlines()[-1])


def mismatches(fm: FirmwareModel, out: Path, include: Path, n: int, seed: int = 0) -> tuple[int, dict]:
    """Events (random raw inputs over the whole input range: overflows included) where C++ != Python."""
    info = build(fm, out, include)
    t = fm.inputs[0].type
    x = np.random.default_rng(seed).integers(t.raw_min, t.raw_max + 1, size=(n, fm.inputs[0].size), dtype=np.int64)
    got, stats = run_cpp(out, info, x)
    ref = np.asarray(Emulator(fm).predict_raw(x, reference=True)).astype(np.int64).reshape(n, -1)  # the oracle
    return int(np.count_nonzero((got != ref).any(1))), stats


def test_ap_types_headers_found():
    d = default_ap_types_dir()
    assert d is not None and (d / "ap_fixed.h").is_file()


@pytest.mark.parametrize("narrow,n", [(False, 100_000), (True, 100_000)], ids=["wide-accum-1e5", "narrow-accum-1e5"])
def test_vae_like_bit_exact(tmp_path, emulator_include, narrow, n):
    """The demo-VAE-like model (Σμ² score), wide WRAP accumulators (vectorised path) and narrow
    saturating ones (each product rounded, saturating sums): 0 mismatches on 10^5 events against the
    reference executor (the oracle)."""
    from _fwdir import vae_like_model

    n_mis, stats = mismatches(vae_like_model(3, narrow=narrow), tmp_path / "cpp", emulator_include, n, seed=1)
    assert n_mis == 0 and stats["events"] == n


@pytest.mark.parametrize("seed", [0, 5, *(pytest.param(s, marks=pytest.mark.slow) for s in (2, 11, 13, 17, 19, 23))])
def test_random_ir_models_bit_exact(tmp_path, emulator_include, seed):
    """Random IR models (conv2d, quantizers, dense with wide or narrow accumulators in every rounding and
    overflow mode, batch norm, merges, ReLU) on 2·10^4 events."""
    from _models import random_ir_model

    n_mis, _ = mismatches(random_ir_model(seed), tmp_path / "cpp", emulator_include, 20_000, seed=seed)
    assert n_mis == 0


def _t(rng, wmin, wmax, imin, imax, signed=True):
    from _models import ALL_OVERFLOW, ALL_ROUNDING

    return FixedType(int(rng.integers(wmin, wmax + 1)), int(rng.integers(imin, imax + 1)), signed,
                     str(rng.choice(ALL_ROUNDING)), str(rng.choice(ALL_OVERFLOW)))


def kinds_model(seed: int) -> FirmwareModel:
    """Every other layer kind the export supports, on branches of one input, concatenated into one output:
    leaky/PReLU/bounded/thresholded ReLU, table activation, unary LUT, dot, average / max pooling,
    global pooling, transpose, per-channel batch norm, average / maximum / minimum / subtract merges."""
    rng = np.random.default_rng(seed)
    x_t = FixedType(10, 4, True, "RND", "SAT")
    L = [Layer("x", "input", (), (16,), x_t)]
    pt = FixedType(8, 1, True)

    def add(name, kind, ins, shape, t, **kw):
        L.append(Layer(name, kind, ins, shape, t, **kw))

    add("a1", "activation", ("x",), (16,), _t(rng, 6, 14, 2, 6), types={"param": pt}, params={"fn": "leaky_relu", "param_raw": 19})
    add("a2", "activation", ("x",), (16,), _t(rng, 6, 14, 2, 6), params={"fn": "relu_max", "max_int": 3})
    add("a3", "activation", ("x",), (16,), _t(rng, 6, 14, 2, 6), types={"param": pt}, params={"fn": "thresholded_relu", "param_raw": 77})
    add("a4", "activation", ("x",), (16,), _t(rng, 6, 14, 2, 6), types={"param": pt}, params={"fn": "prelu"},
        arrays={"alpha": rng.integers(-128, 128, 16)})
    tt = FixedType(12, 2, True)
    add("t1", "table_activation", ("x",), (16,), _t(rng, 6, 12, 0, 3), types={"table": tt},
        params={"fn": "sigmoid", "table_size": 128, "range_div": 16, "offset": 64},
        arrays={"table": rng.integers(tt.raw_min, tt.raw_max + 1, 128)})
    add("u1", "unary_lut", ("x",), (16,), _t(rng, 6, 12, 0, 3), types={"table": tt},
        arrays={"table": rng.integers(tt.raw_min, tt.raw_max + 1, 1 << x_t.width)})
    add("d1", "dot", ("x", "a1"), (1,), _t(rng, 10, 20, 4, 10), types={"accum": _t(rng, 8, 20, 3, 9)})
    add("r1", "reshape", ("x",), (8, 2), x_t, params={"target_shape": [8, 2]})
    pool = dict(n_in=8, n_filt=2, pool_width=3, stride_width=2, pad_left=1, pad_right=1, count_pad=False)
    add("p1", "pooling1d", ("r1",), (4, 2), _t(rng, 8, 14, 3, 6), types={"accum": _t(rng, 10, 18, 4, 8)}, params=pool | {"op": "average"})
    add("p2", "pooling1d", ("r1",), (4, 2), _t(rng, 8, 14, 3, 6), types={"accum": _t(rng, 10, 18, 4, 8)}, params=pool | {"op": "max"})
    add("g1", "global_pooling1d", ("r1",), (2,), _t(rng, 8, 14, 3, 6), types={"accum": _t(rng, 10, 18, 4, 8)},
        params={"n_pixels": 8, "n_filt": 2, "op": "average"})
    add("tr", "transpose", ("r1",), (2, 8), _t(rng, 6, 12, 2, 5), params={"perm": [1, 0]})
    st, bt = FixedType(8, 2, True), FixedType(8, 3, True)
    add("bn", "batchnorm", ("r1",), (8, 2), _t(rng, 8, 16, 3, 8), types={"scale": st, "bias": bt}, params={"n_filt": 2},
        arrays={"scale": rng.integers(-128, 128, 2), "bias": rng.integers(-128, 128, 2)})
    merged = []
    for op, other in (("average", "a2"), ("maximum", "a3"), ("minimum", "a4"), ("subtract", "t1"), ("add", "u1")):
        add(f"m_{op}", "merge", ("x", other), (16,), _t(rng, 8, 16, 3, 8), params={"op": op, "n_elem1": 16, "n_elem2": 16})
        merged.append(f"m_{op}")
    parts = ["a1", "a2", "a3", "a4", "t1", "u1", "d1", "p1", "p2", "g1", "tr", "bn", *merged]
    flat = []
    for p in parts:
        layer = next(lay for lay in L if lay.name == p)
        if len(layer.shape) > 1:
            add(f"{p}_flat", "reshape", (p,), (layer.size,), layer.type, params={"target_shape": [layer.size]})
            flat.append(f"{p}_flat")
        else:
            flat.append(p)
    sizes = [next(lay for lay in L if lay.name == p).size for p in flat]
    out_t = FixedType(16, 7, True, "RND_CONV", "SAT_SYM")
    add("out", "concatenate", tuple(flat), (sum(sizes),), out_t, params={"axis": 0})
    return FirmwareModel(f"kinds{seed}", (TensorSpec("x", (16,), x_t),), (TensorSpec("out", (sum(sizes),), out_t),), tuple(L))


def test_every_other_kind_bit_exact(tmp_path, emulator_include):
    fm = kinds_model(0)
    assert Emulator(fm).predict_raw(np.zeros((1, 16), np.int64)).shape[1] == fm.outputs[0].size  # the oracle runs it
    n_mis, _ = mismatches(fm, tmp_path / "cpp", emulator_include, 20_000, seed=4)
    assert n_mis == 0


def test_unsupported_layer_refused_in_one_line_before_any_output(tmp_path):
    from _fwdir import vae_like_model

    fm = vae_like_model(0)
    sm = Layer("probs", "softmax", ("score",), (1,), FixedType(16, 6), params={"implementation": "latency"})
    bad = FirmwareModel("bad", fm.inputs, (TensorSpec("probs", (1,), sm.type),), fm.layers + (sm,))
    with pytest.raises(UnsupportedLayerError) as err:
        export_cpp(bad, tmp_path / "cpp")
    msg = str(err.value)
    assert "'probs'" in msg and "softmax" in msg and "\n" not in msg
    assert not (tmp_path / "cpp").exists()


def test_cli_export_emulator_from_a_firmware_directory(tmp_path, bkg_file, emulator_include):
    """`trigger-ml export-emulator FIRMWARE_DIR --out DIR`; the export refuses to overwrite without --force."""
    from typer.testing import CliRunner

    from _fwdir import make_firmware_dir
    from trigger_ml.cli import app

    fw = make_firmware_dir(tmp_path / "fw", bkg_file)
    r = CliRunner().invoke(app, ["export-emulator", str(fw), "--out", str(tmp_path / "cpp"), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["class"] == "vae_like_emulator" and res["input_t"] == "ap_fixed<%d,%d>" % (
        FirmwareModel.load(fw / "firmware_model.json").inputs[0].type.width,
        FirmwareModel.load(fw / "firmware_model.json").inputs[0].type.integer)
    assert (tmp_path / "cpp" / "vae_like_emulator.cpp").is_file() and (tmp_path / "cpp" / "Makefile").is_file()
    src = (tmp_path / "cpp" / "vae_like_emulator.cpp").read_text()
    for s in ("public hls4mlEmulator::Model", "virtual void prepare_input(std::any input)", "virtual void predict()",
              "virtual void read_result(std::any result)", 'extern "C" hls4mlEmulator::Model* create_model()',
              'extern "C" void destroy_model(hls4mlEmulator::Model* m)', "std::any_cast<input_t*>",
              "std::any_cast<result_t*>"):
        assert s in src, s
    again = CliRunner().invoke(app, ["export-emulator", str(fw), "--out", str(tmp_path / "cpp")])
    assert again.exit_code == 1 and "exists; pass --force" in str(again.exception)
