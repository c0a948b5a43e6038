"""Model zoo: named HGQ2 architectures (configs under ``models/``), score layers and the float twin.

``trigger_ml.models.config`` (the pydantic schemas) imports without Keras; ``build``/``Built`` load
the zoo (and Keras) on first use.
"""

from __future__ import annotations

__all__ = ["Built", "build"]


def __getattr__(name: str):
    if name in __all__:
        from trigger_ml.models import zoo

        return getattr(zoo, name)
    raise AttributeError(name)
