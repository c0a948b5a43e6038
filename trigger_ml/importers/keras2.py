"""Keras 2 models (``.json`` + ``_weights.h5``, or a full ``.h5``), QKeras and HGQ-1 proxy models
→ Keras 3 / HGQ2 models → hls4ml project.

Keras 3 cannot read Keras 2 files (``Could not locate class 'Model'``), and PyPI ``qkeras`` cannot
be installed beside hgq2, so the architecture is read with ``json``/``h5py`` and rebuilt layer by
layer with Keras 3 layers; the weights are read from the h5 file by name.

QKeras semantics (QKeras 0.9): ``quantized_bits(bits, integer, symmetric, keep_negative, alpha=1)``
is ``ap_fixed<bits, integer + keep_negative>`` with round-half-to-even (``tf.round``: RND_CONV)
and saturation (SAT, SAT_SYM if symmetric); ``quantized_relu(bits, integer)`` is
``ap_ufixed<bits, integer>`` after a ReLU, RND_CONV, SAT. They become HGQ2 KBI quantizers
(:func:`trigger_ml.models.quant.qconf`; k = keep_negative, b = bits - k, i = integer), so the
rebuilt model computes QKeras's float outputs and hls4ml's bit-exact flow derives every firmware
type from it. ``QDense``/``QConv*`` quantize kernel and bias only (no input/output quantizer), as
QKeras does. HGQ-1 proxy models (``FixedPointQuantizer`` layers with per-element ``keep_negative``,
``bits``, ``integers`` in the ap_fixed convention) become HGQ2 ``Quantizer`` layers with the same
per-element widths.

The firmware input type: a QKeras/float model does not quantize its inputs; the import declares
``input_t`` from ``--precision`` (the input layer's name, or the default), stated in one line.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trigger_ml.core.errors import DataFormatError, UnsupportedLayerError
from trigger_ml.core.fixed import FixedType

__all__ = ["Keras2Model", "import_keras2", "read_keras2", "rebuild"]

_PLAIN = ("InputLayer", "Dense", "Activation", "ReLU", "LeakyReLU", "Softmax", "BatchNormalization", "Conv1D",
          "Conv2D", "Flatten", "Reshape", "Dropout", "MaxPooling1D", "MaxPooling2D", "AveragePooling1D",
          "AveragePooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D",
          "GlobalMaxPooling2D", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate")
_QKERAS = ("QDense", "QConv1D", "QConv2D", "QActivation", "QBatchNormalization")
_HGQ1 = ("FixedPointQuantizer",)
SUPPORTED = _PLAIN + _QKERAS + _HGQ1


@dataclass
class Keras2Model:
    """A Keras 2 model read without Keras: layers (class, config, inbound layer names) in order,
    the model's input/output layer names, the weights per layer (name → array) and the files."""

    name: str
    layers: list[tuple[str, dict, list[str]]]
    inputs: list[str]
    outputs: list[str]
    weights: dict[str, dict[str, np.ndarray]]
    files: list[Path] = field(default_factory=list)

    @property
    def flavor(self) -> str:
        classes = {c for c, _, _ in self.layers}
        if classes & set(_HGQ1):
            return "hgq1"
        if classes & set(_QKERAS):
            return "qkeras"
        return "keras2"


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def _h5(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError:
        raise DataFormatError(f"{path}: not an HDF5 file (a Keras 2 .h5 model or weights file was expected)") from None


def _read_weights(group, where: Path) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("layer_names", [])]
    for lname in names:
        g = group[lname]
        wnames = [n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs.get("weight_names", [])]
        d = {}
        for wn in wnames:
            key = wn.split("/")[-1].split(":")[0]
            d[key] = np.asarray(g[wn])
        out[lname] = d
    if not names:
        raise DataFormatError(f"{where}: no 'layer_names' attribute: not a Keras 2 weights file")
    return out


