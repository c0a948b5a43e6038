"""L1 event data: ADC2021-layout files, a synthetic generator, and preprocessing to hardware units."""

from trigger_ml.data.adc2021 import (
    N_FEATURES,
    N_OBJECTS,
    OBJECT_SLICES,
    TYPE_CODES,
    EventsInfo,
    count_events,
    iter_chunks,
    read_events,
    to_features,
    write_events,
)

__all__ = [
    "N_FEATURES",
    "N_OBJECTS",
    "OBJECT_SLICES",
    "TYPE_CODES",
    "EventsInfo",
    "count_events",
    "iter_chunks",
    "read_events",
    "to_features",
    "write_events",
]
