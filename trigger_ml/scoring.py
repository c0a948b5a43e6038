"""Open any firmware directory as a scorer: events → the firmware's score integers.

The one home for "what does this firmware say about these events": every stage that needs the
firmware score (``emulate``, ``verify``, ``report``, ``scan``, the demo) goes through
:class:`FirmwareScorer`, so they all read the same score output (``FirmwareModel.score``) the same
way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trigger_ml.core.constants import (
    INPUT_INFO_FILE,
    IR_FILE,
    MANIFEST_FILE,
    PREPROCESSING_FILE,
    RTL_MANIFEST_FILE,
    SOURCE_RUN_FILE,
)
from trigger_ml.core.errors import ArtifactError
from trigger_ml.core.fixed import FixedType
from trigger_ml.core.threshold import Threshold, resolve_score
from trigger_ml.emulate import Emulator


def load_firmware(path: str | Path):
    """(FirmwareModel, preprocessing, input_info) of an HLS firmware directory written by :func:`convert_run`."""
    from trigger_ml.ir import FirmwareModel

    p = Path(path)
    if not (p / IR_FILE).exists():
        raise ArtifactError(f"{p}: no {IR_FILE}; convert with `trigger-ml convert RUN --out {p}` (HLS flavour)")
    pre = _read_preprocessing(p)
    try:
        info = json.loads((p / INPUT_INFO_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{p}: incomplete firmware directory ({exc}); re-run `trigger-ml convert`") from None
    return FirmwareModel.load(p / IR_FILE), pre, info


def firmware_kind(path: str | Path) -> str:
    """'hls' (an hls4ml project with the firmware IR) or 'rtl' (a da4ml/alkaid RTL project)."""
    p = Path(path)
    if (p / IR_FILE).is_file():
        return "hls"
    if (p / RTL_MANIFEST_FILE).is_file():
        return "rtl"
    raise ArtifactError(f"{p}: not a firmware directory (no {IR_FILE} or {RTL_MANIFEST_FILE}); "
                        f"write one with `trigger-ml convert RUN --out {p}`")


def _read_preprocessing(p: Path):
    from trigger_ml.data.preprocess import preprocessing_from_json

    try:
        return preprocessing_from_json(json.loads((p / PREPROCESSING_FILE).read_text()))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{p}: incomplete firmware directory ({exc}); re-run `trigger-ml convert`") from None


class FirmwareScorer:
    """Events → the firmware's score as raw integers of its fixed-point type, for any firmware
    directory: an hls4ml project (bit-exact emulator of its FirmwareModel IR) or a da4ml/alkaid
    RTL project (the RTL graph's own bit-exact interpreter).

    The score is the IR's score output (``FirmwareModel.score``, set at conversion); a firmware
    without one must have a single output value, or ``score_output`` (``'name'``/``'name[i]'``)
    picks it. Picklable (Dask): the firmware is loaded lazily, once per process.
    """

    def __init__(self, firmware_dir: str | Path, score_output: str | None = None) -> None:
        self.firmware_dir = str(firmware_dir)
        self.score_output = score_output
        self.kind = firmware_kind(firmware_dir)
        self._state = None

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_state": None}

    # -- loading --------------------------------------------------------------------------------
    def _load(self):
        if self._state is None:
            p = Path(self.firmware_dir)
            if self.kind == "hls":
                fm, pre, _ = load_firmware(p)
                if fm.score is None or self.score_output is not None:
                    name, idx, _ = resolve_score([(o.name, o.size) for o in fm.outputs], self.score_output)
                    fm = fm.with_score(name, idx, fm.threshold if fm.score is not None else None)
                self._state = {"emu": Emulator(fm), "pre": pre, "fm": fm, "type": fm.score_type,
                               "threshold": fm.trigger_threshold}
            else:
                from trigger_ml.firmware.rtl import RTLProject

                pre = _read_preprocessing(p)
                proj = RTLProject.load(p)
                # the RTL top has one flat output vector "out"; the score is out[i]
                _, _, flat = resolve_score([("out", len(proj.outputs))], self.score_output)
                f = proj.outputs[flat]
                t = FixedType(max(int(f.width), 1), int(f.width) - int(f.frac_bits), bool(f.signed))
                self._state = {"comb": proj.comb_logic(), "pre": pre, "flat": flat, "type": t, "threshold": None,
                               "proj": proj}
        return self._state

    @property
    def firmware(self):
        """The FirmwareModel (hls4ml projects; None for RTL projects)."""
        return self._load().get("fm")

    @property
    def score_type(self) -> FixedType:
        """Fixed-point type of the score as the firmware outputs it (RTL: the port field's width)."""
        return self._load()["type"]

    @property
    def lsb(self) -> float:
        return 2.0 ** -self.score_type.frac

    @property
    def threshold(self) -> Threshold | None:
        """The threshold the firmware was built with (hls4ml trigger wrapper), or None."""
        return self._load()["threshold"]

    @property
    def source(self) -> str:
        return ("bit-exact emulator of the hls4ml firmware IR" if self.kind == "hls"
                else "bit-exact interpreter of the RTL graph (da4ml/alkaid)")

    # -- scoring --------------------------------------------------------------------------------
    def __call__(self, events: np.ndarray) -> np.ndarray:
        """Raw score integers (int64) of ADC2021 events (n, 19, 4)."""
        st = self._load()
        return self.score_inputs(st["pre"].transform(events))

    def score_inputs(self, x: np.ndarray) -> np.ndarray:
        """Raw score integers (int64) of already preprocessed model inputs."""
        st = self._load()
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)  # float64: exact up to 53-bit outputs
        t = st["type"]
        if self.kind == "rtl":
            from trigger_ml.firmware.rtl import comb_predict

            out = np.asarray(comb_predict(st["comb"], x), np.float64).reshape(len(x), -1)[:, st["flat"]]
            return np.ldexp(out, t.frac).astype(np.int64)
        return st["emu"].score_raw(x)

    def values(self, events: np.ndarray) -> np.ndarray:
        """Score values (float64, exact for types up to 53 bits) of ADC2021 events."""
        return np.ldexp(self(events).astype(np.float64), -self.score_type.frac)

    def values_of_inputs(self, x: np.ndarray) -> np.ndarray:
        """Score values (float64) of already preprocessed model inputs."""
        return np.ldexp(self.score_inputs(x).astype(np.float64), -self.score_type.frac)


def source_run(firmware_dir: str | Path) -> Path | None:
    """The training run a firmware directory was converted from (``source_run.json``), if recorded."""
    f = Path(firmware_dir) / SOURCE_RUN_FILE
    if not f.is_file():
        return None
    try:
        return Path(json.loads(f.read_text())["run"])
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{f}: unreadable ({exc}); re-run `trigger-ml convert` with --force") from None


def held_out_sources(firmware_dir: str | Path, backgrounds, max_events: int | None = None
                     ) -> tuple[list[tuple[str, int, int]], list[str]]:
    """The background events to score with a firmware: (file, start, stop) per file and a note each.

    The one held-out rule (:func:`trigger_ml.train.held_out_background`) of the firmware's source
    run applies, so a training event is never scored as background; without a recorded run (or
    when the run is gone) files are used whole and the note says so."""
    from trigger_ml.core.artifacts import read_manifest
    from trigger_ml.models.config import ModelConfig
    from trigger_ml.train import held_out_background

    run = source_run(firmware_dir)
    man = cfg = None
    if run is not None and (run / MANIFEST_FILE).is_file():
        man = read_manifest(run, expect_stage="train", verify_inputs=False)
        cfg = ModelConfig.model_validate(man["config"])
    out, notes = [], []
    for b in backgrounds:
        if man is not None:
            ho = held_out_background(man, cfg, b, max_events)
            out.append((str(ho.path), ho.start, ho.stop))
            notes.append(ho.note)
        else:
            from trigger_ml.data.adc2021 import require_events

            n = require_events(b, "background events are needed; give a background file with events (--background)")
            stop = min(n, max_events) if max_events else n
            out.append((str(b), 0, stop))
            notes.append(f"{b} events 0-{stop:,} (training run unknown: the held-out rule could not be applied)")
    return out, notes
