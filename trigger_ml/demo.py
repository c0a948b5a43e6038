"""The end-to-end demo on the embedded synthetic dataset: data → train → firmware → emulate → verify → report.

``run_demo(out)`` generates the synthetic background and the four signals, trains the quantized
AXOL1TL-style VAE (and, with ``full=True``, the ADC DNN autoencoder), converts it to an hls4ml
Vitis project and a da4ml Verilog project, calibrates a menu of working points on the emulated
firmware score, cross-checks every bit-exact stage on 1e5 events, measures latency (Verilator) and
resources (yosys) with the open tools, and writes ``metrics.json`` plus the report.

Honest statistics: the background file holds ``n_train`` training events plus 10^6 held-out ones,
so a TPR at FPR 1e-5 rests on the 10/FPR = 10^6 independent background events it needs (all
models, float / quantized Keras and the bit-exact firmware, are scored on all of them: the HGQ2
Keras model scores ~1.5e5 events/s on one core, so this costs ~10 s). Beside the model: the
HT / MET / lepton- and object-count baselines on the same events, the per-process composition
of the background tail at each working point, and with ``seeds > 1`` the mean ± std over
training seeds (with one seed ``metrics.json`` says that the spread is not measured).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from trigger_ml.core.constants import RTL_MANIFEST_FILE
from trigger_ml.core.errors import ArtifactError, ConfigError

ZOO = Path(__file__).resolve().parents[1] / "models"
#: the stage name in a demo output's manifest.json
STAGE = "demo"
#: the demo's working point: the firmware threshold and the TPR column of metrics/report
RATE_KHZ = 5.0
#: the latency budget of an L1 algorithm in the CMS Global Trigger: 2 bunch crossings
BUDGET_NS = 50.0
#: the uGT boards' clock: the RTL design is searched at this clock (convert --budget-ns 50 --clock-mhz 240)
CLOCK_MHZ = 240.0
#: held-out background events of the full demo: 10 / FPR for a TPR at FPR 1e-5
N_HELD_OUT = 1_000_000


def _zoo_config(name: str):
    from trigger_ml.models.config import load_model_config

    return load_model_config(ZOO / f"{name}.yaml")


def run_demo(
    out: Path, *, n_background: int = N_HELD_OUT + 100_000, n_signal: int = 20_000, seed: int = 0, epochs: int = 5,
    n_train: int = 100_000, n_verify: int = 100_000, full: bool = False, measure: bool = True, force: bool = False,
    budget_s: float = 280.0, seeds: int = 1, log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole pipeline into ``out``; returns the metrics written to ``out/metrics.json``.

    The flagship model is trained with ``seeds`` training seeds (``seed``, ``seed + 1``, ...;
    ``runs/axol1tl-vae/seed<i>`` when more than one); the firmware is built from the first, and
    the metrics carry the mean ± std over all of them."""
    if seeds < 1:
        raise ConfigError(f"seeds must be at least 1, got {seeds!r}")
    from trigger_ml.core.artifacts import check_output, replace_dir_in_place

    # replaces only a previous demo output (with force), never a user's folder or another stage's output;
    # the old demo is kept aside until the new one is complete, and restored if this run fails or is interrupted
    out = check_output(out, [], STAGE, force)
    with replace_dir_in_place(out, force=force, stage=STAGE):
        return _run_demo(out, n_background=n_background, n_signal=n_signal, seed=seed, epochs=epochs, n_train=n_train,
                         n_verify=n_verify, full=full, measure=measure, budget_s=budget_s, seeds=seeds, log=log)


