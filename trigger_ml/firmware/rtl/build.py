"""Tracing, project dataclasses, I/O packing, HDL writing and ``comb_predict`` (alkaid).

See the package docstring (:mod:`trigger_ml.firmware.rtl`) for the flow, the port layout and the
latency convention.  Everything alkaid-specific lives here; :mod:`.verilator` only needs the
written project (:class:`RTLProject`) and :func:`comb_predict`.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from trigger_ml.core.artifacts import atomic_dir, sha256_file
from trigger_ml.core.constants import RTL_MANIFEST_FILE
from trigger_ml.core.errors import ArtifactError, TriggerMLError, UnsupportedLayerError

if TYPE_CHECKING:  # pragma: no cover
    import keras
    from alkaid.types import CombLogic

MANIFEST_NAME = RTL_MANIFEST_FILE
MANIFEST_VERSION = 2  # 2: alkaid (ALIR) projects; 1: da4ml 0.6 projects (still readable)
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_HDL_SUFFIX = {"verilog": "v", "vhdl": "vhd"}
# Saved ALIR graphs, in the order RTLProject.comb_logic() tries them:
#   model/traced.json.gz  the graph as traced (ours; before alkaid's RTL passes) - ~2x faster in
#                         alkaid's interpreter than the written one and checked equal to it at build
#   model/comb.json.gz    the graph alkaid wrote the HDL from (after ternary-adder fusion)
#   model/comb.json       da4ml 0.6 projects (DAIS spec v1)
_TRACED_FILE = "model/traced.json.gz"
_WRITTEN_FILE = "model/comb.json.gz"
_COMB_FILES = (_TRACED_FILE, _WRITTEN_FILE, "model/comb.json")
_CHECK_EVENTS = 2048  # random grid events on which the traced and written graphs must agree


# --------------------------------------------------------------------------- data classes


@dataclass(frozen=True)
class IOField:
    """One scalar element of the packed ``model_inp`` / ``model_out`` vector."""

    name: str
    offset: int  # LSB position in the port vector
    width: int  # k + i + f; 0 = not present in the vector
    signed: bool  # k
    int_bits: int  # i, integer bits excluding the sign
    frac_bits: int  # f, value = raw * 2**-f

    @property
    def type_str(self) -> str:
        """Vivado-HLS style type, ``ap_fixed<W,I>`` with I counting the sign bit."""
        if self.width == 0:
            return "const0"
        base = "ap_fixed" if self.signed else "ap_ufixed"
        return f"{base}<{self.width},{self.width - self.frac_bits}>"

    @property
    def min(self) -> float:
        return -(2.0**self.int_bits) if self.signed else 0.0

    @property
    def max(self) -> float:
        return 2.0**self.int_bits - 2.0**-self.frac_bits

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "type": self.type_str}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IOField:
        return cls(**{k: d[k] for k in ("name", "offset", "width", "signed", "int_bits", "frac_bits")})


@dataclass(frozen=True)
class RTLProject:
    """A written alkaid RTL project (see the package docstring for the I/O layout)."""

    path: Path
    flavor: str  # 'verilog' | 'vhdl'
    top: str
    latency_cycles: int
    inputs: tuple[IOField, ...]
    outputs: tuple[IOField, ...]
    n_inputs: int
    n_outputs: int
    clock_ns: float
    latency_cutoff: float  # the cutoff the pipeline was split with (alkaid delay units), 0 = combinational
    # alkaid's LUT estimate (cost of the written ALIR graph).  The field / manifest key keeps its
    # da4ml-era name because reports.estimate and scan read ``da4ml_cost`` from the manifest.
    da4ml_cost: float
    reg_bits: int = 0  # pipeline register bits (FF estimate), 0 if combinational

    @property
    def cost(self) -> float:
        """The DA cost (LUT estimate); same as :attr:`da4ml_cost`."""
        return self.da4ml_cost

    @property
    def input_width(self) -> int:
        return sum(f.width for f in self.inputs)

    @property
    def output_width(self) -> int:
        return sum(f.width for f in self.outputs)

    @property
    def pipelined(self) -> bool:
        return self.latency_cutoff > 0

    @property
    def src_dir(self) -> Path:
        return self.path / "src"

    def sources(self) -> list[Path]:
        """HDL sources of the design (top, stage modules, tables, wrapper and the static library)."""
        sfx = _HDL_SUFFIX[self.flavor]
        return sorted(self.src_dir.glob(f"*.{sfx}")) + sorted((self.src_dir / "static").glob(f"*.{sfx}"))

    def memfiles(self) -> list[Path]:
        """``$readmemh`` table files: only da4ml 0.6 projects have them (alkaid inlines tables as
        ``case`` ROMs in ``src/<top>_tables.v``)."""
        return sorted((self.src_dir / "memfiles").glob("*.mem"))

    def comb_logic(self, *, written: bool = False) -> CombLogic:
        """The project's ALIR graph, for bit-exact software execution.

        Default: the graph as traced (``model/traced.json.gz``), which alkaid's interpreter runs
        about twice as fast as the ternary-fused graph the HDL was written from; :func:`build_rtl`
        checked that both give identical outputs.  ``written=True``: the graph alkaid generated
        the HDL from (``model/comb.json.gz``).  A da4ml 0.6 project's ``model/comb.json`` is
        translated on load.
        """
        for rel in _COMB_FILES[1:] if written else _COMB_FILES:
            p = self.path / rel
            if p.is_file():
                return load_comb(p)
        raise ArtifactError(
            f"{self.path / _WRITTEN_FILE} is missing: not a complete alkaid project (rebuild it with build_rtl)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "flavor": self.flavor,
            "top": self.top,
            "latency_cycles": self.latency_cycles,
            "n_inputs": self.n_inputs,
            "n_outputs": self.n_outputs,
            "input_width": self.input_width,
            "output_width": self.output_width,
            "clock_ns": self.clock_ns,
            "latency_cutoff": self.latency_cutoff,
            "da4ml_cost": self.da4ml_cost,
            "reg_bits": self.reg_bits,
            "inputs": [f.to_json() for f in self.inputs],
            "outputs": [f.to_json() for f in self.outputs],
        }

    @classmethod
    def load(cls, path: str | Path) -> RTLProject:
        """Re-open a project written by :func:`build_rtl` from its ``rtl_manifest.json``
        (alkaid manifests and the older da4ml 0.6 ones)."""
        path = Path(path)
        mf = path / MANIFEST_NAME
        if not mf.is_file():
            raise ArtifactError(f"{mf} not found: {path} is not an RTL project written by build_rtl")
        try:
            d = json.loads(mf.read_text())
            return cls(
                path=path.resolve(),
                flavor=d["flavor"],
                top=d["top"],
                latency_cycles=int(d["latency_cycles"]),
                inputs=tuple(IOField.from_json(f) for f in d["inputs"]),
                outputs=tuple(IOField.from_json(f) for f in d["outputs"]),
                n_inputs=int(d["n_inputs"]),
                n_outputs=int(d["n_outputs"]),
                clock_ns=float(d["clock_ns"]),
                latency_cutoff=float(d["latency_cutoff"]),
                da4ml_cost=float(d["da4ml_cost"]),
                reg_bits=int(d.get("reg_bits", 0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{mf} is corrupt ({type(e).__name__}: {e}); rebuild with build_rtl(force=True)") from e


def load_comb(path: str | Path) -> CombLogic:
    """Load a saved ALIR graph: alkaid's ``comb.json[.gz]`` or da4ml 0.6's ``comb.json`` (DAIS spec
    v1, translated by :func:`_dais_v1_to_v2` and upgraded by alkaid)."""
    from alkaid.types import CombLogic

    p = Path(path)
    try:
        raw = p.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        data = json.loads(raw.decode("utf-8"))
        if isinstance(data, list):  # da4ml 0.6: the bare model list of DAIS spec v1
            data = {"model": _dais_v1_to_v2(data), "meta": "DAISModel", "spec_version": 2}
        return CombLogic.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AssertionError) as e:
        raise ArtifactError(f"{p} is not a readable ALIR graph ({type(e).__name__}: {e}); rebuild with build_rtl") from e


def _dais_v1_to_v2(model: list) -> list:
    """da4ml 0.6's saved graph (DAIS spec v1) -> spec v2, the oldest that alkaid upgrades.

    Both store ops as ``[id0, id1, opcode, data, [min, max, step], latency, cost]``.  v1 folds a
    negation of the operand into some opcodes (``-2`` relu(-x), ``-3`` quantize(-x), ``-6``
    mux with -b, ``-9`` bit-op on -x, bits 32/33 of ``data`` of the binary bit-op ``10``);
    v2 has an explicit negation op (``-2``) instead.  This inserts one negation in front of
    each such op and renumbers the buffer indices (operands, the mux key packed in ``data``,
    the outputs).  The constant addition (``4``) stores ``data * step`` in v1 and
    ``value * 2**-shift`` (two packed int32) in v2.
    """
    m32 = 0xFFFFFFFF
    old_ops = model[5]
    new_ops: list[list[Any]] = []
    idx: dict[int, int] = {}  # v1 buffer index -> v2 buffer index
    negs: dict[int, int] = {}  # v1 buffer index -> v2 index of its negation

    def neg(i: int) -> int:
        if i not in negs:
            lo, hi, step = old_ops[i][4]
            new_ops.append([idx[i], -1, -2, 0, [-hi, -lo, step], old_ops[i][5], 0.0])
            negs[i] = len(new_ops) - 1
        return negs[i]

    for j, (id0, id1, opcode, data, qint, latency, cost) in enumerate(old_ops):
        opcode, data = int(opcode), int(data)
        if opcode == -1:  # input copy: id0 is the input index
            a, b = id0, id1
        elif opcode in (-2, -3, -9):
            a, b, opcode = neg(id0), -1, -opcode
        elif opcode in (6, -6):
            id_c = idx[data & m32]
            a, b = idx[id0], neg(id1) if opcode == -6 else idx[id1]
            opcode, data = 6, (data & ~m32) | id_c
        elif opcode == 10:
            a = neg(id0) if (data >> 32) & 1 else idx[id0]
            b = neg(id1) if (data >> 33) & 1 else idx[id1]
            data &= ~(3 << 32)
        elif opcode == 5:  # constant data * step: no operand, same encoding
            a, b = id0, id1
        elif opcode == 4:  # x + data * step (step of the result) -> v2 packs (value, shift): value * 2**-shift
            a, b = idx[id0], id1
            value, shift = data, -round(math.log2(qint[2]))
            while value and value % 2 == 0 and not -(2**31) <= value < 2**31:
                value, shift = value // 2, shift - 1
            if not -(2**31) <= value < 2**31 or not -(2**31) <= shift < 2**31:
                raise ValueError(f"constant addition {data} * {qint[2]} does not fit ALIR v2's 32-bit fields")
            data = ((shift & m32) << 32) | (value & m32)
        else:  # 0, 1, 7 (id0, id1), 2, 3, 8, 9 (id0)
            a = idx[id0] if id0 >= 0 else id0
            b = idx[id1] if id1 >= 0 else id1
        new_ops.append([a, b, opcode, data, qint, latency, cost])
        idx[j] = len(new_ops) - 1
    out = list(model)
    out[2] = [idx[i] if i >= 0 else i for i in model[2]]
    out[5] = new_ops
    return out


def as_alir(comb: Any) -> CombLogic:
    """``comb`` as an alkaid ``CombLogic``; a da4ml 0.6 ``CombLogic`` (e.g. from ``da4ml.trace.comb_trace``)
    is converted through its saved JSON (see :func:`load_comb`)."""
    from alkaid.types import CombLogic

    if isinstance(comb, CombLogic):
        return comb
    if type(comb).__module__.split(".", 1)[0] == "da4ml" and hasattr(comb, "save"):
        with tempfile.TemporaryDirectory(prefix="tml_da4ml_") as td:
            comb.save(Path(td) / "comb.json")
            return load_comb(Path(td) / "comb.json")
    raise TriggerMLError(f"expected an alkaid CombLogic, got {type(comb).__module__}.{type(comb).__qualname__}")


# --------------------------------------------------------------------------- I/O packing


def _kif(q: Any) -> tuple[int, int, int]:
    from alkaid.types import QInterval

    k, i, f = QInterval(*q).kif  # minimal (keep_negative, integer, fractional) bits of the interval
    return int(k), int(i), int(f)


def _fields_from_qints(qints: Sequence[Any], shifts: Sequence[int] | None, prefix: str) -> tuple[IOField, ...]:
    fields = []
    off = 0
    for j, q in enumerate(qints):
        k, i, f = _kif(q)
        w = k + i + f
        s = int(shifts[j]) if shifts is not None else 0
        # the port carries value * 2**s quantised on step 2**-f: fold the shift into f / i.
        # (alkaid's tracer always sets inp_shifts = 0; kept for graphs built by hand)
        fields.append(IOField(f"{prefix}[{j}]", off, w, bool(k), i - s, f + s))
        off += w
    return tuple(fields)


def io_fields(comb: CombLogic) -> tuple[tuple[IOField, ...], tuple[IOField, ...]]:
    """Input and output fields of an ALIR ``CombLogic`` (same for its pipeline)."""
    comb = as_alir(comb)
    return (
        _fields_from_qints(comb.inp_qint, comb.inp_shifts, "inp"),
        _fields_from_qints(comb.out_qint, None, "out"),
    )


def _n_words(fields: Sequence[IOField]) -> int:
    return max(1, (sum(f.width for f in fields) + 31) // 32)


def pack_fields(fields: Sequence[IOField], x: np.ndarray) -> np.ndarray:
    """Pack values ``x`` (n, len(fields)) into port words (n, ceil(W/32)) uint32, LSB word first.

    Each value is converted to ``floor(x * 2**f)`` and wrapped to its field width
    (HGQ2 TRN + WRAP semantics).
    """
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(x.shape[0], -1)
    n = x.shape[0]
    if x.shape[1] != len(fields):
        raise ValueError(f"expected {len(fields)} values per event, got {x.shape[1]}")
    if not np.all(np.isfinite(x)):
        raise ValueError("inputs contain NaN or inf")
    nw = _n_words(fields)
    words = np.zeros((n, nw + 2), dtype=np.uint64)  # 2 guard words for the spill-over
    m32 = np.uint64(0xFFFFFFFF)
    for j, fd in enumerate(fields):
        if fd.width == 0:
            continue
        if fd.width > 62:
            raise TriggerMLError(f"field {fd.name} is {fd.width} bits wide; packing supports <= 62 bits")
        raw = np.floor(x[:, j] * 2.0**fd.frac_bits)
        if np.any(np.abs(raw) >= 2.0**63):
            raise ValueError(f"values of {fd.name} are too large for int64")
        v = (raw.astype(np.int64) & np.int64((1 << fd.width) - 1)).astype(np.uint64)
        wi, sh = divmod(fd.offset, 32)
        words[:, wi] |= (v << np.uint64(sh)) & m32
        if sh + fd.width > 32:
            words[:, wi + 1] |= (v >> np.uint64(32 - sh)) & m32
        if sh + fd.width > 64:
            words[:, wi + 2] |= (v >> np.uint64(64 - sh)) & m32
    return words[:, :nw].astype(np.uint32)


def unpack_fields(fields: Sequence[IOField], words: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_fields`: port words (n, n_words) -> float64 values (n, len(fields))."""
    words = np.asarray(words, dtype=np.uint64)
    n = words.shape[0]
    w = np.concatenate([words, np.zeros((n, 2), np.uint64)], axis=1)
    out = np.zeros((n, len(fields)), dtype=np.float64)
    for j, fd in enumerate(fields):
        if fd.width == 0:
            continue
        if fd.width > 53:
            raise TriggerMLError(f"field {fd.name} is {fd.width} bits wide; float64 is exact only up to 53 bits")
        wi, sh = divmod(fd.offset, 32)
        v = w[:, wi] >> np.uint64(sh)
        if sh + fd.width > 32:
            v |= w[:, wi + 1] << np.uint64(32 - sh)
        if sh + fd.width > 64:
            v |= w[:, wi + 2] << np.uint64(64 - sh)
        v = (v & np.uint64((1 << fd.width) - 1)).astype(np.int64)
        if fd.signed:
            v = np.where(v >= (1 << (fd.width - 1)), v - (1 << fd.width), v)
        out[:, j] = v.astype(np.float64) * 2.0**-fd.frac_bits
    return out


