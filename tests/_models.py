"""Random HGQ2 / Keras model builders and hls4ml conversion helpers for the emulator tests.

Everything here imports TensorFlow/Keras/HGQ2/hls4ml lazily (inside the functions) so that test
modules can be collected without them.  Models are small so that an hls4ml C-simulation compile
(~7-10 s with g++) dominates the cost.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROUNDING = ("RND", "TRN", "RND_CONV")
OVERFLOW_W = ("SAT", "SAT_SYM", "WRAP")
OVERFLOW_A = ("WRAP", "SAT")


def _scopes(rng: np.random.Generator, *, weight_bits=(4, 8), act_f=(3, 8)):
    """HGQ2 quantizer config scopes with random (but sensible) initial precisions and modes."""
    from hgq.config import QuantizerConfigScope

    wb = int(rng.integers(weight_bits[0], weight_bits[1] + 1))
    af = int(rng.integers(act_f[0], act_f[1] + 1))
    return (
        QuantizerConfigScope(
            place="weight", default_q_type="kbi", b0=wb, i0=int(rng.integers(0, 2)),
            round_mode=str(rng.choice(ROUNDING)), overflow_mode=str(rng.choice(OVERFLOW_W)),
        ),
        QuantizerConfigScope(
            place="bias", default_q_type="kbi", b0=wb + 2, i0=int(rng.integers(1, 3)),
            round_mode="RND", overflow_mode=str(rng.choice(OVERFLOW_W)),
        ),
        QuantizerConfigScope(
            place="datalane", default_q_type="kif", f0=af, i0=int(rng.integers(2, 5)),
            round_mode=str(rng.choice(ROUNDING)), overflow_mode=str(rng.choice(OVERFLOW_A)),
        ),
    )


def calibrate(model, x: np.ndarray, y: np.ndarray | None = None, epochs: int = 1, seed: int = 0):
    """A short fit so that HGQ2's datalane quantizers adapt their integer bits to the data range."""
    import keras

    keras.utils.set_random_seed(seed)
    if y is None:
        pred = model.predict(x[:8], verbose=0)
        pred = pred if isinstance(pred, list) else [pred]
        rng = np.random.default_rng(seed)
        y = [rng.normal(size=(x.shape[0],) + p.shape[1:]).astype("float32") for p in pred]
        y = y[0] if len(y) == 1 else y
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(x, y, epochs=epochs, batch_size=256, verbose=0)
    return model


def hgq_mlp(seed: int = 0, n_in: int = 12, hidden=(16, 8), n_out: int = 4, calibrate_data: bool = True):
    """HGQ2 QDense+ReLU MLP with random precisions/modes. Returns (model, x_calib)."""
    import keras
    from hgq.layers import QDense

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    s1, s2, s3 = _scopes(rng)
    with s1, s2, s3:
        inp = keras.Input((n_in,), name="x")
        h = inp
        for i, n in enumerate(hidden):
            h = QDense(int(n), activation="relu", name=f"fc{i}")(h)
        out = QDense(n_out, name="out")(h)
    model = keras.Model(inp, out, name=f"mlp{seed}")
    x = (rng.normal(size=(4096, n_in)) * rng.uniform(0.5, 4)).astype("float32")
    if calibrate_data:
        calibrate(model, x, seed=seed)
    return model, x


def hgq_ae_score(seed: int = 0, n_in: int = 12, hidden=(6,), calibrate_data: bool = True):
    """AE-like score: x -> dense -> relu -> dense (reconstruction); (x - rec)^2 summed by a dense
    with fixed weights 1 (QSubtract, QMultiply, frozen QDense)."""
    import keras
    from hgq.config import QuantizerConfig
    from hgq.layers import QDense, QMultiply, QSubtract

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    s1, s2, s3 = _scopes(rng)
    with s1, s2, s3:
        inp = keras.Input((n_in,), name="x")
        h = inp
        for i, n in enumerate(hidden):
            h = QDense(int(n), activation="relu", name=f"enc{i}")(h)
        rec = QDense(n_in, name="rec")(h)
        d = QSubtract(name="diff")([inp, rec])
        sq = QMultiply(name="sq")([d, d])
        ones_q = QuantizerConfig("kbi", "weight", k0=False, b0=1, i0=1, round_mode="RND", overflow_mode="SAT",
                                 trainable=False, bc=None, br=None)
        score = QDense(1, use_bias=False, kq_conf=ones_q, name="score", trainable=False)(sq)
    model = keras.Model(inp, score, name=f"ae{seed}")
    model.get_layer("score").kernel.assign(np.ones((n_in, 1), dtype="float32"))
    x = (rng.normal(size=(4096, n_in)) * rng.uniform(0.5, 2)).astype("float32")
    if calibrate_data:
        train = keras.Model(inp, rec)
        calibrate(train, x, x, seed=seed)
        # run the full model once in training mode so the score path quantizers see the data
        calibrate(model, x, np.zeros((x.shape[0], 1), "float32"), seed=seed)
        model.get_layer("score").kernel.assign(np.ones((n_in, 1), dtype="float32"))
    return model, x


