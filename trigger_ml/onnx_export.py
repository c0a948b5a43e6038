"""Float reference: export the float twin to ONNX (Keras export → tf2onnx) and cross-check with onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: float32 vs float32 of the same graph: differences come only from operation order
ONNX_RTOL = 1e-5


def export_float_onnx(run: str | Path, x_check: np.ndarray, out: Path | None = None) -> dict[str, Any]:
    """Write ``float_model.onnx`` into the run (or ``out``) and compare onnxruntime with Keras on ``x_check``.

    Returns the path, max/mean absolute difference, the max difference relative to the output
    scale, and whether it is within ``ONNX_RTOL``. This is a float↔float check, so a tolerance
    is appropriate here (unlike the bit-exact firmware comparisons).
    """
    import onnxruntime as ort

    from trigger_ml.train import load_artifact

    art = load_artifact(run)
    model = art.float_model()
    x = np.asarray(x_check, dtype=np.float32)
    ref = np.asarray(model.predict(x, batch_size=16384, verbose=0), dtype=np.float64)
    path = Path(out) if out else Path(run) / "float_model.onnx"
    from trigger_ml.core.artifacts import atomic_file

    with atomic_file(path) as tmp:  # an interrupted export leaves neither a partial file nor a temporary
        model.export(str(tmp), format="onnx", verbose=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0], dtype=np.float64).reshape(ref.shape)
    diff = np.abs(got - ref)
    scale = max(float(np.abs(ref).max()), 1e-12)
    return {"path": str(path), "n_events": len(x), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "max_rel_diff": float(diff.max() / scale), "rtol": ONNX_RTOL, "passed": bool(diff.max() <= ONNX_RTOL * scale)}
