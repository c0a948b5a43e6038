"""Software trigger emulation: threshold calibration, working-point menus, pure rate, catalog, Dask scale-out.

Everything here works on the *firmware* score: raw integers of the score's fixed-point type, as
produced by the bit-exact emulator. The trigger bit is ``score_raw > threshold_raw`` — the same
integer comparison the chip makes — so rates and efficiencies follow the firmware exactly.

Rates: rate = (events passing / events) × bunch-crossing rate (40 MHz nominal, 28.6 MHz for the
filled bunches). A rate comes with a Clopper–Pearson interval; efficiencies too.
"""

from __future__ import annotations

import contextlib

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from trigger_ml.core.constants import SCORE_CHUNK
from trigger_ml.core.errors import ConfigError, DataFormatError
from trigger_ml.core.fixed import FixedType
from trigger_ml.core.metrics import BX_RATE_HZ, clopper_pearson
from trigger_ml.core.threshold import Threshold, calibrate_threshold, fires  # noqa: F401  (the one threshold home)
from trigger_ml.data.adc2021 import OBJECT_SLICES
from trigger_ml.trigger.histograms import HistogramAccumulator, ScoreHistogram, calibrate_threshold_hist

#: default menu of working points, by target rate (named like the CMS anomaly-trigger menus)
DEFAULT_MENU_KHZ: dict[str, float] = {"VLoose": 20.0, "Loose": 10.0, "Nominal": 5.0, "Tight": 2.0, "VTight": 1.0}


# ------------------------------------------------------------------ reference L1 seeds
@dataclass(frozen=True)
class Seed:
    """A classic L1 seed on physics values: ``single``/``double`` object thresholds, ``ht`` or ``met``."""

    name: str
    kind: str  # single | double | ht | met
    object: str | None = None  # egamma | muon | jet (single/double)
    pt_min: tuple[float, ...] = ()
    eta_max: float | None = None
    jet_pt_min: float = 30.0  # HT: jets above this pT
    jet_eta_max: float = 2.4  # HT: jets within |eta|

    def fired(self, events: np.ndarray) -> np.ndarray:
        """(n,) bool for (n, 19, 4) physics events."""
        if self.kind == "met":
            return events[:, 0, 0] > self.pt_min[0]
        if self.kind == "ht":
            j = events[:, OBJECT_SLICES["jet"]]
            ok = (j[:, :, 0] > self.jet_pt_min) & (np.abs(j[:, :, 1]) < self.jet_eta_max)
            return (j[:, :, 0] * ok).sum(1, dtype=np.float64) > self.pt_min[0]  # float64: no overflow
        if self.object not in ("egamma", "muon", "jet"):
            raise ConfigError(f"seed {self.name}: object must be egamma, muon or jet (got {self.object!r})")
        o = events[:, OBJECT_SLICES[self.object]]
        pt = o[:, :, 0] * (np.abs(o[:, :, 1]) < self.eta_max if self.eta_max else 1)
        need = self.pt_min if self.kind == "double" else self.pt_min[:1]
        if self.kind not in ("single", "double"):
            raise ConfigError(f"seed {self.name}: kind must be single, double, ht or met (got {self.kind!r})")
        # the (i+1)-th hardest object passes need[i]  <=>  at least i+1 objects reach need[i] (no sort needed)
        ok = np.count_nonzero(pt >= need[0], axis=1) >= 1
        for i, p in enumerate(need[1:], start=1):
            ok &= np.count_nonzero(pt >= p, axis=1) >= i + 1
        return ok


#: classic seeds (thresholds in GeV), the reference for pure rate / unique efficiency
DEFAULT_SEEDS: tuple[Seed, ...] = (
    Seed("SingleMu22", "single", "muon", (22.0,), 2.4),
    Seed("SingleEG30", "single", "egamma", (30.0,), 2.5),
    Seed("DoubleMu15_7", "double", "muon", (15.0, 7.0), 2.4),
    Seed("HT360", "ht", pt_min=(360.0,)),
    Seed("MET90", "met", pt_min=(90.0,)),
)


def seeds_from_config(items: Iterable[dict]) -> tuple[Seed, ...]:
    """Seeds from dicts (e.g. YAML): {name, kind, object, pt_min: [..], eta_max}."""
    out = []
    for d in items:
        try:
            d = dict(d)
            d["pt_min"] = tuple(float(v) for v in np.atleast_1d(d.get("pt_min", ())))
            out.append(Seed(**d))
        except TypeError as exc:
            raise ConfigError(f"reference seed {d.get('name', '?')}: {exc}") from None
    return tuple(out)


