"""hls4ml HLS projects from HGQ2 models, bit-exact, with an optional trigger-bit top function.

The HGQ2 → hls4ml flow
----------------------
HGQ2 layers (``hgq.layers.Q*``) are parsed by hls4ml 1.3's Keras-3 front end
(``hls4ml.converters.keras_v3.hgq2``), which turns every HGQ2 quantizer into a
``FixedPointQuantizer`` node carrying the exact per-element (k, b, i) bit widths, rounding and
overflow modes. The ``BitExact`` optimizer pass then derives *every* type of the graph (inputs,
weights, biases, accumulators, results) from those quantizers with interval arithmetic, so the
firmware computes exactly what ``model(x)`` computes. We call::

    hls4ml.converters.convert_from_keras_model(
        model, output_dir=..., project_name='myproject', backend='Vitis',
        part=..., clock_period=..., io_type='io_parallel',
        hls_config=hls_config_for(model, ...),       # Model: Precision/ReuseFactor/Strategy only
        bit_exact=True,                               # (hls4ml's default None also enables it for HGQ2)
        write_weights_txt=False,                      # weights only in headers: project is relocatable
    )

``hls_config_for`` deliberately sets no per-layer precision: the types come from the model.
hls4ml still needs a model-wide default ``Precision``; any tensor that ends up with that default is
a tensor the model does not quantize. :func:`default_precision_leaks` finds them by converting a
second time with a different default and listing the types that changed (a value comparison with
``fixed<16,6>`` would be wrong: the bit-exact flow can legitimately produce ``fixed<16,6>``);
:func:`convert` refuses such a model (``ConfigError``), e.g. a plain ``keras.layers.Dense`` model.

The project on disk
-------------------
``convert`` builds the complete hls4ml project (``hls_model.write()``) in a temporary sibling
directory and renames it onto ``out_dir`` at the end (``manifest.atomic_dir``): a failure leaves
nothing behind, an existing ``out_dir`` is replaced only with ``force``. It adds

* ``tb_data/tb_input_features.dat`` / ``tb_data/tb_output_predictions.dat`` in hls4ml's format:
  one event per line, the flattened values separated by single spaces (hls4ml's test bench reads
  them with ``atof`` into ``float``; inputs must therefore be exact in float32). Outputs of all
  model outputs are concatenated in order. Expected outputs are ``expected_fn(tb_inputs)`` (the
  bit-exact emulator), by default hls4ml's compiled C simulation; when both exist they are
  compared and any difference is an error.
* with ``threshold``: ``firmware/trigger_threshold.h`` (the constant), ``firmware/myproject_trigger.{h,cpp}``
  (a wrapper top function calling ``myproject`` and setting ``ap_uint<1> &trigger``) and
  ``myproject_trigger_test.cpp`` (test bench: reads ``tb_data``, writes ``<outputs...> <bit>`` per
  event to ``tb_data/csim_results.log``, and returns non-zero if an output differs from
  ``tb_output_predictions.dat`` or a bit differs from ``expected_score > threshold``).
  ``project.tcl`` gets ``set hls_top "myproject_trigger"`` and ``build_prj.tcl`` /
  ``vivado_synth.tcl`` use ``${hls_top}`` for ``set_top``, the cosim report and the Vivado
  ``synth_design -top``; the wrapper source and test bench are added to the HLS project. hls4ml's
  own ``myproject`` / bridge / ``myproject_test.cpp`` are untouched, so ``compile()`` and
  ``predict()`` keep working (a later ``hls_model.write()``/``compile()`` re-applies the tcl edits).
  Note: with the wrapper as top, Vitis names the top-level reports ``myproject_trigger_csynth.*``.
* ``manifest.json`` (stage ``firmware.hls``): model hash, tool versions, backend, part, clock,
  io type, strategy, reuse factors, per-layer precisions, threshold, timings.

Threshold rule
--------------
The threshold is placed on the score type's grid by the one threshold module,
:mod:`trigger_ml.core.threshold` (rounded down, compared with ``>``, range-checked): the same
integer the IR carries and the emulator compares with.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trigger_ml.core.artifacts import (
    atomic_dir,
    read_manifest,
    sha256_file,
    write_manifest,
)
from trigger_ml.core.errors import ArtifactError, ConfigError, TriggerMLError
from trigger_ml.core.fixed import FixedType
from trigger_ml.core.threshold import Threshold, place_threshold, resolve_score

STAGE = "firmware.hls"
PROJECT_NAME = "myproject"
from trigger_ml.core.constants import DEFAULT_PART  # noqa: E402  (re-exported)

DEFAULT_ONEAPI_PART = "Agilex7"
HLS4ML_DEFAULT_PRECISION = "fixed<16,6>"
_PROBE_PRECISIONS = ("fixed<23,9>", "fixed<21,7>")
_BACKENDS = {"vitis": "Vitis", "vivado": "Vivado", "oneapi": "oneAPI"}
_STRATEGIES = {"latency": "Latency", "resource": "Resource", "distributed_arithmetic": "distributed_arithmetic"}
_IO_TYPES = ("io_parallel", "io_stream")
_TB_INPUT = "tb_data/tb_input_features.dat"
_TB_OUTPUT = "tb_data/tb_output_predictions.dat"


@dataclass(frozen=True)
class HLSProject:
    """An hls4ml project written by :func:`convert` (all fields come from its ``manifest.json``)."""

    path: Path
    backend: str
    part: str
    clock_ns: float
    io_type: str
    strategy: str
    project_name: str
    precisions: dict[str, dict[str, str]]  # layer → {"result"/"accum"/"weight"/"bias": hls4ml type string}
    threshold: dict[str, Any] | None = None  # see quantize_threshold (+ score/top keys); None without a trigger bit
    reuse_factor: int | dict[str, int] = 1
    hls_top: str = PROJECT_NAME  # the HLS top function ("<project>_trigger" with a trigger bit)
    model_sha256: str | None = None
    outputs: tuple[tuple[str, int], ...] = field(default_factory=tuple)  # (output variable, size) in order

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["outputs"] = [list(o) for o in self.outputs]
        return d


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


def _norm_backend(backend: str) -> str:
    b = _BACKENDS.get(str(backend).lower())
    if b is None:
        raise ConfigError(f"backend {backend!r} is not supported; use one of {sorted(_BACKENDS.values())}")
    return b


def _norm_strategy(strategy: str) -> str:
    s = _STRATEGIES.get(str(strategy).lower())
    if s is None:
        raise ConfigError(f"strategy {strategy!r} is not supported; use one of {sorted(_STRATEGIES.values())}")
    return s


def _check_rf(name: str, rf: Any) -> int:
    if isinstance(rf, bool) or not isinstance(rf, (int, np.integer)) or int(rf) < 1:
        raise ConfigError(f"reuse factor for {name} must be a positive integer, got {rf!r}")
    return int(rf)


def _is_hgq_model(model) -> bool:
    return any(type(layer).__module__.split(".")[0] == "hgq" for layer in _all_layers(model))


def _all_layers(model):
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(_all_layers(layer))
    return out


def hls_config_for(
    model,
    *,
    strategy: str = "Latency",
    reuse_factor: int | Mapping[str, int] = 1,
    default_precision: str | None = None,
) -> dict[str, Any]:
    """hls4ml ``hls_config`` for ``model`` whose types come from the model itself.

    Only model-wide ``Strategy``, ``ReuseFactor`` and the (unused for HGQ2 models) default
    ``Precision`` are set, plus ``LayerName.<layer>.ReuseFactor`` for a per-layer ``reuse_factor``
    dict (layers not in the dict get 1). No per-layer ``Precision`` is written: hls4ml's bit-exact
    flow takes every type from the HGQ2 quantizers (see the module docstring); :func:`convert`
    checks that no tensor falls back to ``default_precision``.
    """
    strat = _norm_strategy(strategy)
    cfg: dict[str, Any] = {
        "Model": {
            "Precision": default_precision or HLS4ML_DEFAULT_PRECISION,
            "ReuseFactor": 1,
            "Strategy": strat,
        }
    }
    if isinstance(reuse_factor, Mapping):
        names = {layer.name for layer in _all_layers(model)}
        unknown = sorted(set(reuse_factor) - names)
        if unknown:
            raise ConfigError(
                f"reuse_factor names unknown layer(s) {unknown}; the model's layers are {sorted(names)}"
            )
        cfg["LayerName"] = {name: {"ReuseFactor": _check_rf(name, rf)} for name, rf in reuse_factor.items()}
    else:
        cfg["Model"]["ReuseFactor"] = _check_rf("the model", reuse_factor)
    return cfg


def _merge(a: dict, b: Mapping) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


@contextlib.contextmanager
def _quiet():
    """Silence hls4ml's progress prints (kept for the error message if something fails)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield buf


