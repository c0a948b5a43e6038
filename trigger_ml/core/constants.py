"""Constants shared by every stage: LHC timing, artifact file names, defaults. One home each."""

from __future__ import annotations

#: nominal LHC bunch-crossing rate; a trigger's rate = FPR × BX_RATE_HZ
BX_RATE_HZ = 40e6
#: rate of *filled* bunch crossings (2,556 of 3,564 bunches × 11.245 kHz), for zero-bias-like rates
FILLED_BX_RATE_HZ = 28.6e6
#: one bunch crossing [ns]
BX_NS = 25.0

#: events per chunk when scoring files (emulate, catalog, Dask tasks): the arrays of a chunk stay below
#: glibc's 32 MB mmap threshold, so they are reused from the heap instead of page-faulted anew each
#: chunk (measured: 1.05-1.2M events/s at 10^6 events against 0.85-1.05M with 262,144); results do
#: not depend on it (exact integer histograms)
SCORE_CHUNK = 65_536

#: every stage directory carries a manifest (inputs' hashes, config, versions, figures)
MANIFEST_FILE = "manifest.json"
#: an RTL (da4ml/alkaid) project's own manifest
RTL_MANIFEST_FILE = "rtl_manifest.json"
#: the FirmwareModel IR of a firmware directory
IR_FILE = "firmware_model.json"
#: events → model inputs: preprocessing steps and input layout, copied from the training run
PREPROCESSING_FILE = "preprocessing.json"
INPUT_INFO_FILE = "input_info.json"
#: the training run a firmware directory came from (path + model hash)
SOURCE_RUN_FILE = "source_run.json"
#: the model files of a training run
MODEL_FILE, TRAIN_MODEL_FILE, FLOAT_MODEL_FILE = "model.keras", "train_model.keras", "float_model.keras"
#: measurements written next to a firmware project by `trigger-ml measure`
MEASUREMENTS_FILE = "measurements.json"

#: default FPGA part (the CMS Phase-2 / uGT class of device)
DEFAULT_PART = "xcvu13p-flga2577-2-e"

#: fraction of a background file that training may use; events after it are held out (see
#: :func:`trigger_ml.data.heldout_background`) — the one rule every stage shares
TRAIN_FRACTION = 0.5
