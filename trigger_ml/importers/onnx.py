"""ONNX and QONNX (``Quant`` nodes) models → hls4ml project, through hls4ml's ONNX front end.

hls4ml 1.3 parses ONNX only after the qonnx package has *cleaned* the graph (constant folding,
shape inference), converted convolutions to channels-last and ``Gemm`` nodes to ``MatMul`` +
``Add`` (hls4ml's ONNX/QONNX front-end documentation):
``cleanup_model → ConvertToChannelsLastAndClean → GemmToMatMul → cleanup_model``.
QONNX ``Quant`` nodes carry their own precisions into the graph; every other tensor takes the
model-wide default precision (or ``--precision``), which the import states in one line.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trigger_ml.core.errors import DataFormatError, UnsupportedLayerError
from trigger_ml.firmware.hls.project import merge_config
from trigger_ml.importers.common import (
    DEFAULT_PRECISION,
    load_precision_config,
    model_default_precision,
    write_firmware,
)

__all__ = ["clean_onnx", "import_onnx"]


def _load(path: Path):
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf/onnx raise many types
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataFormatError(f"{path}: not a readable ONNX model ({msg[:200]})") from None
    if not len(model.graph.node):
        raise DataFormatError(f"{path}: not an ONNX model (no graph nodes)")
    return model


def clean_onnx(model_or_path) -> Any:
    """qonnx ``ModelWrapper`` of an ONNX model, cleaned the way hls4ml's ONNX front end needs it
    (cleanup, channels-last, Gemm → MatMul, cleanup)."""
    import warnings

    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    with warnings.catch_warnings():  # qonnx: "old-style domain attributes were converted" (finn → qonnx)
        warnings.simplefilter("ignore", UserWarning)
        m = ModelWrapper(model_or_path)
    m = cleanup_model(m)
    m = m.transform(ConvertToChannelsLastAndClean())
    m = m.transform(GemmToMatMul())
    return cleanup_model(m)


def _check_ops(path: Path, model) -> None:
    from hls4ml.converters import get_supported_onnx_layers

    supported = set(get_supported_onnx_layers())
    for node in model.graph.node:
        if node.op_type not in supported:
            raise UnsupportedLayerError(
                f"{path}: node {node.name or '(unnamed)'!r} of type {node.op_type} is not supported by hls4ml's ONNX "
                f"front end; supported: {', '.join(sorted(supported))}")


def import_onnx(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    precision: str | os.PathLike | None = None,
    score: str | None = None,
    preprocessing: str | os.PathLike | None = None,
    backend: str = "Vitis",
    part: str | None = None,
    clock_ns: float = 5.0,
    force: bool = False,
    tb_events: int = 1000,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Import an ONNX/QONNX model file into the firmware directory ``out`` (hls4ml project + IR).

    ``precision``: a precision config file (see :func:`trigger_ml.importers.common.load_precision_config`);
    tensors neither quantized by QONNX ``Quant`` nodes nor named there use the default precision."""
    import hls4ml

    from trigger_ml.core.constants import DEFAULT_PART
    from trigger_ml.firmware.hls.project import _quiet

    src = Path(source)
    if not src.is_file():
        raise DataFormatError(f"{src}: ONNX file not found")
    raw = _load(src)
    is_qonnx = any(n.op_type in ("Quant", "BipolarQuant", "Trunc") for n in raw.graph.node)
    user = load_precision_config(precision)
    default = model_default_precision(user)
    with _quiet():
        model = clean_onnx(raw)
    _check_ops(src, model.model)
    notes = []
    if "Model" not in user or "Precision" not in user.get("Model", {}):
        notes.append(f"tensors the model does not quantize{' (no Quant node)' if is_qonnx else ''} use the default "
                     f"precision {DEFAULT_PRECISION}; give --precision to choose them")

    def build(tmp: Path):
        with _quiet():
            cfg = hls4ml.utils.config_from_onnx_model(model, granularity="name", backend=backend,
                                                      default_precision=default)
            cfg = merge_config(cfg, user)
            return hls4ml.converters.convert_from_onnx_model(
                model, output_dir=str(tmp), project_name="myproject", backend=backend, part=part or DEFAULT_PART,
                clock_period=clock_ns, io_type="io_parallel", hls_config=cfg,
                write_weights_txt=False)  # weights only in headers: the project is relocatable

    return write_firmware(build, out, source=src, source_format="qonnx" if is_qonnx else "onnx",
                          inputs={"model": src, "precision": precision, "preprocessing": preprocessing},
                          score=score, preprocessing=preprocessing, force=force, log=log, tb_events=tb_events,
                          notes=notes, meta={"default_precision": default})
