"""Bring your own model: import trained models and deployed firmware into a firmware directory.

Every importer ends in the same place as ``trigger-ml convert --flavor hls``: an hls4ml project
with ``firmware_model.json`` (the IR), ``preprocessing.json``, ``input_info.json`` and a
``manifest.json`` of stage ``firmware.hls`` (:func:`trigger_ml.importers.common.write_firmware`),
so ``emulate``, ``verify``, ``report`` and ``measure`` accept it. :func:`import_model` picks the
importer from the source.
"""

from trigger_ml.importers.api import detect_format, import_model

__all__ = ["detect_format", "import_model"]