def random_grid_inputs(project: RTLProject | Sequence[IOField], n: int, seed: int = 0) -> np.ndarray:
    """``n`` random events uniformly on the fixed-point grid of the input fields, inside their range."""
    rng = np.random.default_rng(seed)
    fields = project.inputs if isinstance(project, RTLProject) else tuple(project)
    x = np.zeros((n, len(fields)), dtype=np.float64)
    for j, fd in enumerate(fields):
        if fd.width == 0:
            continue
        lo = -(1 << (fd.width - 1)) if fd.signed else 0
        hi = (1 << (fd.width - 1)) if fd.signed else (1 << fd.width)
        x[:, j] = rng.integers(lo, hi, size=n).astype(np.float64) * 2.0**-fd.frac_bits
    return x


# --------------------------------------------------------------------------- tracing


def _flatten_batch(x: Any) -> np.ndarray:
    if isinstance(x, (list, tuple)):
        arrs = [np.asarray(a) for a in x]
        return np.concatenate([a.reshape(a.shape[0], -1) for a in arrs], axis=1).astype(np.float64)
    a = np.asarray(x)
    return a.reshape(a.shape[0], -1).astype(np.float64)


def trace_comb(model: keras.Model, *, delay_constraint: int = -1) -> CombLogic:
    """Trace an HGQ2 Keras model into an alkaid (ALIR) ``CombLogic`` (errors -> TriggerMLError).

    ``delay_constraint``: alkaid's CMVM solver option ``hard_dc`` — how many adder levels beyond the
    minimum each constant-matrix-vector product may use (``-1``: unconstrained, alkaid's default;
    ``0``: minimal adder depth, usually a few more LUTs).  It is the knob on the combinational depth.

    alkaid's ``keras`` tracer replays the functional graph; HGQ2's ``alkaid_keras`` plugin
    (``hgq._alkaid_keras_plugin``) supplies the handlers of the HGQ2 layers and is loaded on
    the first HGQ2 layer met.  ``alkaid.trace.trace`` then optimises the graph (CSE, dead-code
    elimination, the surrogate cost / delay model).
    """
    import hgq  # noqa: F401  (HGQ2 layers; its alkaid plugin registers through entry points)
    from alkaid.converter import trace_model
    from alkaid.trace import trace

    _keep_batch_in_flatten()
    try:
        opts = {"hard_dc": int(delay_constraint)} if delay_constraint != -1 else None
        inp, out = trace_model(model, framework="keras", solver_options=opts)
        return trace(inp, out)
    except KeyError as e:
        cls = e.args[0] if e.args else None
        if not isinstance(cls, type):  # not the handler-registry lookup: a genuine tracing failure
            raise TriggerMLError(f"alkaid could not trace model {model.name!r}: KeyError {e} in {_origin(e)}") from e
        raise UnsupportedLayerError(_unsupported_msg(cls)) from e
    except AssertionError as e:
        if "not found in plugins" in str(e):  # a layer class from a package without an alkaid plugin
            layer = _failing_layer(e)
            cls = type(layer) if layer is not None else None
            raise UnsupportedLayerError(_unsupported_msg(cls, str(e))) from e
        raise TriggerMLError(
            f"alkaid could not trace model {model.name!r}: assertion failed in {_origin(e)} ({str(e) or 'no message'})"
            f"{_layer_note(e)}; note alkaid needs overflow_mode='WRAP' on the model's input quantizer and "
            "fixed-point (not float) quantizers"
        ) from e
    except ValueError as e:
        if "unquantized input" in str(e):
            layer = _failing_layer(e)
            what = f"layer {layer.name!r} ({type(layer).__name__})" if layer is not None else "a layer"
            raise UnsupportedLayerError(
                f"{what} of model {model.name!r} computes on the unquantized (float) model input: alkaid needs "
                "fixed-point values; use the HGQ2 (Q*) equivalent with an input quantizer (e.g. QDense for Dense)"
            ) from e
        raise TriggerMLError(f"alkaid could not trace model {model.name!r}: ValueError: {e}{_layer_note(e)}") from e
    except RuntimeError as e:
        hint = ""
        if "RetardedFVArray" in str(e):  # a float function (e.g. gelu, sigmoid) applied without a table
            hint = "; non-linear activations other than relu need an HGQ2 QUnaryFunctionLUT"
        raise TriggerMLError(
            f"alkaid could not trace model {model.name!r}: RuntimeError: {e}{_layer_note(e)}{hint}"
        ) from e
    except (NotImplementedError, TypeError) as e:
        raise TriggerMLError(f"alkaid could not trace model {model.name!r}: {type(e).__name__}: {e}{_layer_note(e)}") from e


