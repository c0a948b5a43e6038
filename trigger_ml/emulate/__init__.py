"""Bit-exact emulation of the HLS firmware (Xilinx ``ap_fixed`` arithmetic and friends)."""
