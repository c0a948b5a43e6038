"""The one firmware-directory writer of every importer: a converted hls4ml ``ModelGraph`` → the
same layout ``trigger-ml convert --flavor hls`` writes (hls4ml project + ``firmware_model.json`` +
``preprocessing.json`` + ``input_info.json`` + ``manifest.json`` of stage ``firmware.hls``), in one
atomic rename, after checking the emulator of the IR against hls4ml's C simulation of the same
project on random test vectors.

Also the per-layer precision configuration shared by the importers (``--precision CONFIG``).
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trigger_ml.core.artifacts import (
    atomic_dir,
    check_output,
    sha256_file,
    write_manifest,
)
from trigger_ml.core.constants import (
    DEFAULT_PART,
    INPUT_INFO_FILE,
    IR_FILE,
    PREPROCESSING_FILE,
)
from trigger_ml.core.errors import ArtifactError, ConfigError, TriggerMLError
from trigger_ml.core.fixed import FixedType
from trigger_ml.core.threshold import resolve_score

#: hls4ml's model-wide default precision, used for every tensor the source does not quantize
DEFAULT_PRECISION = "fixed<16,6>"
#: the Keras model hls4ml saves in a project converted from Keras (``write_yml``): for an import, the
#: Keras 3 / HGQ2 rebuild of a Keras 2 / QKeras / HGQ-1 model (``trigger-ml verify FIRMWARE_DIR`` runs it)
KERAS_MODEL_FILE = "keras_model.keras"
#: identity preprocessing (the firmware receives the model inputs as given)
IDENTITY_PREPROCESSING = {"kind": "pipeline", "steps": []}


# --------------------------------------------------------------------------------------------
# precision configuration
# --------------------------------------------------------------------------------------------


def _hls_precision(s: Any, where: str) -> str:
    """An hls4ml precision string from ``ap_fixed<..>`` / ``fixed<..>`` text (checked)."""
    if not isinstance(s, str):
        raise ConfigError(f"{where}: precision must be a string like 'ap_fixed<16,6>', got {s!r}")
    try:
        FixedType.parse(s.strip())
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return s.strip()


def load_precision_config(path: str | os.PathLike | None) -> dict[str, Any]:
    """Read ``--precision CONFIG`` (YAML or JSON) into an hls4ml ``hls_config`` fragment.

    Two forms are accepted: an hls4ml configuration (``Model: {Precision: ...}``,
    ``LayerName: {name: {Precision: {result: ..., weight: ..., accum: ...}}}``; an
    ``hls4ml_config.yml`` whose ``HLSConfig`` holds that is read too), or ours:
    ``{"default": "ap_fixed<16,6>", "layers": {name: {"result": ..., "weight": ..., ...} | "type"}}``.
    Returns ``{}`` for ``path=None``."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: precision config not found")
    import yaml

    try:
        d = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not a YAML/JSON precision config ({str(exc).splitlines()[0]})") from None
    if not isinstance(d, Mapping):
        raise ConfigError(f"{p}: a precision config must be a mapping (hls4ml 'Model'/'LayerName' or 'default'/'layers')")
    if "HLSConfig" in d:
        d = d["HLSConfig"]
    if "Model" in d or "LayerName" in d:
        out = copy.deepcopy(dict(d))
        for name, lc in (out.get("LayerName") or {}).items():
            prec = (lc or {}).get("Precision")
            if isinstance(prec, Mapping):
                for k, v in prec.items():
                    _hls_precision(v, f"{p}: LayerName.{name}.Precision.{k}")
            elif prec is not None:
                _hls_precision(prec, f"{p}: LayerName.{name}.Precision")
        if "Model" in out and "Precision" in out["Model"]:
            mp = out["Model"]["Precision"]
            if isinstance(mp, Mapping):
                for k, v in mp.items():
                    _hls_precision(v, f"{p}: Model.Precision.{k}")
            else:
                _hls_precision(mp, f"{p}: Model.Precision")
        return out
    unknown = sorted(set(d) - {"default", "layers"})
    if unknown:
        raise ConfigError(f"{p}: unknown key(s) {unknown}; use 'default' and 'layers' (or hls4ml's 'Model'/'LayerName')")
    out: dict[str, Any] = {}
    if d.get("default") is not None:
        out["Model"] = {"Precision": _hls_precision(d["default"], f"{p}: default")}
    layers = d.get("layers") or {}
    if not isinstance(layers, Mapping):
        raise ConfigError(f"{p}: 'layers' must map layer names to precisions")
    ln = {}
    for name, v in layers.items():
        if isinstance(v, Mapping):
            ln[str(name)] = {"Precision": {str(k): _hls_precision(t, f"{p}: layers.{name}.{k}") for k, t in v.items()}}
        else:
            ln[str(name)] = {"Precision": _hls_precision(v, f"{p}: layers.{name}")}
    if ln:
        out["LayerName"] = ln
    return out