def _convert_graph(keras_model, output_dir: Path, *, backend, part, clock_ns, io_type, hls_config, project_name):
    import hls4ml

    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        project_name=project_name,
        backend=backend,
        hls_config=copy.deepcopy(hls_config),
        part=part,
        clock_period=clock_ns,
        io_type=io_type,
        bit_exact=True if _is_hgq_model(keras_model) else None,
    )
    if backend in ("Vitis", "Vivado"):
        kwargs["write_weights_txt"] = False
    with _quiet():
        return hls4ml.converters.convert_from_keras_model(keras_model, **kwargs)


def _type_table(hls_model) -> dict[tuple[str, str], str]:
    table = {}
    for name, layer in hls_model.graph.items():
        for attr, t in getattr(layer, "types", {}).items():
            table[(name, attr)] = str(getattr(t, "precision", t))
    return table


def default_precision_leaks(
    keras_model,
    hls_model,
    *,
    backend: str,
    part: str,
    clock_ns: float,
    io_type: str,
    hls_config: Mapping[str, Any],
    project_name: str = PROJECT_NAME,
) -> list[str]:
    """``layer.type`` entries of ``hls_model`` that follow hls4ml's model-wide default precision.

    Converts ``keras_model`` again with a different default ``Precision`` and returns the types
    that changed, e.g. ``["dense.result_t = fixed<16,6,TRN,WRAP,0>"]``. Empty for a fully
    quantized HGQ2 model. (Conversion only: nothing is written.)
    """
    used = str(hls_config.get("Model", {}).get("Precision", HLS4ML_DEFAULT_PRECISION))
    probe_prec = next(p for p in _PROBE_PRECISIONS if p != used)
    probe_cfg = _merge(dict(hls_config), {"Model": {"Precision": probe_prec}})
    with tempfile.TemporaryDirectory(prefix="trigger_ml_probe_") as d:
        probe = _convert_graph(
            keras_model,
            Path(d) / "probe",
            backend=backend,
            part=part,
            clock_ns=clock_ns,
            io_type=io_type,
            hls_config=probe_cfg,
            project_name=project_name,
        )
    a, b = _type_table(hls_model), _type_table(probe)
    leaks = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            layer, attr = key
            leaks.append(f"{layer}.{attr} = {a.get(key, '(absent)')}")
    return leaks


def check_no_default_precision(keras_model, hls_model, **kwargs) -> None:
    """Raise ConfigError if any tensor of ``hls_model`` uses hls4ml's default precision
    (see :func:`default_precision_leaks`)."""
    leaks = default_precision_leaks(keras_model, hls_model, **kwargs)
    if leaks:
        used = kwargs.get("hls_config", {}).get("Model", {}).get("Precision", HLS4ML_DEFAULT_PRECISION)
        shown = ", ".join(leaks[:4]) + (f" (+{len(leaks) - 4} more)" if len(leaks) > 4 else "")
        raise ConfigError(
            f"{len(leaks)} tensor type(s) fall back to hls4ml's default precision {used} because the model does "
            f"not quantize them: {shown}; quantize them in the model (HGQ2 layers/quantizers) or give them an "
            "explicit Precision in hls_config"
        )


# --------------------------------------------------------------------------------------------
# helpers: model loading / hashing / precisions
# --------------------------------------------------------------------------------------------