def _layers_of(arch: Mapping, where: Path) -> tuple[str, list, list[str], list[str]]:
    cls = arch.get("class_name")
    cfg = arch.get("config")
    if cls == "Sequential":
        layers = cfg if isinstance(cfg, list) else (cfg or {}).get("layers", [])
        out, prev = [], None
        for lay in layers:
            c = lay["config"]
            if lay["class_name"] != "InputLayer" and prev is None:
                shape = c.get("batch_input_shape") or c.get("batch_shape")
                if shape is None:
                    raise DataFormatError(f"{where}: the first layer has no batch_input_shape")
                out.append(("InputLayer", {"name": "input_1", "batch_input_shape": shape}, []))
                prev = "input_1"
            out.append((lay["class_name"], c, [prev] if prev else []))
            prev = c["name"]
        name = (cfg or {}).get("name", "sequential") if isinstance(cfg, Mapping) else "sequential"
        return name, out, [out[0][1]["name"]], [prev]
    if cls in ("Model", "Functional"):
        out = []
        for lay in cfg["layers"]:
            nodes = lay.get("inbound_nodes") or []
            if len(nodes) > 1:
                raise UnsupportedLayerError(f"{where}: layer {lay['config']['name']!r} is called more than once (shared "
                                            "layers are not supported)")
            inbound = [n[0] for n in nodes[0]] if nodes else []
            out.append((lay["class_name"], lay["config"], inbound))
        return cfg.get("name", "model"), out, [x[0] for x in cfg["input_layers"]], [x[0] for x in cfg["output_layers"]]
    raise DataFormatError(f"{where}: top-level class {cls!r} is not a Keras 2 Sequential/Model/Functional")


