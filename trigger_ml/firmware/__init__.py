"""Firmware generation: hls4ml HLS projects and da4ml RTL projects (Verilog/VHDL), plus Verilator simulation of the RTL."""
