"""Stage integration: train → convert (HLS + RTL) → verify (0 mismatches) → emulate; overflow localization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trigger_ml.models.config import load_model_config

ZOO = Path(__file__).resolve().parents[1] / "models"


def _small(name: str, **upd):
    cfg = load_model_config(ZOO / f"{name}.yaml")
    return cfg.model_copy(update=upd)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, bkg_file):
    """A reduced-width adc-dnn-ae trained 1 epoch, converted to hls4ml and to da4ml Verilog."""
    from trigger_ml.firmware.convert import convert_run
    from trigger_ml.train import train

    root = tmp_path_factory.mktemp("pipe")
    cfg = _small("adc-dnn-ae", hidden=[8], latent=2)
    run = train(cfg, bkg_file, root / "run", epochs=1, max_events=4000, log=lambda s: None)
    hls = convert_run(run, root / "hls", rate_khz=2000.0, tb_events=500, log=lambda s: None)
    rtl = convert_run(run, root / "rtl", flavor="verilog", log=lambda s: None)
    return run, Path(hls["path"]), Path(rtl["path"]), hls, rtl


def test_all_stages_bit_exact(pipeline, bkg_file):
    from trigger_ml.verify import verify

    run, hls, rtl, _, _ = pipeline
    res = verify(run, bkg_file, hls_dir=hls, rtl_dir=rtl, n_events=3000, log=lambda s: None)
    assert set(res["stages"]) == {"float", "keras", "csim", "emulator", "alkaid", "rtl"}
    assert set(res["exact_pairs"]) == {"csim:keras", "csim:emulator", "keras:emulator", "keras:alkaid", "alkaid:rtl", "csim:alkaid"}
    tb = res["trigger_bit"]  # the emulator's trigger bit (IR threshold) == the wrapper's C-simulated bit
    assert tb["mismatches"] == 0 and tb["threshold_raw_ir"] == tb["threshold_raw_wrapper"] and 0 < tb["fired_csim"] < tb["n_events"], tb
    for pair, r in res["exact_pairs"].items():
        assert r["n_events"] == 3000 and r["mismatches"] == 0, (pair, r)
    assert res["total_mismatches"] == 0 and "localization" not in res
    q = res["quantized_vs_float"]
    assert -1 <= q["pearson"] <= 1 and q["sliced_wasserstein"] >= 0


def test_firmware_dir_contents(pipeline):
    import json

    _, hls, rtl, hinfo, rinfo = pipeline
    for f in ("firmware_model.json", "preprocessing.json", "input_info.json", "manifest.json", "tb_data/tb_input_features.dat"):
        assert (hls / f).exists(), f
    assert (hls / "firmware" / "trigger_threshold.h").exists()
    assert hinfo["tb_emulator_mismatches"] == 0
    man = json.loads((hls / "manifest.json").read_text())
    assert man["stage"] == "firmware.hls"
    assert rinfo["latency_cycles"] >= 1 and (rtl / "rtl_manifest.json").exists()


def test_emulated_trigger_matches_threshold(pipeline, bkg_file, sig_files):
    from trigger_ml.scoring import load_firmware
    from trigger_ml.trigger.run import emulate

    _, hls, _, hinfo, _ = pipeline
    res = emulate(hls, [bkg_file], [sig_files["Ato4l"]], menu_khz={"A": 4000.0, "B": 1000.0})
    for wp, row in res["working_points"].items():
        assert row["threshold"]["rate_khz"] <= {"A": 4000.0, "B": 1000.0}[wp] + 1e-9
        assert 0 <= row["pure_rate_khz"] <= row["threshold"]["rate_khz"]
    fm, _, _ = load_firmware(hls)
    assert fm.threshold == hinfo["threshold"]["raw"]  # the firmware's own constant is in the IR


def test_one_scorer_for_both_flavours_and_held_out_rule(pipeline, bkg_file, sig_files):
    """Any firmware directory opens as a scorer (hls4ml IR emulator, RTL graph interpreter): same
    score values; `emulate` runs on the RTL directory; the training file is scored only beyond
    the events training read."""
    from trigger_ml.data.adc2021 import read_events
    from trigger_ml.scoring import FirmwareScorer
    from trigger_ml.trigger.run import emulate

    _, hls, rtl, _, _ = pipeline
    ev = read_events(sig_files["Ato4l"], stop=2000)
    h, r = FirmwareScorer(hls), FirmwareScorer(rtl)
    assert (h.kind, r.kind) == ("hls", "rtl")
    assert np.array_equal(h.values(ev), r.values(ev))
    assert h.threshold is not None and r.threshold is None
    res = emulate(rtl, [bkg_file], [sig_files["Ato4l"]], menu_khz={"A": 4000.0})
    assert res["firmware_kind"] == "rtl" and res["n_background"] == 16_000  # 20k events, training read 4k
    assert "events after the training sample" in res["background"][0]
    res_h = emulate(hls, [bkg_file], [sig_files["Ato4l"]], menu_khz={"A": 4000.0})
    eff = lambda t: t["working_points"]["A"]["signals"]["Ato4l"]["efficiency"]  # noqa: E731
    assert eff(res_h) == eff(res) and res_h["firmware_threshold"]["raw"] == h.threshold.raw


def test_convert_is_atomic_with_its_run_files(pipeline, tmp_path, monkeypatch):
    """IR, preprocessing and source-run files land in the same rename as the project: a failure
    while writing them leaves no directory behind (both flavours)."""
    from trigger_ml.firmware import convert as C

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(C, "_copy_run_files", boom)
    run = pipeline[0]
    for flavor in ("verilog", "hls"):
        with pytest.raises(OSError, match="disk full"):
            C.convert_run(run, tmp_path / flavor, flavor=flavor, tb_events=50, log=lambda s: None)
        assert not (tmp_path / flavor).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_refuse_overwrite_and_bad_flavor(pipeline, tmp_path):
    from trigger_ml.core.errors import ArtifactError, ConfigError
    from trigger_ml.firmware.convert import convert_run

    run, hls, _, _, _ = pipeline
    with pytest.raises(ArtifactError, match="exists; pass --force"):
        convert_run(run, hls, log=lambda s: None)
    with pytest.raises(ConfigError, match="flavor"):
        convert_run(run, tmp_path / "x", flavor="spinal", log=lambda s: None)
    assert not (tmp_path / "x").exists()


def test_narrow_accumulator_detected_and_localized(pipeline, bkg_file, tmp_path):
    """A deliberately too-narrow accum_t in one dense layer: C-sim and emulator agree with each other,
    disagree with Keras, and the verifier localizes an overflow in that layer."""
    from hls4ml.backends.fpga.fpga_types import APTypeConverter
    from hls4ml.model.types import FixedPrecisionType

    from trigger_ml.emulate import Emulator
    from trigger_ml.firmware import hls as H
    from trigger_ml.ir import from_hls_model
    from trigger_ml.train import load_artifact
    from trigger_ml.verify import compare_exact, localize

    run = pipeline[0]
    art = load_artifact(run)
    x = art.inputs_from_file(bkg_file, stop=2000)
    _, hm = H.convert(run / "model.keras", tmp_path / "narrow", compile=False)
    layer = hm.graph["enc0"]
    layer.get_attr("accum_t").precision = APTypeConverter().convert(FixedPrecisionType(10, 4, True))  # far too narrow: wraps
    hm.compile()
    csim = np.asarray(hm.predict(x.astype(np.float64)), np.float64).reshape(len(x), -1)
    keras_out = art.model.predict(x, verbose=0).reshape(len(x), -1)
    fm = from_hls_model(hm)
    emu = np.asarray(Emulator(fm).predict(x), np.float64).reshape(len(x), -1)
    assert compare_exact(csim, emu)["mismatches"] == 0  # the emulator follows the firmware, overflow included
    cmp = compare_exact(keras_out, csim)
    assert cmp["mismatched_events"] > 0
    bad = np.flatnonzero((keras_out != csim).any(1)).tolist()
    loc = localize(fm, art.model, x, bad)
    assert loc["kind"] == "overflow" and loc["layer"] == "enc0", loc
    assert loc["overflow_counts"]["enc0"].get("accum", 0) > 0
    assert "enc0" in loc["suggestion"] or "accum" in loc["suggestion"]
