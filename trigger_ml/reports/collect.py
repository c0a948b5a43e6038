"""Gather everything known about a trained model and its firmware into one JSON-serialisable report.

:func:`collect_report` accepts

* a model run directory (``manifest.json`` with stage ``train``),
* an hls4ml firmware directory (``manifest.json`` with stage ``firmware.hls``, or just the
  vendor synthesis reports of an hls4ml project),
* a da4ml RTL directory (``rtl_manifest.json``),
* or a parent directory holding several of these (e.g. a demo output with ``run/``,
  ``firmware/hls/``, ``firmware/rtl/``; searched three levels deep).

An HLS manifest that records its input ``model`` file leads to the run directory holding it.

Report layout (every section is either ``{"status": "ok", ...}`` or
``{"status": "absent", "reason": "..."}`` - a missing piece never aborts the report)::

    {
      "format": "trigger_ml.report", "version": 1, "created", "title", "path",
      "inputs":        {"run", "hls", "rtl", "notes": [...]},
      "model":         name, kind, config summary, EBOPs figure, training figures
      "metrics":       per signal and per model (float / quantized / firmware): AUC, TPR at
                       FPR 1e-5 / 1e-4 / target rate (default: the rate the firmware was calibrated
                       to), quoted only with >= 10/FPR held-out background events, with Clopper-Pearson
                       and bootstrap (threshold uncertainty included) 68 % intervals; "baselines": HT,
                       MET, lepton and object count on the same events; "tail_composition": the
                       background processes above each working point; "ensemble": mean ± std over
                       training seeds (or why not measured); ROC curves with Clopper-Pearson bands and
                       score histograms for plots
      "firmware_threshold": the threshold the firmware was built with (value, raw, score type) and
                       the rate it was calibrated to (the HLS manifest, cross-checked with the IR)
      "menu":          the working-point menu, exactly `trigger-ml emulate` on the same files:
                       threshold (score and raw), rate and pure rate in kHz, efficiency per signal,
                       each with its Clopper-Pearson 68 % interval; the firmware threshold's rate here
      "physics_command": (without signal files) the command that adds the physics section
      "implementation": {"figures": [{flavour, figure, value, unit, source, kind}, ...],
                         "table":   [{flavour, figure, unit, parsed: [...], measured: [...],
                                      estimated: [...]}, ...],      # three sources side by side
                         "absent_sources": [{kind, reason}, ...],  # e.g. what is not measured + the command
                         "measurements": {flavour: {status, file, command}}}   # measurements.json read
      "analytic":      per-layer rows of the analytic hls4ml Latency model
      "budget":        {"budget_ns", "budget_bx", "primary", "profiles": {flavour: profile}}
      "bitwidths":     per-layer weight / bias / accumulator / result widths
      "calibration":   estimate vs measurement rows (relative errors)
      "part":          FPGA part and its totals
    }

Figure sources follow one vocabulary: ``parsed (<tool> csynth)`` / ``parsed (Vivado synth)``
(vendor reports), ``measured (yosys ...)`` / ``measured (Verilator)`` (open tools, run by ``trigger-ml
measure`` and read here from ``measurements.json``: the report itself never runs a tool),
``estimated (EBOPs)`` / ``estimated (analytic hls4ml Latency model)`` / ``estimated (da4ml)``.
The default latency budget is 2 bunch crossings = 50 ns, the CMS Level-1 Global Trigger
allotment for an algorithm.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trigger_ml.core.artifacts import read_json_or_none as _read_json
from trigger_ml.core.constants import (
    DEFAULT_PART,
    IR_FILE,
    MANIFEST_FILE,
    MEASUREMENTS_FILE,
    RTL_MANIFEST_FILE,
    SOURCE_RUN_FILE,
)
from trigger_ml.core.errors import ArtifactError, TriggerMLError
from trigger_ml.reports import estimate as E
from trigger_ml.train import training_data_path

REPORT_FORMAT = "trigger_ml.report"
REPORT_VERSION = 1
DEFAULT_BUDGET_BX = 2.0
DEFAULT_CLOCK_NS = 5.0

RESOURCE_FIGURES = ("LUT", "FF", "DSP", "BRAM_18K", "URAM", "CARRY")
_BUDGET_RESOURCES = ("LUT", "FF", "DSP", "BRAM_18K", "URAM")

__all__ = ["REPORT_FORMAT", "REPORT_VERSION", "absent", "collect_report", "discover", "firmware_threshold",
           "physics_command", "trigger_menu"]


# ----------------------------------------------------------------------------- helpers


def absent(reason: str) -> dict[str, Any]:
    """A section that could not be produced, with a one-line reason."""
    return {"status": "absent", "reason": " ".join(str(reason).split())}


def _reason(err: BaseException) -> str:
    msg = " ".join(str(err).split())
    if isinstance(err, TriggerMLError):
        return msg or type(err).__name__
    return f"{type(err).__name__}: {msg}" if msg else type(err).__name__


def _section(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        out = fn()
    except Exception as err:  # noqa: BLE001 - a failing section must not abort the report
        return absent(_reason(err))
    return out if "status" in out else {"status": "ok", **out}


def _stage(d: Path) -> str | None:
    m = _read_json(d / MANIFEST_FILE) if (d / MANIFEST_FILE).is_file() else None
    return m.get("stage") if m else None


def _has_vendor_reports(d: Path) -> bool:
    if (d / "vivado_synth.rpt").is_file():
        return True
    return any(d.glob("*_prj/*/syn/report/*csynth.xml"))


def _kind_of(d: Path) -> str | None:
    if (d / RTL_MANIFEST_FILE).is_file():
        return "rtl"
    stage = _stage(d)
    if stage == "train":
        return "run"
    if stage == "firmware.hls":
        return "hls"
    if stage is None and _has_vendor_reports(d):
        return "hls"
    return None


def discover(path: str | os.PathLike) -> dict[str, Any]:
    """Find the run / HLS / RTL directories at or below ``path`` (three levels deep)."""
    root = Path(path)
    if not root.exists():
        raise ArtifactError(f"{root}: does not exist; pass a model run, a firmware directory or their parent")
    found: dict[str, list[Path]] = {"run": [], "hls": [], "rtl": []}
    kind = _kind_of(root) if root.is_dir() else None
    if kind is not None:
        found[kind].append(root)
    else:
        frontier = [root]
        for _depth in range(3):
            nxt = []
            for d in frontier:
                try:
                    subs = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
                except OSError:
                    continue
                for s in subs:
                    k = _kind_of(s)
                    if k is not None:
                        found[k].append(s)
                    elif not s.name.endswith("_prj"):
                        nxt.append(s)
            frontier = nxt
    notes: list[str] = []
    chosen: dict[str, Path | None] = {}
    for k, lst in found.items():
        chosen[k] = lst[0] if lst else None
        if k == "run" and len(lst) > 1:  # several runs: the one the firmware was converted from, if recorded
            for fw in [*found["hls"][:1], *found["rtl"][:1]]:
                src_run = _firmware_source_run(fw)
                hit = next((r for r in lst if src_run is not None and r.resolve() == src_run.resolve()), None)
                if hit is not None:
                    chosen[k] = hit
                    break
        if len(lst) > 1:
            notes.append(f"several {k} directories found ({', '.join(str(p) for p in lst)}); using {chosen[k]}")
    for fw in ("hls", "rtl"):
        if chosen[fw] is None or chosen["run"] is not None:
            continue
        candidates = []
        src = _read_json(chosen[fw] / SOURCE_RUN_FILE) or {}
        if src.get("run"):
            candidates.append(Path(src["run"]))
        man = _read_json(chosen[fw] / MANIFEST_FILE) or {}
        model_path = ((man.get("inputs") or {}).get("model") or {}).get("path")
        if model_path:
            candidates.append(Path(model_path).parent)
        for c in candidates:
            if _stage(c) == "train":
                chosen["run"] = c
                notes.append(f"model run {c} found through the {fw} project's records")
                break
    if not any(chosen.values()):
        raise ArtifactError(
            f"{root}: no model run (manifest.json stage 'train'), hls4ml project or RTL project "
            "(rtl_manifest.json) found here or three levels below"
        )
    return {**chosen, "runs": found["run"], "notes": notes}


def _firmware_source_run(fw: Path) -> Path | None:
    """The model run a firmware directory records (``source_run.json`` or its manifest's model input)."""
    src = _read_json(fw / SOURCE_RUN_FILE) or {}
    if src.get("run"):
        return Path(src["run"])
    man = _read_json(fw / MANIFEST_FILE) or {}
    model_path = ((man.get("inputs") or {}).get("model") or {}).get("path")
    return Path(model_path).parent if model_path else None


def ensemble_members(main_run: Path | None, runs: Sequence[Path]) -> list[Path]:
    """The other training seeds of ``main_run``'s model among ``runs``: runs of the same model
    config (name and kind) with a different seed, sorted by path."""
    if main_run is None:
        return []

    def key(r: Path) -> tuple[Any, Any, Any] | None:
        man = _read_json(Path(r) / MANIFEST_FILE) or {}
        cfg = man.get("config") or {}
        return (cfg.get("name"), cfg.get("kind"), cfg.get("seed", man.get("seed")))

    k0 = key(main_run)
    out = []
    for r in runs:
        if Path(r).resolve() == Path(main_run).resolve():
            continue
        k = key(r)
        if k is not None and k[:2] == k0[:2] and k[2] != k0[2]:
            out.append(Path(r))
    return sorted(out)


def _fig(flavour: str, figure: str, value: Any, unit: str, source: str, kind: str, note: str | None = None) -> dict:
    d = {"flavour": flavour, "figure": figure, "value": value, "unit": unit, "source": source, "kind": kind}
    if note:
        d["note"] = note
    return d


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars/arrays to Python, Paths to str, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    if hasattr(obj, "to_json"):
        return _clean(obj.to_json())
    return str(obj)


# ----------------------------------------------------------------------------- model section


def _model_section(run: Path | None) -> dict[str, Any]:
    if run is None:
        return absent("no model run directory (manifest.json with stage 'train') found")
    from trigger_ml.core.artifacts import read_manifest

    man = read_manifest(run, expect_stage="train", verify_inputs=False)
    cfg = man.get("config") or {}
    q = cfg.get("quantization") or {}
    tr = cfg.get("training") or {}
    figs = man.get("figures") or {}
    summary = {
        "kind": cfg.get("kind"),
        "preprocessing": cfg.get("preprocessing"),
        "hidden": cfg.get("hidden"),
        "latent": cfg.get("latent"),
        "n_features": cfg.get("n_features"),
        "quantization": q.get("mode"),
        "beta": q.get("beta"),
        "epochs": tr.get("epochs"),
        "batch_size": tr.get("batch_size"),
        "seed": cfg.get("seed", man.get("seed")),
    }
    training: dict[str, Any] = {}
    for which in ("quantized", "float"):
        f = figs.get(which) or {}
        if f:
            training[which] = {k: f.get(k) for k in ("best_val_loss", "epochs", "seconds", "seconds_per_epoch") if k in f}
    ebops = (figs.get("quantized") or {}).get("ebops")
    return {
        "status": "ok",
        "path": str(run),
        "name": cfg.get("name", run.name),
        "config": {k: v for k, v in summary.items() if v is not None},
        "ebops": None if ebops is None else {"value": float(ebops), "unit": "EBOPs", "source": "HGQ2 (training manifest)"},
        "training": training,
        "versions": man.get("versions", {}),
        "data": None if (data := training_data_path(man)) is None else str(data),
    }


# ----------------------------------------------------------------------------- metrics


#: the uncertainty band of the ROC curves
ROC_BAND = "Clopper-Pearson 68 % interval per point (binomial: signal events above the threshold for the TPR, " \
           "background events above it for the FPR; trigger_ml.core.metrics.clopper_pearson)"


def _roc_points(bkg: np.ndarray, sig: np.ndarray, max_points: int = 300) -> dict[str, Any]:
    """ROC points (sklearn ``roc_curve``, thinned to about ``max_points`` spread evenly in log FPR)
    with a Clopper-Pearson 68 % band per point: ``tpr_lo``/``tpr_hi`` from the number of signal
    events above the threshold, ``fpr_lo``/``fpr_hi`` from the number of background events above it."""
    from sklearn.metrics import roc_curve

    from trigger_ml.core.metrics import clopper_pearson_array

    n_b, n_s = len(bkg), len(sig)
    y = np.r_[np.zeros(n_b), np.ones(n_s)]
    fpr, tpr, _ = roc_curve(y, np.r_[bkg, sig])
    if len(fpr) > max_points:
        keep = np.unique(np.r_[0, np.round(np.geomspace(1, len(fpr) - 1, max_points)).astype(int), len(fpr) - 1])
        fpr, tpr = fpr[keep], tpr[keep]
    k_s = np.rint(tpr * n_s).astype(np.int64)  # roc_curve's rates are counts / n: exact back to counts
    k_b = np.rint(fpr * n_b).astype(np.int64)
    t_lo, t_hi = clopper_pearson_array(k_s, n_s)
    f_lo, f_hi = clopper_pearson_array(k_b, n_b)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "tpr_lo": t_lo.tolist(), "tpr_hi": t_hi.tolist(),
            "fpr_lo": f_lo.tolist(), "fpr_hi": f_hi.tolist(), "n_background": n_b, "n_signal": n_s,
            "band": ROC_BAND}