def reference_bits(events: np.ndarray, seeds: Sequence[Seed] = DEFAULT_SEEDS) -> np.ndarray:
    """(n, n_seeds) bool: which reference seeds fire on each event.

    Float32/float64 events in the ADC2021 layout go through one compiled pass (numba, cached on
    disk) that gives exactly :meth:`Seed.fired` (the specification; thresholds compared in the
    events' dtype as numpy does, the HT sum in float64); anything else through ``Seed.fired``."""
    if not seeds:
        return np.zeros((len(events), 0), bool)
    ev = np.asarray(events)
    if ev.dtype in (np.float32, np.float64) and ev.ndim == 3 and ev.shape[1] == 19 and len(ev):
        try:
            params = _seed_params(seeds, ev.dtype)
        except ConfigError:
            params = None  # an invalid seed: Seed.fired raises the one-line error
        if params is not None:
            out = np.empty((len(ev), len(seeds)), np.bool_)
            _seed_kernel()(np.ascontiguousarray(ev), *params, out)
            return out
    return np.stack([s.fired(ev) for s in seeds], axis=1)


_SEED_KIND = {"met": 0, "ht": 1, "single": 2, "double": 3}
_SEED_KERNEL: list = []


def _seed_params(seeds: Sequence[Seed], dtype) -> tuple:
    """Per seed: kind code, object rows, |eta| cut (inf: none), pT thresholds (events' dtype), HT jet cuts."""
    n = len(seeds)
    kind = np.zeros(n, np.int64)
    lo = np.zeros(n, np.int64)
    hi = np.zeros(n, np.int64)
    eta = np.full(n, np.inf, dtype)
    need = np.zeros((n, max(max(len(s.pt_min), 1) for s in seeds)), dtype)
    n_need = np.zeros(n, np.int64)
    jet_pt = np.zeros(n, dtype)
    jet_eta = np.zeros(n, dtype)
    ht_min = np.zeros(n, np.float64)  # the HT sum is compared in float64, as Seed.fired does
    for k, s in enumerate(seeds):
        if s.kind not in _SEED_KIND or not s.pt_min or (s.kind in ("single", "double")
                                                          and s.object not in ("egamma", "muon", "jet")):
            raise ConfigError(f"seed {s.name}: not compiled")
        kind[k] = _SEED_KIND[s.kind]
        sl = OBJECT_SLICES["jet" if s.kind == "ht" else (s.object if s.kind != "met" else "met")]
        lo[k], hi[k] = sl.start, sl.stop
        if s.eta_max:
            eta[k] = s.eta_max
        use = s.pt_min if s.kind == "double" else s.pt_min[:1]
        need[k, :len(use)] = use
        n_need[k] = len(use)
        jet_pt[k], jet_eta[k], ht_min[k] = s.jet_pt_min, s.jet_eta_max, s.pt_min[0]
    return kind, lo, hi, eta, need, n_need, jet_pt, jet_eta, ht_min


def _seed_kernel():
    if not _SEED_KERNEL:
        import numba as nb

        from trigger_ml.core.fixed import numba_cache_setup

        numba_cache_setup()

        @nb.njit(cache=True, nogil=True)
        def fired(ev, kind, lo, hi, eta, need, n_need, jet_pt, jet_eta, ht_min, out):  # pragma: no cover - compiled
            zero = ev.dtype.type(0)
            for i in range(ev.shape[0]):
                for k in range(kind.shape[0]):
                    if kind[k] == 0:  # MET
                        out[i, k] = ev[i, 0, 0] > need[k, 0]
                    elif kind[k] == 1:  # HT of jets above jet_pt within |eta| < jet_eta
                        ht = 0.0
                        for r in range(lo[k], hi[k]):
                            if ev[i, r, 0] > jet_pt[k] and abs(ev[i, r, 1]) < jet_eta[k]:
                                ht += np.float64(ev[i, r, 0])
                        out[i, k] = ht > ht_min[k]
                    else:  # the (j+1)-th object reaching need[j]: at least j+1 objects at or above it
                        ok = True
                        for j in range(n_need[k]):
                            c = 0
                            for r in range(lo[k], hi[k]):
                                pt = ev[i, r, 0] if abs(ev[i, r, 1]) < eta[k] else zero
                                if pt >= need[k, j]:
                                    c += 1
                            if c < j + 1:
                                ok = False
                                break
                        out[i, k] = ok

        _SEED_KERNEL.append(fired)
    return _SEED_KERNEL[0]


