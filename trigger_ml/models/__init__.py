"""Model zoo: named HGQ2 architectures (configs under ``models/``), score layers and the float twin."""

from trigger_ml.models.zoo import Built, build

__all__ = ["Built", "build"]
