"""Model zoo: every architecture builds, trains briefly, saves/reloads bit-identically; configs validate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trigger_ml.core.errors import ArtifactError, ConfigError
from trigger_ml.models.config import load_model_config

ZOO = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def jets_file(tmp_path_factory):
    from trigger_ml.data.jets import generate_jets, save_jets

    x, y = generate_jets(4000, seed=3)
    return save_jets(tmp_path_factory.mktemp("jets") / "jets.csv", x, y)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, bkg_file, jets_file):
    """All five zoo models, trained for one epoch on small data (the student on the AE teacher)."""
    from trigger_ml.train import train

    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for name in ("adc-dnn-ae", "axol1tl-vae", "adc-cnn-ae", "jet-tagger"):
        data = jets_file if name == "jet-tagger" else bkg_file
        runs[name] = train(ZOO / f"{name}.yaml", data, root / name, epochs=1, max_events=4000, log=lambda s: None,
                           float_twin=name == "adc-dnn-ae")  # one float twin keeps the fast suite fast
    runs["cicada-student"] = train(ZOO / "cicada-student.yaml", bkg_file, root / "student", epochs=1, max_events=4000,
                                   teacher=runs["adc-dnn-ae"], log=lambda s: None, float_twin=False)
    return runs


@pytest.mark.parametrize("name", ["adc-dnn-ae", "axol1tl-vae", "adc-cnn-ae", "jet-tagger", "cicada-student"])
def test_zoo_train_save_reload_bit_identical(trained, name, bkg_file, jets_file):

    from trigger_ml.train import load_artifact

    art = load_artifact(trained[name])
    data = jets_file if name == "jet-tagger" else bkg_file
    x = art.inputs_from_file(data, stop=1000)
    a = art.model.predict(x, verbose=0)
    b = load_artifact(trained[name]).model.predict(x, verbose=0)
    assert np.array_equal(a, b)  # reload is bit-identical
    assert np.isfinite(a).all()
    man = art.manifest
    assert man["figures"]["quantized"]["epochs"] == 1 and man["inputs"]["data"]["sha256"]
    assert ("float" in man["figures"]) == (name == "adc-dnn-ae")
    # the deployed model ends in the score (or class probabilities) computed by quantized layers
    if name in ("adc-dnn-ae", "axol1tl-vae", "adc-cnn-ae"):
        assert a.shape == (1000, 1) and (a >= 0).all()
        assert any(l.name == "score" for l in art.model.layers)
    if name == "jet-tagger":
        assert a.shape == (1000, 5)
        assert np.all(np.abs(a.sum(1) - 1) < 0.1)  # quantized softmax: close to normalised


def test_inputs_exactly_representable(trained, bkg_file):
    """The preprocessing output sits exactly on the firmware input grid (the first layer sees firmware values)."""
    from trigger_ml.train import load_artifact

    art = load_artifact(trained["adc-dnn-ae"])
    x = art.inputs_from_file(bkg_file, stop=2000).astype(np.float64)
    frac = art.input_info["width"] - art.input_info["integer"]
    assert np.array_equal(np.round(x * 2.0**frac), x * 2.0**frac)
    assert np.abs(x).max() < 2.0 ** (art.input_info["integer"] - 1)


def test_mask_layer_masks_padding(trained, bkg_file):
    """Padded objects contribute nothing: changing the reconstruction there leaves the score unchanged."""
    import keras

    from trigger_ml.data import adc2021
    from trigger_ml.train import load_artifact

    art = load_artifact(trained["adc-dnn-ae"])
    ev = adc2021.read_events(bkg_file, stop=500)
    x = art.inputs_from_file(bkg_file, stop=500)
    mask_model = keras.Model(art.model.inputs, art.model.get_layer("score_mask").output)
    m = mask_model.predict(x, verbose=0)
    from trigger_ml.train import padding_mask

    assert np.array_equal(m, padding_mask(ev, art.preprocessing))  # padding = hardware pT 0
    assert m.sum() > 0.1 * m.size and (m == 0).sum() > 0.5 * m.size  # ~3.5 of 19 objects present


def test_onnx_float_reference(trained, bkg_file):
    from trigger_ml.onnx_export import export_float_onnx
    from trigger_ml.train import load_artifact

    x = load_artifact(trained["adc-dnn-ae"]).inputs_from_file(bkg_file, stop=1000)
    r = export_float_onnx(trained["adc-dnn-ae"], x)
    assert r["passed"], r
    assert Path(r["path"]).exists()


def test_config_errors(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nkind: transformer\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: field 'kind'.*'autoencoder'"):
        load_model_config(p)
    p.write_text("name: x\nkind: autoencoder\nquantization: {weight: {bits: 0, integer: 1}}\n")
    with pytest.raises(ConfigError, match=r"field 'quantization\.weight\.bits'"):
        load_model_config(p)
    p.write_text("name: x\nkind: autoencoder\nlatnet: 3\n")
    with pytest.raises(ConfigError, match="latnet"):
        load_model_config(p)


def test_corrupt_artifact_clear_error(trained, tmp_path):
    import shutil

    from trigger_ml.train import load_artifact

    bad = tmp_path / "bad"
    shutil.copytree(trained["adc-dnn-ae"], bad)
    (bad / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ArtifactError, match=r"model\.keras: not a Keras model archive"):
        load_artifact(bad)
    (bad / "manifest.json").write_text("{")
    with pytest.raises(ArtifactError, match=r"manifest\.json"):
        load_artifact(bad)


def test_metrics_tpr_at_fpr_statistics():
    from trigger_ml.core.metrics import clopper_pearson, tpr_at_fpr

    bkg = np.arange(100_000, dtype=float)  # scores 0..99999
    sig = np.r_[np.full(300, 1e6), np.zeros(700)]
    r = tpr_at_fpr(bkg, sig, 1e-4)
    assert r["n_background_above"] == 10 and r["tpr"] == pytest.approx(0.3)
    lo, hi = r["tpr_interval_68"]
    assert lo < 0.3 < hi and (lo, hi) == clopper_pearson(300, 1000)
    assert tpr_at_fpr(bkg[:50_000], sig, 1e-5)["tpr"] is None
