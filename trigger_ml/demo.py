"""The end-to-end demo on the embedded synthetic dataset: data → train → firmware → emulate → verify → report.

``run_demo(out)`` generates the synthetic background and the four signals, trains the quantized
AXOL1TL-style VAE (and, with ``full=True``, the ADC DNN autoencoder), converts it to an hls4ml
Vitis project and a da4ml Verilog project, calibrates a menu of working points on the emulated
firmware score, cross-checks every bit-exact stage on 1e5 events, measures latency (Verilator) and
resources (yosys) with the open tools, and writes ``metrics.json`` plus the report.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from trigger_ml.core.constants import RTL_MANIFEST_FILE
from trigger_ml.core.errors import ArtifactError

ZOO = Path(__file__).resolve().parents[1] / "models"


def _zoo_config(name: str):
    from trigger_ml.models.config import load_model_config

    return load_model_config(ZOO / f"{name}.yaml")


def run_demo(
    out: Path, *, n_background: int = 200_000, n_signal: int = 20_000, seed: int = 0, epochs: int = 5,
    n_train: int = 100_000, n_verify: int = 100_000, full: bool = False, measure: bool = True, force: bool = False,
    budget_s: float = 280.0, log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole pipeline into ``out``; returns the metrics written to ``out/metrics.json``."""
    from trigger_ml.core.metrics import signal_metrics
    from trigger_ml.data.synth import SIGNALS, generate_file
    from trigger_ml.firmware.convert import convert_run
    from trigger_ml.train import load_artifact, train
    from trigger_ml.trigger.run import FirmwareScorer, emulate
    from trigger_ml.verify import verify

    out = Path(out)
    if out.exists():
        if not force:
            raise ArtifactError(f"{out}: exists; pass --force to overwrite")
        shutil.rmtree(out)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str):
        t = time.perf_counter()
        return lambda: timings.__setitem__(name, round(time.perf_counter() - t, 1))

    # ---- data
    done = step("data")
    data = out / "data"
    data.mkdir(parents=True)
    bkg = generate_file(data / "background.h5", n_background, "background", seed)
    sigs = {s: generate_file(data / f"{s}.h5", n_signal, s, seed + 1 + i) for i, s in enumerate(SIGNALS)}
    done()
    log(f"[data] {n_background:,} background + 4 × {n_signal:,} signal events ({timings['data']} s)")

    # ---- train (first n_train background events; the rest is held out for rates/efficiencies)
    models = ["axol1tl-vae"] + (["adc-dnn-ae"] if full else [])
    runs = {}
    for name in models:
        done = step(f"train_{name}")
        cfg = _zoo_config(name)
        runs[name] = train(cfg, bkg, out / "runs" / name, epochs=epochs, max_events=n_train, seed=seed, log=log)
        done()
    main = models[0]
    run = runs[main]
    art = load_artifact(run)

    # ---- firmware: hls4ml (threshold calibrated to the Nominal working point) and da4ml Verilog
    done = step("convert_hls")
    hls = convert_run(run, out / "firmware" / "hls", rate_khz=5.0, tb_events=1000, log=log)
    done()
    done = step("convert_rtl")
    rtl = convert_run(run, out / "firmware" / "rtl", flavor="verilog", log=log)
    done()

    # ---- open-tool resource measurement runs in the background while we emulate and verify
    synth: dict[str, Any] = {}
    if measure:
        from trigger_ml.firmware.rtl import RTLProject
        from trigger_ml.reports.measure import synthesize

        proj = RTLProject.load(rtl["path"])

        synth_timeout = max(30.0, budget_s - (time.perf_counter() - t_start))

        def _synth() -> None:
            try:
                synth["result"] = synthesize(Path(rtl["path"]), proj.top, family="xcup", timeout_s=synth_timeout)
            except Exception as exc:  # noqa: BLE001 - reported in metrics, the demo goes on
                synth["error"] = f"{type(exc).__name__}: {exc}"

        th = threading.Thread(target=_synth, daemon=True)
        th.start()

    # ---- emulate the trigger on the held-out background and the signals
    done = step("emulate")
    held_out = data / "background_heldout.h5"
    _slice_events(bkg, held_out, n_train, n_background)
    menu = emulate(hls["path"], [held_out], list(sigs.values()), catalog=out / "catalog.h5")
    done()
    scorer = FirmwareScorer(hls["path"])
    from trigger_ml.data.adc2021 import read_events

    fw_b = scorer(read_events(held_out)) * scorer.lsb
    x_b = art.inputs_from_file(held_out)
    fl_model = art.float_model()
    fl_b = fl_model.predict(x_b, batch_size=16384, verbose=0).ravel()
    perf: dict[str, Any] = {}
    for s, path in sigs.items():
        fw_s = scorer(read_events(path)) * scorer.lsb
        fl_s = fl_model.predict(art.inputs_from_file(path), batch_size=16384, verbose=0).ravel()
        perf[s] = {"firmware": _short(signal_metrics(fw_b, fw_s, 5.0)), "float": _short(signal_metrics(fl_b, fl_s, 5.0))}

    # ---- bit-exact cross-check
    done = step("verify")
    ver = verify(run, held_out, hls_dir=Path(hls["path"]), rtl_dir=Path(rtl["path"]), n_events=n_verify, log=log)
    done()
    emu_rate = _emulator_throughput(scorer, held_out)

    # ---- latency (Verilator) and resources (yosys)
    done = step("latency")
    from trigger_ml.firmware.rtl import measure_latency_cycles

    cycles = measure_latency_cycles(rtl["path"])
    done()
    if measure:
        th.join()
    metrics: dict[str, Any] = {
        "model": main, "signals": perf,
        "auc": {s: {"float": v["float"]["auc"], "firmware": v["firmware"]["auc"]} for s, v in perf.items()},
        "tpr_at_fpr_1e-5": {s: {"float": v["float"]["tpr_at_fpr_1e-5"], "firmware": v["firmware"]["tpr_at_fpr_1e-5"]}
                            for s, v in perf.items()},
        "mismatches": {k: p["mismatches"] for k, p in ver["exact_pairs"].items()},
        "verify_events": ver["n_events"],
        "emulator_events_per_s": {"value": emu_rate, "source": "measured (trigger_ml emulator, this machine)"},
        "latency_cycles": {"value": cycles, "source": "measured (Verilator)", "da4ml_pipeline_depth": rtl["latency_cycles"]},
        "latency_ns": {"value": cycles * rtl["clock_ns"], "source": f"measured (Verilator) × {rtl['clock_ns']} ns clock"},
        "menu": {wp: {"threshold": r["threshold"]["value"], "rate_khz": r["threshold"]["rate_khz"],
                      "pure_rate_khz": r["pure_rate_khz"],
                      "efficiency": {s: r["signals"][s]["efficiency"] for s in r["signals"]}}
                 for wp, r in menu["working_points"].items()},
        "timings_s": timings,
    }
    if "result" in synth:
        r = synth["result"]
        for k in ("luts", "ffs", "dsps"):
            metrics[k] = {"value": getattr(r, k), "source": r.source}
    else:  # no measurement within the demo's time budget: da4ml's own estimate, labelled as such
        why = synth.get("error", "yosys not run (--no-measure)")
        man = json.loads((Path(rtl["path"]) / RTL_MANIFEST_FILE).read_text())
        est = {"luts": man.get("da4ml_cost"), "ffs": man.get("reg_bits"), "dsps": 0}
        for k, v in est.items():
            metrics[k] = {"value": v, "source": "estimated (da4ml)", "measurement": why.split(" (")[0][:200],
                          "how_to_measure": f"trigger-ml report {out} (yosys, cached afterwards)"}
    metrics["timings_s"]["total"] = round(time.perf_counter() - t_start, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "verify.json").write_text(json.dumps(ver, indent=2))
    (out / "menu.json").write_text(json.dumps(menu, indent=2))
    _try_report(out, log, measured="result" in synth)
    return metrics