def _keep_batch_in_flatten() -> None:
    """Make alkaid 0.8's ``keras.layers.Flatten`` / ``Reshape`` handlers keep the batch axis.

    alkaid's Keras tracer feeds the model symbolic inputs of shape ``(1, *shape)`` (a size-1
    batch, unlike da4ml 0.6 which had none), but its ``ReplayReshape`` still does
    ``inputs.ravel()`` / ``inputs.reshape(target_shape)``, which drops that axis.  Layers that
    name the batch axis afterwards then fail, e.g. ``QEinsumDense("bi,ij->bj")`` after a
    ``Flatten``: "ValueError: Input0 requires 2 dimensions, but 1 is given".  This registers a
    handler with Keras' semantics (the leading axis is kept; ``channels_first`` Flatten
    transposes to channels-last first) for inputs that carry the batch axis, and falls back to
    alkaid's behaviour for those that do not.  Idempotent; it replaces the entry of alkaid's
    handler registry for these two layer classes in this process.
    """
    import keras
    from alkaid.converter.builtin.keras.layers import _registry
    from alkaid.converter.builtin.keras.layers.ops import ReplayReshape

    if getattr(_registry.get(keras.layers.Flatten), "_keeps_batch", False):
        return

    class _ReplayReshapeKeepBatch(ReplayReshape):
        handles = (keras.layers.Flatten, keras.layers.Reshape)
        _keeps_batch = True

        def call(self, inputs: Any) -> Any:
            op = self.op
            try:
                rank = len(op.input.shape)  # Keras rank, incl. the batch axis
            except (AttributeError, ValueError):  # a shared layer has no single .input
                rank = inputs.ndim
            if inputs.ndim != rank:  # the batch axis is gone already: alkaid's own handling
                return super().call(inputs)
            if isinstance(op, keras.layers.Flatten):
                if getattr(op, "data_format", "channels_last") == "channels_first" and inputs.ndim > 2:
                    inputs = inputs.transpose((0, *range(2, inputs.ndim), 1))
                return inputs.reshape((inputs.shape[0], -1))
            return inputs.reshape((inputs.shape[0], *op.target_shape))

    assert _registry[keras.layers.Flatten] is _ReplayReshapeKeepBatch  # registered by alkaid's metaclass


