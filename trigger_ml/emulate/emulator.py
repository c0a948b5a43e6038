"""The :class:`Emulator`: fast, bit-exact executor of a :class:`~trigger_ml.ir.FirmwareModel`.

It picks one of two executors that share one set of semantics (documented per layer kind in
:mod:`trigger_ml.ir`):

* the **reference** executor (:mod:`trigger_ml.emulate.reference`) works on raw integers (``int64``, or exact Python ints when a
  bound could exceed 62 bits) and spells out every ap_fixed cast with
  :func:`trigger_ml.core.fixed.requantize`, in the order the C++ does them (e.g. a saturating
  accumulator saturates step by step); it serves :meth:`Emulator.trace`,
  :meth:`Emulator.overflow_report` / :meth:`Emulator.overflow_counts` and every layer the fast
  path does not cover;
* the **fast** executor (:mod:`trigger_ml.emulate.fast`) carries the raw integers in feature-major ``(features, events)``
  float32/float64 buffers.  When the plan is built, exact integer intervals are propagated through
  every layer; a layer runs on the fast path only if every intermediate (including every partial
  sum of a matrix product, in any order) stays below 2**52 (float64) -- float32 buffers are used
  where everything stays below 2**24 -- otherwise it falls back to the reference implementation.
  Matrix products go to BLAS (sparse ones to a gather kernel), and all element-wise work of a
  layer chain (bias, accumulator wrap, result cast, ReLU, batchnorm, per-element HGQ2 quantizers,
  the merge op itself) is fused into one numba pass per layer group.  Events are processed in
  blocks on all cores (Python threads; BLAS pinned to one thread meanwhile).  Narrow accumulators
  (per-product casts), ``dot``, pooling, tables, softmax, concatenate and transpose have their own
  exact numba kernels; :meth:`Emulator.plan_report` says, per layer, which path runs it and why,
  and :func:`reference_path_warning` is the one-line warning the CLI prints.

Neither imports TensorFlow, Keras or hls4ml.  The first use compiles a few numba kernels (cached on
disk by numba afterwards).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from trigger_ml.core.errors import TriggerMLError, UnsupportedLayerError
from trigger_ml.core.fixed import FixedType, from_float
from trigger_ml.emulate.fast.plan import _build_fast_plan
from trigger_ml.emulate.reference import _Counter, _RefLayer, _Step, _to_float_out
from trigger_ml.ir import FirmwareModel

__all__ = ["Emulator", "firmware_plan_warning", "reference_path_warning"]


def reference_path_warning(emu: Emulator) -> str | None:
    """One line naming the layers that run on the slower reference path (None when every layer is
    on the fast path): what the CLI prints once and records in its output metadata."""
    if emu._fast is None and emu._fast_refused is None:
        return None  # the caller asked for the reference executor
    ref = [e for e in emu.plan_report() if e["path"] == "reference"]
    if not ref:
        return None
    first = ref[0]
    more = f" (+{len(ref) - 1} more)" if len(ref) > 1 else ""
    names = ", ".join(e["layer"] for e in ref[:4]) + (", ..." if len(ref) > 4 else "")
    return (f"warning: {len(ref)} of {len(emu.fm.layers)} layers run on the slower reference path ({names}); "
            f"{first['layer']}: {first['reason']}{more}")


def firmware_plan_warning(firmware_dir) -> str | None:
    """The one-line reference-path warning (see :func:`reference_path_warning`) for a firmware
    directory holding a FirmwareModel IR; None for other firmware (e.g. RTL projects) or when every
    layer runs on the fast path.  What ``trigger-ml emulate`` / ``verify`` print once."""
    from pathlib import Path

    from trigger_ml.core.constants import IR_FILE

    p = Path(firmware_dir) / IR_FILE
    if not p.is_file():
        return None
    return reference_path_warning(Emulator(FirmwareModel.load(p)))


class Emulator:
    """Bit-exact, TensorFlow-free executor of a :class:`FirmwareModel`.

    ``predict(x)`` equals ``hls_model.predict(x)`` (hls4ml C simulation) bit for bit: same values,
    same dtype (float32 for float32 input, else float64); each output is ``(n_events, size)``
    (flattened like hls4ml, also for a single event; a list when the model has several outputs).

    ``fast=False`` uses only the reference executor.  The fast path works on blocks of ``block``
    events (default: 2048, fewer for models with large per-event buffers such as convolutions)
    spread over ``threads`` threads (default: the cores, at most 8); the reference path,
    ``trace`` and ``overflow_*`` work on chunks of ``chunk_size`` events, so memory stays flat
    apart from the results themselves (``predict_file`` streams an HDF5 file).
    """

    def __init__(self, fm: FirmwareModel, *, chunk_size: int = 65536, fast: bool = True, threads: int | None = None,
                 block: int | None = None) -> None:
        if not isinstance(fm, FirmwareModel):
            raise TriggerMLError(f"Emulator needs a FirmwareModel, got {type(fm).__name__}")
        if int(chunk_size) < 1:
            raise TriggerMLError(f"chunk_size must be >= 1, got {chunk_size}")
        self.fm = fm
        self.chunk_size = int(chunk_size)
        self._pos = {layer.name: i for i, layer in enumerate(fm.layers)}
        self._steps: list[_Step] = []
        for layer in fm.layers:
            ins = [fm.layers[self._pos[n]] for n in layer.inputs]
            self._steps.append(_Step(layer, _RefLayer(layer, ins), [self._pos[n] for n in layer.inputs]))
        self._in_pos = [self._pos[s.name] for s in fm.inputs]
        self._out_pos = [self._pos[s.name] for s in fm.outputs]
        # last use of every value, to free memory early
        self._last_use = {}
        for i, st in enumerate(self._steps):
            for j in st.in_idx:
                self._last_use[j] = i
        self._fast = None
        self._fast_refused: str | None = None  # why the whole model runs on the reference executor
        if fast:
            try:
                self._fast = _build_fast_plan(fm, [st for st in self._steps], threads, block)
            except UnsupportedLayerError as exc:  # e.g. a layer output wider than float64's exact range
                self._fast_refused = str(exc)

    # -- plan report ---------------------------------------------------------------------------------
    def plan_report(self) -> list[dict]:
        """How each layer is executed, in IR order: ``{"layer", "kind", "path", ...}`` where ``path``
        is ``"fast"`` (with ``how``: the kernel, ``buffer``: float32/float64 carrying the raw
        integers, ``max_abs_raw``: their proven bound) or ``"reference"`` (with ``reason``: why the
        fast path cannot run it exactly).  With ``fast=False`` every layer is ``"reference"``."""
        if self._fast is None:
            why = "fast=False requested" if self._fast_refused is None else f"no fast plan for this model: {self._fast_refused}"
            return [{"layer": layer.name, "kind": layer.kind, "path": "reference", "reason": why}
                    for layer in self.fm.layers]
        return self._fast.plan_report()

    @property
    def reference_layers(self) -> list[str]:
        """Names of the layers the fast path hands to the (slower) reference executor."""
        return [e["layer"] for e in self.plan_report() if e["path"] == "reference"]

    # -- input handling ------------------------------------------------------------------------------
    def _split_inputs(self, x) -> list[np.ndarray]:
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(self.fm.inputs):
            raise TriggerMLError(f"model {self.fm.name!r} has {len(self.fm.inputs)} inputs, got {len(xs)} arrays")
        out = []
        n = None
        for spec, xi in zip(self.fm.inputs, xs):
            a = np.asarray(xi)
            if a.size % spec.size:
                raise TriggerMLError(f"input {spec.name!r}: {a.size} values is not a multiple of the event size {spec.size} (shape {list(spec.shape)})")
            a = a.reshape(-1, spec.size)
            if n is not None and a.shape[0] != n:
                raise TriggerMLError("all inputs must have the same number of events")
            n = a.shape[0]
            out.append(a)
        return out

    def quantize_inputs(self, x) -> np.ndarray | list[np.ndarray]:
        """float -> raw integers of each input's ``input_t`` (what ``input_t v = (double)x`` gives)."""
        xs = self._split_inputs(x)
        raws = []
        for spec, a in zip(self.fm.inputs, xs):
            if a.dtype.kind not in "fiub":
                raise TriggerMLError(f"input {spec.name!r}: expected a float array, got dtype {a.dtype}")
            raws.append(from_float(a.astype(np.float64, copy=False), spec.type))
        return raws[0] if len(raws) == 1 else raws

    def _chunks(self, xs: list[np.ndarray]) -> Iterator[tuple[int, int, list[np.ndarray]]]:
        n = xs[0].shape[0]
        for s in range(0, max(n, 1), self.chunk_size):
            e = min(n, s + self.chunk_size)
            yield s, e, [a[s:e] for a in xs]

    # -- reference execution ------------------------------------------------------------------------------
    def _run_ref(self, raws: list[np.ndarray], ctr: _Counter | None = None, keep: bool = False) -> list:
        vals: list = [None] * len(self._steps)
        for k, pos in enumerate(self._in_pos):
            vals[pos] = raws[k]
        for i, st in enumerate(self._steps):
            if st.layer.kind == "input":
                continue
            vals[i] = st.ref([vals[j] for j in st.in_idx], ctr)
            if not keep:
                for j in set(st.in_idx):
                    if self._last_use.get(j) == i and j not in self._out_pos:
                        vals[j] = None
        return vals

    def predict_raw(self, x_raw, *, reference: bool = False) -> np.ndarray | list[np.ndarray]:
        """Raw integer inputs (of each ``input_t``) -> raw integers of each output type."""
        xs = [np.asarray(a).reshape(-1, s.size) for s, a in zip(self.fm.inputs, x_raw if isinstance(x_raw, (list, tuple)) else [x_raw])]
        return self._predict_raw_chunks(xs, reference=reference)

    def _predict_raw_chunks(self, xs: list[np.ndarray], reference: bool = False, from_float_input: bool = False):
        n = xs[0].shape[0]
        outs = [np.empty((n, s.size), dtype=s.type.raw_dtype) for s in self.fm.outputs]
        for s, e, part in self._chunks(xs):
            if from_float_input:
                part = [from_float(a.astype(np.float64, copy=False), spec.type) for spec, a in zip(self.fm.inputs, part)]
            if self._fast is not None and not reference:
                res = self._fast.run(part)
            else:
                vals = self._run_ref([np.asarray(a, dtype=np.int64) for a in part])
                res = [vals[p] for p in self._out_pos]
            for o, r in zip(outs, res):
                o[s:e] = r
        return outs[0] if len(outs) == 1 else outs

    def predict(self, x, *, reference: bool = False) -> np.ndarray | list[np.ndarray]:
        """Float inputs -> float outputs, equal bit for bit to ``hls_model.predict(x)``."""
        xs = self._split_inputs(x)
        dtype = np.float32 if xs[0].dtype == np.float32 else np.float64
        if self._fast is not None and not reference:
            outs = self._fast.predict_float(xs, dtype)
        else:
            raws = self._predict_raw_chunks(xs, reference=True, from_float_input=True)
            raws = raws if isinstance(raws, list) else [raws]
            outs = [_to_float_out(r, s.type, dtype) for r, s in zip(raws, self.fm.outputs)]
        return outs[0] if len(outs) == 1 else outs

    def score(self, x) -> np.ndarray:
        """The anomaly score (float values of the score output element)."""
        if self.fm.score is None:
            raise TriggerMLError(f"firmware model {self.fm.name!r} has no score output")
        outs = self.predict(x)
        outs = outs if isinstance(outs, list) else [outs]
        k = [o.name for o in self.fm.outputs].index(self.fm.score.output)
        return outs[k][:, self.fm.score.index]

    def score_raw(self, x) -> np.ndarray:
        """The anomaly score as raw int64 integers of the score type (``value = raw * 2**-frac``).

        Score types up to 53 bits go through the float64 path (exact there, and the fast one);
        wider ones through the raw-integer path."""
        if self.fm.score is None:
            raise TriggerMLError(f"firmware model {self.fm.name!r} has no score output")
        t = self.fm.score_type
        if t.width <= 53:
            x64 = [np.asarray(a, np.float64) for a in x] if isinstance(x, (list, tuple)) else np.asarray(x, np.float64)
            return np.ldexp(np.asarray(self.score(x64), np.float64), t.frac).astype(np.int64)
        raws = self._predict_raw_chunks(self._split_inputs(x), from_float_input=True)
        raws = raws if isinstance(raws, list) else [raws]
        k = [o.name for o in self.fm.outputs].index(self.fm.score.output)
        return np.asarray(raws[k][:, self.fm.score.index]).astype(np.int64)

    def trigger(self, x) -> np.ndarray:
        """Boolean decisions ``score_raw > threshold`` (the threshold is a raw integer)."""
        if self.fm.threshold is None:
            raise TriggerMLError(f"firmware model {self.fm.name!r} has no threshold")
        xs = self._split_inputs(x)
        raws = self._predict_raw_chunks(xs, from_float_input=True)
        raws = raws if isinstance(raws, list) else [raws]
        k = [o.name for o in self.fm.outputs].index(self.fm.score.output)
        return raws[k][:, self.fm.score.index] > self.fm.threshold

    # -- diagnostics ---------------------------------------------------------------------------------------
    def trace(self, x) -> dict[str, np.ndarray]:
        """Every layer's output values (float64, ``(n_events, *shape)``), for mismatch localisation."""
        xs = self._split_inputs(x)
        acc: dict[str, list[np.ndarray]] = {s.layer.name: [] for s in self._steps}
        for _, _, part in self._chunks(xs):
            raws = [from_float(a.astype(np.float64, copy=False), spec.type) for spec, a in zip(self.fm.inputs, part)]
            vals = self._run_ref(raws, keep=True)
            for st, v in zip(self._steps, vals):
                acc[st.layer.name].append(_to_float_out(v, st.layer.type, np.float64).reshape((-1,) + st.layer.shape))
        return {k: np.concatenate(v, axis=0) for k, v in acc.items()}

    def overflow_report(self, x) -> dict[str, dict[str, int]]:
        """Per layer and cast site (``accum``, ``result``, ``product``, ``bias``, ``quantizer``, ...):
        the number of values whose exact pre-cast value did not fit the destination type (so that
        WRAP wrapped or SAT saturated).  For a WRAP accumulator the exact final sum is checked."""
        xs = self._split_inputs(x)
        ctr = _Counter(True)
        for _, _, part in self._chunks(xs):
            raws = [from_float(a.astype(np.float64, copy=False), spec.type) for spec, a in zip(self.fm.inputs, part)]
            for spec, a in zip(self.fm.inputs, part):
                t = spec.type
                # the rounded value before overflow handling (saturating at +-2**63 is still out of range)
                wide = FixedType(64, 64 - t.frac, True, t.rounding, "SAT") if -960 < t.frac < 960 else None
                if wide is not None:
                    r = from_float(a.astype(np.float64, copy=False), wide)
                    ctr.add(spec.name, "input", int(np.count_nonzero((r > t.raw_max) | (r < t.sat_min))))
            self._run_ref(raws, ctr)
        return {name: dict(ctr.counts.get(name, {})) for name in self.fm.layer_names}

    def overflow_counts(self, x) -> dict[str, int]:
        """Per layer: number of values that hit wrap/saturation in any cast (see overflow_report)."""
        return {k: int(sum(v.values())) for k, v in self.overflow_report(x).items()}

    def predict_file(self, path, *, dataset: str = "Particles", transform: Callable | None = None, chunk_events: int | None = None) -> np.ndarray | list[np.ndarray]:
        """Stream an HDF5 events file through the emulator chunk by chunk (flat memory).

        ``transform`` maps each raw chunk (e.g. ``(n, 19, 4)`` ADC2021 particles) to model inputs."""
        import h5py

        chunk = int(chunk_events or self.chunk_size)
        outs: list[list[np.ndarray]] = []
        with h5py.File(path, "r") as f:
            if dataset not in f:
                raise TriggerMLError(f"{path}: no dataset {dataset!r}")
            ds = f[dataset]
            for s in range(0, ds.shape[0], chunk):
                block = ds[s : s + chunk]
                xin = transform(block) if transform is not None else block
                y = self.predict(xin)
                outs.append(y if isinstance(y, list) else [y])
        if not outs:
            empty = [np.zeros((0, s.size)) for s in self.fm.outputs]
            return empty[0] if len(empty) == 1 else empty
        res = [np.concatenate([o[k] for o in outs], axis=0) for k in range(len(outs[0]))]
        return res[0] if len(res) == 1 else res
