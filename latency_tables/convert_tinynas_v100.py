"""Rebuild latency_tables/v100-trt-fp16.json.gz from the TinyNAS V100 TensorRT FP16 table.

Usage: python latency_tables/convert_tinynas_v100.py PATH/TO/conv_data.out.fp16
(source: alibaba/lightweight-neural-architecture-search, tinynas/latency/op_profiler/V100/conv_data.out.fp16,
Apache-2.0; see latency_tables/NOTICE).
"""

from __future__ import annotations

import sys
from pathlib import Path

from zennas.latency.shipped import convert_tinynas_lut
from zennas.latency.table import save_table

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    header, entries, dropped = convert_tinynas_lut(sys.argv[1])
    out = Path(__file__).resolve().parent / "v100-trt-fp16.json.gz"
    save_table(out, header, entries)
    print(f"{out}: {len(entries)} entries ({dropped} failed measurements dropped)")
