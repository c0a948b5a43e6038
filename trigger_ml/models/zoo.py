"""Named architectures of the zoo, built as Keras 3 models made of HGQ2 layers.

Each builder returns a :class:`Built`: the ``train`` model (what the optimiser sees, e.g. the full
autoencoder or the VAE with its decoder) and the ``deploy`` model (what goes into firmware: inputs
to the anomaly score, or class probabilities). Both share the same layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
from hgq.layers import QAveragePooling2D, QBatchNormDense, QConv2D, QDense, QSoftmax

from trigger_ml.models import scores
from trigger_ml.models.config import ModelConfig
from trigger_ml.models.quant import LayerQuant, exact_input_conf, qconf


@dataclass
class Built:
    """Models built from a config: ``train`` for fitting, ``deploy`` for firmware (shared layers)."""

    train: keras.Model
    deploy: keras.Model
    loss: Any
    kind: str
    extra: dict = field(default_factory=dict)


@keras.saving.register_keras_serializable(package="trigger_ml")
class MaskedMSE(keras.losses.Loss):
    """Masked reconstruction MSE: y_true = concat(x, mask) (2n columns), y_pred = reconstruction (n)."""

    def call(self, y_true, y_pred):
        n = keras.ops.shape(y_pred)[-1]
        x, m = y_true[..., :n], y_true[..., n:]
        return keras.ops.sum(m * keras.ops.square(x - y_pred), axis=-1) / keras.ops.maximum(keras.ops.sum(m, axis=-1), 1.0)


@keras.saving.register_keras_serializable(package="trigger_ml")
class VAESampling(keras.layers.Layer):
    """z = μ + exp(logvar/2)·ε, and the KL term added as a layer loss (training only)."""

    def __init__(self, kl_weight: float = 0.5, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.kl_weight = kl_weight
        self.seed = seed
        self.rng = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        mu, logvar = inputs
        kl = -0.5 * keras.ops.mean(keras.ops.sum(1 + logvar - keras.ops.square(mu) - keras.ops.exp(logvar), axis=-1))
        self.add_loss(self.kl_weight * kl)
        if not training:
            return mu
        eps = keras.random.normal(keras.ops.shape(mu), seed=self.rng)
        return mu + keras.ops.exp(0.5 * logvar) * eps

    def get_config(self):
        return {**super().get_config(), "kl_weight": self.kl_weight, "seed": self.seed}


def _dense_stack(x, sizes, lq: LayerQuant, prefix: str, batchnorm: bool, first_iq=None, relu_in: bool = False):
    """Dense(+folded BN)+ReLU blocks; activations are quantized by the next layer's input quantizer."""
    for i, n in enumerate(sizes):
        name = f"{prefix}{i}"
        if not lq.quantized:
            x = keras.layers.Dense(n, name=name)(x)
            if batchnorm:
                x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
            x = keras.layers.ReLU(name=f"{name}_relu")(x)
            continue
        kw = lq.dense_kwargs(name)
        if i == 0 and first_iq is not None:
            kw["iq_conf"] = first_iq
        elif i > 0 or relu_in:
            kw["iq_conf"] = lq.act_conf(name, signed=False)
        x = (QBatchNormDense if batchnorm else QDense)(n, activation="relu", **kw)(x)
    return x


def _out_dense(x, units, lq: LayerQuant, name: str, relu_in: bool = True, first_iq=None):
    if not lq.quantized:
        return keras.layers.Dense(units, name=name)(x)
    kw = lq.dense_kwargs(name)
    kw["iq_conf"] = first_iq if first_iq is not None else lq.act_conf(name, signed=not relu_in)
    return QDense(units, **kw)(x)


def build(config: ModelConfig, input_info: dict, quantized: bool = True) -> Built:
    """Build the train/deploy models of ``config``.

    ``input_info`` describes what the firmware receives: ``{"width", "integer", "signed"}`` of the
    input fixed-point type and, for L1-event models, the ``mask`` info of the scaled inputs.
    With ``quantized=False`` the same architecture is built from plain Keras layers (the float twin).
    """
    keras.utils.set_random_seed(config.seed)
    builders = {
        "autoencoder": _autoencoder,
        "cnn_autoencoder": _cnn_autoencoder,
        "vae": _vae,
        "classifier": _classifier,
        "student": _student,
    }
    built = builders[config.kind](config, input_info, quantized)
    scores.apply_frozen_weights(built.deploy)
    return built


def _input_conf(input_info: dict):
    return exact_input_conf(int(input_info["width"]), int(input_info["integer"]), bool(input_info.get("signed", True)))