def _histogram(samples: dict[str, dict[str, np.ndarray]], bins: int = 60, marks: Sequence[float] = ()) -> dict[str, Any]:
    """Score histograms of several models (``{model: {class: scores}}``) on common bin edges.

    Scores that are (almost all) positive - squared reconstruction errors - get logarithmic bins
    from the 0.1 % quantile to the maximum (``log_x``); otherwise linear bins over the 0.1-99.9 %
    quantiles. The range is widened to hold every value of ``marks`` (the thresholds drawn on the
    plot). Values outside the range are counted in the first / last bin.
    """
    allv = np.concatenate([np.asarray(v, np.float64).ravel() for d in samples.values() for v in d.values()])
    allv = allv[np.isfinite(allv)]
    if not len(allv):
        allv = np.zeros(1)
    pos = allv[allv > 0]
    log_x = bool(len(pos) and (len(pos) >= 0.99 * len(allv)) and pos.max() > 20 * np.quantile(pos, 0.001))
    marks = [float(m) for m in marks if m is not None and math.isfinite(float(m))]
    if log_x:
        lo, hi = float(np.quantile(pos, 0.001)), float(pos.max())
        pm = [m for m in marks if m > 0]
        if pm:
            lo, hi = min(lo, min(pm) / 1.2), max(hi, max(pm) * 1.2)
        edges = np.geomspace(lo, hi * (1 + 1e-9), bins + 1)
    else:
        lo, hi = (float(v) for v in np.quantile(allv, [0.001, 0.999]))
        if not hi > lo:
            lo, hi = float(allv.min()) - 0.5, float(allv.max()) + 0.5
        if marks:
            pad = 0.03 * (max(hi, *marks) - min(lo, *marks))
            lo, hi = min(lo, min(marks) - pad), max(hi, max(marks) + pad)
        edges = np.linspace(lo, hi, bins + 1)
    lo, hi = float(edges[0]), float(edges[-1])
    return {
        "edges": edges.tolist(),
        "log_x": log_x,
        "counts": {m: {c: np.histogram(np.clip(np.asarray(v, np.float64), lo, hi), edges)[0].tolist()
                       for c, v in d.items()} for m, d in samples.items()},
        "n": {m: {c: int(len(v)) for c, v in d.items()} for m, d in samples.items()},
    }


