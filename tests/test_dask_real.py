"""Dask for real: a `dask scheduler` and two `dask worker` processes on localhost (subprocesses, one
thread each); `trigger-ml emulate --scheduler tcp://...` and a scan point run on them and give
exactly the in-process results; a wrong address fails within seconds with one line."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# one thread per process for TF / BLAS / OpenMP / numba, as the scan's own workers (scan.runner.WORKER_ENV)
ENV = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
                    "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
                    "PYTHONPATH": str(REPO)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """tcp://127.0.0.1:PORT of a real scheduler with two single-threaded worker processes."""
    log = tmp_path_factory.mktemp("dask")
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], env=ENV, cwd=log, stdout=open(log / "scheduler.log", "w"),
                              stderr=subprocess.STDOUT)]
    try:
        for i in range(2):
            procs.append(subprocess.Popen([str(BIN / "dask"), "worker", addr, "--nthreads", "1", "--nworkers", "1",
                                           "--no-dashboard", "--memory-limit", "0", "--name", f"w{i}"],
                                          env=ENV, cwd=log, stdout=open(log / f"worker{i}.log", "w"),
                                          stderr=subprocess.STDOUT))
        from dask.distributed import Client

        t0 = time.time()
        while True:
            try:
                with Client(addr, timeout=2) as c:
                    c.wait_for_workers(2, timeout=30)
                    break
            except (OSError, TimeoutError):
                if time.time() - t0 > 40:
                    raise
                time.sleep(0.3)
        yield addr
    finally:
        try:  # the scheduler stops its workers and itself
            from dask.distributed import Client

            with Client(addr, timeout=5) as c:
                c.shutdown()
        except Exception:  # noqa: BLE001 - the processes are terminated below anyway
            pass
        for p in procs[::-1]:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for p in procs[::-1]:
            p.terminate()
        for p in procs[::-1]:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def _emulate(args, out):
    r = subprocess.run([str(BIN / "trigger-ml"), "emulate", *map(str, args), "--out", str(out), "--json"],
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(out.read_text())


def _figures(res: dict) -> dict:
    return {k: v for k, v in res.items() if k not in ("seconds", "events_per_s", "scheduler")}


def test_emulate_cli_on_a_real_scheduler_equals_in_process(cluster, tmp_path, bkg_file, sig_files):
    from _fwdir import make_firmware_dir

    fw = make_firmware_dir(tmp_path / "fw", bkg_file)
    args = [fw, "--background", bkg_file, "--signals", sig_files["Ato4l"], "--signals", sig_files["LQ_btau"],
            "--menu", "A=4000,B=400", "--chunk-size", "2500"]
    from trigger_ml.trigger.run import emulate

    local = emulate(fw, [bkg_file], [sig_files["Ato4l"], sig_files["LQ_btau"]], menu_khz={"A": 4000.0, "B": 400.0},
                    chunk_size=2500)  # in this process
    local = json.loads(json.dumps(local))
    dist = _emulate([*args, "--scheduler", cluster], tmp_path / "dask.json")  # the CLI on the real cluster
    dist.pop("stage")
    assert dist["scheduler"] == cluster and local["scheduler"] == "in-process"
    assert _figures(dist) == _figures(local)
    assert dist["events"] == 20_000 + 2 * 4_000


@pytest.mark.slow  # the API-level check (tests/test_trigger.py) is in the fast suite; this adds the CLI start-up
def test_wrong_scheduler_address_one_line_within_seconds(tmp_path, bkg_file):
    from _fwdir import make_firmware_dir

    fw = make_firmware_dir(tmp_path / "fw", bkg_file)
    t0 = time.perf_counter()
    r = subprocess.run([str(BIN / "trigger-ml"), "emulate", str(fw), "--background", str(bkg_file), "--scheduler",
                        f"tcp://127.0.0.1:{_free_port()}"], env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "dask scheduler" in lines[0], r.stderr
    assert time.perf_counter() - t0 < 30  # CLI start-up included; the address probe itself fails in < 1 s


_SCAN = r"""
import sys
from trigger_ml.scan import load_scan_config, run_scan
space, out, bkg, sig, where = sys.argv[1:6]
run_scan(load_scan_config(space), out, background=bkg, signals=[sig], scheduler=None if where == "none" else where,
         epochs=1, max_events=2000, rate_khz=1000.0, eval_events=2000, flavor="verilog")
"""


def _scan_rows(cluster, tmp_path):
    from trigger_ml.data.synth import generate_file
    from trigger_ml.scan import read_results

    bkg = generate_file(tmp_path / "bkg.h5", 4000, "background", seed=5)
    sig = generate_file(tmp_path / "Ato4l.h5", 800, "Ato4l", seed=6)
    space_file = tmp_path / "scan.yaml"
    space_file.write_text(f"base: {REPO / 'models' / 'adc-dnn-ae.yaml'}\ngrid: {{latent: [2]}}\n")
    rows = {}
    for where in ("none", cluster):
        out = tmp_path / ("local" if where == "none" else "dask")
        r = subprocess.run([sys.executable, "-c", _SCAN, str(space_file), str(out), str(bkg), str(sig), where],
                           env=ENV, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        rows[where] = read_results(out).iloc[0].to_dict()
    return rows["none"], rows[cluster]


#: row fields that say when and where a point ran, not what it found
_PLACE_AND_TIME = {"started", "finished", "worker", "workdir", "model_dir", "firmware_dir"}


def _differing(a: dict, b: dict) -> dict:
    """Fields whose values differ (both missing / NaN counts as equal), timings left out."""
    def missing(v):
        return v is None or (isinstance(v, float) and math.isnan(v))

    def same(x, y):
        return x == y or (missing(x) and missing(y))

    keys = (set(a) | set(b)) - _PLACE_AND_TIME
    return {k: (a.get(k), b.get(k)) for k in sorted(keys)
            if not k.startswith("seconds") and not same(a.get(k), b.get(k))}


@pytest.mark.slow
def test_scan_point_runs_on_a_real_scheduler(cluster, tmp_path):
    """One real scan point (train 1 epoch, alkaid verilog, bit-exact scoring) on the real workers and the
    same point in this process's one-thread environment give identical figures: the trained model
    (training draws its random seeds from streams of its own, :func:`trigger_ml.train.training_rng`,
    which the worker's event loop thread cannot advance), LUTs, latency, AUC and TPR."""
    a, b = _scan_rows(cluster, tmp_path)
    assert a["status"] == b["status"] == "ok", (a.get("error"), b.get("error"))
    assert a["worker"] != b["worker"]  # the point really ran on a worker of the cluster
    assert 0 <= b["tpr"] <= 1 and b["luts"] > 0 and b["latency_ns"] > 0
    assert _differing(a, b) == {}
    ma = json.loads((Path(a["model_dir"]) / "manifest.json").read_text())
    mb = json.loads((Path(b["model_dir"]) / "manifest.json").read_text())
    assert ma["figures"]["numerics"]["seed"] == mb["figures"]["numerics"]["seed"]