def _unsupported_msg(cls: type | None, detail: str = "") -> str:
    name = cls.__name__ if cls is not None else "?"
    extra = f" ({detail})" if detail else ""
    return (
        f"alkaid/HGQ2 tracer has no handler for layer type {name}{extra}; use the HGQ2 (Q*) equivalent "
        "(activations other than relu need QUnaryFunctionLUT)"
    )


def _frames(e: BaseException) -> list[Any]:
    frames = []
    tb: TracebackType | None = e.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def _failing_layer(e: BaseException) -> Any:
    """The innermost Keras operation alkaid was replaying when ``e`` was raised (or None)."""
    layer = None
    for fr in _frames(e):
        loc = fr.f_locals
        obj = loc.get("op")
        if obj is not None and hasattr(obj, "operation"):  # alkaid's OpObj in _trace_model
            layer = obj.operation
        me = loc.get("self")
        if me is not None and hasattr(me, "op") and hasattr(me, "_wrap_call"):  # a ReplayOperationBase
            layer = me.op
    return layer


def _layer_note(e: BaseException) -> str:
    layer = _failing_layer(e)
    return f" (in layer {layer.name!r}, {type(layer).__name__})" if layer is not None else ""


def _origin(e: BaseException) -> str:
    frames = _frames(e)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{Path(last.f_code.co_filename).name}:{last.f_lineno}"