def _firmware_scorer(fw: Path | None) -> tuple[Callable[[np.ndarray], np.ndarray] | None, str]:
    """Score values of model inputs by the firmware (any firmware directory), or (None, why not)."""
    if fw is None:
        return None, "no firmware directory"
    from trigger_ml.scoring import FirmwareScorer

    try:
        scorer = FirmwareScorer(fw)
        scorer.score_type  # noqa: B018 - load now, so that a broken directory is reported here
    except TriggerMLError as err:
        return None, _reason(err)
    return scorer.values_of_inputs, ""


BASELINE_TEXT = {"ht": "HT (scalar sum of jet pT)", "met": "MET", "n_leptons": "lepton count (e/γ + μ)",
                 "n_objects": "object count (e/γ + μ + jets)"}
#: the FPR working points of the tail composition (besides the target rate and the menu's thresholds)
TAIL_FPRS = (1e-5, 1e-4)


def _process_names() -> dict[int, str]:
    from trigger_ml.data.synth import PROCESS_CODES

    return {v: k for k, v in PROCESS_CODES.items()}


def _process_labels(path: Path, start: int, stop: int) -> tuple[np.ndarray | None, str]:
    """The per-event ``process`` codes of the background events ``[start, stop)``, or (None, why not)."""
    import h5py

    from trigger_ml.data.adc2021 import read_extra

    try:
        with h5py.File(path, "r") as f:
            has = "process" in f
    except OSError as err:
        return None, f"{path}: {_reason(err)}"
    if not has:
        return None, (f"{path} carries no per-event 'process' dataset (real data, or events not written by "
                      "`trigger-ml data generate`): the composition of the background tail is unknown")
    return read_extra(path, "process", start, stop), ""


def tail_composition_section(bkg_sorted: dict[str, Any], bkg: dict[str, np.ndarray], labels: np.ndarray | None,
                             why: str, fprs: Sequence[float], rate_khz: float | None, bx_rate_hz: float,
                             firmware_points: dict[str, float] | None = None) -> dict[str, Any]:
    """Per model, which background processes make up the events above each working point: the
    thresholds of FPR ``fprs`` and of the target rate (quoted only where 10/FPR background events
    support them, as the TPRs), and the firmware's menu thresholds (``name -> score``, rule score > value)."""
    from trigger_ml.core.metrics import background_shortfall, tail_composition

    if labels is None:
        return absent(why)
    names = _process_names()
    points: list[tuple[str, float]] = [(f"FPR {f:g}", f) for f in fprs]
    if rate_khz:
        points.append((f"{rate_khz:g} kHz", rate_khz * 1e3 / bx_rate_hz))
    out: dict[str, Any] = {}
    for model, b in bkg_sorted.items():
        rows: dict[str, Any] = {}
        for label, fpr in points:
            short = background_shortfall(b.n, fpr)
            if short is not None:
                rows[label] = {"fpr_target": fpr, "threshold": None, "reason": short}
                continue
            ok = b.n_ge / b.n <= fpr
            j0 = int(np.argmax(ok)) if ok.any() else len(b.values)
            if j0 >= len(b.values):
                rows[label] = {"fpr_target": fpr, "threshold": None, "reason": "no background event passes"}
                continue
            rows[label] = {"fpr_target": fpr} | tail_composition(bkg[model], labels, float(b.values[j0]), names=names)
        if model == "firmware" and firmware_points:
            for wp, thr in firmware_points.items():
                rows[f"menu {wp}"] = tail_composition(bkg[model], labels, thr, strict=True, names=names)
        out[model] = rows
    return {"status": "ok", "models": out, "n_events": int(len(labels)),
            "note": "background events above each working point by generated process; FPR points quoted only where "
                    ">= 10/FPR background events support them, as the TPRs"}


def _ensemble_section(main_run: Path, main_per_signal: dict[str, Any], others: Sequence[Path], signals: Sequence[Path],
                      background: Path | None, max_events: int | None, target_rate_khz: float | None) -> dict[str, Any]:
    """Mean ± std over training seeds of AUC and TPRs (float twin and quantized model), each run on its
    held-out background (:func:`trigger_ml.evaluate.evaluate_artifact`; the main run's figures reused)."""
    from trigger_ml.core.metrics import mean_std
    from trigger_ml.evaluate import evaluate_artifact

    if not others:
        return absent("one training seed: the seed-to-seed spread is not measured (train an ensemble with "
                      "`trigger-ml train --seeds k` or `trigger-ml demo --seeds k`)")
    per_run: dict[str, dict[str, Any]] = {str(main_run): {s: {k: v for k, v in m.items() if k in ("float", "quantized")}
                                                          for s, m in main_per_signal.items()}}
    for r in others:
        res = evaluate_artifact(r, list(signals), background, max_events=max_events, target_rate_khz=target_rate_khz,
                                baselines=False)
        per_run[str(r)] = res["signals"]
    keys = ("auc", "tpr_at_fpr_1e-5", "tpr_at_fpr_1e-4", "tpr_at_rate")
    val = lambda m, k: m.get(k) if k == "auc" else (m.get(k) or {}).get("tpr")
    agg: dict[str, Any] = {}
    for sig in main_per_signal:
        agg[sig] = {}
        for kind in ("float", "quantized"):
            rows = [pr[sig][kind] for pr in per_run.values() if kind in pr.get(sig, {})]
            if rows:
                agg[sig][kind] = {k: mean_std([val(r, k) for r in rows]) for k in keys}
    return {"status": "ok", "runs": list(per_run), "n_runs": len(per_run), "signals": agg,
            "per_run": {r: {s: {k: {kk: val(m, kk) for kk in keys} for k, m in v.items()} for s, v in sig.items()}
                        for r, sig in per_run.items()},
            "note": "mean ± standard deviation (ddof=1) over training seeds; a TPR a run cannot quote (too few "
                    "background events) is left out of its mean"}


