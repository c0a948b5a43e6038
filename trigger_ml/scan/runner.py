"""Running a scan: one point (:func:`run_point`: train, convert, estimate, score bit-exactly) and the
whole scan (:func:`run_scan`: resume from the table, run the remaining points in this process or as
Dask tasks via :func:`trigger_ml.core.cluster.dask_client`, write the table and the Pareto front).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import socket
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trigger_ml.core.artifacts import check_output, clean_stale_temporaries, make_output_dir, write_text_atomic
from trigger_ml.core.constants import BX_RATE_HZ, MANIFEST_FILE, RTL_MANIFEST_FILE
from trigger_ml.core.errors import ConfigError
from trigger_ml.scan.pareto import BUDGET_COLUMNS, _write_outputs, budget_verdicts
from trigger_ml.scan.results import (
    PARAM_PREFIX,
    ROW_FILE,
    _frame,
    _jsonable,
    _records,
    _write_table,
    read_results,
)
from trigger_ml.scan.space import (
    DEFAULT_SETTINGS,
    FLAVORS,
    KEY_LEN,
    ScanSpace,
    _canonical,
    _canonical_json,
    _check_settings,
    load_scan_config,
    point_config,
    point_key,
    points,
)
from trigger_ml.train import training_data_path

#: the stage name of a scan directory (its ``manifest.json``)
STAGE = "scan"

#: environment of the worker processes: one thread per worker for TF / BLAS / OpenMP / numba
WORKER_ENV: dict[str, str] = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "KERAS_BACKEND": "tensorflow",
}


# ============================================================================ one point


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _limit_threads(n: int) -> None:
    """Cap TF / BLAS / OpenMP threads of this process (effective only before TF is imported)."""
    for k, v in WORKER_ENV.items():
        os.environ.setdefault(k, str(n) if k.endswith("_THREADS") else v)


def _rtl_figures(fw_dir: Path) -> dict[str, Any]:
    try:
        from trigger_ml.reports.estimate import da4ml_estimate

        f = da4ml_estimate(fw_dir)
        out = {"luts": f["LUT"].value, "luts_source": f["LUT"].source, "latency_cycles": f["latency_cycles"].value,
               "latency_ns": f["latency_ns"].value, "latency_source": f["latency_cycles"].source}
        if "FF" in f:
            out |= {"ffs": f["FF"].value, "ffs_source": f["FF"].source}
        else:
            out |= {"ffs": 0, "ffs_source": f["LUT"].source + " (combinational)"}
        return out
    except ImportError:  # estimate module unavailable: read da4ml's manifest directly
        d = json.loads((fw_dir / RTL_MANIFEST_FILE).read_text())
        cyc = int(d["latency_cycles"])
        return {"luts": int(round(float(d["da4ml_cost"]))), "luts_source": "estimated (alkaid)",
                "ffs": int(d.get("reg_bits", 0)), "ffs_source": "estimated (alkaid)",
                "latency_cycles": cyc, "latency_ns": cyc * float(d["clock_ns"]), "latency_source": "estimated (alkaid)"}


def _hls_figures(fw_dir: Path, clock_ns: float) -> dict[str, Any]:
    from trigger_ml.reports.estimate import analytic_hls_estimate

    est = analytic_hls_estimate(fw_dir, clock_ns=clock_ns)
    f = est.figures()
    return {"luts": f["LUT"].value, "luts_source": f["LUT"].source, "ffs": f["FF"].value, "ffs_source": f["FF"].source,
            "dsps": f["DSP"].value, "dsps_source": f["DSP"].source, "latency_cycles": f["latency_cycles"].value,
            "latency_ns": f["latency_ns"].value, "latency_source": f["latency_cycles"].source}


def _model_reusable(model_dir: Path, cfg, background: Path) -> bool:
    """An earlier (interrupted) attempt left a complete artifact trained with the same config and data."""
    mf = model_dir / MANIFEST_FILE
    if not mf.is_file():
        return False
    try:
        man = json.loads(mf.read_text())
        same_cfg = man.get("config") == cfg.model_dump(mode="json")
        data = training_data_path(man)
        return bool(same_cfg and data and data.resolve() == Path(background).resolve())
    except (OSError, ValueError):
        return False


def run_point(
    params: Mapping[str, Any],
    *,
    base_config: Path | str | dict | Any,
    background: str | Path,
    signals: Sequence[str | Path],
    workdir: str | Path,
    epochs: int | None = None,
    max_events: int | None = None,
    rate_khz: float = 10.0,
    flavor: str = "verilog",
    clock_ns: float = 5.0,
    latency_cutoff: float = 5.0,
    reuse_factor: int = 1,
    eval_events: int | None = 200_000,
    bx_rate_hz: float = BX_RATE_HZ,
    measure: bool = False,
    threads: int | None = None,
    context: str | None = None,
    attempt: int = 1,
) -> dict[str, Any]:
    """Train, convert, score and estimate one point; return its (flat) results row.

    ``workdir`` is the point's own directory (model artifact, firmware project, ``log.txt``,
    ``row.json``). Never raises for a failing point: the row then has ``status == "failed"`` and
    ``error`` (``"<stage>: <type>: <message>"``; the traceback goes to ``workdir/error.txt``).
    ``threads`` caps the process's TF/BLAS threads (Dask workers: 1). Convert options among
    ``params`` (``reuse_factor``, ``clock_ns``, ``latency_cutoff``) override the keyword values.
    """
    if threads:
        _limit_threads(threads)
    t_start = time.perf_counter()
    params = _canonical(dict(params))
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(workdir)  # a worker killed in an earlier attempt could not remove its temporaries
    row: dict[str, Any] = {
        "key": point_key(params), "status": "failed", "error": None, "params": _canonical_json(params),
        **{PARAM_PREFIX + k: (_canonical_json(v) if isinstance(v, (list, dict)) else v) for k, v in params.items()},
        "flavor": flavor, "rate_khz": float(rate_khz), "started": _now(), "finished": None, "attempt": int(attempt),
        "worker": f"{socket.gethostname()}:{os.getpid()}", "context": context, "workdir": str(workdir),
    }
    stage = "config"
    log_f = open(workdir / "log.txt", "a")  # noqa: SIM115 - closed in finally

    def log(msg: str) -> None:
        log_f.write(msg + "\n")
        log_f.flush()

    try:
        log(f"[{_now()}] point {row['key']} {row['params']} (attempt {attempt})")
        cfg, conv = point_config(base_config, params, "point")
        clock_ns = float(conv.get("clock_ns", clock_ns))
        latency_cutoff = float(conv.get("latency_cutoff", latency_cutoff))
        reuse_factor = int(conv.get("reuse_factor", reuse_factor))
        if epochs is not None or max_events is not None:
            upd = {k: v for k, v in (("epochs", epochs), ("max_events", max_events)) if v is not None}
            cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update=upd)})
        background = Path(background).resolve()
        signals = [Path(s).resolve() for s in signals]
        row |= {"model": cfg.name, "clock_ns": clock_ns, "epochs": cfg.training.epochs,
                "max_events": cfg.training.max_events}

        stage = "train"
        from trigger_ml.train import load_artifact, train

        model_dir, fw_dir = workdir / "model", workdir / "firmware"
        t0 = time.perf_counter()
        reused = _model_reusable(model_dir, cfg, background)
        if reused:
            log("reusing the model artifact of an earlier attempt")
        else:
            train(cfg, background, model_dir, force=True, float_twin=False, log=log)
        row |= {"seconds_train": time.perf_counter() - t0, "model_reused": reused, "model_dir": str(model_dir)}
        art = load_artifact(model_dir)
        ebops = (art.manifest.get("figures") or {}).get("quantized", {}).get("ebops")
        row |= {"ebops": None if ebops is None else float(ebops), "ebops_source": "HGQ2 (training manifest)",
                "val_loss": (art.manifest.get("figures") or {}).get("quantized", {}).get("best_val_loss")}

        stage = "convert"
        from trigger_ml.firmware.convert import convert_run

        t0 = time.perf_counter()
        conv_kw: dict[str, Any] = {"reuse_factor": reuse_factor} if flavor == "hls" else {"latency_cutoff": latency_cutoff}
        convert_run(model_dir, fw_dir, flavor=flavor, clock_ns=clock_ns, data=background, force=True, log=log, **conv_kw)
        row |= {"seconds_convert": time.perf_counter() - t0, "firmware_dir": str(fw_dir)}

        stage = "estimate"
        if flavor == "hls":
            row |= _hls_figures(fw_dir, clock_ns) | {"reuse_factor": reuse_factor}
            if reuse_factor != 1:
                row["note"] = "the analytic estimate models the Latency strategy at reuse factor 1"
        else:
            row |= _rtl_figures(fw_dir)
            row |= {"dsps": 0, "dsps_source": "alkaid (distributed arithmetic: no DSP)", "latency_cutoff": latency_cutoff}
            if reuse_factor != 1:
                row["note"] = "reuse_factor only applies to the hls flavour"
        if measure and flavor == "verilog":
            from trigger_ml.measure import synthesize

            t0 = time.perf_counter()
            sr = synthesize(fw_dir, "model")
            row |= {"luts": sr.luts, "luts_source": sr.source, "ffs": sr.ffs, "ffs_source": sr.source,
                    "dsps": sr.dsps, "dsps_source": sr.source, "seconds_measure": time.perf_counter() - t0}

        stage = "evaluate"
        from trigger_ml.core.metrics import signal_metrics

        t0 = time.perf_counter()
        from trigger_ml.scoring import FirmwareScorer

        scorer = FirmwareScorer(fw_dir)  # the one scorer: the firmware's own score output, either flavour
        score, score_src = scorer.values_of_inputs, scorer.source
        ho = art.held_out(background, eval_events)  # the one held-out rule
        bkg = score(art.inputs_from_file(ho.path, start=ho.start, stop=ho.stop))
        detail: dict[str, Any] = {"background": ho.note, "scores": score_src, "signals": {}}
        aucs, tprs = [], []
        for s in signals:
            name = s.stem
            sig = score(art.inputs_from_file(s, stop=eval_events))
            m = signal_metrics(bkg, sig, rate_khz, bx_rate_hz)
            detail["signals"][name] = m | {"n_signal": len(sig)}
            tpr = m["tpr_at_rate"]["tpr"]
            row[f"auc:{name}"] = m["auc"]
            row[f"tpr:{name}"] = tpr
            aucs.append(m["auc"])
            tprs.append(tpr)
        row |= {
            "auc": float(np.mean(aucs)) if aucs else None,
            "tpr": float(np.mean(tprs)) if tprs and all(t is not None for t in tprs) else None,
            "tpr_note": next((detail["signals"][Path(s).stem]["tpr_at_rate"].get("reason") for s in signals
                              if detail["signals"][Path(s).stem]["tpr_at_rate"]["tpr"] is None), None),
            "n_background": len(bkg), "scores_source": score_src, "metrics": _canonical_json(detail),
            "seconds_evaluate": time.perf_counter() - t0,
        }
        row["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a failing point must not kill the scan
        msg = (str(exc).strip().splitlines() or [""])[0][:500]
        row["error"] = f"{stage}: {type(exc).__name__}: {msg}" if msg else f"{stage}: {type(exc).__name__}"
        (workdir / "error.txt").write_text(traceback.format_exc())
        log(f"FAILED in {stage}: {row['error']}")
    finally:
        row["seconds"] = time.perf_counter() - t_start
        row["finished"] = _now()
        log(f"[{row['finished']}] {row['status']} in {row['seconds']:.1f} s")
        log_f.close()
        _release_keras()
    write_text_atomic(workdir / ROW_FILE, json.dumps(_jsonable(row), indent=1))
    return row


def _release_keras() -> None:
    import sys

    if "keras" in sys.modules:
        try:
            sys.modules["keras"].backend.clear_session()
        except Exception:  # noqa: BLE001
            pass


# ============================================================================ the scan


def _context(base: dict, s: Mapping[str, Any], background: Path, signals: Sequence[Path]) -> str:
    """Hash of what, besides a point's parameters, determines its results."""
    keys = ("epochs", "max_events", "rate_khz", "bx_rate_hz", "flavor", "clock_ns", "latency_cutoff", "reuse_factor",
            "eval_events", "measure")
    blob = {"base": base, "settings": {k: s[k] for k in keys},
            "background": str(background), "signals": [str(p) for p in signals]}
    return hashlib.sha256(_canonical_json(blob).encode()).hexdigest()[:KEY_LEN]