def _load_model(model):
    """(keras model, path or None)."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise ArtifactError(f"{path}: model file not found; pass a saved .keras model")
        import hgq  # noqa: F401  (registers HGQ2 layers for deserialization)
        import keras

        try:
            return keras.models.load_model(path, compile=False), path.resolve()
        except Exception as e:  # noqa: BLE001 - keras raises many types
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ArtifactError(f"{path}: cannot load the Keras model ({msg}); re-run training") from None
    if not hasattr(model, "layers") or not getattr(model, "built", False):
        raise ConfigError("model must be a built keras.Model or the path of a saved .keras file")
    return model, None


def model_weights_sha256(model) -> str:
    """SHA-256 over a model's variables (path, shape, dtype, bytes), in model order.

    Includes the HGQ2 quantizer bit-width variables, so a change of any bit width changes it."""
    from keras import ops

    h = hashlib.sha256()
    for w in model.weights:
        arr = np.ascontiguousarray(ops.convert_to_numpy(w))
        h.update(str(getattr(w, "path", w.name)).encode())
        h.update(str(arr.shape).encode() + str(arr.dtype).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


_PREC_KEYS = {"result_t": "result", "accum_t": "accum", "weight_t": "weight", "bias_t": "bias"}


def layer_precisions(hls_model) -> dict[str, dict[str, str]]:
    """Per layer of the converted graph: result/accum/weight/bias types as hls4ml strings."""
    out: dict[str, dict[str, str]] = {}
    for name, layer in hls_model.graph.items():
        d = {}
        types = getattr(layer, "types", {})
        for attr, key in _PREC_KEYS.items():
            if attr in types:
                d[key] = str(types[attr].precision)
        if "result" not in d:
            with contextlib.suppress(Exception):
                d["result"] = str(layer.get_output_variable().type.precision)
        out[name] = d
    return out


def _output_layout(hls_model) -> list[tuple[str, int]]:
    return [(v.name, int(v.size())) for v in hls_model.get_output_variables()]


# --------------------------------------------------------------------------------------------
# C simulation through hls4ml's bridge
# --------------------------------------------------------------------------------------------


def _flat_outputs(pred, n: int) -> np.ndarray:
    if isinstance(pred, (list, tuple)):
        return np.concatenate([np.asarray(p, dtype=np.float64).reshape(n, -1) for p in pred], axis=1)
    return np.asarray(pred, dtype=np.float64).reshape(n, -1)


def _predict_hls(hls_model, x) -> np.ndarray:
    if isinstance(x, (list, tuple)):  # multi-input model: one array per input
        n = np.asarray(x[0]).shape[0]
        xin = [np.ascontiguousarray(np.asarray(xi).reshape(n, -1), dtype=np.float64) for xi in x]
    else:
        x = np.asarray(x)
        n = x.shape[0]
        xin = np.ascontiguousarray(x.reshape(n, -1), dtype=np.float64)  # double bridge: no float32 rounding
    if n == 0:
        return np.zeros((0, sum(int(v.size()) for v in hls_model.get_output_variables())), dtype=np.float64)
    return _flat_outputs(hls_model.predict(xin), n)


_CSIM_CACHE: dict[tuple[str, str], Any] = {}


def _project_stamp(path: Path) -> str | None:
    cfg = path / "hls4ml_config.yml"
    if not cfg.is_file():
        return None
    m = re.search(r"^Stamp:\s*'?([0-9A-Za-z]+)'?\s*$", cfg.read_text(encoding="utf-8"), re.M)
    return m.group(1) if m else None


def _sources_newer_than(path: Path, project_name: str, lib: Path) -> bool:
    """True if a source that hls4ml's build_lib.sh compiles is newer than the built library."""
    t = lib.stat().st_mtime
    fw = path / "firmware"
    srcs = [
        fw / f"{project_name}.cpp",
        fw / f"{project_name}.h",
        fw / "defines.h",
        fw / "parameters.h",
        path / f"{project_name}_bridge.cpp",
        *fw.glob("weights/*.h"),
    ]
    return any(p.is_file() and p.stat().st_mtime > t for p in srcs)


def csim_predict(project_or_model, x: np.ndarray) -> np.ndarray:
    """hls4ml C simulation of ``x`` → float64 array (n_events, total output size).

    ``project_or_model`` is a ModelGraph (compiled if it is not yet) or the path of a project
    written by :func:`convert`. For a path, hls4ml's ``link_existing_project`` gives a lightweight
    ModelGraph; the project's already-built ``firmware/<name>-<stamp>.so`` is loaded when it is up to
    date (no g++ run), otherwise ``build_lib.sh`` is run once. Linked projects are cached per
    process. Outputs are read through the double-precision bridge, so every fixed-point value up to
    53 bits arrives exactly; multiple outputs are concatenated in order.
    """
    if isinstance(project_or_model, (str, os.PathLike)):
        path = Path(project_or_model).resolve()
        project = load_project(path)
        key = (str(path), str(_project_stamp(path)))
        g = _CSIM_CACHE.get(key)
        if g is None:
            import hls4ml

            g = hls4ml.converters.link_existing_project(str(path))
            lib = path / "firmware" / f"{project.project_name}-{key[1]}.so"
            with _quiet() as buf:
                if lib.is_file() and not _sources_newer_than(path, project.project_name, lib):
                    g._top_function_lib = ctypes.cdll.LoadLibrary(str(lib))
                else:
                    try:
                        g._compile()
                    except Exception as e:  # noqa: BLE001
                        raise ArtifactError(f"{path}: C simulation build failed ({_last_line(buf, e)}); check g++") from None
            _CSIM_CACHE[key] = g
        return _predict_hls(g, x)
    g = project_or_model
    if getattr(g, "_top_function_lib", None) is None:
        with _quiet() as buf:
            try:
                g.compile()
            except Exception as e:  # noqa: BLE001
                raise ArtifactError(f"C simulation build failed ({_last_line(buf, e)}); check g++") from None
    return _predict_hls(g, x)


def _last_line(buf: io.StringIO, e: BaseException) -> str:
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    err = [ln for ln in lines if "error" in ln.lower()]
    return (err[0] if err else (lines[-1] if lines else str(e))).strip()[:300]


# --------------------------------------------------------------------------------------------
# test-bench data
# --------------------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    # Shortest round-trip decimal of the double: parses back (atof/strtod) to exactly the same value.
    v = float(v)
    return repr(v) if v != int(v) or abs(v) >= 1e16 else str(int(v))


def write_tb_file(path: Path, rows: np.ndarray) -> None:
    """hls4ml's ``.dat`` format: one event per line, values separated by a space (trailing space)."""
    rows = np.asarray(rows, dtype=np.float64)
    rows = rows.reshape(rows.shape[0], -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="ascii") as f:
        for r in rows:
            f.write(" ".join(_fmt(v) for v in r) + " \n")


def read_tb_file(path: Path) -> np.ndarray:
    rows = [[float(t) for t in ln.split()] for ln in Path(path).read_text(encoding="ascii").splitlines() if ln.strip()]
    return np.asarray(rows, dtype=np.float64)


