"""The end-to-end demo job on the embedded synthetic dataset (grows with the pipeline)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

from trigger_ml.data.summary import summarize
from trigger_ml.data.synth import SIGNALS, generate_file
from trigger_ml.errors import ArtifactError


def run_demo(
    out: Path, n_background: int = 200_000, n_signal: int = 20_000, seed: int = 0, force: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Generate the synthetic background and the four signals into ``out`` and summarise them.

    Returns the metrics dictionary also written to ``out/metrics.json``.
    """
    out = Path(out)
    if out.exists():
        if not force:
            raise ArtifactError(f"{out}: exists; pass --force to overwrite")
        shutil.rmtree(out)
    data = out / "data"
    data.mkdir(parents=True)
    files = {"background": generate_file(data / "background.h5", n_background, "background", seed)}
    for i, s in enumerate(SIGNALS):
        files[s] = generate_file(data / f"{s}.h5", n_signal, s, seed + 1 + i)
    metrics: dict[str, Any] = {"data": {}}
    for name, path in files.items():
        s = summarize(path)
        metrics["data"][name] = {"file": str(path), "n_events": s["n_events"],
                                 "per_event": {k: round(v["per_event"], 3) for k, v in s["objects"].items()}}
        log(f"{name:12s} {s['n_events']:>8,} events  " + "  ".join(
            f"{k} {v['per_event']:.2f}" for k, v in s["objects"].items()))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
