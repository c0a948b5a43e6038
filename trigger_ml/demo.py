"""The end-to-end demo on the embedded synthetic dataset: data → train → firmware → emulate → verify → report.

``run_demo(out)`` generates the synthetic background and the four signals, trains the quantized
AXOL1TL-style VAE (and, with ``full=True``, the ADC DNN autoencoder), converts it to an hls4ml
Vitis project and a da4ml Verilog project, calibrates a menu of working points on the emulated
firmware score, cross-checks every bit-exact stage on 1e5 events, measures latency (Verilator) and
resources (yosys) with the open tools, and writes ``metrics.json`` plus the report.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from trigger_ml.core.constants import RTL_MANIFEST_FILE
from trigger_ml.core.errors import ArtifactError

ZOO = Path(__file__).resolve().parents[1] / "models"
#: the stage name in a demo output's manifest.json
STAGE = "demo"
#: the demo's working point: the firmware threshold and the TPR column of metrics/report
RATE_KHZ = 5.0


def _zoo_config(name: str):
    from trigger_ml.models.config import load_model_config

    return load_model_config(ZOO / f"{name}.yaml")


def run_demo(
    out: Path, *, n_background: int = 200_000, n_signal: int = 20_000, seed: int = 0, epochs: int = 5,
    n_train: int = 100_000, n_verify: int = 100_000, full: bool = False, measure: bool = True, force: bool = False,
    budget_s: float = 280.0, log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole pipeline into ``out``; returns the metrics written to ``out/metrics.json``."""
    from trigger_ml.core.artifacts import check_output, replace_dir_in_place

    # replaces only a previous demo output (with force), never a user's folder or another stage's output;
    # the old demo is kept aside until the new one is complete, and restored if this run fails or is interrupted
    out = check_output(out, [], STAGE, force)
    with replace_dir_in_place(out, force=force, stage=STAGE):
        return _run_demo(out, n_background=n_background, n_signal=n_signal, seed=seed, epochs=epochs, n_train=n_train,
                         n_verify=n_verify, full=full, measure=measure, budget_s=budget_s, log=log)


