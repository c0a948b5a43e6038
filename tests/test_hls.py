"""hls4ml projects from HGQ2 models: bit-exact C simulation, trigger bit, atomic output, manifests.

g++ runs twice in this file (hls4ml's C-simulation library once, the trigger test bench once);
everything else reuses the module-scoped project.
"""

from __future__ import annotations

import json
import os
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from trigger_ml.core import artifacts as mf  # noqa: E402
from trigger_ml.core.errors import ArtifactError, ConfigError  # noqa: E402

N_EVENTS = 1000


def _hgq_model(seed: int = 3):
    """QDense 8 → 4 (relu) → 1 with fixed (non-trainable) bit widths and deterministic weights."""
    import keras
    from hgq.config import LayerConfigScope, QuantizerConfigScope
    from hgq.layers import QDense

    with (
        QuantizerConfigScope(place="weight", q_type="kbi", b0=6, i0=1, trainable=False),
        QuantizerConfigScope(place="bias", q_type="kbi", b0=6, i0=1, trainable=False),
        QuantizerConfigScope(
            place="datalane", q_type="kbi", default_q_type="kbi", b0=8, i0=3, overflow_mode="SAT", trainable=False
        ),
        LayerConfigScope(enable_ebops=False),
    ):
        inp = keras.Input((8,), name="x")
        h = QDense(4, activation="relu", name="d1")(inp)
        out = QDense(1, name="d2")(h)
        model = keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    for layer in model.layers[1:]:
        layer._kernel.assign(rng.normal(0, 1, layer._kernel.shape).astype("float32"))
        layer.bias.assign(rng.normal(0, 0.5, layer.bias.shape).astype("float32"))
    return model


@pytest.fixture(scope="module")
def model():
    return _hgq_model()


@pytest.fixture(scope="module")
def events(model):
    rng = np.random.default_rng(7)
    raw = rng.normal(0, 3, (N_EVENTS, 8)).astype(np.float32)
    xq = np.asarray(model.layers[1].iq(raw, training=False))  # preprocessed inputs: exact in the input type
    return raw, xq


def _keras(model, x):
    return np.asarray(model.predict(x, verbose=0, batch_size=4096), dtype=np.float64)


@pytest.fixture(scope="module")
def threshold(model, events):
    y = _keras(model, events[1]).ravel()
    return float(np.quantile(y, 0.7)) + 1e-4  # off-grid on purpose: exercises the rounding rule


@pytest.fixture(scope="module")
def project(tmp_path_factory, model, events, threshold):
    from trigger_ml.firmware import hls

    out = tmp_path_factory.mktemp("hls") / "prj"
    proj, hls_model = hls.convert(model, out, threshold=threshold, tb_inputs=events[1])
    return proj, hls_model


# ---------------------------------------------------------------------------- project content


def test_project_layout_and_manifest(project, model):
    from trigger_ml.firmware.hls import load_project, model_weights_sha256

    proj, _ = project
    p = proj.path
    for f in ("firmware/myproject.cpp", "firmware/parameters.h", "build_prj.tcl", "myproject_bridge.cpp",
              "firmware/myproject_trigger.cpp", "firmware/trigger_threshold.h", "myproject_trigger_test.cpp"):
        assert (p / f).is_file(), f
    lines_in = (p / "tb_data/tb_input_features.dat").read_text().splitlines()
    lines_out = (p / "tb_data/tb_output_predictions.dat").read_text().splitlines()
    assert len(lines_in) == len(lines_out) == N_EVENTS
    assert all(len(ln.split()) == 8 for ln in lines_in) and all(len(ln.split()) == 1 for ln in lines_out)

    m = mf.read_manifest(p, expect_stage="firmware.hls")
    c = m["config"]
    assert c["backend"] == "Vitis" and c["part"] == "xcvu13p-flga2577-2-e" and c["io_type"] == "io_parallel"
    assert c["model_sha256"] == model_weights_sha256(model)
    assert set(c["precisions"]["d1"]) == {"result", "accum", "weight", "bias"}
    assert c["threshold"]["raw"] == proj.threshold["raw"]
    assert m["versions"]["hls4ml"].startswith("1.3") and m["versions"]["hgq2"]
    assert not list(p.parent.glob(".prj.*")), "temporary directories left behind"
    assert load_project(p) == proj