def _settings(space: ScanSpace, overrides: Mapping[str, Any]) -> dict[str, Any]:
    s = dict(DEFAULT_SETTINGS)
    s.update({k: v for k, v in (space.settings or {}).items() if v is not None})
    s.update({k: v for k, v in overrides.items() if v is not None})
    _check_settings({k: v for k, v in s.items() if k in DEFAULT_SETTINGS}, "run_scan")
    return s


def run_scan(
    space: ScanSpace | str | Path,
    out_dir: str | Path,
    *,
    background: str | Path | None = None,
    signals: Sequence[str | Path] | None = None,
    scheduler: str | None = "local",
    n_workers: int | None = None,
    epochs: int | None = None,
    max_events: int | None = None,
    rate_khz: float | None = None,
    flavor: str | None = None,
    clock_ns: float | None = None,
    eval_events: int | None = None,
    measure: bool | None = None,
    budget_ns: float | None = None,
    budget_bx: float | None = None,
    restart: bool = False,
    retry_failed: bool = True,
    progress: Callable[[int, int, dict], None] | None = None,
    log: Callable[[str], None] | None = None,
):
    """Run (or resume) the scan of ``space`` into ``out_dir``; return the results DataFrame.

    ``scheduler``: ``"local"`` (a Dask LocalCluster of ``n_workers`` single-threaded processes),
    a scheduler address (``"tcp://host:8786"``) or ``None`` (sequentially in this process).
    Keyword arguments left ``None`` come from the scan file's ``settings`` and then from
    :data:`DEFAULT_SETTINGS` (epochs / max_events ``None`` = the model config's own).
    ``progress(done, total, row)`` is called after every finished point (``done`` counts the
    points skipped as already finished too). See the module docstring for files and resuming.

    ``budget_ns`` / ``budget_bx`` (or ``settings.budget_ns`` / ``budget_bx`` of the scan file): the
    latency budget every point is judged against (:func:`trigger_ml.scan.pareto.budget_verdicts`:
    columns ``meets_budget``, ``budget_slack_ns``, ``budget_clock_ns``, ``best_in_budget``; the
    budget line and the best point in budget in ``pareto.png``, the ``budget`` block of
    ``pareto.json``). The budget is not part of a point's results: a finished scan re-judged with
    another budget reruns no point.
    """
    say = log or (lambda _m: None)
    if not isinstance(space, ScanSpace):
        space = load_scan_config(space)
    s = _settings(space, {"background": background, "signals": list(signals) if signals is not None else None,
                          "epochs": epochs, "max_events": max_events, "rate_khz": rate_khz, "flavor": flavor,
                          "clock_ns": clock_ns, "eval_events": eval_events, "n_workers": n_workers, "measure": measure})
    if not s["background"]:
        raise ConfigError("run_scan: no background file (give background= or settings.background in the scan file)")
    if not s["signals"]:
        raise ConfigError("run_scan: no signal files (give signals= or settings.signals in the scan file)")
    budget = _scan_budget(s, budget_ns, budget_bx)
    bkg = Path(s["background"]).resolve()
    sigs = [Path(p).resolve() for p in s["signals"]]
    from trigger_ml.data.adc2021 import check_events

    # every point reads these files: a file a point cannot use is refused now, not as N failed points
    check_events(bkg, "a scan trains on background events; give a background file with events (--background)")
    for p in sigs:
        check_events(p, "signal efficiencies need signal events; give a signal file with events (--signals)")
    if s["flavor"] not in FLAVORS:
        raise ConfigError(f"run_scan: flavor {s['flavor']!r}; allowed: {', '.join(FLAVORS)}")

    base = space.base_dict()
    pts = points(space)
    for p in pts:  # fail before starting anything
        point_config(base, p, space.source)
    ctx = _context(base, s, bkg, sigs)
    # resumable: an earlier scan directory (or an empty one) is reused and never deleted; anything else
    # (another stage's output, a folder with other files, an input) is refused; no parent is created
    src = Path(str(space.source))
    out_dir = check_output(Path(out_dir).resolve(), [bkg, *sigs, src if src.is_file() else None], STAGE,
                           force=False, reuse=True)
    make_output_dir(out_dir)

    # ---- what is already done
    rows: dict[str, dict] = {}
    for r in _records(read_results(out_dir)):
        rows[str(r["key"])] = r
    for rf in sorted((out_dir / "points").glob(f"*/{ROW_FILE}")):  # finished but not yet in the table
        try:
            r = json.loads(rf.read_text())
        except (OSError, ValueError):
            continue
        k = str(r.get("key"))
        old = rows.get(k)
        if old is None or (old.get("status") != "ok" and r.get("status") == "ok" and (r.get("attempt") or 0) >= (old.get("attempt") or 0)):
            rows[k] = r
    other = {r.get("context") for r in rows.values()} - {ctx, None}
    if other and not restart:
        raise ConfigError(f"{out_dir}: holds results of a scan with a different base config or settings "
                          f"(context {sorted(other)[0]} != {ctx}); use another output directory or restart=True (--restart)")
    if restart:
        rows = {}
    _write_marker(out_dir, ctx, space, s, bkg, sigs)
    wanted = {point_key(p): p for p in pts}
    done_keys = {k for k, r in rows.items() if r.get("status") == "ok" or (not retry_failed and k in wanted)}
    todo = [p for p in pts if point_key(p) not in done_keys]
    total, done = len(pts), len(pts) - len(todo)
    say(f"scan {space.source}: {total} points, {done} already finished, {len(todo)} to run "
        f"({'in process' if scheduler is None else scheduler}); results in {out_dir}")
    if rows:
        _write_table(out_dir, rows.values())

    kw = dict(base_config=base, background=bkg, signals=sigs, epochs=s["epochs"], max_events=s["max_events"],
              rate_khz=float(s["rate_khz"]), flavor=s["flavor"], clock_ns=float(s["clock_ns"]),
              latency_cutoff=float(s["latency_cutoff"]), reuse_factor=int(s["reuse_factor"]),
              eval_events=s["eval_events"], bx_rate_hz=float(s["bx_rate_hz"]), measure=bool(s["measure"]), context=ctx)

    def attempt_of(k: str) -> int:
        return int(rows[k].get("attempt") or 0) + 1 if k in rows else 1

    def finish(row: dict) -> None:
        nonlocal done
        rows[row["key"]] = row
        _write_table(out_dir, rows.values())
        done += 1
        say(f"[{done}/{total}] {row['key']} {row['status']} in {row.get('seconds') or 0:.1f} s"
            + (f": {row['error']}" if row.get("error") else ""))
        if progress:
            progress(done, total, row)

    if todo and scheduler is None:
        for p in todo:
            k = point_key(p)
            try:
                row = run_point(p, workdir=out_dir / "points" / k, attempt=attempt_of(k), **kw)
            except Exception as exc:  # noqa: BLE001 - belt and braces: run_point itself does not raise
                row = _failed_row(p, exc, ctx, attempt_of(k))
            finish(row)
    elif todo:
        from dask.distributed import as_completed

        from trigger_ml.core.cluster import dask_client

        # spawned worker processes: a script that calls run_scan needs an `if __name__ == "__main__":` guard
        with dask_client(scheduler, n_workers=min(int(s["n_workers"]), len(todo)), threads_per_worker=1,
                         env=WORKER_ENV, memory_limit=0) as client:
            futs, index = [], {}
            for p in todo:
                k = point_key(p)
                f = client.submit(run_point, p, workdir=out_dir / "points" / k, attempt=attempt_of(k), threads=1,
                                  pure=False, **kw)
                futs.append(f)
                index[f.key] = p
            for fut in as_completed(futs):
                p = index[fut.key]
                try:
                    row = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker died (KilledWorker) or similar
                    row = _failed_row(p, exc, ctx, attempt_of(point_key(p)))
                finish(row)

    df = _frame(rows.values())
    if budget is not None and not df.empty:
        df = budget_verdicts(df, budget)
        df = _write_table(out_dir, _records(df))  # the verdict is recorded in results.parquet / .csv
    elif any(c in df.columns for c in BUDGET_COLUMNS):  # a verdict of an earlier run with a budget: not this run's
        df = _write_table(out_dir, _records(df.drop(columns=[c for c in BUDGET_COLUMNS if c in df.columns])))
    _write_outputs(out_dir, df, title=f"{Path(space.source).name}: {base.get('name', '')}, {s['flavor']} flavour",
                   rate_khz=float(s["rate_khz"]), budget_ns=budget if not df.empty else None, log=say)
    return df