def _run_demo(out: Path, *, n_background: int, n_signal: int, seed: int, epochs: int, n_train: int, n_verify: int,
              full: bool, measure: bool, budget_s: float, seeds: int, log: Callable[[str], None]) -> dict[str, Any]:
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
    seed_runs: list[Path] = []
    for name in models:
        done = step(f"train_{name}")
        cfg = _zoo_config(name)
        k = seeds if name == models[0] else 1
        if k == 1:
            runs[name] = train(cfg, bkg, out / "runs" / name, epochs=epochs, max_events=n_train, seed=seed, log=log)
        else:  # the layout of `trigger-ml train --seeds k`: runs/<model>/seed0..k-1
            (out / "runs" / name).mkdir()
            seed_runs = [train(cfg, bkg, out / "runs" / name / f"seed{i}", epochs=epochs, max_events=n_train,
                               seed=seed + i, log=log) for i in range(k)]
            runs[name] = seed_runs[0]
        done()
    main = models[0]
    run = runs[main]

    # ---- firmware: hls4ml (threshold calibrated to the Nominal working point) and da4ml Verilog
    done = step("convert_hls")
    hls = convert_run(run, out / "firmware" / "hls", rate_khz=RATE_KHZ, tb_events=1000, log=log)
    done()
    done = step("convert_rtl")
    # the cheapest alkaid design meeting 2 BX at 240 MHz (depth measured in Verilator by convert)
    rtl = convert_run(run, out / "firmware" / "rtl", flavor="verilog", budget_ns=BUDGET_NS, clocks_mhz=(CLOCK_MHZ,),
                      log=log)
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
        wps = {wp: r["threshold"]["value"] for wp, r in menu["working_points"].items() if r["threshold"] is not None}
        phys = trigger_metrics(run, Path(hls["path"]), list(sigs.values()), bkg, None, RATE_KHZ, working_points=wps,
                               ensemble=[Path(r) for r in seed_runs[1:]])
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
            "latency_ns": {"value": round(cycles * rtl["clock_ns"], 4),
                           "source": f"measured (Verilator) × {rtl['clock_ns']:.4g} ns clock ({rtl['clock_mhz']:g} MHz)"},
            "statistics": _statistics(phys),
            "baselines": {s: {k: _short(v) for k, v in b.items()} for s, b in phys["baselines"].items()},
            "tail_composition": _tail_summary(phys["tail_composition"]),
            "seed_spread": _seed_spread(phys["ensemble"], seeds),
            "menu": {wp: ({"threshold": r["threshold"]["value"], "rate_khz": r["threshold"]["rate_khz"],
                           "pure_rate_khz": r["pure_rate_khz"],
                           "efficiency": {s: r["signals"][s]["efficiency"] for s in r["signals"]}}
                          if r["threshold"] is not None else {"error": r["error"]})
                     for wp, r in menu["working_points"].items()},
            "timings_s": timings,
        }
        metrics["latency_budget"] = _budget_verdict(rtl, cycles)
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
        metrics["latency_budget"]["resources"] = {k: metrics[k] for k in ("luts", "ffs", "dsps")}
        metrics["timings_s"]["total"] = round(time.perf_counter() - t_start, 1)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (out / "verify.json").write_text(json.dumps(ver, indent=2))
        (out / "menu.json").write_text(json.dumps(menu, indent=2))
        _try_report(out, log, phys)
        write_manifest(out, STAGE, inputs={}, seed=seed, figures={"timings_s": metrics["timings_s"]},
                       config={"n_background": n_background, "n_signal": n_signal, "epochs": epochs, "n_train": n_train,
                               "n_verify": n_verify, "full": full, "measure": measure, "seeds": seeds})  # marks a (complete) demo output
    except BaseException:
        cancel.set()  # stop Yosys in the measuring thread (its temporaries go with it) before the partial demo is removed
        if measure:
            th.join(timeout=30)
        raise
    return metrics


def _budget_verdict(rtl: dict[str, Any], cycles: int) -> dict[str, Any]:
    """The demo's latency verdict: the measured pipeline depth × clock against 2 BX, and how it was met."""
    from trigger_ml.reports.budget import build_budget_profile

    prof = build_budget_profile([("pipeline (alkaid RTL)", cycles, "measured (Verilator)")], rtl["clock_ns"], 1,
                                budget_ns=BUDGET_NS)
    chosen = rtl["budget_search"]["chosen"]
    return {"verdict": "PASS" if prof.passed else "FAIL", "budget_ns": BUDGET_NS, "budget_bx": prof.budget_bx,
            "latency_ns": prof.total_ns, "latency_cycles": cycles, "slack_ns": prof.slack_ns,
            "source": f"measured (Verilator) × {rtl['clock_ns']:.4g} ns clock",
            "clock_mhz": rtl["clock_mhz"], "stages": cycles, "delay_constraint": rtl["delay_constraint"],
            "pipelining": chosen["split"],
            "worst_stage_ns": {"value": chosen["worst_stage_ns_estimate"],
                               "source": "estimated (trigger_ml UltraScale+ delay model); only Vivado timing closure "
                                         f"confirms {rtl['clock_mhz']:g} MHz"},
            "alkaid_estimate": {"luts": chosen["luts_estimate"], "ffs": chosen["ffs_estimate"]},
            "how": "convert --flavor verilog --budget-ns 50 --clock-mhz 240: cheapest of "
                   f"{len(rtl['budget_search']['candidates'])} searched designs (rtl_manifest.json budget_search)"}


