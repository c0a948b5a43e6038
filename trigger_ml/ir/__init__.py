"""The FirmwareModel IR: what the chip computes (layers, integer weights, every fixed-point type,
score and threshold), serialisable to JSON so the emulator runs without TensorFlow or hls4ml.

``model`` holds the schema, ``tables`` the lookup tables of table activations, ``from_hls4ml`` the
importer from a converted hls4ml graph (the only module here that imports hls4ml, lazily).
"""

from trigger_ml.ir.from_hls4ml import from_hls_model
from trigger_ml.ir.model import (
           FORMAT,
           KINDS,
           SCHEMA_VERSION,
           FirmwareModel,
           Layer,
           ScoreSpec,
           TensorSpec,
)
from trigger_ml.ir.tables import build_tables

__all__ = ["FORMAT", "KINDS", "SCHEMA_VERSION", "FirmwareModel", "Layer", "ScoreSpec", "TensorSpec",
           "build_tables", "from_hls_model"]