def test_precisions_come_from_the_model(project, model):
    from trigger_ml.firmware.hls import default_precision_leaks, hls_config_for

    proj, hls_model = project
    cfg = hls_config_for(model)
    kw = dict(backend="Vitis", part=proj.part, clock_ns=proj.clock_ns, io_type=proj.io_type, hls_config=cfg)
    assert default_precision_leaks(model, hls_model, **kw) == []
    # weights: kbi b0=6 (+sign) -> 7 bits; input: 8 bits + sign, SAT, RND (the HGQ2 input quantizer)
    assert proj.precisions["d1"]["weight"].startswith("fixed<7,")
    assert proj.precisions["x"]["result"].startswith("fixed<9,") and "SAT" in proj.precisions["x"]["result"]


def test_default_precision_check_fires_on_plain_keras(tmp_path):
    import keras

    from trigger_ml.firmware import hls

    inp = keras.Input((8,))
    plain = keras.Model(inp, keras.layers.Dense(1)(keras.layers.Dense(4, activation="relu")(inp)))
    out = tmp_path / "plain"
    with pytest.raises(ConfigError, match=r"default precision fixed<16,6>"):
        hls.convert(plain, out, compile=False)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_hls_config_for_reuse(model):
    from trigger_ml.firmware.hls import hls_config_for

    cfg = hls_config_for(model, strategy="resource", reuse_factor={"d1": 4})
    assert cfg["Model"]["Strategy"] == "Resource" and cfg["LayerName"] == {"d1": {"ReuseFactor": 4}}
    assert "Precision" not in cfg.get("LayerName", {}).get("d1", {})
    with pytest.raises(ConfigError, match="unknown layer"):
        hls_config_for(model, reuse_factor={"nope": 2})
    with pytest.raises(ConfigError, match="positive integer"):
        hls_config_for(model, reuse_factor=0)


# ---------------------------------------------------------------------------- bit-exactness


def test_csim_equals_keras_exactly(project, model, events):
    from trigger_ml.firmware.hls import csim_predict, read_tb_file

    proj, hls_model = project
    raw, xq = events
    for x in (xq, raw):  # raw inputs too: the input type carries the HGQ2 input quantizer (RND, SAT)
        y = _keras(model, x)
        assert np.array_equal(csim_predict(hls_model, x), y)
    assert np.array_equal(csim_predict(proj.path, xq), _keras(model, xq))  # re-linked project on disk
    assert np.array_equal(read_tb_file(proj.path / "tb_data/tb_output_predictions.dat"), _keras(model, xq))
    assert np.array_equal(read_tb_file(proj.path / "tb_data/tb_input_features.dat"), xq.astype(np.float64))


def test_trigger_bit_matches_threshold(project, model, events, threshold):
    from trigger_ml.firmware.hls import trigger_csim

    proj, _ = project
    thr = proj.threshold
    lsb = Fraction(2) ** -thr["frac_bits"]
    value = Fraction(thr["raw"]) * lsb
    assert Fraction(thr["value"]) == value  # exactly on the score grid
    assert value <= Fraction(threshold) < value + lsb  # rounded down
    header = (proj.path / "firmware/trigger_threshold.h").read_text()
    assert f"#define TRIGGER_THRESHOLD_RAW {thr['raw']}LL" in header
    assert re.search(r"#define TRIGGER_THRESHOLD_VALUE (\S+)", header).group(1) == repr(thr["value"])

    xq = events[1]
    scores, bits = trigger_csim(proj.path, xq)
    y = _keras(model, xq).ravel()
    assert np.array_equal(scores, y)
    assert np.array_equal(bits, (scores > thr["value"]).astype(np.uint8))
    assert np.array_equal(bits, (y > threshold).astype(np.uint8))  # same decision as the float threshold
    assert 0 < bits.sum() < len(bits)


# ---------------------------------------------------------------------------- atomic output


def test_refuses_to_overwrite_without_force(project, model):
    from trigger_ml.firmware import hls

    proj, _ = project
    before = (proj.path / "manifest.json").read_bytes()
    with pytest.raises(ArtifactError, match=r"exists; pass --force"):
        hls.convert(model, proj.path, compile=False)
    assert (proj.path / "manifest.json").read_bytes() == before


def test_force_overwrites_and_rewrite_keeps_trigger_top(tmp_path, model, events, threshold):
    from trigger_ml.firmware import hls

    out = tmp_path / "p"
    xq = events[1][:50]
    kfn = lambda x: _keras(model, x)  # noqa: E731 - stands in for the bit-exact emulator
    hls.convert(model, out, compile=False, tb_inputs=xq, expected_fn=kfn)
    assert hls.load_project(out).threshold is None
    assert "set_top ${project_name}" in (out / "build_prj.tcl").read_text()

    proj, hls_model = hls.convert(model, out, compile=False, tb_inputs=xq, expected_fn=kfn, threshold=threshold, force=True)
    assert hls.load_project(out).threshold["raw"] == proj.threshold["raw"]
    assert len((out / "tb_data/tb_input_features.dat").read_text().splitlines()) == 50
    assert hls_model.config.get_output_dir() == str(out)
    assert str(tmp_path / ".p.tmp") not in (out / "hls4ml_config.yml").read_text()
    hls_model.write()  # hls4ml regenerates build_prj.tcl / project.tcl: the trigger top must survive
    assert "set_top ${hls_top}" in (out / "build_prj.tcl").read_text()
    assert 'set hls_top "myproject_trigger"' in (out / "project.tcl").read_text()
    assert sorted(q.name for q in tmp_path.iterdir()) == ["p"]