def model_default_precision(cfg: Mapping[str, Any]) -> str:
    """The model-wide default precision of an hls4ml config (``Model.Precision``, or its ``default``)."""
    mp = (cfg.get("Model") or {}).get("Precision", DEFAULT_PRECISION)
    if isinstance(mp, Mapping):
        return str(mp.get("default", DEFAULT_PRECISION))
    return str(mp)


# --------------------------------------------------------------------------------------------
# test vectors
# --------------------------------------------------------------------------------------------


def random_inputs(types: list[FixedType], shapes: list[tuple[int, ...]], n: int, seed: int) -> list[np.ndarray]:
    """``n`` random events per input: a third inside the input type's range (uniform), a third
    standard normal, a third up to 4x beyond the range (wraps/saturations), float64."""
    rng = np.random.default_rng(seed)
    out = []
    for t, shape in zip(types, shapes):
        lo = -(2.0 ** (t.integer - 1)) if t.signed else 0.0
        hi = 2.0 ** (t.integer - int(t.signed))
        size = (n, *shape)
        a = rng.uniform(lo, hi, size)
        b = rng.standard_normal(size)
        span = max(abs(lo), abs(hi))
        c = rng.uniform(-4 * span, 4 * span, size)
        pick = rng.integers(0, 3, size=(n,) + (1,) * len(shape))
        x = np.where(pick == 0, a, np.where(pick == 1, b, c))
        out.append(x.astype(np.float64))
    return out


def count_mismatches(fm, hls_model_or_dir, x) -> dict[str, Any]:
    """Emulator of ``fm`` vs hls4ml's C simulation on ``x``: mismatching values/events (exact)."""
    from trigger_ml.emulate import Emulator
    from trigger_ml.firmware.hls import csim_predict

    xs = x if isinstance(x, (list, tuple)) else [x]
    n = len(xs[0])
    t0 = time.perf_counter()
    csim = csim_predict(hls_model_or_dir, x if len(xs) > 1 else xs[0])
    t1 = time.perf_counter()
    emu = Emulator(fm).predict(x if len(xs) > 1 else xs[0])
    t2 = time.perf_counter()
    if isinstance(emu, list):
        emu = np.concatenate([np.asarray(e, np.float64).reshape(n, -1) for e in emu], axis=1)
    emu = np.asarray(emu, np.float64).reshape(n, -1)
    csim = np.asarray(csim, np.float64).reshape(n, -1)
    bad = emu != csim
    return {"events": int(n), "values": int(bad.size), "mismatching_values": int(bad.sum()),
            "mismatching_events": int(bad.any(axis=1).sum()), "csim_s": round(t1 - t0, 3),
            "emulator_s": round(t2 - t1, 3), "csim": csim, "emulator": emu}


# --------------------------------------------------------------------------------------------
# the writer
# --------------------------------------------------------------------------------------------


