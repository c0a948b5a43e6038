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

A firmware directory on its own (``trigger-ml import`` output, no training run) is checked by
:func:`verify_firmware`: emulator vs C simulation (hls4ml's, or the project's own C++ for a
C++-only import) and the Keras model hls4ml saved with the project, on events through the
recorded preprocessing, on given model inputs (``.npy``) or on seeded random inputs that overflow.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import stats

from trigger_ml.core.artifacts import write_json_atomic
from trigger_ml.core.errors import ArtifactError, ConfigError, DataFormatError

#: seed of ``--random`` inputs when none is given
DEFAULT_SEED = 20261201
#: at most this many inputs go through the (reference-path) overflow report of a firmware verification
N_OVERFLOW_EVENTS = 20_000

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
    if getattr(layer, "kind", None) == "input":
        return (f"overflow in {sites}: inputs beyond the firmware input type {layer.type.to_hls()} wrap/saturate in the "
                "firmware but not in the Keras model; widen the input type or bring the inputs into its range")
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
    saturated values in that layer (with per-layer counts), *rounding* otherwise. ``model=None``
    (an imported firmware without a Keras model: the C simulation gives only the outputs) keeps
    the overflow classification and says that no per-layer reference exists.
    """
    from trigger_ml.emulate import Emulator

    idx = np.asarray(bad_events[:max_events], dtype=np.int64)
    xb = [a[idx] for a in x] if isinstance(x, (list, tuple)) else x[idx]  # one array per input of a multi-input graph
    emu = Emulator(fm)
    trace = {k: np.asarray(v, np.float64).reshape(len(idx), -1) for k, v in emu.trace(xb).items()}
    overflow = {k: v for k, v in emu.overflow_report(xb).items() if sum(v.values())}
    kout = _keras_layer_outputs(model, xb, list(trace)) if model is not None else {}
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
    elif model is None:
        res["kind"] = "unlocalized"
        res["suggestion"] = ("no overflow on these events and no per-layer reference (the C simulation gives only the "
                             "outputs): compare the rounding modes of the output casts (result_t of the last layers)")
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
    run: str | Path, events: str | Path | None = None, *, hls_dir: str | Path | None = None,
    rtl_dir: str | Path | None = None, n_events: int = 100_000, n_rtl_events: int | None = None,
    n_trigger_events: int = 20_000, signals: list[Path] = (), inputs: str | Path | None = None,
    n_random: int | None = None, seed: int = DEFAULT_SEED, log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every available stage on ``n_events`` held-out events of ``events`` and compare them (see
    module doc). With a trigger wrapper in ``hls_dir``, the emulator's trigger bit (the IR's
    threshold) is compared with the wrapper's C-simulated bit on ``n_trigger_events`` events.

    ``run`` may also be a firmware directory (manifest stage ``firmware.hls``, e.g. written by
    ``trigger-ml import``): then :func:`verify_firmware` checks its stages on ``events`` (through
    the directory's preprocessing), on the model inputs in ``inputs`` (.npy) or on ``n_random``
    seeded random inputs."""
    from trigger_ml.evaluate import check_signal_files
    from trigger_ml.train import load_artifact

    if firmware_stage(run) is not None:
        if hls_dir is not None or rtl_dir is not None or signals:
            raise ConfigError(f"{run}: a firmware directory is verified on its own: --hls/--rtl/--signals need a "
                              "training run as the first argument (`trigger-ml verify RUN --hls DIR`)")
        return verify_firmware(run, events=events, inputs=inputs, n_random=n_random, n_events=n_events, seed=seed,
                               n_trigger_events=n_trigger_events, log=log)
    if inputs is not None or n_random is not None:
        raise ConfigError(f"{run}: --inputs/--random apply to a firmware directory (from `trigger-ml import`/`convert`); "
                          "a training run is verified on --events")
    if events is None:
        raise ConfigError(f"{run}: give --events EVENTS.h5 (the held-out events the stages are compared on)")
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


# ------------------------------------------------------------------ firmware directories (import / convert)
def firmware_stage(path: str | Path) -> str | None:
    """``'firmware.hls'`` when ``path`` is a firmware directory (its manifest's stage; written by
    ``trigger-ml import`` or ``convert``), else None (a training run or anything else, which the
    training-run path reports). An RTL directory is refused: it is checked with ``--rtl``."""
    from trigger_ml.core.artifacts import read_json_or_none
    from trigger_ml.core.constants import MANIFEST_FILE

    p = Path(path)
    man = read_json_or_none(p / MANIFEST_FILE) if p.is_dir() else None
    stage = man.get("stage") if isinstance(man, dict) else None
    if stage == "firmware.rtl":
        raise ConfigError(f"{p}: an RTL firmware directory is verified against its run: "
                          f"`trigger-ml verify RUN --events EVENTS.h5 --rtl {p}`")
    return stage if stage == "firmware.hls" else None


