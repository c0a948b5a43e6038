"""Write a complete, bit-exact hls4ml project (atomically), with the optional trigger wrapper.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trigger_ml.core.artifacts import (
    atomic_dir,
    sha256_file,
    write_manifest,
)
from trigger_ml.core.constants import DEFAULT_PART
from trigger_ml.core.errors import ArtifactError, ConfigError, TriggerMLError
from trigger_ml.core.fixed import FixedType
from trigger_ml.core.threshold import Threshold, place_threshold
from trigger_ml.firmware.hls.csim import (
    _check_tb_inputs,
    _expected_rows,
    _last_line,
    _predict_hls,
    write_tb_file,
)
from trigger_ml.firmware.hls.project import (
    _IO_TYPES,
    _TB_INPUT,
    _TB_OUTPUT,
    DEFAULT_ONEAPI_PART,
    PROJECT_NAME,
    STAGE,
    HLSProject,
    _convert_graph,
    _is_hgq_model,
    _load_model,
    merge_config,
    _norm_backend,
    _norm_strategy,
    _output_layout,
    _quiet,
    _relocate_yml,
    check_no_default_precision,
    hls_config_for,
    layer_precisions,
    model_weights_sha256,
)
from trigger_ml.firmware.hls.trigger import (
    _install_rewrite_hook,
    _patch_tcl_for_trigger,
    _score_of,
    _write_trigger_sources,
)

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
    threshold: float | Callable[[Any, FixedType, int], Threshold] | None = None,
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
    The threshold/trigger bit needs Vitis/Vivado with io_parallel; ``threshold`` is a score value
    (placed by the one threshold rule) or a callable ``(ModelGraph, score FixedType, flat score
    index) -> Threshold`` (e.g. a rate calibration). ``finalize(tmp_dir, ModelGraph, threshold dict)``
    may add files before the atomic rename. Returns (HLSProject, ModelGraph); the ModelGraph's output directory is ``out_dir``.
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
        cfg = merge_config(cfg, hls_config)
    timings: dict[str, float] = {}
    figures: dict[str, Any] = {}

    graph_kw = {"backend": backend, "part": part, "clock_ns": float(clock_ns), "io_type": io_type,
                "hls_config": cfg, "project_name": project_name}
    with atomic_dir(out_dir, force=force) as tmp:
        t0 = time.perf_counter()
        try:
            hls_model = _convert_graph(keras_model, tmp, **graph_kw)
        except TriggerMLError:
            raise
        except Exception as e:  # noqa: BLE001 - hls4ml raises bare Exception/ValueError/AssertionError
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"hls4ml cannot convert the model ({type(e).__name__}: {msg})") from e
        timings["convert_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        check_no_default_precision(keras_model, hls_model, **graph_kw)
        timings["precision_check_s"] = time.perf_counter() - t0

        thr, score, hls_top = None, None, project_name
        if threshold is not None:  # resolved before the (slow) compile so that a bad score/threshold fails fast
            score = _score_of(hls_model, score_output)
            var, idx, flat_idx = score
            score_t = FixedType.from_hls4ml(var.type.precision)
            if score_t.width > 53:  # before any (calibration) work
                raise ConfigError(f"score type {score_t.to_hls()} is wider than 53 bits; the threshold would not be "
                                  "exact as a double")
            if callable(threshold):  # e.g. calibrated to a rate with the firmware's own integer scores
                t_obj = threshold(hls_model, score_t, flat_idx)
            else:
                t_obj = place_threshold(score_t, threshold)
            thr = t_obj.to_json()
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