def _preprocessing_json(preprocessing: str | os.PathLike | None, log: Callable[[str], None]) -> tuple[dict, str]:
    from trigger_ml.data.preprocess import preprocessing_from_json

    if preprocessing is None:
        log("note: no --preprocessing given: the firmware receives the model inputs unchanged (identity "
            "preprocessing, recorded in the manifest)")
        return dict(IDENTITY_PREPROCESSING), "identity (none given)"
    p = Path(preprocessing)
    try:
        d = json.loads(p.read_text())
        if isinstance(d, Mapping) and "kind" not in d and "preprocessing" in d:
            d = d["preprocessing"]
        preprocessing_from_json(d)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{p}: not a trigger_ml preprocessing JSON ({type(exc).__name__}: {exc}); give a "
                          "run's preprocessing.json") from None
    return d, str(p.resolve())


def _yml_without_objects(yml: Path, source: Path) -> None:
    """hls4ml dumps an ONNX model into ``hls4ml_config.yml`` as a pickled Python object (which
    ``yaml.safe_load`` - and so ``link_existing_project`` - cannot read): record the source path instead."""
    if not yml.is_file():
        return
    lines = yml.read_text(encoding="utf-8").splitlines(keepends=True)
    out, skip = [], False
    for line in lines:
        if skip and (line.startswith((" ", "-")) or not line.strip()):
            continue
        skip = False
        key, sep, rest = line.partition(":")
        if sep and not line.startswith(" ") and rest.strip().startswith("!!python/"):
            out.append(f"{key}: {json.dumps(str(source))}\n")
            skip = True
            continue
        out.append(line)
    yml.write_text("".join(out), encoding="utf-8")