def _short(m: dict) -> dict:
    return {"auc": m["auc"], "tpr_at_fpr_1e-5": m["tpr_at_fpr_1e-5"].get("tpr"),
            "tpr_at_fpr_1e-4": m["tpr_at_fpr_1e-4"].get("tpr"), "tpr_at_5khz": m.get("tpr_at_rate", {}).get("tpr")}


def _slice_events(src: Path, dst: Path, start: int, stop: int) -> None:
    from trigger_ml.data.adc2021 import EventsWriter, iter_chunks

    with EventsWriter(dst) as w:
        for ev in iter_chunks(src, start=start, stop=stop):
            w.append(ev)


def _emulator_throughput(scorer, path: Path) -> int:
    from trigger_ml.data.adc2021 import read_events

    emu, pre, *_ = scorer._load()
    x = pre.transform(read_events(path)).astype(np.float32)
    x = np.concatenate([x] * max(1, 1_000_000 // len(x)))
    emu.predict(x[:10_000])  # warm-up (JIT)
    t = time.perf_counter()
    emu.predict(x)
    return int(len(x) / (time.perf_counter() - t))


def _try_report(out: Path, log: Callable[[str], None], measured: bool) -> None:
    from trigger_ml.reports.collect import collect_report
    from trigger_ml.reports.render import write_report

    rep = collect_report(out, signals=sorted((out / "data").glob("[!b]*.h5")), background=out / "data" / "background_heldout.h5",
                         measure=measured, max_events=20_000)
    write_report(rep, out / "report", force=True)
    log(f"[report] {out / 'report' / 'report.html'}")