def comb_predict(model_or_project: Any, x: Any, *, n_threads: int = 0) -> np.ndarray:
    """Bit-exact software execution of the traced graph with alkaid's C++ ALIR interpreter.

    ``model_or_project``: an HGQ2 ``keras.Model`` (traced on the fly), an :class:`RTLProject`,
    a project directory, or an ALIR ``CombLogic`` (alkaid's, or da4ml 0.6's which is converted).
    ``x`` is a batch (or a list of batches for multi-input models).  ``n_threads <= 0``: all
    cores (or ``$DA_DEFAULT_THREADS``).  Returns float64 of shape (n, n_outputs).

    Compare with Keras on the *same* array: float64 values a hair below a grid point
    become the grid point when cast to float32 (what Keras computes in), and the TRN input
    quantizer then floors them differently.
    """
    if isinstance(model_or_project, RTLProject):
        comb = model_or_project.comb_logic()
    elif isinstance(model_or_project, (str, Path)):
        comb = RTLProject.load(model_or_project).comb_logic()
    elif hasattr(model_or_project, "ops") and hasattr(model_or_project, "out_idxs"):
        comb = as_alir(model_or_project)
    else:
        comb = trace_comb(model_or_project)
    data = _flatten_batch(x)
    if data.shape[1] != comb.shape[0]:
        raise ValueError(f"expected {comb.shape[0]} input values per event, got {data.shape[1]}")
    y = comb.predict(np.ascontiguousarray(data), n_threads=n_threads)
    return np.asarray(y, dtype=np.float64).reshape(data.shape[0], comb.shape[1])