def trigger_metrics(
    run: Path | None, fw: Path | None, signals: Sequence[Path], background: Path | None,
    max_events: int | None, target_rate_khz: float | None, *, marks: Sequence[float] = (),
    working_points: dict[str, float] | None = None, ensemble: Sequence[Path] = (), baselines: bool = True,
) -> dict[str, Any]:
    """Physics of the trigger per signal for the float twin, the quantized model and the firmware
    (``fw``: any firmware directory): AUC, TPR at FPR 1e-5/1e-4 and at ``target_rate_khz`` (quoted
    only where 10/FPR background events support them; 68 % Clopper-Pearson and bootstrap intervals,
    :func:`trigger_ml.core.metrics.signal_metrics`), ROC points and score histograms, on the model's
    held-out background (the one held-out rule). Beside them (``baselines``) the trivial cuts of
    :mod:`trigger_ml.data.baselines` (HT, MET, lepton and object counts) on the same events; the
    per-process composition of the background tail at each working point (``working_points``:
    the firmware menu's thresholds, name -> score); and with ``ensemble`` (other training seeds of
    the same model) mean ± std over the seeds. The demo's ``metrics.json`` and the report both come
    from this function. ``marks``: score values (thresholds) the histograms' range must hold."""
    if not signals:
        return absent("no signal files given (pass --signals FILE.h5 to `trigger-ml report`, or signals=[...] to "
                      "collect_report, to evaluate the trigger performance)")
    if run is None:
        return absent("physics metrics need the model run directory (preprocessing and Keras models)")
    from trigger_ml.core.metrics import BX_RATE_HZ, SortedScores, signal_metrics
    from trigger_ml.evaluate import _scores, check_rates, check_signal_files
    from trigger_ml.train import load_artifact

    check_rates(target_rate_khz, BX_RATE_HZ)
    art = load_artifact(run)
    if art.config.kind == "classifier":
        return absent(f"{art.config.name} is a classifier; the report's trigger metrics are for anomaly scores")
    ho = art.held_out(background, max_events)  # the one held-out rule, as evaluate/emulate/demo
    check_signal_files(signals)  # layout and events, before any model runs
    b_note = ho.note
    xb = art.inputs_from_file(ho.path, start=ho.start, stop=ho.stop)

    models: dict[str, Callable[[np.ndarray], np.ndarray]] = {"quantized": lambda x: _scores(art.model, x)}
    sources = {
        "float": "evaluated (Keras float twin)",
        "quantized": "evaluated (Keras HGQ2 quantized model)",
        "firmware": "emulated (bit-exact firmware scorer: hls4ml IR emulator or RTL graph interpreter)",
    }
    notes = []
    try:
        fmodel = art.float_model()
        models = {"float": lambda x: _scores(fmodel, x), **models}
    except ArtifactError as err:
        notes.append(f"float twin unavailable: {_reason(err)}")
    fw, why = _firmware_scorer(fw)
    if fw is not None:
        models["firmware"] = fw
    else:
        notes.append(f"firmware scores unavailable: {why}")

    bkg = {k: f(xb) for k, f in models.items()}
    del xb
    bsorted = {k: SortedScores(v) for k, v in bkg.items()}  # sorted once, shared by every signal and FPR
    agreement = None
    if "firmware" in bkg:
        d = np.abs(bkg["firmware"] - bkg["quantized"])
        agreement = {
            "n_events": int(len(d)),
            "identical_fraction": float(np.mean(d == 0)) if len(d) else None,
            "max_abs_difference": float(d.max()) if len(d) else None,
            "note": "background scores of the bit-exact firmware emulator vs the Keras quantized model",
        }
    base_b = None
    if baselines:
        from trigger_ml.data.baselines import baseline_scores_file

        base_b = baseline_scores_file(ho.path, ho.start, ho.stop)
        base_sorted = {k: SortedScores(v) for k, v in base_b.items()}
    per_signal: dict[str, Any] = {}
    per_base: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    base_curves: dict[str, Any] = {}
    hists: dict[str, Any] = {}
    for s in signals:
        s = Path(s)
        xs = art.inputs_from_file(s, stop=max_events)
        name = s.stem
        sig = {k: f(xs) for k, f in models.items()}
        per_signal[name] = {
            k: signal_metrics(bsorted[k], sig[k], target_rate_khz, BX_RATE_HZ) | {"n_signal": len(xs), "source": sources[k]}
            for k in models
        }
        curves[name] = {k: _roc_points(bkg[k], sig[k]) for k in models}
        hists[name] = _histogram({k: {"background": bkg[k], name: sig[k]} for k in models}, marks=marks)
        if base_b is not None:
            base_s = baseline_scores_file(s, stop=max_events)
            per_base[name] = {k: signal_metrics(base_sorted[k], base_s[k], target_rate_khz, BX_RATE_HZ)
                              | {"n_signal": len(base_s[k]), "source": f"baseline: {BASELINE_TEXT.get(k, k)} "
                                                                        "(trigger_ml.data.baselines)"}
                              for k in base_b}
            base_curves[name] = {k: _roc_points(base_b[k], base_s[k], max_points=100) for k in base_b}
    labels, why_no = _process_labels(ho.path, ho.start, ho.stop)
    tail = _section(lambda: tail_composition_section(bsorted, bkg, labels, why_no, TAIL_FPRS, target_rate_khz,
                                                     BX_RATE_HZ, working_points))
    ens = _section(lambda: _ensemble_section(Path(run), per_signal, list(ensemble), signals, background, max_events,
                                             target_rate_khz))
    from trigger_ml.core.metrics import INTERVAL_METHOD, MIN_BACKGROUND_PER_FPR

    return {
        "status": "ok",
        "background": b_note,
        "n_background": int(ho.n_events),
        "models": list(models),
        "sources": {k: sources[k] for k in models},
        "target_rate_khz": target_rate_khz,
        "bx_rate_hz": BX_RATE_HZ,
        "signals": per_signal,
        "baselines": per_base if base_b is not None else absent("baselines not requested"),
        "roc": curves,
        "baseline_roc": base_curves,
        "score_hist": hists,
        "tail_composition": tail,
        "ensemble": ens,
        "firmware_agreement": agreement,
        "statistics": {
            "rule": f"a TPR at FPR f is quoted only with >= {MIN_BACKGROUND_PER_FPR}/f independent (held-out) "
                    f"background events ({MIN_BACKGROUND_PER_FPR} expected above the threshold)",
            "interval": INTERVAL_METHOD,
        },
        "notes": notes,
    }


# ----------------------------------------------------------------------------- trigger threshold and menu


def firmware_threshold(hls: Path | None, rtl: Path | None = None) -> dict[str, Any]:
    """The threshold the firmware was built with (the hls4ml trigger wrapper) and the rate it was
    calibrated to, from the HLS project's ``manifest.json`` (``config.threshold``, written by
    ``trigger-ml convert``), cross-checked with the raw integer in its ``firmware_model.json``.
    An RTL (da4ml/alkaid) project has no trigger bit: its working points come from ``trigger-ml emulate``."""
    from trigger_ml.core.threshold import Threshold

    if hls is None:
        why = ("the RTL (alkaid) project has no trigger bit (the threshold lives in the hls4ml trigger wrapper); "
               f"working points come from `trigger-ml emulate {rtl}`") if rtl is not None else "no hls4ml project"
        return absent(why)
    man = _read_json(hls / MANIFEST_FILE) or {}
    rec = (man.get("config") or {}).get("threshold") if man.get("stage") == "firmware.hls" else None
    ir_thr = None
    if (hls / IR_FILE).is_file():
        from trigger_ml.ir import FirmwareModel

        ir_thr = FirmwareModel.load(hls / IR_FILE).trigger_threshold
    ir_raw = None if ir_thr is None else ir_thr.raw
    if not rec and ir_raw is None:
        src = _read_json(hls / SOURCE_RUN_FILE) or {}
        run = src.get("run") or "RUN"
        return absent(f"{hls} was converted without a trigger bit (no threshold in its manifest or IR); build one "
                      f"with `trigger-ml convert {run} --out DIR --rate-khz 5` (or --threshold VALUE)")
    notes = []
    if rec:
        t = Threshold.from_json(rec)
        source = f"hls4ml manifest ({hls / MANIFEST_FILE}, config.threshold)"
        if ir_raw is not None and ir_raw != t.raw:
            notes.append(f"the IR ({hls / IR_FILE}) holds raw {ir_raw}, the manifest {t.raw}: the project is "
                         "inconsistent; convert again")
    else:
        t = ir_thr
        source = f"firmware IR ({hls / IR_FILE}); no calibration record in the manifest"
    how = (f"calibrated to {t.target_rate_khz:g} kHz: the smallest threshold whose background rate does not exceed it, "
           f"on {t.n_total:,} held-out background events ({t.n_pass:,} fire)"
           if t.target_rate_khz is not None and t.n_total else
           (f"set as the value {t.requested!r}, placed on the score grid" if t.requested is not None else "set as a raw integer"))
    out = {"status": "ok", **t.to_json(), "how": how, "source": source, "ir_raw": ir_raw, "notes": notes}
    for k in ("score_output", "score_index", "top", "header"):
        if rec and k in rec:
            out[k] = rec[k]
    return out


