"""Error types: every user-facing failure is a TriggerMLError with an actionable one-line message."""

from __future__ import annotations


class TriggerMLError(Exception):
    """Base class of errors a user can act on (bad input, missing artifact, refused overwrite)."""


class DataFormatError(TriggerMLError):
    """An events file does not follow the ADC2021 layout."""


class ConfigError(TriggerMLError):
    """A YAML/JSON configuration is invalid."""


class ArtifactError(TriggerMLError):
    """A stage artifact (model, firmware project, report) is missing, corrupt or would be overwritten."""


class UnsupportedLayerError(TriggerMLError):
    """A layer the firmware IR / emulator does not know how to execute."""
