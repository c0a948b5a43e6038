"""FirmwareModel: a typed, immutable, JSON-serialisable description of what the HLS firmware computes.

The IR is built from the *converted* hls4ml ``ModelGraph`` (after every optimizer pass of the
backend flow: the deployment truth), never from the Keras model.  It is the contract between the
converter, the bit-exact emulator (:mod:`trigger_ml.emulate`), the verifier and the reports.
Nothing in this module imports TensorFlow, Keras or hls4ml at import time; only
:func:`from_hls_model` imports hls4ml, lazily.

Fixed-point values are carried as *raw* integers (``value = raw * 2**-frac``) with a
:class:`~trigger_ml.core.fixed.FixedType`; every weight, bias, scale and lookup table is stored
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
    types weight, bias, accum.  The Resource kernels sum the same accum_t products in another order:
    identical when accum_t wraps (the only Resource case accepted by the importers).
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
``scale_input``
    deployed-style input scaling inside a declared type: ``work_t d = x - offset[j];`` (the exact
    difference cast into ``work_t``: its rounding/overflow apply), ``d = d >> shift[j];`` (ap_fixed
    shift of the raw bits within ``work_t``: right = floor, a negative shift is a left shift that
    wraps in the type's width, no saturation), ``res = (result_t)d``.  arrays offset (raw integers
    of types ``offset``, so half-integer offsets such as 33.5 are exact), shift (ints); types work,
    offset.  Added in schema 1 without breaking older files (a new kind only).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from trigger_ml.core.artifacts import write_text_atomic
from trigger_ml.core.errors import ArtifactError, TriggerMLError, UnsupportedLayerError
from trigger_ml.core.fixed import FixedType
from trigger_ml.core.threshold import Threshold, place_threshold

__all__ = ["SCHEMA_VERSION", "FORMAT", "KINDS", "TensorSpec", "Layer", "ScoreSpec", "FirmwareModel"]

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
        "scale_input",
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
        """A copy with the anomaly score ``output[index]`` (default: the first output) and a threshold.

        ``threshold`` is a raw integer of the score type, or a value placed on the score grid by the
        one threshold rule (:func:`trigger_ml.core.threshold.place_threshold`: rounded down, which
        keeps every ``score > threshold`` decision, range-checked)."""
        if output is None:
            output = self.outputs[0].name
        score = ScoreSpec(output, int(index))
        tmp = FirmwareModel(self.name, self.inputs, self.outputs, self.layers, score, None, self.meta)
        thr = None
        if threshold is not None:
            if isinstance(threshold, (int, np.integer)) and not isinstance(threshold, bool):
                thr = place_threshold(tmp.score_type, raw=int(threshold)).raw
            else:
                thr = place_threshold(tmp.score_type, threshold).raw
        return FirmwareModel(self.name, self.inputs, self.outputs, self.layers, score, thr, self.meta)

    @property
    def trigger_threshold(self) -> Threshold | None:
        """The firmware threshold as a :class:`~trigger_ml.core.threshold.Threshold` (None without one)."""
        if self.threshold is None:
            return None
        return Threshold(self.threshold, self.score_type.frac, self.score_type.to_hls())

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
        return write_text_atomic(path, self.to_json())

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



