"""Stage ``emulate``: a firmware directory + event files → firmware scores, menu table, catalog.

Events are streamed in chunks through the preprocessing and the bit-exact emulator of the
firmware IR; the trigger bit is the firmware's integer comparison. Work can run in-process or on
Dask (:func:`trigger_ml.trigger.menu.histogram_samples`); each chunk comes back as an exact score
histogram (:mod:`trigger_ml.trigger.histograms`), so memory does not grow with the number of events.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from trigger_ml.core.artifacts import check_output
from trigger_ml.core.constants import BX_RATE_HZ, SCORE_CHUNK
from trigger_ml.core.errors import ConfigError
from trigger_ml.data.adc2021 import require_events
from trigger_ml.scoring import FirmwareScorer, held_out_sources, source_run
from trigger_ml.trigger import menu as T


def parse_menu(text: str | None) -> dict[str, float]:
    """'VLoose=20,Tight=2' → {'VLoose': 20.0, 'Tight': 2.0} (kHz); None → the default menu.

    Every item must be NAME=RATE with a distinct, non-empty name and a positive, finite rate in kHz;
    anything else is a one-line :class:`ConfigError` naming the item."""
    if text is None or not text.strip():
        if text is not None:
            raise ConfigError("--menu is empty: expected NAME=RATE_KHZ,..., e.g. VLoose=20,Tight=2")
        return dict(T.DEFAULT_MENU_KHZ)
    out: dict[str, float] = {}
    for item in text.split(","):
        name, eq, val = item.partition("=")
        name = name.strip()
        if not eq or not name:
            raise ConfigError(f"--menu item {item!r}: expected NAME=RATE_KHZ, e.g. VLoose=20")
        try:
            rate = float(val)
        except ValueError:
            raise ConfigError(f"--menu item {item!r}: the rate {val.strip()!r} is not a number; expected "
                              f"NAME=RATE_KHZ, e.g. VLoose=20") from None
        if name in out:
            raise ConfigError(f"--menu item {item!r}: working point {name!r} is given twice")
        out[name] = rate
    check_menu(out)
    return out


def check_menu(menu_khz: dict[str, float] | None, bx_rate_hz: float | None = None) -> None:
    """Every working point's target rate is a positive, finite number of kHz (below the
    bunch-crossing rate, when given): one-line ConfigError otherwise."""
    for name, rate in (menu_khz or {}).items():
        ok = isinstance(rate, (int, float, np.integer, np.floating)) and not isinstance(rate, bool)
        if not ok or not math.isfinite(rate) or rate <= 0:
            raise ConfigError(f"--menu item {name}={rate}: the rate must be a positive number of kHz, e.g. {name}=5")
        if bx_rate_hz is not None and rate * 1e3 >= bx_rate_hz:
            raise ConfigError(f"--menu item {name}={rate:g}: the rate must be below the bunch-crossing rate "
                              f"({bx_rate_hz / 1e3:g} kHz)")


def emulate(
    firmware_dir: str | Path, backgrounds: Sequence[Path], signals: Sequence[Path] = (), *,
    menu_khz: dict[str, float] | None = None, bx_rate_hz: float = BX_RATE_HZ, seeds: Sequence[T.Seed] = T.DEFAULT_SEEDS,
    catalog: Path | None = None, scheduler: str | None = None, chunk_size: int = SCORE_CHUNK, force: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Score backgrounds and signals with the emulated firmware; calibrate and evaluate the menu.

    ``firmware_dir`` is any firmware directory (hls4ml or RTL, :class:`~trigger_ml.scoring.FirmwareScorer`).
    Background files follow the one held-out rule of the firmware's training run, so passing the
    training file scores only the events training did not read."""
    import time

    from trigger_ml.evaluate import check_rates

    check_rates(None, bx_rate_hz)
    check_menu(menu_khz, bx_rate_hz)
    if chunk_size < 1:
        raise ConfigError(f"chunk size must be a positive number of events, got {chunk_size!r}")
    if catalog is not None:  # before any work: never over an input, only over an earlier catalog
        catalog = check_output(catalog, [firmware_dir, source_run(firmware_dir), *backgrounds, *signals],
                               T.CATALOG_STAGE, force, kind="file")
    scorer = FirmwareScorer(firmware_dir)
    b_sources, b_notes = held_out_sources(firmware_dir, backgrounds)
    # before any scoring: each signal file follows the layout and holds events
    s_sources = [(str(s), 0, require_events(s, "signal efficiencies need signal events; give a signal file with "
                                               "events (--signals)")) for s in signals]
    score_type = scorer.score_type
    lsb = scorer.lsb
    t0 = time.perf_counter()
    # exact score histograms per sample: only counts come back from the chunks (memory flat in events)
    samples = {"background": list(b_sources)} | {f"signal{i}": [src] for i, src in enumerate(s_sources)}
    names = {"background": "background"} | {f"signal{i}": Path(s).stem for i, s in enumerate(signals)}
    hists = T.histogram_samples(samples, scorer, seeds, chunk_size=chunk_size, scheduler=scheduler,
                                progress=(lambda k, d, t: progress(names[k], d, t)) if progress else None,
                                files={"background": b_notes} | {f"signal{i}": [str(s)] for i, s in enumerate(signals)})
    seconds = time.perf_counter() - t0
    for k, h in hists.items():
        h.name = names[k]
    h_b = hists["background"]
    sigs = [hists[f"signal{i}"] for i in range(len(signals))]
    n_all = sum(h.n_events for h in hists.values())
    table = T.menu_table(h_b, sigs, score_type, menu_khz, bx_rate_hz)
    built = scorer.threshold
    table |= {"firmware": str(firmware_dir), "firmware_kind": scorer.kind, "scorer": scorer.source,
              "score_type": score_type.to_hls(), "score_lsb": lsb,
              "firmware_threshold": None if built is None else built.to_json() | {
                  "rate_khz_here": float(h_b.n_above(built) / h_b.n_events * bx_rate_hz / 1e3) if h_b.n_events else None},
              "background": b_notes, "reference_seeds": [s.name for s in seeds], "events": n_all, "seconds": round(seconds, 2),
              "events_per_s": round(n_all / seconds) if seconds else None, "scheduler": scheduler or "in-process",
              "statistics": {"method": "exact integer histograms of the raw score per reference-seed pattern",
                             "distinct_bins": {h.name: h.n_bins for h in hists.values()}}}
    if catalog is not None:
        thr = {wp: T.Threshold.from_json(row["threshold"]) for wp, row in table["working_points"].items()
               if row["threshold"] is not None}
        files = list(b_sources) + list(signals)
        # the catalog scores each chunk again while writing it: no per-event scores are kept
        table["catalog"] = {"path": str(catalog), "events": T.write_catalog(catalog, files, scorer, lsb, thr,
                                                                             chunk_size=chunk_size, force=force)}
    return table
