"""One entry point: :func:`import_model` detects the source format and calls its importer."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trigger_ml.core.errors import DataFormatError

__all__ = ["FORMATS", "detect_format", "import_model"]

#: source formats and what they are
FORMATS = {
    "onnx": "ONNX or QONNX model (.onnx)",
    "keras2": "Keras 2 / QKeras model: architecture .json with X_weights.h5 beside it, or a full .h5 (also HGQ-1)",
    "hls4ml_cpp": "hls4ml project directory (generated C++: firmware/defines.h, parameters.h, <project>.cpp, weights/)",
}


def detect_format(source: str | os.PathLike) -> str:
    """The format of ``source`` (one of :data:`FORMATS`), from its extension checked against its
    content: a file that is not what its extension says is refused in one line."""
    p = Path(source)
    if not p.exists():
        raise DataFormatError(f"{p}: not found")
    suffix = p.suffix.lower()
    if p.is_file() and suffix == ".onnx":
        return "onnx"
    if p.is_file() and suffix in (".json", ".h5", ".hdf5"):
        return "keras2"
    if p.is_dir() and ((p / "firmware" / "parameters.h").is_file() or (p / "parameters.h").is_file()):
        return "hls4ml_cpp"
    raise DataFormatError(f"{p}: unknown model format; supported sources: "
                          + "; ".join(f"{v}" for v in FORMATS.values()))


def import_model(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    precision: str | os.PathLike | None = None,
    score: str | None = None,
    preprocessing: str | os.PathLike | None = None,
    force: bool = False,
    tb_events: int = 1000,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Import the model ``source`` into the firmware directory ``out`` (see the package doc).

    ``precision``: per-layer precision config (hls4ml config YAML or ours); ``score``: the score
    output ('name' or 'name[i]'; default: the only output value); ``preprocessing``: a
    trigger_ml preprocessing JSON (default: identity, stated in one line). Returns a summary dict."""
    fmt = detect_format(source)
    kw = dict(precision=precision, score=score, preprocessing=preprocessing, force=force, tb_events=tb_events, log=log)
    if fmt == "onnx":
        from trigger_ml.importers.onnx import import_onnx

        return import_onnx(source, out, **kw)
    if fmt == "keras2":
        from trigger_ml.importers.keras2 import import_keras2

        return import_keras2(source, out, **kw)
    if fmt == "hls4ml_cpp":
        from trigger_ml.importers.hls4ml_project import import_hls4ml_project

        return import_hls4ml_project(source, out, **kw)
    raise DataFormatError(f"{source}: format {fmt} has no importer")  # pragma: no cover
