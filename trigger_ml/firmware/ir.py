"""FirmwareModel: a typed, immutable, JSON-serialisable description of what the HLS firmware computes.

The IR is built from the *converted* hls4ml ``ModelGraph`` (after every optimizer pass of the
backend flow: the deployment truth), never from the Keras model.  It is the contract between the
converter, the bit-exact emulator (:mod:`trigger_ml.emulate.engine`), the verifier and the reports.
Nothing in this module imports TensorFlow, Keras or hls4ml at import time; only
:func:`from_hls_model` imports hls4ml, lazily.

Fixed-point values are carried as *raw* integers (``value = raw * 2**-frac``) with a
:class:`~trigger_ml.emulate.fixed.FixedType`; every weight, bias, scale and lookup table is stored
as the raw integers the C++ simulation actually loads (weights go through the same decimal text
hls4ml writes into ``weights/*.txt``; tables are computed the way ``nnet_activation.h`` fills them).

JSON schema (``schema_version`` 1)
----------------------------------
::

    {
      "format": "trigger_ml.firmware_model", "schema_version": 1,
      "name": str,                        # hls4ml project name
      "meta": {...},                      # backend, io_type, hls4ml version, ... (informative)
      "inputs":  [{"name", "shape": [int], "type": "ap_fixed<..>"}],
      "outputs": [{"name", "shape": [int], "type": "ap_fixed<..>"}],   # name = producing layer
      "layers": [                          # topological order
        {"name", "kind", "hls_class",      # kind: see below; hls_class: hls4ml class name
         "inputs": [layer names], "shape": [int] (output, no batch dim),
         "type": "ap_fixed<..>",           # type of the values the layer's output array holds
         "types":  {role: "ap_fixed<..>"}, # weight, bias, accum, table, exp_table, ...
         "params": {...},                  # JSON scalars / lists, kind-specific
         "arrays": {role: {"shape": [int], "data": [int, ...]}}}   # raw integers
      ],
      "score": {"output": str, "index": int} | null,   # which output element is the anomaly score
      "threshold": int | null                           # raw integer in the score output's type
    }

Layer kinds (and the C++ they stand for; every ``cast`` is an ap_fixed assignment between types)
---------------------------------------------------------------------------------------------------
``input``
    ``input_t x = (double)in``.
``quantizer``
    HGQ2 ``FixedPointQuantizer`` kept as per-element code (``nnet_code_gen.h``):
    ``out[j] = ap_(u)fixed<b_j, i_j, AP_<rounding>, AP_<overflow>>(in[j])`` (0 where ``b_j == 0``),
    stored into ``result_t``.  arrays ``k``, ``b``, ``i`` (input shape); params rounding, overflow.
``dense``
    ``nnet_dense_latency.h``: ``mult[i][j] = (accum_t)(x[i] * w[i][j])`` (exact product, then cast),
    ``acc[j] = (accum_t)b[j]``, then ``acc[j] = (accum_t)(acc[j] + mult[i][j])`` for i = 0..n_in-1
    in order, ``res[j] = (result_t)acc[j]``.  arrays weight ``(n_in, n_out)``, bias ``(n_out,)``;
    types weight, bias, accum.
``conv1d`` / ``conv2d``
    io_parallel im2col (``fill_buffer``; zero padding) + the same per-pixel dense arithmetic
    (``nnet_conv2d_latency.h``).  arrays weight ``(fh, fw, c_in, c_out)`` (``(fw, c_in, c_out)`` for
    1-D), bias; params in/out sizes, strides, pads.
``pooling1d`` / ``pooling2d``
    ``nnet_pooling.h`` (Vitis): max = largest input (padding = most negative input code), cast to
    accum_t then result_t; average = ``acc = (accum_t)(acc + x)`` over the window,
    ``acc = (accum_t)(acc / n)`` (integer division truncating toward zero on the raw value, n = window
    pixels inside the image unless ``count_pad``), then result_t.
``global_pooling1d`` / ``global_pooling2d``
    the same reductions over all pixels, per channel.
``batchnorm``
    ``nnet_batchnorm.h``: ``res = (result_t)(x * scale + bias)`` (exact), per feature or per channel.
``activation``
    params fn: ``linear`` (cast), ``relu`` (``x > 0 ? x : 0``, cast), ``relu_max`` (params max_int),
    ``leaky_relu`` (``x > 0 ? x : alpha * x``), ``thresholded_relu`` (``x > theta ? x : 0``),
    ``prelu`` (arrays alpha).  Parameters are raw integers of types ``param``.
``table_activation``
    ``sigmoid``, ``tanh``, ``softplus``, ``softsign`` lookup tables: ``index = (int)(x * N / R) + off``
    (truncation toward zero), clamped to ``[0, N-1]``; ``res = (result_t)table[index]``.  params fn,
    table_size N, range_div R (16 or 8), offset (C++ ``int(R/2) * N / R``); arrays table; types table.
``elu`` / ``selu``
    negative-side lookup table (``index = (int)(x * N / -8)``), params as ``nnet_activation.h``.
``unary_lut``
    HGQ2 ``UnaryLUT``: ``res = (result_t)table[raw bits of x as unsigned]``.
``softmax``
    ``nnet_activation.h`` softmax, params implementation (latency, stable, legacy, argmax), n_slice,
    n_inner, n_outer, exp_table_size, inv_table_size, exp_bits, inv_bits; arrays exp_table,
    inv_table; types exp_table, inv_table, accum, inv_inp, inp_norm (stable), table (legacy).
``merge``
    ``nnet_merge.h``: params op (add, subtract, multiply, average, maximum, minimum), n_elem1,
    n_elem2 (inputs broadcast by ``i % n_elem``); the exact result is cast to result_t.
``dot``
    ``dot1d``: products cast to accum_t, summed into accum_t, cast to result_t.
``concatenate``
    params axis (over the non-batch dims); inputs are cast to result_t.
``reshape``
    io_parallel alias (``auto& out = in;``): no cast, ``type`` is the input's type.
``transpose``
    params perm; values cast to result_t.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from trigger_ml.emulate.fixed import FixedType, from_float
from trigger_ml.errors import ArtifactError, TriggerMLError, UnsupportedLayerError

__all__ = [
    "SCHEMA_VERSION",
    "FORMAT",
    "KINDS",
    "TensorSpec",
    "Layer",
    "ScoreSpec",
    "FirmwareModel",
    "from_hls_model",
    "build_tables",
]

SCHEMA_VERSION = 1
FORMAT = "trigger_ml.firmware_model"

KINDS = frozenset(
    {
        "input",
        "quantizer",
        "dense",
        "conv1d",
        "conv2d",
        "pooling1d",
        "pooling2d",
        "global_pooling1d",
        "global_pooling2d",
        "batchnorm",
        "activation",
        "table_activation",
        "elu",
        "selu",
        "unary_lut",
        "softmax",
        "merge",
        "dot",
        "concatenate",
        "reshape",
        "transpose",
    }
)


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------


def _type_str(t: FixedType) -> str:
    """Lossless text form of a FixedType (always spells every field)."""
    return (
        f"ap_{'' if t.signed else 'u'}fixed<{t.width},{t.integer},AP_{t.rounding},AP_{t.overflow},{t.sat_bits}>"
    )


def _parse_type(s: Any) -> FixedType:
    if isinstance(s, FixedType):
        return s
    if not isinstance(s, str):
        raise ArtifactError(f"firmware model: expected a fixed-point type string, got {s!r}")
    try:
        return FixedType.parse(s)
    except ValueError as exc:
        raise ArtifactError(f"firmware model: {exc}") from None


def _freeze_array(a: Any) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "iub" and arr.dtype != object:
        raise TriggerMLError(f"raw arrays must hold integers, got dtype {arr.dtype}")
    if arr.dtype.kind in "ub" or (arr.dtype.kind == "i" and arr.dtype != np.int64):
        if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.size and int(arr.max()) >= 2**63:
            arr = arr.astype(object)
        else:
            arr = arr.astype(np.int64)
    else:
        arr = arr.copy()
    arr.setflags(write=False)
    return arr


def _array_to_json(a: np.ndarray) -> dict:
    return {"shape": list(a.shape), "data": [int(v) for v in a.reshape(-1).tolist()]}


def _array_from_json(d: Any, where: str) -> np.ndarray:
    if not isinstance(d, Mapping) or "shape" not in d or "data" not in d:
        raise ArtifactError(f"firmware model: array {where} must be {{'shape', 'data'}}")
    shape = tuple(int(s) for s in d["shape"])
    data = d["data"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in data):
        raise ArtifactError(f"firmware model: array {where} must hold integers")
    if math.prod(shape) != len(data):
        raise ArtifactError(f"firmware model: array {where}: {len(data)} values for shape {shape}")
    if all(-(2**63) <= v < 2**63 for v in data):
        arr = np.array(data, dtype=np.int64).reshape(shape)
    else:
        arr = np.array(data, dtype=object).reshape(shape)
    arr.setflags(write=False)
    return arr


def _jsonable(v: Any) -> Any:
    """Normalise params to plain JSON values (tuples -> lists, numpy scalars -> Python)."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, str) or v is None:
        return v
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    raise TriggerMLError(f"value {v!r} of type {type(v).__name__} is not JSON-serialisable")


