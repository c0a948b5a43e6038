"""Bit-exactness of the firmware emulator (trigger_ml.emulate) against the hls4ml C simulation.

Fast suite: a handful of compiled models (HGQ2 MLP, HGQ2 AE score with merge ops, HGQ2 CNN, plain
Keras with a hand-written hls4ml config and a too-narrow accumulator, 3 random architectures) plus
cheap IR-level property tests (fast path vs reference executor, no compiler).  ``-m slow`` runs 50+
random architectures through g++.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _models as M  # noqa: E402

from trigger_ml.core.errors import TriggerMLError  # noqa: E402
from trigger_ml.core.fixed import FixedType, from_float  # noqa: E402
from trigger_ml.emulate import Emulator  # noqa: E402
from trigger_ml.ir import FirmwareModel, Layer, TensorSpec  # noqa: E402


def _check_bit_exact(c: M.Compiled, n: int = 3000, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """Emulator (fast and reference paths, float32 and float64 inputs) == C-sim, zero tolerance."""
    x = M.make_inputs(c.x, n, seed, scale)
    emu, ref = Emulator(c.fm), Emulator(c.fm, fast=False)
    for xin in (x, x.astype(np.float64)):
        y_hls = M.csim(c.hls_model, xin)
        y_fast = emu.predict(xin)
        y_ref = ref.predict(xin)
        assert y_fast.dtype == y_hls.dtype == xin.dtype
        for y in (y_fast, y_ref):
            mism = int(np.count_nonzero(y.reshape(y_hls.shape) != y_hls))
            assert mism == 0, f"{c.name}: {mism} mismatching values vs the C-sim ({xin.dtype})"
            assert np.array_equal(y.reshape(y_hls.shape), y_hls)
    return x


# ------------------------------------------------------------------------------------------------
# compiled models (hls4ml C-sim)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "ae", "cnn", "plain"])
def test_bit_exact_vs_csim(name: str) -> None:
    c = M.compiled(name)
    _check_bit_exact(c)


@pytest.mark.parametrize("name", ["mlp", "ae", "cnn"])
def test_hgq_keras_matches_csim(name: str) -> None:
    """HGQ2's own Keras predict agrees with the firmware too (HGQ2's bit-exact flow); the emulator is
    what the comparisons elsewhere rely on, this documents the Keras <-> C-sim relation."""
    c = M.compiled(name)
    x = M.make_inputs(c.x, 2000, 1)
    yk = np.asarray(c.model.predict(x, verbose=0)).reshape(x.shape[0], -1)
    ye = Emulator(c.fm).predict(x)
    assert int(np.count_nonzero(yk != ye)) == 0


def test_fast_path_covers_the_compiled_models() -> None:
    """Every layer of the compiled models (merges, conv + pooling, a too-narrow accumulator, table
    activations, batchnorm, softmax) runs on the fast path, as the public plan report says."""
    for name in ("mlp", "ae", "cnn", "plain"):
        emu = Emulator(M.compiled(name).fm)
        report = emu.plan_report()
        assert [e["layer"] for e in report] == M.compiled(name).fm.layer_names
        assert emu.reference_layers == [], f"{name}: layers left to the reference path: {report}"
        assert all(e["path"] == "fast" and e["how"] for e in report)


def test_ae_has_merge_ops_and_score() -> None:
    fm = M.compiled("ae").fm
    ops = {layer.params.get("op") for layer in fm.layers if layer.kind == "merge"}
    assert {"subtract", "multiply"} <= ops
    assert fm.score is not None and fm.score.output == fm.outputs[0].name
    emu = Emulator(fm)
    x = M.make_inputs(M.compiled("ae").x, 500, 3)
    np.testing.assert_array_equal(emu.score(x), emu.predict(x)[:, 0])


def test_cnn_layers_present() -> None:
    kinds = [layer.kind for layer in M.compiled("cnn").fm.layers]
    assert "conv2d" in kinds and "pooling2d" in kinds and "reshape" in kinds and "dense" in kinds


def test_plain_keras_hand_config_tables() -> None:
    fm = M.compiled("plain").fm
    kinds = {layer.kind for layer in fm.layers}
    assert {"table_activation", "softmax", "batchnorm", "dense"} <= kinds
    d = fm.layer("d0")
    assert d.type == FixedType(16, 6, True, "RND", "SAT")
    assert fm.layer(M.PLAIN_NARROW_LAYER).types["accum"] == FixedType(12, 1, True, "TRN", "WRAP")


def test_narrow_accumulator_flagged() -> None:
    """A too-narrow accumulator: emulator and C-sim agree, and overflow_counts names that layer."""
    c = M.compiled("plain")
    x = M.make_inputs(c.x, 2000, 5, scale=0.5)
    x = x[np.abs(x).max(axis=1) < 7]  # inputs inside the input type: only the accumulator overflows
    y_hls = M.csim(c.hls_model, x)
    emu = Emulator(c.fm)
    assert np.array_equal(emu.predict(x), y_hls)
    report = emu.overflow_report(x)
    counts = emu.overflow_counts(x)
    assert report[M.PLAIN_NARROW_LAYER].get("accum", 0) > 0
    assert counts[M.PLAIN_NARROW_LAYER] == max(counts.values())
    for layer in c.fm.layers:
        if layer.kind == "dense" and layer.name != M.PLAIN_NARROW_LAYER:
            assert report[layer.name].get("accum", 0) == 0, (layer.name, report[layer.name])


def test_trace_localises_layers() -> None:
    c = M.compiled("ae")
    x = M.make_inputs(c.x, 64, 7)
    emu = Emulator(c.fm)
    tr = emu.trace(x)
    assert list(tr) == c.fm.layer_names
    for layer in c.fm.layers:
        assert tr[layer.name].shape == (len(x),) + layer.shape
    out = c.fm.outputs[0].name
    assert np.array_equal(tr[out].reshape(len(x), -1), emu.predict(x.astype(np.float64)))


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_random_architectures_fast(seed: int) -> None:
    _check_bit_exact(M.compiled(f"random{seed}"), n=1500, seed=seed)


@pytest.mark.slow
def test_hgq_softmax_classifier() -> None:
    c = M.compiled("softmax")
    assert any(layer.kind == "softmax" and layer.params["implementation"] == "stable" for layer in c.fm.layers)
    _check_bit_exact(c)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3, 56))
def test_random_architectures_slow(seed: int) -> None:
    c = M.compiled(f"random{seed}")
    try:
        _check_bit_exact(c, n=2000, seed=seed)
    finally:
        M._COMPILED.pop(f"random{seed}", None)  # keep memory flat over the long run


# ------------------------------------------------------------------------------------------------
# IR-level properties (no compiler): fast path == reference executor
# ------------------------------------------------------------------------------------------------


def _random_inputs(fm: FirmwareModel, seed: int, n: int = 257) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = fm.inputs[0].type
    x = (rng.normal(size=(n, fm.inputs[0].size)) * 2.0 ** (t.integer - 2)).astype(np.float32)
    x[:3] *= np.float32(1e6)  # overflow the input type
    x[3, 0] = np.float32(np.nan) if seed % 2 else np.float32(1e30)
    return x


def _fast_equals_reference(seed: int) -> None:
    fm = M.random_ir_model(seed)
    fast, ref = Emulator(fm, block=50, threads=2), Emulator(fm, fast=False)
    x = _random_inputs(fm, seed)
    assert np.array_equal(fast.predict(x), ref.predict(x), equal_nan=True)
    raw = from_float(x.astype(np.float64), fm.inputs[0].type)
    assert np.array_equal(fast.predict_raw(raw), ref.predict_raw(raw))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6))
def test_fast_path_equals_reference(seed: int) -> None:
    """Fast (numba) path == reference path on random IR models (each example JIT-compiles kernels)."""
    _fast_equals_reference(seed)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6))
def test_fast_path_equals_reference_many(seed: int) -> None:
    _fast_equals_reference(seed)


def test_chunking_and_threads_do_not_change_results() -> None:
    fm = M.random_ir_model(12345)
    x = _random_inputs(fm, 3, n=5000)
    base = Emulator(fm, fast=False).predict(x)
    for kw in ({"block": 7, "threads": 1}, {"block": 1000, "threads": 2}, {"chunk_size": 33}):
        assert np.array_equal(Emulator(fm, **kw).predict(x), base, equal_nan=True)


def _dense_model(acc: FixedType, res: FixedType, w, b, x_t=FixedType(8, 4)) -> FirmwareModel:
    w = np.asarray(w, dtype=np.int64)
    layers = (
        Layer("x", "input", (), (w.shape[0],), x_t),
        Layer("d", "dense", ("x",), (w.shape[1],), res, types={"weight": FixedType(8, 2), "bias": FixedType(8, 2), "accum": acc},
              params={"n_in": w.shape[0], "n_out": w.shape[1]}, arrays={"weight": w, "bias": np.asarray(b, dtype=np.int64)}),
    )
    return FirmwareModel("d", (TensorSpec("x", (w.shape[0],), x_t),), (TensorSpec("d", (w.shape[1],), res),), layers)


def test_dense_semantics_by_hand() -> None:
    """x = [1.5, -2.0] (raw 24, -32 at frac 4), w = [[0.25], [0.5]] (raw 16, 32 at frac 6), b = 0.25:
    exact sum 1.5*0.25 - 2*0.5 + 0.25 = -0.375."""
    fm = _dense_model(FixedType(20, 8), FixedType(10, 4), [[16], [32]], [16])
    y = Emulator(fm).predict(np.array([[1.5, -2.0]], dtype=np.float64))
    assert y[0, 0] == -0.375
    # an accumulator with 1 fractional bit truncates every product first: floor(0.375)=0, floor(-1)=-1
    # -> 0 - 1 + floor(0.25 -> 0) = -1.0 (products rounded before the sum, bias cast to accum_t)
    fm2 = _dense_model(FixedType(8, 7), FixedType(10, 4), [[16], [32]], [16])
    for fast in (True, False):
        assert Emulator(fm2, fast=fast).predict(np.array([[1.5, -2.0]]))[0, 0] == -1.0


def test_saturating_accumulator_is_sequential() -> None:
    """SAT accumulator: saturation happens step by step in input order (bias first)."""
    acc = FixedType(6, 3, True, "TRN", "SAT")  # range [-4, 3.875]
    fm = _dense_model(acc, FixedType(8, 4), [[64], [64], [-64]], [0], x_t=FixedType(8, 4))
    # 3 + 3 saturates at 3.875, then - 3 -> 0.875 (exact sum would be 3.0)
    x = np.array([[3.0, 3.0, 3.0]])
    for fast in (True, False):
        assert Emulator(fm, fast=fast).predict(x)[0, 0] == 0.875
    assert Emulator(fm).overflow_counts(x)["d"] == 1


def test_input_conversion_matches_from_float() -> None:
    t = FixedType(10, 3, True, "RND_CONV", "SAT_SYM")
    fm = FirmwareModel("id", (TensorSpec("x", (4,), t),), (TensorSpec("x", (4,), t),), (Layer("x", "input", (), (4,), t),))
    x = np.array([[0.0078125 * 3, -100.0, 1e300, -0.01171875], [np.inf, -np.inf, 0.5, -0.0]])
    emu = Emulator(fm)
    assert np.array_equal(emu.quantize_inputs(x), from_float(x, t))
    assert np.array_equal(emu.predict_raw(emu.quantize_inputs(x)), from_float(x, t))
    y = emu.predict(x)
    assert np.array_equal(y, np.ldexp(from_float(x, t).astype(np.float64), -t.frac))
    assert not np.signbit(y[1, 3])  # no negative zeros


def test_bad_inputs_rejected() -> None:
    fm = M.random_ir_model(1)
    emu = Emulator(fm)
    with pytest.raises(TriggerMLError):
        emu.predict(np.zeros((3, fm.inputs[0].size + 1)))
    with pytest.raises(TriggerMLError):
        Emulator(fm, chunk_size=0)
    with pytest.raises(TriggerMLError):
        Emulator("not a model")  # type: ignore[arg-type]


def test_predict_file_streams(tmp_path) -> None:
    h5py = pytest.importorskip("h5py")
    fm = M.random_ir_model(7)
    x = _random_inputs(fm, 1, n=1000)[4:]
    p = tmp_path / "ev.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("Particles", data=x.reshape(len(x), -1, 1))
    emu = Emulator(fm, chunk_size=128)
    y = emu.predict_file(p, transform=lambda b: b.reshape(len(b), -1))
    assert np.array_equal(y, emu.predict(x))
