"""Design-space scans: points and keys, config validation, Pareto front, resumable scans (in process and on Dask)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trigger_ml import scan as S
from trigger_ml.core.errors import ConfigError
from trigger_ml.scan import runner as R
from trigger_ml.scan.results import _records

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "models" / "scan-example.yaml"
BASE = REPO / "models" / "adc-dnn-ae.yaml"


def _write(tmp_path: Path, text: str, name: str = "scan.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------------------ points, keys


def test_example_grid_points_and_keys_are_deterministic() -> None:
    space = S.load_scan_config(EXAMPLE)
    assert Path(space.base_config) == BASE
    pts = S.points(space)
    assert len(pts) == 8 and len({S.point_key(p) for p in pts}) == 8
    assert pts == S.points(S.load_scan_config(EXAMPLE))
    # grid order as written, last parameter fastest
    assert pts[0] == {"quantization.weight.bits": 6, "quantization.activation.bits": 8, "latent": 3}
    assert pts[1] == {"quantization.weight.bits": 6, "quantization.activation.bits": 8, "latent": 4}
    assert pts[-1] == {"quantization.weight.bits": 8, "quantization.activation.bits": 12, "latent": 4}
    cfg, conv = S.point_config(space.base_dict(), pts[-1])
    assert (cfg.quantization.weight.bits, cfg.quantization.activation.bits, cfg.latent) == (8, 12, 4)
    assert cfg.quantization.weight.overflow == "SAT_SYM" and conv == {}  # the rest of the base config is kept


def test_point_key_is_canonical_and_stable() -> None:
    a = {"latent": 3, "hidden": [32, 16], "quantization.beta": 1e-5}
    b = {"quantization.beta": 1e-5, "hidden": (32, 16), "latent": np.int64(3)}  # order / numpy / tuple
    assert S.point_key(a) == S.point_key(b)
    canonical = '{"hidden":[32,16],"latent":3,"quantization.beta":1e-05}'
    assert S.point_key(a) == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert S.point_key({**a, "latent": 4}) != S.point_key(a)
    assert len(S.point_key({})) == 16


def test_grid_size_and_convert_params(tmp_path) -> None:
    p = _write(tmp_path, f"""
base: {BASE}
grid:
  hidden: [[32, 16], [16, 8], [8]]
  reuse_factor: [1, 2]
  quantization.layers.dense_1.weight: [{{bits: 4, integer: 0}}]
""")
    space = S.load_scan_config(p)
    pts = S.points(space)
    assert len(pts) == 3 * 2 * 1
    cfg, conv = S.point_config(space.base_dict(), pts[-1])
    assert cfg.hidden == [8] and conv == {"reuse_factor": 2}
    assert cfg.quantization.layers["dense_1"]["weight"].bits == 4


def test_random_sampling_is_reproducible_by_seed(tmp_path) -> None:
    text = f"""
base: {BASE}
random:
  quantization.weight.bits: {{low: 4, high: 10}}
  quantization.beta: {{low: 1.0e-7, high: 1.0e-4, log: true}}
  hidden: {{choices: [[32, 16], [16, 8]]}}
  training.learning_rate: {{low: 0.001, high: 0.01}}