def test_failed_conversion_leaves_nothing(tmp_path, model, monkeypatch):
    from hls4ml.model.graph import ModelGraph

    from trigger_ml.firmware import hls

    def boom(self):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ModelGraph, "write", boom)
    out = tmp_path / "new"
    with pytest.raises(RuntimeError, match="disk full"):
        hls.convert(model, out, compile=False)
    assert list(tmp_path.iterdir()) == []

    # with --force, a failure keeps the previous output intact
    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("previous")
    with pytest.raises(RuntimeError, match="disk full"):
        hls.convert(model, old, compile=False, force=True)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["old"]
    assert (old / "keep.txt").read_text() == "previous"


# ---------------------------------------------------------------------------- manifest helpers


def test_atomic_dir(tmp_path):
    target = tmp_path / "out"
    with mf.atomic_dir(target) as d:
        assert d.parent == tmp_path and d != target
        (d / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1"

    with pytest.raises(ArtifactError) as e:
        with mf.atomic_dir(target):
            pass
    assert "exists; pass --force" in str(e.value) and "\n" not in str(e.value) and str(target) in str(e.value)

    with pytest.raises(ValueError):
        with mf.atomic_dir(target, force=True) as d:
            (d / "b.txt").write_text("2")
            raise ValueError("midway")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (target / "a.txt").is_file()

    with mf.atomic_dir(target, force=True) as d:
        (d / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_manifest_roundtrip_and_errors(tmp_path):
    src = tmp_path / "model.keras"
    src.write_bytes(b"weights-v1")
    d = tmp_path / "stage"
    d.mkdir()
    m = mf.write_manifest(d, "firmware.hls", {"model": src}, {"part": "x", "p": Path("/a")}, {"n": np.int64(3)}, seed=5)
    r = mf.read_manifest(d, expect_stage="firmware.hls")
    assert r == json.loads(json.dumps(m)) and r["inputs"]["model"]["sha256"] == mf.sha256_file(src)
    assert r["figures"]["n"] == 3 and r["seed"] == 5 and r["created"].endswith("+00:00")

    with pytest.raises(ArtifactError, match="expected 'train'"):
        mf.read_manifest(d, expect_stage="train")

    src.write_bytes(b"weights-v2")  # input changed after the stage ran
    with pytest.raises(ArtifactError, match="changed since this stage ran"):
        mf.read_manifest(d)
    assert mf.read_manifest(d, verify_inputs=False)["stage"] == "firmware.hls"

    (d / "manifest.json").write_text('{"stage": "firmware.hls", ')  # truncated JSON
    with pytest.raises(ArtifactError) as e:
        mf.read_manifest(d)
    msg = str(e.value)
    assert "\n" not in msg and str(d / "manifest.json") in msg and "--force" in msg

    (d / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="manifest.json: missing"):
        mf.read_manifest(d)


def test_sha256_dir_is_stable(tmp_path):
    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    (a / "x.txt").write_text("1")
    (a / "sub" / "y.txt").write_text("2")
    h = mf.sha256_dir(a)
    assert h == mf.sha256_dir(a)
    (a / "sub" / "y.txt").rename(a / "sub" / "z.txt")
    assert mf.sha256_dir(a) != h
    assert mf.sha256_dir(a, "*.txt") != mf.sha256_dir(a)
    versions = mf.package_versions()
    assert versions["numpy"] == np.__version__ and "tensorflow" in versions


def test_bad_threshold_or_score_fails_before_building(tmp_path, model):
    from trigger_ml.firmware import hls

    with pytest.raises(ConfigError, match="never fire"):
        hls.convert(model, tmp_path / "a", threshold=1e6)
    with pytest.raises(ConfigError, match="not a model output"):
        hls.convert(model, tmp_path / "b", threshold=0.0, score_output="nope")
    with pytest.raises(ConfigError, match="io_parallel"):
        hls.convert(model, tmp_path / "c", threshold=0.0, io_type="io_stream")
    assert list(tmp_path.iterdir()) == []
