"""The fast path of the emulator: raw integers carried exactly in float32/float64 buffers.

* :mod:`~trigger_ml.emulate.fast.plan` -- the per-model plan (exact interval propagation decides,
  layer by layer, whether the fast path is exact; :class:`~trigger_ml.emulate.fast.plan._NotFast`
  sends a layer to the reference executor) and its execution over blocks of events;
* :mod:`~trigger_ml.emulate.fast.kernels` -- the numba kernels (cached on disk) and the runner of
  a fused element-wise stage chain.
"""

from trigger_ml.emulate.fast.plan import _build_fast_plan, _FastPlan, _NotFast

__all__ = ["_FastPlan", "_NotFast", "_build_fast_plan"]