n_points: 6
seed: SEED
"""
    s1 = S.points(S.load_scan_config(_write(tmp_path, text.replace("SEED", "1"), "a.yaml")))
    s1b = S.points(S.load_scan_config(_write(tmp_path, text.replace("SEED", "1"), "b.yaml")))
    s2 = S.points(S.load_scan_config(_write(tmp_path, text.replace("SEED", "2"), "c.yaml")))
    assert s1 == s1b and s1 != s2 and len(s1) == 6
    for p in s1:
        assert isinstance(p["quantization.weight.bits"], int) and 4 <= p["quantization.weight.bits"] <= 10
        assert 1e-7 <= p["quantization.beta"] <= 1e-4
        assert 1e-3 <= p["training.learning_rate"] <= 1e-2
        assert p["hidden"] in ([32, 16], [16, 8])
    # random x grid: every draw is crossed with every grid point
    mixed = text.replace("SEED", "1") + "grid: {latent: [3, 4]}\n"
    pts = S.points(S.load_scan_config(_write(tmp_path, mixed, "d.yaml")))
    assert len(pts) == 12 and {p["latent"] for p in pts} == {3, 4}


@pytest.mark.parametrize(
    "body, field",
    [
        ("grid: {latent: [3]}", "base"),
        ("base: no-such-model.yaml\ngrid: {latent: [3]}", "base"),
        ("base: BASE\ngrid: {latent: [0]}", "latent"),
        ("base: BASE\ngrid: {quantization.weight.bits: [8, 40]}", "quantization.weight.bits"),
        ("base: BASE\ngrid: {quantization.wieght.bits: [8]}", "quantization.wieght.bits"),
        ("base: BASE\ngrid: {latentt: [3]}", "latentt"),
        ("base: BASE\ngrid: {latent: 3}", "grid.latent"),
        ("base: BASE\ngrid: {latent: []}", "grid.latent"),
        ("base: BASE\ngrid: {reuse_factor: [0]}", "reuse_factor"),
        ("base: BASE\nrandom: {latent: {low: 2}}\nn_points: 2", "random.latent"),
        ("base: BASE\nrandom: {latent: {low: 4, high: 2}}\nn_points: 2", "random.latent"),
        ("base: BASE\nrandom: {quantization.beta: {low: 0, high: 1, log: true}}\nn_points: 2", "random.quantization.beta"),
        ("base: BASE\nrandom: {latent: {choices: []}}\nn_points: 2", "random.latent.choices"),
        ("base: BASE\nrandom: {latent: {choices: [3], step: 1}}\nn_points: 2", "random.latent"),
        ("base: BASE\nrandom: {latent: {choices: [3, 4]}}", "n_points"),
        ("base: BASE\ngrid: {latent: [3]}\nsettings: {flavor: vivado}", "settings.flavor"),
        ("base: BASE\ngrid: {latent: [3]}\nsettings: {epochs: 0}", "settings.epochs"),
        ("base: BASE\ngrid: {latent: [3]}\nsettings: {epoch: 3}", "settings.epoch"),
        ("base: BASE\ngrids: {latent: [3]}", "grids"),
        ("base: BASE\ngrid: {latent: [3]}\nrandom: {latent: {choices: [4]}}\nn_points: 1", "random.latent"),
    ],
)
def test_config_errors_are_one_line_and_name_the_field(tmp_path, body, field) -> None:
    p = _write(tmp_path, body.replace("BASE", str(BASE)))
    with pytest.raises(ConfigError) as ei:
        S.load_scan_config(p)
    msg = str(ei.value)
    assert "\n" not in msg and field in msg and str(p) in msg


def test_missing_scan_file_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        S.load_scan_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        S.load_scan_config(_write(tmp_path, "base: [unclosed"))


# ------------------------------------------------------------------------------------------ Pareto front


def test_pareto_front_hand_made_table() -> None:
    df = pd.DataFrame(
        [
            # key  status   tpr   luts  latency_ns
            ("a", "ok", 0.50, 1000, 50.0),  # optimal: cheapest
            ("b", "ok", 0.60, 2000, 50.0),  # optimal: better TPR at more LUTs
            ("c", "ok", 0.55, 2500, 60.0),  # dominated by b
            ("d", "ok", 0.70, 4000, 100.0),  # optimal: best TPR
            ("e", "ok", 0.60, 2000, 40.0),  # optimal, and dominates b (same TPR/LUTs, lower latency)
            ("f", "ok", 0.50, 1000, 50.0),  # identical to a: neither dominates the other
            ("g", "failed", 0.99, 1, 1.0),  # failed rows never count
            ("h", "ok", None, 10, 1.0),  # a missing objective: left out
            ("i", "ok", 0.45, 900, 200.0),  # optimal: fewest LUTs (despite the latency)
        ],
        columns=["key", "status", "tpr", "luts", "latency_ns"],
    )
    front = S.pareto_front(df)
    assert set(front["key"]) == {"a", "d", "e", "f", "i"}
    assert list(front["luts"]) == sorted(front["luts"])
    # other objectives
    assert set(S.pareto_front(df, maximize=("tpr",), minimize=("luts",))["key"]) == {"a", "b", "d", "e", "f", "i"}
    assert set(S.pareto_front(df, maximize=("tpr",), minimize=())["key"]) == {"d"}
    with pytest.raises(Exception, match="dsps"):
        S.pareto_front(df, minimize=("dsps",))


# ------------------------------------------------------------------------------------------ scans

TINY_SETTINGS = dict(epochs=1, max_events=2000, rate_khz=1000.0, eval_events=2000, flavor="verilog")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from trigger_ml.data.synth import generate_file

    d = tmp_path_factory.mktemp("scan_data")
    bkg = generate_file(d / "bkg.h5", 4000, "background", seed=5)
    sigs = [generate_file(d / "Ato4l.h5", 800, "Ato4l", seed=6), generate_file(d / "LQ_btau.h5", 800, "LQ_btau", seed=7)]
    return bkg, sigs


def _space(latents, tmp_path: Path) -> S.ScanSpace:
    return S.load_scan_config(_write(tmp_path, f"base: {BASE}\ngrid: {{latent: {list(latents)}}}\n", f"scan{len(latents)}.yaml"))


def _stub_point(calls: list, fail_latents=()):
    """A fast stand-in for run_point (same signature and row shape; figures derived from the params)."""

    def run_point(params, *, workdir, attempt=1, context=None, flavor="verilog", rate_khz=10.0, **_kw):
        calls.append(dict(params))
        Path(workdir).mkdir(parents=True, exist_ok=True)
        lat = params["latent"]
        if lat in fail_latents:
            raise RuntimeError(f"boom at latent {lat}")
        return {"key": S.point_key(params), "status": "ok", "error": None, "params": json.dumps(params, sort_keys=True),
                **{S.PARAM_PREFIX + k: v for k, v in params.items()}, "tpr": 0.1 * lat, "auc": 0.5 + 0.01 * lat,
                "luts": 1000 * lat, "luts_source": "stub", "latency_ns": 50.0 - lat, "latency_cycles": 10 - lat,
                "latency_source": "stub", "attempt": attempt, "context": context, "started": R._now(),
                "finished": R._now(), "worker": "stub", "seconds": 0.01}

    return run_point


def test_scan_in_process_interrupted_and_resumed(tmp_path, tiny_data, monkeypatch) -> None:
    """Resume logic without Dask or training: run_point is stubbed, an interruption is a
    KeyboardInterrupt raised from the progress callback after the first finished point."""
    bkg, sigs = tiny_data
    calls: list = []
    monkeypatch.setattr(R, "run_point", _stub_point(calls, fail_latents=(5,)))
    space = _space([2, 3, 4, 5], tmp_path)
    keys = [S.point_key(p) for p in S.points(space)]
    out = tmp_path / "out"

    def interrupt(done, total, row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        S.run_scan(space, out, background=bkg, signals=sigs, scheduler=None, progress=interrupt, **TINY_SETTINGS)
    assert len(calls) == 1
    first = S.read_results(out)
    assert list(first["key"]) == [keys[0]] and list(first["status"]) == ["ok"]
    assert set(pd.read_csv(out / "results.csv", dtype={"key": str})["key"]) == {keys[0]}

    seen: list = []
    df = S.run_scan(space, out, background=bkg, signals=sigs, scheduler=None,
                    progress=lambda d, t, r: seen.append((d, t, r["key"])), **TINY_SETTINGS)
    assert [c["latent"] for c in calls] == [2, 3, 4, 5]  # latent 2 was not recomputed
    assert [s[:2] for s in seen] == [(2, 4), (3, 4), (4, 4)]
    assert set(df["key"]) == set(keys) and len(df) == 4
    row5 = df[df["param:latent"] == 5].iloc[0]
    assert row5["status"] == "failed" and "boom at latent 5" in row5["error"]  # a failing point does not stop the scan
    row2 = df[df["param:latent"] == 2].iloc[0]
    assert row2["started"] == first.iloc[0]["started"] and row2["attempt"] == 1
    table = S.read_results(out)
    assert set(table["key"]) == set(keys)
    # the Pareto front of the stub figures: every ok point trades TPR against LUTs
    pj = json.loads((out / "pareto.json").read_text())
    assert {r["key"] for r in pj["pareto"]} == set(keys[:3]) and pj["n_points"] == 4
    assert pj["pareto"][0]["params"] == {"latent": 2}
    assert (out / "pareto.png").stat().st_size > 5000

    # a third run retries only the failed point (attempt 2), here successfully
    monkeypatch.setattr(R, "run_point", _stub_point(calls))
    df = S.run_scan(space, out, background=bkg, signals=sigs, scheduler=None, **TINY_SETTINGS)
    assert [c["latent"] for c in calls[4:]] == [5]
    row5 = df[df["param:latent"] == 5].iloc[0]
    assert row5["status"] == "ok" and row5["attempt"] == 2

    # other settings on the same directory are refused (unless restart=True)
    with pytest.raises(ConfigError, match="different base config or settings"):
        S.run_scan(space, out, background=bkg, signals=sigs, scheduler=None, **{**TINY_SETTINGS, "epochs": 2})


def test_scan_recovers_rows_missing_from_the_table(tmp_path, tiny_data, monkeypatch) -> None:
    """A point whose row.json was written but whose table update was lost is not recomputed."""
    bkg, sigs = tiny_data
    calls: list = []
    stub = _stub_point(calls)
    monkeypatch.setattr(R, "run_point", stub)
    space = _space([2, 3], tmp_path)
    out = tmp_path / "out"
    S.run_scan(space, out, background=bkg, signals=sigs, scheduler=None, **TINY_SETTINGS)
    df = S.read_results(out)
    for k, r in zip(df["key"], _records(df)):
        (out / "points" / k / "row.json").write_text(json.dumps(r))
    (out / "results.parquet").unlink()
    (out / "results.csv").unlink()
    S.run_scan(space, out, background=bkg, signals=sigs, scheduler=None, **TINY_SETTINGS)
    assert len(calls) == 2 and set(S.read_results(out)["key"]) == set(df["key"])


def test_failing_point_returns_a_failed_row(tmp_path, tiny_data) -> None:
    bkg, sigs = tiny_data
    row = S.run_point({"latent": 0}, base_config=BASE, background=bkg, signals=sigs, workdir=tmp_path / "p")
    assert row["status"] == "failed" and row["error"].startswith("config: ConfigError") and "latent" in row["error"]
    assert json.loads((tmp_path / "p" / "row.json").read_text())["status"] == "failed"
    assert (tmp_path / "p" / "error.txt").is_file()


@pytest.mark.slow  # in-process scans run in the fast suite (test_cli, test_scan); real Dask in test_dask_real
def test_scan_on_local_cluster_resumes_real_points(tmp_path, tiny_data, monkeypatch) -> None:
    """Two real points (train 1 epoch, da4ml verilog, bit-exact scoring, estimates) on a Dask
    LocalCluster. The scan was 'interrupted' after its first point: that point's row is already
    in the table (written by a stubbed in-process run with the same settings), so only the second
    point runs — on a worker process — and the first row is left untouched."""
    bkg, sigs = tiny_data
    out = tmp_path / "out"
    calls: list = []
    with monkeypatch.context() as m:
        m.setattr(R, "run_point", _stub_point(calls))
        S.run_scan(_space([3], tmp_path), out, background=bkg, signals=sigs, scheduler=None, **TINY_SETTINGS)
    before = S.read_results(out)
    assert len(before) == 1 and before.iloc[0]["worker"] == "stub"

    space = _space([3, 2], tmp_path)
    df = S.run_scan(space, out, background=bkg, signals=sigs, scheduler="local", n_workers=1, **TINY_SETTINGS)
    assert len(df) == 2
    old = df[df["param:latent"] == 3].iloc[0]
    assert old["worker"] == "stub" and old["started"] == before.iloc[0]["started"]  # not recomputed
    new = df[df["param:latent"] == 2].iloc[0]
    assert new["status"] == "ok", new["error"]
    assert not new["worker"].endswith(f":{os.getpid()}")  # ran in a worker process
    assert new["luts"] > 0 and new["luts_source"] == "estimated (alkaid)"
    assert new["ffs_source"] == "estimated (alkaid)" and new["dsps"] == 0
    assert new["latency_cycles"] >= 1 and new["latency_ns"] == pytest.approx(5.0 * new["latency_cycles"])
    assert new["ebops"] > 0 and 0 <= new["tpr"] <= 1 and 0 <= new["auc"] <= 1
    assert {"auc:Ato4l", "tpr:Ato4l", "auc:LQ_btau", "tpr:LQ_btau"} <= set(df.columns)
    assert "interpreter of the RTL graph" in new["scores_source"]  # da4ml's bit-exact interpreter
    assert new["seconds"] >= new["seconds_train"] > 0
    print(f"\nreal scan point: {new['seconds']:.1f} s (train {new['seconds_train']:.1f}, convert "
          f"{new['seconds_convert']:.1f}, evaluate {new['seconds_evaluate']:.1f})")
    assert (out / "points" / new["key"] / "firmware" / "rtl_manifest.json").is_file()
    pj = json.loads((out / "pareto.json").read_text())
    assert pj["objectives"] == {"maximize": ["tpr"], "minimize": ["luts", "latency_ns"]} and pj["pareto"]
    assert (out / "pareto.png").is_file()


# ------------------------------------------------------------------------------------------ latency budget

CLOCK_240MHZ_NS = 25.0 / 6.0  # the uGT clock: 12 cycles = 50 ns = 2 BX


def _budget_stub(calls: list):
    """run_point stand-in at a 240 MHz clock: latent 2 -> 11 cycles (45.8 ns, under 50 ns), latent 3 ->
    12 cycles (50.0 ns, exactly at the budget: meets it), latent 4 -> 13 cycles (54.2 ns, just over),
    latent 5 fails. TPR grows with the latent size, so the best point overall is over the budget."""

    def run_point(params, *, workdir, attempt=1, context=None, clock_ns=5.0, **_kw):
        calls.append(dict(params))
        Path(workdir).mkdir(parents=True, exist_ok=True)
        lat = params["latent"]
        if lat == 5:
            raise RuntimeError("boom")
        cyc = 9 + lat
        return {"key": S.point_key(params), "status": "ok", "error": None, "params": json.dumps(params, sort_keys=True),
                **{S.PARAM_PREFIX + k: v for k, v in params.items()}, "tpr": 0.1 * lat, "auc": 0.5 + 0.01 * lat,
                "luts": 1000 * lat, "luts_source": "stub", "latency_cycles": cyc, "clock_ns": clock_ns,
                "latency_ns": cyc * clock_ns, "latency_source": "estimated (stub)", "attempt": attempt,
                "context": context, "started": R._now(), "finished": R._now(), "worker": "stub", "seconds": 0.01}

    return run_point


def test_scan_budget_verdict_and_best_point_in_budget(tmp_path, tiny_data, monkeypatch) -> None:
    bkg, sigs = tiny_data
    calls: list = []
    monkeypatch.setattr(R, "run_point", _budget_stub(calls))
    space = _space([2, 3, 4, 5], tmp_path)
    out = tmp_path / "out"
    df = S.run_scan(space, out, background=bkg, signals=sigs, scheduler=None, budget_bx=2,
                    **{**TINY_SETTINGS, "clock_ns": CLOCK_240MHZ_NS})
    by = {int(r["param:latent"]): r for _, r in df.iterrows()}
    assert by[2]["meets_budget"] is True and by[2]["budget_slack_ns"] == pytest.approx(50 - 11 * CLOCK_240MHZ_NS)
    assert by[3]["meets_budget"] is True and by[3]["budget_slack_ns"] == pytest.approx(0, abs=1e-9)  # at the budget
    assert by[4]["meets_budget"] is False and by[4]["budget_slack_ns"] == pytest.approx(-CLOCK_240MHZ_NS)  # one cycle over
    assert by[5]["meets_budget"] is None  # failed: no verdict
    assert all(by[k]["budget_clock_ns"] == pytest.approx(CLOCK_240MHZ_NS) for k in (2, 3, 4))
    assert all(by[k]["budget_ns"] == 50.0 and by[k]["budget_source"] == "estimated (stub)" for k in (2, 3, 4))
    assert [k for k, r in by.items() if r["best_in_budget"]] == [3]  # the best TPR (latent 4) is over the budget
    table = S.read_results(out)  # the verdict is recorded in the results table
    assert list(table.loc[table["param:latent"] == 3, "best_in_budget"]) == [True]
    assert list(table.loc[table["param:latent"] == 4, "meets_budget"]) == [False]

    pj = json.loads((out / "pareto.json").read_text())
    b = pj["budget"]
    assert (b["budget_ns"], b["budget_bx"], b["n_meeting"], b["n_with_latency"]) == (50.0, 2.0, 2, 3)
    assert b["best"]["key"] == by[3]["key"] and b["best"]["params"] == {"latent": 3}
    assert b["best"]["latency_cycles"] == 12 and b["best"]["clock_ns"] == pytest.approx(CLOCK_240MHZ_NS)

    # the drawn data: budget line at 50 ns on the latency panel, the best point in budget starred on
    # both panels, the point over the budget drawn as a cross
    front = S.pareto_front(df)
    fig = S.pareto_figure(df, front, budget_ns=50.0)
    ax_lut, ax_lat = fig.axes[:2]
    (line,) = [ln for ln in ax_lat.get_lines() if ln.get_gid() == "budget"]
    assert list(line.get_xdata()) == [50.0, 50.0] and "50 ns" in line.get_label()
    assert not [ln for ln in ax_lut.get_lines() if ln.get_gid() == "budget"]
    for ax, x in ((ax_lut, 3000.0), (ax_lat, 12 * CLOCK_240MHZ_NS)):
        (star,) = [c for c in ax.collections if c.get_gid() == "best_in_budget"]
        assert star.get_offsets().tolist() == [[pytest.approx(x), pytest.approx(0.3)]]
        assert by[3]["key"][:8] in star.get_label()
        (over,) = [c for c in ax.collections if c.get_gid() == "over_budget"]
        assert over.get_offsets().tolist() == [[pytest.approx(4000.0 if ax is ax_lut else 13 * CLOCK_240MHZ_NS),
                                                pytest.approx(0.4)]]

    # judged again with a tighter budget: no point reruns; 46 ns keeps only latent 2; 45 ns none
    n = len(calls)
    df = S.run_scan(space, out, background=bkg, signals=sigs, scheduler=None, budget_ns=46.0,
                    **{**TINY_SETTINGS, "clock_ns": CLOCK_240MHZ_NS})
    assert len(calls) == n + 1  # only the failed point is retried
    assert list(df.loc[df["best_in_budget"].astype(bool), "param:latent"]) == [2]
    df = S.run_scan(space, out, background=bkg, signals=sigs, scheduler=None, budget_ns=45.0,
                    **{**TINY_SETTINGS, "clock_ns": CLOCK_240MHZ_NS})
    assert not df["best_in_budget"].any() and json.loads((out / "pareto.json").read_text())["budget"]["best"] is None
    fig = S.pareto_figure(df, S.pareto_front(df), budget_ns=45.0)
    assert [t for t in fig.axes[1].texts if t.get_gid() == "no_point_in_budget"]
    # without a budget the verdict columns of the earlier run are dropped, not left stale
    df = S.run_scan(space, out, background=bkg, signals=sigs, scheduler=None, **{**TINY_SETTINGS, "clock_ns": CLOCK_240MHZ_NS})
    assert "meets_budget" not in df.columns and "budget" not in json.loads((out / "pareto.json").read_text())


def test_scan_budget_settings_and_refusals(tmp_path, tiny_data, monkeypatch) -> None:
    bkg, sigs = tiny_data
    p = _write(tmp_path, f"base: {BASE}\ngrid: {{latent: [2, 4]}}\nsettings: {{budget_ns: 50, clock_ns: {CLOCK_240MHZ_NS}}}\n")
    monkeypatch.setattr(R, "run_point", _budget_stub([]))
    df = S.run_scan(S.load_scan_config(p), tmp_path / "o", background=bkg, signals=sigs, scheduler=None,
                    **{k: v for k, v in TINY_SETTINGS.items()})
    assert list(df.sort_values("param:latent")["meets_budget"]) == [True, False]
    # the argument wins over the scan file's setting
    df = S.run_scan(S.load_scan_config(p), tmp_path / "o", background=bkg, signals=sigs, scheduler=None, budget_bx=3,
                    **TINY_SETTINGS)
    assert list(df["meets_budget"]) == [True, True] and set(df["budget_ns"]) == {75.0}
    for body, field in (("settings: {budget_ns: 50, budget_bx: 2}", "settings.budget_bx"),
                        ("settings: {budget_ns: -1}", "settings.budget_ns")):
        bad = _write(tmp_path, f"base: {BASE}\ngrid: {{latent: [2]}}\n{body}\n", "bad.yaml")
        with pytest.raises(ConfigError, match=field):
            S.load_scan_config(bad)
    with pytest.raises(ConfigError, match="exactly one"):
        S.run_scan(S.load_scan_config(p), tmp_path / "o", background=bkg, signals=sigs, scheduler=None,
                   budget_ns=50, budget_bx=2, **TINY_SETTINGS)


def test_scan_cli_names_the_best_point_in_budget(tmp_path, tiny_data, monkeypatch) -> None:
    from typer.testing import CliRunner

    from trigger_ml.cli import app

    bkg, sigs = tiny_data
    monkeypatch.setattr(R, "run_point", _budget_stub([]))
    p = _write(tmp_path, f"base: {BASE}\ngrid: {{latent: [2, 3, 4]}}\nsettings: {{epochs: 1}}\n")
    args = ["scan", str(p), "--out", str(tmp_path / "o"), "--background", str(bkg), "--signals", str(sigs[0]),
            "--scheduler", "none", "--clock-ns", str(CLOCK_240MHZ_NS), "--budget-ns", "50"]
    r = CliRunner().invoke(app, args + ["--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["budget"]["best"]["params"] == {"latent": 3} and doc["budget"]["n_meeting"] == 2
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "2 of 3 points meet it; best in budget: " + doc["budget"]["best"]["key"] in r.stdout
    r = CliRunner().invoke(app, args + ["--budget-bx", "2"])
    assert r.exit_code == 1 and "not both" in str(r.exception)  # one line through the real entry point
