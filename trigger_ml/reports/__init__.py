"""Reports on synthesized firmware: vendor (HLS/Vivado) report parsing, FPGA part totals, latency budget."""
