"""Design-space scans: grid / random search over model hyper-parameters, one Dask task per point.

Every point of a scan trains the model (HGQ2, no float twin), converts it to firmware (da4ml RTL
by default, or hls4ml), scores background and signal events **bit-exactly** with the firmware
(da4ml's interpreter of the RTL graph / our hls4ml emulator), and estimates resources and
latency without a vendor tool (each figure carries its source, see
:mod:`trigger_ml.reports.estimate`). Points run as Dask tasks on a ``LocalCluster`` (process
workers, one thread each) or on an existing cluster (``scheduler="tcp://host:8786"``; the data
files and ``out_dir`` must then be visible to the workers under the same paths), or in this
process (``scheduler=None``).

Scan file (YAML)::

    base: models/adc-dnn-ae.yaml        # model config (relative to the scan file, else to the cwd) or a mapping
    grid:                               # cartesian product, in the order written
      quantization.weight.bits: [6, 8]
      quantization.activation.bits: [8, 12]
      latent: [3, 4]
    random:                             # optional: n_points draws (crossed with the grid if both are given)
      quantization.beta: {low: 1.0e-7, high: 1.0e-4, log: true}
      hidden: {choices: [[32, 16], [16, 8]]}
    n_points: 8
    seed: 0
    settings: {epochs: 10, max_events: 200000, rate_khz: 10, flavor: verilog, clock_ns: 5.0,
               background: data/bkg.h5, signals: [data/Ato4l.h5]}   # all optional

Parameter names are dotted paths into the model config (``quantization.weight.bits``, ``latent``,
``hidden``, ``training.learning_rate``, ``seed`` ...) or convert options (``reuse_factor``,
``clock_ns``, ``latency_cutoff``). A random spec is ``{choices: [...]}`` or ``{low, high}``
(integers when both bounds are integers or ``integer: true``; ``log: true`` for log-uniform).

Results (``out_dir``)
---------------------
* ``results.parquet`` and ``results.csv`` — one row per point, rewritten atomically (temporary
  file + ``os.replace``) as each point finishes; columns: ``key`` (sha256 prefix of the
  canonical JSON of the point's parameters), ``status`` (``ok``/``failed``), ``error``,
  ``param:<name>`` per parameter and ``params`` (canonical JSON), ``auc``/``tpr`` (mean over the
  signals of the ROC AUC / the TPR at ``rate_khz``) and ``auc:<signal>``/``tpr:<signal>``,
  ``luts``/``ffs``/``dsps`` with ``*_source``, ``latency_cycles``/``latency_ns`` with
  ``latency_source``, ``ebops``, timings (``seconds`` total, ``seconds_train`` ...), ``started``,
  ``finished``, ``attempt``, ``worker`` and ``context`` (hash of the base config and run settings).
* ``points/<key>/`` — the point's model artifact, firmware project, ``log.txt`` and ``row.json``.
* ``pareto.png`` and ``pareto.json`` — the Pareto front (max TPR, min LUTs, min latency).
* with a latency budget (``budget_ns=`` / ``budget_bx=``, ``--budget-ns`` / ``--budget-bx``, or
  ``settings.budget_ns``): the table gets ``meets_budget``, ``budget_slack_ns``, ``budget_clock_ns``
  (the clock the point's latency was computed with), ``budget_source`` and ``best_in_budget``;
  ``pareto.json`` a ``budget`` block naming the best point in budget; ``pareto.png`` the budget line,
  the points over it as crosses and the best point in budget as a star
  (:func:`~trigger_ml.scan.pareto.budget_verdicts`).

Scripts: ``scheduler="local"`` spawns worker processes, so a script that calls :func:`run_scan`
needs the usual ``if __name__ == "__main__":`` guard (the CLI and pytest have it).

Resuming: a restarted scan reads the table (and any ``points/*/row.json`` whose row did not
reach the table) and skips every point whose key finished with ``status == "ok"`` under the same
context; failed points are retried (``attempt`` + 1). A point interrupted after training reuses
its model artifact. Results made with a different base config or settings are refused unless
``restart=True``.

Modules: :mod:`~trigger_ml.scan.space` (the scan file, grid and random points, keys),
:mod:`~trigger_ml.scan.runner` (one point, the whole scan on Dask via
:func:`trigger_ml.core.cluster.dask_client`), :mod:`~trigger_ml.scan.results` (the resumable
table), :mod:`~trigger_ml.scan.pareto` (the Pareto front and its plot).
"""

from trigger_ml.scan.pareto import (
    BUDGET_COLUMNS,
    PARETO_JSON,
    PARETO_PNG,
    best_in_budget,
    budget_verdicts,
    pareto_figure,
    pareto_front,
    plot_pareto,
)
from trigger_ml.scan.results import (
    PARAM_PREFIX,
    RESULTS_CSV,
    RESULTS_PARQUET,
    ROW_FILE,
    read_results,
)
from trigger_ml.scan.runner import WORKER_ENV, run_point, run_scan
from trigger_ml.scan.space import (
    CONVERT_PARAMS,
    DEFAULT_SETTINGS,
    FLAVORS,
    ScanSpace,
    load_scan_config,
    point_config,
    point_key,
    points,
)

__all__ = [
    "BUDGET_COLUMNS",
    "best_in_budget",
    "budget_verdicts",
    "pareto_figure",
    "CONVERT_PARAMS",
    "DEFAULT_SETTINGS",
    "FLAVORS",
    "PARAM_PREFIX",
    "PARETO_JSON",
    "PARETO_PNG",
    "RESULTS_CSV",
    "RESULTS_PARQUET",
    "ROW_FILE",
    "WORKER_ENV",
    "ScanSpace",
    "load_scan_config",
    "points",
    "point_key",
    "point_config",
    "run_point",
    "run_scan",
    "pareto_front",
    "plot_pareto",
    "read_results",
]