# --------------------------------------------------------------------------- RTL build


def _alkaid_version() -> str:
    from importlib.metadata import version

    return version("alkaid")


_V_DECL = re.compile(r"\b(?:input|output|wire|reg)\b(?:\s+(?:wire|reg))?\s*(?:\[[^\]]*\])?\s*(\w+)")
_V_INST = re.compile(r"\.model_inp\((\w+)\)\s*,\s*\.model_out\((\w+)\)")
_V_ASSIGN = re.compile(r"\bassign\s+(\w+)\s*(?:\[[^\]]*\])?\s*=\s*([^;]+);")
_V_REG = re.compile(r"(\w+)\s*(?:\[[^\]]*\])?\s*<=\s*([^;]+);")
_V_LITERAL = re.compile(r"\d*'[sS]?[bBhHdDoO][0-9a-fA-FxXzZ_]+")
_VHD_DECL = re.compile(r"\b(?:signal\s+(\w+)|(\w+)\s*:\s*(?:in|out)\b)", re.IGNORECASE)
_VHD_INST = re.compile(r"model_inp\s*=>\s*(\w+)\s*,\s*model_out\s*=>\s*(\w+)", re.IGNORECASE)
_VHD_ASSIGN = re.compile(r"(\w+)\s*(?:\([^;()]*\))?\s*<=\s*([^;]+);")
_VHD_PROCESS = re.compile(r"\bprocess\s*\(\s*clk\s*\)(.*?)\bend\s+process\b", re.IGNORECASE | re.DOTALL)
_VHD_LITERAL = re.compile(r"\"[^\"]*\"|'[^']*'")


def parse_pipeline_depth(src_dir: Path, top: str, flavor: str) -> int:
    """Pipeline depth read from the generated top-level HDL.

    Builds the driver graph of the top (continuous assignments, the ``model_inp`` ->
    ``model_out`` path through every stage instance, and the clocked assignments of the
    ``always @(posedge clk)`` / ``process(clk)`` block), then counts the register layers on
    every path from ``model_out`` back to ``model_inp`` (alkaid:
    ``model_inp -> model_inp_reg -> logic0 -> stage1_inp -> ... -> model_out``; da4ml 0.6:
    ``stage0_inp ... model_out``).  All paths must cross the same number of registers.
    Returns ``register layers - 1`` (0 for a combinational top without ``clk``).
    """
    sfx = _HDL_SUFFIX[flavor]
    f = src_dir / f"{top}.{sfx}"
    text = f.read_text()
    drivers: dict[str, set[tuple[str, int]]] = {}  # dst -> {(src, registered)}

    def add(dst: str, expr: str, reg: int, names: set[str], literal: re.Pattern[str]) -> None:
        expr = literal.sub(" ", expr)
        for src in re.findall(r"\b[A-Za-z_]\w*\b", expr):
            if src in names and src != dst:
                drivers.setdefault(dst, set()).add((src, reg))

    if flavor == "verilog":
        text = re.sub(r"//[^\n]*", "", text)
        has_clk = re.search(r"posedge\s+clk", text) is not None
        names = set(_V_DECL.findall(text))
        for i, o in _V_INST.findall(text):
            drivers.setdefault(o, set()).add((i, 0))
        for dst, expr in _V_ASSIGN.findall(text):
            add(dst, expr, 0, names, _V_LITERAL)
        body = _V_ASSIGN.sub(" ", text)
        for dst, expr in _V_REG.findall(body):
            add(dst, expr, 1, names, _V_LITERAL)
    else:
        text = re.sub(r"--[^\n]*", "", text)
        has_clk = re.search(r"rising_edge\s*\(\s*clk\s*\)", text, re.IGNORECASE) is not None
        names = {a or b for a, b in _VHD_DECL.findall(text)}
        for i, o in _VHD_INST.findall(text):
            drivers.setdefault(o, set()).add((i, 0))
        procs = _VHD_PROCESS.findall(text)
        comb_text = _VHD_PROCESS.sub(" ", text)
        comb_text = _VHD_INST.sub(" ", comb_text)
        for dst, expr in _VHD_ASSIGN.findall(comb_text):
            add(dst, expr, 0, names, _VHD_LITERAL)
        for p in procs:
            for dst, expr in _VHD_ASSIGN.findall(p):
                add(dst, expr, 1, names, _VHD_LITERAL)
    if not has_clk:
        return 0

    memo: dict[str, frozenset[int]] = {}
    active: set[str] = set()

    def depths(sig: str) -> frozenset[int]:
        """Register counts on the paths model_inp -> sig (empty: not driven by model_inp)."""
        if sig == "model_inp":
            return frozenset({0})
        if sig in memo:
            return memo[sig]
        if sig in active:
            raise ArtifactError(f"combinational loop through {sig!r} in {f}")
        active.add(sig)
        out = frozenset(d + reg for src, reg in drivers.get(sig, ()) for d in depths(src))
        active.discard(sig)
        memo[sig] = out
        return out

    d = depths("model_out")
    if not d:
        raise ArtifactError(f"cannot follow the register chain from model_out back to model_inp in {f}")
    if len(d) != 1:
        raise ArtifactError(f"unbalanced pipeline in {f}: paths cross {sorted(d)} register layers")
    return next(iter(d)) - 1


