"""FirmwareModel IR: JSON round trip, schema validation, TF-free emulation, unsupported layers, and the
lookup tables checked entry by entry against hls4ml's own C++ initialisers (g++)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _models as M  # noqa: E402

from trigger_ml import ir  # noqa: E402
from trigger_ml.core.errors import ArtifactError, TriggerMLError, UnsupportedLayerError  # noqa: E402
from trigger_ml.core.fixed import FixedType  # noqa: E402
from trigger_ml.emulate import Emulator  # noqa: E402
from trigger_ml.ir import FirmwareModel, Layer  # noqa: E402
from trigger_ml.ir import tables as ir_tables  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# serialisation
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ae", "plain"])
def test_json_round_trip_identical_predictions(name: str, tmp_path) -> None:
    c = M.compiled(name)
    fm = c.fm
    again = FirmwareModel.from_json(fm.to_json())
    assert again == fm
    p = fm.save(tmp_path / "fm.json")
    loaded = FirmwareModel.load(p)
    assert loaded == fm
    assert loaded.to_json() == fm.to_json()
    x = M.make_inputs(c.x, 1000, 11)
    y = Emulator(loaded).predict(x)
    assert np.array_equal(y, Emulator(fm).predict(x))
    assert np.array_equal(y, M.csim(c.hls_model, x))


def test_json_schema_keys() -> None:
    d = json.loads(M.compiled("ae").fm.to_json())
    assert d["format"] == ir.FORMAT and d["schema_version"] == ir.SCHEMA_VERSION
    assert set(d) == {"format", "schema_version", "name", "meta", "inputs", "outputs", "layers", "score", "threshold"}
    for layer in d["layers"]:
        assert set(layer) == {"name", "kind", "hls_class", "inputs", "shape", "type", "types", "params", "arrays"}
        for arr in layer["arrays"].values():
            assert all(isinstance(v, int) for v in arr["data"])
    dense = next(x for x in d["layers"] if x["kind"] == "dense")
    assert {"weight", "bias", "accum"} <= set(dense["types"])
    assert FixedType.parse(dense["type"]).width >= 1


def test_load_validates(tmp_path) -> None:
    fm = M.random_ir_model(3)
    d = fm.to_dict()
    bad = dict(d, schema_version=999)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(ArtifactError, match="schema_version"):
        FirmwareModel.load(p)
    p.write_text("{not json")
    with pytest.raises(ArtifactError):
        FirmwareModel.load(p)
    with pytest.raises(ArtifactError, match="not found"):
        FirmwareModel.load(tmp_path / "missing.json")
    broken = dict(d)
    broken["layers"] = d["layers"][:1] + d["layers"][2:]  # a layer reading a missing input
    with pytest.raises(ArtifactError):
        FirmwareModel.from_dict(broken)
    wrong = json.loads(json.dumps(d))
    wrong["layers"][1]["arrays"] = {"weight": {"shape": [2, 2], "data": [1, 2, 3]}}
    with pytest.raises(ArtifactError):
        FirmwareModel.from_dict(wrong)


def test_ir_is_immutable() -> None:
    fm = M.random_ir_model(4)
    layer = fm.layers[1]
    with pytest.raises(Exception):
        layer.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        layer.params["foo"] = 1  # type: ignore[index]
    for a in layer.arrays.values():
        assert not a.flags.writeable


def test_score_and_threshold() -> None:
    fm = M.random_ir_model(5)
    t = fm.outputs[0].type
    s = fm.with_score(threshold=7)
    assert s.score.output == fm.outputs[0].name and s.threshold == 7
    f = fm.with_score(threshold=1.0)
    assert f.threshold == (1 << t.frac if t.frac >= 0 else 1 >> -t.frac)
    assert FirmwareModel.from_json(f.to_json()) == f
    with pytest.raises(ArtifactError):
        fm.with_score(output="nope")
    with pytest.raises(TriggerMLError):
        FirmwareModel(fm.name, fm.inputs, fm.outputs, fm.layers, None, 3)
    emu = Emulator(s)
    x = np.random.default_rng(0).normal(size=(100, fm.inputs[0].size))
    assert np.array_equal(emu.trigger(x), emu.predict_raw(emu.quantize_inputs(x))[:, 0] > 7)
    assert np.array_equal(emu.score_raw(x), emu.predict_raw(emu.quantize_inputs(x))[:, 0])  # float64 path == raw path


def test_from_hls_model_score_threshold() -> None:
    c = M.compiled("ae")
    fm = ir.from_hls_model(c.hls_model, score_output=c.hls_model.outputs[0], threshold=0.5)
    t = fm.score_type
    assert fm.threshold == int(np.floor(0.5 * 2.0**t.frac))
    assert fm.meta["io_type"] == "io_parallel"


# ------------------------------------------------------------------------------------------------
# the emulator runs without TensorFlow / Keras / hls4ml
# ------------------------------------------------------------------------------------------------


def test_emulator_runs_without_tensorflow(tmp_path) -> None:
    c = M.compiled("ae")
    x = M.make_inputs(c.x, 500, 13)
    c.fm.save(tmp_path / "fm.json")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", M.csim(c.hls_model, x))
    code = textwrap.dedent(
        f"""
        import sys
        for mod in ("tensorflow", "keras", "hls4ml", "hgq", "tf_keras", "jax", "torch"):
            sys.modules[mod] = None  # any import of these now raises ImportError
        import numpy as np
        from trigger_ml.ir import FirmwareModel
        from trigger_ml.emulate import Emulator
        fm = FirmwareModel.load({str(tmp_path / 'fm.json')!r})
        x = np.load({str(tmp_path / 'x.npy')!r})
        y = Emulator(fm).predict(x)
        assert np.array_equal(y, np.load({str(tmp_path / 'y.npy')!r})), "mismatch"
        assert Emulator(fm, fast=False).overflow_counts(x) is not None
        bad = [m for m in ("tensorflow", "keras", "hls4ml") if sys.modules.get(m) is not None]
        assert not bad, bad
        print("OK")
        """
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]


# ------------------------------------------------------------------------------------------------
# unsupported layers
# ------------------------------------------------------------------------------------------------


def test_unsupported_hls4ml_layer_is_named(tmp_path) -> None:
    import keras

    inp = keras.Input((6,), name="x")
    h = keras.layers.Dense(4, name="d0")(inp)
    out = keras.layers.Activation("hard_sigmoid", name="my_hard_sigmoid")(h)
    model = keras.Model(inp, out)
    hm = M.convert(model, tmp_path / "unsup", M.hand_config(model), compile=False)
    with pytest.raises(UnsupportedLayerError) as exc:
        ir.from_hls_model(hm)
    msg = str(exc.value)
    assert "my_hard_sigmoid" in msg and "HardActivation" in msg


def test_unknown_kind_rejected() -> None:
    with pytest.raises(UnsupportedLayerError, match="weird"):
        Layer("w", "weird", (), (1,), FixedType(8, 4))
    d = M.random_ir_model(1).to_dict()
    d["layers"][1]["kind"] = "lstm"
    with pytest.raises(UnsupportedLayerError, match="lstm"):
        FirmwareModel.from_dict(d)


# ------------------------------------------------------------------------------------------------
# lookup tables == hls4ml's C++ initialisers (every entry)
# ------------------------------------------------------------------------------------------------

_TABLE_CASES = [
    ("sigmoid", 1024, FixedType(18, 8)),
    ("sigmoid", 512, FixedType(10, 1, False, "RND", "SAT")),
    ("tanh", 1024, FixedType(18, 8)),
    ("tanh", 2048, FixedType(12, 2, True, "RND_CONV", "SAT")),
    ("softplus", 1024, FixedType(16, 6, True, "RND")),
    ("softsign", 256, FixedType(14, 2)),
    ("elu", 1024, FixedType(18, 8)),
    ("selu", 1024, FixedType(18, 8, True, "RND", "SAT")),
]
_SOFTMAX_CASES = [
    # (impl, exp_size, inv_size, exp_scale, data_t / inp_norm_t, exp_table_t, inv_table_t, inv_inp_t)
    ("stable", 1024, 512, 1.0, FixedType(10, 4, True, "RND"), FixedType(8, 2, False, "RND_CONV", "SAT"),
     FixedType(8, 2, False, "RND_CONV", "SAT"), FixedType(9, 3, True, "RND")),
    ("stable", 1024, 1024, 1.0, FixedType(11, 3, False), FixedType(18, 8, True, "RND", "SAT"),
     FixedType(18, 8, True, "RND", "SAT"), FixedType(18, 8, True, "RND", "SAT")),
    ("latency", 1024, 1024, 0.5, FixedType(16, 6), FixedType(18, 8, True, "RND", "SAT"),
     FixedType(18, 8, True, "RND", "SAT"), FixedType(18, 8, True, "RND", "SAT")),
]


def _cpp_type(t: FixedType) -> str:
    return f"ap_{'' if t.signed else 'u'}fixed<{t.width},{t.integer},AP_{t.rounding},AP_{t.overflow},{t.sat_bits}>"


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_tables_match_hls4ml_cpp(tmp_path) -> None:
    import hls4ml

    tpl = Path(hls4ml.__file__).parent / "templates" / "vivado"
    head = ["#include <cstdio>", '#include "ap_fixed.h"', '#include "nnet_utils/nnet_activation.h"']
    body = ["int main() {"]
    for k, (fn, n, t) in enumerate(_TABLE_CASES):
        head.append(f"struct C{k} {{ static const unsigned table_size = {n}; typedef {_cpp_type(t)} table_t; }};")
        body.append(f"  {{ static C{k}::table_t tab[{n}]; nnet::init_{fn}_table<C{k}, {n}>(tab);")
        body.append(f'    for (int i = 0; i < {n}; i++) std::printf("%.17g\\n", tab[i].to_double()); }}')
    for k, (impl, ne, ni, sc, dt, et, it, iit) in enumerate(_SOFTMAX_CASES):
        head.append(f"struct S{k} {{ static const unsigned exp_table_size = {ne}; static const unsigned inv_table_size = {ni};")
        head.append(f"  static constexpr float exp_scale = {sc}; typedef {_cpp_type(et)} exp_table_t; typedef {_cpp_type(it)} inv_table_t; }};")
        body.append(f"  {{ static S{k}::exp_table_t e[{ne}]; static S{k}::inv_table_t v[{ni}];")
        body.append(f"    nnet::init_exp_table<{_cpp_type(dt)}, S{k}>(e, {'true' if impl == 'stable' else 'false'});")
        body.append(f"    nnet::init_invert_table<{_cpp_type(iit)}, S{k}>(v);")
        body.append(f'    for (int i = 0; i < {ne}; i++) std::printf("%.17g\\n", e[i].to_double());')
        body.append(f'    for (int i = 0; i < {ni}; i++) std::printf("%.17g\\n", v[i].to_double()); }}')
    src = head + body
    src.append("  return 0; }")
    (tmp_path / "t.cpp").write_text("\n".join(src))
    exe = tmp_path / "t"
    r = subprocess.run(["g++", "-O1", "-std=c++14", f"-I{tpl / 'ap_types'}", f"-I{tpl}", str(tmp_path / "t.cpp"), "-o", str(exe)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    vals = np.array([float(v) for v in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()])
    pos = 0
    for fn, n, t in _TABLE_CASES:
        mine = np.ldexp(ir.build_tables(fn, n, t).astype(np.float64), -t.frac)
        assert np.array_equal(mine, vals[pos : pos + n]), (fn, n, t, np.nonzero(mine != vals[pos : pos + n])[0][:10])
        pos += n
    for impl, ne, ni, sc, dt, et, it, iit in _SOFTMAX_CASES:
        types = {"exp_table": et, "inv_table": it, "inv_inp": iit, "inp_norm": dt}
        e, v = ir_tables._softmax_tables(impl, types, ne, ni, sc, dt)
        assert np.array_equal(np.ldexp(e.astype(np.float64), -et.frac), vals[pos : pos + ne]), (impl, "exp")
        pos += ne
        assert np.array_equal(np.ldexp(v.astype(np.float64), -it.frac), vals[pos : pos + ni]), (impl, "inv")
        pos += ni
    assert pos == len(vals)
