"""Stage ``convert``: a trained model artifact → firmware project (hls4ml HLS or da4ml RTL).

Every firmware directory also carries what the downstream stages need without TensorFlow:
``firmware_model.json`` (the FirmwareModel IR built from the converted hls4ml graph — HLS flavour),
``preprocessing.json`` and ``input_info.json`` (events → firmware inputs), and ``source_run.json``
(the artifact it came from, with the model file hash).

A threshold can be given as a score value (``threshold``) or as a target rate (``rate_khz``); a rate
is calibrated on background with the quantized model's scores — bit-exact with the firmware — and
the chosen value is a score the model actually produces, so it is exactly representable.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from trigger_ml.core.constants import (
    BX_RATE_HZ,
    INPUT_INFO_FILE,
    IR_FILE,
    PREPROCESSING_FILE,
    SOURCE_RUN_FILE,
)
from trigger_ml.core.errors import ArtifactError, ConfigError

FLAVORS = ("hls", "verilog", "vhdl")
IR_FILE = IR_FILE


def _background_scores(art, data: Path, n: int) -> np.ndarray:
    x = art.inputs_from_file(data, stop=n)
    return np.asarray(art.model.predict(x, batch_size=16384, verbose=0), np.float64).reshape(len(x), -1)[:, 0]


def calibrate_rate_threshold(art, data: Path, rate_khz: float, bx_rate_hz: float = BX_RATE_HZ, n_events: int = 200_000) -> float:
    """Score value whose background rate (score > value) is the largest not above ``rate_khz``."""
    s = np.sort(_background_scores(art, data, n_events))
    allowed = int(np.floor(rate_khz * 1e3 / bx_rate_hz * len(s)))
    if allowed < 1:
        raise ConfigError(f"rate {rate_khz} kHz needs more than {len(s):,} background events to calibrate "
                          f"(FPR {rate_khz * 1e3 / bx_rate_hz:.2g}); give more events or a threshold")
    return float(s[len(s) - allowed - 1])


def _copy_run_files(run: Path, out: Path, model_sha: str) -> None:
    for f in (PREPROCESSING_FILE, INPUT_INFO_FILE):
        shutil.copy2(run / f, out / f)
    (out / SOURCE_RUN_FILE).write_text(json.dumps({"run": str(run.resolve()), "model_sha256": model_sha}))


def convert_run(
    run: str | Path,
    out: str | Path,
    *,
    flavor: str = "hls",
    backend: str = "Vitis",
    part: str | None = None,
    clock_ns: float = 5.0,
    strategy: str = "Latency",
    reuse_factor: int | Mapping[str, int] = 1,
    threshold: float | None = None,
    rate_khz: float | None = None,
    bx_rate_hz: float = BX_RATE_HZ,
    latency_cutoff: float = 5.0,
    data: str | Path | None = None,
    tb_events: int = 1000,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Convert the model artifact ``run`` into a firmware project at ``out``; return a summary dict."""
    import time

    from trigger_ml.core.artifacts import sha256_file
    from trigger_ml.train import MODEL_FILE, load_artifact

    if flavor not in FLAVORS:
        raise ConfigError(f"flavor {flavor!r} unknown; choose one of {', '.join(FLAVORS)}")
    run, out = Path(run), Path(out)
    if out.exists() and not force:
        raise ArtifactError(f"{out}: exists; pass --force to overwrite")
    art = load_artifact(run)
    data = Path(data) if data else Path(art.manifest["inputs"]["data"]["path"])
    if rate_khz is not None:
        threshold = calibrate_rate_threshold(art, data, rate_khz, bx_rate_hz)
        log(f"threshold for {rate_khz:g} kHz at {bx_rate_hz / 1e6:g} MHz: score > {threshold:.6g}")
    model_sha = sha256_file(run / MODEL_FILE)
    t0 = time.perf_counter()
    if flavor == "hls":
        from trigger_ml import ir
        from trigger_ml.emulate.engine import Emulator
        from trigger_ml.firmware import hls

        x_tb = art.inputs_from_file(data, stop=tb_events) if art.config.kind != "classifier" else None
        if x_tb is None:
            from trigger_ml.data.jets import load_jets
            from trigger_ml.train import model_inputs

            x_tb = model_inputs(art.config, art.preprocessing, art.input_info, load_jets(data)[0][:tb_events])
        project, hls_model = hls.convert(
            run / MODEL_FILE, out, backend=backend, part=part, clock_ns=clock_ns, strategy=strategy,
            reuse_factor=reuse_factor, threshold=threshold, tb_inputs=x_tb, force=force,
        )
        t_conv = time.perf_counter() - t0
        fm = ir.from_hls_model(hls_model, threshold=_raw_threshold(project.threshold))
        fm.save(out / IR_FILE)
        # the emulator must reproduce the C-simulation test vectors written into the project
        expected = hls.read_tb_file(out / "tb_data" / "tb_output_predictions.dat")
        got = np.asarray(Emulator(fm).predict(x_tb), np.float64).reshape(expected.shape)
        n_bad = int((got != expected).sum())
        if n_bad:
            raise ArtifactError(f"{out}: emulator differs from the C-simulation on {n_bad} test-vector values; "
                                f"run `trigger-ml verify` to localize the mismatch")
        _copy_run_files(run, out, model_sha)
        summary = {"flavor": "hls", "path": str(out), "backend": project.backend, "part": project.part,
                   "clock_ns": clock_ns, "threshold": project.threshold, "seconds": round(t_conv, 2),
                   "tb_events": len(x_tb), "tb_emulator_mismatches": n_bad}
        log(f"wrote hls4ml {project.backend} project {out} ({t_conv:.1f} s incl. C-sim build; "
            f"emulator == C-sim on {len(x_tb)} test vectors)")
        return summary
    from trigger_ml.firmware import rtl

    proj = rtl.build_rtl(art.model, out, flavor=flavor, latency_cutoff=latency_cutoff, clock_ns=clock_ns, force=force)
    _copy_run_files(run, out, model_sha)
    t_conv = time.perf_counter() - t0
    log(f"wrote da4ml {flavor} project {out}: pipeline depth {proj.latency_cycles} cycles at {clock_ns} ns "
        f"({t_conv:.1f} s)")
    return {"flavor": flavor, "path": str(out), "latency_cycles": proj.latency_cycles, "clock_ns": clock_ns,
            "latency_cutoff": latency_cutoff, "seconds": round(t_conv, 2), "threshold": threshold}


def _raw_threshold(thr: dict | None) -> int | None:
    return None if not thr else int(thr["raw"])
