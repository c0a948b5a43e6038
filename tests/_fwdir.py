"""A small firmware directory without training or hls4ml, for trigger / Dask / C++-export tests.

The IR is written by hand (the demo VAE's shape, smaller): 57 preprocessed inputs → dense → ReLU →
dense (μ) → quantizer → μ² (merge multiply) → Σ (dense with unit weights) = the score, with the
preprocessing (hardware quantizer + integer scaler) fitted on background events. It is what
``trigger-ml convert`` writes as far as :class:`trigger_ml.scoring.FirmwareScorer` is concerned
(``firmware_model.json``, ``preprocessing.json``, ``input_info.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def vae_like_model(seed: int = 0, n_in: int = 57, hidden: int = 16, latent: int = 6, in_type=None,
                   narrow: bool = False):
    """A demo-VAE-like FirmwareModel (score Σμ²); ``narrow`` uses accumulators narrower than the
    products (each product rounded on its own, saturating), as deployed hls4ml precisions do."""
    from trigger_ml.core.fixed import FixedType
    from trigger_ml.ir import FirmwareModel, Layer, TensorSpec

    rng = np.random.default_rng(seed)
    in_t = in_type or FixedType(19, 12, True)
    wt = FixedType(8, 2, True)
    bt = FixedType(7, 1, True)

    def w(shape):
        return rng.integers(-100, 101, size=shape, dtype=np.int64)

    acc0 = FixedType(18, 12, True, "RND", "SAT") if narrow else FixedType(30, 17, True)
    acc1 = FixedType(16, 9, True, "RND_CONV", "SAT") if narrow else FixedType(23, 11, True)
    layers = [
        Layer("inputs", "input", (), (n_in,), in_t),
        Layer("enc0", "dense", ("inputs",), (hidden,), FixedType(24, 17, True), types={"weight": wt, "bias": bt, "accum": acc0},
              params={"n_in": n_in, "n_out": hidden}, arrays={"weight": w((n_in, hidden)) // 4, "bias": w((hidden,)) // 2}),
        Layer("enc0_relu", "activation", ("enc0",), (hidden,), FixedType(12, 6, False, "RND", "SAT"), params={"fn": "relu"}),
        Layer("mu", "dense", ("enc0_relu",), (latent,), FixedType(19, 9, True), types={"weight": wt, "bias": bt, "accum": acc1},
              params={"n_in": hidden, "n_out": latent}, arrays={"weight": w((hidden, latent)), "bias": w((latent,)) // 2}),
        Layer("mu_q", "quantizer", ("mu",), (latent,), FixedType(19, 10, True), params={"rounding": "RND", "overflow": "SAT"},
              arrays={"k": np.ones(latent, np.int64), "b": np.full(latent, 12, np.int64), "i": np.full(latent, 6, np.int64)}),
        Layer("score_square", "merge", ("mu_q", "mu_q"), (latent,), FixedType(24, 14, False, "RND", "SAT"),
              params={"op": "multiply", "n_elem1": latent, "n_elem2": latent}),
        Layer("score", "dense", ("score_square",), (1,), FixedType(28, 18, False),
              types={"weight": FixedType(1, 1, False), "bias": FixedType(2, 32, False), "accum": FixedType(28, 18, False)},
              params={"n_in": latent, "n_out": 1}, arrays={"weight": np.ones((latent, 1), np.int64), "bias": np.zeros(1, np.int64)}),
    ]
    return FirmwareModel("vae_like", (TensorSpec("inputs", (n_in,), in_t),), (TensorSpec("score", (1,), layers[-1].type),),
                         tuple(layers), score=None)


def make_firmware_dir(path: Path, bkg_file, seed: int = 0, narrow: bool = False) -> Path:
    """Write a firmware directory at ``path`` (fits the preprocessing on the first 5000 events of ``bkg_file``)."""
    from trigger_ml.core.constants import INPUT_INFO_FILE, IR_FILE, PREPROCESSING_FILE
    from trigger_ml.core.fixed import FixedType
    from trigger_ml.data import preprocess as P
    from trigger_ml.data.adc2021 import read_events

    pre = P.Pipeline([P.HardwareQuantizer(), P.IntegerScaler()]).fit(read_events(bkg_file, stop=5000))
    ot = pre.steps[-1].output_type()
    in_t = FixedType(int(ot["width"]), int(ot["integer"]), bool(ot["signed"]))
    fm = vae_like_model(seed, in_type=in_t, narrow=narrow)
    fm = fm.with_score("score", 0, None)
    path = Path(path)
    path.mkdir(parents=True)
    fm.save(path / IR_FILE)
    (path / PREPROCESSING_FILE).write_text(json.dumps(pre.to_json()))
    (path / INPUT_INFO_FILE).write_text(json.dumps(ot))
    return path