def _check_tb_inputs(tb_inputs, hls_model) -> np.ndarray:
    x = np.asarray(tb_inputs)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ConfigError(f"tb_inputs must be a non-empty (events, features...) array, got shape {x.shape}")
    n_in = sum(int(v.size()) for v in hls_model.get_input_variables())
    if int(np.prod(x.shape[1:])) != n_in:
        raise ConfigError(f"tb_inputs has {int(np.prod(x.shape[1:]))} values per event, the model takes {n_in}")
    if not np.all(np.isfinite(x)):
        raise ConfigError("tb_inputs contains non-finite values; pass preprocessed, finite model inputs")
    x64 = x.astype(np.float64)
    if not np.array_equal(x64.astype(np.float32).astype(np.float64), x64):
        raise ConfigError(
            "tb_inputs are not exact in float32 (hls4ml's test bench reads floats); pass the quantized model inputs"
        )
    return x64


def _expected_rows(expected_fn, x: np.ndarray, n_out: int) -> np.ndarray:
    y = expected_fn(x)
    if isinstance(y, (list, tuple)):
        y = np.concatenate([np.asarray(v, dtype=np.float64).reshape(x.shape[0], -1) for v in y], axis=1)
    y = np.asarray(y, dtype=np.float64).reshape(x.shape[0], -1)
    if y.shape[1] != n_out:
        raise ConfigError(f"expected_fn returned {y.shape[1]} values per event, the model has {n_out} outputs")
    return y


# --------------------------------------------------------------------------------------------
# trigger bit
# --------------------------------------------------------------------------------------------


def _score_of(hls_model, score_output: str | None) -> tuple[Any, int, int]:
    """(output variable, index inside it, flat index across all outputs) of the score, by the one
    rule of :func:`trigger_ml.core.threshold.resolve_score` (a layer name is accepted for its
    output variable)."""
    outs = list(hls_model.get_output_variables())
    by_name = {v.name: v for v in outs}
    if score_output is not None:
        m = re.fullmatch(r"\s*([^\[\]\s]+)\s*(\[.*)?", str(score_output))
        if m and m.group(1) not in by_name:
            for lname in getattr(hls_model, "outputs", []):
                with contextlib.suppress(Exception):
                    v = hls_model.graph[lname].get_output_variable()
                    if lname == m.group(1) and v.name in by_name:
                        score_output = v.name + (m.group(2) or "")
    name, idx, flat = resolve_score([(v.name, int(v.size())) for v in outs], score_output)
    return by_name[name], idx, flat


_PROTO_RE = r"void\s+{name}\s*\((.*?)\)\s*;"


def _top_signature(fw: Path, project_name: str) -> tuple[str, list[str]]:
    """(argument list text, argument names) of ``void <project>(...)`` in firmware/<project>.h."""
    text = (fw / f"{project_name}.h").read_text(encoding="utf-8")
    m = re.search(_PROTO_RE.format(name=re.escape(project_name)), text, re.S)
    if not m:
        raise ArtifactError(f"{fw / (project_name + '.h')}: no prototype of {project_name}(); hls4ml template changed")
    args = [a.strip() for a in m.group(1).split(",") if a.strip()]
    names = []
    for a in args:
        mm = re.search(r"([A-Za-z_]\w*)\s*(\[[^\]]*\]\s*)*$", a)
        if not mm:
            raise ArtifactError(f"cannot parse argument {a!r} of {project_name}()")
        names.append(mm.group(1))
    return ",\n    ".join(args), names


def _top_io_pragmas(fw: Path, project_name: str) -> list[str]:
    """The ``#pragma HLS`` lines of hls4ml's top function before the weights/layers."""
    text = (fw / f"{project_name}.cpp").read_text(encoding="utf-8")
    start = re.search(r"void\s+" + re.escape(project_name) + r"\s*\(.*?\)\s*\{", text, re.S)
    if not start:
        raise ArtifactError(f"{fw / (project_name + '.cpp')}: no definition of {project_name}(); hls4ml template changed")
    body = text[start.end() :]
    stop = body.find("// hls-fpga-machine-learning insert load weights")
    if stop < 0:
        stop = body.find("// hls-fpga-machine-learning insert layers")
    head = body[: stop if stop >= 0 else len(body)]
    return [ln.strip() for ln in head.splitlines() if ln.strip().startswith("#pragma HLS")]


def _write_trigger_sources(out: Path, hls_model, project_name: str, thr: dict[str, Any], score) -> None:
    fw = out / "firmware"
    var, idx, flat_idx = score
    args, names = _top_signature(fw, project_name)
    pragmas = _top_io_pragmas(fw, project_name)
    if any(p.startswith("#pragma HLS INTERFACE") and "port=" in p for p in pragmas):
        pragmas = [
            re.sub(r"port=(\S+)", r"port=\1,trigger", p, count=1) if p.startswith("#pragma HLS INTERFACE") else p
            for p in pragmas
        ]
    else:
        pragmas.append("#pragma HLS INTERFACE ap_vld port=trigger")
    guard = project_name.upper()
    score_t = var.type.name
    if thr.get("requested") is not None:
        origin = f"// Requested (float) threshold: {thr['requested']!r}"
        req_define = f"#define TRIGGER_THRESHOLD_REQUESTED {thr['requested']!r}\n"
    else:
        origin = (f"// Calibrated to {thr.get('target_rate_khz')!r} kHz at {(thr.get('bx_rate_hz') or 0) / 1e6:g} MHz: "
                  f"{thr.get('n_pass')} of {thr.get('n_total')} held-out background events fire "
                  "(firmware integer scores, trigger_ml.core.threshold.calibrate_threshold).")
        req_define = ""
    (fw / "trigger_threshold.h").write_text(
        f"""#ifndef {guard}_TRIGGER_THRESHOLD_H_
#define {guard}_TRIGGER_THRESHOLD_H_

// Trigger threshold, generated by trigger_ml.firmware.hls.
// Score: {var.name}[{idx}], type {score_t} = {thr['score_type']} ({thr['frac_bits']} fractional bits).
// Rule: trigger = score > TRIGGER_THRESHOLD_VALUE, where
//   TRIGGER_THRESHOLD_VALUE = floor(requested * 2^F) * 2^-F = TRIGGER_THRESHOLD_RAW * 2^-F  (F = frac bits).
// Rounding down keeps "score > value" identical to "score > requested" for every representable score.
{origin}

#include "defines.h"

typedef {score_t} trigger_score_t;
{req_define}#define TRIGGER_THRESHOLD_VALUE {_fmt_c(thr['value'])}
#define TRIGGER_THRESHOLD_RAW {thr['raw']}LL
#define TRIGGER_THRESHOLD_FRAC_BITS {thr['frac_bits']}
#define TRIGGER_SCORE_INDEX {idx}

static const trigger_score_t trigger_threshold = TRIGGER_THRESHOLD_VALUE;  // exact: on the score grid

#endif
""",
        encoding="ascii",
    )
    (fw / f"{project_name}_trigger.h").write_text(
        f"""#ifndef {guard}_TRIGGER_H_
#define {guard}_TRIGGER_H_

#include "ap_int.h"
#include "{project_name}.h"
#include "trigger_threshold.h"

// HLS top: the network {project_name}() plus the trigger decision bit.
void {project_name}_trigger(
    {args},
    ap_uint<1> &trigger
);

#endif
""",
        encoding="ascii",
    )
    prag = "\n".join("    " + p for p in pragmas)
    (fw / f"{project_name}_trigger.cpp").write_text(
        f"""#include "{project_name}_trigger.h"

void {project_name}_trigger(
    {args},
    ap_uint<1> &trigger
) {{
{prag}

    {project_name}({", ".join(names)});
    trigger = ({var.name}[{idx}] > trigger_threshold) ? 1 : 0;
}}
""",
        encoding="ascii",
    )
    _write_trigger_tb(out, hls_model, project_name, names, flat_idx)