def hgq_cnn(seed: int = 0, shape=(8, 6, 1), filters=(3, 2), pool: str = "avg", calibrate_data: bool = True):
    """QConv2D(same)+ReLU -> pooling -> QConv2D(valid)+ReLU -> max pooling -> Flatten -> QDense."""
    import keras
    from hgq.layers import QAveragePooling2D, QConv2D, QDense, QMaxPooling2D

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    s1, s2, s3 = _scopes(rng)
    with s1, s2, s3:
        inp = keras.Input(shape, name="img")
        x = QConv2D(filters[0], (3, 3), padding="same", activation="relu", name="conv0")(inp)
        x = (QAveragePooling2D if pool == "avg" else QMaxPooling2D)((2, 1), name="pool0")(x)
        x = QConv2D(filters[1], (3, 3), padding="valid", activation="relu", name="conv1")(x)
        x = QMaxPooling2D((2, 2), name="pool1")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        out = QDense(3, name="out")(x)
    model = keras.Model(inp, out, name=f"cnn{seed}")
    x = rng.normal(size=(2048,) + tuple(shape)).astype("float32")
    if calibrate_data:
        calibrate(model, x, seed=seed)
    return model, x


def hgq_softmax(seed: int = 0, n_in: int = 10, n_classes: int = 5):
    """HGQ2 classifier: QBatchNormDense+ReLU -> QDense -> QSoftmax (hls4ml 'stable' softmax tables)."""
    import keras
    from hgq.layers import QBatchNormDense, QDense, QSoftmax

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    s1, s2, s3 = _scopes(rng)
    with s1, s2, s3:
        inp = keras.Input((n_in,), name="x")
        h = QBatchNormDense(8, activation="relu", name="bnd")(inp)
        h = QDense(n_classes, name="logits")(h)
        out = QSoftmax(name="softmax")(h)
    model = keras.Model(inp, out, name=f"cls{seed}")
    x = (rng.normal(size=(4096, n_in)) * 2).astype("float32")
    calibrate(model, x, seed=seed)
    return model, x


def keras_plain(seed: int = 0, n_in: int = 10):
    """Plain Keras 3 model: Dense/BatchNorm/ReLU/sigmoid/tanh/softmax (trained briefly)."""
    import keras

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    inp = keras.Input((n_in,), name="x")
    x = keras.layers.Dense(16, name="d0")(inp)
    x = keras.layers.BatchNormalization(name="bn0")(x)
    x = keras.layers.ReLU(name="relu0")(x)
    x = keras.layers.Dense(8, name="d1")(x)
    x = keras.layers.Activation("sigmoid", name="sig")(x)
    x = keras.layers.Dense(8, name="d2")(x)
    x = keras.layers.Activation("tanh", name="tanh")(x)
    x = keras.layers.Dense(4, name="d3")(x)
    out = keras.layers.Activation("softmax", name="softmax")(x)
    model = keras.Model(inp, out, name=f"plain{seed}")
    x = (rng.normal(size=(4096, n_in)) * 2).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 4, size=x.shape[0]), 4)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=256, verbose=0)
    return model, x


def hand_config(model, default: str = "ap_fixed<12,4,AP_RND,AP_SAT>", accum: str | None = None,
                overrides: dict | None = None, softmax_impl: str | None = None) -> dict:
    """``config_from_keras_model(granularity='name')`` with every precision set by hand."""
    import hls4ml

    cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis")
    cfg["Model"]["Strategy"] = "Latency"
    for lname, lc in cfg["LayerName"].items():
        prec = lc.get("Precision")
        if isinstance(prec, dict):
            for k in list(prec):
                if k == "accum" and accum is not None:
                    prec[k] = accum
                elif k not in ("table", "exp_table", "inv_table", "inv_inp"):
                    prec[k] = default
        else:
            lc["Precision"] = default
        if softmax_impl and "Implementation" in lc:
            lc["Implementation"] = softmax_impl
        for key, val in (overrides or {}).get(lname, {}).items():
            if key in ("result", "weight", "bias", "accum", "table", "scale", "exp_table", "inv_table", "inv_inp", "param"):
                lc.setdefault("Precision", {})
                if not isinstance(lc["Precision"], dict):
                    lc["Precision"] = {"result": lc["Precision"]}
                lc["Precision"][key] = val
            else:
                lc[key] = val
    return cfg


