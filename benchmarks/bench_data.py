"""Synthetic generator throughput (events/s after the lepton filter), printed as JSON.

Reference in the same run: the single-thread generation of the same events, so the figure
is also reported as a ratio (thread scaling) next to the absolute target of 200k events/s.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from trigger_ml.data import synth


def _rate(fn, n: int) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def main(n: int = 400_000) -> dict:
    synth.generate(20_000, "background", seed=0)  # warm-up
    single = _rate(lambda: list(synth._iter_blocks(n, "background", 1, threads=1)), n)
    threaded = _rate(lambda: synth.generate(n, "background", seed=1), n)
    with tempfile.TemporaryDirectory() as d:
        to_file = _rate(lambda: synth.generate_file(Path(d) / "b.h5", n, "background", seed=1), n)
    signals = {s: round(_rate(lambda s=s: synth.generate(50_000, s, seed=2), 50_000)) for s in synth.SIGNALS}
    res = {
        "cores": os.cpu_count(),
        "background_events_per_s": round(threaded),
        "background_to_file_events_per_s": round(to_file),
        "background_single_thread_events_per_s": round(single),
        "thread_speedup": round(threaded / single, 2),
        "signal_events_per_s": signals,
        "target_events_per_s": 200_000,
        "target_met": bool(threaded >= 200_000),
    }
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