def _autoencoder(cfg: ModelConfig, info: dict, quantized: bool) -> Built:
    lq = LayerQuant(cfg.quantization, quantized)
    n = cfg.n_features
    inp = keras.Input((n,), name="inputs")
    iq = _input_conf(info)
    h = _dense_stack(inp, cfg.hidden, lq, "enc", cfg.batchnorm, first_iq=iq)
    dec = cfg.decoder if cfg.decoder is not None else list(reversed(cfg.hidden))
    return _ae_tail(cfg, info, lq, inp, iq, h, dec, cfg.batchnorm)


def _ae_tail(cfg: ModelConfig, info: dict, lq: LayerQuant, inp, iq, h, decoder: list[int], batchnorm: bool) -> Built:
    """Latent, dense decoder, reconstruction and the in-graph masked score shared by the autoencoders."""
    z = _out_dense(h, cfg.latent, lq, "latent")
    h = _dense_stack(z, decoder, lq, "dec", batchnorm, first_iq=lq.act_conf("dec0", signed=True))
    rec = _out_dense(h, cfg.n_features, lq, "reconstruction")
    score = scores.masked_sse(inp, rec, iq, info["mask"], lq)
    return Built(keras.Model(inp, rec, name=f"{cfg.name}_train"), keras.Model(inp, score, name=cfg.name), MaskedMSE(), cfg.kind)


def _cnn_autoencoder(cfg: ModelConfig, info: dict, quantized: bool) -> Built:
    lq = LayerQuant(cfg.quantization, quantized)
    n = cfg.n_features
    inp = keras.Input((n,), name="inputs")
    iq = _input_conf(info)
    x = keras.layers.Reshape((n // 3, 3, 1), name="image")(inp)
    for i, f in enumerate(cfg.conv_filters):
        name = f"conv{i}"
        if not quantized:
            x = keras.layers.Conv2D(f, (3, 3), padding="same", activation="relu", name=name)(x)
            x = keras.layers.AveragePooling2D((2, 1), name=f"pool{i}")(x)
            continue
        x = QConv2D(f, (3, 3), padding="same", activation="relu", name=name,
                    kq_conf=qconf(lq._spec(name, "weight"), "weight", lq.learned),
                    bq_conf=qconf(lq._spec(name, "bias"), "bias", lq.learned),
                    iq_conf=iq if i == 0 else lq.act_conf(name, signed=False),
                    beta0=cfg.quantization.beta if lq.learned else 0.0)(x)
        x = QAveragePooling2D((2, 1), name=f"pool{i}", iq_conf=lq.act_conf(f"pool{i}", signed=False))(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return _ae_tail(cfg, info, lq, inp, iq, x, cfg.decoder or [32], False)


def _vae(cfg: ModelConfig, info: dict, quantized: bool) -> Built:
    lq = LayerQuant(cfg.quantization, quantized)
    n = cfg.n_features
    inp = keras.Input((n,), name="inputs")
    iq = _input_conf(info)
    h = _dense_stack(inp, cfg.hidden, lq, "enc", cfg.batchnorm, first_iq=iq)
    mu = _out_dense(h, cfg.latent, lq, "mu")
    logvar = keras.layers.Dense(cfg.latent, name="logvar", kernel_initializer="zeros")(h)  # training only
    z = VAESampling(cfg.training.kl_weight, cfg.seed, name="sampling")([mu, logvar])
    dh = z
    for i, u in enumerate(cfg.decoder if cfg.decoder is not None else list(reversed(cfg.hidden))):
        dh = keras.layers.Dense(u, activation="relu", name=f"dec{i}")(dh)  # float decoder, never deployed
    rec = keras.layers.Dense(n, name="reconstruction")(dh)
    score = scores.sum_squares(mu, lq)
    return Built(keras.Model(inp, rec, name=f"{cfg.name}_train"), keras.Model(inp, score, name=cfg.name), MaskedMSE(), cfg.kind)


def _classifier(cfg: ModelConfig, info: dict, quantized: bool) -> Built:
    lq = LayerQuant(cfg.quantization, quantized)
    inp = keras.Input((cfg.n_features,), name="inputs")
    h = _dense_stack(inp, cfg.hidden, lq, "fc", cfg.batchnorm, first_iq=_input_conf(info))
    logits = _out_dense(h, cfg.n_classes, lq, "logits")
    probs = QSoftmax(name="softmax")(logits) if quantized else keras.layers.Softmax(name="softmax")(logits)
    loss = keras.losses.CategoricalCrossentropy()
    m = keras.Model(inp, probs, name=cfg.name)
    return Built(m, m, loss, cfg.kind)


def _student(cfg: ModelConfig, info: dict, quantized: bool) -> Built:
    lq = LayerQuant(cfg.quantization, quantized)
    inp = keras.Input((cfg.n_features,), name="inputs")
    h = _dense_stack(inp, cfg.hidden, lq, "fc", cfg.batchnorm, first_iq=_input_conf(info))
    out = _out_dense(h, 1, lq, "score")
    m = keras.Model(inp, out, name=cfg.name)
    return Built(m, m, keras.losses.MeanSquaredError(), cfg.kind)

