"""Bit-exact emulation of the HLS firmware (Xilinx ``ap_fixed`` arithmetic and friends).

* :mod:`~trigger_ml.emulate.emulator` -- :class:`Emulator`, the front class (picks the fast path or
  the reference executor);
* :mod:`~trigger_ml.emulate.reference` -- the reference (oracle) executor: per-layer ops on exact
  integers;
* :mod:`~trigger_ml.emulate.fast` -- the fast path (plan, numba kernels).
"""

from trigger_ml.emulate.emulator import Emulator

__all__ = ["Emulator"]
