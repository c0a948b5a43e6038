"""Stage ``convert``: a trained model artifact → firmware project (hls4ml HLS or da4ml/alkaid RTL).

Every firmware directory also carries what the downstream stages need without TensorFlow:
``firmware_model.json`` (the FirmwareModel IR built from the converted hls4ml graph — HLS flavour,
with the score output and the threshold the trigger wrapper was built with), ``preprocessing.json``
and ``input_info.json`` (events → firmware inputs), and ``source_run.json`` (the artifact it came
from, with the model file hash). All of them appear in the same atomic rename as the project
itself (both flavours).

What to build is one :class:`~trigger_ml.firmware.spec.FirmwareSpec`. A threshold is a score value
(``threshold``) or a target rate (``rate_khz``); a rate is calibrated on the model's held-out
background (:func:`trigger_ml.train.held_out_background`) with the firmware's own integer scores
(the bit-exact emulator of the converted graph) by :func:`trigger_ml.core.threshold.calibrate_threshold`,
so the wrapper, the IR and every later stage use the same integer.

A latency budget (``FirmwareSpec.budget_ns``; CLI ``--budget-ns`` / ``--budget-bx``, optionally
``--clock-mhz``) is an RTL-flavour feature: :mod:`trigger_ml.firmware.rtl.search` picks the cheapest
alkaid design whose latency (pipeline depth × clock) meets it and whose stages fit the clock by the
ns delay model (:mod:`trigger_ml.firmware.timing`, an estimate); the written design's depth is then
measured in Verilator inside the atomic write and the project is refused (nothing replaced) if it
misses the budget.  The whole search is recorded in ``rtl_manifest.json`` (``budget_search``).  No
design meeting the budget: a one-line refusal naming the closest design.  The hls flavour refuses a
budget (its depth would only be an estimate; use ``trigger-ml report --budget-ns``).
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from trigger_ml.core.artifacts import check_output, read_json_or_none, sha256_file
from trigger_ml.core.constants import (
    INPUT_INFO_FILE,
    IR_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    PREPROCESSING_FILE,
    SOURCE_RUN_FILE,
)
from trigger_ml.core.errors import ArtifactError, ConfigError
from trigger_ml.core.fixed import FixedType
from trigger_ml.core.threshold import Threshold, calibrate_threshold
from trigger_ml.firmware.spec import FLAVORS, FirmwareSpec
from trigger_ml.train import training_data_path

__all__ = ["FLAVORS", "FirmwareSpec", "convert_run", "FIRMWARE_STAGES"]

#: what `convert --force` may replace: an earlier firmware project of either flavour
FIRMWARE_STAGES = ("firmware.hls", "firmware.rtl")


def _copy_run_files(run: Path, out: Path, model_sha: str) -> None:
    for f in (PREPROCESSING_FILE, INPUT_INFO_FILE):
        shutil.copy2(run / f, out / f)
    (out / SOURCE_RUN_FILE).write_text(json.dumps({"run": str(run.resolve()), "model_sha256": model_sha}))


def _ir_score(fm, flat: int) -> tuple[str, int]:
    """(IR output name, index) of the flat output index ``flat``."""
    off = 0
    for o in fm.outputs:
        if flat < off + o.size:
            return o.name, flat - off
        off += o.size
    raise ArtifactError(f"score index {flat} beyond the {off} output values of the firmware")


def _rate_calibration(art, spec: FirmwareSpec, data: Path | None, graph_ir: Callable, log: Callable[[str], None]):
    """(ModelGraph, score type, flat score index) → Threshold at ``spec.rate_khz``, from the
    firmware's integer scores (the emulator of the converted graph's IR, ``graph_ir(ModelGraph)``)."""
    from trigger_ml.emulate import Emulator

    def calibrate(hls_model, score_t: FixedType, flat: int) -> Threshold:
        ho = art.held_out(data, spec.calibration_events)
        fm = graph_ir(hls_model)
        name, idx = _ir_score(fm, flat)
        emu = Emulator(fm.with_score(name, idx))
        raws = []
        for a in range(ho.start, ho.stop, 262_144):
            x = art.inputs_from_file(ho.path, start=a, stop=min(a + 262_144, ho.stop))
            raws.append(emu.score_raw(x))
        thr = calibrate_threshold(np.concatenate(raws), score_t, spec.rate_khz, spec.bx_rate_hz)
        log(f"threshold for {spec.rate_khz:g} kHz at {spec.bx_rate_hz / 1e6:g} MHz: score > {thr.value:.6g} "
            f"(raw {thr.raw}; {thr.n_pass} of {thr.n_total:,} held-out background events fire: {ho.note})")
        return thr

    return calibrate


def convert_run(
    run: str | Path,
    out: str | Path,
    spec: FirmwareSpec | None = None,
    *,
    data: str | Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
    **knobs: Any,
) -> dict[str, Any]:
    """Convert the model artifact ``run`` into a firmware project at ``out``; return a summary dict.

    ``spec`` says what to build (or give its fields as keyword arguments: ``flavor='verilog'``,
    ``rate_khz=5``, ...). ``data``: background events for the rate calibration (default: the
    training file, held-out part) and the test vectors."""
    from trigger_ml.train import load_artifact

    if spec is None:
        spec = FirmwareSpec.make(**knobs)
    elif knobs:
        spec = FirmwareSpec.make(**(spec.model_dump() | knobs))
    run, out = Path(run), Path(out)
    data = Path(data) if data else None
    train_data = training_data_path(read_json_or_none(run / MANIFEST_FILE) or {})
    # before any work: never over the run / the data (e.g. `convert RUN --out RUN --force`), only over
    # an earlier firmware project (either flavour)
    check_output(out, [run, data, train_data], FIRMWARE_STAGES, force)
    art = load_artifact(run)
    model_sha = sha256_file(run / MODEL_FILE)
    t0 = time.perf_counter()
    if spec.budget_ns is not None and spec.flavor == "hls":
        raise ConfigError(f"a latency budget (--budget-ns/--budget-bx {spec.budget_ns:g} ns) needs --flavor verilog: "
                          "only the RTL flavour's pipeline depth is measured (Verilator); for an hls4ml project "
                          "compare its latency with `trigger-ml report --budget-ns` (C-synthesis or labelled estimate)")
    if spec.flavor == "hls":
        return _convert_hls(run, out, spec, art, data, model_sha, force, log, t0)
    if spec.has_trigger:
        raise ConfigError(f"the {spec.flavor} flavour has no trigger-bit wrapper; convert without --threshold/"
                          "--rate-khz (working points come from `trigger-ml emulate` on the RTL directory)")
    from trigger_ml.firmware import rtl

    if spec.budget_ns is not None:
        return _convert_rtl_budget(run, out, spec, art, model_sha, force, log, t0)
    proj = rtl.build_rtl(art.model, out, flavor=spec.flavor, latency_cutoff=spec.latency_cutoff,
                         clock_ns=spec.clock_ns, force=force, delay_constraint=spec.delay_constraint,
                         finalize=lambda tmp: _copy_run_files(run, tmp, model_sha))  # same atomic rename
    t_conv = time.perf_counter() - t0
    log(f"wrote {spec.flavor} RTL project {out}: pipeline depth {proj.latency_cycles} cycles at {spec.clock_ns} ns "
        f"({t_conv:.1f} s)")
    return {"flavor": spec.flavor, "path": str(out), "latency_cycles": proj.latency_cycles, "clock_ns": spec.clock_ns,
            "latency_cutoff": spec.latency_cutoff, "seconds": round(t_conv, 2), "threshold": None,
            "spec": spec.model_dump()}


def _convert_rtl_budget(run, out, spec, art, model_sha, force, log, t0) -> dict[str, Any]:
    """RTL flavour with a latency budget: search (delay constraint × clock × pipelining) for the cheapest
    design that meets ``spec.budget_ns`` (:mod:`trigger_ml.firmware.rtl.search`), write it, and accept it
    only when its pipeline depth measured in Verilator × clock still meets the budget.  Refusals happen
    before anything is renamed into ``out``: an existing output is kept."""
    from trigger_ml.firmware import rtl
    from trigger_ml.firmware.rtl import search as rsearch

    res = rsearch.search(lambda dc: rtl.trace_comb(art.model, delay_constraint=dc), spec.budget_ns,
                         clocks_mhz=spec.clocks_mhz, log=log)
    best = res.chosen
    if best is None:
        raise ConfigError(res.refusal())
    log(f"[budget] chosen ({rsearch.COST_RULE}): {best.describe()}")
    measured: dict[str, Any] = {}

    def finalize(tmp: Path) -> None:
        """Inside the atomic directory: measure the depth in Verilator; refuse if it breaks the budget."""
        cycles = int(rtl.measure_latency_cycles(rtl.RTLProject.load(tmp)))
        lat_ns = cycles * best.clock_ns
        measured.update(cycles=cycles, ns=lat_ns)
        if cycles != best.n_stages or lat_ns > spec.budget_ns + 1e-9:
            raise ConfigError(f"the chosen design's pipeline depth measured in Verilator is {cycles} cycles = {lat_ns:.1f} ns "
                              f"(search: {best.n_stages}; budget {spec.budget_ns:g} ns); nothing was written")
        man = json.loads((tmp / rtl.MANIFEST_NAME).read_text())
        man["budget_search"] = res.to_json() | {"measured": {
            "latency_cycles": cycles, "latency_ns": round(lat_ns, 4), "source": "measured (Verilator)",
            "meets_budget": True}}
        rtl._write_manifest(tmp / rtl.MANIFEST_NAME, man)
        _copy_run_files(run, tmp, model_sha)

    proj = rtl.build_rtl_from_comb(res.graph(best), out, flavor=spec.flavor, n_stages=best.n_stages,
                                   latency_cutoff=1.0, clock_ns=best.clock_ns, force=force, ternary_fuse=False,
                                   extra_manifest={"keras_model": art.model.name, "delay_constraint": best.delay_constraint,
                                                   "pipelining": best.split},
                                   finalize=finalize)
    t_conv = time.perf_counter() - t0
    log(f"wrote {spec.flavor} RTL project {out}: {measured['cycles']} stages measured in Verilator × "
        f"{best.clock_ns:.4g} ns ({best.clock_mhz:g} MHz) = {measured['ns']:.1f} ns <= budget {spec.budget_ns:g} ns; "
        f"~{best.luts:,.0f} LUT + {best.ffs:,} FF (alkaid estimate); stage delays are estimates, only Vivado "
        f"timing closure confirms {best.clock_mhz:g} MHz ({t_conv:.1f} s)")
    return {"flavor": spec.flavor, "path": str(out), "latency_cycles": proj.latency_cycles, "clock_ns": best.clock_ns,
            "clock_mhz": best.clock_mhz, "latency_ns": measured["ns"], "latency_source": "measured (Verilator)",
            "budget_ns": spec.budget_ns, "delay_constraint": best.delay_constraint, "latency_cutoff": None,
            "luts_estimate": best.luts, "ffs_estimate": best.ffs, "worst_stage_ns_estimate": best.worst_stage_ns,
            "seconds": round(t_conv, 2), "threshold": None, "budget_search": res.to_json(),
            "spec": spec.model_dump()}


def _convert_hls(run, out, spec, art, data, model_sha, force, log, t0) -> dict[str, Any]:
    from trigger_ml import ir
    from trigger_ml.emulate import Emulator
    from trigger_ml.firmware import hls

    tb_src = data or training_data_path(art.manifest)
    if art.config.kind != "classifier":
        x_tb = art.inputs_from_file(tb_src, stop=spec.tb_events)
    else:
        from trigger_ml.data.jets import load_jets
        from trigger_ml.train import model_inputs

        x_tb = model_inputs(art.config, art.preprocessing, art.input_info, load_jets(tb_src)[0][:spec.tb_events])
    # the IR of the converted graph, built once: the rate calibration and the project's IR share it
    graph_ir = functools.cache(ir.from_hls_model)
    if spec.rate_khz is not None:
        threshold = _rate_calibration(art, spec, data, graph_ir, log)
    else:
        threshold = spec.threshold
    checked: dict[str, Any] = {}

    def finalize(tmp: Path, hls_model, thr: dict | None) -> None:
        """Inside the atomic directory: the IR (score + threshold), the emulator check, run files."""
        fm = graph_ir(hls_model)
        if thr is not None:
            name, idx = _ir_score(fm, int(thr["score_flat_index"]))
            fm = fm.with_score(name, idx, int(thr["raw"]))
        elif sum(o.size for o in fm.outputs) == 1:
            fm = fm.with_score(fm.outputs[0].name, 0)
        fm.save(tmp / IR_FILE)
        # the emulator must reproduce the C-simulation test vectors written into the project
        expected = hls.read_tb_file(tmp / "tb_data" / "tb_output_predictions.dat")
        got = np.asarray(Emulator(fm).predict(x_tb), np.float64).reshape(expected.shape)
        n_bad = int((got != expected).sum())
        if n_bad:
            raise ArtifactError(f"{out}: emulator differs from the C-simulation on {n_bad} test-vector values; "
                                f"run `trigger-ml verify` to localize the mismatch")
        _copy_run_files(run, tmp, model_sha)
        checked["mismatches"] = n_bad

    project, _ = hls.convert(
        run / MODEL_FILE, out, backend=spec.backend, part=spec.part, clock_ns=spec.clock_ns, strategy=spec.strategy,
        reuse_factor=spec.reuse_factor, threshold=threshold, score_output=spec.score_output, tb_inputs=x_tb,
        force=force, finalize=finalize,
    )
    t_conv = time.perf_counter() - t0
    log(f"wrote hls4ml {project.backend} project {out} ({t_conv:.1f} s incl. C-sim build; "
        f"emulator == C-sim on {len(x_tb)} test vectors)")
    return {"flavor": "hls", "path": str(out), "backend": project.backend, "part": project.part,
            "clock_ns": spec.clock_ns, "threshold": project.threshold, "seconds": round(t_conv, 2),
            "tb_events": len(x_tb), "tb_emulator_mismatches": checked.get("mismatches"), "spec": spec.model_dump()}