def _short(m: dict) -> dict:
    out = {"auc": m["auc"], "tpr_at_fpr_1e-5": m["tpr_at_fpr_1e-5"].get("tpr"),
           "tpr_at_fpr_1e-4": m["tpr_at_fpr_1e-4"].get("tpr"), "tpr_at_5khz": m.get("tpr_at_rate", {}).get("tpr")}
    for k, src in (("tpr_at_fpr_1e-5", "tpr_at_fpr_1e-5"), ("tpr_at_fpr_1e-4", "tpr_at_fpr_1e-4"),
                   ("tpr_at_5khz", "tpr_at_rate")):
        d = m.get(src) or {}
        if d.get("tpr") is None:
            out[f"{k}_reason"] = d.get("reason")
        elif d.get("tpr_interval_68_bootstrap"):
            out[f"{k}_interval_68"] = d["tpr_interval_68_bootstrap"]
    return out


def _statistics(phys: dict[str, Any]) -> dict[str, Any]:
    """What the TPRs of metrics.json rest on: the number of held-out background events, the 10/FPR rule,
    the interval method, and per FPR whether it is quoted (and why not)."""
    from trigger_ml.core.metrics import background_shortfall

    n = phys["n_background"]
    quoted = {}
    for name, fpr in (("1e-5", 1e-5), ("1e-4", 1e-4), (f"{RATE_KHZ:g} kHz", RATE_KHZ * 1e3 / phys["bx_rate_hz"])):
        why = background_shortfall(n, fpr)
        quoted[name] = {"quoted": why is None, **({"reason": why} if why else {})}
    return {"n_background": n, "background": phys["background"], **phys["statistics"], "fpr": quoted}


def _tail_summary(tc: dict[str, Any]) -> dict[str, Any]:
    """The firmware's tail composition per working point: process -> fraction of the events above."""
    if tc.get("status") != "ok":
        return {"status": "absent", "reason": tc.get("reason")}
    rows = tc["models"].get("firmware") or next(iter(tc["models"].values()))
    return {wp: ({"threshold": r["threshold"], "rule": r["rule"], "n_above": r["n_above"],
                  "fraction_of_tail": {p["process"]: p["fraction_of_tail"] for p in r["processes"] if p["n_above"]}}
                 if r.get("threshold") is not None else {"reason": r.get("reason")}) for wp, r in rows.items()}


def _seed_spread(ens: dict[str, Any], seeds: int) -> dict[str, Any]:
    """Mean ± std over training seeds (AUC, TPRs) of the float and quantized models, or why not measured."""
    if ens.get("status") != "ok":
        return {"n_seeds": seeds, "measured": False,
                "reason": f"{seeds} training seed: the seed-to-seed spread is not measured (run the demo with --seeds k, "
                          "k >= 2)" if seeds == 1 else ens.get("reason")}
    return {"n_seeds": ens["n_runs"], "measured": True, "runs": ens["runs"], "signals": ens["signals"],
            "note": ens.get("note")}


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


def _try_report(out: Path, log: Callable[[str], None], phys: dict[str, Any]) -> None:
    from trigger_ml.reports.collect import collect_report
    from trigger_ml.reports.render import write_report

    # the physics section is the one metrics.json was made from (same function, inputs and events): not scored twice
    rep = collect_report(out, signals=sorted((out / "data").glob("[!b]*.h5")), background=out / "data" / "background.h5",
                         max_events=None, target_rate_khz=RATE_KHZ, metrics=phys)
    write_report(rep, out / "report", force=True)
    log(f"[report] {out / 'report' / 'report.html'}")
