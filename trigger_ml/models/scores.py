"""Deployable anomaly-score layers: the score is part of the firmware graph, built from quantized layers.

* :func:`masked_sse` — sum over the 57 inputs of the squared reconstruction error, with zero-padded
  objects masked (∝ the masked MSE; a sum instead of a mean so that no 1/57 constant is needed).
  The mask is computed *in the graph* from the scaled pT input: for a padded object the scaled pT
  equals the known constant c = -offset·2^-shift, and z = x_pt·2^shift + offset is the hardware
  pT integer, so a fixed power-of-two dense layer followed by a 1-bit unsigned saturating
  quantizer gives mask = min(z, 1) ∈ {0, 1} exactly.
* :func:`sum_squares` — Σ μᵢ² for the AXOL1TL-style VAE (encoder means).

Every constant weight is a power of two or 1, exactly representable, and the layers are frozen.
"""

from __future__ import annotations

import keras
import numpy as np
from hgq.config import QuantizerConfig
from hgq.layers import QDense, QMultiply, QSubtract

from trigger_ml.models.quant import LayerQuant


def _frozen_dense(units: int, kernel: np.ndarray, bias: np.ndarray | None, name: str, kq_bits: tuple[int, int, bool],
                  bq_bits: tuple[int, int] | None, iq_conf, oq_conf=None) -> QDense:
    b, i, k = kq_bits
    kq = QuantizerConfig("kbi", "weight", k0=k, b0=b, i0=i, round_mode="RND", overflow_mode="SAT",
                         trainable=False, bc=None, br=None)
    kw = dict(kq_conf=kq, iq_conf=iq_conf, beta0=0.0, name=name, use_bias=bias is not None, trainable=False)
    if bias is not None:
        bb, bi = bq_bits
        kw["bq_conf"] = QuantizerConfig("kbi", "bias", k0=True, b0=bb, i0=bi, round_mode="RND", overflow_mode="SAT",
                                        trainable=False, bc=None, br=None)
    if oq_conf is not None:
        kw.update(enable_oq=True, oq_conf=oq_conf)
    layer = QDense(units, **kw)
    layer._trigger_ml_weights = (kernel, bias)  # set after build, see apply_frozen_weights
    return layer


def apply_frozen_weights(model) -> None:
    """Write the constant kernels/biases of the frozen score layers (after the model is built)."""
    for layer in model.layers:
        w = getattr(layer, "_trigger_ml_weights", None)
        if w is not None:
            kernel, bias = w
            layer.kernel.assign(kernel.astype("float32"))
            if bias is not None:
                layer.bias.assign(bias.astype("float32"))


def _bits_for(v: float) -> int:
    return int(np.ceil(np.log2(max(abs(v), 1.0) + 1)))


def _float_score(sq, n: int):
    d = keras.layers.Dense(1, use_bias=False, trainable=False, name="score")
    d._trigger_ml_weights = (np.ones((n, 1)), None)
    return d(sq)


def masked_sse(x, rec, in_conf: QuantizerConfig, mask_info: dict, lq: LayerQuant):
    """Masked sum of squared errors between input ``x`` and reconstruction ``rec`` (shape (None, 57))."""
    n = int(x.shape[-1])
    pt_idx = np.asarray(mask_info["pt_index"])  # input index of each object's pT, per feature
    shift = np.asarray(mask_info["pt_shift"], dtype=np.int64)  # per feature: shift of its object's pT
    offset = np.asarray(mask_info["pt_offset"], dtype=np.int64)  # per feature: offset of its object's pT
    kernel = np.zeros((n, n))
    kernel[pt_idx, np.arange(n)] = 2.0**shift
    w_int = _bits_for(kernel.max())
    b_int = _bits_for(np.abs(offset).max()) + 1
    if not lq.quantized:  # float twin: the same mask as min(max(z, 0), 1)
        md = keras.layers.Dense(n, trainable=False, name="score_mask")
        md._trigger_ml_weights = (kernel, offset.astype(float))
        mask = keras.layers.ReLU(max_value=1.0, name="score_mask_clip")(md(x))
        diff = keras.layers.Subtract(name="score_diff")([x, rec])
        masked = keras.layers.Multiply(name="score_masked")([diff, mask])
        sq = keras.layers.Multiply(name="score_square")([masked, masked])
        return _float_score(sq, n)
    mask_oq = QuantizerConfig("kbi", "datalane", k0=False, b0=1, i0=1, round_mode="TRN", overflow_mode="SAT",
                              trainable=False, bc=None, br=None, i_decay_speed=-1)
    mask = _frozen_dense(n, kernel, offset.astype(float), "score_mask", (w_int, w_int, False), (b_int, b_int),
                         in_conf, oq_conf=mask_oq)(x)
    diff = QSubtract(name="score_diff", iq_confs=[in_conf, lq.act_conf("score_diff")], beta0=0.0)([x, rec])
    one_bit = QuantizerConfig("kbi", "datalane", k0=False, b0=1, i0=1, round_mode="TRN", overflow_mode="SAT",
                              trainable=False, bc=None, br=None, i_decay_speed=-1)
    masked = QMultiply(name="score_masked", iq_confs=[lq.score_conf(), one_bit], beta0=0.0)([diff, mask])
    sq = QMultiply(name="score_square", iq_confs=[lq.score_conf(), lq.score_conf()], beta0=0.0)([masked, masked])
    return _frozen_dense(1, np.ones((n, 1)), None, "score", (1, 1, False), None, lq.score_conf(signed=False))(sq)


def sum_squares(mu, lq: LayerQuant):
    """Σ μᵢ² over the last axis of ``mu`` (VAE anomaly score)."""
    n = int(mu.shape[-1])
    if not lq.quantized:
        return _float_score(keras.layers.Multiply(name="score_square")([mu, mu]), n)
    sq = QMultiply(name="score_square", iq_confs=[lq.score_conf(), lq.score_conf()], beta0=0.0)([mu, mu])
    return _frozen_dense(1, np.ones((n, 1)), None, "score", (1, 1, False), None, lq.score_conf(signed=False))(sq)


def mask_info_from_scaler(scaler) -> dict:
    """Per-feature pT index, shift and offset of the owning object, from a fitted IntegerScaler."""
    n = len(scaler.offset)
    pt_index = (np.arange(n) // 3) * 3
    return {
        "pt_index": pt_index.tolist(),
        "pt_shift": np.asarray(scaler.shift)[pt_index].tolist(),
        "pt_offset": np.asarray(scaler.offset)[pt_index].tolist(),
    }