def _flat(y, n: int) -> np.ndarray:
    if isinstance(y, (list, tuple)):
        return np.concatenate([np.asarray(a, np.float64).reshape(n, -1) for a in y], axis=1)
    return np.asarray(y, np.float64).reshape(n, -1)


def firmware_inputs(
    fw_dir: Path, fm, pre, *, events: str | Path | None, inputs: str | Path | None, n_random: int | None,
    n_events: int, seed: int,
) -> tuple[np.ndarray | list[np.ndarray], dict[str, Any]]:
    """The model inputs a firmware verification runs on, and where they come from (``{"kind":
    "events" | "inputs" | "random", ..., "note"}``): exactly one of ``events`` (through the
    directory's recorded preprocessing; the held-out rule of its source run when one is recorded),
    ``inputs`` (an ``.npy`` array (n, features) of model inputs; the first ``n_events`` rows) or
    ``n_random`` seeded random inputs of which a third overflow the input type
    (:func:`trigger_ml.importers.common.random_inputs`)."""
    given = [k for k, v in (("--events", events), ("--inputs", inputs), ("--random", n_random)) if v is not None]
    if len(given) != 1:
        raise ConfigError(f"{fw_dir}: give exactly one of --events EVENTS.h5, --inputs X.npy or --random N "
                          f"(got {', '.join(given) if given else 'none'})")
    specs = fm.inputs
    if n_random is not None:
        from trigger_ml.importers.common import random_inputs

        if n_random < 1:
            raise ConfigError(f"--random {n_random}: give a positive number of inputs")
        xs = random_inputs([s.type for s in specs], [s.shape for s in specs], int(n_random), int(seed))
        note = (f"{n_random:,} seeded random inputs (seed {seed}): a third uniform in the input type's range, a third "
                "standard normal, a third up to 4x beyond the range (wrap/saturation)")
        return (xs if len(xs) > 1 else xs[0]), {"kind": "random", "n": int(n_random), "seed": int(seed), "note": note}
    if len(specs) != 1:
        raise ConfigError(f"{fw_dir}: the firmware has {len(specs)} inputs ({', '.join(s.name for s in specs)}); "
                          "verify it on --random N inputs")
    spec = specs[0]
    if inputs is not None:
        p = Path(inputs)
        try:
            a = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise DataFormatError(f"{p}: not a readable .npy array ({str(exc).splitlines()[0][:200]}); give an "
                                  "(n, features) float array saved with numpy.save") from None
        if not isinstance(a, np.ndarray) or a.ndim < 2 or a.dtype.kind not in "fiub":
            raise DataFormatError(f"{p}: expected a numeric (n, features) array, got "
                                  f"{getattr(a, 'dtype', type(a).__name__)} of shape {getattr(a, 'shape', '?')}")
        if int(np.prod(a.shape[1:])) != spec.size:
            raise DataFormatError(f"{p}: rows of {int(np.prod(a.shape[1:]))} values (shape {a.shape}); the firmware "
                                  f"input {spec.name!r} takes {spec.size} (shape {spec.shape})")
        if len(a) == 0:
            raise DataFormatError(f"{p}: no rows; give at least one input")
        a = np.asarray(a[:n_events], np.float64).reshape(-1, *spec.shape)
        if not np.isfinite(a).all():
            raise DataFormatError(f"{p}: {int((~np.isfinite(a)).sum())} NaN/inf values in the first {len(a):,} rows; "
                                  "the firmware input is a fixed-point number")
        return a, {"kind": "inputs", "path": str(p), "n": len(a), "note": f"{p} rows 0-{len(a):,} (model inputs as given)"}
    from trigger_ml.data.adc2021 import read_events
    from trigger_ml.scoring import held_out_sources

    (src,), (note,) = held_out_sources(fw_dir, [Path(events)], n_events)
    path, start, stop = src
    x = np.asarray(pre.transform(read_events(path, start=start, stop=stop)), np.float64)
    x = x.reshape(len(x), -1)
    if x.shape[1] != spec.size:
        raise ConfigError(f"{events}: the preprocessing of {fw_dir} gives {x.shape[1]} values per event, the firmware "
                          f"input {spec.name!r} takes {spec.size}; give the model inputs with --inputs X.npy "
                          "(or --random N), or import with the model's --preprocessing")
    return x.reshape(-1, *spec.shape), {"kind": "events", "path": str(events), "n": len(x), "note": note}


_CPP_CSIM_DIR: list[Path] = []


