"""Firmware generation: da4ml RTL projects (Verilog/VHDL) and their Verilator simulation."""