def build_rtl_from_comb(
    comb: CombLogic,
    out_dir: str | Path,
    *,
    flavor: str = "verilog",
    latency_cutoff: float = 5.0,
    clock_ns: float = 5.0,
    force: bool = False,
    name: str = "model",
    extra_manifest: dict[str, Any] | None = None,
    finalize: Callable[[Path], None] | None = None,
    n_stages: int | None = None,
    ternary_fuse: bool = True,
) -> RTLProject:
    """Write the alkaid RTL project of an already traced ``CombLogic`` (see :func:`build_rtl`).
    ``finalize(tmp_dir)`` may add files that must appear in the same atomic rename.

    ``n_stages`` (instead of ``latency_cutoff``): cut into exactly that many stages, balanced on the
    graph's ``Op.latency`` (alkaid's ``to_pipeline``); ``ternary_fuse=False`` writes ``comb`` as given
    (no ternary fusion, no re-costing: e.g. a graph whose latencies are a ns schedule from
    :mod:`trigger_ml.firmware.rtl.search`).  The manifest records the estimated stage delays in ns
    at ``clock_ns`` (``timing_estimate``, :mod:`trigger_ml.firmware.timing`).

    ``comb`` may also be a da4ml 0.6 ``CombLogic`` (converted with :func:`as_alir`).
    """
    from alkaid.codegen import RTLModel

    flavor = flavor.lower()
    if flavor not in _HDL_SUFFIX:
        raise TriggerMLError(f"unknown RTL flavor {flavor!r}; use 'verilog' or 'vhdl'")
    if not _IDENT.match(name):
        raise TriggerMLError(f"top name {name!r} is not a valid HDL identifier")
    if re.fullmatch(r"logic\d+", name):  # alkaid names the stage modules logic0, logic1, ...
        raise TriggerMLError(f"top name {name!r} clashes with alkaid's stage modules (logic<N>)")
    if not clock_ns > 0:
        raise TriggerMLError(f"clock_ns must be > 0, got {clock_ns}")
    comb = as_alir(comb)
    cutoff = float(latency_cutoff) if latency_cutoff > 0 else 0.0
    out_dir = Path(out_dir).resolve()
    with atomic_dir(out_dir, force=force) as tmp:
        t0 = time.perf_counter()
        # latency_cutoff <= 0: one combinational block without registers (alkaid: -1)
        if n_stages is not None:
            if int(n_stages) < 1:
                raise TriggerMLError(f"n_stages must be >= 1, got {n_stages}")
            cutoff = float(latency_cutoff) if latency_cutoff > 0 else 1.0  # recorded; the stage count rules
        rm = RTLModel(
            comb,
            tmp,
            name,
            flavor=flavor,
            n_stages=int(n_stages) if n_stages is not None else -1,
            latency_cutoff=(cutoff if cutoff > 0 else -1) if n_stages is None else -1,
            print_latency=True,
            clock_period=float(clock_ns),
            ternary_fuse=ternary_fuse,
        )
        rm.write()
        t_write = time.perf_counter() - t0

        written = rm._comb if rm._comb is not None else comb  # after alkaid's ternary fusion + surrogate costs
        comb.save(tmp / _TRACED_FILE)
        _check_same_function(comb, written)
        depth = parse_pipeline_depth(tmp / "src", name, flavor)
        n_stages = int(rm.latency or 0)
        if depth != n_stages:
            raise ArtifactError(f"pipeline depth read from the HDL ({depth}) != alkaid's latency ({n_stages})")
        ins, outs = io_fields(written)
        _check_ports(rm, ins, outs)
        reg_bits = int(rm.reg_bits) if cutoff > 0 else 0
        project = RTLProject(
            path=out_dir,
            flavor=flavor,
            top=name,
            latency_cycles=depth,
            inputs=ins,
            outputs=outs,
            n_inputs=written.shape[0],
            n_outputs=written.shape[1],
            clock_ns=float(clock_ns),
            latency_cutoff=cutoff,
            da4ml_cost=float(written.cost),
            reg_bits=reg_bits,
        )
        meta = json.loads((tmp / "metadata.json").read_text())
        total_delay = float(written.latency[1])
        if not ternary_fuse:  # Op.latency may hold another schedule (e.g. ns stages): alkaid's surrogate depth
            from alkaid.trace.passes.surrogate import add_surrogate

            total_delay = float(add_surrogate(written, _skip_op8_cost=True).latency[1])
        from trigger_ml.firmware.timing import pipeline_timing

        timing_est = pipeline_timing(rm.fsm.logic, clock_ns).to_json() if cutoff > 0 else None
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "generator": "trigger_ml.firmware.rtl",
            "alkaid_version": _alkaid_version(),
            **project.to_json(),
            "requested_latency_cutoff": float(latency_cutoff),
            "n_stages": n_stages,
            "register_layers": depth + 1 if cutoff > 0 else 0,
            "comb_logic_depth": total_delay,
            "stage_delay": total_delay / n_stages if n_stages else total_delay,
            "traced_cost": float(comb.cost),
            "timing_estimate": timing_est,
            "alkaid_metadata": meta,
            "sources": {str(p.relative_to(tmp)): sha256_file(p) for p in _project_files(tmp, flavor)},
            "timing_s": {"write": round(t_write, 4)},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        del manifest["path"]
        if extra_manifest:
            for k, v in extra_manifest.items():
                if k == "timing_s":
                    manifest["timing_s"].update(v)
                else:
                    manifest[k] = v
        _write_manifest(tmp / MANIFEST_NAME, manifest)
        if finalize is not None:
            finalize(tmp)
    return project


