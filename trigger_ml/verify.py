"""Cross-check every stage that claims to compute the firmware: float ↔ quantized ↔ C-sim ↔ emulator ↔ alkaid ↔ RTL.

Stages (each optional, depending on what exists):

* ``float``    — the float twin (plain Keras), the physics reference
* ``keras``    — the quantized HGQ2 model (``model.predict``)
* ``csim``     — hls4ml's C simulation of the generated project (``compile()``/``predict()``)
* ``emulator`` — trigger_ml's bit-exact numpy emulator of the FirmwareModel IR
* ``alkaid``   — alkaid's own execution (C++ interpreter) of the distributed-arithmetic graph of the RTL
* ``rtl``      — Verilator simulation of the generated Verilog

Bit-exact pairs are compared *exactly* (mismatch counts, never a tolerance). Quantized vs float is
compared statistically (correlation, KS test, sliced Wasserstein distance, TPR shift). When a
bit-exact pair disagrees, :func:`localize` finds the first diverging layer, the events concerned,
whether it is an overflow (wrap/saturation, with per-layer counts) or a rounding difference, and
suggests the precision change that fixes it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import stats

from trigger_ml.core.artifacts import write_json_atomic
from trigger_ml.core.errors import ArtifactError

#: pairs that must agree bit for bit (first is the reference)
EXACT_PAIRS: tuple[tuple[str, str], ...] = (
    ("csim", "keras"), ("csim", "emulator"), ("keras", "emulator"), ("keras", "alkaid"), ("alkaid", "rtl"), ("csim", "alkaid"),
)


def compare_exact(ref: np.ndarray, got: np.ndarray, max_events: int = 20) -> dict[str, Any]:
    """Exact comparison: number of mismatching output values/events, max/mean |diff|, first events."""
    a = np.asarray(ref, np.float64).reshape(len(ref), -1)
    b = np.asarray(got, np.float64).reshape(len(got), -1)
    if a.shape != b.shape:
        return {"error": f"shape {a.shape} vs {b.shape}"}
    bad = a != b
    d = np.abs(a - b)
    ev = np.flatnonzero(bad.any(1))
    return {"n_events": len(a), "n_values": int(a.size), "mismatches": int(bad.sum()), "mismatched_events": int(len(ev)),
            "max_abs_diff": float(d.max()) if d.size else 0.0, "mean_abs_diff": float(d.mean()) if d.size else 0.0,
            "first_events": ev[:max_events].tolist()}


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, n_projections: int = 64, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between two samples of (n, d) outputs (exact W1 when d == 1)."""
    a, b = np.asarray(a, np.float64).reshape(len(a), -1), np.asarray(b, np.float64).reshape(len(b), -1)
    if a.shape[1] == 1:
        return float(stats.wasserstein_distance(a[:, 0], b[:, 0]))
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(n_projections, a.shape[1]))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return float(np.mean([stats.wasserstein_distance(a @ v, b @ v) for v in dirs]))