def convert(model, output_dir, hls_config: dict | None = None, compile: bool = True):
    """hls4ml conversion (Vitis backend, io_parallel, Latency) and optional C-sim compile."""
    import hls4ml

    cfg = hls_config or {"Model": {"Precision": "ap_fixed<16,6>", "ReuseFactor": 1, "Strategy": "Latency"}}
    hm = hls4ml.converters.convert_from_keras_model(
        model, output_dir=str(output_dir), backend="Vitis", io_type="io_parallel", hls_config=cfg,
        project_name="myproject",
    )
    if compile:
        hm.compile()
    return hm


# --------------------------------------------------------------------------------------------
# random architectures for the property test
# --------------------------------------------------------------------------------------------


def random_model(seed: int):
    """A random small HGQ2 (or plain Keras with hand config) architecture.

    Returns (model, x, hls_config or None)."""
    import keras
    from hgq.layers import (
        QAdd,
        QAveragePooling1D,
        QConv1D,
        QDense,
        QMaxPooling1D,
        QMultiply,
        QSubtract,
    )

    rng = np.random.default_rng(10_000 + seed)
    keras.utils.set_random_seed(seed)
    family = int(rng.integers(0, 5))
    if family == 4:
        # plain keras with a hand-written config (possibly narrow accumulators)
        n_in = int(rng.integers(3, 12))
        inp = keras.Input((n_in,), name="x")
        h = inp
        acts = ["relu", "sigmoid", "tanh", "linear"]
        for i in range(int(rng.integers(1, 4))):
            h = keras.layers.Dense(int(rng.integers(2, 12)), name=f"d{i}")(h)
            h = keras.layers.Activation(str(rng.choice(acts)), name=f"a{i}")(h)
        out = keras.layers.Dense(int(rng.integers(1, 5)), name="out")(h)
        if rng.random() < 0.4:
            out = keras.layers.Activation("softmax", name="sm")(out)
        model = keras.Model(inp, out)
        x = (rng.normal(size=(2048, n_in)) * rng.uniform(0.5, 3)).astype("float32")
        model.compile("adam", "mse")
        model.fit(x, rng.normal(size=(2048,) + model.output_shape[1:]), epochs=1, verbose=0)
        w = int(rng.integers(8, 18))
        i = int(rng.integers(2, 6))
        mode = f"AP_{rng.choice(['RND', 'TRN', 'RND_CONV'])},AP_{rng.choice(['SAT', 'WRAP', 'SAT_SYM'])}"
        acc = None
        if rng.random() < 0.5:
            aw = int(rng.integers(6, w + 4))
            acc = f"ap_fixed<{aw},{int(rng.integers(2, 6))},AP_{rng.choice(['TRN', 'RND'])},AP_{rng.choice(['WRAP', 'SAT'])}>"
        cfg = hand_config(model, f"ap_fixed<{w},{i},{mode}>", accum=acc)
        if rng.random() < 0.5:
            for lc in cfg["LayerName"].values():
                if "TableSize" in lc:
                    lc["TableSize"] = int(rng.choice([256, 512, 1024, 2048]))
        return model, x, cfg

    s1, s2, s3 = _scopes(rng)
    with s1, s2, s3:
        if family in (0, 1):
            n_in = int(rng.integers(3, 16))
            inp = keras.Input((n_in,), name="x")
            h = inp
            for i in range(int(rng.integers(1, 4))):
                act = str(rng.choice(["relu", "linear"])) if family == 0 else "relu"
                h = QDense(int(rng.integers(2, 16)), activation=act, name=f"fc{i}")(h)
            if family == 1:
                # merge ops against a projection of the input
                p = QDense(int(h.shape[-1]), name="proj")(inp)
                op = [QAdd, QSubtract, QMultiply][int(rng.integers(0, 3))]
                h = op(name="merge")([h, p])
            out = QDense(int(rng.integers(1, 5)), name="out")(h)
            model = keras.Model(inp, out)
            x = (rng.normal(size=(2048, n_in)) * rng.uniform(0.5, 4)).astype("float32")
        elif family == 2:
            T, C = int(rng.integers(6, 14)), int(rng.integers(1, 4))
            inp = keras.Input((T, C), name="x")
            h = QConv1D(int(rng.integers(1, 5)), int(rng.integers(1, 4)), padding=str(rng.choice(["same", "valid"])),
                        activation="relu", name="c0")(inp)
            pool = QMaxPooling1D if rng.random() < 0.5 else QAveragePooling1D
            h = pool(2, name="p0")(h)
            h = keras.layers.Flatten(name="flat")(h)
            out = QDense(int(rng.integers(1, 4)), name="out")(h)
            model = keras.Model(inp, out)
            x = rng.normal(size=(2048, T, C)).astype("float32")
        else:
            model, x = hgq_ae_score(seed, n_in=int(rng.integers(4, 12)), hidden=(int(rng.integers(2, 6)),),
                                    calibrate_data=False)
            return calibrate_ae(model, x, seed), x, None
    calibrate(model, x, seed=seed)
    return model, x, None