def _fmt_c(v: float) -> str:
    s = repr(float(v))
    return s if ("." in s or "e" in s or "inf" in s or "nan" in s) else s + ".0"


def _write_trigger_tb(out: Path, hls_model, project_name: str, arg_names: list[str], flat_idx: int) -> None:
    ins = list(hls_model.get_input_variables())
    outs = list(hls_model.get_output_variables())
    n_in = sum(int(v.size()) for v in ins)
    n_out = sum(int(v.size()) for v in outs)
    decl, fill, offset = [], [], 0
    for v in ins:
        decl.append(f"        {v.definition_cpp()};")
        fill.append(f"        for (int i = 0; i < {int(v.size())}; i++) {v.name}[i] = in[{offset} + i];")
        offset += int(v.size())
    out_decl, out_print, out_check, offset = [], [], [], 0
    for v in outs:
        out_decl.append(f"        {v.definition_cpp()};")
        out_print.append(f"        for (int i = 0; i < {int(v.size())}; i++) fout << {v.name}[i].to_double() << ' ';")
        out_check.append(
            f"            for (int i = 0; i < {int(v.size())}; i++) if ({v.name}[i].to_double() != pr[{offset} + i]) bad = true;"
        )
        offset += int(v.size())
    call = ", ".join(arg_names)
    (out / f"{project_name}_trigger_test.cpp").write_text(
        f"""// Test bench of {project_name}_trigger (generated by trigger_ml.firmware.hls).
// Usage: {project_name}_trigger_test [inputs.dat [expected.dat [results.log]]]
// Defaults: tb_data/tb_input_features.dat, tb_data/tb_output_predictions.dat, tb_data/csim_results.log
// (tb_data/rtl_cosim_results.log with -DRTL_SIM). One result line per event: "<outputs...> <trigger bit>".
// Returns non-zero if an output differs from the expected file or the bit differs from
// expected_score > TRIGGER_THRESHOLD_VALUE.
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "firmware/{project_name}_trigger.h"
#include "firmware/nnet_utils/nnet_helpers.h"

namespace nnet {{
bool trace_enabled = false;
std::map<std::string, void *> *trace_outputs = NULL;
size_t trace_type_size = sizeof(double);
}} // namespace nnet

static bool read_row(std::ifstream &f, std::vector<double> &row) {{
    std::string line;
    while (std::getline(f, line)) {{
        row.clear();
        std::istringstream ss(line);
        std::string tok;
        while (ss >> tok) row.push_back(std::strtod(tok.c_str(), NULL));
        if (!row.empty()) return true;
    }}
    return false;
}}

int main(int argc, char **argv) {{
#ifdef RTL_SIM
    const char *default_log = "tb_data/rtl_cosim_results.log";
#else
    const char *default_log = "tb_data/csim_results.log";
#endif
    const char *in_path = argc > 1 ? argv[1] : "tb_data/tb_input_features.dat";
    const char *pr_path = argc > 2 ? argv[2] : "tb_data/tb_output_predictions.dat";
    const char *out_path = argc > 3 ? argv[3] : default_log;

    std::ifstream fin(in_path);
    if (!fin.is_open()) {{
        std::cerr << "ERROR: cannot open " << in_path << std::endl;
        return 2;
    }}
    std::ifstream fpr(pr_path);
    const bool check = fpr.is_open();
    std::ofstream fout(out_path);
    fout << std::setprecision(17);

    long n = 0, bad_out = 0, bad_bit = 0;
    std::vector<double> in, pr;
    while (read_row(fin, in)) {{
        if (in.size() != {n_in}u) {{
            std::cerr << "ERROR: event " << n << " has " << in.size() << " inputs, expected {n_in}" << std::endl;
            return 2;
        }}
{chr(10).join(decl)}
{chr(10).join(fill)}
{chr(10).join(out_decl)}
        ap_uint<1> trigger;

        {project_name}_trigger({call}, trigger);

{chr(10).join(out_print)}
        fout << trigger.to_uint() << '\\n';

        if (check && read_row(fpr, pr)) {{
            if (pr.size() != {n_out}u) {{
                std::cerr << "ERROR: expected-output line " << n << " has " << pr.size() << " values, expected {n_out}" << std::endl;
                return 2;
            }}
            bool bad = false;
{chr(10).join(out_check)}
            if (bad) bad_out++;
            const unsigned expected_bit = (pr[{flat_idx}] > TRIGGER_THRESHOLD_VALUE) ? 1u : 0u;
            if (expected_bit != trigger.to_uint()) bad_bit++;
        }}
        n++;
    }}
    fout.close();
    std::cout << "INFO: " << n << " events; " << bad_out << " output mismatches; " << bad_bit
              << " trigger-bit mismatches; results in " << out_path << std::endl;
    return (bad_out || bad_bit) ? 1 : 0;
}}
""",
        encoding="ascii",
    )


_TCL_TRIGGER_MARK = "# trigger_ml: trigger top"