def compare_statistical(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """Agreement of quantized vs float outputs: correlations, KS two-sample test, sliced Wasserstein.

    Correlations need two events and outputs that vary: otherwise they are NaN (with a ``note``)."""
    import warnings

    a, b = np.asarray(ref, np.float64).reshape(len(ref), -1), np.asarray(got, np.float64).reshape(len(got), -1)
    n = len(a)
    with warnings.catch_warnings():  # constant outputs: NaN correlations, said in the note, not as a warning
        warnings.simplefilter("ignore")
        ks = stats.ks_2samp(a[:, 0], b[:, 0])
        corr = n >= 2 and np.ptp(a[:, 0]) > 0 and np.ptp(b[:, 0]) > 0
        res = {
            "pearson": float(stats.pearsonr(a[:, 0], b[:, 0]).statistic) if corr else float("nan"),
            "spearman": float(stats.spearmanr(a[:, 0], b[:, 0]).statistic) if corr else float("nan"),
            "ks_statistic": float(ks.statistic), "ks_pvalue": float(ks.pvalue),
            "sliced_wasserstein": sliced_wasserstein(a, b),
            "max_abs_diff": float(np.abs(a - b).max()) if a.size else 0.0,
        }
    if not corr:
        res["note"] = (f"correlations need at least 2 events with varying outputs (have {n:,} events)"
                       if n < 2 else "an output is constant over these events: correlations are undefined")
    return res


# ------------------------------------------------------------------ localization
def _keras_layer_outputs(model, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    import keras

    layers = {l.name: l for l in model.layers}
    common = [n for n in names if n in layers]
    if not common:
        return {}
    sub = keras.Model(model.inputs, [layers[n].output for n in common])
    outs = sub.predict(x, batch_size=16384, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    return {n: np.asarray(o, np.float64).reshape(len(x), -1) for n, o in zip(common, outs)}


def _suggest(layer, report: dict[str, int], trace_vals: np.ndarray | None) -> str:
    sites = ", ".join(f"{k} ({v:,} values)" for k, v in report.items() if v)
    types = getattr(layer, "types", {}) or {}
    hints = []
    for site in report:
        t = types.get(site if site.endswith("_t") else f"{site}_t") or types.get(site)
        if t is not None:
            hints.append(f"{site}: {t.to_hls() if hasattr(t, 'to_hls') else t} → add integer bits (e.g. +2)")
    return f"overflow in {sites}; widen " + ("; ".join(hints) if hints else "the accumulator/result type of this layer")


def localize(fm, model, x: np.ndarray, bad_events: list[int], max_events: int = 256) -> dict[str, Any]:
    """First diverging layer between the firmware (IR emulator) and the quantized Keras model.

    Compares per-layer outputs on the mismatching events for layers present in both graphs, in
    firmware order, and classifies the divergence: *overflow* when the emulator counts wrapped or
    saturated values in that layer (with per-layer counts), *rounding* otherwise.
    """
    from trigger_ml.emulate import Emulator

    idx = np.asarray(bad_events[:max_events], dtype=np.int64)
    xb = x[idx]
    emu = Emulator(fm)
    trace = {k: np.asarray(v, np.float64).reshape(len(xb), -1) for k, v in emu.trace(xb).items()}
    overflow = {k: v for k, v in emu.overflow_report(xb).items() if sum(v.values())}
    kout = _keras_layer_outputs(model, xb, list(trace))
    first = None
    for name in fm.layer_names:
        if name in kout and name in trace and kout[name].shape == trace[name].shape:
            diff = kout[name] != trace[name]
            if diff.any():
                first = {"layer": name, "events": idx[np.flatnonzero(diff.any(1))][:20].tolist(),
                         "values_differing": int(diff.sum()), "max_abs_diff": float(np.abs(kout[name] - trace[name]).max())}
                break
    # an overflow anywhere before (or at) the first divergence is the likely cause
    cause_layer = None
    for name in fm.layer_names:
        if name in overflow:
            cause_layer = name
            break
        if first and name == first["layer"]:
            break
    res: dict[str, Any] = {"events_examined": len(idx), "first_diverging_layer": first, "overflow_counts": overflow}
    if cause_layer:
        res["kind"] = "overflow"
        res["layer"] = cause_layer
        res["suggestion"] = _suggest(fm.layer(cause_layer), overflow[cause_layer], trace.get(cause_layer))
    elif first:
        res["kind"] = "rounding"
        res["layer"] = first["layer"]
        res["suggestion"] = (f"values differ in {first['layer']} without overflow: check the rounding mode / fractional "
                             f"bits of its result_t against the quantizer that follows it")
    else:
        res["kind"] = "unlocalized"
        res["suggestion"] = "no common layer differs; compare the output casts (result_t of the last layer)"
    return res


def _compare_trigger_bits(hls_dir: Path, fm, emu, x: np.ndarray, log: Callable[[str], None]) -> dict[str, Any]:
    """Emulator trigger bits vs the hls4ml trigger wrapper's C simulation (exact, event by event)."""
    from trigger_ml.firmware.hls import load_project, trigger_csim

    t = time.perf_counter()
    wrapper_raw = int(load_project(hls_dir).threshold["raw"])
    _, bits_csim = trigger_csim(hls_dir, x.astype(np.float64))
    bits_emu = np.asarray(emu.trigger(x.astype(np.float64)), bool)
    bad = np.flatnonzero(bits_emu != bits_csim.astype(bool))
    res = {"n_events": int(len(x)), "mismatches": int(bad.size), "first_events": bad[:20].tolist(),
           "fired_emulator": int(bits_emu.sum()), "fired_csim": int(bits_csim.sum()),
           "threshold_raw_ir": int(fm.threshold), "threshold_raw_wrapper": wrapper_raw,
           "seconds": round(time.perf_counter() - t, 3)}
    log(f"  trigger   {len(x):>8,} events: emulator vs wrapper C-sim {bad.size} mismatches "
        f"({res['fired_emulator']} fired; threshold raw {fm.threshold})")
    return res


# ------------------------------------------------------------------ driver
def verify(
    run: str | Path, events: str | Path, *, hls_dir: str | Path | None = None, rtl_dir: str | Path | None = None,
    n_events: int = 100_000, n_rtl_events: int | None = None, n_trigger_events: int = 20_000, signals: list[Path] = (),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every available stage on ``n_events`` held-out events of ``events`` and compare them (see
    module doc). With a trigger wrapper in ``hls_dir``, the emulator's trigger bit (the IR's
    threshold) is compared with the wrapper's C-simulated bit on ``n_trigger_events`` events."""
    from trigger_ml.evaluate import check_signal_files
    from trigger_ml.train import load_artifact

    art = load_artifact(run)
    ho = art.held_out(events, n_events)  # the one held-out rule: never a training event
    check_signal_files(signals)  # before the (slow) stages, not after them
    x = art.inputs_from_file(ho.path, start=ho.start, stop=ho.stop)
    outs: dict[str, np.ndarray] = {}
    times: dict[str, float] = {}

    def stage(name: str, fn: Callable[[], np.ndarray]) -> None:
        t = time.perf_counter()
        r = np.asarray(fn(), np.float64)
        outs[name] = r.reshape(len(r), -1)
        times[name] = time.perf_counter() - t
        log(f"  {name:9s} {len(outs[name]):>8,} events in {times[name]:7.2f} s")

    try:
        fmodel = art.float_model()
        stage("float", lambda: fmodel.predict(x, batch_size=16384, verbose=0))
    except ArtifactError:
        fmodel = None
    stage("keras", lambda: art.model.predict(x, batch_size=16384, verbose=0))
    fm = None
    trigger_check: dict[str, Any] | None = None
    if hls_dir:
        from trigger_ml.emulate import Emulator
        from trigger_ml.firmware.hls import csim_predict
        from trigger_ml.scoring import load_firmware

        fm, _, _ = load_firmware(hls_dir)
        stage("csim", lambda: csim_predict(Path(hls_dir), x))
        emu = Emulator(fm)
        # float64 in → float64 out: exact for score types wider than float32's 24-bit mantissa
        stage("emulator", lambda: emu.predict(x.astype(np.float64)))
        if fm.threshold is not None:  # the trigger bit: emulator (IR threshold) vs the wrapper's C simulation
            trigger_check = _compare_trigger_bits(Path(hls_dir), fm, emu, x[:n_trigger_events], log)
    if rtl_dir:
        from trigger_ml.firmware import rtl

        proj = rtl.RTLProject.load(rtl_dir)
        stage("alkaid", lambda: rtl.comb_predict(proj, x))
        xr = x[:n_rtl_events] if n_rtl_events else x
        stage("rtl", lambda: rtl.simulate_rtl(proj, xr))
    pairs = {}
    for a, b in EXACT_PAIRS:
        if a in outs and b in outs:
            n = min(len(outs[a]), len(outs[b]))
            pairs[f"{a}:{b}"] = compare_exact(outs[a][:n], outs[b][:n])
    res: dict[str, Any] = {
        "run": str(run), "events": str(events), "n_events": len(x), "stages": list(outs),
        "seconds": {k: round(v, 3) for k, v in times.items()},
        "events_per_s": {k: round(len(outs[k]) / v) for k, v in times.items() if v > 0},
        "background": ho.note,
        "exact_pairs": pairs,
        "total_mismatches": int(sum(p.get("mismatches", 0) for p in pairs.values()))
        + int((trigger_check or {}).get("mismatches", 0))
        + int(bool(trigger_check) and trigger_check["threshold_raw_ir"] != trigger_check["threshold_raw_wrapper"]),
        "trigger_bit": trigger_check,
    }
    if "float" in outs:
        res["quantized_vs_float"] = compare_statistical(outs["float"], outs["keras"])
        if signals:
            res["quantized_vs_float"]["tpr_shift"] = _tpr_shift(art, fmodel, x, signals, n_events)
    bad = [p for p in pairs.values() if p.get("mismatches")]
    if bad and fm is not None:
        first_bad = sorted({e for p in bad for e in p["first_events"]})
        all_bad = np.flatnonzero(np.any(outs.get("csim", outs["keras"]) != outs["keras"], axis=1)).tolist() or first_bad
        res["localization"] = localize(fm, art.model, x, all_bad)
    return res


def _tpr_shift(art, fmodel, x_bkg: np.ndarray, signals: list[Path], n_events: int) -> dict[str, Any]:
    from trigger_ml.core.metrics import tpr_at_fpr

    out = {}
    sb_q = art.model.predict(x_bkg, batch_size=16384, verbose=0).ravel()
    sb_f = fmodel.predict(x_bkg, batch_size=16384, verbose=0).ravel()
    for s in signals:
        xs = art.inputs_from_file(s, stop=n_events)
        q = tpr_at_fpr(sb_q, art.model.predict(xs, batch_size=16384, verbose=0).ravel(), 1e-4)
        f = tpr_at_fpr(sb_f, fmodel.predict(xs, batch_size=16384, verbose=0).ravel(), 1e-4)
        out[Path(s).stem] = {"tpr_float": f.get("tpr"), "tpr_quantized": q.get("tpr"),
                             "shift": None if q.get("tpr") is None or f.get("tpr") is None else q["tpr"] - f["tpr"]}
    return out


def write_report(res: dict[str, Any], path: str | Path, inputs: tuple = ()) -> Path:
    """Write the verification report JSON (atomically). It replaces only an earlier verify report (its
    ``"stage": "verify"`` key), never an input (the run, the events file, ``inputs``) or another file."""
    from trigger_ml.core.artifacts import check_output

    check_output(path, [res.get("run"), res.get("events"), *inputs], "verify", force=True, kind="file")
    return write_json_atomic(path, {"stage": "verify", **res}, indent=2)