def _cpp_csim_dir() -> Path:
    """This process's private build directory of C++-only C simulations (removed at exit)."""
    if not _CPP_CSIM_DIR:
        import atexit
        import shutil
        import tempfile

        d = Path(tempfile.mkdtemp(prefix="trigger_ml_verify_csim_"))
        atexit.register(shutil.rmtree, d, True)
        _CPP_CSIM_DIR.append(d)
    return _CPP_CSIM_DIR[0]


def firmware_csim(fw_dir: Path) -> tuple[Callable[[Any], np.ndarray], str]:
    """The C simulation of a firmware directory and what it is: hls4ml's ``compile()``/``predict()``
    of the project when ``hls4ml_config.yml`` is there, else (a C++-only import) the project's own
    generated C++ compiled with g++ and the importer's harness (:func:`trigger_ml.importers.
    hls4ml_project.build_csim`) in a private temporary directory (one build per source hash and
    process) - the firmware directory is never written."""
    if (fw_dir / "hls4ml_config.yml").is_file():
        from trigger_ml.firmware.hls import csim_predict

        return (lambda x: csim_predict(fw_dir, x)), "hls4ml C simulation (compile()/predict() of the project)"
    if (fw_dir / "firmware" / "parameters.h").is_file():
        from trigger_ml.importers.hls4ml_project import build_csim, read_project

        def run(x):  # libraries are keyed by a hash of the sources: rebuilt when the C++ changes
            return build_csim(read_project(fw_dir), _cpp_csim_dir()).predict(x)

        return run, "the project's own generated C++ compiled with g++ (no hls4ml_config.yml)"
    raise ArtifactError(f"{fw_dir}: no hls4ml project (hls4ml_config.yml or firmware/parameters.h) to C-simulate; "
                        "re-run `trigger-ml import`/`convert` with --force")