def _check_same_function(traced: CombLogic, written: CombLogic) -> None:
    """The graph alkaid wrote must compute what the traced one does (random grid inputs, 2 threads)."""
    if traced.shape != written.shape:
        raise ArtifactError(f"alkaid's written graph has shape {written.shape}, the traced one {traced.shape}")
    x = random_grid_inputs(io_fields(traced)[0], _CHECK_EVENTS, seed=12345)
    if not np.array_equal(traced.predict(x, n_threads=2), written.predict(x, n_threads=2)):
        raise ArtifactError("alkaid's RTL passes changed the function of the graph (traced != written on random inputs)")


def _check_ports(rm: Any, ins: tuple[IOField, ...], outs: tuple[IOField, ...]) -> None:
    """The packed fields must match alkaid's top-level ``model_inp`` / ``model_out`` element by element."""
    for sigs, fields in ((rm.fsm.inp_signals, ins), (rm.fsm.out_signals, outs)):
        if len(sigs) != 1:
            raise ArtifactError(f"expected one top-level port per direction, alkaid wrote {[s.name for s in sigs]}")
        port = [(int(p.signed) + int(p.integers) + int(p.fractional), bool(p.signed)) for p in sigs[0].precisions]
        mine = [(f.width, f.signed) for f in fields]
        if [w for w, _ in port] != [w for w, _ in mine] or any(w and a != b for (w, a), (_, b) in zip(port, mine)):
            raise ArtifactError(f"port {sigs[0].name} of alkaid's top does not match the graph's I/O fields")


def _project_files(root: Path, flavor: str) -> list[Path]:
    sfx = _HDL_SUFFIX[flavor]
    src = root / "src"
    return sorted(src.glob(f"*.{sfx}")) + sorted((src / "static").glob(f"*.{sfx}")) + sorted((src / "memfiles").glob("*.mem"))


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def build_rtl(
    model: keras.Model,
    out_dir: str | Path,
    *,
    flavor: str = "verilog",
    latency_cutoff: float = 5.0,
    clock_ns: float = 5.0,
    force: bool = False,
    name: str = "model",
    finalize: Callable[[Path], None] | None = None,
    delay_constraint: int = -1,
) -> RTLProject:
    """Trace an HGQ2 model with alkaid and write its RTL project to ``out_dir`` atomically.

    ``latency_cutoff``: maximum combinational delay per pipeline stage in alkaid's delay
    units (its surrogate timing model); alkaid cuts the graph into
    ``ceil(total_delay / latency_cutoff)`` balanced stages.  ``<= 0`` writes a purely
    combinational design.  ``clock_ns`` only goes into the timing constraints
    (``src/<name>.xdc/.sdc``).  An existing ``out_dir`` raises :class:`ArtifactError` unless
    ``force``; a failed build leaves neither a partial project nor a temporary directory behind.
    """
    import hgq  # noqa: F401
    import keras

    out_dir = Path(out_dir)
    if out_dir.exists() and not force:  # fail before the (possibly long) trace
        raise ArtifactError(f"{out_dir} already exists; pass force=True to overwrite it")
    t0 = time.perf_counter()
    comb = trace_comb(model, delay_constraint=delay_constraint)
    t_trace = time.perf_counter() - t0
    extra = {
        "delay_constraint": int(delay_constraint),
        "keras_model": model.name,
        "keras_version": keras.__version__,
        "hgq_version": _pkg_version("hgq2"),
        "timing_s": {"trace": round(t_trace, 4)},
    }
    return build_rtl_from_comb(
        comb,
        out_dir,
        flavor=flavor,
        latency_cutoff=latency_cutoff,
        clock_ns=clock_ns,
        force=force,
        name=name,
        extra_manifest=extra,
        finalize=finalize,
    )


def _pkg_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def _as_project(project: RTLProject | str | Path) -> RTLProject:
    return project if isinstance(project, RTLProject) else RTLProject.load(project)