# ------------------------------------------------------------------ menus
@dataclass
class SampleScores:
    """Firmware scores and reference-seed bits of one sample (background or a signal)."""

    name: str
    score_raw: np.ndarray
    ref_bits: np.ndarray
    files: list[str] = field(default_factory=list)


def menu_table(
    background: SampleScores | ScoreHistogram, signals: Sequence[SampleScores | ScoreHistogram], score: FixedType | float,
    menu_khz: dict[str, float] | None = None,
    bx_rate_hz: float = BX_RATE_HZ,
) -> dict[str, Any]:
    """Per working point: threshold, rate ± CP, pure rate vs the reference menu, signal efficiencies.

    Samples are per-event :class:`SampleScores` or exact score histograms
    (:class:`~trigger_ml.trigger.histograms.ScoreHistogram`, what ``emulate`` streams into); the
    figures are computed from the histogram's integer counts either way, so both give the same
    table. ``score`` is the score's fixed-point type (thresholds are range-checked on it) or its LSB.

    * rate: background fraction above threshold × bunch-crossing rate;
    * pure rate: the part of that rate no reference seed already accepts;
    * efficiency: signal fraction above threshold (CP 68 % interval);
    * unique efficiency: signal fraction above threshold that no reference seed accepts.
    """
    menu = menu_khz or DEFAULT_MENU_KHZ
    hb = as_histogram(background)
    hs = [as_histogram(s) for s in signals]
    n_b = hb.n_events
    for smp in (hb, *hs):  # rates and efficiencies are fractions of these events
        if not smp.n_events:
            where = ", ".join(map(str, smp.files)) or smp.name
            raise DataFormatError(f"{where}: no {smp.name} events to score; give {smp.name} files with events")
    rows: dict[str, Any] = {}
    ref_rate = hb.n_reference / n_b * bx_rate_hz / 1e3
    for wp, khz in menu.items():
        try:
            thr = calibrate_threshold_hist(hb, score, khz, bx_rate_hz)
        except ConfigError as err:  # e.g. too few background events for this rate: say so, keep the others
            rows[wp] = {"threshold": None, "target_rate_khz": khz, "error": str(err), "signals": {}}
            continue
        pure = hb.n_above_unique(thr)
        plo, phi = clopper_pearson(pure, n_b)
        row: dict[str, Any] = {"threshold": thr.to_json(), "pure_rate_khz": pure / n_b * bx_rate_hz / 1e3,
                               "pure_rate_interval_khz_68": [plo * bx_rate_hz / 1e3, phi * bx_rate_hz / 1e3],
                               "signals": {}}
        for s in hs:
            n = s.n_events
            k, ku = s.n_above(thr), s.n_above_unique(thr)
            row["signals"][s.name] = {
                "efficiency": k / n, "efficiency_interval_68": list(clopper_pearson(k, n)),
                "unique_efficiency": ku / n, "unique_efficiency_interval_68": list(clopper_pearson(ku, n)),
                "reference_efficiency": s.n_reference / n, "n_events": n,
            }
        rows[wp] = row
    return {"bx_rate_hz": bx_rate_hz, "n_background": n_b, "reference_menu_rate_khz": ref_rate, "working_points": rows}


def as_histogram(sample: SampleScores | ScoreHistogram) -> ScoreHistogram:
    """The exact score histogram of a sample (per-event scores are counted; a histogram is returned as is)."""
    if isinstance(sample, ScoreHistogram):
        return sample
    return ScoreHistogram.from_scores(sample.name, sample.score_raw, sample.ref_bits, files=sample.files)


def wp_bits(score_raw: np.ndarray, thresholds: dict[str, Threshold]) -> np.ndarray:
    """(n, n_wp) bool: the firmware trigger bit of each working point."""
    return np.stack([fires(score_raw, t) for t in thresholds.values()], axis=1) if thresholds else \
        np.zeros((len(score_raw), 0), bool)


# ------------------------------------------------------------------ scoring many files (local or Dask)
ScoreFn = Callable[[np.ndarray], np.ndarray]