def _patch_tcl_for_trigger(out: Path, project_name: str) -> None:
    """Make ``<project>_trigger`` the HLS top in project.tcl / build_prj.tcl / vivado_synth.tcl.

    Idempotent (re-applied after every ``hls_model.write()``); raises ArtifactError if a template
    line it must change is missing (hls4ml template changed)."""
    top = f"{project_name}_trigger"
    prj = out / "project.tcl"
    text = prj.read_text(encoding="utf-8")
    if _TCL_TRIGGER_MARK not in text:
        text += f'{_TCL_TRIGGER_MARK}\nvariable hls_top\nset hls_top "{top}"\n'
        prj.write_text(text, encoding="utf-8")

    build = out / "build_prj.tcl"
    text = build.read_text(encoding="utf-8")
    if _TCL_TRIGGER_MARK not in text:
        src_line = 'add_files firmware/${project_name}.cpp -cflags "-std=c++0x"'
        required = {
            "set_top ${project_name}\n": "set_top ${hls_top}\n",
            src_line: src_line + '\nadd_files firmware/${project_name}_trigger.cpp -cflags "-std=c++0x"',
            "add_files -tb ${project_name}_test.cpp": "add_files -tb ${project_name}_trigger_test.cpp",
            "sim/report/${project_name}_cosim.rpt": "sim/report/${hls_top}_cosim.rpt",
        }
        optional = {
            "sim/verilog/${project_name}.tcl": "sim/verilog/${hls_top}.tcl",
            "apatb_${project_name}_top/AESL_inst_${project_name}": "apatb_${hls_top}_top/AESL_inst_${hls_top}",
        }
        for old, new in required.items():
            if old not in text:
                raise ArtifactError(f"{build}: line {old.strip()!r} not found; hls4ml template changed, cannot set the trigger top")
            text = text.replace(old, new)
        for old, new in optional.items():
            text = text.replace(old, new)
        text = f"{_TCL_TRIGGER_MARK}: top is ${{hls_top}} (set in project.tcl)\n" + text
        build.write_text(text, encoding="utf-8")

    synth = out / "vivado_synth.tcl"
    if synth.is_file():
        text = synth.read_text(encoding="utf-8")
        if _TCL_TRIGGER_MARK not in text and "-top ${project_name}" in text:
            text = f"{_TCL_TRIGGER_MARK}\n" + text.replace("-top ${project_name}", "-top ${hls_top}")
            synth.write_text(text, encoding="utf-8")


def _install_rewrite_hook(hls_model, project_name: str) -> None:
    """After ``hls_model.write()`` (also called by ``compile()``) re-apply the trigger tcl edits."""
    original = hls_model.write

    def write(*args, **kwargs):
        r = original(*args, **kwargs)
        _patch_tcl_for_trigger(Path(hls_model.config.get_output_dir()), project_name)
        return r

    hls_model.write = write


# --------------------------------------------------------------------------------------------
# convert
# --------------------------------------------------------------------------------------------


