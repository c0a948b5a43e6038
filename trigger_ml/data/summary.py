"""Streaming summary of an events file: counts, multiplicities and pT/eta/phi statistics per object type."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from trigger_ml.data.adc2021 import OBJECT_SLICES, info, iter_chunks
from trigger_ml.data.synth import PROCESS_CODES


def _attr_value(v: Any) -> Any:
    """An HDF5 attribute as plain Python (arrays → lists, bytes → text), whatever a file holds."""
    if isinstance(v, np.ndarray):
        return [_attr_value(x) for x in v.tolist()] if v.ndim else _attr_value(v.item())
    if isinstance(v, np.generic):
        return _attr_value(v.item())
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, (list, tuple)):
        return [_attr_value(x) for x in v]
    return v if isinstance(v, (str, int, float, bool)) or v is None else str(v)


def summarize(
    path: str | os.PathLike, chunk_size: int = 65536, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Validate and summarise a whole file in chunks (memory independent of the file size).

    Returns per object type: mean multiplicity and, over present objects, count, mean/std/min/max
    of pT, eta, phi (std: population standard deviation over objects present); plus the process
    composition when the file carries ``process`` codes.
    ``progress(done, total)`` is called after each chunk.
    """
    meta = info(path)
    acc = {k: {"n": 0, "mult": 0, "sum": np.zeros(3), "sumsq": np.zeros(3), "min": np.full(3, np.inf),
               "max": np.full(3, -np.inf)} for k in OBJECT_SLICES}
    procs: dict[int, int] = {}
    done = 0
    for chunk, extra in iter_chunks(path, chunk_size=chunk_size, with_extra=True):
        for kind, sl in OBJECT_SLICES.items():
            objs = chunk[:, sl, :3]
            present = objs[:, :, 0] > 0
            sel = objs[present].astype(np.float64)
            a = acc[kind]
            a["n"] += len(sel)
            a["mult"] += int(present.sum())
            if len(sel):
                a["sum"] += sel.sum(0)
                a["sumsq"] += (sel * sel).sum(0)
                a["min"] = np.minimum(a["min"], sel.min(0))
                a["max"] = np.maximum(a["max"], sel.max(0))
        if "process" in extra:
            u, c = np.unique(extra["process"], return_counts=True)
            for k, v in zip(u.tolist(), c.tolist()):
                procs[k] = procs.get(k, 0) + v
        done += len(chunk)
        if progress:
            progress(done, meta.n_events)
    names = {v: k for k, v in PROCESS_CODES.items()}
    objects = {}
    for kind, a in acc.items():
        n = a["n"]
        stats = {
            col: {
                "mean": float(a["sum"][i] / n) if n else None,
                "std": float(np.sqrt(max(a["sumsq"][i] / n - (a["sum"][i] / n) ** 2, 0.0))) if n else None,
                "min": float(a["min"][i]) if n else None,
                "max": float(a["max"][i]) if n else None,
            }
            for i, col in enumerate(("pt_gev", "eta", "phi"))
        }
        objects[kind] = {"count": n, "per_event": a["mult"] / max(done, 1), **stats}
    return {
        "path": str(Path(path)),
        "n_events": done,
        "dtype": meta.dtype,
        "attrs": {k: _attr_value(v) for k, v in meta.attrs.items()},
        "objects": objects,
        "processes": {names.get(k, str(k)): v for k, v in sorted(procs.items())},
    }