def _score_chunk(path: str, start: int, stop: int, score_fn: ScoreFn, seeds: Sequence[Seed],
                 events: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scores and reference bits of events [start, stop) of ``path`` (``events``: those events, already read)."""
    from trigger_ml.data.adc2021 import read_events

    ev = read_events(path, start=start, stop=stop) if events is None else events
    return np.asarray(score_fn(ev), dtype=np.int64).ravel(), reference_bits(ev, seeds)




def as_range(src) -> tuple[str, int, int]:
    """(file, start, stop) of an events source (a path means the whole file, which must hold events)."""
    from trigger_ml.data.adc2021 import require_events

    if isinstance(src, (tuple, list)):
        f, a, b = src
        return str(f), int(a), int(b)
    return str(src), 0, require_events(src, "give a file with events (--background / --signals)")


def chunk_tasks(files: Sequence, chunk_size: int) -> list[tuple[str, int, int]]:
    """(file, start, stop) for every chunk of every source (file or (file, start, stop)), in order."""
    out = []
    for src in files:
        f, a, n = as_range(src)
        out += [(f, lo, min(lo + chunk_size, n)) for lo in range(a, n, chunk_size)]
    return out


def score_files(
    files: Sequence[str | Path], score_fn: ScoreFn, seeds: Sequence[Seed] = DEFAULT_SEEDS, *,
    chunk_size: int = SCORE_CHUNK, scheduler: str | None = None, progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Firmware scores and reference bits of all events of ``files``, streaming chunk by chunk.

    ``scheduler``: None runs in this process; ``"local"`` starts a Dask LocalCluster; any other
    string is the address of an existing Dask scheduler. Results are identical in all cases
    (integer arithmetic, chunks reassembled in order).
    """
    tasks = chunk_tasks(files, chunk_size)
    total = sum(b - a for _, a, b in tasks)
    results: list = [None] * len(tasks)
    done = [0]

    def took(i: int, r: tuple[np.ndarray, np.ndarray]) -> None:
        results[i] = r  # reassembled in file order, whatever order the chunks finish in
        done[0] += tasks[i][2] - tasks[i][1]
        if progress:
            progress(done[0], total)

    _map_chunks(_score_chunk, tasks, score_fn, seeds, scheduler, took)
    if not results:
        return np.zeros(0, np.int64), np.zeros((0, len(seeds)), bool)
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


def _hist_chunk(path: str, start: int, stop: int, score_fn: ScoreFn, seeds: Sequence[Seed], name: str,
                events: np.ndarray | None = None) -> ScoreHistogram:
    s, bits = _score_chunk(path, start, stop, score_fn, seeds, events)
    return ScoreHistogram.from_scores(name, s, bits)


def histogram_samples(
    samples: dict[str, Sequence], score_fn: ScoreFn, seeds: Sequence[Seed] = DEFAULT_SEEDS, *,
    chunk_size: int = SCORE_CHUNK, scheduler: str | None = None,
    progress: Callable[[str, int, int], None] | None = None, files: dict[str, Sequence[str]] | None = None,
) -> dict[str, ScoreHistogram]:
    """Exact score histograms (:class:`ScoreHistogram`) of several samples, streaming chunk by chunk.

    ``samples`` maps a sample name to its sources (files or (file, start, stop)). Each chunk is read,
    scored and reduced to its histogram where it runs (this process, or a Dask worker when
    ``scheduler`` is ``"local"`` or an address: one client for all samples, the scorer sent once per
    worker); only histograms come back, merged as they arrive, so the memory here does not grow
    with the number of events and the result does not depend on the order. ``progress(name, done,
    total)`` is called after every chunk; ``files`` (name → file names) is recorded in the histograms.
    """
    tasks = [(name, f, a, b) for name, srcs in samples.items() for f, a, b in chunk_tasks(srcs, chunk_size)]
    totals = {name: 0 for name in samples}
    for name, _, a, b in tasks:
        totals[name] += b - a
    acc = {name: HistogramAccumulator(name, len(seeds), (files or {}).get(name, ())) for name in samples}
    done = {name: 0 for name in samples}

    def took(name: str, h: ScoreHistogram, n: int) -> None:
        acc[name].add(h)
        done[name] += n
        if progress:
            progress(name, done[name], totals[name])

    _map_chunks(_hist_chunk, [(f, a, b, name) for name, f, a, b in tasks], score_fn, seeds, scheduler,
                lambda i, h: took(tasks[i][0], h, tasks[i][3] - tasks[i][2]))
    return {name: a.result() for name, a in acc.items()}


def _warm_up(score_fn: ScoreFn, seeds: Sequence[Seed]) -> None:
    """Score a few empty events (valid ADC2021 events: every object slot empty), so that a fresh process
    builds the emulator and loads its compiled kernels from the disk cache while another thread reads.
    Nothing is kept: a scorer that fails here fails again on the first real chunk, naming the file."""
    from trigger_ml.data.adc2021 import N_COLUMNS, N_OBJECTS

    empty = np.zeros((16, N_OBJECTS, N_COLUMNS), np.float32)
    with contextlib.suppress(Exception):
        score_fn(empty)
        reference_bits(empty, seeds)


def _map_chunks(chunk_fn: Callable, tasks: Sequence[tuple], score_fn: ScoreFn, seeds: Sequence[Seed],
                scheduler: str | None, took: Callable[[int, Any], None]) -> None:
    """``chunk_fn(file, start, stop, score_fn, seeds, *extra)`` for every task ``(file, start, stop,
    *extra)``, in this process (in order; the next chunk is read and checked on a second thread
    meanwhile) or on Dask (``"local"`` or an address: the scorer sent once per worker);
    ``took(task_index, result)`` as each chunk finishes (no tasks: nothing runs, no cluster starts)."""
    if not tasks:
        return
    if scheduler is None:
        from concurrent.futures import ThreadPoolExecutor

        from trigger_ml.data.adc2021 import read_events

        with ThreadPoolExecutor(1, thread_name_prefix="trigger_ml-read") as reader:
            ahead = reader.submit(read_events, *tasks[0][:3])
            _warm_up(score_fn, seeds)  # loads the compiled kernels while the first chunk is read
            for i, (f, a, b, *extra) in enumerate(tasks):
                ev = ahead.result()  # a bad file raises here, naming the file and the event
                ahead = reader.submit(read_events, *tasks[i + 1][:3]) if i + 1 < len(tasks) else None
                took(i, chunk_fn(f, a, b, score_fn, seeds, *extra, events=ev))
                del ev
        return
    from dask.distributed import as_completed

    from trigger_ml.core.cluster import dask_client

    with dask_client(scheduler, n_workers=2, threads_per_worker=1) as client:
        fn = client.scatter(score_fn, broadcast=True, hash=False)  # loaded once per worker, not per chunk
        futs = [client.submit(chunk_fn, f, a, b, fn, seeds, *extra, pure=False) for f, a, b, *extra in tasks]
        index = {fu.key: i for i, fu in enumerate(futs)}
        for fut in as_completed(futs):
            took(index[fut.key], fut.result())
            fut.release()


#: the stage recorded in a catalog file (HDF5 attribute ``trigger_ml_stage``)
CATALOG_STAGE = "emulate.catalog"


def write_catalog(
    path: str | Path, files: Sequence[str | Path], score_raw: np.ndarray | ScoreFn, lsb: float,
    thresholds: dict[str, Threshold], chunk_size: int = SCORE_CHUNK, force: bool = False,
) -> int:
    """Write the events firing any working point to an ADC2021-layout h5 with score and WP bits.

    ``score_raw`` is the raw score of every event of ``files`` in order, or the score function
    itself: then each chunk is scored again while it is written, so memory stays flat.

    Extra per-event datasets: ``score`` (float value), ``score_raw`` (int64), ``wp_bits`` (n, n_wp)
    with the working-point names in the file attribute ``working_points``, and ``source_file``
    (index into the attribute ``source_files``) / ``source_event``. Returns the number written.
    """
    from trigger_ml.core.artifacts import check_output
    from trigger_ml.data.adc2021 import EventsWriter, iter_chunks

    # never over a source file; replaces only an earlier catalog (with force); no missing parent created
    check_output(path, [f[0] if isinstance(f, (tuple, list)) else f for f in files], CATALOG_STAGE, force, kind="file")
    names = list(thresholds)
    attrs = {"working_points": names, "source_files": [as_range(f)[0] for f in files],
             "thresholds_raw": [t.raw for t in thresholds.values()], "score_lsb": lsb}
    pos = 0
    with EventsWriter(path, force=force, attrs=attrs, stage=CATALOG_STAGE) as w:
        for fi, src in enumerate(files):
            f, start, stop = as_range(src)
            for ev in iter_chunks(f, start=start, stop=stop, chunk_size=chunk_size):
                s = np.asarray(score_raw(ev), np.int64).ravel() if callable(score_raw) else score_raw[pos : pos + len(ev)]
                bits = wp_bits(s, thresholds)
                sel = np.flatnonzero(bits.any(1))
                if len(sel):
                    w.append(ev[sel], {"score": s[sel] * lsb, "score_raw": s[sel], "wp_bits": bits[sel],
                                       "source_file": np.full(len(sel), fi, np.int32),
                                       "source_event": (start + sel).astype(np.int64)})
                pos += len(ev)
                start += len(ev)
        n = w.n
    return n
