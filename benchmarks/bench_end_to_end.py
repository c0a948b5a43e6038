"""End to end: h5 → menu (``trigger_ml.trigger.run.emulate``, what ``trigger-ml emulate`` runs) on 10^6 and
10^7 background events, and the exported C++ emulator (``trigger-ml export-emulator``) on one thread.

Prints one JSON document:

* ``emulate``: per sample size, events/s (events scored / wall seconds of the ``emulate`` call: h5 reading,
  preprocessing, emulation, histograms, menu) and the peak RSS of the process that ran it (each size in
  its own fresh subprocess, ``resource.getrusage(RUSAGE_SELF).ru_maxrss``), and ``rss_ratio_1e7_over_1e6``
  (target ≤ 1.2: memory flat in the number of events); ``cli``: the whole ``trigger-ml emulate`` command
  on the same files, process start to exit (interpreter, imports, table, menu JSON included);
* ``cpp``: the demo VAE exported to C++, built with g++ (Makefile defaults), loaded through
  ``create_model`` by the generated driver and run event by event (prepare_input / predict /
  read_result, one thread) on 10^6 preprocessed background events: events/s (wall and CPU time) and the
  mismatches against the Python emulator (integers, every output);
* the targets (≥ 1M events/s end to end, RSS ratio ≤ 1.2, C++ ≥ 1M events/s with 0 mismatches) and
  whether each is met, and the 1-minute load average at start and end (other processes on a shared
  machine lower every figure; the C++ CPU-time rate is the load-independent one).

Event files are generated once with the synthetic generator and cached in
``$TMPDIR/trigger_ml_bench_e2e`` (10^7 events ≈ 3 GB). The firmware is ``--firmware DIR`` (an hls4ml
firmware directory), else the demo's ``demo_out/firmware/hls`` when present, else the demo VAE is
trained briefly and converted into the cache (the timing does not depend on the training quality).

    python benchmarks/bench_end_to_end.py [--firmware DIR] [--sizes 1000000,10000000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(tempfile.gettempdir()) / "trigger_ml_bench_e2e"
MENU_KHZ = {"VLoose": 20.0, "Loose": 10.0, "Nominal": 5.0, "Tight": 2.0, "VTight": 1.0}

_CHILD = r"""
import json, resource, sys, time
from trigger_ml.trigger.run import emulate
fw, bkg, sig, menu = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
t = time.perf_counter()
res = emulate(fw, [bkg], [sig], menu_khz=menu)
wall = time.perf_counter() - t
print(json.dumps({"events": res["events"], "seconds": wall, "emulate_seconds": res["seconds"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "distinct_bins": res["statistics"]["distinct_bins"],
                  "thresholds_raw": {k: (v["threshold"] or {}).get("raw") for k, v in res["working_points"].items()},
                  "emulator_warning": res.get("emulator_warning")}))
"""


def _events_file(n: int, kind: str, seed: int) -> Path:
    from trigger_ml.data.synth import generate_file

    CACHE.mkdir(exist_ok=True)
    p = CACHE / f"{kind}_{n}_s{seed}.h5"
    if not p.exists():
        tmp = CACHE / f".{p.name}.tmp"
        tmp.unlink(missing_ok=True)
        generate_file(tmp, n, kind, seed=seed)
        tmp.rename(p)
    return p


def _firmware(arg: str | None) -> tuple[Path, str]:
    if arg:
        return Path(arg), "given"
    demo = REPO / "demo_out" / "firmware" / "hls"
    if (demo / "firmware_model.json").is_file():
        return demo, "demo_out (make demo)"
    fw = CACHE / "vae_fw"
    if not (fw / "firmware_model.json").is_file():
        from trigger_ml.firmware.convert import convert_run
        from trigger_ml.models.config import load_model_config
        from trigger_ml.train import train

        cfg = load_model_config(REPO / "models" / "axol1tl-vae.yaml")
        data = _events_file(200_000, "background", 1)
        shutil.rmtree(CACHE / "vae_run", ignore_errors=True)
        run = train(cfg, data, CACHE / "vae_run", epochs=2, max_events=100_000, log=lambda s: None)
        convert_run(run, fw, rate_khz=5.0, log=lambda s: None)
    return fw, "demo VAE trained 2 epochs for this benchmark"


def bench_emulate(fw: Path, n: int, sig: Path) -> dict:
    bkg = _events_file(n, "background", 1)
    r = subprocess.run([sys.executable, "-c", _CHILD, str(fw), str(bkg), str(sig), json.dumps(MENU_KHZ)],
                       capture_output=True, text=True, env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"})
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    d = json.loads(r.stdout.strip().splitlines()[-1])
    d["events_per_s"] = round(d["events"] / d["seconds"])
    d["seconds"] = round(d["seconds"], 2)
    d["peak_rss_mb"] = round(d["peak_rss_mb"], 1)
    d["cli"] = bench_cli(fw, bkg, sig, d["events"])
    return d


def bench_cli(fw: Path, bkg: Path, sig: Path, events: int) -> dict:
    """The whole ``trigger-ml emulate`` command as a user runs it: interpreter start, imports, the stage,
    the table and the menu JSON, until the process exits (wall clock)."""
    menu = ",".join(f"{k}={v}" for k, v in MENU_KHZ.items())
    with tempfile.TemporaryDirectory(prefix="bench_e2e_cli_") as d:
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "trigger_ml", "emulate", str(fw), "--background", str(bkg),
                            "--signals", str(sig), "--menu", menu, "--out", str(Path(d) / "menu.json")],
                           capture_output=True, text=True, env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"})
        wall = time.perf_counter() - t
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    return {"process_wall_s": round(wall, 2), "events_per_s_incl_process_start": round(events / wall)}


def bench_cpp(fw: Path, n: int) -> dict:
    import numpy as np

    from trigger_ml.data.adc2021 import read_events
    from trigger_ml.emulate.export_cpp import export_cpp
    from trigger_ml.scoring import FirmwareScorer

    if shutil.which("g++") is None or shutil.which("make") is None:
        return {"error": "g++ / make not found: not measured"}
    sc = FirmwareScorer(fw)
    fm = sc.firmware
    emu = sc._load()["emu"]
    ev = read_events(_events_file(1_000_000, "background", 1), stop=n)
    x = emu.quantize_inputs(sc._load()["pre"].transform(ev))
    ref = np.asarray(emu.predict_raw(x)).astype(np.int64).reshape(len(x), -1)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "inc").mkdir()
        (d / "inc" / "emulator.h").write_text(
            "#pragma once\n#include <any>\nnamespace hls4mlEmulator {\nclass Model {\n public:\n"
            "  virtual void prepare_input(std::any input) = 0;\n  virtual void predict() = 0;\n"
            "  virtual void read_result(std::any result) = 0;\n  virtual ~Model() = default;\n};\n}\n")
        info = export_cpp(fm, d / "cpp")
        t = time.perf_counter()
        b = subprocess.run(["make", "-s", "-C", str(d / "cpp"), f"EMULATOR_INCLUDE={d / 'inc'}", info["library"], "driver"],
                           capture_output=True, text=True)
        build_s = time.perf_counter() - t
        if b.returncode:
            return {"error": f"build failed: {b.stderr[-500:]}"}
        np.ascontiguousarray(x, np.int64).tofile(d / "in.bin")
        r = subprocess.run([str(d / "cpp" / "driver"), str(d / "cpp" / info["library"]), str(d / "in.bin"), str(d / "out.bin")],
                           capture_output=True, text=True)
        if r.returncode:
            return {"error": r.stderr[-500:]}
        stats = json.loads(r.stderr.strip().splitlines()[-1])
        got = np.fromfile(d / "out.bin", np.int64).reshape(len(x), -1)
    return {"model": fm.name, "events": int(len(x)), "events_per_s": int(stats["events_per_s"]),
            "events_per_cpu_s": int(stats["events_per_cpu_s"]), "mismatches": int(np.count_nonzero((got != ref).any(1))),
            "build_seconds": round(build_s, 1), "statements": info["statements"], "threads": 1,
            "loop": "create_model(); per event prepare_input(input_t*), predict(), read_result(result_t*)"}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--firmware", default=None)
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--cpp-events", type=int, default=1_000_000)
    a = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    fw, fw_source = _firmware(a.firmware)
    sig = _events_file(100_000, "Ato4l", 2)
    sizes = [int(s) for s in a.sizes.split(",")]
    emu = {str(n): bench_emulate(fw, n, sig) for n in sizes}
    cpp = bench_cpp(fw, a.cpp_events)
    rates = [v["events_per_s"] for v in emu.values()]
    ratio = None
    if "1000000" in emu and "10000000" in emu:
        ratio = round(emu["10000000"]["peak_rss_mb"] / emu["1000000"]["peak_rss_mb"], 3)
    res = {
        "firmware": str(fw), "firmware_source": fw_source, "cores": os.cpu_count(),
        "emulate": emu, "rss_ratio_1e7_over_1e6": ratio, "cpp": cpp,
        "signal_events": 100_000, "menu_khz": MENU_KHZ,
        "targets": {"emulate_events_per_s": 1_000_000, "rss_ratio_max": 1.2, "cpp_events_per_s": 1_000_000, "cpp_mismatches": 0},
        "targets_met": {
            "emulate_events_per_s": bool(rates and min(rates) >= 1_000_000),
            "rss_ratio": None if ratio is None else bool(ratio <= 1.2),
            "cpp_events_per_s": bool(cpp.get("events_per_s", 0) >= 1_000_000),
            "cpp_events_per_cpu_s": bool(cpp.get("events_per_cpu_s", 0) >= 1_000_000),
            "cpp_mismatches": cpp.get("mismatches") == 0,
        },
        "load_avg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