def _scan_budget(settings: Mapping[str, Any], budget_ns: float | None, budget_bx: float | None) -> float | None:
    """The latency budget in ns: the arguments when one is given (exactly one), else the scan file's
    ``settings.budget_ns`` / ``budget_bx``, else None (no verdict)."""
    from trigger_ml.reports.budget import resolve_budget_ns

    if budget_ns is not None or budget_bx is not None:
        return resolve_budget_ns(budget_ns=budget_ns, budget_bx=budget_bx)
    if settings.get("budget_ns") is not None or settings.get("budget_bx") is not None:
        return resolve_budget_ns(budget_ns=settings.get("budget_ns"), budget_bx=settings.get("budget_bx"))
    return None


def _write_marker(out_dir: Path, ctx: str, space: ScanSpace, s: Mapping[str, Any], bkg: Path, sigs: Sequence[Path]) -> None:
    """``manifest.json`` (stage ``scan``): marks the directory as a scan's, written when missing or the context changed."""
    from trigger_ml.core.artifacts import read_json_or_none, write_manifest

    man = read_json_or_none(out_dir / MANIFEST_FILE) or {}
    if man.get("stage") == STAGE and (man.get("config") or {}).get("context") == ctx:
        return
    inputs = {"background": bkg, **{f"signal{i}": p for i, p in enumerate(sigs)}}
    write_manifest(out_dir, STAGE, inputs=inputs, figures={},
                   config={"context": ctx, "scan": str(space.source), "flavor": s["flavor"], "rate_khz": s["rate_khz"]})


def _failed_row(p: Mapping[str, Any], exc: BaseException, ctx: str, attempt: int) -> dict:
    msg = (str(exc).strip().splitlines() or [""])[0][:500]
    return {"key": point_key(p), "status": "failed", "error": f"worker: {type(exc).__name__}: {msg}",
            "params": _canonical_json(p),
            **{PARAM_PREFIX + k: (_canonical_json(v) if isinstance(v, (list, dict)) else v) for k, v in p.items()},
            "finished": _now(), "attempt": attempt, "context": ctx}
