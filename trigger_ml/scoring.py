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

from trigger_ml.core.constants import INPUT_INFO_FILE, IR_FILE, PREPROCESSING_FILE
from trigger_ml.core.errors import ArtifactError
from trigger_ml.emulate.engine import Emulator


def load_firmware(path: str | Path):
    """(FirmwareModel, preprocessing, input_info) of an HLS firmware directory written by :func:`convert_run`."""
    from trigger_ml.data.preprocess import preprocessing_from_json
    from trigger_ml.ir import FirmwareModel

    p = Path(path)
    if not (p / IR_FILE).exists():
        raise ArtifactError(f"{p}: no {IR_FILE}; convert with `trigger-ml convert RUN --out {p}` (HLS flavour)")
    try:
        pre = preprocessing_from_json(json.loads((p / PREPROCESSING_FILE).read_text()))
        info = json.loads((p / INPUT_INFO_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{p}: incomplete firmware directory ({exc}); re-run `trigger-ml convert`") from None
    return FirmwareModel.load(p / IR_FILE), pre, info


class FirmwareScorer:
    """Picklable events → firmware score integers, loading the firmware lazily (once per process)."""

    def __init__(self, firmware_dir: str | Path) -> None:
        self.firmware_dir = str(firmware_dir)
        self._state = None

    def __getstate__(self) -> dict:
        return {"firmware_dir": self.firmware_dir, "_state": None}

    def _load(self):
        if self._state is None:
            fm, pre, info = load_firmware(self.firmware_dir)
            if fm.score is None:
                fm = fm.with_score()
            k = [o.name for o in fm.outputs].index(fm.score.output)
            self._state = (Emulator(fm), pre, k, fm.score.index, fm)
        return self._state

    @property
    def firmware(self):
        return self._load()[4]

    @property
    def lsb(self) -> float:
        return 2.0 ** -self.firmware.score_type.frac

    def __call__(self, events: np.ndarray) -> np.ndarray:
        emu, pre, k, idx, fm = self._load()
        x = pre.transform(events).astype(np.float64)  # float64 path: exact outputs up to 53 bits, fast
        t = fm.score_type
        if t.width > 53:
            raw = emu.predict_raw(emu.quantize_inputs(x))
            raw = raw if not isinstance(raw, list) else raw[k]
            return np.asarray(raw).reshape(len(events), -1)[:, idx].astype(np.int64)
        out = emu.predict(x)
        out = out if not isinstance(out, list) else out[k]
        return np.ldexp(np.asarray(out, np.float64).reshape(len(events), -1)[:, idx], t.frac).astype(np.int64)