def read_keras2(source: str | os.PathLike) -> Keras2Model:
    """Read a Keras 2 model: ``X.json`` (weights in ``X_weights.h5`` beside it) or a full ``X.h5``."""
    src = Path(source)
    if src.suffix.lower() == ".json":
        try:
            arch = json.loads(src.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DataFormatError(f"{src}: not a JSON file ({str(exc).splitlines()[0]})") from None
        if not isinstance(arch, Mapping) or "class_name" not in arch:
            raise DataFormatError(f"{src}: not a Keras model architecture (no 'class_name')")
        wfile = src.with_name(src.stem + "_weights.h5")
        if not wfile.is_file():
            raise DataFormatError(f"{src}: weights file {wfile.name} not found beside it (Keras 2 json + _weights.h5)")
        with _h5(wfile) as f:
            weights = _read_weights(f, wfile)
        files = [src, wfile]
    else:
        with _h5(src) as f:
            if "model_config" not in f.attrs:
                raise DataFormatError(f"{src}: no 'model_config' attribute: a weights-only file; import the "
                                      "architecture .json instead (weights are read from X_weights.h5 beside it)")
            mc = f.attrs["model_config"]
            arch = json.loads(mc.decode() if isinstance(mc, bytes) else mc)
            weights = _read_weights(f["model_weights"] if "model_weights" in f else f, src)
        files = [src]
    name, layers, ins, outs = _layers_of(arch, src)
    for cls, cfg, _ in layers:
        if cls not in SUPPORTED:
            raise UnsupportedLayerError(f"{src}: layer {cfg.get('name')!r} of class {cls} is not supported; "
                                        f"supported: {', '.join(SUPPORTED)}")
    return Keras2Model(name, layers, ins, outs, weights, files)


# --------------------------------------------------------------------------------------------
# QKeras quantizers
# --------------------------------------------------------------------------------------------


def _parse_quantizer(q: Any, where: str) -> tuple[str, dict]:
    if q is None:
        return "", {}
    if isinstance(q, Mapping):
        return str(q.get("class_name")), dict(q.get("config") or {})
    if isinstance(q, str):
        try:
            call = ast.parse(q.strip(), mode="eval").body
            if not isinstance(call, ast.Call):
                return q.strip(), {}
            name = call.func.id if isinstance(call.func, ast.Name) else ast.unparse(call.func)
            pos = [ast.literal_eval(a) for a in call.args]
            kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        except (SyntaxError, ValueError) as exc:
            raise UnsupportedLayerError(f"{where}: cannot parse quantizer {q!r} ({exc})") from None
        keys = {"quantized_bits": ("bits", "integer", "symmetric", "keep_negative", "alpha"),
                "quantized_relu": ("bits", "integer", "use_sigmoid", "negative_slope")}.get(name, ())
        kw.update(dict(zip(keys, pos)))
        return name, kw
    raise UnsupportedLayerError(f"{where}: quantizer {q!r} is not understood")


def qkeras_spec(q: Any, where: str):
    """The :class:`~trigger_ml.models.config.QuantSpec` of a QKeras quantizer (dict or string), or
    None when there is none. Refuses what has no fixed-point equivalent (alpha scaling other than 1,
    stochastic rounding, leaky / sigmoid / upper-bounded quantized_relu)."""
    from trigger_ml.models.config import QuantSpec

    name, c = _parse_quantizer(q, where)
    if not name:
        return None
    if c.get("use_stochastic_rounding"):
        raise UnsupportedLayerError(f"{where}: {name} with stochastic rounding has no firmware equivalent")
    if name == "quantized_bits":
        alpha = c.get("alpha")
        if alpha not in (None, 1, 1.0):
            raise UnsupportedLayerError(f"{where}: quantized_bits with alpha={alpha!r} (a scale) is not supported; "
                                        "only alpha=1 or None")
        keep = bool(c.get("keep_negative", True))
        return QuantSpec(bits=int(c.get("bits", 8)), integer=int(c.get("integer", 0)), signed=keep,
                         rounding="RND_CONV", overflow="SAT_SYM" if c.get("symmetric") else "SAT")
    if name == "quantized_relu":
        if float(c.get("negative_slope", 0.0) or 0.0) != 0.0 or c.get("use_sigmoid") or c.get("relu_upper_bound"):
            raise UnsupportedLayerError(f"{where}: quantized_relu with negative_slope/use_sigmoid/relu_upper_bound is "
                                        "not supported")
        return QuantSpec(bits=int(c.get("bits", 8)), integer=int(c.get("integer", 0)), signed=False,
                         rounding="RND_CONV", overflow="SAT")
    raise UnsupportedLayerError(f"{where}: QKeras quantizer {name} is not supported; supported: quantized_bits, "
                                "quantized_relu")


# --------------------------------------------------------------------------------------------
# rebuilding
# --------------------------------------------------------------------------------------------


def _input_quantizer(t: FixedType, name: str):
    from hgq.config import QuantizerConfig
    from hgq.layers import Quantizer

    k = int(t.signed)
    conf = QuantizerConfig("kbi", "datalane", k0=bool(k), b0=t.width - k, i0=t.integer - k, round_mode=t.rounding,
                           overflow_mode=t.overflow, trainable=False, bc=None, br=None, ir=None, ic=None,
                           i_decay_speed=-1)
    return Quantizer(conf, name=name)


def _assign(layer, weights: Mapping[str, np.ndarray], where: str) -> None:
    by_name = {}
    for v in layer.weights:
        by_name.setdefault(v.name, v)
    for key, arr in weights.items():
        v = by_name.get(key)
        if v is None:
            raise UnsupportedLayerError(f"{where}: weight {key!r} has no place in the rebuilt layer")
        if tuple(v.shape) != tuple(arr.shape):
            raise DataFormatError(f"{where}: weight {key!r} has shape {arr.shape}, the layer expects {tuple(v.shape)}")
        v.assign(arr.astype(np.float32))


def _channels_last(cfg: Mapping, where: str) -> None:
    if cfg.get("data_format", "channels_last") not in (None, "channels_last"):
        raise UnsupportedLayerError(f"{where}: data_format {cfg.get('data_format')!r}; only channels_last is supported")


def _conv_kwargs(cfg: Mapping) -> dict:
    return {k: cfg[k] for k in ("filters", "kernel_size", "strides", "padding", "dilation_rate", "use_bias")
            if k in cfg} | {"activation": cfg.get("activation") or "linear"}


def rebuild(k2: Keras2Model, input_types: Mapping[str, FixedType] | None = None):
    """A Keras 3 model (HGQ2 layers for QKeras / HGQ-1) computing what the Keras 2 model computes,
    with its weights. ``input_types``: per input layer, an input quantizer of that type is added
    (what the firmware receives); without it inputs stay float (the model as trained)."""
    import keras
    from hgq.layers import QConv1D, QConv2D, QDense, Quantizer

    from trigger_ml.models.quant import qconf

    tensors: dict[str, Any] = {}
    model_inputs = []
    for cls, cfg, inbound in k2.layers:
        name = cfg["name"]
        where = f"layer {name!r} ({cls})"
        w = k2.weights.get(name, {})
        if cls == "InputLayer":
            shape = cfg.get("batch_input_shape") or cfg.get("batch_shape")
            inp = keras.Input(shape=tuple(shape[1:]), name=name)
            model_inputs.append(inp)
            t = inp
            if input_types and name in input_types:
                t = _input_quantizer(input_types[name], f"{name}_input_q")(t)
            tensors[name] = t
            continue
        xs = [tensors[i] for i in inbound]
        x = xs[0] if len(xs) == 1 else xs
        if cls == "Dropout":
            tensors[name] = x
            continue
        layer = None
        if cls == "Dense":
            layer = keras.layers.Dense(cfg["units"], activation=cfg.get("activation") or "linear",
                                       use_bias=cfg.get("use_bias", True), name=name)
        elif cls in ("Conv1D", "Conv2D"):
            _channels_last(cfg, where)
            layer = getattr(keras.layers, cls)(**_conv_kwargs(cfg), name=name)
        elif cls == "Activation":
            layer = keras.layers.Activation(cfg["activation"], name=name)
        elif cls == "ReLU":
            layer = keras.layers.ReLU(max_value=cfg.get("max_value"), negative_slope=cfg.get("negative_slope", 0.0),
                                      threshold=cfg.get("threshold", 0.0), name=name)
        elif cls == "LeakyReLU":
            layer = keras.layers.LeakyReLU(negative_slope=cfg.get("alpha", cfg.get("negative_slope", 0.3)), name=name)
        elif cls == "Softmax":
            layer = keras.layers.Softmax(axis=cfg.get("axis", -1), name=name)
        elif cls == "BatchNormalization":
            layer = keras.layers.BatchNormalization(axis=cfg.get("axis", -1), epsilon=cfg.get("epsilon", 1e-3),
                                                    center=cfg.get("center", True), scale=cfg.get("scale", True),
                                                    name=name)
        elif cls == "Flatten":
            layer = keras.layers.Flatten(name=name)
        elif cls == "Reshape":
            layer = keras.layers.Reshape(tuple(cfg["target_shape"]), name=name)
        elif cls in ("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D"):
            _channels_last(cfg, where)
            layer = getattr(keras.layers, cls)(pool_size=cfg["pool_size"], strides=cfg.get("strides"),
                                               padding=cfg.get("padding", "valid"), name=name)
        elif cls.startswith("Global"):
            _channels_last(cfg, where)
            layer = getattr(keras.layers, cls)(name=name)
        elif cls in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"):
            layer = getattr(keras.layers, cls)(name=name)
        elif cls == "Concatenate":
            layer = keras.layers.Concatenate(axis=cfg.get("axis", -1), name=name)
        elif cls in ("QDense", "QConv1D", "QConv2D"):
            kq = qkeras_spec(cfg.get("kernel_quantizer"), f"{where} kernel_quantizer")
            bq = qkeras_spec(cfg.get("bias_quantizer"), f"{where} bias_quantizer")
            if kq is None or (cfg.get("use_bias", True) and bq is None):
                raise UnsupportedLayerError(f"{where}: a float kernel or bias (no quantizer) is not supported in a "
                                            "QKeras layer; quantize it or use a plain Keras layer")
            kw = dict(kq_conf=qconf(kq, "weight"), enable_iq=False, enable_oq=False, enable_ebops=False, name=name)
            if bq is not None:
                kw["bq_conf"] = qconf(bq, "bias")
            if cls == "QDense":
                layer = QDense(cfg["units"], activation=cfg.get("activation") or "linear",
                               use_bias=cfg.get("use_bias", True), **kw)
            else:
                _channels_last(cfg, where)
                layer = (QConv2D if cls == "QConv2D" else QConv1D)(**_conv_kwargs(cfg), **kw)
        elif cls == "QActivation":
            act = cfg.get("activation")
            spec = None
            if isinstance(act, str) and "(" not in act:
                layer = keras.layers.Activation(act, name=name)
            else:
                spec = qkeras_spec(act, where)
                layer = Quantizer(qconf(spec, "datalane"), name=name)
        elif cls == "QBatchNormalization":
            for q in ("gamma_quantizer", "beta_quantizer", "mean_quantizer", "variance_quantizer"):
                if cfg.get(q):
                    raise UnsupportedLayerError(f"{where}: QBatchNormalization with a {q} is not supported (only "
                                                "float statistics); fold it into the previous layer (QDenseBatchnorm)")
            layer = keras.layers.BatchNormalization(axis=cfg.get("axis", -1), epsilon=cfg.get("epsilon", 1e-3),
                                                    center=cfg.get("center", True), scale=cfg.get("scale", True),
                                                    name=name)
        elif cls == "FixedPointQuantizer":
            layer = _hgq1_quantizer(cfg, w, where)
            w = {}
        if layer is None:  # pragma: no cover - read_keras2 refused it already
            raise UnsupportedLayerError(f"{where} is not supported; supported: {', '.join(SUPPORTED)}")
        tensors[name] = layer(x)
        if w:
            _assign(layer, w, where)
    outs = [tensors[o] for o in k2.outputs]
    return keras.Model(model_inputs if len(model_inputs) > 1 else model_inputs[0], outs if len(outs) > 1 else outs[0],
                       name=k2.name)


def _hgq1_quantizer(cfg: Mapping, w: Mapping[str, np.ndarray], where: str):
    """HGQ-1 ``FixedPointQuantizer`` → HGQ2 ``Quantizer`` with the same per-element widths
    (HGQ-1 stores ``bits``/``integers`` in the ap_fixed convention: sign included)."""
    from hgq.config import QuantizerConfig
    from hgq.layers import Quantizer

    rnd, sat = str(cfg.get("RND", "TRN")).upper(), str(cfg.get("SAT", "WRAP")).upper()
    for k in ("keep_negative", "bits", "integers"):
        if k not in w:
            raise DataFormatError(f"{where}: HGQ-1 quantizer without its {k!r} weight")
    shape = tuple(int(s) for s in cfg.get("shape", w["bits"].shape))
    k = np.broadcast_to(np.asarray(w["keep_negative"]).astype(np.float32), shape)
    b = np.broadcast_to(np.asarray(w["bits"]).astype(np.float32), shape)
    i = np.broadcast_to(np.asarray(w["integers"]).astype(np.float32), shape)
    het = tuple(ax for ax in range(1, len(shape)) if shape[ax] > 1)
    conf = QuantizerConfig("kbi", "datalane", k0=True, b0=8, i0=0, round_mode=rnd, overflow_mode=sat, trainable=False,
                           bc=None, br=None, ir=None, ic=None, i_decay_speed=-1, heterogeneous_axis=het or None)
    q = Quantizer(conf, name=cfg["name"])
    q._hgq1_kbi = (k, np.maximum(b - k, 0), i - k)  # set after build (see _set_hgq1)
    return q


def _set_hgq1(model) -> None:
    for layer in model.layers:
        kbi = getattr(layer, "_hgq1_kbi", None)
        if kbi is None:
            continue
        by_name = {v.name: v for v in layer.weights}
        for var_name, val in zip(("k", "b", "i"), kbi):
            v = by_name[var_name]
            v.assign(np.broadcast_to(val, tuple(v.shape)).astype(np.float32))


# --------------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------------


def _input_types(k2: Keras2Model, user: Mapping[str, Any], default: str) -> tuple[dict[str, FixedType], list[str]]:
    types, notes = {}, []
    ln = user.get("LayerName") or {}
    for name in k2.inputs:
        prec = (ln.get(name) or {}).get("Precision")
        if isinstance(prec, Mapping):
            prec = prec.get("result")
        if prec is None:
            notes.append(f"input {name!r} is not quantized by the model: the firmware input type is the default "
                         f"precision {default} (give it with --precision, layers: {{{name}: ...}})")
            prec = default
        types[name] = FixedType.parse(str(prec))
    return types, notes


def import_keras2(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    precision: str | os.PathLike | None = None,
    score: str | None = None,
    preprocessing: str | os.PathLike | None = None,
    backend: str = "Vitis",
    part: str | None = None,
    clock_ns: float = 5.0,
    force: bool = False,
    tb_events: int = 1000,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Import a Keras 2 / QKeras / HGQ-1 model file into the firmware directory ``out``.

    Float Keras 2 models take their per-layer precisions from ``precision`` (hls4ml config YAML
    or ours) and the default precision elsewhere (stated); QKeras and HGQ-1 models carry their own
    types (hls4ml's bit-exact flow), only the input type of a QKeras model is declared."""
    import hls4ml

    from trigger_ml.core.constants import DEFAULT_PART
    from trigger_ml.firmware.hls.project import _quiet, merge_config
    from trigger_ml.importers.common import (
        DEFAULT_PRECISION,
        load_precision_config,
        model_default_precision,
        write_firmware,
    )

    src = Path(source)
    k2 = read_keras2(src)
    user = load_precision_config(precision)
    default = model_default_precision(user)
    notes: list[str] = []
    flavor = k2.flavor
    if flavor == "qkeras":
        in_types, notes = _input_types(k2, user, default)
        model = rebuild(k2, in_types)
    else:
        model = rebuild(k2)
        if flavor == "hgq1":
            _set_hgq1(model)
    if flavor != "hgq1" and not (user.get("Model") or {}).get("Precision"):
        what = "tensors the model does not quantize (e.g. a float softmax) use" if flavor == "qkeras" else \
            "every tensor without a per-layer precision in --precision"
        notes.append(f"{what} use the default precision {DEFAULT_PRECISION}")

    def build(tmp: Path):
        with _quiet():
            if flavor == "keras2":
                cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend=backend,
                                                           default_precision=default)
            else:
                cfg = {"Model": {"Precision": default, "ReuseFactor": 1, "Strategy": "Latency"}}
            cfg = merge_config(cfg, {k: v for k, v in user.items() if not (k == "LayerName" and flavor == "qkeras")}
                               if flavor != "qkeras" else {k: v for k, v in user.items() if k == "Model"})
            return hls4ml.converters.convert_from_keras_model(
                model, output_dir=str(tmp), project_name="myproject", backend=backend, part=part or DEFAULT_PART,
                clock_period=clock_ns, io_type="io_parallel", hls_config=cfg,
                bit_exact=True if flavor != "keras2" else None, write_weights_txt=False)

    return write_firmware(build, out, source=src, source_format=flavor,
                          inputs={"model": src, "weights": k2.files[1] if len(k2.files) > 1 else None,
                                  "precision": precision, "preprocessing": preprocessing},
                          score=score, preprocessing=preprocessing, force=force, log=log, tb_events=tb_events,
                          notes=notes, meta={"default_precision": default})
