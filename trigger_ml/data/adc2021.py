"""Reader and writer for the ADC2021 "LHC new physics" event layout.

An events file is HDF5 with a dataset ``Particles`` of shape (N, 19, 4):
rows = MET, 4 e/gamma, 4 muons, 10 jets (pT-ordered within each type, zero-padded);
columns = pT [GeV], eta, phi, type (1 MET, 2 e/gamma, 3 muon, 4 jet; 0 for padding).
Models use the 57 = 19 x 3 features (type dropped).

Reading is lazy and chunked so memory does not grow with the file size; every chunk is
validated and the first offending event is named in a one-line :class:`DataFormatError`.
Files written here may carry optional extra datasets (``process``: integer process code per
event) and attributes (generator, seed); readers of the ADC2021 files never need them.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from trigger_ml.core.artifacts import H5_STAGE_ATTR, atomic_file, signals_deferred
from trigger_ml.core.errors import ArtifactError, DataFormatError

DATASET = "Particles"
N_OBJECTS = 19
N_COLUMNS = 4
N_FEATURES = N_OBJECTS * 3
#: slices of the 19 rows per object type
OBJECT_SLICES: dict[str, slice] = {
    "met": slice(0, 1),
    "egamma": slice(1, 5),
    "muon": slice(5, 9),
    "jet": slice(9, 19),
}
TYPE_CODES: dict[str, int] = {"met": 1, "egamma": 2, "muon": 3, "jet": 4}
#: expected type code of each of the 19 rows
ROW_TYPES = np.array([1] + [2] * 4 + [3] * 4 + [4] * 10, dtype=np.int64)
DEFAULT_CHUNK = 65536


@dataclass(frozen=True)
class EventsInfo:
    """Summary of an events file without reading its payload."""

    path: Path
    n_events: int
    dtype: str
    extra_datasets: tuple[str, ...]
    attrs: dict


#: what h5py raises on damaged files (metadata, chunk index or data): reported as DataFormatError
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def _open(path: str | os.PathLike) -> h5py.File:
    p = Path(path)
    if not p.exists():
        raise DataFormatError(f"{p}: file not found")
    if p.is_dir():
        raise DataFormatError(f"{p}: is a directory, expected an HDF5 events file (.h5)")
    if not os.access(p, os.R_OK):
        raise DataFormatError(f"{p}: cannot be read (permission denied)")
    try:
        return h5py.File(p, "r")
    except _H5_ERRORS as exc:
        raise DataFormatError(
            f"{p}: cannot be opened as HDF5 (truncated or corrupt file?): {_first_line(exc)}"
        ) from None


def _dataset(f: h5py.File, path: Path) -> h5py.Dataset:
    try:
        return _layout(f, path)
    except DataFormatError:
        raise
    except _H5_ERRORS as exc:  # damaged metadata (object headers), dangling links
        raise DataFormatError(f"{path}: '/{DATASET}' cannot be opened (a link to a missing file or object, or a "
                              f"truncated or corrupt file): {_first_line(exc)}") from None


def _layout(f: h5py.File, path: Path) -> h5py.Dataset:
    if DATASET not in f:
        names = ", ".join(sorted(f.keys())) or "none"
        raise DataFormatError(
            f"{path}: no dataset '{DATASET}' (found: {names}); ADC2021 files hold events in '/{DATASET}'"
        )
    ds = f[DATASET]
    if not isinstance(ds, h5py.Dataset):
        raise DataFormatError(f"{path}: '/{DATASET}' is a group, expected an (N, 19, 4) dataset")
    if ds.shape is None or ds.ndim != 3 or ds.shape[1:] != (N_OBJECTS, N_COLUMNS):
        raise DataFormatError(
            f"{path}: dataset '{DATASET}' has shape {ds.shape}, expected (N, {N_OBJECTS}, {N_COLUMNS})"
        )
    if ds.dtype.kind != "f" or ds.dtype.itemsize > 8:
        raise DataFormatError(
            f"{path}: dataset '{DATASET}' has dtype {ds.dtype}, expected float32 or float64"
        )
    return ds


_F32_MAX = float(np.finfo(np.float32).max)


_VALID_KERNEL: list = []


def _chunk_is_valid(chunk: np.ndarray) -> bool:
    """One compiled pass (numba, cached on disk) over a float chunk: True when no rule of
    :func:`validate_chunk` is broken; the numpy checks below stay the specification and name the
    offending event when it is False."""
    if chunk.dtype not in (np.float32, np.float64) or chunk.ndim != 3 or chunk.shape[1:] != (N_OBJECTS, 4):
        return False  # not the common layout: let the numpy checks decide
    if not _VALID_KERNEL:
        import numba as nb

        from trigger_ml.core.fixed import numba_cache_setup

        numba_cache_setup()

        @nb.njit(cache=True, nogil=True)
        def valid(c, row_types, f32_max):  # pragma: no cover - compiled
            for i in range(c.shape[0]):
                for r in range(c.shape[1]):
                    for k in range(4):
                        v = c[i, r, k]
                        if not np.isfinite(v) or abs(v) > f32_max:
                            return False
                    t = c[i, r, 3]
                    pt = c[i, r, 0]
                    if (t != row_types[r] and t != 0) or pt < 0 or (t == 0 and pt != 0):
                        return False
            return True

        _VALID_KERNEL.append(valid)
    return bool(_VALID_KERNEL[0](np.ascontiguousarray(chunk), ROW_TYPES.astype(np.float64), _F32_MAX))


def validate_chunk(chunk: np.ndarray, path: Path, start: int) -> None:
    """Raise DataFormatError naming the first offending event of ``chunk`` (global index ``start`` + i).

    ``chunk`` may be in the file's own float dtype: values that float32 (the models' input type)
    cannot hold are refused like non-finite ones."""
    if _chunk_is_valid(chunk):
        return
    bad = ~np.isfinite(chunk)
    if bad.any():
        i, r, c = np.argwhere(bad)[0]
        raise DataFormatError(
            f"{path}: dataset '{DATASET}': event {start + i} object {r} column {c} is not finite "
            f"({chunk[i, r, c]}); remove or fix non-finite values"
        )
    big = np.abs(chunk) > _F32_MAX
    if big.any():
        i, r, c = np.argwhere(big)[0]
        raise DataFormatError(
            f"{path}: dataset '{DATASET}': event {start + i} object {r} column {c} is {chunk[i, r, c]:g}, "
            f"beyond the float32 range; remove or fix out-of-range values"
        )
    types = chunk[:, :, 3]
    ok_type = (types == ROW_TYPES) | (types == 0)
    if not ok_type.all():
        i, r = np.argwhere(~ok_type)[0]
        raise DataFormatError(
            f"{path}: dataset '{DATASET}': event {start + i} object {r} has type code {types[i, r]:g}, "
            f"expected {ROW_TYPES[r]} or 0 (padding); rows must be MET, 4 e/gamma, 4 muons, 10 jets"
        )
    pt = chunk[:, :, 0]
    if (pt < 0).any():
        i, r = np.argwhere(pt < 0)[0]
        raise DataFormatError(
            f"{path}: dataset '{DATASET}': event {start + i} object {r} has negative pT {pt[i, r]:g}"
        )
    pad_with_pt = (types == 0) & (pt != 0)
    if pad_with_pt.any():
        i, r = np.argwhere(pad_with_pt)[0]
        raise DataFormatError(
            f"{path}: dataset '{DATASET}': event {start + i} object {r} has type 0 (padding) but pT {pt[i, r]:g}"
        )


def info(path: str | os.PathLike) -> EventsInfo:
    """Shape, dtype and metadata of an events file (validates the layout, not the values)."""
    p = Path(path)
    with _open(p) as f:
        ds = _dataset(f, p)
        try:
            extra = tuple(sorted(k for k in f.keys() if k != DATASET))
            attrs = dict(f.attrs)
        except _H5_ERRORS as exc:
            raise DataFormatError(f"{p}: HDF5 metadata cannot be read (truncated or corrupt file?): "
                                  f"{_first_line(exc)}") from None
        return EventsInfo(p, int(ds.shape[0]), str(ds.dtype), extra, attrs)


def count_events(path: str | os.PathLike) -> int:
    """Number of events in an ADC2021-layout file."""
    return info(path).n_events


def empty_file_error(path: str | os.PathLike, fix: str | None = None) -> DataFormatError:
    """The one message for an events file without events (layout fine, 0 events)."""
    return DataFormatError(f"{Path(path)}: dataset '{DATASET}' holds 0 events; "
                           f"{fix or 'give a file with events (see `trigger-ml data inspect`)'}")


def require_events(path: str | os.PathLike, fix: str | None = None) -> int:
    """Number of events of ``path`` (layout validated); a one-line DataFormatError when it holds none.

    ``fix`` says what to do instead (e.g. which option to give another file to)."""
    n = count_events(path)
    if n == 0:
        raise empty_file_error(path, fix)
    return n


def check_events(path: str | os.PathLike, fix: str | None = None, chunk_size: int = DEFAULT_CHUNK) -> int:
    """Validate a whole events file up front - layout, every event's values, at least one event -
    streaming chunk by chunk (memory does not grow with the file); return its number of events.

    For stages that must refuse bad input before they start work or write anything."""
    n = require_events(path, fix)
    for _ in iter_chunks(path, chunk_size=chunk_size):
        pass
    return n


def iter_chunks(
    path: str | os.PathLike,
    chunk_size: int = DEFAULT_CHUNK,
    start: int = 0,
    stop: int | None = None,
    validate: bool = True,
    with_extra: bool = False,
) -> Iterator[np.ndarray] | Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Yield validated (n, 19, 4) float32 chunks of events [start, stop) without loading the whole file.

    With ``with_extra=True`` yield ``(chunk, extras)`` where extras holds the per-event extra
    datasets (e.g. ``process``) for the same events.
    """
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    p = Path(path)
    with _open(p) as f:
        ds = _dataset(f, p)
        n = ds.shape[0]
        stop = n if stop is None else min(stop, n)
        extras = _extras(f, p, n) if with_extra else {}
        for lo in range(max(start, 0), stop, chunk_size):
            hi = min(lo + chunk_size, stop)
            try:
                raw = np.asarray(ds[lo:hi])
            except _H5_ERRORS as exc:
                raise DataFormatError(
                    f"{p}: dataset '{DATASET}': events {lo}-{hi} cannot be read (truncated or corrupt file?): "
                    f"{_first_line(exc)}"
                ) from None
            if validate:
                validate_chunk(raw, p, lo)  # in the file's dtype: a float64 beyond float32 is named, not cast to inf
            with np.errstate(over="ignore"):  # (validate=False: out-of-range values become inf, silently)
                chunk = raw.astype(np.float32, copy=False)
            if with_extra:
                try:
                    ex = {k: np.asarray(v[lo:hi]) for k, v in extras.items()}
                except _H5_ERRORS as exc:
                    raise DataFormatError(f"{p}: events {lo}-{hi} of the extra datasets cannot be read "
                                          f"(truncated or corrupt file?): {_first_line(exc)}") from None
                yield chunk, ex
            else:
                yield chunk