def trigger_menu(
    fw: Path | None, background: Path | None, signals: Sequence[Path], menu_khz: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The working-point menu of the firmware ``fw`` (any firmware directory) on ``background``
    (the one held-out rule of the firmware's training run applies) and ``signals``: exactly
    :func:`trigger_ml.trigger.run.emulate` (``trigger-ml emulate``) on the same inputs, so the
    thresholds (score units and raw integers), rates and efficiencies with their Clopper-Pearson
    intervals, and pure rates are those of the emulate stage. Adds ``command``: the equivalent
    ``trigger-ml emulate`` command line."""
    if fw is None:
        return absent("no firmware directory: the working points are calibrated on the firmware's own integer scores "
                      "(convert the model with `trigger-ml convert`)")
    if background is None:
        return absent("no background events: pass --background FILE.h5 (a model run records its training file, "
                      "whose held-out events are used by default)")
    from trigger_ml.trigger.run import emulate

    table = emulate(fw, [Path(background)], [Path(s) for s in signals], menu_khz=menu_khz)
    cmd = f"trigger-ml emulate {fw} --background {background}" + "".join(f" --signals {s}" for s in signals)
    if menu_khz:
        cmd += " --menu " + ",".join(f"{k}={v:g}" for k, v in menu_khz.items())
    return {"status": "ok", **table, "command": cmd,
            "source": f"trigger_ml.trigger.run.emulate ({table.get('scorer')}), as `trigger-ml emulate`"}


def _signal_candidates(dirs: Sequence[Path | None], limit: int = 8) -> list[Path]:
    """Event files in ``dirs`` whose HDF5 attribute ``sample`` names a signal (files written by
    ``trigger-ml data generate``), sorted; used to spell out the command that adds the physics section."""
    import h5py

    out: list[Path] = []
    for d in dict.fromkeys(Path(x).resolve() for x in dirs if x is not None and Path(x).is_dir()):
        for f in sorted(d.glob("*.h5")):
            try:
                with h5py.File(f, "r") as h:
                    sample = h.attrs.get("sample")
            except OSError:
                continue
            if isinstance(sample, bytes):
                sample = sample.decode()
            if sample and str(sample) not in ("background", "none"):
                out.append(f)
            if len(out) >= limit:
                return out
    return out


def physics_command(path: str | os.PathLike, run: Path | None, signals: Sequence[Path] = (),
                    fw: Path | None = None) -> dict[str, Any]:
    """How to add the physics section (metrics and the working-point menu) to a report of ``path``:
    ``{"argv": [...], "signals_found": bool, "note": ...}`` - the report writer appends ``--out`` and
    ``--force``. Signal files are looked for next to the model's training data and in ``path/data``;
    without any, the command carries a placeholder and the note says how to generate signal events.
    Without a known training file (of ``run`` or of the firmware ``fw``'s recorded run) the command
    carries a ``--background`` placeholder too."""
    data = _default_background(run, fw)
    found = list(signals) or _signal_candidates([data.parent if data else None, Path(path) / "data"])
    argv = ["trigger-ml", "report", str(path)]
    for f in found:
        argv += ["--signals", str(f)]
    note = None
    if not found:
        argv += ["--signals", "SIGNAL.h5"]
        note = ("SIGNAL.h5: an ADC2021-layout file of signal events (repeat --signals per file); synthetic ones come "
                "from `trigger-ml data generate --events 100000 --signal all --out sig.h5`")
    if data is None:
        argv += ["--background", "BACKGROUND.h5"]
        note = ((note + "; ") if note else "") + ("BACKGROUND.h5: background events (no model run records its "
                                                  "training file)")
    if run is None:
        note = ((note + "; ") if note else "") + ("the efficiencies, ROC curves and score plots also need the model run: "
                                                  "give the directory holding the run and its firmware")
    return {"argv": argv, "signals_found": bool(found), "note": note}


# ----------------------------------------------------------------------------- firmware figures


def _hls_info(hls: Path | None) -> dict[str, Any] | None:
    if hls is None:
        return None
    man = _read_json(hls / MANIFEST_FILE)
    if not man or man.get("stage") != "firmware.hls":
        return None
    return man.get("config") or {}


def _firmware_model(hls: Path | None, run: Path | None) -> tuple[Any, str]:
    """The FirmwareModel of the HLS project (``firmware_model.json``); the report never runs hls4ml."""
    from trigger_ml.ir import FirmwareModel

    if hls is not None and (hls / IR_FILE).is_file():
        return FirmwareModel.load(hls / IR_FILE), f"firmware IR ({hls / IR_FILE})"
    where = f"in {hls}" if hls is not None else "(no hls4ml firmware directory)"
    how = f"; write it with `trigger-ml convert {run} --out <dir>`" if run is not None else ""
    raise ArtifactError(f"no {IR_FILE} {where}: the report reads the firmware IR, it does not run hls4ml{how}")


def _bitwidths_from_ir(fm) -> list[dict[str, Any]]:
    rows = []
    for layer in fm.layers:
        if layer.kind == "input":
            continue
        row: dict[str, Any] = {"layer": layer.name, "kind": layer.kind, "result": layer.type.width,
                               "result_type": layer.type.to_hls()}
        for role in ("weight", "bias", "accum"):
            t = layer.types.get(role)
            if t is not None:
                row[role] = t.width
                row[f"{role}_type"] = t.to_hls()
        if layer.kind == "quantizer" and "b" in layer.arrays:
            b = np.asarray(layer.arrays["b"]).reshape(-1)
            row["per_element_min"] = int(b.min()) if b.size else 0
            row["per_element_max"] = int(b.max()) if b.size else 0
            row["pruned_elements"] = int(np.count_nonzero(b == 0))
        rows.append(row)
    return rows


def _width_of(type_str: str) -> int | None:
    import re

    m = re.search(r"fixed<\s*(\d+)", type_str) or re.search(r"int<\s*(\d+)", type_str)
    return int(m.group(1)) if m else None


def _bitwidths_from_precisions(prec: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    rows = []
    for name, d in prec.items():
        row: dict[str, Any] = {"layer": name}
        for role in ("weight", "bias", "accum", "result"):
            if role in d:
                w = _width_of(str(d[role]))
                if w is not None:
                    row[role] = w
                    row[f"{role}_type"] = str(d[role])
        rows.append(row)
    return rows


def _measured_figures(flavour: str, d: Path, clock: tuple[float, str], part_family: str | None) -> dict[str, Any]:
    """Figures recorded by ``trigger-ml measure`` in ``d/measurements.json`` (read only, no tool runs).

    Returns ``{"figures", "synth" (resource counts for the calibration), "cycles" (Verilator
    latency), "missing" (one line: what is not measured and the command that measures it, or
    None), "status"}``.
    """
    from trigger_ml.measure import find_project, read_measurements

    cmd = f"trigger-ml measure {d}"
    out: dict[str, Any] = {"figures": [], "synth": None, "cycles": None, "missing": None, "status": "absent",
                           "file": str(d / MEASUREMENTS_FILE), "command": cmd}
    try:
        m = read_measurements(d)
    except TriggerMLError as err:
        out.update(status="unreadable", missing=f"{flavour}: {_reason(err)}")
        return out
    if m is None:
        if flavour == "hls4ml":
            try:  # an hls4ml project is measurable only with the Verilog of a vendor HLS synthesis
                if find_project(d).rtl_dir is None:
                    out["status"] = "not measurable"
                    return out
            except TriggerMLError:
                out["status"] = "not measurable"
                return out
        out["missing"] = (f"{flavour} resources and latency not measured (no {MEASUREMENTS_FILE} in {d}); "
                          f"measure them with `{cmd}`")
        return out
    if m.get("stale"):
        out.update(status="stale", missing=(
            f"{flavour}: {d / MEASUREMENTS_FILE} describes an earlier version of the design (design hash changed); "
            f"measure again with `{cmd}`"))
        return out
    not_measured: list[str] = []
    timeout = None
    for step in ("resources", "latency"):
        e = m.get(step)
        if not isinstance(e, dict):
            if flavour == "alkaid" or step == "resources":  # Verilator measures da4ml RTL only
                not_measured.append(f"{step} not measured")
            continue
        if e.get("status") != "measured":
            if e.get("measurable", True):  # not e.g. the latency of an hls4ml project: nothing to run
                not_measured.append(f"{step} {e.get('source') or 'not measured'}")
                timeout = e.get("timeout_s") or timeout
            continue
        figs = e.get("figures") or {}
        if step == "resources":
            other = (f"synthesised for the Yosys family {e.get('family')}, not {part_family} of the report's part"
                     if part_family and e.get("family") and e.get("family") != part_family else None)
            for name, f in figs.items():
                note = "; ".join(n for n in (f.get("note"), other) if n) or None
                out["figures"].append(_fig(flavour, name, f["value"], f.get("unit", name), f.get("source") or e["source"],
                                           "measured", note))
            out["synth"] = {"luts": (figs.get("LUT") or {}).get("value"), "ffs": (figs.get("FF") or {}).get("value"),
                            "source": e.get("source")}
        elif "latency_cycles" in figs:
            cyc = figs["latency_cycles"]
            src = cyc.get("source") or e["source"]
            out["cycles"] = int(cyc["value"])
            out["latency_source"] = src
            out["figures"].append(_fig(flavour, "latency_cycles", int(cyc["value"]), "cycles", src, "measured"))
            out["figures"].append(_fig(flavour, "latency_ns", int(cyc["value"]) * clock[0], "ns", src, "measured",
                                       f"x clock {clock[0]:g} ns ({clock[1]})"))
    out["status"] = "measured" if not not_measured else "partly measured"
    if not_measured:
        how = f"`{cmd} --timeout {2 * float(timeout):g}`" if timeout else f"`{cmd}`"
        out["missing"] = f"{flavour} {'; '.join(not_measured)}: measure with {how}"
    return out


# ----------------------------------------------------------------------------- main entry


def collect_report(
    path: str | os.PathLike,
    *,
    budget_ns: float | None = None,
    budget_bx: float | None = DEFAULT_BUDGET_BX,
    part: str | None = None,
    clock_ns: float | None = None,
    signals: Sequence[str | os.PathLike] = (),
    background: str | os.PathLike | None = None,
    measure: bool | None = None,
    max_events: int | None = None,
    target_rate_khz: float | None = None,
    menu_khz: dict[str, float] | None = None,
    ensemble: Sequence[str | os.PathLike] = (),
    metrics: dict[str, Any] | None = None,
    convert_for_estimate: bool | None = None,
    synth_timeout_s: float | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Collect the report of a run / firmware directory (or their parent); see the module docstring.

    ``budget_ns`` wins over ``budget_bx`` (default 2 BX = 50 ns). ``part`` / ``clock_ns`` override
    what the projects recorded. ``max_events`` caps the events read per file for the physics metrics
    (default: every held-out background event - a TPR at FPR f needs 10/f of them).
    ``ensemble``: further runs of the same model with other training seeds (run directories or
    directories of ``seed*`` runs); other seeds found below ``path`` join automatically; the
    metrics then carry mean ± std over the seeds. ``metrics``: a metrics section already computed
    by :func:`trigger_metrics` on the same inputs (the demo), used instead of scoring again.
    ``target_rate_khz``: the rate of the TPR column; None takes the rate the firmware's threshold
    was calibrated to (its manifest), else 10 kHz (said in ``metrics.target_rate_source``).
    ``menu_khz``: the working points (name -> kHz) of the menu section (default: the emulate
    stage's menu); the menu is computed exactly as ``trigger-ml emulate`` on the same files, on
    every held-out background event (not capped by ``max_events``). Without signal or background
    files, ``physics_command`` holds the command that adds the physics section.

    The report only reads: measured figures come from the ``measurements.json`` that
    ``trigger-ml measure`` (:func:`trigger_ml.measure.measure`) writes next to a firmware project;
    without it the estimates stand alone and the report says which command measures them. It
    never runs Yosys, Verilator or hls4ml. ``measure``, ``convert_for_estimate`` and
    ``synth_timeout_s`` are ignored (kept so that older callers still work).
    """
    if measure or convert_for_estimate or synth_timeout_s is not None:
        import warnings

        warnings.warn("collect_report no longer measures or converts (measure=, convert_for_estimate=, "
                      "synth_timeout_s= are ignored); run `trigger-ml measure <firmware dir>` first",
                      DeprecationWarning, stacklevel=2)
    say = log or (lambda _msg: None)
    from trigger_ml.reports.budget import BX_NS, resolve_budget_ns

    if budget_ns is not None:
        budget = resolve_budget_ns(budget_ns=budget_ns)
    else:
        budget = resolve_budget_ns(budget_bx=DEFAULT_BUDGET_BX if budget_bx is None else budget_bx)

    found = discover(path)
    run, hls, rtl = found["run"], found["hls"], found["rtl"]
    extra_runs: list[Path] = []
    for e in ensemble:
        e = Path(e)
        seeds = sorted(p for p in e.glob("seed*") if _stage(p) == "train") if _stage(e) != "train" else []
        extra_runs.extend(seeds or [e])
    members = ensemble_members(run, [*found.get("runs", []), *extra_runs])
    notes: list[str] = list(found["notes"])
    for r in extra_runs:
        if r not in members and (run is None or r.resolve() != run.resolve()):
            notes.append(f"ensemble: {r} is not another training seed of {run} (a different model, the same seed or "
                         "not a model run); left out")
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "path": str(Path(path)),
        "inputs": {"run": str(run) if run else None, "hls": str(hls) if hls else None, "rtl": str(rtl) if rtl else None,
                   "notes": notes},
    }

    say("model")
    report["model"] = _section(lambda: _model_section(run))
    name = report["model"].get("name") if report["model"]["status"] == "ok" else None
    report["title"] = f"Trigger firmware report: {name or Path(path).resolve().name}"

    hls_cfg = _hls_info(hls)
    rtl_man = _read_json(rtl / RTL_MANIFEST_FILE) if rtl else None

    # ---- part and clocks
    vendor = None
    vendor_err = None
    if hls is not None:
        try:
            from trigger_ml.reports.vendor import (
                missing_reports_message,
                parse_vendor_reports,
            )

            vendor = parse_vendor_reports(hls)
            if vendor is None:
                vendor_err = missing_reports_message(hls)
        except Exception as err:  # noqa: BLE001
            vendor_err = _reason(err)
    else:
        vendor_err = "no hls4ml project directory"

    if part is not None:
        part_name, part_src = part, "given"
    elif hls_cfg and hls_cfg.get("part"):
        part_name, part_src = str(hls_cfg["part"]), "hls4ml manifest"
    elif vendor is not None and vendor.part:
        part_name, part_src = vendor.part, "vendor report"
    else:
        part_name, part_src = DEFAULT_PART, "default (CMS Phase-2 L1 boards: VU13P)"

    def _part() -> dict[str, Any]:
        from trigger_ml.reports.parts import lookup_part

        p = lookup_part(part_name)
        return {"name": part_name, "device": p.device, "family": p.family, "totals": p.totals(), "source": part_src}

    report["part"] = _section(_part)

    hls_clock = _pick_clock(
        (clock_ns, "given"),
        ((hls_cfg or {}).get("clock_ns"), "hls4ml manifest"),
        (vendor.clock_target_ns if vendor is not None else None,
         vendor.sources.get("clock_target_ns", "vendor report") if vendor is not None else ""),
    )
    rtl_clock = _pick_clock((clock_ns, "given"), ((rtl_man or {}).get("clock_ns"), RTL_MANIFEST_FILE))

    figures: list[dict[str, Any]] = []
    absent_sources: list[dict[str, str]] = []

    # ---- parsed (vendor)
    if vendor is not None:
        src = vendor.sources
        clk = vendor.clock_target_ns
        if vendor.latency_max_cycles is not None:
            figures.append(_fig("hls4ml", "latency_cycles", vendor.latency_max_cycles, "cycles",
                                src["latency_max_cycles"], "parsed", "worst case"))
            if clk:
                figures.append(_fig("hls4ml", "latency_ns", vendor.latency_max_cycles * clk, "ns",
                                    src["latency_max_cycles"], "parsed", f"worst case x target clock {clk:g} ns"))
        if vendor.interval_max is not None:
            figures.append(_fig("hls4ml", "II_cycles", vendor.interval_max, "cycles", src["interval_max"], "parsed"))
        if vendor.clock_estimated_ns is not None:
            figures.append(_fig("hls4ml", "clock_estimated_ns", vendor.clock_estimated_ns, "ns",
                                src["clock_estimated_ns"], "parsed"))
        for k, v in vendor.resources.items():
            figures.append(_fig("hls4ml", k, v, k, src[f"resources.{k}"], "parsed"))
        if vendor.cosim_latency_max_cycles is not None:
            figures.append(_fig("hls4ml", "latency_cycles", vendor.cosim_latency_max_cycles, "cycles",
                                src["cosim_latency_max_cycles"], "parsed", "C/RTL co-simulation, worst case"))
    else:
        absent_sources.append({"kind": "parsed", "reason": vendor_err or "no vendor report"})

    # ---- measured (open tools, run by `trigger-ml measure`; here only read from measurements.json)
    say("measurements")
    synth = None
    verilator_cycles = None
    verilator_source = None
    measurements: dict[str, Any] = {}
    for flavour, d, clk in (("hls4ml", hls, hls_clock), ("alkaid", rtl, rtl_clock)):
        if d is None:
            continue
        got = _measured_figures(flavour, d, clk, report["part"].get("family"))
        figures.extend(got["figures"])
        measurements[flavour] = {k: got[k] for k in ("status", "file", "command")}
        if got["missing"]:
            absent_sources.append({"kind": "measured", "reason": got["missing"]})
        if flavour == "alkaid":
            synth, verilator_cycles, verilator_source = got["synth"], got["cycles"], got.get("latency_source")
    if rtl is None and not any(f["kind"] == "measured" for f in figures):
        absent_sources.append({"kind": "measured", "reason": "no RTL (alkaid) project to measure (convert with "
                                                             "`trigger-ml convert RUN --flavor verilog`)"})

    # ---- estimated
    ebops_fig = None
    if report["model"]["status"] == "ok" and report["model"].get("ebops"):
        ebops_fig = E.Figure(report["model"]["ebops"]["value"], "EBOPs", report["model"]["ebops"]["source"])

    say("analytic estimate")
    fm = None
    fm_src = None

    def _analytic() -> dict[str, Any]:
        nonlocal fm, fm_src
        fm, fm_src = _firmware_model(hls, run)
        est = E.analytic_hls_estimate(fm, clock_ns=hls_clock[0])
        out = est.to_json()
        out["firmware_model"] = fm_src
        applicable = True
        if hls_cfg and (hls_cfg.get("io_type") != "io_parallel" or str(hls_cfg.get("strategy", "")).lower() != "latency"):
            applicable = False
            out["note"] = (f"the hls4ml project uses {hls_cfg.get('io_type')} / {hls_cfg.get('strategy')}; "
                           "the analytic model describes io_parallel / Latency")
        out["applicable"] = applicable
        out["_obj"] = est
        return out

    analytic = _section(_analytic)
    est_obj = analytic.pop("_obj", None)
    report["analytic"] = analytic
    if est_obj is not None:
        for k, f in est_obj.figures().items():
            if k in ("multipliers",):
                figures.append(_fig("hls4ml", k, f.value, f.unit, f.source, "estimated"))
            else:
                figures.append(_fig("hls4ml", k, f.value, f.unit, f.source, "estimated",
                                    f"clock {hls_clock[0]:g} ns" if k == "latency_ns" else None))
    else:
        absent_sources.append({"kind": "estimated", "reason": f"analytic model: {analytic.get('reason')}"})

    if ebops_fig is not None:
        dsp = est_obj.totals["DSP"] if est_obj is not None else None
        for k, f in E.ebops_estimate(ebops_fig, "hls4ml", dsp=dsp).items():
            figures.append(_fig("hls4ml", k, f.value, f.unit, f.source, "estimated", f.note))
        for k, f in E.ebops_estimate(ebops_fig, "alkaid").items():
            figures.append(_fig("alkaid", k, f.value, f.unit, f.source, "estimated", f.note))
    else:
        absent_sources.append({"kind": "estimated", "reason": "EBOPs: no model run with figures.quantized.ebops"})

    da4ml_figs = None
    if rtl is not None:
        try:
            da4ml_figs = E.da4ml_estimate(rtl)
            for k, f in da4ml_figs.items():
                if k == "clock_ns":
                    continue
                figures.append(_fig("alkaid", k, f.value, f.unit, f.source, "estimated", f.note))
        except Exception as err:  # noqa: BLE001
            absent_sources.append({"kind": "estimated", "reason": f"da4ml: {_reason(err)}"})

    report["implementation"] = {
        "status": "ok" if figures else "absent",
        **({} if figures else {"reason": "; ".join(a["reason"] for a in absent_sources) or "nothing found"}),
        "figures": figures,
        "table": _table(figures),
        "absent_sources": absent_sources,
        "measurements": measurements,
        "clocks": {
            "hls4ml": {"value": hls_clock[0], "unit": "ns", "source": hls_clock[1]},
            "alkaid": {"value": rtl_clock[0], "unit": "ns", "source": rtl_clock[1]},
        },
        "hls_config": {k: hls_cfg.get(k) for k in ("backend", "part", "clock_ns", "io_type", "strategy", "reuse_factor")}
        if hls_cfg else None,
    }

    # ---- budget
    say("budget")
    report["budget"] = _budget_section(
        figures, budget, est_obj, vendor, hls, rtl, da4ml_figs, verilator_cycles, synth, part_name,
        report["part"]["status"] == "ok", hls_clock, rtl_clock, BX_NS, verilator_source=verilator_source,
    )

    # ---- bit widths
    def _bitwidths() -> dict[str, Any]:
        if fm is not None:
            return {"source": fm_src, "layers": _bitwidths_from_ir(fm)}
        if hls_cfg and hls_cfg.get("precisions"):
            return {"source": f"hls4ml project precisions ({hls / 'manifest.json'})",
                    "layers": _bitwidths_from_precisions(hls_cfg["precisions"])}
        return absent("no firmware IR and no hls4ml precisions: convert the model first")

    report["bitwidths"] = _section(_bitwidths)

    # ---- calibration
    def _calibration() -> dict[str, Any]:
        rows = E.calibrate(
            ebops=ebops_fig, analytic=est_obj, da4ml={k: v.to_json() for k, v in (da4ml_figs or {}).items()},
            synth=synth, verilator_cycles=verilator_cycles, vendor=vendor,
            hls_io_type=(hls_cfg or {}).get("io_type"), hls_strategy=(hls_cfg or {}).get("strategy"),
        )
        if not rows:
            return absent("no estimate has a measurement of the same design to compare with "
                          "(needs a vendor report of the HLS project or `trigger-ml measure` of the RTL project)")
        for r in rows:  # calibrate() labels the Verilator latency generically; use the recorded label
            if verilator_source and r["measured_source"] == "measured (verilator)":
                r["measured_source"] = verilator_source
        return {"rows": rows}

    report["calibration"] = _section(_calibration)

    # ---- the firmware's trigger threshold, physics metrics and the working-point menu (slowest: model
    #      inference and emulation)
    report["firmware_threshold"] = _section(lambda: firmware_threshold(hls, rtl))
    ft = report["firmware_threshold"]
    if target_rate_khz is not None:
        rate, rate_src = float(target_rate_khz), "given"
    elif ft.get("status") == "ok" and ft.get("target_rate_khz"):
        rate, rate_src = float(ft["target_rate_khz"]), f"the rate the firmware's threshold was calibrated to ({ft['source']})"
    else:
        rate, rate_src = DEFAULT_TARGET_RATE_KHZ, (f"default {DEFAULT_TARGET_RATE_KHZ:g} kHz: the firmware records no "
                                                   f"calibration rate ({ft.get('reason') or ft.get('how')})")
    sig_paths = [Path(s) for s in signals]
    fw = hls or rtl
    if signals or background is not None:
        say("menu")
        bkg = Path(background) if background is not None else _default_background(run, fw)
        report["menu"] = _section(lambda: trigger_menu(fw, bkg, sig_paths, menu_khz))
    else:
        report["menu"] = absent("no signal or background files given: the working points are calibrated on events")
    marks = [ft["value"]] if ft.get("status") == "ok" else []
    if report["menu"]["status"] == "ok":
        marks += [r["threshold"]["value"] for r in report["menu"]["working_points"].values() if r.get("threshold")]
    say("metrics")
    wps = ({wp: r["threshold"]["value"] for wp, r in report["menu"]["working_points"].items() if r.get("threshold")}
           if report["menu"]["status"] == "ok" else None)
    if metrics is not None:
        report["metrics"] = metrics if "status" in metrics else {"status": "ok", **metrics}
    else:
        report["metrics"] = _section(lambda: trigger_metrics(
            run, fw, sig_paths, Path(background) if background else None, max_events, rate, marks=marks,
            working_points=wps, ensemble=members))
    if report["metrics"]["status"] == "ok":
        report["metrics"]["target_rate_source"] = rate_src
    if not signals:
        report["physics_command"] = _section(lambda: physics_command(path, run, fw=fw))
    return _clean(report)


DEFAULT_TARGET_RATE_KHZ = 10.0


def _default_background(run: Path | None, fw: Path | None) -> Path | None:
    """The training file of the model run (or of the firmware's recorded run): its held-out events
    are the default background (the one held-out rule)."""
    from trigger_ml.scoring import source_run

    for r in (run, source_run(fw) if fw is not None else None):
        if r is not None:
            data = training_data_path(_read_json(Path(r) / MANIFEST_FILE) or {})
            if data is not None:
                return Path(data)
    return None


def _pick_clock(*candidates: tuple[Any, str]) -> tuple[float, str]:
    """The first given clock period (ns) with its source; the 5 ns default otherwise."""
    for value, source in candidates:
        if value:
            return float(value), source
    return DEFAULT_CLOCK_NS, "default"


def _table(figures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group figures by (flavour, figure) with the parsed / measured / estimated sources side by side."""
    order = ["latency_cycles", "latency_ns", "II_cycles", "clock_estimated_ns", "LUT", "LUT+55DSP", "FF", "DSP",
             "BRAM_18K", "URAM", "CARRY", "multipliers"]
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for f in figures:
        key = (f["flavour"], f["figure"])
        row = rows.setdefault(key, {"flavour": f["flavour"], "figure": f["figure"], "unit": f["unit"],
                                    "parsed": [], "measured": [], "estimated": []})
        row[f["kind"]].append({"value": f["value"], "source": f["source"], **({"note": f["note"]} if "note" in f else {})})

    def rank(k):
        fl, fig = k
        return (0 if fl == "hls4ml" else 1, order.index(fig) if fig in order else len(order), fig)

    return [rows[k] for k in sorted(rows, key=rank)]


def _best(figures: list[dict[str, Any]], flavour: str, name: str, kinds: Sequence[str]) -> dict[str, Any] | None:
    """The most trustworthy figure: parsed > measured > estimated; among estimates the design-specific
    ones (analytic model, da4ml) before the EBOPs proxy."""
    for kind in kinds:
        cands = [f for f in figures if f["flavour"] == flavour and f["figure"] == name and f["kind"] == kind]
        if cands:
            return sorted(cands, key=lambda f: f["source"] == E.SOURCE_EBOPS)[0]
    return None


def _budget_section(figures, budget_ns, est, vendor, hls, rtl, da4ml_figs, verilator_cycles, synth, part_name,
                    part_ok, hls_clock, rtl_clock, bx_ns, verilator_source=None) -> dict[str, Any]:
    from trigger_ml.reports.budget import build_budget_profile

    profiles: dict[str, Any] = {}

    def resources_for(flavour: str, kinds: Sequence[str]) -> tuple[dict[str, int] | None, dict[str, str]]:
        res: dict[str, int] = {}
        srcs: dict[str, str] = {}
        for key in _BUDGET_RESOURCES:
            f = _best(figures, flavour, key, kinds)
            if f is not None:
                res[key] = int(round(f["value"]))
                srcs[key] = f["source"]
        return (res or None), srcs

    def profile(flavour, layers, clock, ii, total=None, total_source=None, kinds=("parsed", "measured", "estimated")):
        res, res_src = resources_for(flavour, kinds)
        try:
            p = build_budget_profile(layers, clock[0], ii, budget_ns=budget_ns, resources=res if part_ok else None,
                                     part=part_name if part_ok else None, total_cycles=total, total_source=total_source)
        except TriggerMLError as err:
            return absent(_reason(err))
        d = p.to_json()
        d["clock_source"] = clock[1]
        d["resource_sources"] = res_src if part_ok else {}
        d["verdict"] = _verdict_text(p, flavour)
        d["status"] = "ok"
        return d

    # hls4ml flavour
    if est is not None or (vendor is not None and vendor.latency_max_cycles is not None):
        if est is not None:
            layers = est.layer_latencies()
        else:
            layers = [("whole design", int(vendor.latency_max_cycles), vendor.sources["latency_max_cycles"])]
        total = total_src = None
        if vendor is not None and vendor.latency_max_cycles is not None and est is not None:
            total, total_src = int(vendor.latency_max_cycles), vendor.sources["latency_max_cycles"]
        ii = int(vendor.interval_max) if vendor is not None and vendor.interval_max else 1
        profiles["hls4ml"] = profile("hls4ml", layers, hls_clock, max(ii, 1), total, total_src)
    # da4ml flavour
    if rtl is not None and (verilator_cycles is not None or da4ml_figs):
        if verilator_cycles is not None:
            cyc, src = int(verilator_cycles), verilator_source or "measured (Verilator)"
        else:
            cyc, src = int(da4ml_figs["latency_cycles"].value), E.SOURCE_DA4ML
        profiles["alkaid"] = profile("alkaid", [("alkaid pipeline", cyc, src)], rtl_clock, 1)
    if not profiles:
        return absent("no latency figure (needs an hls4ml IR / vendor report or a da4ml RTL project)")
    ok = [k for k, v in profiles.items() if v.get("status") == "ok"]
    primary = "hls4ml" if "hls4ml" in ok else (ok[0] if ok else None)
    return {
        "status": "ok",
        "budget_ns": budget_ns,
        "budget_bx": budget_ns / bx_ns,
        "primary": primary,
        "profiles": profiles,
        "explanation": (
            f"The Level-1 trigger gives this algorithm {budget_ns:g} ns ({budget_ns / bx_ns:g} bunch crossings of "
            f"{bx_ns:g} ns); the design passes when its latency (cycles x clock period) is at most the budget "
            "and every resource fits the FPGA part."
        ),
    }


def _verdict_text(p, flavour: str) -> str:
    lat = "PASS" if p.latency_passed else "FAIL"
    s = (f"{flavour}: latency {p.total_ns:.1f} ns ({p.total_cycles} cycles x {p.clock_period_ns:g} ns) vs budget "
         f"{p.budget_ns:g} ns: {lat} (slack {p.slack_ns:+.1f} ns)")
    if p.resources_passed is not None:
        worst = max(((k, v) for k, v in p.resource_percent.items() if v is not None), key=lambda kv: kv[1], default=None)
        fit = "fit" if p.resources_passed else "do NOT fit"
        s += f"; resources {fit} {p.part}" + (f" (largest: {worst[0]} {worst[1]:.2f} %)" if worst else "")
    return s + f" => {'PASS' if p.passed else 'FAIL'}"