def calibrate_ae(model, x, seed):
    calibrate(model, x, np.zeros((x.shape[0], 1), "float32"), seed=seed)
    model.get_layer("score").kernel.assign(np.ones((x.shape[1], 1), dtype="float32"))
    return model


def make_inputs(x: np.ndarray, n: int = 2000, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """Inputs for a bit-exactness check: data-like values plus a few large (overflowing) ones."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.shape[0], size=n)
    xt = x[idx].copy() * np.float32(scale)
    k = max(1, n // 20)
    xt[:k] *= np.float32(8)  # provoke wrap/saturation
    return np.ascontiguousarray(xt, dtype=np.float32)


def workdir(tmp_path: Path, name: str) -> Path:
    d = Path(tmp_path) / name
    d.mkdir(parents=True, exist_ok=True)
    return d


# --------------------------------------------------------------------------------------------
# synthetic FirmwareModels (no hls4ml): fast path vs reference executor
# --------------------------------------------------------------------------------------------

ALL_ROUNDING = ("TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_INF", "RND_MIN_INF", "RND_CONV")
ALL_OVERFLOW = ("WRAP", "SAT", "SAT_ZERO", "SAT_SYM")


def _rtype(rng, wmin=2, wmax=20, imin=-2, imax=8, signed=None, modes=True):
    from trigger_ml.core.fixed import FixedType

    w = int(rng.integers(wmin, wmax + 1))
    i = int(rng.integers(imin, imax + 1))
    s = bool(rng.random() < 0.7) if signed is None else signed
    if modes:
        return FixedType(w, i, s, str(rng.choice(ALL_ROUNDING)), str(rng.choice(ALL_OVERFLOW)))
    return FixedType(w, i, s)


def _rand_raw(rng, t, shape):
    return rng.integers(t.raw_min, t.raw_max + 1, size=shape, dtype=np.int64)


def random_ir_model(seed: int):
    """A random FirmwareModel built directly in the IR: input, per-element quantizers, dense (wide or
    narrow accumulators), ReLU/linear, batchnorm, merges, sparse dense, small-output dense."""
    from trigger_ml.core.fixed import FixedType
    from trigger_ml.ir import FirmwareModel, Layer, TensorSpec

    rng = np.random.default_rng(seed)
    layers = []
    in_t = _rtype(rng, 4, 20, 0, 10)
    if rng.random() < 0.3:
        # image input -> conv2d (+ relu, per-pixel or per-filter quantizer, pooling) -> flatten
        H, W, C = int(rng.integers(2, 7)), int(rng.integers(1, 6)), int(rng.integers(1, 3))
        n_in = H * W * C
        layers.append(Layer("x", "input", (), (H, W, C), in_t))
        fh, fw = int(rng.integers(1, min(H, 3) + 1)), int(rng.integers(1, min(W, 3) + 1))
        sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        pt, pb, pl, pr = (int(rng.integers(0, 2)) for _ in range(4))
        OH, OW = (H + pt + pb - fh) // sh + 1, (W + pl + pr - fw) // sw + 1
        F = int(rng.integers(1, 4))
        wt = _rtype(rng, 2, 7, -1, 2, modes=False)
        bt = _rtype(rng, 2, 8, -1, 4, modes=False)
        at = FixedType(min(in_t.width + wt.width + 8, 48), in_t.integer + wt.integer + 5, True, "TRN",
                       str(rng.choice(["WRAP", "SAT"])))
        res = _rtype(rng, 6, 18, 1, 8)
        params = dict(in_height=H, in_width=W, n_chan=C, out_height=OH, out_width=OW, n_filt=F, filt_height=fh,
                      filt_width=fw, stride_height=sh, stride_width=sw, pad_top=pt, pad_bottom=pb, pad_left=pl,
                      pad_right=pr)
        layers.append(Layer("conv", "conv2d", ("x",), (OH, OW, F), res, types={"weight": wt, "bias": bt, "accum": at},
                            params=params, arrays={"weight": _rand_raw(rng, wt, (fh, fw, C, F)),
                                                   "bias": _rand_raw(rng, bt, (F,))}))
        src, shape, t = "conv", (OH, OW, F), res
        if rng.random() < 0.7:
            t = _rtype(rng, 4, 16, 0, 6)
            layers.append(Layer("crelu", "activation", (src,), shape, t, params={"fn": "relu"}))
            src = "crelu"
        if rng.random() < 0.5:
            rnd, ovf = str(rng.choice(ALL_ROUNDING)), str(rng.choice(["WRAP", "SAT"]))
            if rng.random() < 0.5:  # same type for every pixel of a filter
                kf, bf, if_ = rng.integers(0, 2, F), rng.integers(0, 10, F), rng.integers(-1, 6, F)
                k, b, i = (np.tile(v, OH * OW).reshape(shape) for v in (kf, bf, if_))
            else:
                k, b, i = rng.integers(0, 2, shape), rng.integers(0, 10, shape), rng.integers(-1, 6, shape)
            t = FixedType(int(b.max()) + 2, int(i.max()) + 1, True)
            layers.append(Layer("cq", "quantizer", (src,), shape, t, params={"rounding": rnd, "overflow": ovf},
                                arrays={"k": k, "b": b, "i": i}))
            src = "cq"
        n_flat = int(np.prod(shape))
        layers.append(Layer("flat", "reshape", (src,), (n_flat,), t, params={"target_shape": [n_flat]}))
        values = [("flat", n_flat, t)]
    else:
        n_in = int(rng.integers(1, 20))
        layers.append(Layer("x", "input", (), (n_in,), in_t))
        values = [("x", n_in, in_t)]
    for li in range(int(rng.integers(2, 7))):
        src, size, t = values[-1] if rng.random() < 0.7 else values[int(rng.integers(0, len(values)))]
        kind = rng.choice(["quantizer", "dense", "activation", "batchnorm", "merge", "dense"])
        name = f"l{li}"
        if kind == "quantizer":
            rnd, ovf = str(rng.choice(ALL_ROUNDING)), str(rng.choice(ALL_OVERFLOW))
            k = rng.integers(0, 2, size=size)
            b = rng.integers(0, 12, size=size)
            i = rng.integers(-2, 8, size=size)
            res = FixedType(int(b.max()) + 2, int(i.max()) + 1, True)
            layers.append(Layer(name, "quantizer", (src,), (size,), res, params={"rounding": rnd, "overflow": ovf},
                                arrays={"k": k, "b": b, "i": i}))
            values.append((name, size, res))
        elif kind == "dense":
            n_out = int(rng.choice([1, 2, 3, 8, 16, 24]))
            wt = _rtype(rng, 2, 8, -1, 3, modes=False)
            bt = _rtype(rng, 2, 10, -2, 6, modes=False)
            wide = rng.random() < 0.6
            if wide:
                at = FixedType(min(t.width + wt.width + 8, 50), t.integer + wt.integer + 6, True,
                               "TRN", str(rng.choice(["WRAP", "SAT"])))
            else:
                at = _rtype(rng, 6, 24, 0, 8)
            w = _rand_raw(rng, wt, (size, n_out))
            if rng.random() < 0.4:
                w[rng.random(w.shape) < 0.9] = 0  # sparse
            res = _rtype(rng, 4, 20, 0, 8)
            layers.append(Layer(name, "dense", (src,), (n_out,), res, types={"weight": wt, "bias": bt, "accum": at},
                                params={"n_in": size, "n_out": n_out},
                                arrays={"weight": w, "bias": _rand_raw(rng, bt, (n_out,))}))
            values.append((name, n_out, res))
        elif kind == "activation":
            fn = str(rng.choice(["relu", "linear"]))
            res = _rtype(rng, 3, 20, 0, 8)
            layers.append(Layer(name, "activation", (src,), (size,), res, params={"fn": fn}))
            values.append((name, size, res))
        elif kind == "batchnorm":
            st = _rtype(rng, 2, 10, -1, 4, modes=False)
            bt = _rtype(rng, 2, 10, -1, 6, modes=False)
            res = _rtype(rng, 4, 20, 0, 8)
            layers.append(Layer(name, "batchnorm", (src,), (size,), res, types={"scale": st, "bias": bt},
                                params={"n_filt": -1},
                                arrays={"scale": _rand_raw(rng, st, (size,)), "bias": _rand_raw(rng, bt, (size,))}))
            values.append((name, size, res))
        else:
            cands = [v for v in values if v[1] == size and v[0] != src] or [values[-1]]
            other = cands[int(rng.integers(0, len(cands)))]
            op = str(rng.choice(["add", "subtract", "multiply", "average", "maximum", "minimum"]))
            res = _rtype(rng, 4, 22, 0, 10)
            ne = max(size, other[1])
            layers.append(Layer(name, "merge", (src, other[0]), (ne,), res,
                                params={"op": op, "n_elem1": size, "n_elem2": other[1]}))
            values.append((name, ne, res))
    out = values[-1]
    fm = FirmwareModel(f"rand{seed}", (TensorSpec("x", layers[0].shape, in_t),),
                       (TensorSpec(out[0], (out[1],), out[2]),), tuple(layers))
    return fm


# --------------------------------------------------------------------------------------------
# compiled hls4ml models shared by the test modules (one conversion + g++ compile per process)
# --------------------------------------------------------------------------------------------

_COMPILED: dict = {}
_TMP = None


def _tmpdir() -> Path:
    global _TMP
    if _TMP is None:
        import atexit
        import shutil
        import tempfile

        _TMP = Path(tempfile.mkdtemp(prefix="trigger_ml_hls_"))
        atexit.register(shutil.rmtree, _TMP, True)
    return _TMP


# layer names of keras_plain(): the deliberately too-narrow accumulator is on "d1"
PLAIN_NARROW_LAYER = "d1"


def plain_config(model) -> dict:
    """Hand-written precisions: 16-bit AP_RND/AP_SAT everywhere, 16-bit truncating accumulators (so
    the products are rounded before the sum), and a too-narrow accumulator on ``d1``."""
    return hand_config(
        model, "ap_fixed<16,6,AP_RND,AP_SAT>", accum="ap_fixed<20,8,AP_TRN,AP_WRAP>",
        overrides={PLAIN_NARROW_LAYER: {"accum": "ap_fixed<12,1,AP_TRN,AP_WRAP>"}},
    )


class Compiled:
    def __init__(self, name, model, x, hls_model, fm):
        self.name, self.model, self.x, self.hls_model, self.fm = name, model, x, hls_model, fm


def compiled(name: str) -> Compiled:
    """A converted + compiled model of the fast suite, built once per process."""
    if name in _COMPILED:
        return _COMPILED[name]
    from trigger_ml.ir import from_hls_model

    cfg = None
    if name == "mlp":
        model, x = hgq_mlp(seed=1)
    elif name == "ae":
        model, x = hgq_ae_score(seed=2)
    elif name == "cnn":
        model, x = hgq_cnn(seed=3)
    elif name == "plain":
        model, x = keras_plain(seed=4)
        cfg = plain_config(model)
    elif name == "softmax":
        model, x = hgq_softmax(seed=5)
    elif name.startswith("random"):
        model, x, cfg = random_model(int(name[len("random"):]))
    else:
        raise KeyError(name)
    hm = convert(model, _tmpdir() / name, cfg)
    fm = from_hls_model(hm, score_output=hm.outputs[0] if name == "ae" else None)
    _COMPILED[name] = Compiled(name, model, x, hm, fm)
    return _COMPILED[name]


def csim(hm, x: np.ndarray) -> np.ndarray:
    """hls4ml C-simulation output, shaped (n_events, n_outputs) (hls4ml returns 1-D for one event)."""
    y = hm.predict(np.ascontiguousarray(x))
    y = np.asarray(y)
    return y.reshape(x.shape[0], -1)