def verify_firmware(
    fw_dir: str | Path, *, events: str | Path | None = None, inputs: str | Path | None = None,
    n_random: int | None = None, n_events: int = 100_000, seed: int = DEFAULT_SEED,
    n_trigger_events: int = 20_000, n_overflow_events: int = N_OVERFLOW_EVENTS, log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Cross-check bit for bit every stage a firmware directory holds (``trigger-ml import`` /
    ``convert`` output): the IR emulator vs the C simulation (:func:`firmware_csim`), the Keras model
    hls4ml saved with the project (``keras_model.keras``: the HGQ2 rebuild of a QKeras / HGQ-1 import
    or a trained run's model, fed the inputs cast to the firmware input type - bit for bit when its
    outputs are quantized, else statistically, said in one line; the rebuild of a float Keras 2
    model is the float reference, compared statistically), and the trigger bit when the project has
    a trigger wrapper, on the inputs of :func:`firmware_inputs`.
    Mismatches are counted exactly and localized (:func:`localize`); the emulator's overflow report
    (wrapped/saturated values per layer and cast site) on the first ``n_overflow_events`` inputs is
    part of the result. Returns the same report layout as :func:`verify`."""
    from trigger_ml.core.artifacts import read_manifest
    from trigger_ml.emulate import Emulator
    from trigger_ml.importers.common import KERAS_MODEL_FILE
    from trigger_ml.scoring import load_firmware

    p = Path(fw_dir)
    man = read_manifest(p, expect_stage="firmware.hls", verify_inputs=False)
    fm, pre, _ = load_firmware(p)
    x, source = firmware_inputs(p, fm, pre, events=events, inputs=inputs, n_random=n_random, n_events=n_events,
                                seed=seed)
    n = len(x[0]) if isinstance(x, list) else len(x)
    cfg = man.get("config") or {}
    what = f"imported from {cfg.get('source_format')} {cfg.get('model_path')}" if cfg.get("source_format") else \
        "converted from a training run"
    log(f"firmware {p} ({what}); inputs: {source['note']}")
    csim, csim_what = firmware_csim(p)
    log(f"  C simulation: {csim_what}")
    emu = Emulator(fm)
    outs: dict[str, np.ndarray] = {}
    times: dict[str, float] = {}

    def stage(name: str, fn: Callable[[], Any]) -> None:
        t = time.perf_counter()
        outs[name] = _flat(fn(), n)
        times[name] = time.perf_counter() - t
        log(f"  {name:9s} {len(outs[name]):>8,} events in {times[name]:7.2f} s")

    stage("csim", lambda: csim(x))
    stage("emulator", lambda: emu.predict(x))  # float64 in → float64 out: exact up to 53-bit outputs
    kmodel, keras_note, exact_keras, xk = None, None, False, x
    if (p / KERAS_MODEL_FILE).is_file():  # hls4ml's copy of the Keras model the project was converted from
        from trigger_ml.train import _load_keras

        kmodel = _load_keras(p / KERAS_MODEL_FILE)  # safe_mode=True
        if cfg.get("source_format") != "keras2":  # quantized (HGQ2: QKeras/HGQ-1 rebuild, a trained run)
            from trigger_ml.core.fixed import from_float, to_float

            last = [kmodel.get_layer(n) for n in _output_layer_names(kmodel)]
            # a plain Keras output layer (e.g. QKeras's float softmax) is not quantized: no bit-exact output
            exact_keras = not any(type(lay).__module__.startswith("keras") for lay in last)
            # the model sees the inputs as the firmware's input type holds them (its cast is the firmware's
            # interface, checked by emulator vs C-sim and counted in the overflow report)
            xs = x if isinstance(x, list) else [x]
            xk = [to_float(from_float(a, s.type), s.type) for a, s in zip(xs, fm.inputs)]
            xk = xk if isinstance(x, list) else xk[0]
            log("  note: the Keras model receives the inputs cast to the firmware input type "
                + ", ".join(s.type.to_hls() for s in fm.inputs))
            stage("keras", lambda: kmodel.predict(xk, batch_size=16384, verbose=0))
            if not exact_keras:
                keras_note = (f"the Keras model's output layer(s) {', '.join(f'{lay.name} ({type(lay).__name__})' for lay in last)} "
                              "are not quantized: Keras vs C-sim is compared statistically, not bit for bit")
        else:  # a float Keras 2 model: the physics reference of the quantized firmware
            stage("float", lambda: kmodel.predict(x, batch_size=16384, verbose=0))
        if keras_note:
            log(f"  note: {keras_note}")
    exact = [k for k in outs if k != "float" and (k != "keras" or exact_keras)]
    pairs = {f"{a}:{b}": compare_exact(outs[a], outs[b]) for a, b in EXACT_PAIRS if a in exact and b in exact}
    trigger_check = None
    if fm.threshold is not None and (p / "hls4ml_config.yml").is_file() and not isinstance(x, list):
        trigger_check = _compare_trigger_bits(p, fm, emu, x[:n_trigger_events], log)
    t = time.perf_counter()
    n_ov = min(n, int(n_overflow_events))
    xo = [a[:n_ov] for a in x] if isinstance(x, list) else x[:n_ov]
    report = emu.overflow_report(xo)
    overflow = {"n_events": n_ov, "values": int(sum(sum(v.values()) for v in report.values())),
                "layers": {k: v for k, v in report.items() if sum(v.values())},
                "seconds": round(time.perf_counter() - t, 3)}
    sites = ", ".join(f"{k} {sum(v.values()):,}" for k, v in overflow["layers"].items()) or "none"
    log(f"  overflow  {n_ov:>8,} events: {overflow['values']:,} values wrapped/saturated ({sites})")
    res: dict[str, Any] = {
        "run": str(p), "firmware": str(p), "kind": "firmware", "events": None if events is None else str(events),
        "input_source": source, "n_events": n, "stages": list(outs),
        "csim": csim_what, "source_format": cfg.get("source_format"),
        "seconds": {k: round(v, 3) for k, v in times.items()},
        "events_per_s": {k: round(len(outs[k]) / v) for k, v in times.items() if v > 0},
        "background": source["note"],
        "exact_pairs": pairs,
        "total_mismatches": int(sum(q.get("mismatches", 0) for q in pairs.values()))
        + int((trigger_check or {}).get("mismatches", 0))
        + int(bool(trigger_check) and trigger_check["threshold_raw_ir"] != trigger_check["threshold_raw_wrapper"]),
        "trigger_bit": trigger_check,
        "overflow": overflow,
    }
    if "float" in outs:
        res["quantized_vs_float"] = compare_statistical(outs["float"], outs["csim"])
    if "keras" in outs and not exact_keras:
        res["keras_vs_csim"] = compare_statistical(outs["csim"], outs["keras"]) | {"note": keras_note}
    ref = outs["keras"] if exact_keras else outs["csim"]
    bad = sorted(set(np.flatnonzero(np.any(outs["csim"] != outs["emulator"], axis=1)).tolist())
                 | set(np.flatnonzero(np.any(ref != outs["emulator"], axis=1)).tolist()))
    if exact_keras:
        res["keras_inputs"] = "cast to the firmware input type " + ", ".join(s.type.to_hls() for s in fm.inputs)
    if bad:  # per-layer localization against the quantized Keras model when there is one
        res["localization"] = localize(fm, kmodel if exact_keras else None, xk if exact_keras else x, bad)
    return res


def _output_layer_names(model) -> list[str]:
    """Names of the layers producing a Keras model's outputs."""
    return [t._keras_history.operation.name for t in model.outputs]


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
