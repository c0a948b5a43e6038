"""trigger_ml: quantized neural networks for the Level-1 trigger."""

__version__ = "0.1.0"
