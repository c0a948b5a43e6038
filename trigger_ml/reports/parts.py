"""Resource totals of the FPGA parts usual in Level-1 trigger boards.

Figures are the public AMD/Xilinx product-table numbers: DS890 (UltraScale
Architecture and Product Data Sheet: Overview) for the UltraScale(+) parts and
DS180 / DS190 (7 Series / Zynq-7000 overviews) for the 7-series parts.
Block RAM is counted in 18 Kb halves (``BRAM_18K`` = 2 x RAMB36), as HLS reports do.
``family`` is the value for yosys ``synth_xilinx -family``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trigger_ml.core.errors import ConfigError

RESOURCE_KEYS: tuple[str, ...] = ("LUT", "FF", "DSP", "BRAM_18K", "URAM")


@dataclass(frozen=True)
class FPGAPart:
    """One device (any package / speed grade) and its resource totals."""

    device: str  # device stem, e.g. "xcvu13p"
    example_part: str  # a full orderable part name, e.g. "xcvu13p-flga2577-2-e"
    family: str  # yosys synth_xilinx -family
    lut: int
    ff: int
    dsp: int
    bram_18k: int
    uram: int

    @property
    def bram_36k(self) -> int:
        """Block RAM in 36 Kb blocks (the unit of the datasheets and of Vivado's "Block RAM Tile")."""
        return self.bram_18k // 2

    def totals(self) -> dict[str, int]:
        """Totals keyed like HLS reports: LUT, FF, DSP, BRAM_18K, URAM."""
        return {"LUT": self.lut, "FF": self.ff, "DSP": self.dsp, "BRAM_18K": self.bram_18k, "URAM": self.uram}


_PARTS: tuple[FPGAPart, ...] = (
    # Virtex UltraScale+ VU13P (CMS/ATLAS Phase-2 L1 boards): 2,688 RAMB36, 1,280 URAM.
    FPGAPart("xcvu13p", "xcvu13p-flga2577-2-e", "xcup", 1_728_000, 3_456_000, 12_288, 2 * 2_688, 1_280),
    # Virtex UltraScale+ VU9P: 2,160 RAMB36, 960 URAM.
    FPGAPart("xcvu9p", "xcvu9p-flga2104-2L-e", "xcup", 1_182_240, 2_364_480, 6_840, 2 * 2_160, 960),
    # Kintex UltraScale KU115 (UltraScale, not "+"): 2,160 RAMB36, no URAM.
    FPGAPart("xcku115", "xcku115-flvb2104-2-e", "xcu", 663_360, 1_326_720, 5_520, 2 * 2_160, 0),
    # Virtex-7 VX690T (Run-2/3 L1 boards, e.g. CMS MP7/CTP7): 108,300 slices x 4 LUT / 8 FF, 1,470 RAMB36.
    FPGAPart("xc7vx690t", "xc7vx690t-ffg1927-2", "xc7", 433_200, 866_400, 3_600, 2 * 1_470, 0),
    # Zynq-7000 Z-7020 (PYNQ-Z2; used by the vendor-report fixture): 140 RAMB36.
    FPGAPart("xc7z020", "xc7z020-clg400-1", "xc7", 53_200, 106_400, 220, 2 * 140, 0),
)

_BY_DEVICE: dict[str, FPGAPart] = {p.device: p for p in _PARTS}


def known_parts() -> list[str]:
    """Device stems in the table, sorted."""
    return sorted(_BY_DEVICE)


def lookup_part(name: str) -> FPGAPart:
    """Find a part by its device stem, ignoring package, speed grade and case.

    Accepts ``xcvu13p-flga2577-2-e``, ``XCVU13P``, and the dash-less 7-series
    spelling ``xc7z020clg400-1``. Raises ConfigError for an unknown device.
    """
    norm = name.strip().lower()
    for device in sorted(_BY_DEVICE, key=len, reverse=True):
        rest = norm[len(device):]
        # after the stem comes nothing, a dash, or a package code (letters); never more digits
        if norm.startswith(device) and re.match(r"^($|-|[a-z])", rest):
            return _BY_DEVICE[device]
    raise ConfigError(
        f"unknown FPGA part {name!r}; known parts: {', '.join(known_parts())} "
        "(add its totals to trigger_ml/reports/parts.py)"
    )