def _extras(f: h5py.File, p: Path, n: int) -> dict[str, h5py.Dataset]:
    """The optional per-event datasets next to ``Particles`` (same first dimension); objects that
    cannot be opened (e.g. a dangling link) are optional extras too, and skipped."""
    out = {}
    for k in f.keys():
        if k == DATASET:
            continue
        try:
            v = f[k]
        except _H5_ERRORS:
            continue
        if isinstance(v, h5py.Dataset) and v.shape is not None and v.shape[:1] == (n,):
            out[k] = v
    return out


def read_events(
    path: str | os.PathLike, start: int = 0, stop: int | None = None, validate: bool = True
) -> np.ndarray:
    """Read events [start, stop) into memory as a (n, 19, 4) float32 array."""
    p = Path(path)
    with _open(p) as f:
        ds = _dataset(f, p)
        n, f32 = ds.shape[0], ds.dtype == np.float32
    stop = n if stop is None else min(stop, n)
    # a float32 file is read in one piece straight into the result (no second copy); any other dtype
    # chunk by chunk, so its copy in the file's dtype never holds more than one chunk
    size = max(1, stop - max(start, 0)) if f32 else DEFAULT_CHUNK
    chunks = list(iter_chunks(path, chunk_size=size, start=start, stop=stop, validate=validate))
    if not chunks:
        return np.zeros((0, N_OBJECTS, N_COLUMNS), dtype=np.float32)
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def read_extra(path: str | os.PathLike, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Read an optional per-event dataset (e.g. ``process``) written next to ``Particles``."""
    p = Path(path)
    with _open(p) as f:
        if name not in f:
            raise DataFormatError(f"{p}: no dataset '{name}' (this file carries only {sorted(f.keys())})")
        try:
            return np.asarray(f[name][start:stop])
        except _H5_ERRORS as exc:
            raise DataFormatError(f"{p}: dataset '{name}' cannot be read (truncated or corrupt file?): "
                                  f"{_first_line(exc)}") from None


def to_features(events: np.ndarray) -> np.ndarray:
    """Drop the type column: (n, 19, 4) -> (n, 57) features ordered (pT, eta, phi) per object."""
    return np.ascontiguousarray(events[:, :, :3]).reshape(len(events), N_FEATURES)


class EventsWriter:
    """Append events to a new ADC2021-layout file, written atomically (temp file + rename).

    Nothing is created until the writer is entered (``with``) or first appended to; on any
    exception inside the ``with`` block (KeyboardInterrupt and the CLI's SIGTERM exception
    included) the temporary file is removed and an existing ``path`` is left untouched. The file
    records the stage that wrote it in the attribute ``trigger_ml_stage`` (``stage``), which
    :func:`trigger_ml.core.artifacts.check_output` reads before it lets a later run of the same
    stage replace it. A missing parent directory is refused.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        force: bool = False,
        attrs: dict | None = None,
        dtype: str = "float32",
        compression: str | None = None,
        stage: str = "events",
    ) -> None:
        self.path = Path(path)
        if self.path.exists() and not force:
            raise ArtifactError(f"{self.path}: exists; pass --force (force=True) to overwrite")
        self._force, self._dtype, self._compression = force, dtype, compression
        self._attrs = {**(attrs or {}), H5_STAGE_ATTR: stage}
        self._atomic = None
        self._f: h5py.File | None = None
        self._extra: dict[str, h5py.Dataset] = {}
        self.n = 0

    def _open(self) -> None:
        if self._f is not None:
            return
        atomic = atomic_file(self.path, force=self._force, suffix=".tmp")
        try:
            with signals_deferred():  # the temporary file exists only together with its clean-up
                self._tmp = atomic.__enter__()
                self._atomic = atomic
            self._f = h5py.File(self._tmp, "w")
            self._ds = self._f.create_dataset(
                DATASET,
                shape=(0, N_OBJECTS, N_COLUMNS),
                maxshape=(None, N_OBJECTS, N_COLUMNS),
                dtype=self._dtype,
                chunks=(4096, N_OBJECTS, N_COLUMNS),
                compression=self._compression,
            )
            for k, v in self._attrs.items():
                self._f.attrs[k] = v
        except BaseException as exc:
            self._discard(exc)
            raise

    def append(self, events: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> None:
        """Append (n, 19, 4) events and optional per-event extra arrays."""
        events = np.asarray(events)
        if events.ndim != 3 or events.shape[1:] != (N_OBJECTS, N_COLUMNS):
            raise ValueError(f"events must have shape (n, {N_OBJECTS}, {N_COLUMNS}), got {events.shape}")
        self._open()
        n0, n1 = self.n, self.n + len(events)
        self._ds.resize(n1, axis=0)
        self._ds[n0:n1] = events
        for k, v in (extra or {}).items():
            v = np.asarray(v)
            if k not in self._extra:
                if n0:
                    raise ValueError(f"extra dataset '{k}' must be given from the first append on")
                self._extra[k] = self._f.create_dataset(
                    k, shape=(0,) + v.shape[1:], maxshape=(None,) + v.shape[1:], dtype=v.dtype, chunks=True
                )
            self._extra[k].resize(n1, axis=0)
            self._extra[k][n0:n1] = v
        self.n = n1

    def close(self) -> Path:
        """Finish the file and move it into place."""
        self._open()
        try:
            self._f.close()
            self._f = None
            self._atomic.__exit__(None, None, None)  # the rename; the writer removes its temporary if that fails
            self._atomic = None
        except BaseException as exc:
            self._discard(exc)
            raise
        return self.path

    def _discard(self, exc: BaseException) -> None:
        f, atomic, self._f, self._atomic = self._f, self._atomic, None, None
        try:
            if f is not None:
                with contextlib.suppress(Exception):
                    f.close()
        finally:
            if atomic is not None:
                atomic.__exit__(type(exc), exc, exc.__traceback__)  # removes the temporary file

    def abort(self) -> None:
        """Discard the partial file."""
        self._discard(RuntimeError("aborted"))

    def __enter__(self) -> "EventsWriter":
        self._open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._discard(exc if exc is not None else exc_type())


def write_events(
    path: str | os.PathLike,
    events: np.ndarray,
    extra: dict[str, np.ndarray] | None = None,
    attrs: dict | None = None,
    force: bool = False,
) -> Path:
    """Write (n, 19, 4) events to an ADC2021-layout file atomically; refuse to overwrite unless ``force``."""
    with EventsWriter(path, force=force, attrs=attrs, dtype=str(np.asarray(events).dtype) if np.asarray(events).dtype.kind == "f" else "float32") as w:
        w.append(events, extra)
    return Path(path)