def write_firmware(
    build_graph: Callable[[Path], Any],
    out: str | os.PathLike,
    *,
    source: Path,
    source_format: str,
    inputs: Mapping[str, str | os.PathLike | None],
    score: str | None = None,
    preprocessing: str | os.PathLike | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
    tb_events: int = 1000,
    seed: int = 20261201,
    notes: list[str] | None = None,
    meta: Mapping[str, Any] | None = None,
    finalize: Callable[[Path, Any, Any], None] | None = None,
) -> dict[str, Any]:
    """Write the firmware directory ``out`` from ``build_graph(tmp_dir) -> ModelGraph`` (atomically).

    The ModelGraph's project is written and compiled inside the temporary directory; the IR is
    built from it (:func:`trigger_ml.ir.from_hls_model`), the emulator is compared with the C
    simulation on ``tb_events`` random events (any mismatch is an error: nothing is written), and
    those events become the project's ``tb_data``. ``inputs``: the source files (hashed into the
    manifest; ``out`` may not be one of them). ``notes``: one-line statements (default precisions,
    ...) echoed through ``log`` and stored in the manifest. Returns a summary dict."""
    from trigger_ml import ir
    from trigger_ml.firmware.hls import STAGE, layer_precisions, write_tb_file
    from trigger_ml.firmware.hls.project import _output_layout, _quiet, _relocate_yml

    from trigger_ml.firmware.convert import FIRMWARE_STAGES  # what --force may replace: the same as convert

    out = check_output(out, [v for v in inputs.values() if v is not None], FIRMWARE_STAGES, force)
    pre_json, pre_src = _preprocessing_json(preprocessing, log)
    notes = list(notes or [])
    for n in notes:
        log(f"note: {n}")
    t0 = time.perf_counter()
    res: dict[str, Any] = {}
    with atomic_dir(out, force=force) as tmp:
        try:
            hls_model = build_graph(tmp)
        except TriggerMLError:
            raise
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"{source}: hls4ml cannot convert the model ({type(e).__name__}: {msg})") from e
        fm = ir.from_hls_model(hls_model)
        if score is not None or sum(o.size for o in fm.outputs) == 1:
            name, idx, _ = resolve_score([(o.name, o.size) for o in fm.outputs], score)
            fm = fm.with_score(name, idx)
        fm = type(fm)(fm.name, fm.inputs, fm.outputs, fm.layers, fm.score, fm.threshold,
                      dict(fm.meta) | {"imported_from": str(source), "source_format": source_format} | dict(meta or {}))
        with _quiet():
            hls_model.write()
        _yml_without_objects(tmp / "hls4ml_config.yml", source)
        t_conv = time.perf_counter() - t0
        with _quiet() as buf:
            try:
                hls_model._compile()
            except Exception as e:  # noqa: BLE001
                from trigger_ml.firmware.hls.csim import _last_line

                raise ArtifactError(f"{out}: g++ failed to build the C simulation ({_last_line(buf, e)})") from None
        t_comp = time.perf_counter() - t0 - t_conv
        x = random_inputs([s.type for s in fm.inputs], [s.shape for s in fm.inputs], tb_events, seed)
        xin = x if len(x) > 1 else x[0]
        chk = count_mismatches(fm, hls_model, xin)
        if chk["mismatching_values"]:
            raise ArtifactError(
                f"{source}: the emulator of the imported IR differs from hls4ml's C simulation on "
                f"{chk['mismatching_events']}/{tb_events} random events; this is a trigger_ml bug - please report it")
        if finalize is not None:
            finalize(tmp, hls_model, fm)
        if len(x) == 1:
            write_tb_file(tmp / "tb_data" / "tb_input_features.dat", x[0])
            write_tb_file(tmp / "tb_data" / "tb_output_predictions.dat", chk["csim"])
        fm.save(tmp / IR_FILE)
        (tmp / PREPROCESSING_FILE).write_text(json.dumps(pre_json))
        t_in = fm.inputs[0].type
        info = {"width": t_in.width, "integer": t_in.integer, "signed": bool(t_in.signed),
                "n_features": int(fm.inputs[0].size), "source": "import"}
        (tmp / INPUT_INFO_FILE).write_text(json.dumps(info))
        cfg = hls_model.config
        layout = _output_layout(hls_model)
        strategy = str(cfg.get_config_value("Strategy") or (cfg.config.get("HLSConfig", {}).get("Model", {}) or {})
                       .get("Strategy", "Latency"))
        config = {
            "model_sha256": sha256_file(source) if source.is_file() else None,
            "model_sha256_of": "model file" if source.is_file() else "source directory",
            "model_path": str(source),
            "source_format": source_format,
            "backend": str(cfg.get_config_value("Backend") or cfg.backend.name),
            "part": str(cfg.get_config_value("Part") or DEFAULT_PART),
            "clock_ns": float(cfg.get_config_value("ClockPeriod") or 5.0),
            "io_type": str(cfg.get_config_value("IOType")),
            "strategy": strategy,
            "reuse_factor": 1,
            "project_name": str(cfg.get_project_name()),
            "hls_top": str(cfg.get_project_name()),
            "bit_exact": False,
            "hls_config": cfg.config.get("HLSConfig", {}),
            "precisions": layer_precisions(hls_model),
            "outputs": [list(o) for o in layout],
            "threshold": None,
            "tb_files": ["tb_data/tb_input_features.dat", "tb_data/tb_output_predictions.dat"] if len(x) == 1 else [],
            "preprocessing": pre_src,
            "notes": notes,
        }
        figures = {"tb_events": tb_events, "emulator_vs_csim_mismatching_values": 0,
                   "timings_s": {"convert_s": round(t_conv, 3), "compile_s": round(t_comp, 3),
                                 "check_s": round(chk["csim_s"] + chk["emulator_s"], 3)}}
        write_manifest(tmp, STAGE, {k: v for k, v in inputs.items() if v is not None}, config, figures, seed=seed)
        _relocate_yml(tmp, out)
        res = {"path": str(out), "source": str(source), "format": source_format, "layers": len(fm.layers),
               "inputs": [s.to_dict() for s in fm.inputs], "outputs": [s.to_dict() for s in fm.outputs],
               "score": None if fm.score is None else fm.score.to_dict(), "tb_events": tb_events,
               "emulator_vs_csim_mismatches": 0, "notes": notes, "seconds": round(time.perf_counter() - t0, 2)}
    hls_model.config.config["OutputDir"] = str(out)
    log(f"wrote hls4ml project {out} from {source_format} {source.name} ({res['layers']} IR layers; emulator == "
        f"C-sim on {tb_events} random events; {res['seconds']:.1f} s)")
    return res