def _freeze_params(v: Any) -> Any:
    v = _jsonable(v)
    if isinstance(v, dict):
        return MappingProxyType({k: _freeze_params(x) for k, x in v.items()})
    if isinstance(v, list):
        return tuple(_freeze_params(x) for x in v)
    return v


def _thaw(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _thaw(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return [_thaw(x) for x in v]
    return v


# ----------------------------------------------------------------------------------------------
# IR classes
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """A top-level input or output of the firmware: name, shape (no batch dim) and fixed type."""

    name: str
    shape: tuple[int, ...]
    type: FixedType

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "type", _parse_type(self.type))

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "type": _type_str(self.type)}

    @classmethod
    def from_dict(cls, d: Mapping) -> TensorSpec:
        try:
            return cls(str(d["name"]), tuple(d["shape"]), _parse_type(d["type"]))
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"firmware model: bad tensor spec {d!r}: {exc}") from None


@dataclass(frozen=True)
class ScoreSpec:
    """Which output element is the anomaly score."""

    output: str
    index: int = 0

    def to_dict(self) -> dict:
        return {"output": self.output, "index": int(self.index)}


@dataclass(frozen=True, eq=False)
class Layer:
    """One layer of the firmware, see the module docstring for the meaning of each ``kind``."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    type: FixedType
    types: Mapping[str, FixedType] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    hls_class: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UnsupportedLayerError(f"layer {self.name!r}: unknown kind {self.kind!r}")
        object.__setattr__(self, "inputs", tuple(str(i) for i in self.inputs))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "type", _parse_type(self.type))
        object.__setattr__(self, "types", MappingProxyType({str(k): _parse_type(v) for k, v in dict(self.types).items()}))
        object.__setattr__(self, "params", _freeze_params(dict(self.params)))
        object.__setattr__(self, "arrays", MappingProxyType({str(k): _freeze_array(v) for k, v in dict(self.arrays).items()}))

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "hls_class": self.hls_class,
            "inputs": list(self.inputs),
            "shape": list(self.shape),
            "type": _type_str(self.type),
            "types": {k: _type_str(v) for k, v in self.types.items()},
            "params": _thaw(self.params),
            "arrays": {k: _array_to_json(v) for k, v in self.arrays.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> Layer:
        try:
            name = str(d["name"])
            return cls(
                name=name,
                kind=str(d["kind"]),
                inputs=tuple(d.get("inputs", ())),
                shape=tuple(d["shape"]),
                type=_parse_type(d["type"]),
                types={k: _parse_type(v) for k, v in dict(d.get("types", {})).items()},
                params=dict(d.get("params", {})),
                arrays={k: _array_from_json(v, f"{name}.{k}") for k, v in dict(d.get("arrays", {})).items()},
                hls_class=str(d.get("hls_class", "")),
            )
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"firmware model: bad layer entry {d.get('name', d)!r}: {exc}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layer) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.name, self.kind, self.inputs, self.shape))


@dataclass(frozen=True, eq=False)
class FirmwareModel:
    """What the firmware computes: inputs, outputs, ordered layers, optional score/threshold."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    layers: tuple[Layer, ...]
    score: ScoreSpec | None = None
    threshold: int | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "meta", _freeze_params(dict(self.meta)))
        if self.threshold is not None:
            if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, np.integer)):
                raise TriggerMLError(f"threshold must be a raw integer, got {self.threshold!r}")
            object.__setattr__(self, "threshold", int(self.threshold))
        self._validate()

    # -- validation --------------------------------------------------------------------------
    def _validate(self) -> None:
        seen: dict[str, Layer] = {}
        for layer in self.layers:
            if layer.name in seen:
                raise ArtifactError(f"firmware model {self.name!r}: duplicate layer name {layer.name!r}")
            for i in layer.inputs:
                if i not in seen:
                    raise ArtifactError(
                        f"firmware model {self.name!r}: layer {layer.name!r} reads {i!r} before it is computed"
                    )
            seen[layer.name] = layer
        for spec in self.inputs:
            lay = seen.get(spec.name)
            if lay is None or lay.kind != "input":
                raise ArtifactError(f"firmware model {self.name!r}: input {spec.name!r} has no input layer")
        for spec in self.outputs:
            if spec.name not in seen:
                raise ArtifactError(f"firmware model {self.name!r}: output {spec.name!r} is not a layer")
        if self.score is not None:
            names = [o.name for o in self.outputs]
            if self.score.output not in names:
                raise ArtifactError(
                    f"firmware model {self.name!r}: score output {self.score.output!r} is not one of {names}"
                )
            size = self.outputs[names.index(self.score.output)].size
            if not 0 <= self.score.index < size:
                raise ArtifactError(f"firmware model {self.name!r}: score index {self.score.index} out of range")
        if self.threshold is not None and self.score is None:
            raise ArtifactError(f"firmware model {self.name!r}: a threshold needs a score output")

    # -- accessors -------------------------------------------------------------------------------
    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def score_type(self) -> FixedType | None:
        if self.score is None:
            return None
        return next(o.type for o in self.outputs if o.name == self.score.output)

    def with_score(self, output: str | None = None, index: int = 0, threshold: int | float | None = None) -> FirmwareModel:
        """A copy with the anomaly score (default: the only/first output) and optional threshold.

        ``threshold`` is a raw integer of the score type; a float is converted with truncation
        (``floor(t * 2**frac)``) which keeps ``score > threshold`` decisions identical."""
        if output is None:
            output = self.outputs[0].name
        score = ScoreSpec(output, int(index))
        tmp = FirmwareModel(self.name, self.inputs, self.outputs, self.layers, score, None, self.meta)
        thr = _threshold_raw(threshold, tmp.score_type)
        return FirmwareModel(self.name, self.inputs, self.outputs, self.layers, score, thr, self.meta)

    # -- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "meta": _thaw(self.meta),
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "layers": [layer.to_dict() for layer in self.layers],
            "score": None if self.score is None else self.score.to_dict(),
            "threshold": self.threshold,
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, separators=None if indent else (",", ":"))

    @classmethod
    def from_dict(cls, d: Mapping) -> FirmwareModel:
        if not isinstance(d, Mapping):
            raise ArtifactError("firmware model: top-level JSON value must be an object")
        if d.get("format", FORMAT) != FORMAT:
            raise ArtifactError(f"firmware model: unexpected format {d.get('format')!r} (expected {FORMAT!r})")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ArtifactError(
                f"firmware model: unsupported schema_version {version!r} (this trigger_ml reads {SCHEMA_VERSION}); "
                "re-export the firmware model with this version"
            )
        try:
            score = d.get("score")
            score_spec = None if score is None else ScoreSpec(str(score["output"]), int(score.get("index", 0)))
            return cls(
                name=str(d["name"]),
                inputs=tuple(TensorSpec.from_dict(s) for s in d["inputs"]),
                outputs=tuple(TensorSpec.from_dict(s) for s in d["outputs"]),
                layers=tuple(Layer.from_dict(x) for x in d["layers"]),
                score=score_spec,
                threshold=d.get("threshold"),
                meta=dict(d.get("meta") or {}),
            )
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"firmware model: missing or malformed field: {exc}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> FirmwareModel:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"firmware model: invalid JSON: {exc}") from None
        return cls.from_dict(d)

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> FirmwareModel:
        p = Path(path)
        if not p.is_file():
            raise ArtifactError(f"{p}: firmware model file not found")
        try:
            text = p.read_text()
        except OSError as exc:
            raise ArtifactError(f"{p}: cannot read firmware model: {exc}") from None
        try:
            return cls.from_json(text)
        except ArtifactError as exc:
            raise ArtifactError(f"{p}: {exc}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FirmwareModel) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.name, len(self.layers)))

    def summary(self) -> str:
        lines = [f"FirmwareModel {self.name!r} ({len(self.layers)} layers)"]
        for layer in self.layers:
            extra = ", ".join(f"{k}={_type_str(v)}" for k, v in layer.types.items())
            lines.append(
                f"  {layer.name:<28} {layer.kind:<17} {str(list(layer.shape)):<14} {layer.type.to_hls()}"
                + (f"  [{extra}]" if extra else "")
            )
        if self.score is not None:
            lines.append(f"  score: {self.score.output}[{self.score.index}] threshold={self.threshold}")
        return "\n".join(lines)


def _threshold_raw(threshold, t: FixedType | None) -> int | None:
    if threshold is None:
        return None
    if isinstance(threshold, bool):
        raise TriggerMLError(f"threshold must be a number, got {threshold!r}")
    if isinstance(threshold, (int, np.integer)):
        return int(threshold)
    if isinstance(threshold, (float, np.floating)):
        if t is None:
            raise TriggerMLError("a float threshold needs a score output to convert it")
        if not math.isfinite(float(threshold)):
            raise TriggerMLError(f"threshold must be finite, got {threshold!r}")
        tt = FixedType(64, 64 - t.frac, True, "TRN", "SAT")
        return int(from_float(np.array([float(threshold)]), tt)[0])
    raise TriggerMLError(f"threshold must be an int (raw) or a float, got {type(threshold).__name__}")


# ----------------------------------------------------------------------------------------------
# lookup tables, computed the way nnet_activation.h fills them (float arithmetic emulated)
# ----------------------------------------------------------------------------------------------

_f32 = np.float32


def _ceillog2(x: int) -> int:
    """nnet_helpers.h ``ceillog2`` (note: 1 for x <= 2)."""
    return 1 if x <= 2 else 1 + _ceillog2((x + 1) // 2)


def _expf(x: np.ndarray) -> np.ndarray:
    """std::exp(float) (glibc expf is correctly rounded in practice): exp in double, rounded."""
    with np.errstate(over="ignore"):
        return np.exp(x.astype(np.float64)).astype(np.float32)


def _cast_table(values: np.ndarray, t: FixedType) -> np.ndarray:
    return from_float(np.asarray(values, dtype=np.float64), t).astype(np.int64)


def _table_in_val(n: int, span: float) -> np.ndarray:
    """``float in_val = 2 * span * (ii - float(N) / 2.0) / float(N)`` (double math, then float)."""
    ii = np.arange(n, dtype=np.float64)
    return (2 * span * (ii - float(np.float32(n)) / 2.0) / float(np.float32(n))).astype(np.float32)


def build_tables(fn: str, table_size: int, table_t: FixedType) -> np.ndarray:
    """Raw table of ``table_t`` for sigmoid / tanh / softplus / softsign / elu / selu (nnet_activation.h)."""
    n = int(table_size)
    if fn == "sigmoid":
        x = _table_in_val(n, 8.0)
        e = _expf(-x)
        d = (_f32(1) + e).astype(np.float32)  # 1 + float -> float
        with np.errstate(divide="ignore"):
            v = (1.0 / d.astype(np.float64)).astype(np.float32)  # double division, returned as float
    elif fn == "tanh":
        x = _table_in_val(n, 4.0)
        v = np.tanh(x.astype(np.float64))  # ::tanh(double) (the nnet::tanh template is not yet declared)
    elif fn == "softplus":
        x = _table_in_val(n, 8.0)
        e = _expf(x)
        v = np.log(e.astype(np.float64) + 1.0).astype(np.float32)  # std::log(double), returned as float
    elif fn == "softsign":
        x = _table_in_val(n, 8.0)
        v = (x.astype(np.float64) / (np.abs(x).astype(np.float64) + 1.0)).astype(np.float32)
    elif fn == "elu":
        ii = np.arange(n, dtype=np.float64)
        x = (-8.0 * ii / float(np.float32(n))).astype(np.float32)
        v = (_expf(x).astype(np.float64) - 1.0).astype(np.float32)
    elif fn == "selu":
        ii = np.arange(n, dtype=np.float64)
        x = (-8.0 * ii / float(np.float32(n))).astype(np.float32)
        v = (1.0507009873554804934193349852946 * (1.6732632423543772848170429916717 * (_expf(x).astype(np.float64) - 1.0))).astype(
            np.float32
        )
    else:
        raise UnsupportedLayerError(f"no lookup table for activation {fn!r}")
    return _cast_table(v, table_t)


def _real_val_from_idx(t: FixedType, table_size: int) -> np.ndarray:
    """softmax_real_val_from_idx<t, table_size>(i) for every i: top N bits set to i, as float."""
    nbits = _ceillog2(table_size)
    w = t.width
    if nbits > w:
        raise UnsupportedLayerError(f"softmax table of {table_size} entries needs {nbits} address bits > width of {t.to_hls()}")
    i = np.arange(table_size, dtype=np.int64)
    raw = i << (w - nbits)
    if t.signed:
        raw = np.where(raw >= (1 << (w - 1)), raw - (1 << w), raw)
    return np.ldexp(raw.astype(np.float64), -t.frac).astype(np.float32)  # (float)x (round-half-even)


def _softmax_tables(impl: str, types: Mapping[str, FixedType], exp_size: int, inv_size: int, exp_scale: float, data_t: FixedType):
    if impl in ("latency", "stable"):
        addr_t = types["inp_norm"] if impl == "stable" else data_t
        x = _real_val_from_idx(addr_t, exp_size)
        x = (x * _f32(exp_scale)).astype(np.float32)
        if impl == "stable":
            x = -x
        exp_table = _cast_table(_expf(x), types["exp_table"])
        xi = _real_val_from_idx(types["inv_inp"], inv_size)
        with np.errstate(divide="ignore"):
            inv = (_f32(1) / xi).astype(np.float32)
        inv_table = _cast_table(inv, types["inv_table"])
        return exp_table, inv_table
    if impl == "legacy":
        t = types["table"]
        x = _table_in_val(exp_size, 8.0)
        exp_table = _cast_table(_expf(x), t)
        ii = np.arange(inv_size, dtype=np.float64)
        xin = (64.0 * ii / float(np.float32(inv_size))).astype(np.float32)
        with np.errstate(divide="ignore"):
            v = np.where(xin > 0, 1.0 / xin.astype(np.float64), 0.0)
        inv_table = _cast_table(v, t)
        return exp_table, inv_table
    return np.zeros(0, np.int64), np.zeros(0, np.int64)


# ----------------------------------------------------------------------------------------------
# from hls4ml
# ----------------------------------------------------------------------------------------------


def _ft(precision, where: str) -> FixedType:
    try:
        return FixedType.from_hls4ml(precision)
    except ValueError as exc:
        raise UnsupportedLayerError(f"{where}: unsupported precision {precision!r}: {exc}") from None


def _check_plain_fixed(precision, where: str) -> None:
    from hls4ml.model import types as ht

    if isinstance(precision, (ht.XnorPrecisionType, ht.ExponentPrecisionType)):
        raise UnsupportedLayerError(f"{where}: {type(precision).__name__} (binary / power-of-two) is not supported")


def _weights_raw(node, key: str) -> tuple[np.ndarray, FixedType]:
    """The raw integers the C-sim loads: hls4ml's decimal text (weights/*.txt), cast to the type."""
    var = node.get_weights(key)
    prec = var.type.precision
    where = f"layer {node.name!r} ({node.class_name}) {key}"
    _check_plain_fixed(prec, where)
    t = _ft(prec, where)
    text = list(iter(var))
    vals = np.array([float(s) for s in text], dtype=np.float64)
    raw = from_float(vals, t).astype(np.int64).reshape(np.asarray(var.data).shape)
    return raw, t


def _node_type(node, key: str) -> FixedType:
    t = node.types.get(key) if hasattr(node, "types") else None
    if t is None:
        t = node.get_attr(key)
    if t is None:
        raise UnsupportedLayerError(f"layer {node.name!r} ({node.class_name}) has no {key}")
    prec = getattr(t, "precision", t)
    _check_plain_fixed(prec, f"layer {node.name!r} {key}")
    return _ft(prec, f"layer {node.name!r} ({node.class_name}) {key}")


def _attr(node, key, default=None):
    v = node.get_attr(key, default)
    return default if v is None else v


def _config_cpp(node) -> str:
    """The C++ config struct hls4ml generated for this node (set by the backend template passes)."""
    cfg = node.get_attr("config_cpp", None)
    return str(cfg) if cfg else ""


def _parse_cfg_int(cfg: str, key: str) -> int | None:
    m = re.search(rf"\b{key}\s*=\s*(-?\d+)\s*;", cfg)
    return int(m.group(1)) if m else None


def _parse_cfg_typedef(cfg: str, role: str, node) -> FixedType | None:
    m = re.search(rf"typedef\s+([^;]+?)\s+{role}\s*;", cfg)
    if not m:
        return None
    rhs = m.group(1).strip()
    for nt in node.types.values():
        if getattr(nt, "name", None) == rhs:
            return _ft(nt.precision, f"layer {node.name!r} {role}")
    try:
        return FixedType.parse(rhs)
    except ValueError:
        return None


def _out_type(node) -> FixedType:
    prec = node.get_output_variable().type.precision
    where = f"layer {node.name!r} ({node.class_name}) result_t"
    _check_plain_fixed(prec, where)
    return _ft(prec, where)


def _out_shape(node) -> tuple[int, ...]:
    return tuple(int(s) for s in node.get_output_variable().shape)


def _in_shape(node, i: int = 0) -> tuple[int, ...]:
    return tuple(int(s) for s in node.get_input_variable(node.inputs[i]).shape)


def _unsupported(node, why: str = "") -> UnsupportedLayerError:
    msg = f"unsupported hls4ml layer {node.name!r} of class {type(node).__name__} ({node.class_name})"
    return UnsupportedLayerError(msg + (f": {why}" if why else ""))


def from_hls_model(hls_model, *, score_output: str | None = None, threshold: int | float | None = None, score_index: int = 0) -> FirmwareModel:
    """Build the FirmwareModel of a converted hls4ml ``ModelGraph`` (io_parallel, Latency strategy).

    ``score_output`` names the output (= producing layer) holding the anomaly score; ``threshold`` is
    a raw integer of that output's type (a float is converted with truncation)."""
    from hls4ml.model import layers as hl

    cfg = hls_model.config
    io_type = cfg.get_config_value("IOType")
    if io_type != "io_parallel":
        raise UnsupportedLayerError(f"only io_parallel firmware can be emulated, this model uses {io_type}")
    from hls4ml.model.optimizer.passes.hgq_proxy_model import FixedPointQuantizer, UnaryLUT

    layers: list[Layer] = []
    by_name: dict[str, Layer] = {}
    # hls4ml variable name -> producing layer name (inputs of a node are output-variable names)
    for node in hls_model.get_layers():
        lay = _convert_node(node, hl, FixedPointQuantizer, UnaryLUT, by_name)
        layers.append(lay)
        by_name[lay.name] = lay

    inputs = []
    for name in hls_model.inputs:
        lay = by_name[name]
        inputs.append(TensorSpec(name, lay.shape, lay.type))
    outputs = []
    for name in hls_model.outputs:
        lay = by_name[name]
        outputs.append(TensorSpec(name, lay.shape, lay.type))

    try:
        import hls4ml

        version = getattr(hls4ml, "__version__", "")
    except Exception:  # pragma: no cover
        version = ""
    meta = {
        "hls4ml_version": str(version),
        "backend": str(cfg.get_config_value("Backend") or cfg.backend.name),
        "io_type": str(io_type),
        "project_name": str(cfg.get_project_name()),
    }
    fm = FirmwareModel(
        name=str(cfg.get_project_name()),
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        layers=tuple(_prune_unused(layers, [o.name for o in outputs])),
        meta=meta,
    )
    if score_output is not None or threshold is not None:
        fm = fm.with_score(score_output, score_index, threshold)
    return fm


def _prune_unused(layers: list[Layer], outputs: Sequence[str]) -> list[Layer]:
    """Drop layers whose values never reach an output (hls4ml keeps e.g. duplicated quantizers)."""
    needed = set(outputs)
    for layer in reversed(layers):
        if layer.name in needed:
            needed.update(layer.inputs)
    return [layer for layer in layers if layer.name in needed or layer.kind == "input"]


def _convert_node(node, hl, FixedPointQuantizer, UnaryLUT, by_name: Mapping[str, Layer]) -> Layer:  # noqa: C901
    name = node.name
    cls = node.class_name
    hls_class = type(node).__name__
    inputs = () if isinstance(node, hl.Input) else tuple(node.inputs)
    for i in inputs:
        if i not in by_name:
            raise _unsupported(node, f"input {i!r} is not produced by a preceding layer")
    shape = _out_shape(node)

    def mk(kind, type_=None, types=None, params=None, arrays=None, shape_=None):
        return Layer(
            name=name,
            kind=kind,
            inputs=inputs,
            shape=shape if shape_ is None else shape_,
            type=_out_type(node) if type_ is None else type_,
            types=types or {},
            params=params or {},
            arrays=arrays or {},
            hls_class=hls_class,
        )

    strategy = str(_attr(node, "strategy", "latency")).lower()

    if isinstance(node, hl.Input):
        return mk("input", shape_=shape)

    if isinstance(node, FixedPointQuantizer):
        in_shape = _in_shape(node)
        # generate_mask_fn: masks are (1, *shape) or (1,) arrays, broadcast to the input shape
        k, b, i = (np.broadcast_to(np.asarray(m)[0], in_shape) for m in node.mask_kbi)
        params = {"rounding": _ft_mode(node.RND, "rounding"), "overflow": _ft_mode(node.SAT, "overflow")}
        for bb, ii, kk in zip(b.reshape(-1), i.reshape(-1), k.reshape(-1)):
            if bb > 0:
                try:
                    FixedType(int(bb), int(ii), bool(kk), params["rounding"], params["overflow"])
                except ValueError as exc:
                    raise _unsupported(node, f"per-element type: {exc}") from None
        return mk("quantizer", params=params, arrays={"k": k.astype(np.int64), "b": b.astype(np.int64), "i": i.astype(np.int64)})

    if isinstance(node, UnaryLUT):
        raw, tt = _weights_raw(node, "table")
        return mk("unary_lut", types={"table": tt}, arrays={"table": raw.reshape(-1)}, params={"table_size": int(raw.size)})

    if isinstance(node, (hl.Conv1D, hl.Conv2D)) and not isinstance(
        node, tuple(getattr(hl, c) for c in ("DepthwiseConv1D", "DepthwiseConv2D") if hasattr(hl, c))
    ):
        if strategy not in ("latency", "distributed_arithmetic") and strategy != "resource":
            raise _unsupported(node, f"strategy {strategy}")
        if strategy == "distributed_arithmetic":
            raise _unsupported(node, "distributed_arithmetic strategy")
        if strategy == "resource":
            raise _unsupported(node, "Resource strategy (only Latency is emulated)")
        w, wt = _weights_raw(node, "weight")
        b, bt = _weights_raw(node, "bias")
        types = {"weight": wt, "bias": bt, "accum": _node_type(node, "accum_t")}
        _check_product(node)
        for d in ("dilation", "dilation_height", "dilation_width"):
            if int(_attr(node, d, 1)) != 1:
                raise _unsupported(node, "dilated convolution")
        if isinstance(node, hl.Conv2D):
            params = {
                k: int(node.get_attr(k))
                for k in (
                    "in_height", "in_width", "n_chan", "out_height", "out_width", "n_filt", "filt_height",
                    "filt_width", "stride_height", "stride_width", "pad_top", "pad_bottom", "pad_left", "pad_right",
                )
            }
            w = w.reshape(params["filt_height"], params["filt_width"], params["n_chan"], params["n_filt"])
            return mk("conv2d", types=types, params=params, arrays={"weight": w, "bias": b.reshape(-1)})
        params = {
            k: int(node.get_attr(k))
            for k in ("in_width", "n_chan", "out_width", "n_filt", "filt_width", "stride_width", "pad_left", "pad_right")
        }
        w = w.reshape(params["filt_width"], params["n_chan"], params["n_filt"])
        return mk("conv1d", types=types, params=params, arrays={"weight": w, "bias": b.reshape(-1)})

    if isinstance(node, hl.Dense):
        if strategy == "distributed_arithmetic":
            raise _unsupported(node, "distributed_arithmetic strategy")
        if strategy != "latency":
            raise _unsupported(node, f"strategy {strategy} (only Latency is emulated)")
        if len(_in_shape(node)) != 1:
            raise _unsupported(node, f"dense on a {len(_in_shape(node))}-D input")
        _check_product(node)
        w, wt = _weights_raw(node, "weight")
        b, bt = _weights_raw(node, "bias")
        n_in, n_out = int(node.get_attr("n_in")), int(node.get_attr("n_out"))
        return mk(
            "dense",
            types={"weight": wt, "bias": bt, "accum": _node_type(node, "accum_t")},
            params={"n_in": n_in, "n_out": n_out},
            arrays={"weight": w.reshape(n_in, n_out), "bias": b.reshape(n_out)},
        )

    if isinstance(node, hl.BatchNormalization):
        _check_product(node, "scale")
        s, st = _weights_raw(node, "scale")
        b, bt = _weights_raw(node, "bias")
        n_filt = int(_attr(node, "n_filt", -1))
        return mk("batchnorm", types={"scale": st, "bias": bt}, params={"n_filt": n_filt},
                  arrays={"scale": s.reshape(-1), "bias": b.reshape(-1)})

    if isinstance(node, (hl.Pooling1D, hl.Pooling2D)):
        op = str(node.get_attr("pool_op")).lower()
        op = "max" if op.startswith("max") else "average"
        types = {"accum": _node_type(node, "accum_t")}
        if isinstance(node, hl.Pooling2D):
            keys = ("in_height", "in_width", "n_filt", "out_height", "out_width", "pool_height", "pool_width",
                    "stride_height", "stride_width", "pad_top", "pad_bottom", "pad_left", "pad_right")
            params = {k: int(node.get_attr(k)) for k in keys}
            kind = "pooling2d"
        else:
            keys = ("n_in", "n_filt", "n_out", "pool_width", "stride_width", "pad_left", "pad_right")
            params = {k: int(node.get_attr(k)) for k in keys}
            kind = "pooling1d"
        if str(_attr(node, "data_format", "channels_last")) != "channels_last":
            raise _unsupported(node, "channels_first pooling")
        params["op"] = op
        params["count_pad"] = bool(_attr(node, "count_pad", False))
        return mk(kind, types=types, params=params)

    if isinstance(node, (hl.GlobalPooling1D, hl.GlobalPooling2D)):
        op = str(node.get_attr("pool_op")).lower()
        op = "max" if op.startswith("max") else "average"
        in_shape = _in_shape(node)
        if str(_attr(node, "data_format", "channels_last")) != "channels_last":
            raise _unsupported(node, "channels_first pooling")
        kind = "global_pooling2d" if isinstance(node, hl.GlobalPooling2D) else "global_pooling1d"
        if bool(_attr(node, "keep_dims", False)):
            pass  # output shape already reflects it; values identical
        return mk(kind, types={"accum": _node_type(node, "accum_t")},
                  params={"op": op, "n_pixels": int(math.prod(in_shape[:-1])), "n_filt": int(in_shape[-1])})

    if isinstance(node, hl.Softmax):
        return _convert_softmax(node, mk, by_name)

    if isinstance(node, hl.PReLU):
        a, at = _weights_raw(node, "param")
        return mk("activation", types={"param": at}, params={"fn": "prelu"}, arrays={"alpha": a.reshape(-1)})

    if isinstance(node, hl.HardActivation):
        raise _unsupported(node, "hard_sigmoid / hard_tanh")

    if isinstance(node, hl.ParametrizedActivation):
        act = str(node.get_attr("activation")).lower()
        param = float(_attr(node, "activ_param", 1.0))
        pt = _node_type(node, "param_t")
        praw = int(from_float(np.array([param]), pt)[0])
        if act == "leakyrelu":
            return mk("activation", types={"param": pt}, params={"fn": "leaky_relu", "param_raw": praw})
        if act == "thresholdedrelu":
            return mk("activation", types={"param": pt}, params={"fn": "thresholded_relu", "param_raw": praw})
        if act == "elu":
            tt = _node_type(node, "table_t")
            n = int(node.get_attr("table_size"))
            return mk("elu", types={"table": tt, "param": pt}, params={"table_size": n, "param_raw": praw},
                      arrays={"table": build_tables("elu", n, tt)})
        raise _unsupported(node, f"parametrized activation {act!r}")

    if isinstance(node, hl.Activation):
        act = str(node.get_attr("activation")).lower()
        if act == "linear":
            return mk("activation", params={"fn": "linear"})
        if act == "relu":
            return mk("activation", params={"fn": "relu"})
        if act in ("relu6", "relu1"):
            return mk("activation", params={"fn": "relu_max", "max_int": 6 if act == "relu6" else 1})
        if act in ("sigmoid", "tanh", "softplus", "softsign"):
            tt = _node_type(node, "table_t")
            n = int(node.get_attr("table_size"))
            div = 8 if act == "tanh" else 16
            offset = (div // 2) * n // div
            return mk("table_activation", types={"table": tt},
                      params={"fn": act, "table_size": n, "range_div": div, "offset": offset},
                      arrays={"table": build_tables(act, n, tt)})
        if act == "elu":
            tt = _node_type(node, "table_t")
            n = int(node.get_attr("table_size"))
            return mk("elu", types={"table": tt, "param": FixedType(1, 1, False)},
                      params={"table_size": n, "param_raw": 1}, arrays={"table": build_tables("elu", n, tt)})
        if act == "selu":
            tt = _node_type(node, "table_t")
            n = int(node.get_attr("table_size"))
            return mk("selu", types={"table": tt}, params={"table_size": n}, arrays={"table": build_tables("selu", n, tt)})
        raise _unsupported(node, f"activation {act!r}")

    if isinstance(node, hl.Dot):
        if len(_in_shape(node, 0)) != 1:
            raise _unsupported(node, "dot of tensors with rank > 1")
        from hls4ml.backends import get_backend

        p1 = node.get_input_variable(node.inputs[0]).type.precision
        p2 = node.get_input_variable(node.inputs[1]).type.precision
        if get_backend("vivado").product_type(p1, p2) not in ("mult", "weight_ternary"):
            raise _unsupported(node, "binary / power-of-two product")
        return mk("dot", types={"accum": _node_type(node, "accum_t")}, params={"n_in": int(_in_shape(node)[0])})

    if isinstance(node, hl.Concatenate):
        rank = len(_in_shape(node, 0))
        axis = int(node.get_attr("axis"))
        if axis < 0:
            axis += rank
        else:
            axis -= 1
        if not 0 <= axis < rank:
            raise _unsupported(node, f"concatenation axis {node.get_attr('axis')}")
        if rank > 3:
            raise _unsupported(node, "concatenation of rank > 3 tensors")
        return mk("concatenate", params={"axis": axis})

    if isinstance(node, hl.Merge):
        op = str(node.get_attr("op")).lower()
        if op not in ("add", "subtract", "multiply", "average", "maximum", "minimum"):
            raise _unsupported(node, f"merge op {op!r}")
        n1 = int(math.prod(_in_shape(node, 0)))
        n2 = int(math.prod(_in_shape(node, 1)))
        return mk("merge", params={"op": op, "n_elem1": n1, "n_elem2": n2})

    if isinstance(node, hl.Reshape):
        src = by_name[inputs[0]]
        return mk("reshape", type_=src.type, params={"target_shape": list(shape)})

    if isinstance(node, hl.Transpose):
        perm = [int(p) for p in node.get_attr("perm")]
        return mk("transpose", params={"perm": perm})

    raise _unsupported(node)


def _ft_mode(v, what: str) -> str:
    s = getattr(v, "name", v)
    s = str(s).upper()
    if s.startswith("AP_"):
        s = s[3:]
    if s.startswith("S_"):
        s = s[2:]
    return s


def _check_product(node, key: str = "weight") -> None:
    from hls4ml.backends import get_backend

    p_in = node.get_input_variable().type.precision
    p_w = node.get_weights(key).type.precision
    ptype = get_backend("vivado").product_type(p_in, p_w)
    if ptype not in ("mult", "weight_ternary"):  # weight_ternary computes exactly x*w too
        raise _unsupported(node, f"product type {ptype} (binary / power-of-two weights)")


def _convert_softmax(node, mk, by_name) -> Layer:
    in_type = by_name[node.inputs[0]].type
    cfg = _config_cpp(node)
    impl = str(_attr(node, "implementation", "stable")).lower()
    m = re.search(r"softmax_implementation::(\w+)", cfg)
    if m:
        impl = m.group(1).lower()
    if impl not in ("latency", "stable", "legacy", "argmax"):
        raise _unsupported(node, f"softmax implementation {impl}")
    n_in = int(node.get_attr("n_in"))
    n_inner = int(_attr(node, "n_inner", 1))
    n_outer = int(_attr(node, "n_outer", 1))
    table_size = int(_attr(node, "table_size", 1024))
    exp_size = _parse_cfg_int(cfg, "exp_table_size") or int(_attr(node, "exp_table_size", table_size))
    inv_size = _parse_cfg_int(cfg, "inv_table_size") or int(_attr(node, "inv_table_size", table_size))
    exp_scale = float(_attr(node, "exp_scale", 1.0))
    m = re.search(r"exp_scale\s*=\s*([^;]+);", cfg)
    if m:
        try:
            exp_scale = float(m.group(1).strip().rstrip("fF"))
        except ValueError:
            pass
    if not cfg and impl == "stable" and node.types.get("inp_norm_t") is None and in_type.signed:
        # replicate SoftmaxConfigTemplate.format when no generated config is available
        exp_size = min(exp_size, 2 ** (in_type.width - 1))
    types: dict[str, FixedType] = {}
    if impl in ("latency", "stable"):
        for role in ("exp_table", "inv_table", "accum", "inv_inp"):
            t = _parse_cfg_typedef(cfg, f"{role}_t", node) if cfg else None
            types[role] = t if t is not None else _node_type(node, f"{role}_t")
        if impl == "stable":
            t = _parse_cfg_typedef(cfg, "inp_norm_t", node) if cfg else None
            if t is None:
                if node.types.get("inp_norm_t") is not None:
                    t = _node_type(node, "inp_norm_t")
                else:
                    w, iw = in_type.width - int(in_type.signed), in_type.integer - int(in_type.signed)
                    t = FixedType(w, iw, False)
            types["inp_norm"] = t
    elif impl == "legacy":
        types["table"] = _node_type(node, "table_t")
    n_slice = n_in // n_inner // n_outer
    params = {
        "implementation": impl,
        "n_in": n_in,
        "n_slice": n_slice,
        "n_inner": n_inner,
        "n_outer": n_outer,
        "exp_table_size": exp_size,
        "inv_table_size": inv_size,
        "exp_scale": exp_scale,
        "exp_bits": _ceillog2(exp_size),
        "inv_bits": _ceillog2(inv_size),
    }
    exp_table, inv_table = _softmax_tables(impl, types, exp_size, inv_size, exp_scale, in_type)
    arrays = {"exp_table": exp_table, "inv_table": inv_table} if impl != "argmax" else {}
    if impl == "latency" and _ceillog2(exp_size) > in_type.width:
        raise _unsupported(node, "exp table wider than the input type")
    return mk("softmax", types=types, params=params, arrays=arrays)