def _run_demo(out: Path, *, n_background: int, n_signal: int, seed: int, epochs: int, n_train: int, n_verify: int,
              full: bool, measure: bool, budget_s: float, log: Callable[[str], None]) -> dict[str, Any]:
    from trigger_ml.core.artifacts import write_manifest
    from trigger_ml.data.synth import SIGNALS, generate_file
    from trigger_ml.reports.collect import trigger_metrics
    from trigger_ml.firmware.convert import convert_run
    from trigger_ml.scoring import FirmwareScorer
    from trigger_ml.train import train
    from trigger_ml.trigger.run import emulate
    from trigger_ml.verify import verify

    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str):
        t = time.perf_counter()
        return lambda: timings.__setitem__(name, round(time.perf_counter() - t, 1))

    # ---- data
    done = step("data")
    data = out / "data"
    for sub in (data, out / "runs", out / "firmware"):  # stage outputs never create their parent directories
        sub.mkdir()
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

    # ---- firmware: hls4ml (threshold calibrated to the Nominal working point) and da4ml Verilog
    done = step("convert_hls")
    hls = convert_run(run, out / "firmware" / "hls", rate_khz=RATE_KHZ, tb_events=1000, log=log)
    done()
    done = step("convert_rtl")
    rtl = convert_run(run, out / "firmware" / "rtl", flavor="verilog", log=log)
    done()

    # ---- open-tool resource measurement (the measure stage) runs in the background while we emulate
    #      and verify; it records the figures in firmware/rtl/measurements.json, which the report reads
    from trigger_ml.measure import measure as measure_stage

    synth: dict[str, Any] = {}
    cancel = threading.Event()  # set when the demo fails or is interrupted: Yosys is stopped, its temporaries removed

    def _cancelled(*_a: Any) -> None:
        if cancel.is_set():
            raise ArtifactError("demo interrupted: resource measurement cancelled")

    if measure:
        synth_timeout = max(30.0, budget_s - (time.perf_counter() - t_start))

        def _synth() -> None:
            try:
                synth["result"] = measure_stage(rtl["path"], what=("resources",), timeout_s=synth_timeout,
                                                progress=_cancelled)["resources"]
            except Exception as exc:  # noqa: BLE001 - reported in metrics, the demo goes on
                synth["error"] = f"{type(exc).__name__}: {exc}"

        th = threading.Thread(target=_synth, daemon=True)
        th.start()

    try:
        # ---- emulate the trigger on the held-out background and the signals (the held-out rule picks
        #      the background events after the n_train that training read; every stage uses the same)
        done = step("emulate")
        menu = emulate(hls["path"], [bkg], list(sigs.values()), catalog=out / "catalog.h5")
        done()
        done = step("physics")
        phys = trigger_metrics(run, Path(hls["path"]), list(sigs.values()), bkg, None, RATE_KHZ)
        perf = {s: {k: _short(v) for k, v in m.items() if k in ("float", "quantized", "firmware")}
                for s, m in phys["signals"].items()}
        done()

        # ---- bit-exact cross-check
        done = step("verify")
        ver = verify(run, bkg, hls_dir=Path(hls["path"]), rtl_dir=Path(rtl["path"]), n_events=n_verify, log=log)
        done()
        emu_rate = _emulator_throughput(FirmwareScorer(hls["path"]), bkg)

        # ---- latency (Verilator) and resources (yosys)
        done = step("latency")
        lat = measure_stage(rtl["path"], what=("latency",))["latency"]
        if lat["status"] != "measured":
            raise ArtifactError(f"{rtl['path']}: latency {lat['source']}")
        cycles = lat["figures"]["latency_cycles"]["value"]
        done()
        if measure:
            th.join()
        metrics: dict[str, Any] = {
            "model": main, "background": phys["background"], "n_background": phys["n_background"],
            "target_rate_khz": RATE_KHZ, "signals": perf,
            "auc": {s: {"float": v["float"]["auc"], "firmware": v["firmware"]["auc"]} for s, v in perf.items()},
            "tpr_at_fpr_1e-5": {s: {"float": v["float"]["tpr_at_fpr_1e-5"], "firmware": v["firmware"]["tpr_at_fpr_1e-5"]}
                                for s, v in perf.items()},
            "mismatches": {k: p["mismatches"] for k, p in ver["exact_pairs"].items()}
            | ({"trigger_bit:emulator:csim": ver["trigger_bit"]["mismatches"]} if ver.get("trigger_bit") else {}),
            "verify_events": ver["n_events"],
            "emulator_events_per_s": {"value": emu_rate, "source": "measured (trigger_ml emulator, this machine)"},
            "latency_cycles": {"value": cycles, "source": "measured (Verilator)", "hdl_pipeline_depth": rtl["latency_cycles"]},
            "latency_ns": {"value": cycles * rtl["clock_ns"], "source": f"measured (Verilator) × {rtl['clock_ns']} ns clock"},
            "menu": {wp: ({"threshold": r["threshold"]["value"], "rate_khz": r["threshold"]["rate_khz"],
                           "pure_rate_khz": r["pure_rate_khz"],
                           "efficiency": {s: r["signals"][s]["efficiency"] for s in r["signals"]}}
                          if r["threshold"] is not None else {"error": r["error"]})
                     for wp, r in menu["working_points"].items()},
            "timings_s": timings,
        }
        r = synth.get("result") or {}
        if r.get("status") == "measured":
            for k, fig in (("luts", "LUT"), ("ffs", "FF"), ("dsps", "DSP")):
                metrics[k] = {"value": r["figures"][fig]["value"], "source": r["source"]}
        else:  # no measurement within the demo's time budget: da4ml's own estimate, labelled as such
            why = r.get("reason") or synth.get("error", "yosys not run (--no-measure)")
            man = json.loads((Path(rtl["path"]) / RTL_MANIFEST_FILE).read_text())
            est = {"luts": man.get("da4ml_cost"), "ffs": man.get("reg_bits"), "dsps": 0}
            for k, v in est.items():
                metrics[k] = {"value": v, "source": "estimated (alkaid)", "measurement": why.split(" (")[0][:200],
                              "how_to_measure": f"trigger-ml measure {rtl['path']} (yosys, cached afterwards)"}
        metrics["timings_s"]["total"] = round(time.perf_counter() - t_start, 1)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (out / "verify.json").write_text(json.dumps(ver, indent=2))
        (out / "menu.json").write_text(json.dumps(menu, indent=2))
        _try_report(out, log)
        write_manifest(out, STAGE, inputs={}, seed=seed, figures={"timings_s": metrics["timings_s"]},
                       config={"n_background": n_background, "n_signal": n_signal, "epochs": epochs, "n_train": n_train,
                               "n_verify": n_verify, "full": full, "measure": measure})  # marks a (complete) demo output
    except BaseException:
        cancel.set()  # stop Yosys in the measuring thread (its temporaries go with it) before the partial demo is removed
        if measure:
            th.join(timeout=30)
        raise
    return metrics


def _short(m: dict) -> dict:
    return {"auc": m["auc"], "tpr_at_fpr_1e-5": m["tpr_at_fpr_1e-5"].get("tpr"),
            "tpr_at_fpr_1e-4": m["tpr_at_fpr_1e-4"].get("tpr"), "tpr_at_5khz": m.get("tpr_at_rate", {}).get("tpr")}


def _emulator_throughput(scorer, path: Path) -> int:
    from trigger_ml.data.adc2021 import read_events

    st = scorer._load()
    emu, pre = st["emu"], st["pre"]
    x = pre.transform(read_events(path, stop=100_000)).astype(np.float32)
    x = np.concatenate([x] * max(1, 1_000_000 // len(x)))
    emu.predict(x[:10_000])  # warm-up (JIT)
    t = time.perf_counter()
    emu.predict(x)
    return int(len(x) / (time.perf_counter() - t))


def _try_report(out: Path, log: Callable[[str], None]) -> None:
    from trigger_ml.reports.collect import collect_report
    from trigger_ml.reports.render import write_report

    rep = collect_report(out, signals=sorted((out / "data").glob("[!b]*.h5")), background=out / "data" / "background.h5",
                         max_events=None, target_rate_khz=RATE_KHZ)
    write_report(rep, out / "report", force=True)
    log(f"[report] {out / 'report' / 'report.html'}")
