"""hls4ml HLS projects from HGQ2 models, bit-exact, with an optional trigger-bit top function.

The HGQ2 → hls4ml flow
----------------------
HGQ2 layers (``hgq.layers.Q*``) are parsed by hls4ml 1.3's Keras-3 front end
(``hls4ml.converters.keras_v3.hgq2``), which turns every HGQ2 quantizer into a
``FixedPointQuantizer`` node carrying the exact per-element (k, b, i) bit widths, rounding and
overflow modes. The ``BitExact`` optimizer pass then derives *every* type of the graph (inputs,
weights, biases, accumulators, results) from those quantizers with interval arithmetic, so the
firmware computes exactly what ``model(x)`` computes. We call::

    hls4ml.converters.convert_from_keras_model(
        model, output_dir=..., project_name='myproject', backend='Vitis',
        part=..., clock_period=..., io_type='io_parallel',
        hls_config=hls_config_for(model, ...),       # Model: Precision/ReuseFactor/Strategy only
        bit_exact=True,                               # (hls4ml's default None also enables it for HGQ2)
        write_weights_txt=False,                      # weights only in headers: project is relocatable
    )

``hls_config_for`` deliberately sets no per-layer precision: the types come from the model.
hls4ml still needs a model-wide default ``Precision``; any tensor that ends up with that default is
a tensor the model does not quantize. :func:`default_precision_leaks` finds them by converting a
second time with a different default and listing the types that changed (a value comparison with
``fixed<16,6>`` would be wrong: the bit-exact flow can legitimately produce ``fixed<16,6>``);
:func:`convert` refuses such a model (``ConfigError``), e.g. a plain ``keras.layers.Dense`` model.

The project on disk
-------------------
``convert`` builds the complete hls4ml project (``hls_model.write()``) in a temporary sibling
directory and renames it onto ``out_dir`` at the end (``manifest.atomic_dir``): a failure leaves
nothing behind, an existing ``out_dir`` is replaced only with ``force``. It adds

* ``tb_data/tb_input_features.dat`` / ``tb_data/tb_output_predictions.dat`` in hls4ml's format:
  one event per line, the flattened values separated by single spaces (hls4ml's test bench reads
  them with ``atof`` into ``float``; inputs must therefore be exact in float32). Outputs of all
  model outputs are concatenated in order. Expected outputs are ``expected_fn(tb_inputs)`` (the
  bit-exact emulator), by default hls4ml's compiled C simulation; when both exist they are
  compared and any difference is an error.
* with ``threshold``: ``firmware/trigger_threshold.h`` (the constant), ``firmware/myproject_trigger.{h,cpp}``
  (a wrapper top function calling ``myproject`` and setting ``ap_uint<1> &trigger``) and
  ``myproject_trigger_test.cpp`` (test bench: reads ``tb_data``, writes ``<outputs...> <bit>`` per
  event to ``tb_data/csim_results.log``, and returns non-zero if an output differs from
  ``tb_output_predictions.dat`` or a bit differs from ``expected_score > threshold``).
  ``project.tcl`` gets ``set hls_top "myproject_trigger"`` and ``build_prj.tcl`` /
  ``vivado_synth.tcl`` use ``${hls_top}`` for ``set_top``, the cosim report and the Vivado
  ``synth_design -top``; the wrapper source and test bench are added to the HLS project. hls4ml's
  own ``myproject`` / bridge / ``myproject_test.cpp`` are untouched, so ``compile()`` and
  ``predict()`` keep working (a later ``hls_model.write()``/``compile()`` re-applies the tcl edits).
  Note: with the wrapper as top, Vitis names the top-level reports ``myproject_trigger_csynth.*``.
* ``manifest.json`` (stage ``firmware.hls``): model hash, tool versions, backend, part, clock,
  io type, strategy, reuse factors, per-layer precisions, threshold, timings.

Threshold rule
--------------
The threshold is placed on the score type's grid by the one threshold module,
:mod:`trigger_ml.core.threshold` (rounded down, compared with ``>``, range-checked): the same
integer the IR carries and the emulator compares with.
"""

from trigger_ml.core.constants import DEFAULT_PART
from trigger_ml.firmware.hls.convert import convert
from trigger_ml.firmware.hls.csim import (
    build_trigger_csim,
    csim_predict,
    read_tb_file,
    trigger_csim,
    write_tb_file,
)
from trigger_ml.firmware.hls.project import (
    PROJECT_NAME,
    STAGE,
    HLSProject,
    check_no_default_precision,
    default_precision_leaks,
    hls_config_for,
    layer_precisions,
    load_project,
    model_weights_sha256,
)

__all__ = [
    "DEFAULT_PART",
    "HLSProject",
    "PROJECT_NAME",
    "STAGE",
    "build_trigger_csim",
    "check_no_default_precision",
    "convert",
    "csim_predict",
    "default_precision_leaks",
    "hls_config_for",
    "layer_precisions",
    "load_project",
    "model_weights_sha256",
    "read_tb_file",
    "trigger_csim",
    "write_tb_file",
]