def convert(
    model,
    out_dir: str | os.PathLike,
    *,
    backend: str = "Vitis",
    part: str | None = None,
    clock_ns: float = 5.0,
    io_type: str = "io_parallel",
    strategy: str = "Latency",
    reuse_factor: int | Mapping[str, int] = 1,
    threshold: float | Threshold | Callable[[Any, FixedType], Threshold] | None = None,
    score_output: str | None = None,
    tb_inputs: np.ndarray | None = None,
    expected_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    force: bool = False,
    project_name: str = PROJECT_NAME,
    hls_config: Mapping[str, Any] | None = None,
    compile: bool = True,  # noqa: A002 - mirrors hls4ml's ModelGraph.compile
    finalize: Callable[[Path, Any, dict | None], None] | None = None,
) -> tuple[HLSProject, Any]:
    """Write a complete, bit-exact hls4ml project for ``model`` into ``out_dir`` (atomically).

    ``model``: a built keras.Model (HGQ2) or the path of a saved ``.keras`` file (its SHA-256 goes
    into the manifest; otherwise the SHA-256 of the weights). ``part`` None → ``xcvu13p-flga2577-2-e``
    (``Agilex7`` for oneAPI). ``reuse_factor``: int or {layer name: int}. ``hls_config``: extra
    hls4ml config merged over :func:`hls_config_for`. ``compile``: build hls4ml's C simulation
    library (needed when ``tb_inputs`` is given without ``expected_fn``; when both ``compile`` and
    ``expected_fn`` are given the C simulation is checked against ``expected_fn`` exactly).
    The threshold/trigger bit needs Vitis/Vivado with io_parallel; ``threshold`` is a score value, a
    :class:`~trigger_ml.core.threshold.Threshold` (its raw integer), or a callable
    ``(ModelGraph, score FixedType) -> Threshold`` (e.g. a rate calibration), all placed by the one
    threshold rule. ``finalize(tmp_dir, ModelGraph, threshold dict)`` may add files before the
    atomic rename. Returns (HLSProject, ModelGraph); the ModelGraph's output directory is ``out_dir``.
    """
    backend = _norm_backend(backend)
    strategy_n = _norm_strategy(strategy)
    if io_type not in _IO_TYPES:
        raise ConfigError(f"io_type {io_type!r} is not supported; use one of {list(_IO_TYPES)}")
    if not isinstance(clock_ns, (int, float)) or not clock_ns > 0:
        raise ConfigError(f"clock_ns must be a positive number, got {clock_ns!r}")
    if not re.fullmatch(r"[A-Za-z_]\w*", project_name):
        raise ConfigError(f"project_name {project_name!r} must be a C identifier")
    if threshold is not None and (backend not in ("Vitis", "Vivado") or io_type != "io_parallel"):
        raise ConfigError(
            f"the trigger-bit wrapper supports Vitis/Vivado with io_parallel, not {backend}/{io_type}; "
            "drop threshold or change backend/io_type"
        )
    if part is None:
        part = DEFAULT_ONEAPI_PART if backend == "oneAPI" else DEFAULT_PART
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not force:  # fail before any work (atomic_dir checks again)
        raise ArtifactError(f"{out_dir}: exists; pass --force to overwrite it")
    keras_model, model_path = _load_model(model)
    cfg = hls_config_for(keras_model, strategy=strategy_n, reuse_factor=reuse_factor)
    if hls_config:
        cfg = _merge(cfg, hls_config)
    timings: dict[str, float] = {}
    figures: dict[str, Any] = {}

    with atomic_dir(out_dir, force=force) as tmp:
        t0 = time.perf_counter()
        try:
            hls_model = _convert_graph(
                keras_model,
                tmp,
                backend=backend,
                part=part,
                clock_ns=float(clock_ns),
                io_type=io_type,
                hls_config=cfg,
                project_name=project_name,
            )
        except TriggerMLError:
            raise
        except Exception as e:  # noqa: BLE001 - hls4ml raises bare Exception/ValueError/AssertionError
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"hls4ml cannot convert the model ({type(e).__name__}: {msg})") from e
        timings["convert_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        check_no_default_precision(
            keras_model,
            hls_model,
            backend=backend,
            part=part,
            clock_ns=float(clock_ns),
            io_type=io_type,
            hls_config=cfg,
            project_name=project_name,
        )
        timings["precision_check_s"] = time.perf_counter() - t0

        thr, score, hls_top = None, None, project_name
        if threshold is not None:  # resolved before the (slow) compile so that a bad score/threshold fails fast
            score = _score_of(hls_model, score_output)
            var, idx, flat_idx = score
            score_t = FixedType.from_hls4ml(var.type.precision)
            if callable(threshold):  # e.g. calibrated to a rate with the firmware's own integer scores
                t_obj = threshold(hls_model, score_t)
            elif isinstance(threshold, Threshold):
                t_obj = place_threshold(score_t, raw=threshold.raw)
                t_obj = Threshold(**{**threshold.__dict__, "raw": t_obj.raw, "frac": t_obj.frac,
                                     "score_type": t_obj.score_type})
            else:
                t_obj = place_threshold(score_t, threshold)
            if score_t.width > 53:
                raise ConfigError(f"score type {score_t.to_hls()} is wider than 53 bits; the threshold would not be "
                                  "exact as a double")
            thr = t_obj.to_json() | {"frac_bits": t_obj.frac}
            hls_top = f"{project_name}_trigger"
            thr.update(
                {
                    "score_output": var.name,
                    "score_index": idx,
                    "score_flat_index": flat_idx,
                    "score_ctype": var.type.name,
                    "top": hls_top,
                    "header": "firmware/trigger_threshold.h",
                }
            )

        x = _check_tb_inputs(tb_inputs, hls_model) if tb_inputs is not None else None
        if x is not None and expected_fn is None and not compile:
            raise ConfigError("tb_inputs without expected_fn needs the C simulation; pass compile=True or expected_fn")
        if compile and backend == "oneAPI":
            if expected_fn is None and x is not None:
                raise ConfigError("oneAPI C simulation is not built here; pass expected_fn (the bit-exact emulator)")
            compile = False

        t0 = time.perf_counter()
        with _quiet():
            hls_model.write()
        timings["write_s"] = time.perf_counter() - t0

        if compile:
            t0 = time.perf_counter()
            with _quiet() as buf:
                try:
                    hls_model._compile()
                except Exception as e:  # noqa: BLE001
                    raise ArtifactError(f"{out_dir}: g++ failed to build the C simulation ({_last_line(buf, e)})") from None
            timings["compile_s"] = time.perf_counter() - t0

        layout = _output_layout(hls_model)
        n_out = sum(s for _, s in layout)
        if x is not None:
            t0 = time.perf_counter()
            csim = _predict_hls(hls_model, x) if compile else None
            timings["csim_s"] = time.perf_counter() - t0
            if expected_fn is not None:
                expected = _expected_rows(expected_fn, x, n_out)
                if csim is not None:
                    bad = np.flatnonzero(np.any(csim != expected, axis=1))
                    figures["csim_vs_expected_mismatched_events"] = int(bad.size)
                    if bad.size:
                        i = int(bad[0])
                        raise ArtifactError(
                            f"{out_dir}: hls4ml C simulation differs from expected_fn on {bad.size}/{len(x)} events "
                            f"(first: event {i}, csim {csim[i].tolist()} vs expected {expected[i].tolist()}); "
                            "the firmware is not bit-exact - check the model's quantizers"
                        )
                figures["expected_source"] = "expected_fn"
            else:
                expected = csim
                figures["expected_source"] = "hls4ml C simulation"
            write_tb_file(tmp / _TB_INPUT, x)
            write_tb_file(tmp / _TB_OUTPUT, expected)
            figures["tb_events"] = int(len(x))

        if thr is not None:
            _write_trigger_sources(tmp, hls_model, project_name, thr, score)
            _patch_tcl_for_trigger(tmp, project_name)

        model_sha = sha256_file(model_path) if model_path is not None else model_weights_sha256(keras_model)
        precisions = layer_precisions(hls_model)
        reuse_json = dict(reuse_factor) if isinstance(reuse_factor, Mapping) else int(reuse_factor)
        config = {
            "model_sha256": model_sha,
            "model_sha256_of": "model file" if model_path is not None else "model weights",
            "model_path": str(model_path) if model_path is not None else None,
            "backend": backend,
            "part": part,
            "clock_ns": float(clock_ns),
            "io_type": io_type,
            "strategy": strategy_n,
            "reuse_factor": reuse_json,
            "project_name": project_name,
            "hls_top": hls_top,
            "bit_exact": bool(_is_hgq_model(keras_model)),
            "hls_config": cfg,
            "precisions": precisions,
            "outputs": [list(o) for o in layout],
            "threshold": thr,
            "tb_files": [_TB_INPUT, _TB_OUTPUT] if x is not None else [],
        }
        figures["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
        if finalize is not None:  # the caller's files (IR, preprocessing, ...) land in the same atomic rename
            finalize(tmp, hls_model, thr)
        write_manifest(tmp, STAGE, {"model": model_path} if model_path is not None else {}, config, figures)
        _relocate_yml(tmp, out_dir)

    hls_model.config.config["OutputDir"] = str(out_dir)
    if threshold is not None:
        _install_rewrite_hook(hls_model, project_name)
    project = HLSProject(
        path=out_dir,
        backend=backend,
        part=part,
        clock_ns=float(clock_ns),
        io_type=io_type,
        strategy=strategy_n,
        project_name=project_name,
        precisions=precisions,
        threshold=thr,
        reuse_factor=reuse_json,
        hls_top=hls_top,
        model_sha256=model_sha,
        outputs=tuple((n, s) for n, s in layout),
    )
    return project, hls_model


def _relocate_yml(tmp: Path, final: Path) -> None:
    """hls4ml_config.yml records absolute paths (OutputDir, the saved keras model); point them at ``final``."""
    yml = tmp / "hls4ml_config.yml"
    if yml.is_file():
        text = yml.read_text(encoding="utf-8")
        yml.write_text(text.replace(str(tmp), str(final)), encoding="utf-8")


def load_project(path: str | os.PathLike, verify_inputs: bool = False) -> HLSProject:
    """The :class:`HLSProject` of a directory written by :func:`convert` (ArtifactError if its
    manifest is missing, corrupt or of another stage)."""
    p = Path(path).absolute()
    m = read_manifest(p, expect_stage=STAGE, verify_inputs=verify_inputs)
    c = m.get("config", {})
    try:
        return HLSProject(
            path=p,
            backend=c["backend"],
            part=c["part"],
            clock_ns=float(c["clock_ns"]),
            io_type=c["io_type"],
            strategy=c["strategy"],
            project_name=c["project_name"],
            precisions=c["precisions"],
            threshold=c.get("threshold"),
            reuse_factor=c.get("reuse_factor", 1),
            hls_top=c.get("hls_top", c["project_name"]),
            model_sha256=c.get("model_sha256"),
            outputs=tuple((str(n), int(s)) for n, s in c.get("outputs", [])),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(
            f"{p / 'manifest.json'}: incomplete firmware.hls manifest ({type(e).__name__}: {e}); re-run the conversion with --force"
        ) from None


# --------------------------------------------------------------------------------------------
# trigger C simulation (g++, standalone test bench)
# --------------------------------------------------------------------------------------------


def _csim_cache_dir() -> Path:
    d = Path(tempfile.gettempdir()) / f"trigger_ml_hls_csim_{os.getuid() if hasattr(os, 'getuid') else 'u'}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _trigger_sources(path: Path, project_name: str) -> list[Path]:
    fw = path / "firmware"
    return [
        fw / f"{project_name}.cpp",
        fw / f"{project_name}_trigger.cpp",
        path / f"{project_name}_trigger_test.cpp",
    ]


def build_trigger_csim(path: str | os.PathLike, opt_level: str = "-O0") -> Path:
    """Compile the project's trigger test bench (wrapper + network) with g++; cached by source hash
    and ``opt_level`` in the temp directory (one translation unit; -O0 compiles fastest)."""
    if opt_level not in ("-O0", "-O1", "-O2", "-O3"):
        raise ConfigError(f"opt_level must be one of -O0..-O3, got {opt_level!r}")
    project = load_project(path)
    p = project.path
    if not project.threshold:
        raise ConfigError(f"{p}: project has no trigger bit; convert with threshold=...")
    srcs = _trigger_sources(p, project.project_name)
    for s in srcs:
        if not s.is_file():
            raise ArtifactError(f"{s}: missing; re-run the conversion with --force")
    h = hashlib.sha256()
    fw = p / "firmware"
    for f in sorted([*srcs, *fw.glob("*.h"), *fw.glob("weights/*.h")]):
        h.update(f.relative_to(p).as_posix().encode() + b"\0" + f.read_bytes())
    h.update(opt_level.encode())
    key = h.hexdigest()[:24]
    exe = _csim_cache_dir() / f"{project.project_name}_trigger_{key}"
    if exe.is_file():
        return exe
    gxx = shutil.which("g++") or shutil.which("c++")
    if gxx is None:
        raise TriggerMLError("g++ not found on PATH; install g++ to run the trigger C simulation")
    unity = exe.with_name(exe.name + f".{os.getpid()}.cpp")
    unity.write_text("".join(f'#include "{s}"\n' for s in srcs), encoding="utf-8")
    tmp_exe = exe.with_name(exe.name + f".{os.getpid()}.tmp")
    cmd = [gxx, opt_level, "-std=c++17", "-w", f"-I{fw / 'ap_types'}", f"-I{fw}", f"-I{p}", str(unity), "-o", str(tmp_exe)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            err = next((ln for ln in r.stderr.splitlines() if "error" in ln), r.stderr.strip()[-300:])
            raise ArtifactError(f"{p}: g++ failed on the trigger test bench ({err.strip()[:300]})")
        os.replace(tmp_exe, exe)
    finally:
        unity.unlink(missing_ok=True)
        tmp_exe.unlink(missing_ok=True)
    return exe


def trigger_csim(
    project_path: str | os.PathLike, x: np.ndarray, opt_level: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Run the trigger wrapper's C++ (``<project>_trigger``) on ``x`` → (scores float64, bits uint8).

    Compiles the project's ``<project>_trigger_test.cpp`` + ``firmware/<project>.cpp`` +
    ``firmware/<project>_trigger.cpp`` with g++ (cached per source hash in the temp directory) and
    runs it on ``x`` written in the tb_data format; scores are the score output read through
    ``to_double()`` (exact), bits the wrapper's ``trigger`` output. ``opt_level`` None: -O0 (fastest
    build) up to 20k events, -O2 above.
    """
    project = load_project(project_path)
    x = np.asarray(x, dtype=np.float64)
    exe = build_trigger_csim(project.path, opt_level or ("-O0" if x.shape[0] <= 20_000 else "-O2"))
    n = x.shape[0]
    if n == 0:
        return np.zeros(0), np.zeros(0, dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="trigger_ml_tcsim_") as d:
        inp, res = Path(d) / "in.dat", Path(d) / "out.log"
        write_tb_file(inp, x)
        r = subprocess.run([str(exe), str(inp), str(Path(d) / "none.dat"), str(res)], capture_output=True, text=True)
        if r.returncode != 0:
            msg = (r.stderr.strip() or r.stdout.strip()).splitlines()
            raise ArtifactError(f"{project.path}: trigger C simulation failed ({msg[-1] if msg else r.returncode})")
        rows = read_tb_file(res)
    if rows.shape[0] != n:
        raise ArtifactError(f"{project.path}: trigger C simulation returned {rows.shape[0]} events for {n} inputs")
    flat = int(project.threshold["score_flat_index"])
    return rows[:, flat].copy(), rows[:, -1].astype(np.uint8)


__all__ = [
    "HLSProject",
    "build_trigger_csim",
    "check_no_default_precision",
    "convert",
    "csim_predict",
    "default_precision_leaks",
    "hls_config_for",
    "layer_precisions",
    "load_project",
    "model_weights_sha256",
    "read_tb_file",
    "trigger_csim",
    "write_tb_file",
]
