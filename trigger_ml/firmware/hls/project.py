"""The hls4ml project: constants, :class:`HLSProject`, the hls4ml configuration, the
default-precision leak check, model loading/hashing, per-layer precisions, :func:`load_project`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trigger_ml.core.artifacts import (
    read_manifest,
)
from trigger_ml.core.errors import ArtifactError, ConfigError

STAGE = "firmware.hls"
PROJECT_NAME = "myproject"

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


def merge_config(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base`` (nested mappings merged key by key): hls4ml configs."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge_config(out[k], v)
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
    probe_cfg = merge_config(dict(hls_config), {"Model": {"Precision": probe_prec}})
    with tempfile.TemporaryDirectory(prefix="trigger_ml_probe_") as d:
        probe = _convert_graph(keras_model, Path(d) / "probe", backend=backend, part=part, clock_ns=clock_ns,
                               io_type=io_type, hls_config=probe_cfg, project_name=project_name)
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
